// GET /host_rrd (and /host_rrds), /vm_rrd?uuid= (and /vm_rrds), /sr_rrd?uuid=: a whole RRD as rrdtool's XML dump, or JSON when the
// client prefers it (rrdd_http_handler.rrd_handler). /vm_rrd for a VM running on another host
// answers 302 to that host, as rrdd_proxy.get_vm_rrd_forwarder does; a VM that runs nowhere gets
// the RRD its last run left (xapi unarchives it on the master).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { rrddOf } from '../rrdd/rrdd.js';
import { rrdJson, rrdXml } from '../rrdd/dump.js';
import type { Rrd } from '../rrdd/rrd.js';
import { HttpError, okHeaders, runHttpHandler, type HttpCall, type HttpOutcome } from './auth.js';
import { prefersJson } from './rrd-updates.js';
import { redirect } from './vdi.js';

const missing = (what: string) => new HttpError(400, new XapiError('INTERNAL_ERROR', [`${what}: missing the 'uuid' parameter`]));
const none = () => new HttpError(404, new XapiError('INTERNAL_ERROR', ['No RRD available']));

function send(call: HttpCall, rrd: Rrd | undefined): HttpOutcome {
  if (!rrd) throw none();
  const json = prefersJson(call.req, call.params.has('json'));
  const body = json ? rrdJson(rrd) : rrdXml(rrd);
  call.res.writeHead(200, okHeaders(call.task, {
    'content-type': json ? 'application/json' : 'text/xml',
    'content-length': Buffer.byteLength(body),
    'access-control-allow-origin': '*',
  }));
  call.res.end(body);
}

async function hostRrd(call: HttpCall): Promise<HttpOutcome> {
  return send(call, rrddOf(call.emu).host(call.host));
}

async function vmRrd(call: HttpCall): Promise<HttpOutcome> {
  const { emu } = call;
  const uuid = call.params.get('uuid');
  if (uuid === undefined) throw missing('get_vm_rrd');
  const vm = emu.db.refByUuid('VM', uuid);
  if (!vm) throw none();
  const rrdd = rrddOf(emu);
  const resident = String(emu.db.get('VM', vm)!.resident_on);
  if (resident !== call.host && emu.db.has('host', resident)) {
    redirect(call, String(emu.db.get('host', resident)!.address));
    return { redirected: true };
  }
  return send(call, rrdd.vm(call.host, vm, uuid));
}

async function srRrd(call: HttpCall): Promise<HttpOutcome> {
  if (call.params.get('uuid') === undefined) throw missing('get_sr_rrd');
  // no SR plugin reports here: no SR has an RRD
  throw none();
}

export function rrdDumpsPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  const run = (action: string, label: string, fn: (call: HttpCall) => Promise<HttpOutcome>) =>
    (req: FastifyRequest, reply: FastifyReply) => runHttpHandler(ctx, req, reply, { action, label }, fn);
  app.get('/host_rrd', { exposeHeadRoute: false }, run('host_rrd', 'Get Host RRD.', hostRrd));
  app.get('/vm_rrd', { exposeHeadRoute: false }, run('vm_rrd', 'Get VM RRD.', vmRrd));
  // xapi serves its get_host_rrds and get_vm_rrds actions with the same forwarders (xapi.ml)
  app.get('/host_rrds', { exposeHeadRoute: false }, run('get_host_rrds', 'Get Host RRD.', hostRrd));
  app.get('/vm_rrds', { exposeHeadRoute: false }, run('get_vm_rrds', 'Get VM RRD.', vmRrd));
  app.get('/sr_rrd', { exposeHeadRoute: false }, run('sr_rrd', 'Get SR RRD.', srRrd));
}
