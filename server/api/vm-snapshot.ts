// VM.clone, copy, snapshot, checkpoint and revert (xapi_vm_clone.ml, xapi_vm_snapshot.ml and their
// part of message_forwarding.ml). The VM is marked with its operation; its disks are cloned,
// copied or snapshotted through VDI.clone / copy / snapshot, each marking its VDI and SR as those
// API calls do, then a new VM record is made with copies of the VBDs and VIFs. The power operations
// checkpoint needs (suspend, resume, hard shutdown) come from VM.ts.
import type { Call, Provider } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { handlerFor } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { classes, messages, model } from '../../schema/index.js';
import { xapiDate } from '../clock.js';
import { broadcastOperations, inSubtask, updateAllowedOperations, withOperation } from './operations.js';
import { forceStateReset, refreshAllowed } from './xenops-sync.js';
import { randomMac } from './VIF.js';
import { hasCapability } from '../sm/capabilities.js';

/** The power operations of VM.ts that checkpoint and revert use, without their own marking. */
export interface PowerOps {
  suspend(call: Call, vm: string): Promise<void>;
  resume(call: Call, vm: string): Promise<void>;
  hardShutdown(call: Call, vm: string): Promise<void>;
}

/** Xapi_vm_clone.disk_op */
type DiskOp = { k: 'clone' } | { k: 'copy'; sr: string | null } | { k: 'snapshot' } | { k: 'checkpoint' };

const api = callMessage;

const isSnapshotOp = (op: DiskOp) => op.k === 'snapshot' || op.k === 'checkpoint';

/** Calls a message as the API would (its checks and marks), in the same task, as xapi's code calls
 * the API from inside an operation (Helpers.call_api_functions). */
export function callMessage<T>(call: Call, name: string, ...args: unknown[]): Promise<T> {
  const msg = messages.get(name)!;
  return Promise.resolve(handlerFor(msg)({ ...call, msg, label: name }, ...args) as T);
}

function vmRec(emu: Emulator, vm: string): Rec {
  return recordOf(emu, 'VM', vm);
}

function setProgress(emu: Emulator, task: string, p: number): void {
  const t = emu.db.get('task', task);
  if (t && t.status === 'pending' && Number(t.progress) < p) emu.db.update('task', task, { progress: Math.round(p * 100) / 100 });
}

/** The fields of a class that the database keeps from the other side of a relation (VM.VBDs,
 * VM.snapshots ...): a copied record must not carry them. */
function reverseSets(cls: string): string[] {
  return classes.get(cls)!.fields.filter((f) => f.qualifier === 'DynamicRO' && f.ty.k === 'set' && f.ty.of.k === 'ref').map((f) => f.name);
}

/** A copy of a record under a new ref and uuid, without its reverse sets and operations. */
function copyRecord(emu: Emulator, cls: string, rec: Rec, changes: Rec): string {
  const out: Rec = { ...structuredClone(rec), uuid: emu.ids.uuid(), allowed_operations: [], current_operations: {} };
  for (const f of reverseSets(cls)) out[f] = [];
  const ref = emu.ids.ref();
  emu.db.create(cls, ref, { ...out, ...changes });
  return ref;
}

/** Xapi_vm_clone.clone_single_vdi */
function cloneSingleVdi(call: Call, op: DiskOp, vdi: string): Promise<string> {
  const driverParams = { epochhint: call.emu.ids.uuid() };
  switch (op.k) {
    case 'clone':
      return api(call, 'VDI.clone', vdi, driverParams);
    case 'copy':
      return api(call, 'VDI.copy', vdi, op.sr ?? String(recordOf(call.emu, 'VDI', vdi).SR), NULL_REF, NULL_REF);
    default:
      return api(call, 'VDI.snapshot', vdi, driverParams);
  }
}

/** A disk of the new VM: the VBD it copies (its record as read when the disk was cloned), and its
 * VDI, new when `created`. */
interface Cloned { vbd: string; rec: Rec; vdi: string; created: boolean }

