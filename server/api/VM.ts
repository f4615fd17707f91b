// VM: custom messages (xapi_vm.ml, the VM part of message_forwarding.ml), the lifecycle through
// xenopsd (xapi_xenops.ml: start, shutdown, reboot, pause ...), and the VM's allowed_operations
// (Xapi_vm_lifecycle.check_operation_error); VM.import is server/xva/import-url.ts. Not implemented yet (NOT_IMPLEMENTED): migrate ...
import { registerProvider, type Call } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import { generic } from './generic.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { model } from '../../schema/index.js';
import { smVdiCreate, srCtx } from '../sm/sm.js';
import { importFromUrl } from '../xva/import-url.js';
import { currentOperations, registerOperations, updateAllowedOperations, withOperation } from './operations.js';
import {
  forceStateReset, hostFreeMemory, memoryRequired, toXapiFromXenops, vmSpec, withEventsSuppressed, xenopsOf,
} from './xenops-sync.js';
import { callMessage, vmSnapshotMessages } from './vm-snapshot.js';
import { vmSettingsMessages } from './vm-settings.js';
import { vmDataSources } from '../rrdd/data-sources.js';
import { assertCanSeeNetworks, attachNetworksForVm, networksOfVm } from './network.js';
import { agilityError, assertVmPlacementPreservesPlan } from './ha-plan.js';

// ---- allowed_operations (Xapi_vm_lifecycle) ----

/** Xapi_vm_lifecycle.ignored_ops: never listed in allowed_operations */
const IGNORED_OPS = new Set([
  'create_template', 'power_state_reset', 'csvm', 'get_boot_record', 'send_sysrq', 'send_trigger', 'query_services', 'shutdown',
  'call_plugin', 'changing_memory_live', 'awaiting_memory_live', 'changing_memory_limits', 'changing_shadow_memory_live',
  'changing_VCPUs', 'assert_operation_valid', 'data_source_op', 'update_allowed_operations', 'import', 'reverting',
]);
const ALLOWABLE_OPS = model.enums.vm_operations.filter((op) => !IGNORED_OPS.has(op));

type PS = 'Halted' | 'Paused' | 'Suspended' | 'Running';
const ALL_STATES: PS[] = ['Halted', 'Paused', 'Suspended', 'Running'];

/** Xapi_vm_lifecycle.allowed_power_states */
function allowedPowerStates(rec: Rec, op: string): PS[] {
  switch (op) {
    case 'import':
      return [];
    case 'changing_VCPUs': case 'changing_static_range': case 'changing_memory_limits':
      return rec.is_control_domain === true ? ['Halted', 'Running'] : ['Halted'];
    case 'changing_shadow_memory': case 'changing_NVRAM': case 'make_into_template': case 'provision': case 'start': case 'start_on':
    case 'create_vtpm':
      return ['Halted'];
    case 'unpause':
      return ['Paused'];
    case 'csvm': case 'resume': case 'resume_on':
      return ['Suspended'];
    case 'awaiting_memory_live': case 'call_plugin': case 'clean_reboot': case 'clean_shutdown': case 'changing_memory_live':
    case 'changing_shadow_memory_live': case 'changing_VCPUs_live': case 'data_source_op': case 'pause': case 'pool_migrate':
    case 'send_sysrq': case 'send_trigger': case 'snapshot_with_quiesce': case 'sysprep': case 'suspend':
      return ['Running'];
    case 'changing_dynamic_range':
      return ['Halted', 'Running'];
    case 'clone': case 'copy':
      return rec.is_a_snapshot === true ? ['Halted', 'Suspended'] : ['Halted'];
    case 'create_template': case 'destroy': case 'export':
      return ['Halted', 'Suspended'];
    case 'hard_reboot':
      return ['Paused', 'Running'];
    case 'checkpoint': case 'get_boot_record': case 'shutdown': case 'hard_shutdown':
      return ['Paused', 'Suspended', 'Running'];
    case 'migrate_send':
      return ['Halted', 'Suspended', 'Running'];
    default:
      return ALL_STATES;
  }
}

/** Xapi_vm_lifecycle.is_allowed_concurrently */
function allowedConcurrently(op: string, current: string[]): boolean {
  const aux = (ops: string[]) => ops.includes(op) && current.every((o) => ops.includes(o));
  if (aux(['clone', 'copy', 'export']) || aux(['snapshot', 'checkpoint']) || aux(['get_boot_record'])) return true;
  if (op === 'hard_shutdown') return !current.includes('hard_shutdown');
  if (op === 'hard_reboot') return !current.some((o) => o === 'hard_shutdown' || o === 'hard_reboot');
  const pairs: [string, string][] = [['snapshot_with_quiesce', 'snapshot'], ['migrate_send', 'metadata_export'], ['migrate_send', 'clean_shutdown'], ['migrate_send', 'clean_reboot']];
  return pairs.some(([state, transition]) => current.length === 1 && current[0] === state && transition === op);
}

