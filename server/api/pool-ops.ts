// Pool operations across the emulated hosts: VM.pool_migrate (xapi_vm_migrate.ml, the
// message_forwarding.ml checks), host.evacuate / get_vms_which_prevent_evacuation /
// assert_can_evacuate (xapi_host.ml's evacuation plan), host.reboot / shutdown (the host must be
// disabled; its VMs are powered off), host's allowed_operations (Xapi_host_helpers.valid_operations),
// and VBD.insert / eject of CD drives (xapi_vbd.ml, Xapi_xenops.vbd_insert / vbd_eject).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { model } from '../../schema/index.js';
import { xapiDate } from '../clock.js';
import { migrateVm, MigrationError, vbdEject, vbdInsert, XenopsError } from '../xenopsd/index.js';
import { currentOperations, registerOperations, updateAllowedOperations, withOperation } from './operations.js';
import { assertCanBootHere, setProgress, vmCheck } from './VM.js';
import { attachNetworksForVm } from './network.js';
import { assertHostDisablePreservesPlan, assertVmPlacementPreservesPlan } from './ha-plan.js';
import {
  domainTypeOf, forceStateReset, hostFreeMemory, linuxDevice, memoryRequired, refreshAllowed, syncHost, syncVm, toXapiFromXenops,
  vmSpec, withEventsSuppressed, xenopsOf,
} from './xenops-sync.js';

/** simulated seconds an emulated host takes to boot again after host.reboot */
export const HOST_BOOT_SECONDS = 60;

function vmRec(emu: Emulator, vm: string): Rec {
  return recordOf(emu, 'VM', vm);
}

function assertHost(emu: Emulator, host: string): Rec {
  const h = emu.db.get('host', host);
  if (!h) throw new XapiError('HANDLE_INVALID', ['host', host]);
  return h;
}

function hostLive(emu: Emulator, host: string): boolean {
  return emu.db.get('host_metrics', String(emu.db.get('host', host)?.metrics))?.live !== false;
}

// ---- host allowed_operations (Xapi_host_helpers.valid_operations) ----

const HOST_OPS = model.enums.host_allowed_operations;
const CREATING = ['provision', 'vm_resume', 'vm_migrate'];
const REMOVING = ['evacuate', 'reboot', 'shutdown'];

function hostErrors(emu: Emulator, ref: string, rec: Rec): Map<string, XapiError> {
  const t = new Map<string, XapiError>();
  const set = (e: XapiError, ops: string[]) => {
    for (const o of ops) if (!t.has(o)) t.set(o, e);
  };
  const cur = currentOperations(rec);
  const busy = (c: [string, string]) => new XapiError('OTHER_OPERATION_IN_PROGRESS', ['host', ref, c[1], c[0]]);
  const creating = cur.find(([, o]) => CREATING.includes(o));
  const removing = cur.find(([, o]) => REMOVING.includes(o));
  if (removing) set(busy(removing), CREATING);
  if (creating) set(busy(creating), REMOVING);
  const reboot = cur.find(([, o]) => o === 'reboot');
  if (reboot) set(busy(reboot), ['shutdown', 'apply_updates']);
  const shutdown = cur.find(([, o]) => o === 'shutdown');
  if (shutdown) set(busy(shutdown), ['reboot', 'apply_updates']);
  const provision = cur.find(([, o]) => o === 'provision');
  if (provision) set(busy(provision), ['provision']);
  if (rec.enabled === true) set(new XapiError('HOST_NOT_DISABLED', []), ['reboot', 'shutdown', 'apply_updates']);
  if (hostLive(emu, ref)) set(new XapiError('HOST_IS_LIVE', [ref]), ['power_on']);
  return t;
}

registerOperations('host', {
  allOps: HOST_OPS,
  check: (emu, ref, rec, op) => hostErrors(emu, ref, rec).get(op) ?? null,
});

// ---- VM.pool_migrate ----

/** The XenAPI error of a failed migration. */
function migrationError(e: unknown, vm: string, src: string, dst: string, needed: number, emu: Emulator): unknown {
  if (e instanceof XenopsError && e.kind === 'Not_enough_memory') return new XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', [String(needed), String(hostFreeMemory(emu, dst))]);
  if (e instanceof MigrationError) {
    const inner = toXapiFromXenops(e.cause, vm);
    const msg = inner instanceof XapiError ? [inner.code, ...inner.params].join(': ') : (e.cause as Error)?.message ?? String(e.cause);
    return new XapiError('VM_MIGRATE_FAILED', [vm, src, dst, msg]);
  }
  return toXapiFromXenops(e, vm);
}

