// HA on the pool (xapi_ha.ml enable / disable, xapi_pool.ml ha_* and set_ha_host_failures_to_tolerate,
// xha_statefile.ml, xha_metadata_vdi.ml) and the host's local HA switch (host.emergency_ha_disable).
// The heartbeat daemon is simulated: every host's heartbeat is its host_metrics.live; a host that
// fails through the control API is fenced and its protected VMs restarted (ha-failover.ts).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { dispatch } from '../dispatch/dispatch.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { createSession, destroySession } from './session.js';
import { haArmed, disarmHa, resetHaArming, HA_ORIGINATOR } from '../pool/master-role.js';
import {
  agilityError, allProtectedVms, evacuationPlan, HA_BEST_EFFORT, HA_RESTART, maxHostFailuresToTolerate, planForNFailures, assertChangePreservesPlan,
  updatePoolStatus, liveSet, poolMessage,
} from './ha-plan.js';
import { preventRestartsFor, restartProtectedVms } from './ha-failover.js';
import { withPoolOperation } from './pool-operations.js';

/** XenServer HA state-file layout 1.3: a global section and one per host, for 64 hosts. */
const MINIMUM_STATEFILE_SIZE = 4096 + 64 * 4096;
const MIB4 = 4 * 1024 * 1024;
/** Redo_log.minimum_vdi_size: 4 GB with room for the statefile, in 4 MiB units */
const MINIMUM_REDO_LOG_SIZE = (Math.floor(4_000_000_000 / MIB4) - 2) * MIB4;
const roundTo = (n: number, align: number) => Math.ceil(n / align) * align;
const MINIMUM_SR_SIZE = roundTo(MINIMUM_STATEFILE_SIZE, MIB4) + roundTo(MINIMUM_REDO_LOG_SIZE, MIB4);
const HA_VALID_PRIORITIES = new Set([HA_RESTART, HA_BEST_EFFORT, '']);

function poolRec(emu: Emulator): Rec {
  return emu.db.get('pool', emu.pool)!;
}

/** ha_fits_sr: an existing VDI of the type and size to reuse, or room to make one. */
function haFitsSr(emu: Emulator, sr: string, type: string, minimum: number): string | undefined {
  const srRec = emu.db.get('SR', sr)!;
  for (const vdi of (srRec.VDIs as string[]) ?? []) {
    const v = emu.db.get('VDI', vdi);
    if (v?.type === type && Number(v.virtual_size) >= minimum) return vdi;
  }
  const free = Number(srRec.physical_size) - Number(srRec.physical_utilisation);
  if (free < MINIMUM_SR_SIZE) throw new XapiError('SR_SOURCE_SPACE_INSUFFICIENT', [sr]);
  return undefined;
}

/** Xha_statefile.assert_sr_can_host_statefile: a PBD plugged on every host, an SM that can attach
 * the statefile offline or generate its config, and room for the statefile and the redo-log. */
export function assertSrCanHostStatefile(emu: Emulator, sr: string): void {
  const { db } = emu;
  const rec = db.get('SR', sr);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  const pbds = ((rec.PBDs as string[]) ?? []).filter((p) => db.has('PBD', p));
  const connected = new Set(pbds.map((p) => String(db.get('PBD', p)!.host)));
  if ([...db.table('host').keys()].some((h) => !connected.has(h))) throw new XapiError('SR_HAS_NO_PBDS', [sr]);
  if (pbds.some((p) => db.get('PBD', p)!.currently_attached !== true)) throw new XapiError('SR_HAS_NO_PBDS', [sr]);
  const sm = [...db.table('SM').values()].find((r) => r.rec.type === rec.type);
  if (!sm) throw new XapiError('INTERNAL_ERROR', [`SR does not have corresponding SM record: ${sr} ${rec.type}`]);
  const features = (sm.rec.features as Record<string, unknown>) ?? {};
  if (!('VDI_GENERATE_CONFIG' in features) && !('VDI_ATTACH_OFFLINE' in features)) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [sr]);
  haFitsSr(emu, sr, 'ha_statefile', MINIMUM_STATEFILE_SIZE);
  haFitsSr(emu, sr, 'redo_log', MINIMUM_REDO_LOG_SIZE);
}

function canHostStatefile(emu: Emulator, sr: string): boolean {
  try {
    assertSrCanHostStatefile(emu, sr);
    return true;
  } catch {
    return false;
  }
}