const TEMPLATE_OPS = new Set(['changing_dynamic_range', 'changing_static_range', 'changing_memory_limits', 'changing_shadow_memory', 'changing_VCPUs', 'changing_NVRAM', 'clone', 'copy', 'export', 'metadata_export', 'provision']);
const SNAPSHOT_OPS = new Set(['revert', 'clone', 'copy', 'export', 'destroy', 'hard_shutdown', 'metadata_export']);
const CONTROL_DOMAIN_OPS = new Set(['data_source_op', 'changing_memory_live', 'awaiting_memory_live', 'metadata_export', 'changing_dynamic_range', 'changing_memory_limits', 'changing_static_range', 'start', 'start_on', 'changing_VCPUs', 'destroy']);

const truthy = (v: unknown) => v === '1' || String(v).toLowerCase() === 'true';

/** Helpers.is_domain_zero: the control domain resident on its host with domid 0 */
function isDomainZero(rec: Rec): boolean {
  return rec.is_control_domain === true && Number(rec.domid) === 0;
}

function guestMetrics(emu: Emulator, rec: Rec): Rec | undefined {
  return emu.db.get('VM_guest_metrics', String(rec.guest_metrics));
}

/** Xapi_pv_driver_version.has_pv_drivers (of_guest_metrics): the guest agent reported the tools'
 * version (integer major and minor); the PV drivers alone (PV_drivers_detected) do not count here */
function hasPvDriversVersion(gm: Rec | undefined): boolean {
  const v = (gm?.PV_drivers_version ?? {}) as Record<string, string>;
  return /^-?\d+$/.test(v.major ?? '') && /^-?\d+$/.test(v.minor ?? '');
}

/** VM_LACKS_FEATURE, built only when it is the answer (allowed_operations runs thousands of checks) */
const lacksFeature = (ref: string) => new XapiError('VM_LACKS_FEATURE', [ref]);

/** Xapi_vm_lifecycle.check_op_for_feature */
function featureError(emu: Emulator, ref: string, rec: Rec, op: string, strict: boolean): XapiError | null {
  const live = rec.power_state === 'Running' || rec.power_state === 'Paused';
  if (!live) return null; // without a domain every feature is implicit
  const gm = guestMetrics(emu, rec);
  const metrics = emu.db.get('VM_metrics', String(rec.metrics));
  const bootedPv = ['pv', 'pvh', 'pv_in_pvh'].includes(String(metrics?.current_domain_type));
  const implicit = !live || bootedPv || hasPvDriversVersion(gm);
  const other = (gm?.other ?? {}) as Record<string, string>;
  const lacks = (f: string) => other[f] !== '1';
  if (['suspend', 'checkpoint', 'pool_migrate', 'migrate_send'].includes(op) && live) {
    const reason = other['data-cant-suspend-reason'];
    if (reason !== undefined) return new XapiError('VM_NON_SUSPENDABLE', [ref, reason]);
    return !implicit && strict && lacks('feature-suspend') ? lacksFeature(ref) : null;
  }
  if (implicit) return null;
  if (op === 'clean_shutdown' && strict && lacks('feature-shutdown') && lacks('feature-poweroff')) return lacksFeature(ref);
  if (op === 'clean_reboot' && strict && lacks('feature-shutdown') && lacks('feature-reboot')) return lacksFeature(ref);
  if (op === 'changing_VCPUs_live' && lacks('feature-vcpu-hotplug')) return lacksFeature(ref);
  return null;
}