/** The VM_MIGRATED message (priority 5) message_forwarding creates after a pool_migrate. */
export function vmMigratedMessage(emu: Emulator, vm: string, src: string, dst: string): void {
  const v = emu.db.get('VM', vm);
  const a = emu.db.get('host', src);
  const b = emu.db.get('host', dst);
  if (!v || !a || !b) return;
  emu.db.create('message', emu.ids.ref(), {
    uuid: emu.ids.uuid(), name: 'VM_MIGRATED', priority: 5, cls: 'VM', obj_uuid: v.uuid, timestamp: xapiDate(emu.clock.now()),
    body: `VM '${v.name_label}' (uuid: ${v.uuid}) migrated from host '${a.name_label}' (uuid: ${a.uuid}) to host '${b.name_label}' (uuid: ${b.uuid})`,
  });
}

/** Xapi_vm_migrate.pool_migrate under the VM's pool_migrate operation. */
async function poolMigrate(call: Call, vm: string, host: string): Promise<void> {
  const { emu } = call;
  const rec = vmRec(emu, vm);
  const src = String(rec.resident_on);
  if (!emu.db.has('host', src)) throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', String(rec.power_state).toLowerCase()]);
  // reserve_memory_for_vm: assert_can_boot_here (enabled, SRs, memory), then the reservation
  assertCanBootHere(emu, vm, rec, host);
  assertVmPlacementPreservesPlan(emu, vm, rec, host);
  // with_networks_attached_for_vm on the destination
  attachNetworksForVm(emu, vm, host);
  const needed = memoryRequired(rec);
  const uuid = String(rec.uuid);
  const from = xenopsOf(emu, src);
  const to = xenopsOf(emu, host);
  emu.db.update('VM', vm, { scheduled_to_be_resident_on: host });
  try {
    await withEventsSuppressed(emu, host, uuid, () => migrateVm(from, to, vmSpec(emu, vm), { progress: (p) => setProgress(emu, call.task, p) }));
    vmMigratedMessage(emu, vm, src, host);
  } catch (e) {
    throw migrationError(e, vm, src, host, needed, emu);
  } finally {
    if (emu.db.has('VM', vm)) {
      emu.db.update('VM', vm, { scheduled_to_be_resident_on: NULL_REF });
      // pool_migrate_complete: both hosts' view written (the source's only if the VM is still there)
      syncVm(emu, host, uuid);
      syncVm(emu, src, uuid);
      syncHost(emu, src);
      syncHost(emu, host);
      refreshAllowed(emu, vm);
    }
  }
}

export function poolMigrateOp(call: Call, vm: string, host: string, options: Record<string, string> = {}): Promise<void> {
  const { emu } = call;
  vmRec(emu, vm);
  assertHost(emu, host);
  // with_vm_operation ~strict:(not force): the guest's features are checked unless forced
  const force = String(options?.force ?? '').toLowerCase() === 'true';
  const precheck = () => {
    const e = vmCheck(emu, vm, vmRec(emu, vm), 'pool_migrate', !force);
    if (e) throw e;
  };
  return withOperation(call, 'VM', vm, 'pool_migrate', () => poolMigrate(call, vm, host), { precheck });
}

registerProvider('VM', {
  pool_migrate: (call, vm: string, host: string, options: Record<string, string>) => poolMigrateOp(call, vm, host, options),
});

// ---- evacuation (Xapi_host.compute_evacuation_plan_no_wlb) ----

type Plan = { host: string } | { error: string[] };

