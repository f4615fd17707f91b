// POST /services/SM: a host's storage interface as the xapi of another pool reaches it during a
// cross-pool migration (the "SM" URL of host.migrate_receive's token, storage_mux on the far side).
// Its calls come as JSON-RPC; of them only SR.update_snapshot_info_dest is served, the others answer
// the storage error Unimplemented.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { StorageError, updateSnapshotInfoDest, type SnapshotPair } from '../api/vdi-migrate.js';
import { HttpError, okHeaders, runHttpHandler, type HttpCall, type HttpOutcome } from './auth.js';

interface StorageCall {
  method?: unknown;
  params?: unknown;
  id?: unknown;
}

async function servicesSm(call: HttpCall): Promise<HttpOutcome> {
  const body = (call.req.body ?? {}) as StorageCall;
  if (typeof body !== 'object' || typeof body.method !== 'string') throw new HttpError(400, new XapiError('INTERNAL_ERROR', ['not a storage call']));
  const args = (Array.isArray(body.params) ? body.params[0] : undefined) as Record<string, unknown> | undefined;
  let answer: { result?: unknown; error?: unknown };
  try {
    if (body.method !== 'SR.update_snapshot_info_dest') throw new StorageError('Unimplemented', body.method);
    if (!args || typeof args.sr !== 'string' || typeof args.vdi !== 'string' || !Array.isArray(args.snapshot_pairs)) throw new StorageError('Internal_error', 'bad arguments');
    updateSnapshotInfoDest(call.emu, args.sr, args.vdi, args.snapshot_pairs as SnapshotPair[]);
    answer = { result: null };
  } catch (e) {
    answer = { error: e instanceof StorageError ? [e.variant, e.arg] : ['Internal_error', String(e)] };
  }
  const text = JSON.stringify({ ...answer, id: body.id ?? null });
  call.res.writeHead(200, okHeaders(call.task, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }));
  call.res.end(text);
}

export function servicesSmPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  const handler = (req: FastifyRequest, reply: FastifyReply) => runHttpHandler(ctx, req, reply, { action: 'post_services_sm', label: 'SM' }, servicesSm);
  app.post('/services/SM', handler);
}