/** Xapi_vm_lifecycle.check_operation_error: the first failing check wins. */
export function vmCheck(emu: Emulator, ref: string, rec: Rec, op: string, strict: boolean): XapiError | null {
  const blocked = (rec.blocked_operations ?? {}) as Record<string, string>;
  if (Object.prototype.hasOwnProperty.call(blocked, op)) return new XapiError('OPERATION_BLOCKED', [ref, blocked[op]]);
  const ps = String(rec.power_state) as PS;
  const states = allowedPowerStates(rec, op);
  if (!states.includes(ps)) {
    return new XapiError('VM_BAD_POWER_STATE', [ref, states.map((s) => s.toLowerCase()).join(', '), ps.toLowerCase()]);
  }
  const current = currentOperations(rec);
  if (current.length > 0 && !allowedConcurrently(op, current.map(([, o]) => o))) {
    const [tasks, ops] = current.length === 1 ? [current[0][0], current[0][1]] : [`{${current.map(([t]) => t).join(',')}}`, `{${current.map(([, o]) => o).join(',')}}`];
    return new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VM', ref, ops, tasks]);
  }
  const isTemplate = rec.is_a_template === true;
  const isSnapshot = rec.is_a_snapshot === true;
  if (isTemplate && !isSnapshot) {
    const defaultTemplate = rec.is_default_template === true || truthy((rec.other_config as Record<string, string>)?.default_template);
    if (!TEMPLATE_OPS.has(op) && !((op === 'destroy' || op === 'migrate_send') && !defaultTemplate)) return new XapiError('VM_IS_TEMPLATE', [ref, op]);
  }
  if (isSnapshot && !SNAPSHOT_OPS.has(op)) return new XapiError('VM_IS_SNAPSHOT', [ref, op]);
  if (op === 'provision' && !isTemplate) return new XapiError('ONLY_PROVISION_TEMPLATE', []);
  if (op === 'revert' && !isSnapshot) return new XapiError('ONLY_REVERT_SNAPSHOT', []);
  if ((op === 'changing_VCPUs' || op === 'destroy') && isDomainZero(rec)) return new XapiError('OPERATION_NOT_ALLOWED', ['This operation is not allowed on dom0']);
  if (rec.is_control_domain === true && !CONTROL_DOMAIN_OPS.has(op)) return new XapiError('OPERATION_NOT_ALLOWED', ['This operation is not allowed on a control domain']);
  const fe = featureError(emu, ref, rec, op, strict);
  if (fe) return fe;
  if (op === 'snapshot_with_quiesce') return new XapiError('VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED', [ref]);
  if (['checkpoint', 'snapshot', 'suspend'].includes(op)) {
    const reset = (rec.VBDs as string[]).some((b) => {
      const vdi = emu.db.get('VDI', String(emu.db.get('VBD', b)?.VDI));
      return (vdi?.sm_config as Record<string, string> | undefined)?.on_boot === 'reset';
    });
    if (reset) return new XapiError('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', []);
  }
  if (['suspend', 'snapshot', 'checkpoint', 'migrate_send', 'pool_migrate'].includes(op) && ((rec.VUSBs as string[]) ?? []).length > 0) {
    return new XapiError('VM_HAS_VUSBS', [ref]);
  }
  if (op === 'query_services' && !truthy((rec.other_config as Record<string, string>)?.is_system_domain)) return new XapiError('NOT_SYSTEM_DOMAIN', [ref]);
  if (op === 'create_vtpm' && ((rec.VTPMs as string[]) ?? []).length > 0) return new XapiError('VTPM_MAX_AMOUNT_REACHED', [String((rec.VTPMs as string[]).length)]);
  return null;
}

registerOperations('VM', {
  allOps: ALLOWABLE_OPS,
  // the power state rules out most operations (check_operation_error's first failing test)
  candidates: (rec) => ALLOWABLE_OPS.filter((op) => allowedPowerStates(rec, op).includes(rec.power_state as PS)),
  check: vmCheck,
  // update_allowed_operations folds with (op :: acc): the list comes out in reverse enum order
  order: (ops) => [...ops].reverse(),
});

// ---- helpers ----

function vmRec(call: Call, vm: string): Rec {
  return recordOf(call.emu, 'VM', vm);
}

export function setProgress(emu: Emulator, task: string, p: number): void {
  const t = emu.db.get('task', task);
  if (t && t.status === 'pending' && Number(t.progress) < p) emu.db.update('task', task, { progress: Math.round(p * 100) / 100 });
}

/** Xapi_vm_helpers.assert_can_boot_here (the checks the emulator models). */
export function assertCanBootHere(emu: Emulator, vm: string, rec: Rec, host: string): void {
  const { db } = emu;
  const h = db.get('host', host);
  if (!h) throw new XapiError('HANDLE_INVALID', ['host', host]);
  if (db.get('host_metrics', String(h.metrics))?.live === false) throw new XapiError('HOST_NOT_LIVE', []);
  if (h.enabled !== true) throw new XapiError('HOST_DISABLED', [host]);
  // assert_can_see_SRs: every disk's SR has a plugged PBD on the host
  for (const b of rec.VBDs as string[]) {
    const vbd = db.get('VBD', b);
    if (!vbd || vbd.empty === true) continue;
    const vdi = db.get('VDI', String(vbd.VDI));
    if (!vdi) continue;
    const sr = String(vdi.SR);
    const seen = ((db.get('SR', sr)?.PBDs as string[]) ?? []).some((p) => {
      const pbd = db.get('PBD', p);
      return pbd?.host === host && pbd.currently_attached === true;
    });
    if (!seen) throw new XapiError('VM_REQUIRES_SR', [vm, sr]);
  }
  assertCanSeeNetworks(emu, vm, host, networksOfVm(emu, vm));
  const needed = memoryRequired(rec);
  const free = hostFreeMemory(emu, host);
  if (needed > free) throw new XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', [String(needed), String(free)]);
}