export function evacuationPlan(emu: Emulator, host: string): Map<string, Plan> {
  const { db } = emu;
  const plans = new Map<string, Plan>();
  const targets = emu.hosts.filter((h) => h !== host && db.get('host', h)?.enabled === true && hostLive(emu, h));
  const vms: [string, Rec][] = [];
  for (const [ref, row] of db.table('VM')) {
    if (row.rec.resident_on === host && row.rec.is_control_domain !== true) vms.push([ref, row.rec]);
  }
  if (targets.length === 0) {
    for (const [vm] of vms) plans.set(vm, { error: ['NO_HOSTS_AVAILABLE', vm] });
    return plans;
  }
  // every target must be able to run the VM (memory aside)
  const migratable: [string, Rec][] = [];
  for (const [vm, rec] of vms) {
    let ok = true;
    for (const h of targets) {
      try {
        assertCanBootHere(emu, vm, rec, h);
      } catch (e) {
        if (!(e instanceof XapiError)) throw e;
        if (e.code === 'HOST_NOT_ENOUGH_FREE_MEMORY') continue;
        plans.set(vm, { error: [e.code, ...e.params] });
        ok = false;
        break;
      }
    }
    if (ok) migratable.push([vm, rec]);
  }
  for (const [vm, rec] of vms) {
    const e = vmCheck(emu, vm, rec, 'pool_migrate', true);
    if (e) plans.set(vm, { error: [e.code, ...e.params] });
  }
  // bin packing on memory: the biggest VMs first, each on the host with the most free memory
  const free = new Map(targets.map((h) => [h, hostFreeMemory(emu, h)]));
  for (const [vm, rec] of [...migratable].sort((a, b) => memoryRequired(b[1]) - memoryRequired(a[1]))) {
    const need = memoryRequired(rec);
    const best = [...free].filter(([, f]) => f >= need).sort((a, b) => b[1] - a[1])[0];
    if (!best) {
      plans.set(vm, { error: ['HOST_NOT_ENOUGH_FREE_MEMORY', vm] });
      continue;
    }
    free.set(best[0], best[1] - need);
    if (!plans.has(vm)) plans.set(vm, { host: best[0] });
  }
  return plans;
}

const DEFAULT_BATCH = 10;

registerProvider('host', {
  get_vms_which_prevent_evacuation(call, self: string) {
    assertHost(call.emu, self);
    const out: Record<string, string[]> = {};
    for (const [vm, p] of evacuationPlan(call.emu, self)) if ('error' in p) out[vm] = p.error;
    return out;
  },

  assert_can_evacuate(call, host: string) {
    assertHost(call.emu, host);
    const errors = [...evacuationPlan(call.emu, host).values()].flatMap((p) => ('error' in p ? [p.error.join(',')] : []));
    if (errors.length) throw new XapiError('CANNOT_EVACUATE_HOST', [errors.join('|')]);
  },

  evacuate(call, host: string, _network?: string, batchSize?: number) {
    const { emu } = call;
    assertHost(emu, host);
    assertHostDisablePreservesPlan(emu, host);
    return withOperation(call, 'host', host, 'evacuate', async () => {
      const plans = evacuationPlan(emu, host);
      for (const p of plans.values()) if ('error' in p) throw new XapiError(p.error[0], p.error.slice(1));
      const jobs = [...plans].map(([vm, p]) => [vm, (p as { host: string }).host] as const);
      const n = Number(batchSize) > 0 ? Number(batchSize) : DEFAULT_BATCH;
      let next = 0;
      let done = 0;
      const worker = async () => {
        while (next < jobs.length) {
          const [vm, to] = jobs[next++];
          try {
            await poolMigrateOp(call, vm, to, { live: 'true' });
          } catch (e) {
            // a VM that went down meanwhile no longer prevents the evacuation
            if (!(e instanceof XapiError && e.code === 'VM_BAD_POWER_STATE')) throw e;
          }
          setProgress(emu, call.task, ++done / jobs.length);
        }
      };
      await Promise.all(Array.from({ length: Math.min(n, jobs.length) }, worker));
    });
  },

  reboot: (call, host: string) => powerCycle(call, host, true),
  shutdown: (call, host: string) => powerCycle(call, host, false),
});

/** host.reboot / shutdown: the host must be disabled; its VMs are powered off (prepare_for_poweroff
 * leaves none running), host_metrics.live goes false; a rebooted host boots again
 * (HOST_BOOT_SECONDS of simulated time), live and enabled, with no VM running. The call returns
 * when the host is down (shutdown) or up again (reboot). */