async function deleteDisks(call: Call, disks: Cloned[]): Promise<void> {
  for (const d of disks) {
    if (d.created && call.emu.db.has('VDI', d.vdi)) await api(call, 'VDI.destroy', d.vdi).catch(() => undefined);
  }
}

/** Xapi_vm_clone.safe_clone_disks: empty VBDs keep no disk, CDs keep theirs. */
async function safeCloneDisks(call: Call, op: DiskOp, vbds: string[]): Promise<Cloned[]> {
  const { db } = call.emu;
  const out: Cloned[] = [];
  const total = vbds.reduce((n, b) => n + Number(db.get('VDI', String(db.get('VBD', b)?.VDI))?.virtual_size ?? 0), 0) || 1;
  let done = 0;
  try {
    for (const b of vbds) {
      const vbd = db.get('VBD', b);
      if (!vbd) continue;
      const rec = structuredClone(vbd);
      if (vbd.empty === true) out.push({ vbd: b, rec, vdi: NULL_REF, created: false });
      else if (vbd.type === 'CD') out.push({ vbd: b, rec, vdi: String(vbd.VDI), created: false });
      else {
        const size = Number(db.get('VDI', String(vbd.VDI))?.virtual_size ?? 0);
        out.push({ vbd: b, rec, vdi: await cloneSingleVdi(call, op, String(vbd.VDI)), created: true });
        done += size;
        setProgress(call.emu, call.task, (done / total) * 0.9);
      }
    }
  } catch (e) {
    await deleteDisks(call, out);
    throw e;
  }
  return out;
}

/** Xapi_vbd_helpers.copy, from the VBD's record as it was when its disk was cloned (the VBD may be
 * gone since: an unplugged VBD of a VM being reverted). */
function copyVbd(emu: Emulator, r: Rec, vm: string, vdi: string): string {
  const ref = copyRecord(emu, 'VBD', r, {
    VM: vm, VDI: vdi, empty: r.empty === true || vdi === NULL_REF, reserved: false, currently_attached: false, storage_lock: false,
    status_code: 0, status_detail: '', runtime_properties: {}, metrics: NULL_REF,
  });
  updateAllowedOperations(emu, 'VBD', ref);
  return ref;
}

/** Xapi_vif_helpers.copy: snapshots keep the MAC, clones get a new one. */
function copyVif(emu: Emulator, vif: string, vm: string, preserveMac: boolean): string {
  const r = emu.db.get('VIF', vif)!;
  const ref = copyRecord(emu, 'VIF', r, {
    VM: vm, currently_attached: false, status_code: 0, status_detail: '', runtime_properties: {}, metrics: NULL_REF,
    ...(preserveMac ? {} : { MAC: randomMac(emu), MAC_autogenerated: true }),
  });
  updateAllowedOperations(emu, 'VIF', ref);
  return ref;
}

/** Xapi_vm_helpers.copy_metrics / copy_guest_metrics */
function copyMetrics(emu: Emulator, cls: 'VM_metrics' | 'VM_guest_metrics', ref: string): string {
  const r = emu.db.get(cls, ref);
  if (!r) {
    if (cls === 'VM_guest_metrics') return NULL_REF;
    const m = emu.ids.ref();
    emu.db.create('VM_metrics', m, { uuid: emu.ids.uuid(), current_domain_type: 'unspecified' });
    return m;
  }
  return copyRecord(emu, cls, r, {});
}

/** Xapi_vm_helpers.fresh_genid: "" stays "", any other value becomes two new random numbers. */
function freshGenid(emu: Emulator, current: string): string {
  if (current === '') return '';
  const n = () => BigInt(`0x${emu.ids.uuid().replace(/-/g, '').slice(0, 15)}`).toString();
  return `${n()}:${n()}`;
}

/** Xapi_vm_clone.snapshot_info */
function snapshotInfo(powerState: string, isSnapshot: boolean): Record<string, string> {
  return isSnapshot ? { 'disk-snapshot-type': 'crash_consistent', 'power-state-at-snapshot': powerState } : {};
}

