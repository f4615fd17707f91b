// Faults: rules that make the pool misbehave on purpose, as xapi's FIST points and SM's do, but per
// call and scriptable. A rule matches one kind of thing (an API method, an HTTP handler path, a
// VDI's datapath, a host, an SR), may fire only on some of its matches, and has an effect.
import { z } from 'zod';
import { route } from './route.js';

const glob = z.string().min(1).max(200);
const objectName = z.string().min(1).max(200).describe('a ref (OpaqueRef:…) or a uuid');

export const faultMatch = z
  .object({
    method: glob.optional().describe(
      'API method glob ("VM.start", "VM.*", "*.destroy"); "*" matches any run of characters. An Async.X call matches a rule for X (and one written "Async.X"): its task fails with the effect',
    ),
    args: z
      .object({
        ref: z.string().min(1).optional().describe('an argument is this ref'),
        uuid: z.string().min(1).optional().describe('an argument is the ref of the object with this uuid'),
        name_label: z.string().optional().describe('an argument is the ref of an object with this name_label'),
      })
      .strict()
      .optional()
      .describe('with method: the call matches only when one of its arguments names this object (every key given must hold)'),
    path: glob.optional().describe('HTTP handler path glob ("/export_raw_vdi", "/import*", "/rrd_updates")'),
    http_method: z.enum(['GET', 'PUT', 'POST', 'HEAD', 'CONNECT']).optional().describe('with path: only requests of this HTTP method'),
    vdi: objectName.optional().describe("a VDI's datapath (its tapdisk, /export_raw_vdi and /import_raw_vdi of it)"),
    host: objectName.optional().describe('a host (failure or isolation)'),
    sr: objectName.optional().describe('an SR (backend failure)'),
  })
  .strict();

export const faultFire = z
  .object({
    times: z.number().int().min(1).optional().describe('fire on the next N matching calls, then stop (the rule stays, with its hits)'),
    nth: z.number().int().min(1).optional().describe('fire only on the Nth matching call'),
    probability: z.number().min(0).max(1).optional().describe('fire on each match with this probability'),
    seed: z.string().max(200).optional().describe('seed of the probability draws (default: the rule id): the same seed fires on the same matches'),
  })
  .strict();

export const faultEffect = z
  .object({
    error: z
      .object({ code: z.string().min(1).max(200).regex(/^[A-Za-z0-9_]+$/), params: z.array(z.string()).default([]) })
      .strict()
      .optional()
      .describe('method: the call (an Async call: its task) fails with this XAPI error; path: the task of the request fails with it'),
    latency: z.number().min(0).max(86400).optional().describe(
      'simulated seconds added before the call runs (follows the clock: scale 0 adds nothing unless the clock is frozen, then it lasts until advanced)',
    ),
    hang: z.literal(true).optional().describe('the call waits until the rule is released or removed, then runs'),
    drop: z.literal(true).optional().describe('the connection is cut without an answer (an Async call: before its task exists)'),
    toolstack_restart: z.literal(true).optional().describe('method: the call is answered, then the toolstack restarts'),
    status: z.number().int().min(400).max(599).optional().describe('path: the request is answered with this HTTP status'),
    truncate_after: z.number().int().min(0).optional().describe('path: the response is cut after this many bytes of its body'),
    io_error_after: z.number().int().min(0).optional().describe(
      'vdi: the datapath moves this many more bytes, then every request fails (blkif BLKIF_RSP_ERROR, VDI_IO_ERROR for exports and imports)',
    ),
    host_down: z.literal(true).optional().describe('host: it fails: host_metrics.live false, its domains gone, calls forwarded to it HOST_OFFLINE, its address answers nothing; the master too (its members in emergency mode; with HA on, a survivor becomes master)'),
    host_isolated: z.literal(true).optional().describe('host (a member): cut off from the master: the master sees it offline, calls on its address fail with HOST_STILL_BOOTING'),
    sr_backend_failure: z
      .object({ code: z.number().int().min(0).max(9999).default(47), reason: z.string().max(1000).default('The SR is not available') })
      .strict()
      .optional()
      .describe("sr: its SM backend fails: SR, VDI and PBD operations on it get SR_BACKEND_FAILURE_<code> ['', reason, '']"),
  })
  .strict();

