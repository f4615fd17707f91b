// POST /cli: the HTTP side of the CLI server. The request's body is read here; the connection is
// then taken from the HTTP server, since the answer is no HTTP response but the CLI protocol.
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { serveCli } from './exchange.js';

/** xapi's limit on a CLI request's body (Constants.http_limit_max_cli_size). */
export const CLI_BODY_LIMIT = 200 * 1024;

const TOO_LARGE = 'HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

/** The request's body, or null when it is larger than the limit or cut. */
function readBody(req: FastifyRequest): Promise<Buffer | null> {
  const raw = req.raw;
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    raw.on('data', (c: Buffer) => {
      size += c.length;
      if (size > CLI_BODY_LIMIT) {
        raw.removeAllListeners('data');
        resolve(null);
      } else parts.push(c);
    });
    raw.on('end', () => resolve(Buffer.concat(parts)));
    raw.on('aborted', () => resolve(null));
    raw.on('error', () => resolve(null));
  });
}

/** Detaches the socket from Node's HTTP parser (as an upgrade does), so that what the client
 * sends next comes to us rather than being read as a new request. */
function takeSocket(req: FastifyRequest): Socket {
  const socket = req.raw.socket;
  const s = socket as Socket & { parser?: { _consumed?: boolean; unconsume?: () => void } | null };
  const parser = s.parser;
  if (parser) {
    if (parser._consumed) parser.unconsume?.();
    parser._consumed = false;
  }
  for (const ev of ['data', 'end', 'error', 'timeout', 'drain', 'pause', 'resume']) socket.removeAllListeners(ev);
  s.parser = null;
  socket.on('error', () => socket.destroy());
  socket.resume();
  return socket;
}

export function cliPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  // the body is read here, whatever its content-type (the real client sends none)
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));
  app.addHook('onRequest', (req, _reply, done) => {
    req.headers['content-type'] = 'application/octet-stream';
    done();
  });
  app.post('/cli', async (req: FastifyRequest, reply: FastifyReply) => {
    reply.hijack();
    const body = await readBody(req);
    const socket = takeSocket(req);
    if (body === null) {
      socket.end(TOO_LARGE);
      return;
    }
    await serveCli(ctx.emu, ctx.hostOf(req), socket, body.toString('utf8'));
  });
}
