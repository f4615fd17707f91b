// Pool-internal HTTP of an adoption, on the master, authenticated by the pool secret (cookie
// pool_secret, as xapi's pool-internal handlers): PUT /pool_adopt/file stages a file of the
// joiner's local SR, POST /pool_adopt/commit writes its records, POST /pool_adopt/listen makes the
// master answer on the new host's address, GET /pool_adopt/status tells a joiner restarted midway
// whether its host is the pool's.
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { isPoolSecret } from '../pool/secret.js';
import { commitAdoption, stagedFile, type JoinBundle } from '../pool/adoption.js';
import { poolRuntime } from '../pool/runtime.js';
import { isUuid } from '../sm/paths.js';

/** largest bundle of records a joiner sends */
const BUNDLE_LIMIT = 256 * 1024 * 1024;

function secretOf(req: FastifyRequest): string | undefined {
  const cookie = req.headers.cookie ?? '';
  for (const part of cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === 'pool_secret') return decodeURIComponent(v.join('='));
  }
  return undefined;
}

function fail(reply: FastifyReply, status: number, e: unknown): FastifyReply {
  const desc = e instanceof XapiError ? e.description : ['INTERNAL_ERROR', e instanceof Error ? e.message : String(e)];
  return reply.code(status).header('content-type', 'application/json').send(JSON.stringify({ error: desc }));
}

export async function adoptionPlugin(app: FastifyInstance, emu: () => Emulator): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));
  app.addHook('onRequest', async (req, reply) => {
    if (!isPoolSecret(emu(), secretOf(req))) return fail(reply, 403, new XapiError('PERMISSION_DENIED', []));
  });
  const q = (req: FastifyRequest) => req.query as Record<string, string | undefined>;

  app.put('/pool_adopt/file', async (req, reply) => {
    const { host = '', sr = '', name = '' } = q(req);
    let path: string;
    try {
      path = stagedFile(emu(), host, sr, name);
    } catch (e) {
      return fail(reply, 400, e);
    }
    await pipeline(req.raw, createWriteStream(path));
    return reply.code(200).send('');
  });

  app.post('/pool_adopt/commit', async (req, reply) => {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req.raw) {
      n += (c as Buffer).length;
      if (n > BUNDLE_LIMIT) return fail(reply, 413, new XapiError('INTERNAL_ERROR', ['bundle too large']));
      chunks.push(c as Buffer);
    }
    let bundle: JoinBundle;
    try {
      bundle = JSON.parse(Buffer.concat(chunks).toString('utf8')) as JoinBundle;
      if (typeof bundle?.host !== 'string' || typeof bundle.records !== 'object' || bundle.records === null) throw new Error('not a bundle');
    } catch (e) {
      return fail(reply, 400, new XapiError('INTERNAL_ERROR', [(e as Error).message]));
    }
    try {
      const host = commitAdoption(emu(), bundle);
      return reply.header('content-type', 'application/json').send(JSON.stringify({ host }));
    } catch (e) {
      return fail(reply, 500, e);
    }
  });

  app.post('/pool_adopt/listen', async (req, reply) => {
    const { host = '' } = q(req);
    const e = emu();
    const ref = isUuid(host) ? e.db.refByUuid('host', host) : undefined;
    const runtime = poolRuntime(e);
    if (!ref || !runtime) return fail(reply, 404, new XapiError('UUID_INVALID', ['host', host]));
    try {
      const port = await runtime.listenHost(String(e.db.get('host', ref)!.address));
      return reply.header('content-type', 'application/json').send(JSON.stringify({ port }));
    } catch (err) {
      return fail(reply, 500, err);
    }
  });

  app.get('/pool_adopt/status', async (req, reply) => {
    const { host = '' } = q(req);
    const adopted = isUuid(host) && emu().db.refByUuid('host', host) !== undefined;
    return reply.header('content-type', 'application/json').send(JSON.stringify({ adopted }));
  });
}