/** Xapi_vm_helpers.choose_host_for_vm: the affinity host if it can boot the VM, else any host. */
function chooseHost(emu: Emulator, vm: string, rec: Rec): string {
  const affinity = String(rec.affinity);
  const candidates = emu.db.has('host', affinity) ? [affinity, ...emu.hosts.filter((h) => h !== affinity)] : emu.hosts;
  for (const h of candidates) {
    try {
      assertCanBootHere(emu, vm, rec, h);
      return h;
    } catch (e) {
      if (!(e instanceof XapiError)) throw e;
    }
  }
  throw new XapiError('NO_HOSTS_AVAILABLE', []);
}

function residentHost(emu: Emulator, vm: string, rec: Rec): string {
  const h = String(rec.resident_on);
  if (!emu.db.has('host', h)) throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', String(rec.power_state).toLowerCase()]);
  return h;
}

async function xenops<T>(emu: Emulator, vm: string, host: string, uuid: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await withEventsSuppressed(emu, host, uuid, fn);
  } catch (e) {
    throw toXapiFromXenops(e, vm);
  }
}

/** Xapi_xenops.start: metadata push, VM.start (+ VM.unpause), then resident_on and the check of
 * the power state. */
async function startVm(call: Call, vm: string, host: string | null, paused: boolean, op: 'start' | 'start_on'): Promise<void> {
  const { emu } = call;
  await withOperation(call, 'VM', vm, op, async () => {
    const rec = vmRec(call, vm);
    let h: string;
    if (host) {
      assertCanBootHere(emu, vm, rec, host);
      h = host;
    } else h = chooseHost(emu, vm, rec);
    assertVmPlacementPreservesPlan(emu, vm, rec, h);
    attachNetworksForVm(emu, vm, h);
    // Xapi_vm.start: a VM of restart priority is protected by HA from now on
    if (rec.ha_restart_priority === 'restart' && rec.ha_always_run !== true) emu.db.update('VM', vm, { ha_always_run: true });
    const uuid = String(rec.uuid);
    const x = xenopsOf(emu, h);
    x.add(vmSpec(emu, vm));
    emu.db.update('VM', vm, { scheduled_to_be_resident_on: h });
    try {
      await xenops(emu, vm, h, uuid, () => x.start(uuid, { paused, progress: (p) => setProgress(emu, call.task, p) }));
    } finally {
      if (emu.db.has('VM', vm)) emu.db.update('VM', vm, { scheduled_to_be_resident_on: NULL_REF });
    }
    const ps = emu.db.get('VM', vm)?.power_state;
    const want = paused ? 'Paused' : 'Running';
    if (ps !== want) throw new XapiError('VM_BAD_POWER_STATE', [vm, want.toLowerCase(), String(ps).toLowerCase()]);
    // Xapi_vm_helpers.start_delay: the start answers after the VM's start_delay
    await delay(emu, vm, 'start_delay');
  });
}

async function delay(emu: Emulator, vm: string, field: 'start_delay' | 'shutdown_delay'): Promise<void> {
  const seconds = Number(emu.db.get('VM', vm)?.[field] ?? 0);
  if (seconds > 0) await emu.clock.sleep(seconds);
}

async function shutdownVm(call: Call, vm: string, clean: boolean): Promise<void> {
  const { emu } = call;
  const rec = vmRec(call, vm);
  // Xapi_vm.clean_shutdown / hard_shutdown: a VM shut down through the API is no longer protected
  if (rec.ha_always_run === true) emu.db.update('VM', vm, { ha_always_run: false });
  if (rec.power_state === 'Suspended') {
    // Xapi_vm.hard_shutdown: the suspend image is destroyed (whether or not that works, it is forgotten)
    await destroySuspendVdi(call, vm);
    // a resume running meanwhile (allowed concurrently) may have made a domain: it is powered off,
    // or the database would say Halted over a running domain
    const uuid = String(rec.uuid);
    const live = emu.hosts.find((h) => xenopsOf(emu, h).list().includes(uuid));
    if (live) await xenops(emu, vm, live, uuid, () => xenopsOf(emu, live).shutdown(uuid, { clean: false }));
    forgetSuspended(emu, vm);
    forceStateReset(emu, vm, 'Halted');
    return;
  }
  if (rec.power_state === 'Halted') return;
  const h = residentHost(emu, vm, rec);
  const uuid = String(rec.uuid);
  const x = xenopsOf(emu, h);
  await xenops(emu, vm, h, uuid, () => x.shutdown(uuid, { clean, progress: (p) => setProgress(emu, call.task, p) }));
  // a pool_migrate running meanwhile (a hard shutdown is allowed concurrently; xapi cancels the
  // migration) may have moved the domain to another host: it is powered off there
  const moved = clean ? undefined : emu.hosts.find((o) => o !== h && xenopsOf(emu, o).list().includes(uuid));
  if (moved) await xenops(emu, vm, moved, uuid, () => xenopsOf(emu, moved).shutdown(uuid, { clean: false }));
  const after = emu.db.get('VM', vm);
  if (after && after.power_state !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'halted', String(after.power_state).toLowerCase()]);
  // Xapi_vm_helpers.shutdown_delay
  await delay(emu, vm, 'shutdown_delay');
}

