// A client of the thin-CLI protocol as xapi's own `xe` (newcli.ml) speaks it: POST /cli over
// HTTP/1.0 with the arguments one a line, then the server's handshake, ours, and the server's
// commands until Exit. Print goes to stdout (with a newline), PrintStderr to stderr as sent.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Decoder, encodeHandshake, encodeMessage, PROTOCOL_MAJOR, PROTOCOL_MINOR, type Command } from '../../../server/cli/protocol.js';

export interface XeResult {
  stdout: string;
  stderr: string;
  code: number;
  /** every command received, in order */
  commands: Command[];
}

export interface XeOptions {
  username?: string;
  password?: string;
  /** sent as the first line `session_id=...` (then no credentials) */
  sessionId?: string;
  /** the protocol version we claim */
  major?: number;
}

/** Runs `xe <args>` against the server at `url` (http://host:port/). */
export function xe(url: string, args: string[], opts: XeOptions = {}): Promise<XeResult> {
  const u = new URL(url);
  const lines = opts.sessionId !== undefined ? [`session_id=${opts.sessionId}`, ...args] : [...args, `username=${opts.username ?? ''}`, `password=${opts.password ?? ''}`];
  const body = Buffer.from(lines.join('\n'));
  const head = `POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}\r\noriginator: cli\r\ncontent-length: ${body.length}\r\n\r\n`;
  return new Promise((resolve, reject) => {
    // https: TLS as the real client gets it through stunnel (the emulator's certificate is its own)
    const sock: Socket = u.protocol === 'https:'
      ? tlsConnect({ port: Number(u.port), host: u.hostname, rejectUnauthorized: false })
      : connect(Number(u.port), u.hostname);
    const ready = u.protocol === 'https:' ? 'secureConnect' : 'connect';
    const out: XeResult = { stdout: '', stderr: '', code: -1, commands: [] };
    const decoder = new Decoder();
    let settled = false;
    const finish = (e?: Error) => {
      if (settled) return;
      settled = true;
      sock.destroy();
      if (e) reject(e);
      else resolve(out);
    };
    sock.on(ready, () => sock.write(Buffer.concat([Buffer.from(head), body])));
    sock.on('data', (chunk: Buffer) => {
      // a reply in HTTP is what the real client calls "Server internal error"
      if (out.commands.length === 0 && chunk.subarray(0, 4).toString() === 'HTTP') return finish(new Error(`Server internal error: ${chunk.toString()}`));
      let got;
      try {
        got = decoder.push(chunk);
      } catch (e) {
        return finish(e as Error);
      }
      for (const d of got) {
        if (d.t === 'handshake') {
          if (d.major !== PROTOCOL_MAJOR) return finish(new Error('Protocol version mismatch'));
          sock.write(encodeHandshake(opts.major ?? PROTOCOL_MAJOR, PROTOCOL_MINOR));
        } else if (d.t === 'message' && d.message.kind === 'Command') {
          const c = d.message.command;
          out.commands.push(c);
          switch (c.t) {
            case 'Print': out.stdout += `${c.text}\n`; break;
            case 'PrintStderr': out.stderr += c.text; break;
            case 'Error': out.stderr += `Error code: ${c.code}\nError parameters: ${c.params.join(', ')}\n`; break;
            case 'Exit': out.code = c.code; return finish();
            case 'Debug': break;
            // no file was named on this command line, and no terminal to prompt on
            case 'Load': case 'HttpGet': case 'HttpPut': case 'HttpConnect': case 'Prompt':
              sock.write(encodeMessage({ kind: 'Response', response: 'Failed' }));
              break;
          }
        } else return finish(new Error(`unexpected ${JSON.stringify(d)}`));
      }
    });
    sock.on('error', (e) => finish(e));
    sock.on('close', () => finish(out.code < 0 ? new Error('Lost connection to the server.') : undefined));
  });
}
