// The RPC endpoints as a Fastify plugin (WIRE.md §1, §2). xapi routes by longest prefix: POST
// /jsonrpc… is JSON-RPC, every other POST path (/, /RPC2, /json, /xmlrpc, …) is XML-RPC, and OPTIONS
// anywhere is the CORS preflight. Routes registered by other plugins (static paths) win over our
// wildcards, as longer prefixes do in xapi.
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Emulator } from '../emulator.js';
import { dispatch, type CallOrigin, type CallResult } from '../dispatch/dispatch.js';
import * as xml from './xmlrpc-codec.js';
import * as json from './jsonrpc-codec.js';

/** xapi's limit on an RPC body (Constants.http_limit_max_rpc_size, 300 KiB): a client that fits the
 * emulator fits a real host. xapi answers a bigger body with a 500; we answer 413. */
export const DEFAULT_RPC_BODY_LIMIT = 300 * 1024;

export interface RpcPluginOptions {
  emu: Emulator;
  bodyLimit?: number;
  /** The host ref that answers a call received on the given local address. */
  hostFor?: (localAddress: string) => string;
}

/** IPv4-mapped IPv6 (`::ffff:127.0.0.2`, dual-stack sockets) to plain IPv4. */
export const normaliseAddress = (a: string | undefined): string =>
  a === undefined ? '' : a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;

/** By host.address, master first (with one shared address, calls are answered as the master). */
export function hostByLocalAddress(emu: Emulator): (localAddress: string) => string {
  return (addr) => {
    for (const h of emu.hosts) if (emu.db.get('host', h)?.address === addr) return h;
    return emu.hostByAddress(addr) ?? emu.master;
  };
}

/** The receiving host, resolved once per connection (keep-alive connections carry many calls). */
export function receivingHost(hostFor: (addr: string) => string): (req: FastifyRequest) => string {
  const bySocket = new WeakMap<Socket, string>();
  return (req) => {
    const sock = req.raw.socket;
    let h = bySocket.get(sock);
    if (h === undefined) bySocket.set(sock, (h = hostFor(normaliseAddress(sock.localAddress))));
    return h;
  };
}

// Headers as flat arrays for writeHead: built once, copied per call with the length appended.
const CORS = ['access-control-allow-origin', '*', 'access-control-allow-headers', 'X-Requested-With'];
const NO_CACHE = ['cache-control', 'no-cache, no-store'];
const XML_HEADERS = ['content-type', 'text/xml', ...CORS, ...NO_CACHE];
const JSON_HEADERS = ['content-type', 'application/json', ...CORS, ...NO_CACHE];
const HTML_HEADERS = ['content-type', 'text/html', 'connection', 'close', 'access-control-allow-origin', '*', ...NO_CACHE];
const EMPTY = Buffer.alloc(0);

/** Bodies above this are UTF-8 encoded once into a Buffer (instead of once to measure and again to
 * write); below it, the string goes out with the headers in a single write. */
const BUFFER_BODY_ABOVE = 64 * 1024;

/** A body: one string, or chunks (cached bytes of a record between the envelope's pieces). */
type Body = string | readonly (string | Buffer)[];

function send(reply: FastifyReply, status: number, headers: readonly string[], body: Body): void {
  reply.hijack(); // written raw: no serializer or onSend work on the hot path
  const res = reply.raw;
  if (typeof body !== 'string') {
    let length = 0;
    for (const c of body) length += typeof c === 'string' ? Buffer.byteLength(c) : c.length;
    res.writeHead(status, [...headers, 'content-length', String(length)]);
    const last = body.length - 1;
    for (let i = 0; i < last; i++) res.write(body[i]);
    res.end(body[last]);
    return;
  }
  const data = body.length > BUFFER_BODY_ABOVE ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, [...headers, 'content-length', String(typeof data === 'string' ? Buffer.byteLength(data) : data.length)]);
  res.end(data);
}

/** A fault rule's dropped connection: cut without an answer, as a host that went away mid-call. */
function dropConnection(reply: FastifyReply): void {
  reply.hijack();
  reply.raw.socket?.destroy();
}

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&quot;'));

/** An HTML error page, closing the connection as xapi does after a failed request. */
export function sendHtmlError(reply: FastifyReply, status: number, title: string, detail: string): void {
  send(reply, status, HTML_HEADERS, `<html><body><h1>HTTP ${status} ${escapeHtml(title)}</h1><p>${escapeHtml(detail)}</p></body></html>`);
}