async function rebootVm(call: Call, vm: string, clean: boolean): Promise<void> {
  const { emu } = call;
  const rec = vmRec(call, vm);
  const h = residentHost(emu, vm, rec);
  const uuid = String(rec.uuid);
  const x = xenopsOf(emu, h);
  x.add(vmSpec(emu, vm));
  await xenops(emu, vm, h, uuid, () => x.reboot(uuid, { clean, progress: (p) => setProgress(emu, call.task, p) }));
}

// ---- suspend / resume (Xapi_xenops.suspend / resume) ----

/** Xapi_vm.hard_shutdown's removal of the suspend image: through VDI.destroy, so that it waits for a
 * copy of the image in progress (a checkpoint's, marked on the VDI) instead of deleting it under it. */
async function destroySuspendVdi(call: Call, vm: string): Promise<void> {
  const { emu } = call;
  const vdi = String(emu.db.get('VM', vm)?.suspend_VDI);
  if (emu.db.has('VDI', vdi)) {
    try {
      await callMessage(call, 'VDI.destroy', vdi);
    } catch {
      // logged and ignored by xapi
    }
  }
  // whether or not that worked, the VM forgets it (unless a new image was made meanwhile)
  if (emu.db.get('VM', vm)?.suspend_VDI === vdi) emu.db.update('VM', vm, { suspend_VDI: NULL_REF });
}

/** The xenopsds that remember the VM as suspended forget it (VM.remove), once its image is gone:
 * their next update would otherwise bring the VM back to Suspended without one. */
function forgetSuspended(emu: Emulator, vm: string): void {
  const uuid = String(emu.db.get('VM', vm)?.uuid);
  for (const h of emu.hosts) {
    const x = xenopsOf(emu, h);
    if (!x.list().includes(uuid) && x.stat(uuid).power_state === 'Suspended') x.remove(uuid);
  }
}

/** Helpers.choose_suspend_sr: the pool's suspend image SR, else the host's. */
function suspendSr(emu: Emulator, vm: string, host: string): string {
  const poolSr = String(emu.db.get('pool', emu.pool)?.suspend_image_SR);
  if (emu.db.has('SR', poolSr)) return poolSr;
  const hostSr = String(emu.db.get('host', host)?.suspend_image_sr);
  if (emu.db.has('SR', hostSr)) return hostSr;
  throw new XapiError('VM_NO_SUSPEND_SR', [vm]);
}

function diskOf(emu: Emulator, vdi: string): { sr: string; vdi: string } {
  const r = recordOf(emu, 'VDI', vdi);
  return { sr: String(emu.db.get('SR', String(r.SR))?.uuid), vdi: String(r.uuid) };
}

async function suspendVm(call: Call, vm: string): Promise<void> {
  const { emu } = call;
  const rec = vmRec(call, vm);
  if (rec.ha_always_run === true) emu.db.update('VM', vm, { ha_always_run: false });
  const h = residentHost(emu, vm, rec);
  const uuid = String(rec.uuid);
  // memory_static_max × 1.2 × 1.05 + 100 MiB
  const size = Math.floor((Number(rec.memory_static_max) || 0) * 1.2 * 1.05) + 104857600;
  const sr = suspendSr(emu, vm, h);
  let vdi: string;
  try {
    vdi = await smVdiCreate(srCtx(emu, sr), {
      name_label: 'Suspend image', name_description: 'Suspend image', virtual_size: size, type: 'suspend', read_only: false,
      sm_config: { vmhint: uuid, initial_allocation: String(size) },
    });
  } catch (e) {
    if (e instanceof XapiError && e.code === 'SR_BACKEND_FAILURE_44') throw new XapiError('SR_SUSPEND_SPACE_INSUFFICIENT', [sr]);
    throw e;
  }
  emu.db.update('VM', vm, { suspend_VDI: vdi });
  try {
    await xenops(emu, vm, h, uuid, () => xenopsOf(emu, h).suspend(uuid, diskOf(emu, vdi), { progress: (p) => setProgress(emu, call.task, p) }));
    const ps = emu.db.get('VM', vm)?.power_state;
    if (ps !== 'Suspended') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'suspended', String(ps).toLowerCase()]);
  } catch (e) {
    if (emu.db.get('VM', vm)?.power_state === 'Suspended') forceStateReset(emu, vm, 'Halted');
    await destroySuspendVdi(call, vm);
    forgetSuspended(emu, vm);
    throw e;
  }
}

