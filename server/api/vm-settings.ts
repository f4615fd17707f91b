// The VM messages that change its configuration rather than its state: VM.provision from a
// template's other_config:disks (xapi_templates.ml, Xapi_vm.provision), set_is_a_template
// (Xapi_vm_helpers.set_is_a_template), the memory setters and their constraints
// (xapi_vm_memory_constraints.ml), the VCPU setters, get_allowed_VBD_devices / VIF_devices and
// query_services, the setters xapi overrides (domain_type and HVM_boot_policy kept consistent,
// has_vendor_device, HVM_shadow_multiplier, ha_restart_priority), each marked with its operation
// as message_forwarding.ml does.
import type { Call, Provider } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { xapiDate } from '../clock.js';
import { updateAllowedOperations, withOperation } from './operations.js';
import { domainTypeOf } from './xenops-sync.js';
import { callMessage as api } from './vm-snapshot.js';
import { assertChangePreservesPlan, updatePoolStatus } from './ha-plan.js';

function vmRec(emu: Emulator, vm: string): Rec {
  return recordOf(emu, 'VM', vm);
}

const isDomainZero = (rec: Rec) => rec.is_control_domain === true && Number(rec.domid) === 0;

// ---- templates ----

interface ProvisionDisk { device: string; size: number; sr: string; bootable: boolean; type: string }

const VDI_TYPES = new Set(['system', 'user', 'ephemeral', 'suspend', 'crashdump', 'ha_statefile', 'metadata', 'redo_log', 'rrd', 'pvs_cache', 'cbt_metadata']);
const PARSE_FAILURE = () => new XapiError('INTERNAL_ERROR', ['Xapi_templates.Parse_failure']);

