// What HA does when a host fails or a protected VM stops by itself (xapi_ha.ml's monitor,
// Xapi_ha_vm_failover.restart_auto_run_vms): the failed host is fenced (its VMs are gone: Halted
// in the database at once, HA_HOST_FAILED), a surviving host takes over the master role if the
// master failed, and the protected VMs that are down are restarted on the hosts of the restart
// plan, one VM.order group after the other (the VMs of a group in parallel, each start waiting its
// VM.start_delay on the emulator clock, as Xapi_vm.start does), then the best-effort VMs of the
// failed hosts where there is room. A protected VM that cannot be restarted gets one
// HA_PROTECTED_VM_RESTART_FAILED. pool.ha_prevent_restarts_for holds the restarts back.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { XapiError } from '../dispatch/errors.js';
import { dispatch } from '../dispatch/dispatch.js';
import { xapiDate } from '../clock.js';
import { createSession, destroySession } from './session.js';
import { forceStateReset, vmHaltedHooks, xenopsOf } from './xenops-sync.js';
import { updateAllowedOperations } from './operations.js';
import { becomeMaster, HA_ORIGINATOR } from '../pool/master-role.js';
import { smReady } from '../sm/index.js';
import { allProtectedVms, computeRestartPlan, HA_BEST_EFFORT, isProtected, liveSet, markPoolOvercommitted, updatePoolStatus } from './ha-plan.js';

/** A VM that failed to start is not tried again within this time (restart_auto_run_vms). */
const RETRY_AFTER_MS = 120_000;

interface FailoverState {
  /** simulated time (ms) before which no restart is made */
  preventUntil: number;
  /** VMs that already had their HA_PROTECTED_VM_RESTART_FAILED */
  restartFailed: Set<string>;
  lastStartAttempt: Map<string, number>;
  /** the monitor's passes, one after the other */
  passes: Promise<void>;
  /** passes asked for and not yet done */
  pending: number;
}

const states = new Map<string, FailoverState>();

function stateOf(emu: Emulator): FailoverState {
  let s = states.get(emu.storageDir);
  if (!s) states.set(emu.storageDir, (s = { preventUntil: 0, restartFailed: new Set(), lastStartAttempt: new Map(), passes: Promise.resolve(), pending: 0 }));
  return s;
}

const haEnabled = (emu: Emulator) => emu.db.get('pool', emu.pool)?.ha_enabled === true;

export function preventRestartsFor(emu: Emulator, seconds: number): void {
  stateOf(emu).preventUntil = emu.clock.now() + Math.max(0, seconds) * 1000;
}

/** Resolves when the restarts asked for so far are done (for the control API's status and benches). */
export function failoverSettled(emu: Emulator): Promise<void> {
  return stateOf(emu).passes;
}

export function failoverPending(emu: Emulator): number {
  return stateOf(emu).pending;
}

function message(emu: Emulator, name: string, priority: number, cls: string, objUuid: unknown, body: string): void {
  emu.db.create('message', emu.ids.ref(), { uuid: emu.ids.uuid(), name, priority, cls, obj_uuid: objUuid, timestamp: xapiDate(emu.clock.now()), body });
}

/** The failed host is fenced: its VMs are Halted at once; returns them. */
function fence(emu: Emulator, host: string): string[] {
  const { db } = emu;
  const h = db.get('host', host)!;
  message(emu, 'HA_HOST_FAILED', 3, 'Host', h.uuid, `Server '${h.name_label}' has failed`);
  const metrics = String(h.metrics);
  if (db.has('host_metrics', metrics)) db.update('host_metrics', metrics, { live: false });
  const reset: string[] = [];
  for (const [vm, row] of [...db.table('VM')]) {
    if (row.rec.resident_on !== host || row.rec.is_control_domain === true) continue;
    reset.push(vm);
    try {
      xenopsOf(emu, host).remove(String(row.rec.uuid));
    } catch {
      // its domain is still going (the clock is frozen), or its xenopsd holds nothing of it
    }
    if (row.rec.power_state === 'Running' || row.rec.power_state === 'Paused') forceStateReset(emu, vm, 'Halted');
  }
  updateAllowedOperations(emu, 'host', host);
  return reset;
}

/** The first surviving host (in the pool's order) is elected master by the heartbeat daemon. */
function electMaster(emu: Emulator, failed: string): void {
  if (failed !== emu.master) return;
  const live = (h: string) => emu.db.get('host_metrics', String(emu.db.get('host', h)?.metrics))?.live === true;
  const next = emu.hosts.find((h) => h !== failed && emu.db.has('host', h) && live(h));
  if (next !== undefined) becomeMaster(emu, next, { all: true });
}

/** A host failed with HA on (server/control/faults/hosts.ts): fence it, move the master role if
 * it was the master, then restart its VMs in the background. */
export function haHostFailed(emu: Emulator, host: string): void {
  if (!haEnabled(emu) || !emu.db.has('host', host)) return;
  electMaster(emu, host);
  const reset = fence(emu, host);
  if (reset.length > 0) updatePoolStatus(emu);
  emu.db.flush();
  restartProtectedVms(emu, reset);
}

/** At start, with HA on, the monitor's first pass restarts the protected VMs that are down (those
 * whose failover a stop or a crash cut short), once the SRs are attached. */
export function resumeHa(emu: Emulator): void {
  // the monitor of the toolstack that stopped is gone, with what it was waiting for
  states.delete(emu.storageDir);
  if (!haEnabled(emu)) return;
  void smReady(emu).then(() => restartProtectedVms(emu, []), () => undefined);
}

/** A failed host is back (it rejoins the liveset): HA tries again what it could not restart. */
export function haHostRecovered(emu: Emulator, _host: string): void {
  if (!haEnabled(emu)) return;
  updatePoolStatus(emu);
  restartProtectedVms(emu, []);
}

