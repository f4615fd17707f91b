// A connection to the server read as the real client reads its channels: exact byte counts, lines
// (an HTTP status line and headers), or whatever comes until the end of the connection.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Settings } from './options.js';
import { ClientExit } from './options.js';

/** End of the connection before what was expected (OCaml's End_of_file). */
export class EndOfFile extends Error {}

/** Unix.error_message of the errors a connection meets. */
const UNIX_MESSAGES: Record<string, string> = {
  ECONNREFUSED: 'Connection refused', EHOSTUNREACH: 'No route to host', ENETUNREACH: 'Network is unreachable',
  ETIMEDOUT: 'Connection timed out', ECONNRESET: 'Connection reset by peer', EPIPE: 'Broken pipe',
  EACCES: 'Permission denied', EADDRNOTAVAIL: 'Cannot assign requested address',
};

export class Stream {
  private chunks: Buffer[] = [];
  private size = 0;
  private ended = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.size += c.length;
      if (this.size > 4 * 1024 * 1024) socket.pause();
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (e) => {
      this.failure = e;
      this.ended = true;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    this.socket.resume();
    await new Promise<void>((r) => (this.wake = r));
    return true;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.size = rest.length;
    return out;
  }

  /** Up to `n` bytes: fewer only at the end of the connection. */
  async read(n: number): Promise<Buffer> {
    while (this.size < n && (await this.more()));
    return this.take(Math.min(n, this.size));
  }

  /** Whatever has arrived (waiting for something), or null at the end. */
  async some(): Promise<Buffer | null> {
    while (this.size === 0) if (!(await this.more())) return null;
    return this.take(this.size);
  }

  /** A line without its "\n" (with its "\r" if any); EndOfFile when nothing is left. */
  async line(): Promise<string> {
    for (;;) {
      const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
      this.chunks = all.length > 0 ? [all] : [];
      const nl = all.indexOf(10);
      if (nl >= 0) {
        const l = this.take(nl + 1);
        return l.toString('latin1', 0, nl);
      }
      if (!(await this.more())) {
        if (this.size === 0) throw new EndOfFile();
        return this.take(this.size).toString('latin1');
      }
    }
  }

  write(b: Buffer | string): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed) return reject(new ClientExit('Error: Broken pipe (calling write )\n'));
      this.socket.write(b, (e) => (e ? reject(e) : resolve()));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export type Debug = (s: string) => void;

function opened(socket: Socket, event: 'connect' | 'secureConnect', describe: (e: NodeJS.ErrnoException) => ClientExit): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const fail = (e: NodeJS.ErrnoException) => reject(describe(e));
    socket.once('error', fail);
    socket.once(event, () => {
      socket.off('error', fail);
      resolve(new Stream(socket));
    });
  });
}

const unixError = (e: NodeJS.ErrnoException, call: string, server: string, port: number): ClientExit => {
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return new ClientExit(`No addrinfo found for host: ${server}, port: ${port}Host '${server}' not found.\n`);
  const text = UNIX_MESSAGES[e.code ?? ''];
  return new ClientExit(text ? `Error: ${text} (calling ${call} )\n` : `Unhandled exception\n${e.message}\n`);
};

/** 127.0.0.1 is on the host: never TLS there (as the real client), and the local socket first. */
const isLocalhost = (server: string) => server === '127.0.0.1';

const LOCAL_SOCKET = '/var/lib/xcp/xapi';

/** A connection to `server` as the real client makes it (with_open_tcp). */
export async function openTcp(s: Settings, server: string, debug: Debug): Promise<Stream> {
  if (s.ssl && !isLocalhost(server)) {
    const port = s.port ?? 443;
    debug(`Connecting via TLS to [${server}] port [${port}]\n`);
    let ca: Buffer | undefined;
    if (s.cafile !== null) {
      try {
        ca = readFileSync(s.cafile);
      } catch {
        throw new ClientExit(`Error opening certificate file '${s.cafile}'\n`);
      }
    }
    const host = server.replace(/^\[(.*)\]$/, '$1');
    const socket = tlsConnect({ host, port, ca, rejectUnauthorized: true, ...(isIP(host) ? {} : { servername: host }) });
    return opened(socket, 'secureConnect', (e) =>
      e.code && e.code in UNIX_MESSAGES || e.code === 'ENOTFOUND' ? unixError(e, 'connect', server, port)
        : new ClientExit(`Error: TLS connection to ${server} port ${port} failed: ${e.message}\n`));
  }
  const host = server.replace(/^\[(.*)\]$/, '$1');
  const port = s.port ?? 80;
  debug(`Connecting via TCP to [${server}] port [${port}]\n`);
  return opened(netConnect({ host, port }), 'connect', (e) => unixError(e, 'connect', host, port));
}

/** The connection for the CLI request itself (with_open_channels). */
export async function openChannels(s: Settings, debug: Debug): Promise<Stream> {
  if (isLocalhost(s.server) && existsSync(LOCAL_SOCKET)) {
    debug(`Connecting to Unix socket [${LOCAL_SOCKET}]`);
    try {
      const st = await opened(netConnect({ path: LOCAL_SOCKET }), 'connect', (e) => new ClientExit(e.message));
      debug('\n');
      return st;
    } catch {
      debug(' failed\n');
    }
  }
  return openTcp(s, s.server, debug);
}