/** Pool-wide work of xapi is done over its own API (Helpers.call_api_functions). */
async function asPool<T>(emu: Emulator, f: (call: (method: string, ...params: unknown[]) => Promise<unknown>) => Promise<T>): Promise<T> {
  const session = createSession(emu, emu.master, { uname: 'root', superuser: true }, HA_ORIGINATOR);
  try {
    return await f(async (method, ...params) => {
      const r = await dispatch(emu, method, [session, ...params], { host: emu.master });
      if (!r.ok) throw new XapiError(r.error[0], r.error.slice(1));
      return r.value;
    });
  } finally {
    destroySession(emu, session);
  }
}

async function findOrCreate(emu: Emulator, sr: string, type: string, size: number, name: string, description: string): Promise<string> {
  const existing = haFitsSr(emu, sr, type, size);
  if (existing !== undefined) return existing;
  return asPool(emu, async (call) =>
    String(await call('VDI.create', {
      name_label: name, name_description: description, SR: sr, virtual_size: size, type, sharable: true, read_only: false,
      other_config: {}, xenstore_data: {}, sm_config: { type: 'raw' }, tags: [],
    })),
  );
}

/** One enable or disable at a time (xapi_pool.ml enable_disable_m). */
const serial = new WeakMap<Emulator, Promise<unknown>>();
function oneAtATime<T>(emu: Emulator, f: () => Promise<T>): Promise<T> {
  const prev = serial.get(emu) ?? Promise.resolve();
  const next = prev.then(f, f);
  serial.set(emu, next.catch(() => undefined));
  return next;
}

