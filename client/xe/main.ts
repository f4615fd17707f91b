// `xe`: the command line of XAPI, speaking the thin-CLI protocol as xapi's own client (newcli.ml):
// POST /cli with the arguments one a line and the credentials, the handshake both ways, then the
// server's commands until Exit, whose code is ours. Output, errors and exit codes are the real
// client's.
import { openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { decodePayload, encodeHandshake, encodeMessage, PROTOCOL_MAJOR, PROTOCOL_MINOR, PROTOCOL_PREFIX, ProtocolError, type Command, type Message } from '../../server/cli/protocol.js';
import { canonicalize, ClientExit, parseArgs, permittedFilenames, Usage, type Settings } from './options.js';
import { EndOfFile, openChannels, type Stream } from './stream.js';
import { ClientSideError, FilenameNotPermitted, httpConnect, httpGet, httpPut, type TransferContext } from './transfer.js';

/** Failures that end the client with a text of their own. */
class ConnectFailure extends Error {}
class NotACliServer extends Error {}
class ServerInternalError extends Error {}
class VersionMismatch extends Error {}
class UnexpectedMessage extends Error {}

function usageText(argv0: string): string {
  return `Usage:
  ${argv0} <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --debug ]                Enable debug output
    [ --debug-on-fail ]        Enable debug output only on failure
    [ --minimal ]              Output only values in a comma-separated lists
    [ --traceparent <value> ]  Distributed tracing context
    [ --trace ]                Show task stacktrace on failure
    [ <other arguments> ... ]  Command-specific options

A full list of commands can be obtained by running
  ${argv0} help -s <server> -p <port>
`;
}

function commandText(c: Command): string {
  switch (c.t) {
    case 'Print': case 'Debug': case 'PrintStderr': return `${c.t} ${c.text}`;
    case 'Load': return `Load ${c.filename}`;
    case 'HttpGet': case 'HttpPut': return `${c.t} ${c.path} -> ${c.filename}`;
    case 'HttpConnect': return `HttpConnect ${c.path}`;
    case 'Prompt': return 'Prompt';
    case 'Exit': return `Exit ${c.code}`;
    case 'Error': return `Error ${c.code} [ ${c.params.join('; ')}]`;
  }
}

/** string_of_message */
function messageText(m: Message): string {
  if (m.kind === 'Command') return `Command ${commandText(m.command)}`;
  if (m.kind === 'Response') return `Response ${m.response}`;
  return `Blob ${m.blob.t === 'Chunk' ? `Chunk ${m.blob.length}` : 'End'}`;
}

const LOAD_BLOCK = 10 * 1024 * 1024;

/** One line of standard input, without its newline (OCaml's input_line). */
function stdinLine(): string {
  const bytes: number[] = [];
  const one = Buffer.alloc(1);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, one, 0, 1, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      throw new EndOfFile();
    }
    if (n === 0) {
      if (bytes.length === 0) throw new EndOfFile();
      break;
    }
    if (one[0] === 10) break;
    bytes.push(one[0]);
  }
  return Buffer.from(bytes).toString('latin1');
}

class Session {
  private readonly permitted: string[];
  constructor(private readonly s: Settings, private readonly st: Stream, args: string[], private readonly debug: (t: string) => void) {
    this.permitted = permittedFilenames(args);
  }

  private send(m: Message): Promise<void> {
    return this.st.write(encodeMessage(m));
  }

  private assertPermitted(filename: string, opts: { cwd?: boolean } = {}): void {
    const allowed = opts.cwd ? [canonicalize('.'), ...this.permitted] : this.permitted;
    if (!allowed.includes(canonicalize(filename))) {
      throw new FilenameNotPermitted(`Blocked upload/download of the file ${filename}, which was requested by the server. The file name was not present on the command line\n`);
    }
  }