/** Xapi_vm_clone.copy_vm_record */
function copyVmRecord(call: Call, vm: string, op: DiskOp, newName: string, newPowerState: string, info?: Record<string, string>): string {
  const { emu } = call;
  const all = vmRec(emu, vm);
  const isSnapshot = isSnapshotOp(op);
  let otherConfig = { ...(all.other_config as Record<string, string>) };
  if (!isSnapshot) otherConfig.mac_seed = emu.ids.uuid();
  delete otherConfig.default_template;
  delete otherConfig.xensource_internal;
  if (all.is_a_template === true && !('base_template_name' in otherConfig)) otherConfig = { base_template_name: String(all.name_label), ...otherConfig };
  const ref = copyRecord(emu, 'VM', all, {
    name_label: newName, power_state: newPowerState, blocked_operations: {},
    is_a_template: isSnapshot || all.is_a_template === true, is_default_template: false, is_a_snapshot: isSnapshot,
    snapshot_of: isSnapshot ? vm : NULL_REF, snapshot_time: xapiDate(isSnapshot ? emu.clock.now() : 0),
    snapshot_info: info ?? snapshotInfo(String(all.power_state), isSnapshot), snapshot_metadata: '', transportable_snapshot_id: '',
    parent: isSnapshot ? all.parent : NULL_REF, resident_on: NULL_REF, scheduled_to_be_resident_on: NULL_REF,
    suspend_VDI: NULL_REF, other_config: otherConfig, domid: -1, domarch: '', blobs: {}, ha_always_run: false,
    protection_policy: NULL_REF, is_snapshot_from_vmpp: false, is_vmss_snapshot: false, snapshot_schedule: NULL_REF,
    appliance: NULL_REF, start_delay: 0, shutdown_delay: 0, order: 0, suspend_SR: NULL_REF, version: 0,
    // Xapi_vm_helpers.fresh_genid: a VM with a generation id gets a new one
    generation_id: freshGenid(emu, String(all.generation_id ?? '')),
    requires_reboot: false, pending_guidances: [], recommended_guidances: [], pending_guidances_recommended: [], pending_guidances_full: [],
    metrics: copyMetrics(emu, 'VM_metrics', String(all.metrics)), guest_metrics: copyMetrics(emu, 'VM_guest_metrics', String(all.guest_metrics)),
    groups: [], attached_PCIs: [],
    // marked with the operation until it is whole, so that no call (VM.destroy, VBD.destroy of a
    // copied VBD) can take it apart while it is being made
    current_operations: { [call.task]: op.k },
  });
  // the snapshot becomes the VM's parent (its "children" follow)
  if (isSnapshot) emu.db.update('VM', vm, { parent: ref });
  return ref;
}

