// One CLI request, as xapi_cli.ml serves it: the body holds the arguments (and the credentials
// or a session), then, with no HTTP status line, the protocol handshake both ways, the command's
// output as Print / PrintStderr commands, and Exit with its code; the connection closes after.
import type { Socket } from 'node:net';
import { apiRelease } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';
import { dispatch } from '../dispatch/dispatch.js';
import { XapiError } from '../dispatch/errors.js';
import { parseBody, parseCommandLine, boolParam } from './args.js';
import { commandTable, type CommandContext } from './commands.js';
import { CliFailure, failureCommands, ParamNotFound, UnknownCommand } from './errors.js';
import { help } from './help.js';
import { Printer } from './printer.js';
import { Decoder, encodeCommand, encodeHandshake, PROTOCOL_MAJOR, type Command, type Message, type Response } from './protocol.js';
import { refConvert } from './records.js';
// the commands register themselves
import './commands/index.js';

/** The API version the CLI logs in with (Datamodel_common.api_version_string). */
const API_VERSION = `${apiRelease.version_major}.${apiRelease.version_minor}`;

/** What the client sends after its handshake: responses, and Blob chunks with their bytes. */
type Incoming = { t: 'message'; message: Message } | { t: 'data'; data: Buffer };

/** The client's side of the socket once the HTTP request is read. */
class Channel {
  private readonly decoder = new Decoder();
  private waiting: ((ok: boolean) => void) | null = null;
  private handshake: { major: number; minor: number } | null = null;
  private readonly queue: Incoming[] = [];
  private closed = false;

  constructor(private readonly socket: Socket, private readonly timeoutMs: number) {
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const d of this.decoder.push(chunk)) {
          if (d.t === 'handshake') this.handshake = d;
          else this.queue.push(d);
        }
      } catch {
        // not the protocol: nothing more to say to this client
        this.close();
      }
      this.wake(true);
    });
    socket.on('end', () => this.close());
    socket.on('close', () => this.close());
    socket.on('error', () => this.close());
  }

  private wake(ok: boolean): void {
    const w = this.waiting;
    this.waiting = null;
    w?.(ok);
  }

  send(c: Command): void {
    if (!this.closed) this.socket.write(encodeCommand(c));
  }

  /** Waits for something from the client; false when it went away (or, with a timeout, stayed silent). */
  private async more(timeoutMs: number): Promise<boolean> {
    if (this.closed) return false;
    let timer: NodeJS.Timeout | undefined;
    const ok = await new Promise<boolean>((resolve) => {
      this.waiting = resolve;
      if (timeoutMs > 0) timer = setTimeout(() => this.wake(false), timeoutMs);
    });
    clearTimeout(timer);
    return ok;
  }

  /** The client's handshake (null if it goes away or never sends one). */
  async clientHandshake(): Promise<{ major: number; minor: number } | null> {
    while (!this.handshake && !this.closed) {
      // a client that never answers does not hold the connection forever
      if (!(await this.more(this.timeoutMs))) return null;
    }
    return this.handshake;
  }

  /** The next thing the client sends, or null once it is gone. A transfer may take as long as it
   * takes: the client says it is alive with Wait responses, and a dead one closes the socket. */
  async next(): Promise<Incoming | null> {
    while (this.queue.length === 0) {
      if (this.closed) return null;
      await this.more(0);
    }
    return this.queue.shift()!;
  }

  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.socket.end();
    }
    this.wake(false);
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

/** xapi's limit on what one Load or Prompt may carry (Constants.max_cli_upload_bytes). */
export const MAX_CLI_UPLOAD = 32 * 1024 * 1024;

/** The client end of a command: the exchanges that involve the client's files and terminal. */
export class CliClient {
  constructor(private readonly ch: Channel) {}

  /** Blob chunks up to Blob End (cli_operations.ml's get_chunks). */
  private async chunks(): Promise<Buffer> {
    const parts: Buffer[] = [];
    let size = 0;
    for (;;) {
      const m = await this.ch.next();
      if (m === null) throw new ClientGone();
      if (m.t === 'data') {
        parts.push(m.data);
        continue;
      }
      const msg = m.message;
      if (msg.kind !== 'Blob') throw new CliFailure('Thin CLI protocol error');
      if (msg.blob.t === 'End') return Buffer.concat(parts);
      size += msg.blob.length;
      if (size > MAX_CLI_UPLOAD) throw new CliFailure(`Fatal error: A CLI client tried to transfer more than the maximum allowed of ${MAX_CLI_UPLOAD}B, aborting.`);
    }
  }

  /** The response to the last command, skipping the client's heartbeats. */
  private async response(): Promise<Response> {
    for (;;) {
      const m = await this.ch.next();
      if (m === null) throw new ClientGone();
      if (m.t === 'message' && m.message.kind === 'Response') {
        if (m.message.response !== 'Wait') return m.message.response;
      } else throw new CliFailure('Thin CLI protocol error');
    }
  }