  /** A message, or the reason the server's answer is not one (handle_unmarshal_failure). */
  private async unmarshal(): Promise<Message> {
    const head = await this.st.read(4);
    const failure = async (got: Buffer, e: Error): Promise<never> => {
      const rest = Buffer.concat([got, (await this.st.some().catch(() => null)) ?? Buffer.alloc(0)]);
      if (rest.length >= 4 && rest.toString('latin1', 0, 4).toUpperCase() === 'HTTP') throw new ServerInternalError();
      throw e;
    };
    if (head.length < 4) return failure(head, new EndOfFile());
    const n = head.readInt32LE(0);
    const body = await this.st.read(Math.max(0, n));
    if (body.length < n) return failure(Buffer.concat([head, body]), new EndOfFile());
    try {
      return decodePayload(body);
    } catch (e) {
      return failure(Buffer.concat([head, body]), e instanceof ProtocolError ? new UnexpectedMessage(String(e.message)) : (e as Error));
    }
  }

  private async handshake(): Promise<void> {
    const prefix = await this.st.read(PROTOCOL_PREFIX.length);
    if (prefix.length === 0) throw new ConnectFailure();
    const fail = async (e: Error, got: Buffer): Promise<never> => {
      const rest = Buffer.concat([got, (await this.st.some().catch(() => null)) ?? Buffer.alloc(0)]);
      if (rest.length >= 4 && rest.toString('latin1', 0, 4).toUpperCase() === 'HTTP') throw new ServerInternalError();
      throw e;
    };
    if (prefix.length < PROTOCOL_PREFIX.length) return fail(new EndOfFile(), prefix);
    if (prefix.toString('latin1') !== PROTOCOL_PREFIX) return fail(new NotACliServer(), prefix);
    const v = await this.st.read(8);
    if (v.length < 8) return fail(new EndOfFile(), Buffer.concat([prefix, v]));
    const major = v.readInt32LE(0);
    const minor = v.readInt32LE(4);
    const msg = `Server has protocol version ${major}.${minor}. Client has ${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}`;
    this.debug(`${msg}\n`);
    if (major !== PROTOCOL_MAJOR) throw new VersionMismatch(msg);
    await this.st.write(encodeHandshake());
  }

  /** The main loop: the server's commands until Exit; the exit code. */
  async run(): Promise<number> {
    await this.handshake();
    const heartbeat = () => void this.send({ kind: 'Response', response: 'Wait' }).catch(() => undefined);
    const t: TransferContext = { settings: this.s, debug: this.debug, heartbeat, permitted: (f, o) => this.assertPermitted(f, o) };
    for (;;) {
      const m = await this.unmarshal();
      this.debug(`Read: ${messageText(m)}\n`);
      if (m.kind !== 'Command') throw new UnexpectedMessage(messageText(m));
      const c = m.command;
      switch (c.t) {
        case 'Print':
          process.stdout.write(`${c.text}\n`);
          break;
        case 'PrintStderr':
          process.stderr.write(c.text);
          break;
        case 'Debug':
          this.debug(`debug from server: ${c.text}\n`);
          break;
        case 'Load':
          this.assertPermitted(c.filename);
          await this.load(c.filename);
          break;
        case 'HttpGet': case 'HttpPut': {
          // (the PUT checks its file before anything; the GET once the server answered)
          if (c.t === 'HttpPut') this.assertPermitted(c.filename);
          try {
            await (c.t === 'HttpGet' ? httpGet(t, c.filename, c.path) : httpPut(t, c.filename, c.path));
            await this.send({ kind: 'Response', response: 'OK' });
          } catch (e) {
            if (e instanceof FilenameNotPermitted) throw e;
            await this.send({ kind: 'Response', response: 'Failed' });
            if (e instanceof ClientSideError) {
              process.stderr.write(`Operation failed. Error: ${e.message}\n`);
              return 1;
            }
            this.debug(`${c.t} failure: ${(e as Error).message}\n`);
          }
          break;
        }
        case 'HttpConnect': {
          let ok = false;
          try {
            ok = await httpConnect(t, c.path);
          } catch (e) {
            process.stderr.write(`${(e as Error).message}\n`);
          }
          await this.send({ kind: 'Response', response: ok ? 'OK' : 'Failed' });
          break;
        }
        case 'Prompt': {
          const data = Buffer.from(stdinLine(), 'latin1');
          await this.st.write(Buffer.concat([encodeMessage({ kind: 'Blob', blob: { t: 'Chunk', length: data.length } }), data, encodeMessage({ kind: 'Blob', blob: { t: 'End' } })]));
          break;
        }
        case 'Error':
          process.stderr.write(`Error code: ${c.code}\nError parameters: ${c.params.join(', ')}\n`);
          break;
        case 'Exit':
          return c.code;
      }
    }
  }