/** Xapi_vm_clone.clone */
async function cloneVm(call: Call, vm: string, op: DiskOp, newName: string, ignoreVdis: string[] = [], info?: Record<string, string>): Promise<string> {
  const { emu } = call;
  const { db } = emu;
  const rec = vmRec(emu, vm);
  const powerState = String(rec.power_state);
  // Xapi_vm.clone / copy of a snapshot hard-shuts the new VM down (its image copy destroyed): it is
  // made Halted without copying the image
  const newPowerState = (op.k === 'checkpoint' && (powerState === 'Running' || powerState === 'Suspended'))
    || ((op.k === 'clone' || op.k === 'copy') && powerState === 'Suspended' && rec.is_a_snapshot !== true) ? 'Suspended' : 'Halted';
  const isSnapshot = isSnapshotOp(op);
  let vbds = [...(rec.VBDs as string[])];
  if (isSnapshot) vbds = vbds.filter((b) => !ignoreVdis.includes(String(db.get('VBD', b)?.VDI)));
  const disks = await safeCloneDisks(call, op, vbds);
  let ref: string | null = null;
  try {
    ref = copyVmRecord(call, vm, op, newName, newPowerState, info);
    for (const d of disks) {
      const vbd = copyVbd(emu, d.rec, ref, d.vdi);
      // CA-58405: the new VM owns the new disks
      const v = db.get('VBD', vbd)!;
      if (v.type === 'Disk' && !('owner' in (v.other_config as object))) db.update('VBD', vbd, { other_config: { ...(v.other_config as object), owner: '' } });
    }
    for (const vif of rec.VIFs as string[]) if (db.has('VIF', vif)) copyVif(emu, vif, ref, isSnapshot);
    const suspendVdi = String(vmRec(emu, vm).suspend_VDI);
    // the memory image may go while the disks are copied (a hard_shutdown, allowed concurrently,
    // wins): a Suspended copy without it could neither resume nor start, so the copy fails
    const imageGone = () => new XapiError('VM_BAD_POWER_STATE', [vm, 'suspended', String(vmRec(emu, vm).power_state).toLowerCase()]);
    if (db.has('VDI', suspendVdi) && newPowerState === 'Suspended') {
      let copied: string;
      try {
        copied = await cloneSingleVdi(call, op, suspendVdi);
      } catch (e) {
        if (!db.has('VDI', suspendVdi)) throw imageGone();
        throw e;
      }
      disks.push({ vbd: NULL_REF, rec: {}, vdi: copied, created: true });
      db.update('VM', ref, { suspend_VDI: copied });
    } else if (newPowerState === 'Suspended') {
      throw imageGone();
    }
    db.update('VM', ref, { current_operations: {} });
    forceStateReset(emu, ref, newPowerState as 'Halted' | 'Suspended');
    refreshAllowed(emu, ref);
    broadcastOperations(emu, 'VM', ref);
    return ref;
  } catch (e) {
    if (ref && db.has('VM', ref)) destroyRecord(emu, ref);
    if (ref) broadcastOperations(emu, 'VM', ref);
    await deleteDisks(call, disks);
    throw e;
  }
}

/** The VM record with its devices and metrics (not its disks); its children (the VM a snapshot
 * was taken of) go back to its parent, as Xapi_vm.destroy rebases them. */
function destroyRecord(emu: Emulator, vm: string): void {
  const { db } = emu;
  const rec = db.get('VM', vm)!;
  for (const child of [...((rec.children as string[]) ?? [])]) if (db.has('VM', child)) db.update('VM', child, { parent: rec.parent });
  for (const [cls, devices] of [['VBD', rec.VBDs], ['VIF', rec.VIFs]] as const) {
    for (const d of devices as string[]) {
      const m = String(db.get(cls, d)?.metrics);
      if (db.has(`${cls}_metrics`, m)) db.destroy(`${cls}_metrics`, m);
      db.destroy(cls, d);
    }
  }
  for (const m of [['VM_metrics', rec.metrics], ['VM_guest_metrics', rec.guest_metrics]] as const) {
    if (db.has(m[0], String(m[1]))) db.destroy(m[0], String(m[1]));
  }
  db.destroy('VM', vm);
}

/** message_forwarding's create_vm_message: an alert on the VM (failures ignored). */
async function vmMessage(call: Call, vm: string, name: string, body: string): Promise<void> {
  const uuid = call.emu.db.get('VM', vm)?.uuid;
  const priority = model.alerts.find((a) => a.name === name)?.priority ?? 5;
  if (uuid) await api(call, 'message.create', name, priority, 'VM', uuid, body).catch(() => undefined);
}

const label = (emu: Emulator, vm: string) => String(emu.db.get('VM', vm)?.name_label ?? '');

// ---- revert (Xapi_vm_snapshot) ----

/** Xapi_vm_snapshot.extended_do_not_copy: the snapshot has no metadata of its own (snapshot_metadata
 * is ""), so its record is the source, as xapi does for pre-MNR snapshots. */
