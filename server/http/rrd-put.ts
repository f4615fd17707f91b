// PUT /rrd?uuid=[&archive]: an RRD pushed to a host (rrdd_proxy.put_rrd_forwarder, then xcp-rrdd's
// put_rrd_handler): a VM's RRD replaces the one the host keeps for it (as on a migration), or,
// with `archive`, any host's or VM's RRD is kept on the master as its backup (a member redirects
// to the master). As xcp-rrdd, the 200 goes out before the RRD is read; an RRD that does not read
// fails the task and cuts the connection, leaving what was kept as it was.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { rrddOf } from '../rrdd/rrdd.js';
import { parseRrdXml } from '../rrdd/dump.js';
import { HttpError, okHeaders, runHttpHandler, type HttpCall, type HttpOutcome } from './auth.js';
import { redirect } from './vdi.js';

/** an RRD of every archive of a few hundred data sources stays well under this */
const MAX_RRD_BYTES = 256 * 2 ** 20;

const fail = (status: number, msg: string) => new HttpError(status, new XapiError('INTERNAL_ERROR', [msg]));

async function readBody(call: HttpCall): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of call.req.raw as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_RRD_BYTES) throw new XapiError('INTERNAL_ERROR', ['put_rrd: the RRD is too large']);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function putRrd(call: HttpCall): Promise<HttpOutcome> {
  const { emu, params } = call;
  const uuid = params.get('uuid');
  if (uuid === undefined) throw fail(400, "put_rrd: missing the 'uuid' parameter");
  const archive = params.has('archive');
  const master = String(emu.db.get('pool', emu.pool)!.master);
  if (archive && call.host !== master) {
    redirect(call, String(emu.db.get('host', master)!.address));
    return { redirected: true };
  }
  const vm = emu.db.refByUuid('VM', uuid);
  const isHost = !vm && emu.db.refByUuid('host', uuid) !== undefined;
  if (!vm && !isHost) throw fail(404, "put_rrd: invalid 'uuid' parameter");
  if (isHost && !archive) throw fail(400, 'put_rrd: cannot archive host RRD');
  // ready to receive the RRD
  call.res.writeHead(200, okHeaders(call.task, {}));
  call.res.flushHeaders();
  const text = await readBody(call);
  let rrd;
  try {
    rrd = parseRrdXml(text);
  } catch (e) {
    throw new XapiError('INTERNAL_ERROR', [`put_rrd: not an RRD: ${(e as Error).message}`]);
  }
  const rrdd = rrddOf(emu);
  if (archive) rrdd.archive(uuid, rrd);
  else rrdd.putVm(call.host, uuid, rrd);
  call.res.end();
}

export function rrdPutPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  // the body is the RRD itself, read by the handler
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));
  app.put('/rrd', (req: FastifyRequest, reply: FastifyReply) =>
    runHttpHandler(ctx, req, reply, { action: 'rrd', label: 'Put VM RRD.' }, putRrd),
  );
}