  /** Load: the file's bytes as one Blob chunk (Failed when it cannot be read). */
  private async load(filename: string): Promise<void> {
    let fd: number;
    try {
      fd = openSync(filename, 'r');
    } catch {
      await this.send({ kind: 'Response', response: 'Failed' });
      return;
    }
    try {
      await this.send({ kind: 'Response', response: 'OK' });
      const length = fstatSync(fd).size;
      await this.send({ kind: 'Blob', blob: { t: 'Chunk', length } });
      const buf = Buffer.alloc(Math.min(LOAD_BLOCK, Math.max(1, length)));
      let left = length;
      while (left > 0) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, left), null);
        if (n === 0) break;
        await this.st.write(Buffer.from(buf.subarray(0, n)));
        left -= n;
      }
      await this.send({ kind: 'Blob', blob: { t: 'End' } });
    } finally {
      closeSync(fd);
    }
  }
}

/** The request line, headers and body of POST /cli. */
function request(s: Settings, args: string[]): Buffer {
  const body = Buffer.from([...args, `username=${s.username}`, `password=${s.password}`].join('\n'), 'utf8');
  let head = `POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}\r\noriginator: cli\r\n`;
  if (s.traceparent !== null) head += `traceparent: ${s.traceparent}\r\n`;
  if (process.env.BAGGAGE !== undefined) head += `baggage: ${process.env.BAGGAGE}\r\n`;
  head += `content-length: ${body.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'utf8'), body]);
}

/** Runs the client on `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: string[], argv0 = 'xe'): Promise<number> {
  const err = (t: string) => process.stderr.write(t);
  if (argv.includes('-version')) {
    process.stdout.write(`ThinCLI protocol: ${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}\n`);
    return 0;
  }
  let status = 1;
  let debugLog: string[] | null = null;
  let debug: (t: string) => void = () => undefined;
  let st: Stream | null = null;
  try {
    const { settings, args } = parseArgs(argv, process.env, err);
    if (settings.debug) debug = err;
    if (settings.debugOnFail) {
      const log: string[] = (debugLog = []);
      debug = (t) => void log.push(t);
    }
    if (args.length === 0) throw new Usage();
    st = await openChannels(settings, debug);
    await st.write(request(settings, args));
    status = await new Session(settings, st, args, debug).run();
  } catch (e) {
    if (e instanceof Usage) {
      status = 0;
      err(usageText(argv0));
    } else if (e instanceof ClientExit) err(e.text);
    else if (e instanceof NotACliServer) {
      err('Failed to contact a running management agent.\nTry specifying a server name and port.\n');
      err(usageText(argv0));
    } else if (e instanceof VersionMismatch) {
      err(`Protocol version mismatch: ${e.message}.\nTry specifying a server name and port on the command-line.\n`);
      err(usageText(argv0));
    } else if (e instanceof ConnectFailure) err('Unable to contact server. Please check server and port settings.\n');
    else if (e instanceof EndOfFile) err('Lost connection to the server.\n');
    else if (e instanceof UnexpectedMessage) err(`Unexpected message from server: ${e.message}`);
    else if (e instanceof ServerInternalError) err('Server internal error.\n');
    else if (e instanceof FilenameNotPermitted) err(`File not permitted: ${e.message}.\n`);
    else if (e instanceof ClientSideError) err(`Client Side error: ${e.message}.\n`);
    else err(`Unhandled exception\n${(e as Error)?.message ?? e}\n`);
  } finally {
    st?.close();
  }
  if (debugLog !== null && status !== 0) err(`\nDebug info:\n\n${(debugLog as string[]).join('')}`);
  return status;
}