const DO_NOT_COPY = new Set([
  'uuid', 'suspend_VDI', 'power_state', 'parent', 'current_operations', 'allowed_operations', 'metrics', 'guest_metrics', 'resident_on',
  'domid', 'protection_policy', 'snapshot_schedule', 'scheduled_to_be_resident_on', 'snapshots', 'tags', 'affinity', 'groups', 'consoles',
  'VBDs', 'VIFs', 'VGPUs', 'VUSBs', 'VTPMs', 'attached_PCIs', 'is_snapshot_from_vmpp',
  'name_label', 'is_a_snapshot', 'is_a_template', 'is_default_template', 'snapshot_of', 'snapshot_time', 'transportable_snapshot_id', 'children',
  // fields only a snapshot has a meaning for
  'snapshot_info', 'snapshot_metadata', 'is_vmss_snapshot',
]);

function revertVmFields(emu: Emulator, snapshot: string, vm: string): void {
  const snap = vmRec(emu, snapshot);
  const changes: Rec = {};
  for (const f of classes.get('VM')!.fields) {
    if (DO_NOT_COPY.has(f.name) || !(f.name in snap)) continue;
    changes[f.name] = structuredClone(snap[f.name]);
  }
  changes.ha_always_run = false;
  emu.db.update('VM', vm, changes);
}

/** Xapi_vm_snapshot.revert_vbds + update_vifs_vbds_vgpus_and_vusbs: the VM's disks that have a
 * snapshot are replaced by clones of it; the others are left unattached; VIFs are the snapshot's. */
async function revertDevices(call: Call, snapshot: string, vm: string): Promise<void> {
  const { emu } = call;
  const { db } = emu;
  const snap = vmRec(emu, snapshot);
  const vmr = vmRec(emu, vm);
  const snapVbds = (snap.VBDs as string[]).filter((b) => db.has('VBD', b));
  const snapDiskVbds = snapVbds.filter((b) => db.get('VBD', b)!.type === 'Disk');
  const snapCdVbds = snapVbds.filter((b) => db.get('VBD', b)!.type !== 'Disk');
  const snapshotOf = new Set(snapDiskVbds.map((b) => String(db.get('VDI', String(db.get('VBD', b)!.VDI))?.snapshot_of)));
  const vmVbds = (vmr.VBDs as string[]).filter((b) => db.has('VBD', b));
  const vmDiskVdis = new Set(vmVbds.filter((b) => db.get('VBD', b)!.type === 'Disk').map((b) => String(db.get('VBD', b)!.VDI)));
  // VDI.revert is not in the SM drivers modelled: every snapshot disk is cloned
  const destroyVdis = [...vmDiskVdis].filter((v) => snapshotOf.has(v));
  if (db.has('VDI', String(vmr.suspend_VDI))) destroyVdis.push(String(vmr.suspend_VDI));
  const destroyVbds = vmVbds.filter((b) => {
    const r = db.get('VBD', b)!;
    return r.type !== 'Disk' || vmDiskVdis.has(String(r.VDI));
  });
  for (const b of destroyVbds) if (db.has('VBD', b)) db.destroy('VBD', b);
  for (const v of destroyVdis) {
    if (!db.has('VDI', v)) continue;
    if (db.get('SR', String(db.get('VDI', v)!.SR))?.content_type === 'iso') continue;
    await api(call, 'VDI.destroy', v);
  }
  db.update('VM', vm, { suspend_VDI: NULL_REF });
  setProgress(emu, call.task, 0.2);
  const previousSnapshotOf = snapDiskVbds.map((b) => String(db.get('VDI', String(db.get('VBD', b)!.VDI))?.snapshot_of));
  const cloned = await safeCloneDisks(call, { k: 'clone' }, snapDiskVbds);
  const created = cloned.filter((c) => c.created);
  try {
    const cds = await safeCloneDisks(call, { k: 'clone' }, snapCdVbds);
    setProgress(emu, call.task, 0.5);
    // the snapshots of the replaced disk are now snapshots of its replacement
    cloned.forEach((c, i) => {
      const old = previousSnapshotOf[i];
      if (!c.created || old === NULL_REF) return;
      for (const [v, row] of [...db.table('VDI')]) if (row.rec.snapshot_of === old) db.update('VDI', v, { snapshot_of: c.vdi });
    });
    const suspend = String(snap.suspend_VDI);
    if (db.has('VDI', suspend)) {
      const s = await cloneSingleVdi(call, { k: 'clone' }, suspend);
      created.push({ vbd: NULL_REF, rec: {}, vdi: s, created: true });
      db.update('VM', vm, { suspend_VDI: s });
    }
    setProgress(emu, call.task, 0.6);
    for (const c of [...cloned, ...cds]) copyVbd(emu, c.rec, vm, c.vdi);
    setProgress(emu, call.task, 0.7);
    for (const v of vmr.VIFs as string[]) if (db.has('VIF', v)) db.destroy('VIF', v);
    for (const v of snap.VIFs as string[]) if (db.has('VIF', v)) copyVif(emu, v, vm, true);
    for (const v of (vmr.VUSBs as string[]) ?? []) if (db.has('VUSB', v)) db.destroy('VUSB', v);
    setProgress(emu, call.task, 0.9);
  } catch (e) {
    await deleteDisks(call, created);
    throw e;
  }
}