/** Runs a monitor pass after the ones under way: restarts the protected VMs that are down, and
 * the best-effort VMs among `reset` (the VMs of failed hosts). */
export function restartProtectedVms(emu: Emulator, reset: string[]): void {
  const s = stateOf(emu);
  s.pending++;
  s.passes = s.passes.then(async () => {
    try {
      await restartPass(emu, reset);
    } catch (e) {
      // the pass is over whatever happens: the next failure starts a new one
      if (!(e instanceof XapiError)) console.error(`xapi-emu: HA restart pass failed: ${(e as Error).message}`);
    } finally {
      s.pending--;
      emu.db.flush();
    }
  });
}

/** Helpers.group_by ascending on order_f (a negative order goes last). */
function byOrder<T>(emu: Emulator, items: [string, T][]): [string, T][][] {
  const key = (vm: string) => {
    const o = Number(emu.db.get('VM', vm)?.order ?? 0);
    return o < 0 ? Number.MAX_SAFE_INTEGER : o;
  };
  const groups = new Map<number, [string, T][]>();
  for (const it of items) {
    const k = key(it[0]);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(it);
  }
  return [...groups.keys()].sort((a, b) => a - b).map((k) => groups.get(k)!);
}

async function restartPass(emu: Emulator, reset: string[]): Promise<void> {
  const s = stateOf(emu);
  while (emu.clock.now() < s.preventUntil) await emu.clock.sleep((s.preventUntil - emu.clock.now()) / 1000);
  // (a pass of a toolstack that has stopped since does nothing)
  if (states.get(emu.storageDir) !== s || !haEnabled(emu)) return;
  const session = createSession(emu, emu.master, { uname: 'root', superuser: true }, HA_ORIGINATOR);
  try {
    const call = async (method: string, ...params: unknown[]) => {
      const r = await dispatch(emu, method, [session, ...params], { host: emu.master });
      if (!r.ok) throw new XapiError(r.error[0], r.error.slice(1));
      return r.value;
    };
    /** VM.start(_on) (which waits the VM's start_delay); false if it did not start */
    const restart = async (vm: string, host?: string): Promise<boolean> => {
      const last = s.lastStartAttempt.get(vm);
      if (last !== undefined && emu.clock.now() - last <= RETRY_AFTER_MS) return false;
      s.lastStartAttempt.set(vm, emu.clock.now());
      try {
        if (host !== undefined) await call('VM.start_on', vm, host, false, true);
        else await call('VM.start', vm, false, true);
      } catch {
        return false;
      }
      s.lastStartAttempt.delete(vm);
      return true;
    };
    const live = liveSet(emu);
    const n = Number(emu.db.get('pool', emu.pool)!.ha_host_failures_to_tolerate);
    const protectedVms = allProtectedVms(emu);
    const { plan, notRestarted } = computeRestartPlan(emu, protectedVms, live, n);
    // overcommitted: every protected VM that is down is tried, in priority order
    const todo: [string, string | undefined][] = notRestarted.length === 0
      ? [...plan]
      : protectedVms.filter(([, r]) => r.power_state === 'Halted').map(([vm]) => [vm, undefined]);
    const results = new Map<string, boolean>();
    for (const group of byOrder(emu, todo)) {
      const done = await Promise.all(group.map(async ([vm, host]) => [vm, await restart(vm, host)] as const));
      for (const [vm, ok] of done) results.set(vm, ok);
    }
    // one last try of those that failed, anywhere
    const failed: [string, undefined][] = [...results].filter(([, ok]) => !ok).map(([vm]) => [vm, undefined]);
    for (const group of byOrder(emu, failed)) {
      const done = await Promise.all(group.map(async ([vm]) => [vm, await restart(vm)] as const));
      for (const [vm, ok] of done) results.set(vm, ok);
    }
    for (const [vm, ok] of results) {
      if (ok || s.restartFailed.has(vm) || !emu.db.has('VM', vm)) continue;
      s.restartFailed.add(vm);
      message(emu, 'HA_PROTECTED_VM_RESTART_FAILED', 2, 'VM', emu.db.get('VM', vm)!.uuid, '');
    }
    for (const vm of [...s.restartFailed]) if (!results.has(vm)) s.restartFailed.delete(vm);
    if (notRestarted.length > 0) markPoolOvercommitted(emu, live);
    // the best-effort VMs of the failed hosts, where there is room
    const bestEffort: [string, undefined][] = reset
      .filter((vm) => {
        const r = emu.db.get('VM', vm);
        return r?.ha_restart_priority === HA_BEST_EFFORT && r.power_state === 'Halted';
      })
      .map((vm) => [vm, undefined]);
    for (const group of byOrder(emu, bestEffort)) {
      await Promise.all(group.map(async ([vm]) => {
        try {
          await call('VM.start', vm, false, true);
        } catch {
          // best effort
        }
      }));
    }
    updatePoolStatus(emu, liveSet(emu));
  } finally {
    destroySession(emu, session);
  }
}

/** A protected VM whose guest shut down or crashed: restarted, unless the pool says a guest's own
 * shutdown ends its protection (pool.ha_reboot_vm_on_internal_shutdown false: Xapi_xenops). */
vmHaltedHooks.halted = (emu: Emulator, vm: string) => {
  const rec: Rec | undefined = emu.db.get('VM', vm);
  if (!rec || !isProtected(rec)) return;
  const pool = emu.db.get('pool', emu.pool)!;
  if (pool.ha_reboot_vm_on_internal_shutdown !== true) {
    emu.db.update('VM', vm, { ha_always_run: false });
    return;
  }
  if (pool.ha_enabled === true) restartProtectedVms(emu, []);
};