async function resumeVm(call: Call, vm: string, host: string | null, paused: boolean, op: 'resume' | 'resume_on'): Promise<void> {
  await withOperation(call, 'VM', vm, op, () => resumeLocal(call, vm, host, paused));
  // Xapi_vm.resume: protected again
  if (call.emu.db.get('VM', vm)?.ha_restart_priority === 'restart') call.emu.db.update('VM', vm, { ha_always_run: true });
}

/** Xapi_xenops.resume, the VM already marked (by resume, or by checkpoint). */
async function resumeLocal(call: Call, vm: string, host: string | null, paused: boolean): Promise<void> {
  const { emu } = call;
  const rec = vmRec(call, vm);
  const vdi = String(rec.suspend_VDI);
  if (!emu.db.has('VDI', vdi)) {
    forceStateReset(emu, vm, 'Halted');
    throw new XapiError('VM_HAS_NO_SUSPEND_VDI', ['VM', vm]);
  }
  let h: string;
  if (host) {
    assertCanBootHere(emu, vm, rec, host);
    h = host;
  } else h = chooseHost(emu, vm, rec);
  assertVmPlacementPreservesPlan(emu, vm, rec, h);
  attachNetworksForVm(emu, vm, h);
  const uuid = String(rec.uuid);
  const x = xenopsOf(emu, h);
  x.add(vmSpec(emu, vm));
  try {
    await xenops(emu, vm, h, uuid, () => x.resume(uuid, diskOf(emu, vdi), { paused, progress: (p) => setProgress(emu, call.task, p) }));
  } catch (e) {
    // a hard_shutdown (allowed concurrently) took the image away: that is the answer
    const ps = emu.db.get('VM', vm)?.power_state;
    if (ps !== 'Suspended') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'suspended', String(ps ?? 'halted').toLowerCase()]);
    throw e;
  }
  await destroySuspendVdi(call, vm);
  const ps = emu.db.get('VM', vm)?.power_state;
  const want = paused ? 'Paused' : 'Running';
  if (ps !== want) throw new XapiError('VM_BAD_POWER_STATE', [vm, want.toLowerCase(), String(ps).toLowerCase()]);
}

// a VM's data sources live in the xcp-rrdd of the host it runs on (server/rrdd/)
registerProvider('VM', {
  get_data_sources(call: Call, self: string) {
    recordOf(call.emu, 'VM', self);
    return vmDataSources.get(call.emu, self);
  },
  record_data_source(call: Call, self: string, name: string) {
    recordOf(call.emu, 'VM', self);
    vmDataSources.record(call.emu, self, name);
  },
  query_data_source(call: Call, self: string, name: string) {
    recordOf(call.emu, 'VM', self);
    return vmDataSources.query(call.emu, self, name);
  },
  forget_data_source_archives(call: Call, self: string, name: string) {
    recordOf(call.emu, 'VM', self);
    vmDataSources.forget(call.emu, self, name);
  },
});

// ---- placement questions (xapi_vm.ml, Xapi_vm_helpers, Agility) ----

registerProvider('VM', {
  assert_can_boot_here(call: Call, self: string, host: string) {
    assertCanBootHere(call.emu, self, recordOf(call.emu, 'VM', self), host);
  },
  /** get_possible_hosts_for_vm: the host it is being placed on, else every host that can boot it */
  get_possible_hosts(call: Call, vm: string) {
    const rec = recordOf(call.emu, 'VM', vm);
    const scheduled = String(rec.scheduled_to_be_resident_on);
    if (call.emu.db.has('host', scheduled)) return [scheduled];
    return call.emu.hosts.filter((h) => {
      try {
        assertCanBootHere(call.emu, vm, rec, h);
        return true;
      } catch (e) {
        if (e instanceof XapiError) return false;
        throw e;
      }
    });
  },
  /** Agility.vm_assert_agile: it could run on any host (shared SRs, networks on every host, no local devices) */
  assert_agile(call: Call, self: string) {
    const err = agilityError(call.emu, recordOf(call.emu, 'VM', self));
    if (err) throw new XapiError(err[0], err[1]);
  },
});