/** Xapi_vm_snapshot.update_guest_metrics / update_metrics / update_parent */
function revertMetrics(emu: Emulator, snapshot: string, vm: string): void {
  const { db } = emu;
  const snap = vmRec(emu, snapshot);
  const vmr = vmRec(emu, vm);
  const oldGm = String(vmr.guest_metrics);
  const gm = copyMetrics(emu, 'VM_guest_metrics', String(snap.guest_metrics));
  db.update('VM', vm, { guest_metrics: gm });
  if (db.has('VM_guest_metrics', oldGm)) db.destroy('VM_guest_metrics', oldGm);
  const m = db.get('VM_metrics', String(vmr.metrics));
  const sm = db.get('VM_metrics', String(snap.metrics));
  if (m && sm) {
    const { uuid: _u, ...rest } = structuredClone(sm);
    db.update('VM_metrics', String(vmr.metrics), rest);
  }
  db.update('VM', vm, { parent: snapshot });
}

/** VM.revert (message_forwarding + Xapi_vm_snapshot.revert). */
async function revert(call: Call, power: PowerOps, snapshot: string): Promise<void> {
  const { emu } = call;
  const snapRec = vmRec(emu, snapshot);
  const vm = String(snapRec.snapshot_of);
  if (snapRec.is_a_snapshot === true && !emu.db.has('VM', vm)) {
    // xapi rebuilds the VM from the snapshot's metadata, which these snapshots do not carry
    throw new XapiError('VM_REVERT_FAILED', [snapshot, vm]);
  }
  await withOperation(call, 'VM', snapshot, 'revert', () =>
    withOperation(call, 'VM', vm, 'reverting', async () => {
      // no point advertising cancel: a half-reverted VM is broken
      if (emu.db.has('task', call.task)) emu.db.update('task', call.task, { allowed_operations: [] });
      // Xapi_vm_snapshot.revert calls VM.hard_shutdown through the API: its own task and mark
      if (vmRec(emu, vm).power_state !== 'Halted') {
        await inSubtask(call, 'VM.hard_shutdown', (sub) => withOperation(sub, 'VM', vm, 'hard_shutdown', () => power.hardShutdown(sub, vm)));
      }
      revertVmFields(emu, snapshot, vm);
      setProgress(emu, call.task, 0.1);
      const powerState = String(vmRec(emu, snapshot).power_state);
      try {
        await revertDevices(call, snapshot, vm);
        revertMetrics(emu, snapshot, vm);
        setProgress(emu, call.task, 1);
        forceStateReset(emu, vm, powerState === 'Suspended' && emu.db.has('VDI', String(vmRec(emu, vm).suspend_VDI)) ? 'Suspended' : 'Halted');
      } catch (e) {
        forceStateReset(emu, vm, 'Halted');
        if (e instanceof XapiError && (e.code === 'SR_BACKEND_FAILURE_44' || e.code === 'SR_BACKEND_FAILURE_109' || e.code === 'VDI_INCOMPATIBLE_TYPE')) throw e;
        throw new XapiError('VM_REVERT_FAILED', [snapshot, vm]);
      }
    }));
  const { uuid: vmUuid } = vmRec(emu, vm);
  await vmMessage(call, vm, 'VM_SNAPSHOT_REVERTED',
    `VM '${label(emu, vm)}' (uuid: ${vmUuid}) reverted to snapshot: ${label(emu, snapshot)} (uuid ${String(vmRec(emu, snapshot).uuid)})`);
}