const KINDS = ['method', 'path', 'vdi', 'host', 'sr'] as const;
/** which effects each kind of rule takes */
const EFFECTS: Record<(typeof KINDS)[number], string[]> = {
  method: ['error', 'latency', 'hang', 'drop', 'toolstack_restart'],
  path: ['error', 'latency', 'hang', 'drop', 'status', 'truncate_after'],
  vdi: ['io_error_after'],
  host: ['host_down', 'host_isolated'],
  sr: ['sr_backend_failure'],
};
/** at most one of these per rule; `latency` may come with any, and a status with the error its task gets */
const EXCLUSIVE = ['error', 'hang', 'drop', 'toolstack_restart', 'status', 'truncate_after', 'io_error_after', 'host_down', 'host_isolated', 'sr_backend_failure'];

export const faultRuleInput = z
  .object({
    match: faultMatch,
    fire: faultFire.optional(),
    effect: faultEffect,
    description: z.string().max(1000).optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    const kinds = KINDS.filter((k) => r.match[k] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({ code: 'custom', path: ['match'], message: `exactly one of ${KINDS.join(', ')} (got ${kinds.length ? kinds.join(', ') : 'none'})` });
      return;
    }
    const kind = kinds[0];
    if (r.match.args !== undefined && kind !== 'method') ctx.addIssue({ code: 'custom', path: ['match', 'args'], message: 'args go with method' });
    if (r.match.http_method !== undefined && kind !== 'path') ctx.addIssue({ code: 'custom', path: ['match', 'http_method'], message: 'http_method goes with path' });
    const given = Object.keys(r.effect).filter((k) => (r.effect as Record<string, unknown>)[k] !== undefined);
    if (given.length === 0) ctx.addIssue({ code: 'custom', path: ['effect'], message: `one of ${EFFECTS[kind].join(', ')}` });
    for (const k of given) if (!EFFECTS[kind].includes(k)) ctx.addIssue({ code: 'custom', path: ['effect', k], message: `not an effect of a ${kind} rule (${EFFECTS[kind].join(', ')})` });
    const exclusive = given.filter((k) => EXCLUSIVE.includes(k) && !(k === 'error' && r.effect.status !== undefined));
    if (exclusive.length > 1) ctx.addIssue({ code: 'custom', path: ['effect', exclusive[1]], message: `only one of ${exclusive.join(', ')}` });
    const f = r.fire;
    if (f && f.times !== undefined && f.nth !== undefined) ctx.addIssue({ code: 'custom', path: ['fire', 'nth'], message: 'times and nth do not combine' });
    if (f && (kind === 'vdi' || kind === 'host' || kind === 'sr') && Object.keys(f).length > 0) {
      ctx.addIssue({ code: 'custom', path: ['fire'], message: `a ${kind} rule holds until it is removed: no fire` });
    }
  });

export const faultRule = z.object({
  id: z.string(),
  match: faultMatch,
  fire: faultFire,
  effect: faultEffect,
  description: z.string().optional(),
  created: z.string().describe('simulated time of creation, ISO 8601'),
  hits: z.object({
    total: z.number().int().describe('matches seen'),
    fired: z.number().int().describe('matches on which the effect applied'),
  }),
  /** calls waiting on this rule (hang) */
  hanging: z.number().int(),
  released: z.boolean().describe('hang: released (later matches pass)'),
  /** io_error_after: bytes the datapath may still move */
  bytes_left: z.number().int().optional(),
});

export type FaultRuleInput = z.output<typeof faultRuleInput>;
export type FaultRule = z.output<typeof faultRule>;

const byId = z.object({ id: z.string().min(1).max(100) }).strict();

export const faults = {
  list: route({ method: 'GET', path: '/faults', summary: 'Lists the fault rules with their hits', input: z.object({}), output: z.object({ rules: z.array(faultRule) }) }),
  get: route({ method: 'GET', path: '/faults/:id', summary: 'Reads a fault rule', input: byId, output: faultRule }),
  create: route({ method: 'POST', path: '/faults', summary: 'Adds a fault rule; answers its id', input: faultRuleInput, output: faultRule }),
  delete: route({ method: 'DELETE', path: '/faults/:id', summary: 'Removes a fault rule (hanging calls go on; a failed host comes back)', input: byId, output: z.object({ removed: z.string() }) }),
  clear: route({ method: 'DELETE', path: '/faults', summary: 'Removes every fault rule', input: z.object({}), output: z.object({ removed: z.number().int() }) }),
  release: route({
    method: 'POST',
    path: '/faults/:id/release',
    summary: 'Releases the calls a hang rule holds; later matches pass too',
    input: byId,
    output: faultRule,
  }),
  toolstackRestart: route({
    method: 'POST',
    path: '/faults/toolstack-restart',
    summary: 'Restarts the toolstack after answering (as xe-toolstack-restart: connections close, domains survive)',
    input: z.object({}).strict(),
    output: z.object({ restarting: z.literal(true) }),
  }),
};