function powerCycle(call: Call, host: string, reboot: boolean): Promise<void> {
  const { emu } = call;
  assertHost(emu, host);
  return withOperation(call, 'host', host, reboot ? 'reboot' : 'shutdown', async () => {
    const x = xenopsOf(emu, host);
    const metrics = String(emu.db.get('host', host)?.metrics);
    for (const [vm, row] of [...emu.db.table('VM')]) {
      if (row.rec.resident_on !== host || row.rec.is_control_domain === true) continue;
      const uuid = String(row.rec.uuid);
      await withEventsSuppressed(emu, host, uuid, () => x.shutdown(uuid, { clean: false })).catch(() => undefined);
      if (emu.db.has('VM', vm) && emu.db.get('VM', vm)!.resident_on === host) forceStateReset(emu, vm, 'Halted');
    }
    syncHost(emu, host);
    if (emu.db.has('host_metrics', metrics)) emu.db.update('host_metrics', metrics, { live: false });
    updateAllowedOperations(emu, 'host', host);
    if (!reboot) return;
    await emu.clock.sleep(HOST_BOOT_SECONDS);
    if (emu.db.has('host_metrics', metrics)) emu.db.update('host_metrics', metrics, { live: true });
    emu.db.update('host', host, { enabled: true });
  });
}

// ---- VBD.insert / eject ----

function vbdRec(emu: Emulator, vbd: string): Rec {
  return recordOf(emu, 'VBD', vbd);
}

function assertNotSuspended(emu: Emulator, vm: string): void {
  if (emu.db.get('VM', vm)?.power_state === 'Suspended') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'halted, running', 'suspended']);
}

function assertRemovable(rec: Rec, vbd: string): void {
  if (rec.type !== 'CD' && rec.type !== 'Floppy') throw new XapiError('VBD_NOT_REMOVABLE_MEDIA', [vbd]);
}

async function mediaChange(call: Call, vbd: string, vdi: string | null): Promise<void> {
  const { emu } = call;
  const rec = vbdRec(emu, vbd);
  const vm = String(rec.VM);
  const vmR = vmRec(emu, vm);
  const running = vmR.power_state === 'Running' || vmR.power_state === 'Paused';
  const set = () => emu.db.update('VBD', vbd, vdi ? { VDI: vdi, empty: false } : { VDI: NULL_REF, empty: true });
  if (!running) {
    set();
    return;
  }
  const host = String(vmR.resident_on);
  const x = xenopsOf(emu, host);
  const uuid = String(vmR.uuid);
  const dev = linuxDevice(vmR, rec);
  try {
    if (domainTypeOf(vmR) === 'hvm') {
      // qemu's drive: the medium changes, the drive stays
      if (vdi) {
        const v = recordOf(emu, 'VDI', vdi);
        const disk = { sr: String(emu.db.get('SR', String(v.SR))?.uuid), vdi: String(v.uuid) };
        await withEventsSuppressed(emu, host, uuid, () => vbdInsert(x, uuid, dev, disk));
      } else {
        await withEventsSuppressed(emu, host, uuid, () => vbdEject(x, uuid, dev));
      }
      set();
    } else if (vdi) {
      // a PV guest's CD: the VBD is plugged with its new disk
      set();
      x.add(vmSpec(emu, vm));
      await withEventsSuppressed(emu, host, uuid, () => x.vbdPlug(uuid, dev));
    } else {
      if (x.vbdStat(uuid, dev).plugged) await withEventsSuppressed(emu, host, uuid, () => x.vbdUnplug(uuid, dev, false));
      set();
    }
  } catch (e) {
    throw toXapiFromXenops(e, vm);
  }
}

registerProvider('VBD', {
  insert(call, vbd: string, vdi: string) {
    const { emu } = call;
    const rec = vbdRec(emu, vbd);
    const v = emu.db.get('VDI', vdi);
    if (!v) throw new XapiError('HANDLE_INVALID', ['VDI', vdi]);
    const vm = String(rec.VM);
    // assert_ok_to_insert, before the operation's own checks
    assertNotSuspended(emu, vm);
    assertRemovable(rec, vbd);
    if (rec.empty !== true) throw new XapiError('VBD_NOT_EMPTY', [vbd]);
    if (v.managed !== true) throw new XapiError('VDI_NOT_MANAGED', [vdi]);
    return withOperation(call, 'VBD', vbd, 'insert', () => mediaChange(call, vbd, vdi));
  },

  eject(call, vbd: string) {
    const { emu } = call;
    const rec = vbdRec(emu, vbd);
    assertRemovable(rec, vbd);
    if (rec.empty === true) throw new XapiError('VBD_IS_EMPTY', [vbd]);
    assertNotSuspended(emu, String(rec.VM));
    return withOperation(call, 'VBD', vbd, 'eject', () => mediaChange(call, vbd, null));
  },
});