/** Xapi_vm_snapshot.checkpoint: a running VM is suspended (its memory image becomes the snapshot's
 * suspend VDI), snapshotted, then resumed. */
async function checkpoint(call: Call, power: PowerOps, vm: string, newName: string): Promise<string> {
  const { emu } = call;
  const rec = vmRec(emu, vm);
  const powerState = String(rec.power_state);
  let info: Record<string, string> | undefined;
  if (powerState === 'Running') {
    info = snapshotInfo(powerState, true);
    const srs = new Set<string>();
    for (const b of rec.VBDs as string[]) {
      const vbd = emu.db.get('VBD', b);
      if (!vbd || vbd.type === 'CD') continue;
      const sr = emu.db.get('VDI', String(vbd.VDI))?.SR;
      if (sr) srs.add(String(sr));
    }
    for (const sr of srs) {
      if (!hasCapability(emu, String(emu.db.get('SR', sr)?.type), 'VDI_SNAPSHOT')) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [vm]);
    }
    await power.suspend(call, vm);
  }
  let snap: string | undefined;
  let err: unknown;
  try {
    snap = await cloneVm(call, vm, { k: 'checkpoint' }, newName, [], info);
  } catch (e) {
    err = e;
  }
  // a hard_shutdown (allowed concurrently) may have won meanwhile: the VM stays halted
  if (powerState === 'Running' && emu.db.get('VM', vm)?.power_state === 'Suspended') await power.resume(call, vm);
  if (snap === undefined) throw err;
  return snap;
}

export function vmSnapshotMessages(power: PowerOps): Provider {
  return {
    clone: (call, vm: string, newName: string) => withOperation(call, 'VM', vm, 'clone', () => cloneVm(call, vm, { k: 'clone' }, newName)),

    copy(call, vm: string, newName: string, sr: string) {
      const { db } = call.emu;
      const target = db.has('SR', sr) ? sr : null;
      return withOperation(call, 'VM', vm, 'copy', () => {
        if (target && db.get('SR', target)?.content_type === 'iso') {
          throw new XapiError('OPERATION_NOT_ALLOWED', ["Cannot copy a VM's disks to an ISO SR"]);
        }
        return cloneVm(call, vm, { k: 'copy', sr: target }, newName);
      });
    },

    async snapshot(call, vm: string, newName: string, ignoreVdis: string[]) {
      const snap = await withOperation(call, 'VM', vm, 'snapshot', () => cloneVm(call, vm, { k: 'snapshot' }, newName, ignoreVdis ?? []));
      const { emu } = call;
      await vmMessage(call, vm, 'VM_SNAPSHOTTED', `VM '${label(emu, vm)}' (uuid: ${String(vmRec(emu, vm).uuid)}) snapshotted, snapshot name: ${newName}`);
      return snap;
    },

    async checkpoint(call, vm: string, newName: string) {
      const snap = await withOperation(call, 'VM', vm, 'checkpoint', () => checkpoint(call, power, vm, newName));
      const { emu } = call;
      await vmMessage(call, vm, 'VM_CHECKPOINTED', `VM '${label(emu, vm)}' (uuid: ${String(vmRec(emu, vm).uuid)}) checkpointed, snapshot name: ${newName}`);
      return snap;
    },

    revert: (call, snapshot: string) => revert(call, power, snapshot),
  };
}