function xmlAttrs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  const unescape = (v: string) => v.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  for (const m of s.matchAll(/([A-Za-z_][\w.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) out[m[1]] = unescape(m[2] ?? m[3] ?? '');
  return out;
}

/** Xapi_templates.disks_of_xml: <provision> holding empty <disk .../> elements. */
function disksOfXml(xml: string): ProvisionDisk[] {
  const root = /^\s*(?:<\?xml[^>]*\?>\s*)?<provision\s*(\/>|>([\s\S]*)<\/provision>)\s*$/.exec(xml);
  if (!root) throw PARSE_FAILURE();
  const inner = root[2] ?? '';
  const disks: ProvisionDisk[] = [];
  let rest = inner;
  const re = /^\s*<disk((?:\s+[A-Za-z_][\w.-]*\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(?:\/>|>\s*<\/disk>)/;
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    const a = xmlAttrs(m[1]);
    if (a.device === undefined || a.size === undefined || a.sr === undefined || a.bootable === undefined || !/^-?\d+$/.test(a.size)) throw PARSE_FAILURE();
    disks.push({ device: a.device, size: Number(a.size), sr: a.sr, bootable: a.bootable === 'true', type: VDI_TYPES.has(a.type ?? '') ? a.type : 'system' });
    rest = rest.slice(m[0].length);
  }
  if (rest.trim() !== '') throw PARSE_FAILURE();
  return disks;
}

/** The SR of a provision spec: its uuid; an empty one means the pool's default SR. */
/** The SR of a disk spec, by uuid. As in xapi, sr="" is not the default SR: clients (xe vm-install,
 * XO) write the SR's uuid into the spec before they call VM.provision. */
function provisionSr(emu: Emulator, sr: string): string {
  const ref = emu.db.refByUuid('SR', sr);
  if (!ref) throw new XapiError('UUID_INVALID', ['sr', sr]);
  return ref;
}

/** Xapi_vm.provision: pre_install (a VDI and VBD per disk), then post_install (the keys removed). */
async function provision(call: Call, vm: string): Promise<void> {
  const { emu } = call;
  setIsATemplate(emu, vm, false);
  const oc = vmRec(emu, vm).other_config as Record<string, string>;
  const disks = oc.disks !== undefined ? disksOfXml(oc.disks) : [];
  if (disks.length === 0 && oc.postinstall === undefined) return;
  if (emu.db.get('task', call.task)?.status === 'pending') emu.db.update('task', call.task, { progress: 0.1 });
  const created: { vbd: string; vdi: string }[] = [];
  try {
    for (const d of disks) {
      const sr = provisionSr(emu, d.sr);
      const vdi = await api<string>(call, 'VDI.create', {
        name_label: '', name_description: 'Created by template provisioner', SR: sr, virtual_size: d.size, type: d.type, sharable: false,
        read_only: false, other_config: {}, xenstore_data: {}, sm_config: { vmhint: String(vmRec(emu, vm).uuid) }, tags: [],
      });
      const vbd = await api<string>(call, 'VBD.create', {
        VM: vm, VDI: vdi, userdevice: d.device, bootable: d.bootable, mode: 'RW', type: 'Disk', unpluggable: d.type !== 'system',
        empty: false, qos_algorithm_type: '', qos_algorithm_params: {}, other_config: { owner: '' }, device: '', currently_attached: false,
      });
      created.push({ vbd, vdi });
      emu.db.update('VDI', vdi, { name_label: String(emu.db.get('VBD', vbd)!.userdevice) });
    }
    // the post-install script runs in dom0 against the new disks: none is modelled
    if (oc.postinstall !== undefined) throw new XapiError('NOT_IMPLEMENTED', ['VM.provision: postinstall script']);
    const after = { ...(vmRec(emu, vm).other_config as Record<string, string>) };
    delete after.disks;
    delete after.postinstall;
    emu.db.update('VM', vm, { other_config: after });
  } catch (e) {
    for (const c of created) if (emu.db.has('VBD', c.vbd)) emu.db.destroy('VBD', c.vbd);
    for (const c of created) if (emu.db.has('VDI', c.vdi)) await api(call, 'VDI.destroy', c.vdi).catch(() => undefined);
    throw e;
  }
}

/** Xapi_vm_helpers.set_is_a_template: "false" is install time; a new template loses its VM_metrics,
 * VUSBs and groups, and ha_always_run. */
function setIsATemplate(emu: Emulator, vm: string, value: boolean): void {
  const { db } = emu;
  const rec = vmRec(emu, vm);
  const m = String(rec.metrics);
  if (!value) {
    if (db.has('VM_metrics', m)) db.update('VM_metrics', m, { install_time: xapiDate(emu.clock.now()) });
  } else {
    if (db.get('pool', emu.pool)?.ha_enabled === true && rec.ha_restart_priority === 'restart') throw new XapiError('VM_IS_PROTECTED', [vm]);
    db.update('VM', vm, { ha_always_run: false, groups: [] });
    for (const u of (rec.VUSBs as string[]) ?? []) if (db.has('VUSB', u)) db.destroy('VUSB', u);
    if (db.has('VM_metrics', m)) db.destroy('VM_metrics', m);
    db.update('VM', vm, { metrics: NULL_REF });
  }
  db.update('VM', vm, { is_a_template: value });
  updateAllowedOperations(emu, 'VM', vm);
}

// ---- memory (Xapi_vm_memory_constraints) ----

interface Memory { static_min: number; dynamic_min: number; target: number; dynamic_max: number; static_max: number }

function memoryOf(rec: Rec): Memory {
  return {
    static_min: Number(rec.memory_static_min), dynamic_min: Number(rec.memory_dynamic_min), target: Number(rec.memory_target),
    dynamic_max: Number(rec.memory_dynamic_max), static_max: Number(rec.memory_static_max),
  };
}

/** assert_valid_for_current_context: the order, and for the control domain and nested virt the
 * dynamic range pinned at static_max (DMC is enabled: XCP-ng has no licensing). */
function assertMemoryValid(rec: Rec, c: Memory): void {
  const ordered = c.static_min <= c.dynamic_min && c.dynamic_min <= c.dynamic_max && c.dynamic_max <= c.static_max;
  const platform = (rec.platform ?? {}) as Record<string, string>;
  const nested = ['nested-virt', 'exp-nested-hvm'].some((k) => ['1', 'true'].includes(String(platform[k]).toLowerCase()));
  const reason = rec.is_control_domain === true ? 'control domain' : nested ? 'nested virt' : null;
  if (reason) {
    if (!(ordered && c.dynamic_min === c.static_max && c.dynamic_max === c.static_max)) throw new XapiError('MEMORY_CONSTRAINT_VIOLATION_MAXPIN', [reason]);
  } else if (!ordered) throw new XapiError('MEMORY_CONSTRAINT_VIOLATION_ORDER', []);
}

/** Xapi_vm.set_memory_static_range / set_memory_limits (the VM marked, so Halted unless a control
 * domain); a running control domain needs a reboot to apply it. */
function setMemory(emu: Emulator, vm: string, c: Partial<Memory>): void {
  const rec = vmRec(emu, vm);
  const next = { ...memoryOf(rec), ...c };
  assertMemoryValid(rec, next);
  emu.db.update('VM', vm, {
    memory_static_min: next.static_min, memory_dynamic_min: next.dynamic_min, memory_target: next.target,
    memory_dynamic_max: next.dynamic_max, memory_static_max: next.static_max,
  });
  if (rec.is_control_domain === true && rec.power_state === 'Running') emu.db.update('VM', vm, { requires_reboot: true });
}

function setMemoryStaticRange(call: Call, vm: string, min: number, max: number): Promise<void> {
  return withOperation(call, 'VM', vm, 'changing_static_range', () => setMemory(call.emu, vm, { static_min: Number(min), static_max: Number(max) }));
}

function setMemoryDynamicRange(call: Call, vm: string, min: number, max: number): Promise<void> {
  return withOperation(call, 'VM', vm, 'changing_dynamic_range', () => {
    const rec = vmRec(call.emu, vm);
    const next = { ...memoryOf(rec), dynamic_min: Number(min), target: Number(min), dynamic_max: Number(max) };
    assertMemoryValid(rec, next);
    // the balloon target of a running domain follows; the emulated guest has no balloon driver to lag
    call.emu.db.update('VM', vm, { memory_target: next.target, memory_dynamic_min: next.dynamic_min, memory_dynamic_max: next.dynamic_max });
  });
}

function setMemoryLimits(call: Call, vm: string, staticMin: number, staticMax: number, dynamicMin: number, dynamicMax: number): Promise<void> {
  return withOperation(call, 'VM', vm, 'changing_memory_limits', () =>
    setMemory(call.emu, vm, {
      static_min: Number(staticMin), dynamic_min: Number(dynamicMin), target: Number(dynamicMin), dynamic_max: Number(dynamicMax), static_max: Number(staticMax),
    }));
}

// ---- VCPUs ----

const VCPU_RULE = 'VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max';

// ---- device numbers (Xapi_vm_helpers.allowed_VBD_devices / allowed_VIF_devices) ----

/** Device_number.disk of a VBD userdevice ("2", "hdc", "xvdc", "sdc" are all disk 2), or null. */
export function diskNumber(userdevice: string): number | null {
  if (/^\d+$/.test(userdevice)) return Number(userdevice);
  const named = /^(?:hd|sd|xvd)([a-z]+)$/.exec(userdevice);
  return named ? [...named[1]].reduce((n, c) => n * 26 + (c.charCodeAt(0) - 96), 0) - 1 : null;
}

/** The disk numbers the VM's VBDs take. */
export function usedVbdDevices(emu: Emulator, rec: Rec): Set<number> {
  const used = new Set<number>();
  for (const b of rec.VBDs as string[]) {
    const d = diskNumber(String(emu.db.get('VBD', b)?.userdevice ?? ''));
    if (d !== null) used.add(d);
  }
  return used;
}

/** The VM operations that read or rewrite the VM's device list across their awaits. xapi refuses
 * VBD.create while the VM migrates (CA-75697, Xapi_vbd.create); the emulator applies that rule to
 * VBD and VIF create / destroy during each of these, so that a racing device change gets
 * OTHER_OPERATION_IN_PROGRESS rather than leaving a half copy, a half revert or two VBDs on one
 * device number. The operation's own task (VM.provision creating its disks) is not blocked. */
const DEVICE_LIST_OPS = new Set([
  'migrate_send', 'pool_migrate', 'clone', 'copy', 'snapshot', 'checkpoint', 'snapshot_with_quiesce', 'revert', 'reverting', 'export',
  'metadata_export', 'destroy', 'provision', 'import', 'start', 'start_on', 'resume', 'resume_on', 'clean_reboot', 'hard_reboot',
]);

export function assertDeviceListSettled(call: Call, vm: string, rec: Rec): void {
  for (const [task, op] of Object.entries((rec.current_operations ?? {}) as Record<string, string>)) {
    if (task !== call.task && DEVICE_LIST_OPS.has(op)) throw new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VM', vm, op, task]);
  }
}

/** Constants.hvm_default_boot_policy */
const HVM_DEFAULT_BOOT_POLICY = 'BIOS order';
/** Xapi_globs.has_vendor_device: the platform version a vendor device needs */
const VENDOR_DEVICE_PLATFORM_VERSION = 2;
/** Constants.ha_valid_restart_priorities */
const HA_RESTART_PRIORITIES = new Set(['restart', 'best-effort', '']);

function setHaRestartPriority(emu: Emulator, self: string, value: string): void {
  const rec = vmRec(emu, self);
  if (!HA_RESTART_PRIORITIES.has(value)) throw new XapiError('INVALID_VALUE', ['ha_restart_priority', value]);
  if (rec.ha_restart_priority !== 'restart' && value === 'restart') {
    if (rec.power_state !== 'Halted') assertChangePreservesPlan(emu, { newVmsToProtect: [self] });
    if (emu.db.get('pool', emu.pool)?.ha_enabled === true) updatePoolStatus(emu);
  }
  if (rec.ha_restart_priority !== value) {
    emu.db.update('VM', self, rec.power_state === 'Running' ? { ha_restart_priority: value, ha_always_run: value === 'restart' } : { ha_restart_priority: value });
  }
  updateAllowedOperations(emu, 'VM', self);
}

function setNonNegative(emu: Emulator, self: string, field: 'start_delay' | 'shutdown_delay' | 'order', value: number): void {
  vmRec(emu, self);
  if (Number(value) < 0) throw new XapiError('INVALID_VALUE', [`${field} must be non-negative`, String(value)]);
  emu.db.update('VM', self, { [field]: Number(value) });
}

export const vmSettingsMessages: Provider = {
  provision: (call, vm: string) => withOperation(call, 'VM', vm, 'provision', () => provision(call, vm)),

  set_is_a_template(call, self: string, value: boolean) {
    vmRec(call.emu, self);
    if (value) return withOperation(call, 'VM', self, 'make_into_template', () => setIsATemplate(call.emu, self, true));
    setIsATemplate(call.emu, self, false);
  },

  set_memory_static_range: (call, self: string, min: number, max: number) => setMemoryStaticRange(call, self, min, max),
  set_memory_static_max: (call, self: string, value: number) => setMemoryStaticRange(call, self, Number(vmRec(call.emu, self).memory_static_min), value),
  set_memory_static_min: (call, self: string, value: number) => setMemoryStaticRange(call, self, value, Number(vmRec(call.emu, self).memory_static_max)),
  set_memory_dynamic_range: (call, self: string, min: number, max: number) => setMemoryDynamicRange(call, self, min, max),
  set_memory_dynamic_max: (call, self: string, value: number) => setMemoryDynamicRange(call, self, Number(vmRec(call.emu, self).memory_dynamic_min), value),
  set_memory_dynamic_min: (call, self: string, value: number) => setMemoryDynamicRange(call, self, value, Number(vmRec(call.emu, self).memory_dynamic_max)),
  set_memory_limits: (call, self: string, staticMin: number, staticMax: number, dynamicMin: number, dynamicMax: number) =>
    setMemoryLimits(call, self, staticMin, staticMax, dynamicMin, dynamicMax),
  set_memory(call, self: string, value: number) {
    const min = Number(vmRec(call.emu, self).memory_static_min);
    return setMemoryLimits(call, self, min, value, value, value);
  },

  set_VCPUs_max: (call, self: string, value: number) =>
    withOperation(call, 'VM', self, 'changing_VCPUs', () => {
      const rec = vmRec(call.emu, self);
      if (isDomainZero(rec)) throw new XapiError('INTERNAL_ERROR', ['set_VCPUs_max is not allowed on dom0']);
      const n = Number(value);
      if (n < 1 || n < Number(rec.VCPUs_at_startup)) throw new XapiError('INVALID_VALUE', [VCPU_RULE, String(value)]);
      call.emu.db.update('VM', self, { VCPUs_max: n });
      if (rec.is_control_domain === true && rec.power_state === 'Running') call.emu.db.update('VM', self, { requires_reboot: true });
    }),

  // not marked: xapi changes it in any power state (it is read at the next boot)
  set_VCPUs_at_startup(call, self: string, value: number) {
    const rec = vmRec(call.emu, self);
    if (isDomainZero(rec)) throw new XapiError('OPERATION_NOT_ALLOWED', ['set_VCPUs_at_startup is not allowed on dom0']);
    const n = Number(value);
    if (n < 1 || n > Number(rec.VCPUs_max)) throw new XapiError('INVALID_VALUE', [VCPU_RULE, String(value)]);
    call.emu.db.update('VM', self, { VCPUs_at_startup: n });
  },

  // Xapi_xenops.set_vcpus: the domain's online VCPUs (the emulated guest takes them at once)
  set_VCPUs_number_live: (call, self: string, nvcpu: number) =>
    withOperation(call, 'VM', self, 'changing_VCPUs_live', () => {
      const rec = vmRec(call.emu, self);
      const n = Number(nvcpu);
      if (n < 1 || n > Number(rec.VCPUs_max)) throw new XapiError('INVALID_VALUE', ['VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max', String(n)]);
      call.emu.db.update('VM', self, { VCPUs_at_startup: n });
      const m = String(rec.metrics);
      if (call.emu.db.has('VM_metrics', m)) call.emu.db.update('VM_metrics', m, { VCPUs_number: n });
    }),

  get_allowed_VBD_devices(call, vm: string) {
    const rec = vmRec(call.emu, vm);
    // the control domain has no qemu and one more device
    const last = rec.is_control_domain === true && domainTypeOf(rec) !== 'hvm' ? 255 : 254;
    const used = usedVbdDevices(call.emu, rec);
    const out: string[] = [];
    for (let d = 0; d <= last; d++) if (!used.has(d)) out.push(String(d));
    return out;
  },

  get_allowed_VIF_devices(call, vm: string) {
    const rec = vmRec(call.emu, vm);
    const used = new Set((rec.VIFs as string[]).map((v) => String(call.emu.db.get('VIF', v)?.device)));
    const out: string[] = [];
    for (let d = 0; d <= 15; d++) if (!used.has(String(d))) out.push(String(d));
    return out;
  },

  // Xapi_vm.set_domain_type and set_HVM_boot_policy: each derives the other field, so the two never
  // disagree (Xapi_vm_helpers.derive_hvm_boot_policy / derive_domain_type)
  set_domain_type(call, self: string, value: string) {
    vmRec(call.emu, self);
    if (value === 'unspecified') throw new XapiError('INVALID_VALUE', ['domain_type', value]);
    call.emu.db.update('VM', self, { domain_type: value, HVM_boot_policy: value === 'hvm' ? HVM_DEFAULT_BOOT_POLICY : '' });
  },
  set_HVM_boot_policy(call, self: string, value: string) {
    vmRec(call.emu, self);
    call.emu.db.update('VM', self, { domain_type: value === '' ? 'pv' : 'hvm', HVM_boot_policy: value });
  },

  // Xapi_vm.set_has_vendor_device: Halted only; the hardware platform version rises to the one the
  // vendor device needs (Xapi_vm_helpers.update_vm_virtual_hardware_platform_version)
  set_has_vendor_device(call, self: string, value: boolean) {
    const rec = vmRec(call.emu, self);
    if (rec.power_state !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [self, 'halted', String(rec.power_state).toLowerCase()]);
    const version = Math.max(Number(rec.hardware_platform_version) || 0, value ? VENDOR_DEVICE_PLATFORM_VERSION : 0);
    call.emu.db.update('VM', self, { has_vendor_device: value, hardware_platform_version: version });
  },

  // Xapi_vm_helpers.set_HVM_shadow_multiplier, under changing_shadow_memory (Halted only)
  set_HVM_shadow_multiplier: (call, self: string, value: number) =>
    withOperation(call, 'VM', self, 'changing_shadow_memory', () => {
      if (!(Number(value) >= 1)) throw new XapiError('INVALID_VALUE', ['multiplier', String(value)]);
      call.emu.db.update('VM', self, { HVM_shadow_multiplier: Number(value) });
    }),

  // Xapi_vm.set_ha_restart_priority: a VM that becomes protected while it runs must keep the
  // failover plan (HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN); a running VM's protection
  // (ha_always_run) follows at once
  set_ha_restart_priority(call, self: string, value: string) {
    setHaRestartPriority(call.emu, self, value);
  },

  // deprecated since Boston: degrades to the restart priority (Xapi_vm.set_ha_always_run)
  set_ha_always_run(call, self: string, value: boolean) {
    setHaRestartPriority(call.emu, self, value ? 'restart' : '');
  },

  // Xapi_vm.set_start_delay / set_shutdown_delay / set_order: non-negative
  set_start_delay: (call, self: string, value: number) => setNonNegative(call.emu, self, 'start_delay', value),
  set_shutdown_delay: (call, self: string, value: number) => setNonNegative(call.emu, self, 'shutdown_delay', value),
  set_order: (call, self: string, value: number) => setNonNegative(call.emu, self, 'order', value),

  // marked (NOT_SYSTEM_DOMAIN for other VMs), then, as in xapi, not implemented
  query_services: (call, self: string) =>
    withOperation(call, 'VM', self, 'query_services', () => {
      throw new XapiError('NOT_IMPLEMENTED', ['query_services']);
    }),
};