async function enableHa(call: Call, heartbeatSrs: string[], configuration: Record<string, string>): Promise<void> {
  const { emu } = call;
  const { db } = emu;
  if (poolRec(emu).ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
  const unplugged = [...db.table('PIF')].filter(([, r]) => r.rec.disallow_unplug === true && r.rec.currently_attached !== true).map(([ref]) => ref);
  if (unplugged.length > 0) throw new XapiError('REQUIRED_PIF_IS_UNPLUGGED', unplugged);
  for (const [h, row] of db.table('host')) {
    if (db.get('host_metrics', String(row.rec.metrics))?.live !== true) throw new XapiError('HOST_OFFLINE', [h]);
  }
  for (const sr of heartbeatSrs) if (!db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  db.update('pool', emu.pool, { ha_cluster_stack: 'xhad' });
  // one statefile, in the first SR that can hold it; the redo-log (metadata) VDI beside it
  const candidates = heartbeatSrs.length > 0 ? heartbeatSrs : [...db.table('SR').keys()].filter((sr) => canHostStatefile(emu, sr));
  const sr = candidates[0];
  if (sr === undefined) throw new XapiError('CANNOT_CREATE_STATE_FILE', []);
  assertSrCanHostStatefile(emu, sr);
  const statefile = await findOrCreate(emu, sr, 'ha_statefile', MINIMUM_STATEFILE_SIZE, 'Statefile for HA', 'Used for storage heartbeating');
  await findOrCreate(emu, sr, 'redo_log', MINIMUM_REDO_LOG_SIZE, 'Metadata for HA', 'Used for master failover');
  db.update('pool', emu.pool, { ha_statefiles: [statefile], ha_configuration: configuration ?? {}, ha_plan_exists_for: 0 });
  updatePoolStatus(emu);
  resetHaArming(emu);
  db.update('pool', emu.pool, { ha_enabled: true });
  db.flush();
  // the monitor's first pass: protected VMs that should run and do not are started
  restartProtectedVms(emu, []);
}

async function disableHa(call: Call): Promise<void> {
  const { emu } = call;
  if (poolRec(emu).ha_enabled !== true) throw new XapiError('HA_NOT_ENABLED', []);
  // the statefile and the redo-log VDIs stay, for the next enable
  emu.db.update('pool', emu.pool, { ha_plan_exists_for: 0, ha_enabled: false });
  resetHaArming(emu);
  emu.db.flush();
}

registerProvider('pool', {
  enable_ha: (call: Call, heartbeatSrs: string[], configuration: Record<string, string>) =>
    withPoolOperation(call, 'ha_enable', () => oneAtATime(call.emu, () => enableHa(call, heartbeatSrs ?? [], configuration ?? {}))),

  disable_ha: (call: Call) => withPoolOperation(call, 'ha_disable', () => oneAtATime(call.emu, () => disableHa(call))),

  set_ha_host_failures_to_tolerate(call: Call, self: string, value: number) {
    const { emu } = call;
    if (!emu.db.has('pool', self)) throw new XapiError('HANDLE_INVALID', ['pool', self]);
    const n = Number(value);
    if (n < 0) throw new XapiError('INVALID_VALUE', ['ha_host_failures_to_tolerate', String(value)]);
    // no change is blocked while there is no plan at all
    if (Number(poolRec(emu).ha_plan_exists_for) > 0) assertChangePreservesPlan(emu, { numFailures: n });
    emu.db.update('pool', self, { ha_host_failures_to_tolerate: n });
    updatePoolStatus(emu);
  },

  ha_compute_max_host_failures_to_tolerate(call: Call) {
    const { emu } = call;
    const n = maxHostFailuresToTolerate(emu);
    const pool = poolRec(emu);
    if (pool.ha_enabled === true) {
      const wanted = Number(pool.ha_host_failures_to_tolerate);
      const overcommitted = wanted > n;
      if (pool.ha_overcommitted !== overcommitted) emu.db.update('pool', emu.pool, { ha_overcommitted: overcommitted });
      const current = Number(pool.ha_plan_exists_for);
      if (current !== n) {
        emu.db.update('pool', emu.pool, { ha_plan_exists_for: Math.min(wanted, n) });
        if (n < current) poolMessage(emu, 'HA_POOL_DROP_IN_PLAN_EXISTS_FOR', 3, String(n));
      }
    }
    return n;
  },

  ha_compute_hypothetical_max_host_failures_to_tolerate(call: Call, configuration: Record<string, string>) {
    const { emu } = call;
    for (const [, pri] of Object.entries(configuration ?? {})) {
      if (!HA_VALID_PRIORITIES.has(pri)) throw new XapiError('INVALID_VALUE', ['ha_restart_priority', pri]);
    }
    const vms: [string, Rec][] = [];
    for (const [vm, pri] of Object.entries(configuration ?? {})) {
      // Helpers.vm_should_always_run true priority
      if (pri !== HA_RESTART) continue;
      const rec = emu.db.get('VM', vm);
      if (!rec) throw new XapiError('HANDLE_INVALID', ['VM', vm]);
      vms.push([vm, rec]);
    }
    return maxHostFailuresToTolerate(emu, vms);
  },

  ha_compute_vm_failover_plan(call: Call, failedHosts: string[], failedVms: string[]) {
    const { emu } = call;
    const live = [...emu.db.table('host')].filter(([, r]) => emu.db.get('host_metrics', String(r.rec.metrics))?.live === true).map(([h]) => h);
    const remaining = live.filter((h) => !(failedHosts ?? []).includes(h));
    const vms: [string, Rec][] = (failedVms ?? []).map((vm) => {
      const rec = emu.db.get('VM', vm);
      if (!rec) throw new XapiError('HANDLE_INVALID', ['VM', vm]);
      return [vm, rec];
    });
    const plan = evacuationPlan(emu, remaining, vms);
    const out: Record<string, Record<string, string>> = {};
    for (const [vm, rec] of vms) {
      if (plan.has(vm)) out[vm] = { host: plan.get(vm)! };
      else out[vm] = { error_code: agilityError(emu, rec)?.[0] ?? 'HOST_NOT_ENOUGH_FREE_MEMORY' };
    }
    return out;
  },

  ha_failover_plan_exists(call: Call, n: number) {
    return planForNFailures(call.emu, allProtectedVms(call.emu), Number(n)) === 'all';
  },

  // Even with HA off: HA may be about to be enabled (xapi_ha.ml, CA-189075)
  ha_prevent_restarts_for(call: Call, seconds: number) {
    preventRestartsFor(call.emu, Number(seconds));
  },

  // the monitor recomputes the plan on its next pass, which here is now
  ha_schedule_plan_recomputation(call: Call) {
    if (poolRec(call.emu).ha_enabled === true) updatePoolStatus(call.emu, liveSet(call.emu));
  },
});

registerProvider('host', {
  // on the host that received it: its HA is disarmed locally (soft: the flag stays)
  emergency_ha_disable(call: Call, soft: boolean) {
    const { emu } = call;
    if (!haArmed(emu, call.host)) {
      if (soft) return;
      throw new XapiError('HA_NOT_ENABLED', []);
    }
    if (!soft) disarmHa(emu, call.host);
  },

  // xapi answers when its internal checks pass; a simulated host that answers is healthy
  ha_xapi_healthcheck: () => true,
});
