// The HTTP transfers the server asks for (HttpGet, HttpPut, HttpConnect), on a connection of their
// own to the URL given, with the real client's rules: a GET's body is read to the end of the
// connection, a PUT waits for the 200 before it streams, a 302 is followed; the CLI connection
// hears a Wait now and then meanwhile.
import { closeSync, fstatSync, openSync, readSync, statSync, writeSync, constants as fsc } from 'node:fs';
import type { Settings } from './options.js';
import { openTcp, type Debug, type Stream } from './stream.js';

/** What the client itself refuses or fails at: "Operation failed. Error: <text>". */
export class ClientSideError extends Error {}
/** The server named a file that the command line did not. */
export class FilenameNotPermitted extends Error {}

/** How often a long transfer tells the server the client is alive (newcli.ml: 300 s). */
const HEARTBEAT_S = 300;

export interface TransferContext {
  settings: Settings;
  debug: Debug;
  heartbeat: () => void;
  permitted: (filename: string, opts?: { cwd?: boolean }) => void;
}

/** A URL of the server's: https://host/path goes to that host, anything else to our server. */
function parseUrl(s: Settings, url: string): [string, string] {
  const m = /^https:\/\/(\[[^\]]*\]|[^/:?#]+)(?::\d+)?(.*)$/.exec(url);
  if (!m) return [s.server, url];
  let path = m[2] === '' ? '/' : m[2];
  try {
    path = decodeURIComponent(path);
  } catch {
    // (kept as it is)
  }
  return [m[1], path];
}

/** OCaml's http_response_code: the second word of the status line. */
function responseCode(line: string): number {
  const w = line.split(' ')[1];
  if (w === undefined || !/^\d+$/.test(w)) throw new Error('Bad response from HTTP server');
  return Number(w);
}

/** The headers the client cares about, lower-cased (read_rest_of_headers). */
async function headers(st: Stream): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (;;) {
    let l: string;
    try {
      l = await st.line();
    } catch {
      return out;
    }
    if (!l.endsWith('\r')) return out;
    l = l.slice(0, -1);
    if (l === '') return out;
    const i = l.indexOf(': ');
    if (i > 0) out.set(l.slice(0, i).toLowerCase(), l.slice(i + 2));
  }
}

/** A progress line on stderr, only when it is a terminal. */
class Progress {
  private readonly on = process.stderr.isTTY === true;
  private shown = -1;
  private done = 0;
  constructor(private readonly label: string, private readonly total: number | null) {}
  add(n: number): void {
    this.done += n;
    if (!this.on) return;
    const pct = this.total ? Math.floor((this.done * 100) / this.total) : -1;
    const key = this.total ? pct : Math.floor(this.done / (1 << 20));
    if (key === this.shown) return;
    this.shown = key;
    const width = 40;
    const bar = this.total ? `[${'#'.repeat(Math.floor((pct * width) / 100)).padEnd(width)}] ${String(pct).padStart(3)}%` : `${(this.done / (1 << 20)).toFixed(0)} MiB`;
    process.stderr.write(`\r${this.label} ${bar}`);
  }
  end(): void {
    if (this.on && this.shown >= 0) process.stderr.write('\n');
  }
}

/** Copies everything `next` gives into `write`, beating the heartbeat every HEARTBEAT_S. */
async function copy(next: () => Promise<Buffer | null>, write: (b: Buffer) => Promise<void> | void, progress: Progress, heartbeat: () => void): Promise<void> {
  let last = Date.now();
  for (;;) {
    const b = await next();
    if (b === null || b.length === 0) break;
    await write(b);
    progress.add(b.length);
    if (Date.now() - last >= HEARTBEAT_S * 1000) {
      heartbeat();
      last = Date.now();
    }
  }
  progress.end();
}

const ERRNO_TEXT: Record<string, string> = {
  EEXIST: 'File exists', EACCES: 'Permission denied', ENOENT: 'No such file or directory', EISDIR: 'Is a directory',
  EROFS: 'Read-only file system', ENOSPC: 'No space left on device', ENOTDIR: 'Not a directory',
};
const sysError = (filename: string, e: NodeJS.ErrnoException) => `Sys_error("${filename}: ${ERRNO_TEXT[e.code ?? ''] ?? e.message}")`;