/** X-Http-Other-Config-<key>: <value> headers, which xapi copies into the call's task.other_config. */
function httpOtherConfig(headers: FastifyRequest['headers']): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const k in headers) {
    if (k.length > 20 && k.startsWith('x-http-other-config-')) {
      const v = headers[k];
      (out ??= {})[k.slice(20)] = Array.isArray(v) ? v.join(',') : String(v);
    }
  }
  return out;
}

export async function rpcPlugin(app: FastifyInstance, opts: RpcPluginOptions): Promise<void> {
  const { emu } = opts;
  const bodyLimit = opts.bodyLimit ?? DEFAULT_RPC_BODY_LIMIT;
  const hostOf = receivingHost(opts.hostFor ?? hostByLocalAddress(emu));

  // Clients send text/xml, application/xml, application/json or nothing: every body is raw bytes.
  // Parsers are scoped to this plugin, so other plugins keep Fastify's defaults or their own.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  // A missing or syntactically odd content-type must not turn into Fastify's 415.
  app.addHook('onRequest', (req, _reply, done) => {
    req.headers['content-type'] = 'application/octet-stream';
    done();
  });

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    const status = err.statusCode === 413 ? 413 : err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
    sendHtmlError(reply, status, status === 413 ? 'request entity too large' : 'error', err.message);
  });

  const origin = (req: FastifyRequest, badUtf8: string[]): CallOrigin => ({
    host: hostOf(req),
    badUtf8: badUtf8.length > 0 ? badUtf8 : undefined,
    httpOtherConfig: httpOtherConfig(req.headers),
  });

  async function xmlRpc(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    let call: xml.DecodedCall;
    try {
      call = xml.decodeMethodCall((req.body as Buffer | undefined) ?? EMPTY);
    } catch (e) {
      return sendHtmlError(reply, 500, 'internal server error', `XML-RPC parse error: ${(e as Error).message}`);
    }
    const r = await dispatch(emu, call.method, call.params, origin(req, call.badUtf8));
    if (!r.ok && r.drop === true) return dropConnection(reply);
    let out: Body;
    try {
      out = r.ok ? (r.bare ? xml.encodeBare(r.value, r.ty) : xml.encodeSuccessBody(r.value, r.ty)) : xml.encodeFailure(r.error);
    } catch (e) {
      out = xml.encodeFailure(['INTERNAL_ERROR', (e as Error).message]);
    }
    send(reply, 200, XML_HEADERS, out);
  }

  async function jsonRpc(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    let call: json.JsonRpcCall;
    try {
      call = json.decodeJsonRpc((req.body as Buffer | undefined) ?? EMPTY);
    } catch (e) {
      return sendHtmlError(reply, 500, 'internal server error', (e as Error).message);
    }
    const r: CallResult = await dispatch(emu, call.method, call.params, origin(req, call.badUtf8));
    let out: Body;
    if (!r.ok && r.drop === true) return dropConnection(reply);
    if (r.ok) {
      try {
        out = json.encodeSuccessBody(call.version, call.id, r.value, r.ty);
      } catch (e) {
        out = json.encodeError(call.version, call.id, ['INTERNAL_ERROR', (e as Error).message]);
      }
    } else if (call.version === 2 && call.method === 'system.listMethods') {
      // xapi skips the v2 error-object translation for this one method: the raw array goes out
      out = '{"jsonrpc":"2.0","error":' + JSON.stringify(r.error) + ',"id":' + JSON.stringify(call.id) + '}';
    } else out = json.encodeError(call.version, call.id, r.error);
    send(reply, 200, JSON_HEADERS, out);
  }

  app.post('/jsonrpc', jsonRpc);
  // Longest prefix as xapi: /jsonrpc/x and /jsonrpcfoo are JSON-RPC too.
  app.post('/*', (req, reply) => (req.url.startsWith('/jsonrpc') ? jsonRpc(req, reply) : xmlRpc(req, reply)));

  // CORS preflight (xapi answers it on every path; the methods list is xapi's)
  app.options('/*', (req, reply) => {
    const asked = req.headers['access-control-request-headers'];
    send(reply, 200, [
      'access-control-allow-origin', '*',
      'access-control-allow-headers', asked ? `${asked}, X-Requested-With` : 'X-Requested-With',
      'access-control-allow-methods', 'PUT',
      ...NO_CACHE,
    ], '');
  });
}
