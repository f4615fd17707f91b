// GET /rrd_updates (xapi's rrdd_proxy.get_rrd_updates_forwarder handing the connection to the
// host's xcp-rrdd, rrdd_http_handler.get_rrd_updates_handler): the rows of the receiving host's
// RRDs since `start`, as rrdtool's xport in XML, or JSON when the client prefers it.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { exportUpdates, NoRraAvailable, rrddOf, updatesJson, updatesXml } from '../rrdd/rrdd.js';
import type { Cf } from '../rrdd/rrd.js';
import type { Rrd } from '../rrdd/rrd.js';
import { HttpError, okHeaders, runHttpHandler, type HttpCall, type HttpOutcome } from './auth.js';

const CFS = new Set(['AVERAGE', 'MIN', 'MAX']);

/** client_prefers_json: an Accept header naming JSON or XML decides, else the presence of `json`. */
export function prefersJson(req: FastifyRequest, hasJsonParam: boolean): boolean {
  const accept = String(req.headers.accept ?? '');
  const ranked = accept
    .split(',')
    .map((p, i) => {
      const [type, ...ps] = p.trim().split(';');
      const q = ps.map((x) => x.trim()).find((x) => x.startsWith('q='));
      return { type: type.trim().toLowerCase(), q: q ? Number(q.slice(2)) : 1, i };
    })
    .filter((a) => (a.type === 'application/json' || a.type === 'text/xml') && a.q > 0)
    .sort((a, b) => b.q - a.q || a.i - b.i);
  return ranked.length > 0 ? ranked[0].type === 'application/json' : hasJsonParam;
}

/** every value of a repeatable query parameter */
function all(req: FastifyRequest, name: string): string[] {
  const v = (req.query as Record<string, string | string[] | undefined>)[name];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

const bad = (msg: string) => new HttpError(400, new XapiError('INTERNAL_ERROR', [msg]));

async function rrdUpdates(call: HttpCall): Promise<HttpOutcome> {
  const { emu, req, params } = call;
  const startText = params.get('start');
  if (startText === undefined) throw bad("get_rrd_updates: missing the 'start' parameter");
  if (!/^-?\d+$/.test(startText.trim())) throw bad(`get_rrd_updates: bad 'start' parameter: ${startText}`);
  const start = Number(startText);
  const intervalText = params.get('interval');
  const interval = intervalText !== undefined && /^\d+$/.test(intervalText.trim()) ? Number(intervalText) : 0;
  const cfText = params.get('cf');
  // an unknown CF is no CF: every archive (cf_type_of_string failing)
  const cf = cfText !== undefined && CFS.has(cfText) ? (cfText as Cf) : null;
  const rrdd = rrddOf(emu);
  const sets: [string, Rrd][] = [];
  if (params.get('host') === 'true') sets.push([`host:${String(emu.db.get('host', call.host)!.uuid)}:`, rrdd.host(call.host)]);
  else rrdd.host(call.host); // the host's RRD sets the time every RRD is at
  const wanted = all(req, 'vm_uuid');
  for (const [uuid, ref] of rrdd.residentVms(call.host)) {
    if (wanted.length > 0 && !wanted.includes(uuid)) continue;
    const rrd = rrdd.vm(call.host, ref, uuid);
    if (rrd) sets.push([`vm:${uuid}:`, rrd]);
  }
  // SRs keep no RRD here (no SR plugin reports): sr_uuid selects nothing
  const json = prefersJson(req, params.has('json'));
  let body: string;
  try {
    const u = exportUpdates(sets, start, interval, cf);
    body = json ? updatesJson(u) : updatesXml(u);
  } catch (e) {
    if (e instanceof NoRraAvailable) throw new HttpError(500, new XapiError('INTERNAL_ERROR', ['No_RRA_Available']));
    throw e;
  }
  call.res.writeHead(
    200,
    okHeaders(call.task, {
      'content-type': json ? 'application/json' : 'text/xml',
      'content-length': Buffer.byteLength(body),
      'access-control-allow-origin': '*',
      'access-control-allow-headers': 'X-Requested-With',
    }),
  );
  call.res.end(body);
}

export function rrdUpdatesPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  app.get('/rrd_updates', { exposeHeadRoute: false }, (req: FastifyRequest, reply: FastifyReply) =>
    runHttpHandler(ctx, req, reply, { action: 'rrd_updates', label: 'Get RRD updates.' }, rrdUpdates),
  );
}