/** HttpGet: the body of GET `url` into `filename` (created, never overwritten), "" for stdout. */
export async function httpGet(t: TransferContext, filename: string, url: string): Promise<void> {
  for (let hops = 0; ; hops++) {
    const [server, path] = parseUrl(t.settings, url);
    t.debug(`Opening connection to server '${server}' path '${path}'\n`);
    const st = await openTcp(t.settings, server, t.debug);
    try {
      await st.write(`GET ${path} HTTP/1.0\r\n\r\n`);
      const status = await st.line();
      t.debug(`Got ${status}\n`);
      const code = responseCode(status);
      if (code === 302 && hops < 10) {
        const loc = (await headers(st)).get('location');
        if (loc === undefined) throw new Error('Not_found');
        url = loc;
        continue;
      }
      if (code !== 200) throw new Error('Unhandled response code');
      let fd = 1;
      if (filename !== '') {
        t.permitted(filename, { cwd: true });
        try {
          fd = openSync(filename, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
        } catch (e) {
          throw new ClientSideError(sysError(filename, e as NodeJS.ErrnoException));
        }
      }
      try {
        const h = await headers(st);
        const length = h.has('content-length') ? Number(h.get('content-length')) : null;
        await copy(() => st.some(), (b) => writeAll(fd, b), new Progress('Download', length), t.heartbeat);
      } finally {
        if (fd !== 1) closeSync(fd);
      }
      return;
    } finally {
      st.close();
    }
  }
}

function writeAll(fd: number, b: Buffer): void {
  let off = 0;
  while (off < b.length) {
    try {
      off += writeSync(fd, b, off);
    } catch (e) {
      // a pipe that is full for now (stdout to a slow reader)
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}

/** HttpPut: `filename` as the body of PUT `url`, sent once the server answered 200. */
export async function httpPut(t: TransferContext, filename: string, url: string): Promise<void> {
  for (let hops = 0; ; hops++) {
    const [server, path] = parseUrl(t.settings, url);
    let st0;
    try {
      st0 = statSync(filename);
    } catch {
      throw new ClientSideError(`file '${filename}' does not exist`);
    }
    const length = st0.isFile() ? `\r\nContent-length: ${st0.size}` : '';
    const fd = openSync(filename, 'r');
    try {
      const st = await openTcp(t.settings, server, t.debug);
      try {
        t.debug(`PUTting to path [${path}]\n`);
        await st.write(`PUT ${path} HTTP/1.0${length}\r\n\r\n`);
        const code = responseCode(await st.line());
        const h = await headers(st);
        if (code === 302 && hops < 10) {
          const loc = h.get('location');
          if (loc === undefined) throw new Error('Not_found');
          url = loc;
          continue;
        }
        if (code !== 200) throw new Error('Unhandled response code');
        const buf = Buffer.alloc(65536);
        const size = st0.isFile() ? fstatSync(fd).size : null;
        await copy(async () => {
          const n = readSync(fd, buf, 0, buf.length, null);
          return n === 0 ? null : Buffer.from(buf.subarray(0, n));
        }, (b) => st.write(b), new Progress('Upload', size), t.heartbeat);
        await new Promise<void>((r) => st.socket.end(r));
        return;
      } finally {
        st.close();
      }
    } finally {
      closeSync(fd);
    }
  }
}

/** HttpConnect: the terminal joined to a CONNECT of `url` until Ctrl-] (0x1d) or its end. */
export async function httpConnect(t: TransferContext, url: string): Promise<boolean> {
  const [server, path] = parseUrl(t.settings, url);
  const st = await openTcp(t.settings, server, t.debug);
  try {
    await st.write(`CONNECT ${path} HTTP/1.0\r\ncontent-length: 0\r\n\r\n`);
    const line = await st.line();
    await headers(st);
    const code = responseCode(line);
    if (code === 404) {
      process.stderr.write('Server replied with HTTP 404: the console is not available\n');
      return false;
    }
    if (code !== 200) {
      process.stderr.write(`Server said: ${line}`);
      return false;
    }
    const stdin = process.stdin;
    const raw = stdin.isTTY === true;
    if (raw) stdin.setRawMode(true);
    try {
      await new Promise<void>((resolve) => {
        const onInput = (b: Buffer) => {
          const end = b.indexOf(0x1d);
          if (end >= 0) {
            if (end > 0) void st.write(b.subarray(0, end)).catch(() => undefined);
            finish();
          } else void st.write(b).catch(finish);
        };
        const finish = () => {
          stdin.off('data', onInput);
          stdin.pause();
          resolve();
        };
        stdin.on('data', onInput);
        void (async () => {
          for (let b = await st.some(); b !== null; b = await st.some()) writeAll(1, b);
          finish();
        })();
      });
    } finally {
      if (raw) {
        stdin.setRawMode(false);
        process.stdout.write('\r\n');
      }
    }
    return true;
  } finally {
    st.close();
  }
}