// ---- messages ----

// Custom in the datamodel only because some map keys need other roles (RBAC checks them in
// dispatch); their semantics are the generic ones.
registerProvider('VM', {
  add_to_other_config: generic,
  remove_from_other_config: generic,
  set_other_config: generic,
  add_to_platform: generic,
  remove_from_platform: generic,
  set_platform: generic,
  set_start_delay: generic,
  set_shutdown_delay: generic,
  set_order: generic,
  // Xapi_vm_helpers.set_actions_after_crash: a plain write (the enum is checked by dispatch); the
  // other actions_after_* setters are generic field setters. xenopsd reads them at the next start
  // (Xapi_xenops.of_vm); the simulated guest reads them when it exits (server/guest/events.ts).
  set_actions_after_crash(call: Call, self: string, value: string) {
    recordOf(call.emu, 'VM', self);
    call.emu.db.update('VM', self, { actions_after_crash: value });
  },
});

// Xapi_vm.update_allowed_operations: the VM's devices first (VBDs and their VDIs, VIFs), then the VM.
// Xapi_vm.set_is_default_template: a plain write of the field (hidden, but XO calls it).
registerProvider('VM', {
  import: (call: Call, url: string, sr: string, fullRestore: boolean, force: boolean) => importFromUrl(call, url, sr, fullRestore, force),
  update_allowed_operations(call: Call, self: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'VM', self);
    for (const vbd of rec.VBDs as string[]) {
      updateAllowedOperations(emu, 'VBD', vbd);
      const b = emu.db.get('VBD', vbd);
      if (b && b.empty !== true) updateAllowedOperations(emu, 'VDI', String(b.VDI));
    }
    for (const vif of rec.VIFs as string[]) updateAllowedOperations(emu, 'VIF', vif);
    updateAllowedOperations(emu, 'VM', self);
  },
  set_is_default_template(call: Call, vm: string, value: boolean) {
    recordOf(call.emu, 'VM', vm);
    call.emu.db.update('VM', vm, { is_default_template: value });
  },
});

// blocked_operations change allowed_operations
for (const name of ['add_to_blocked_operations', 'remove_from_blocked_operations', 'set_blocked_operations']) {
  registerProvider('VM', {
    [name]: (call: Call, self: string, ...args: unknown[]) => {
      generic(call, self, ...args);
      updateAllowedOperations(call.emu, 'VM', self);
    },
  });
}