  /** The content of a file the client holds (Load), or null if it could not read it. */
  async load(filename: string): Promise<Buffer | null> {
    this.ch.send({ t: 'Load', filename });
    return (await this.response()) === 'OK' ? this.chunks() : null;
  }

  /** A line the user types (Prompt). */
  async prompt(): Promise<string> {
    this.ch.send({ t: 'Prompt' });
    return (await this.chunks()).toString('utf8');
  }

  /** Has the client GET or PUT a file at `path` of this server; OK when its side went well. */
  async transfer(command: { t: 'HttpGet' | 'HttpPut' | 'HttpConnect'; filename?: string; path: string }): Promise<Response> {
    this.ch.send(command.t === 'HttpConnect' ? { t: 'HttpConnect', path: command.path } : { t: command.t, filename: command.filename ?? '', path: command.path });
    return this.response();
  }

  send(c: Command): void {
    this.ch.send(c);
  }
}

/** The client went away in the middle of an exchange. */
export class ClientGone extends Error {}

const clients = new WeakMap<CommandContext, CliClient>();

/** The client of a running command (for the commands that transfer files). */
export function clientOf(ctx: CommandContext): CliClient {
  const c = clients.get(ctx);
  if (!c) throw new Error('no CLI client for this command');
  return c;
}

/** Cli_util.user_says_yes: asks the user to type 'yes'; anything else aborts, saying so. */
export async function userSaysYes(ctx: CommandContext): Promise<boolean> {
  const client = clientOf(ctx);
  client.send({ t: 'Print', text: "Type 'yes' to continue" });
  const answer = await client.prompt();
  if (answer.trim().toLowerCase() === 'yes') return true;
  client.send({ t: 'Print', text: `Aborted (you typed: '${answer}')` });
  return false;
}

/** An API call in `session` (or none), answered as an XAPI client would get it. */
async function callApi(emu: Emulator, host: string, name: string, args: unknown[]): Promise<unknown> {
  const r = await dispatch(emu, name, args, { host });
  if (!r.ok) throw new XapiError(r.error[0], r.error.slice(1));
  return r.value;
}

/**
 * Serves one CLI request on `socket` (the HTTP request already read: `body`). Resolves when the
 * connection is done with; never throws.
 */
export async function serveCli(emu: Emulator, host: string, socket: Socket, body: string): Promise<void> {
  const ch = new Channel(socket, Math.ceil(emu.conf.idle_timeout_tcp * 1000));
  try {
    socket.write(encodeHandshake());
    const theirs = await ch.clientHandshake();
    // a client of another major version is not served (xapi fails the request)
    if (!theirs || theirs.major !== PROTOCOL_MAJOR) return;
    const { session: given, args } = parseBody(body);
    let session: string | null = null;
    let loggedIn = false;
    let logout = 'session.logout';
    try {
      const cmd = parseCommandLine(args);
      const minimal = boolParam(cmd.params, 'minimal');
      const printer = new Printer((c) => ch.send(c), minimal);
      if (cmd.cmdname === 'help') {
        help(printer, cmd.params);
      } else {
        const spec = commandTable.get(cmd.cmdname);
        if (!spec) throw new UnknownCommand(cmd.cmdname);
        for (const k of spec.reqd) if (!cmd.params.some(([p]) => p === k)) throw new ParamNotFound(k);
        // a member forwards commands to the master only for a client on its local socket; over
        // TCP it refuses them
        if (host !== emu.master && !spec.local) throw new XapiError('HOST_IS_SLAVE', [String(emu.db.get('host', emu.master)?.address ?? '')]);
        const p = (k: string) => cmd.params.find(([n]) => n === k)?.[1] ?? '';
        if (spec.local) {
          session = (await callApi(emu, host, 'session.slave_local_login_with_password', [p('username'), p('password')])) as string;
          loggedIn = true;
          logout = 'session.local_logout';
        } else if (given !== null) session = given;
        else {
          session = (await callApi(emu, host, 'session.login_with_password', [p('username'), p('password'), API_VERSION, 'cli'])) as string;
          loggedIn = true;
        }
        const s = session;
        const ctx: CommandContext = {
          emu, host, session: s, params: cmd.params, printer,
          call: (name, ...a) => callApi(emu, host, name, [s, ...a]),
          closed: () => ch.isClosed,
        };
        clients.set(ctx, new CliClient(ch));
        await spec.run(ctx);
      }
      printer.flush();
      ch.send({ t: 'Exit', code: 0 });
    } catch (e) {
      if (e instanceof ClientGone) return;
      for (const c of failureCommands(e, (s) => refConvert(emu, s))) ch.send(c);
      ch.send({ t: 'Exit', code: 1 });
    } finally {
      if (loggedIn && session !== null) await callApi(emu, host, logout, [session]).catch(() => undefined);
    }
  } catch {
    // the client went away mid-way: nothing to tell it
  } finally {
    ch.close();
  }
}