registerProvider('VM', {
  // VM.create: the record plus its VM_metrics, as xapi_vm.ml creates them; a new VM is Halted.
  create(call, args: Record<string, unknown>) {
    const { db, ids } = call.emu;
    const metrics = ids.ref();
    db.create('VM_metrics', metrics, { uuid: ids.uuid(), current_domain_type: 'unspecified' });
    const ref = ids.ref();
    db.create('VM', ref, { ...args, uuid: ids.uuid(), metrics, power_state: 'Halted', domid: -1 });
    updateAllowedOperations(call.emu, 'VM', ref);
    return ref;
  },

  start: (call, vm: string, startPaused: boolean, _force: boolean) => startVm(call, vm, null, startPaused, 'start'),

  start_on(call, vm: string, host: string, startPaused: boolean, _force: boolean) {
    if (!call.emu.db.has('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host]);
    return startVm(call, vm, host, startPaused, 'start_on');
  },

  clean_shutdown: (call, vm: string) => withOperation(call, 'VM', vm, 'clean_shutdown', () => shutdownVm(call, vm, true)),

  hard_shutdown: (call, vm: string) => withOperation(call, 'VM', vm, 'hard_shutdown', () => shutdownVm(call, vm, false)),

  // VM.shutdown: a clean shutdown, and a hard one if that fails
  shutdown: (call, vm: string) =>
    withOperation(call, 'VM', vm, 'shutdown', async () => {
      if (vmRec(call, vm).power_state === 'Running') {
        try {
          await shutdownVm(call, vm, true);
          return;
        } catch {
          // falls back to hard_shutdown
        }
      }
      await shutdownVm(call, vm, false);
    }),

  clean_reboot: (call, vm: string) => withOperation(call, 'VM', vm, 'clean_reboot', () => rebootVm(call, vm, true)),

  hard_reboot: (call, vm: string) =>
    withOperation(call, 'VM', vm, 'hard_reboot', async () => {
      const ps = vmRec(call, vm).power_state;
      if (ps === 'Suspended') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', 'suspended']);
      if (ps === 'Halted') {
        // Xapi_vm.hard_reboot of a VM that went down meanwhile starts it
        const rec = vmRec(call, vm);
        const h = chooseHost(call.emu, vm, rec);
        const x = xenopsOf(call.emu, h);
        x.add(vmSpec(call.emu, vm));
        await xenops(call.emu, vm, h, String(rec.uuid), () => x.start(String(rec.uuid)));
        return;
      }
      await rebootVm(call, vm, false);
    }),

  suspend: (call, vm: string) => withOperation(call, 'VM', vm, 'suspend', () => suspendVm(call, vm)),

  resume: (call, vm: string, startPaused: boolean, _force: boolean) => resumeVm(call, vm, null, startPaused, 'resume'),

  resume_on(call, vm: string, host: string, startPaused: boolean, _force: boolean) {
    if (!call.emu.db.has('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host]);
    return resumeVm(call, vm, host, startPaused, 'resume_on');
  },

  pause: (call, vm: string) =>
    withOperation(call, 'VM', vm, 'pause', async () => {
      const rec = vmRec(call, vm);
      const h = residentHost(call.emu, vm, rec);
      await xenops(call.emu, vm, h, String(rec.uuid), () => xenopsOf(call.emu, h).pause(String(rec.uuid)));
    }),

  unpause: (call, vm: string) =>
    withOperation(call, 'VM', vm, 'unpause', async () => {
      const rec = vmRec(call, vm);
      const h = residentHost(call.emu, vm, rec);
      await xenops(call.emu, vm, h, String(rec.uuid), () => xenopsOf(call.emu, h).unpause(String(rec.uuid)));
    }),

  // Xapi_vm.power_state_reset: not marked as an operation (it is for VMs whose host died)
  power_state_reset(call, vm: string) {
    const { emu } = call;
    const rec = vmRec(call, vm);
    if (rec.is_control_domain === true) throw new XapiError('CANNOT_RESET_CONTROL_DOMAIN', [vm]);
    if (rec.power_state === 'Running' || rec.power_state === 'Paused') {
      const h = String(rec.resident_on);
      // a host that is not live is not asked (Xapi_vm.power_state_reset: this call is for host failures)
      const hostLive = emu.db.get('host_metrics', String(emu.db.get('host', h)?.metrics))?.live !== false;
      if (emu.hosts.includes(h) && hostLive) {
        // a live host: its xenopsd is asked
        if (xenopsOf(emu, h).list().includes(String(rec.uuid))) throw new XapiError('DOMAIN_EXISTS', [vm]);
        try {
          xenopsOf(emu, h).remove(String(rec.uuid));
        } catch {
          // nothing to forget
        }
      }
    }
    forceStateReset(emu, vm, 'Halted');
  },

  // Xapi_vm_helpers.destroy: the VM, its VBDs, VIFs and metrics records (not its disks)
  destroy: (call, self: string) =>
    withOperation(call, 'VM', self, 'destroy', () => {
      const { db } = call.emu;
      const rec = vmRec(call, self);
      if (truthy((rec.other_config as Record<string, string>)?.default_template)) throw new XapiError('VM_CANNOT_DELETE_DEFAULT_TEMPLATE', []);
      for (const b of rec.VBDs as string[]) {
        const m = String(db.get('VBD', b)?.metrics);
        if (db.has('VBD_metrics', m)) db.destroy('VBD_metrics', m);
        db.destroy('VBD', b);
      }
      for (const v of rec.VIFs as string[]) {
        const m = String(db.get('VIF', v)?.metrics);
        if (db.has('VIF_metrics', m)) db.destroy('VIF_metrics', m);
        db.destroy('VIF', v);
      }
      for (const g of (rec.VGPUs as string[]) ?? []) db.destroy('VGPU', g);
      for (const t of (rec.VTPMs as string[]) ?? []) db.destroy('VTPM', t);
      for (const cls of ['VM_metrics', 'VM_guest_metrics'] as const) {
        const m = String(rec[cls === 'VM_metrics' ? 'metrics' : 'guest_metrics']);
        if (db.has(cls, m)) db.destroy(cls, m);
      }
      // its children (VM.children mirrors their parent) are rebased onto its parent. Its snapshots
      // keep snapshot_of pointing at it, as xapi leaves them (the "orphaned snapshots" clients list)
      for (const child of [...((rec.children as string[]) ?? [])]) if (db.has('VM', child)) db.update('VM', child, { parent: rec.parent });
      db.destroy('VM', self);
    }),
});

// clone, copy, snapshot, checkpoint, revert (vm-snapshot.ts); provision, templates, memory, VCPUs
// and device numbers (vm-settings.ts)
registerProvider('VM', vmSnapshotMessages({
  suspend: suspendVm,
  resume: (call, vm) => resumeLocal(call, vm, null, false),
  hardShutdown: (call, vm) => shutdownVm(call, vm, false),
}));
registerProvider('VM', vmSettingsMessages);
