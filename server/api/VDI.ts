// VDI: custom messages (xapi_vdi.ml, the VDI part of message_forwarding.ml and storage_smapiv1.ml)
// and the VDI's allowed_operations (Xapi_vdi.check_operation_error). Disk work is done by server/sm;
// copies read and write through it as xapi's Sm_fs_ops does through dom0 block devices.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { xapiDate } from '../clock.js';
import { isZero } from '../../storage/vhd/io.js';
import { BLOCK_SIZE } from '../../storage/vhd/index.js';
import {
  currentOperations, ocamlSetOrder, registerOperations, updateAllowedOperations, withOperation, withOperations, type Mark,
} from './operations.js';
import { featuresOf } from '../sm/capabilities.js';
import {
  assertPbdPlugged, choosePbd, dbForget, dbIntroduce, openVdi, smVdiConfigureCbt, smVdiCreate, smVdiDataDestroy, smVdiDelete, smVdiIntroduce,
  smVdiListChangedBlocks, smVdiResize, smVdiSnapshot, smVdiUpdate, srCtx,
} from '../sm/sm.js';
import { isUuid } from '../sm/paths.js';
import { assertSmSession } from './SR.js';
import { certificateSubject, nbdListenerOf } from '../nbd/index.js';

// ---- allowed_operations (Xapi_vdi.check_operation_error) ----

/** Xapi_globs.pre_ely_vdi_operations minus blocked and force_unlock (CA-260245, CA-281176) */
const ALL_OPS = ['clone', 'copy', 'resize', 'resize_online', 'snapshot', 'destroy', 'forget', 'update', 'generate_config'];

const FEATURE: Record<string, string | undefined> = {
  snapshot: 'VDI_SNAPSHOT', destroy: 'VDI_DELETE', resize: 'VDI_RESIZE', update: 'VDI_UPDATE',
  resize_online: 'VDI_RESIZE_ONLINE', generate_config: 'VDI_GENERATE_CONFIG', clone: 'VDI_CLONE', revert_to: 'VDI_CLONE',
  revert_from: 'VDI_CLONE', mirror: 'VDI_MIRROR', enable_cbt: 'VDI_CONFIG_CBT', disable_cbt: 'VDI_CONFIG_CBT',
  data_destroy: 'VDI_CONFIG_CBT', list_changed_blocks: 'VDI_CONFIG_CBT', set_on_boot: 'VDI_RESET_ON_BOOT',
};
const LIVE_OPS = new Set(['snapshot', 'resize_online', 'blocked', 'clone', 'revert_to', 'mirror', 'enable_cbt', 'disable_cbt', 'data_destroy']);
const NOT_FOR_CBT_METADATA = new Set(['clone', 'copy', 'disable_cbt', 'enable_cbt', 'mirror', 'resize', 'resize_online', 'snapshot', 'revert_to', 'revert_from', 'set_on_boot']);

function vdiCheck(emu: Emulator, ref: string, rec: Rec, op: string): XapiError | null {
  const ops = currentOperations(rec);
  const sr = String(rec.SR);
  const srRec = emu.db.get('SR', sr);
  // 1. any operation but copy is exclusive (destroy may run during a mirror)
  const mirroring = op === 'destroy' && ops.some(([, o]) => o === 'mirror');
  const other = ops.find(([, o]) => o !== 'copy');
  if (!mirroring && other) return new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VDI', ref, other[1], other[0]]);
  const attachedPbds = ((srRec?.PBDs as string[]) ?? []).filter((p) => emu.db.get('PBD', p)?.currently_attached === true);
  if (attachedPbds.length === 0 && op === 'resize') return new XapiError('SR_HAS_NO_PBDS', [sr]);
  // 2. VBDs using it
  const vbds = (rec.VBDs as string[]).map((v) => emu.db.get('VBD', v)).filter((v): v is Rec => !!v);
  const active = vbds.filter((v) => v.currently_attached === true || v.reserved === true);
  // list_changed_blocks is allowed on a VDI attached to snapshot VMs only (VM.checkpoint marks their VBDs attached)
  const onSnapshotVm = (v: Rec) => emu.db.get('VM', String(v.VM))?.is_a_snapshot === true;
  const blocked = LIVE_OPS.has(op) ? false : op === 'copy' ? active.some((v) => v.mode === 'RW')
    : op === 'list_changed_blocks' ? !active.every(onSnapshotVm) : active.length > 0;
  if (blocked) return new XapiError('VDI_IN_USE', [ref, op]);
  const busy = vbds.find((v) => currentOperations(v).length > 0);
  if (busy && op !== 'data_destroy') {
    const [task, vbdOp] = currentOperations(busy)[0];
    return new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VDI', ref, vbdOp, task]);
  }
  // 3. the SR's capabilities
  const feature = FEATURE[op];
  if (feature && !Object.prototype.hasOwnProperty.call(featuresOf(emu, String(srRec?.type ?? '')), feature)) {
    return new XapiError('SR_OPERATION_NOT_SUPPORTED', [sr]);
  }
  if (rec.type === 'cbt_metadata' && NOT_FOR_CBT_METADATA.has(op)) return new XapiError('VDI_INCOMPATIBLE_TYPE', [ref, 'cbt_metadata']);
  if (rec.cbt_enabled === true && (op === 'mirror' || op === 'set_on_boot')) return new XapiError('VDI_CBT_ENABLED', [ref]);
  const checkDestroy = (): XapiError | null => {
    if (srRec?.type === 'udev') return new XapiError('VDI_IS_A_PHYSICAL_DEVICE', [ref]);
    if (srRec?.is_tools_sr === true) return new XapiError('SR_OPERATION_NOT_SUPPORTED', [sr]);
    if (rec.type === 'rrd') return new XapiError('VDI_HAS_RRDS', [ref]);
    return null;
  };
  const resetOnBoot = rec.on_boot === 'reset';
  switch (op) {
    case 'forget':
      return rec.type === 'rrd' ? new XapiError('VDI_HAS_RRDS', [ref]) : null;
    case 'destroy':
    case 'revert_from':
      return checkDestroy();
    case 'data_destroy':
      if (rec.is_a_snapshot !== true) return new XapiError('OPERATION_NOT_ALLOWED', [`VDI is not a snapshot: ${ref}`]);
      if (rec.cbt_enabled !== true) return new XapiError('VDI_NO_CBT_METADATA', [ref]);
      return checkDestroy();
    case 'snapshot':
      if (rec.sharable === true) return new XapiError('VDI_IS_SHARABLE', [ref]);
      if (resetOnBoot) return new XapiError('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', []);
      if (ops.some(([, o]) => o === 'copy')) return new XapiError('OPERATION_NOT_ALLOWED', ['Snapshot operation not allowed during copy.']);
      return null;
    case 'copy':
      if (resetOnBoot) return new XapiError('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', []);
      if (rec.type === 'ha_statefile' || rec.type === 'redo_log') {
        return new XapiError('OPERATION_NOT_ALLOWED', ["VDI containing HA statefile or redo log cannot be copied (check the VDI's allowed operations)."]);
      }
      return null;
    case 'enable_cbt':
    case 'disable_cbt':
      if (rec.is_a_snapshot === true) return new XapiError('OPERATION_NOT_ALLOWED', [`VDI is a snapshot: ${ref}`]);
      if (rec.type !== 'user' && rec.type !== 'system') return new XapiError('VDI_INCOMPATIBLE_TYPE', [ref, String(rec.type)]);
      if (resetOnBoot) return new XapiError('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', []);
      return null;
    case 'revert_to':
      return rec.is_a_snapshot === true ? null : new XapiError('ONLY_REVERT_SNAPSHOT', []);
    default:
      return null;
  }
}

registerOperations('VDI', { allOps: ALL_OPS, check: (emu, ref, rec, op) => vdiCheck(emu, ref, rec, op), order: ocamlSetOrder });

// ---- helpers ----

function vdiRec(call: Call, vdi: string): Rec {
  return recordOf(call.emu, 'VDI', vdi);
}

/** Xapi_vdi_helpers.assert_managed */
function assertManaged(call: Call, vdi: string): void {
  if (vdiRec(call, vdi).managed !== true) throw new XapiError('VDI_NOT_MANAGED', [vdi]);
}

/** The SR of a VDI and the marks of an operation on both (with_sr_andor_vdi). */
function marks(call: Call, vdi: string, srOp: string | null, vdiOp: string | null): Mark[] {
  const sr = String(vdiRec(call, vdi).SR);
  const out: Mark[] = [];
  if (srOp) out.push({ cls: 'SR', ref: sr, op: srOp });
  if (vdiOp) out.push({ cls: 'VDI', ref: vdi, op: vdiOp });
  return out;
}

/** forward_vdi_op: the VDI's SR must be attached somewhere. */
const forward = (call: Call, vdi: string) => choosePbd(call.emu, String(vdiRec(call, vdi).SR));

/** xapi_vdi.ensure_vdi_not_on_running_vm */
function ensureNotOnRunningVm(call: Call, vdi: string): void {
  for (const vbd of vdiRec(call, vdi).VBDs as string[]) {
    const vm = String(call.emu.db.get('VBD', vbd)?.VM);
    const ps = call.emu.db.get('VM', vm)?.power_state;
    if (ps !== undefined && ps !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'halted', String(ps).toLowerCase()]);
  }
}

export interface VdiCreateArgs {
  name_label: string;
  name_description: string;
  SR: string;
  virtual_size: number;
  type: string;
  sharable: boolean;
  read_only: boolean;
  other_config: Record<string, string>;
  xenstore_data: Record<string, string>;
  sm_config: Record<string, string>;
  tags: string[];
}

/** Xapi_vdi.create (the local part, the SR already marked): the disk, then the fields SM does not
 * keep (other_config, sharable, tags, xenstore_data). */
async function createLocal(call: Call, a: VdiCreateArgs): Promise<string> {
  const { emu } = call;
  if (a.type === 'cbt_metadata') throw new XapiError('VDI_INCOMPATIBLE_TYPE', ['', 'cbt_metadata']);
  assertPbdPlugged(emu, a.SR);
  const ref = await smVdiCreate(srCtx(emu, a.SR), {
    name_label: a.name_label, name_description: a.name_description, virtual_size: a.virtual_size, type: a.type,
    read_only: a.read_only, sm_config: a.sm_config ?? {},
  });
  emu.db.update('VDI', ref, { other_config: a.other_config ?? {}, sharable: a.sharable, tags: a.tags ?? [], xenstore_data: a.xenstore_data ?? {} });
  updateAllowedOperations(emu, 'VDI', ref);
  return ref;
}

/** VDI.create as an API call: the SR marked vdi_create meanwhile. For the HTTP handlers too
 * (/import_raw_vdi with sr_id creates its VDI this way). */
export async function createVdi(call: Call, a: VdiCreateArgs): Promise<string> {
  if (!call.emu.db.has('SR', a.SR)) throw new XapiError('HANDLE_INVALID', ['SR', a.SR]);
  return withOperation(call, 'SR', a.SR, 'vdi_create', () => {
    choosePbd(call.emu, a.SR);
    return createLocal(call, a);
  });
}

/** The destroy of Xapi_vdi.destroy_and_data_destroy_common (the marks already taken). */
async function destroyLocal(call: Call, vdi: string): Promise<void> {
  const { emu } = call;
  const rec = vdiRec(call, vdi);
  const sr = String(rec.SR);
  assertPbdPlugged(emu, sr);
  assertManaged(call, vdi);
  const vbds = [...(rec.VBDs as string[])];
  if (vbds.some((v) => {
    const b = emu.db.get('VBD', v);
    return b?.currently_attached === true || b?.reserved === true;
  })) throw new XapiError('VDI_IN_USE', [vdi, 'destroy']);
  await smVdiDelete(srCtx(emu, sr), vdi);
  if (emu.db.has('VDI', vdi)) emu.db.destroy('VDI', vdi);
  for (const v of vbds) emu.db.destroy('VBD', v);
  for (const [vm, row] of emu.db.table('VM')) if (row.rec.suspend_VDI === vdi) emu.db.update('VM', vm, { suspend_VDI: NULL_REF });
}

/** Copies a VDI's contents into another (Sm_fs_ops.copy_vdi): blocks no file of the source holds are
 * skipped when the destination is new; with a base, only blocks that differ from it are written. */
async function copyData(call: Call, src: string, dst: string, opts: { base?: string; dstIsNew: boolean }): Promise<void> {
  const { emu } = call;
  const s = await openVdi(emu, src, { readOnly: true });
  const closers = [s];
  try {
    const d = await openVdi(emu, dst, { readOnly: false });
    closers.push(d);
    const b = opts.base ? await openVdi(emu, opts.base, { readOnly: true }) : null;
    if (b) closers.push(b);
    const size = s.virtualSize;
    const blocks = Math.ceil(size / BLOCK_SIZE);
    let lastProgress = 0;
    for (let i = 0; i < blocks; i++) {
      const off = i * BLOCK_SIZE;
      const n = Math.min(BLOCK_SIZE, size - off);
      if (opts.dstIsNew && !b && s.hasData && !s.hasData(i)) continue;
      const data = await s.read(off, n);
      if (b) {
        const bn = Math.max(0, Math.min(n, b.virtualSize - off));
        const base = bn > 0 ? await b.read(off, bn) : Buffer.alloc(0);
        const same = bn === n ? data.equals(base) : data.subarray(0, bn).equals(base) && isZero(data.subarray(bn));
        if (same) continue;
      } else if (opts.dstIsNew && isZero(data)) continue;
      await d.write(off, data);
      // simulated transfer time: 200 MiB/s
      await emu.clock.sleep(n / (200 * 1024 * 1024));
      const progress = Math.floor(((i + 1) / blocks) * 100) / 100;
      if (progress - lastProgress >= 0.05 && emu.db.get('task', call.task)?.status === 'pending') {
        lastProgress = progress;
        emu.db.update('task', call.task, { progress });
      }
    }
    await d.flush();
  } finally {
    for (const c of closers.reverse()) await c.close().catch(() => undefined);
  }
  await smVdiUpdate(srCtx(emu, String(emu.db.get('VDI', dst)!.SR)), dst).catch(() => undefined);
}

/** storage_smapiv1 snapshot_and_clone + xapi_vdi.snapshot_and_clone (the marks already taken). */
async function snapshotLocal(call: Call, vdi: string, driverParams: Record<string, string>, clone: boolean): Promise<string> {
  const { emu } = call;
  const src = vdiRec(call, vdi);
  const sr = String(src.SR);
  assertPbdPlugged(emu, sr);
  assertManaged(call, vdi);
  const kind = driverParams.type === 'single' || driverParams.type === 'internal' ? driverParams.type : 'double';
  const UNIMPLEMENTED = new XapiError('UNIMPLEMENTED_IN_SM_BACKEND', [sr]);
  let created: string;
  try {
    created = await smVdiSnapshot(srCtx(emu, sr), vdi, { clone, kind, onUnimplemented: () => UNIMPLEMENTED });
  } catch (e) {
    if (e !== UNIMPLEMENTED || !clone) throw e;
    return cloneByCopy(call, vdi);
  }
  const s = vdiRec(call, vdi);
  const sm = { ...(emu.db.get('VDI', created)!.sm_config as Record<string, string>) };
  if (driverParams.base_mirror !== undefined) sm.base_mirror = driverParams.base_mirror;
  emu.db.update('VDI', created, {
    name_label: s.name_label, name_description: s.name_description, snapshot_time: xapiDate(emu.clock.now()),
    is_a_snapshot: !clone, sm_config: sm,
  });
  await smVdiUpdate(srCtx(emu, sr), created);
  emu.db.update('VDI', created, {
    type: s.type, sharable: s.sharable, other_config: { ...(s.other_config as object) }, xenstore_data: { ...(s.xenstore_data as object) },
    on_boot: s.on_boot, allow_caching: s.allow_caching, tags: [...(s.tags as string[])],
    ...(clone ? {} : { is_a_snapshot: true, snapshot_of: vdi }),
  });
  updateAllowedOperations(emu, 'VDI', created);
  return created;
}

/** VDI.clone of a disk the SM cannot clone (raw): a new VDI and a copy, with the SR and VDI
 * unmarked meanwhile so the copy does not lock them. */
async function cloneByCopy(call: Call, vdi: string): Promise<string> {
  const { emu } = call;
  const a = vdiRec(call, vdi);
  const sr = String(a.SR);
  const created = await createLocal(call, {
    name_label: String(a.name_label), name_description: String(a.name_description), SR: sr, virtual_size: Number(a.virtual_size),
    type: String(a.type), sharable: Boolean(a.sharable), read_only: Boolean(a.read_only), other_config: { ...(a.other_config as object) } as Record<string, string>,
    xenstore_data: { ...(a.xenstore_data as object) } as Record<string, string>, sm_config: {}, tags: [],
  });
  for (const [cls, ref] of [['SR', sr], ['VDI', vdi]] as const) {
    const r = emu.db.get(cls, ref);
    if (!r) continue;
    const ops = { ...(r.current_operations as Record<string, string>) };
    delete ops[call.task];
    emu.db.update(cls, ref, { current_operations: ops });
    updateAllowedOperations(emu, cls, ref);
  }
  try {
    await copyData(call, vdi, created, { dstIsNew: true });
  } catch (e) {
    await destroyLocal(call, created).catch(() => undefined);
    throw e;
  }
  updateAllowedOperations(emu, 'VDI', created);
  return created;
}

type IntroduceArgs = [uuid: string, name_label: string, name_description: string, SR: string, type: string, sharable: boolean,
  read_only: boolean, other_config: Record<string, string>, location: string, xenstore_data: Record<string, string>,
  sm_config: Record<string, string>, managed: boolean, virtual_size: number, physical_utilisation: number,
  metadata_of_pool: string, is_a_snapshot: boolean, snapshot_time: string, snapshot_of: string, cbt_enabled: boolean];

/** Xapi_vdi.internal_db_introduce: the record only. */
function introduceDbOnly(call: Call, a: IntroduceArgs): string {
  const [uuid, name_label, name_description, SR, type, sharable, read_only, other_config, location, xenstore_data, sm_config,
    managed, virtual_size, physical_utilisation, metadata_of_pool, is_a_snapshot, snapshot_time, snapshot_of, cbt_enabled] = a;
  if (!isUuid(uuid)) throw new XapiError('UUID_INVALID', ['VDI', uuid]);
  return dbIntroduce(call.emu, SR, {
    uuid, location, name_label, name_description, virtual_size, physical_utilisation, read_only, managed, hidden: false,
    parent: null, sm_config, type,
  }, { sharable, other_config, xenstore_data, sm_config, metadata_of_pool, is_a_snapshot, snapshot_time, snapshot_of, cbt_enabled });
}

// ---- messages ----

const internalSetter = (field: string) => (call: Call, self: string, value: unknown) => {
  assertSmSession(call, String(vdiRec(call, self).SR));
  call.emu.db.update('VDI', self, { [field]: value });
};

// Xapi_vdi._get_nbd_info: one entry per IP of each PIF on a network whose purpose is nbd or
// insecure_nbd, on each host that has the VDI's SR attached; [] without such a network (the
// default: xapi adds none). The port is that of the host's NBD listener (10809 unless the server
// was told otherwise); the certificate is the host's, as Host.get_server_certificate gives it.
registerProvider('VDI', {
  async get_nbd_info(call: Call, self: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'VDI', self);
    if (rec.type === 'cbt_metadata') throw new XapiError('VDI_INCOMPATIBLE_TYPE', [self, 'cbt_metadata']);
    const nbdNetworks = new Set<string>();
    for (const [ref, row] of emu.db.table('network')) {
      const purpose = row.rec.purpose as string[];
      if (purpose.includes('nbd') || purpose.includes('insecure_nbd')) nbdNetworks.add(ref);
    }
    if (nbdNetworks.size === 0) return [];
    const exportname = `/${String(rec.uuid)}?session_id=${call.session}`;
    const out: Record<string, unknown>[] = [];
    for (const pbd of recordOf(emu, 'SR', String(rec.SR)).PBDs as string[]) {
      const p = emu.db.get('PBD', pbd);
      if (p?.currently_attached !== true) continue;
      const host = String(p.host);
      const ips = (recordOf(emu, 'host', host).PIFs as string[]).flatMap((pif) => {
        const r = emu.db.get('PIF', pif);
        if (!r || r.currently_attached !== true || !nbdNetworks.has(String(r.network))) return [];
        const v6 = (r.IPv6 as string[]).filter((a) => a !== '');
        return r.IP ? [String(r.IP), ...v6] : v6;
      });
      if (ips.length === 0) continue;
      // an emulator without its servers (embedded without listeners) has no NBD to offer
      const listener = nbdListenerOf(emu, host);
      if (!listener) throw new XapiError('NOT_IMPLEMENTED', ['VDI.get_nbd_info without an NBD server']);
      const { cert } = await listener.tls();
      const subject = certificateSubject(cert) ?? String(recordOf(emu, 'host', host).hostname);
      for (const address of ips) out.push({ address, port: listener.port, cert, exportname, subject });
    }
    return out;
  },
});

registerProvider('VDI', {
  create(call, args: VdiCreateArgs) {
    return createVdi(call, args);
  },

  async destroy(call, self: string) {
    await withOperations(call, marks(call, self, 'vdi_destroy', 'destroy'), () => {
      forward(call, self);
      return destroyLocal(call, self);
    });
  },

  snapshot(call, vdi: string, driver_params: Record<string, string>) {
    return withOperations(call, marks(call, vdi, 'vdi_snapshot', 'snapshot'), () => {
      forward(call, vdi);
      return snapshotLocal(call, vdi, driver_params, false);
    });
  },

  clone(call, vdi: string, driver_params: Record<string, string>) {
    return withOperations(call, marks(call, vdi, 'vdi_clone', 'clone'), () => {
      forward(call, vdi);
      return snapshotLocal(call, vdi, driver_params, true);
    });
  },

  async resize(call, vdi: string, size: number) {
    await withOperations(call, marks(call, vdi, 'vdi_resize', 'resize'), async () => {
      forward(call, vdi);
      const sr = String(vdiRec(call, vdi).SR);
      assertPbdPlugged(call.emu, sr);
      assertManaged(call, vdi);
      const n = await smVdiResize(srCtx(call.emu, sr), vdi, size);
      call.emu.db.update('VDI', vdi, { virtual_size: n });
    });
  },

  async resize_online(call, vdi: string, size: number) {
    await withOperations(call, marks(call, vdi, 'vdi_resize', 'resize_online'), async () => {
      forward(call, vdi);
      const sr = String(vdiRec(call, vdi).SR);
      assertPbdPlugged(call.emu, sr);
      assertManaged(call, vdi);
      const n = await smVdiResize(srCtx(call.emu, sr), vdi, size);
      call.emu.db.update('VDI', vdi, { virtual_size: n });
    });
  },

  async copy(call, vdi: string, sr: string, base_vdi: string, into_vdi: string) {
    const { emu } = call;
    return withOperation(call, 'VDI', vdi, 'copy', async () => {
      forward(call, vdi);
      assertManaged(call, vdi);
      const src = vdiRec(call, vdi);
      let created: string | null = null;
      try {
        let dst: string;
        if (into_vdi !== NULL_REF && emu.db.has('VDI', into_vdi)) {
          dst = into_vdi;
        } else {
          if (!emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
          dst = created = await createVdi(call, {
            name_label: String(src.name_label), name_description: String(src.name_description), SR: sr,
            virtual_size: Number(src.virtual_size), type: String(src.type), sharable: Boolean(src.sharable),
            // CA-64962: always writable, so that a read-only source can be copied
            read_only: false, other_config: { ...(src.other_config as Record<string, string>) },
            xenstore_data: { ...(src.xenstore_data as Record<string, string>) }, sm_config: {}, tags: [...(src.tags as string[])],
          });
          if (src.on_boot === 'reset') emu.db.update('VDI', dst, { on_boot: 'reset' });
          emu.db.update('VDI', dst, { allow_caching: src.allow_caching });
        }
        const d = vdiRec(call, dst);
        if (d.read_only === true) throw new XapiError('VDI_READONLY', [dst]);
        if (Number(d.virtual_size) < Number(src.virtual_size)) throw new XapiError('VDI_TOO_SMALL', [dst, String(src.virtual_size)]);
        const base = base_vdi !== NULL_REF && emu.db.has('VDI', base_vdi) ? base_vdi : undefined;
        await copyData(call, vdi, dst, { base, dstIsNew: created !== null });
        updateAllowedOperations(emu, 'VDI', dst);
        return dst;
      } catch (e) {
        if (created && emu.db.has('VDI', created)) {
          await withOperations(call, marks(call, created, 'vdi_destroy', 'destroy'), () => destroyLocal(call, created!)).catch(() => undefined);
        }
        throw e;
      }
    });
  },

  introduce(call, uuid: string, name_label: string, name_description: string, SR: string, type: string, sharable: boolean,
    _read_only: boolean, other_config: Record<string, string>, location: string, xenstore_data: Record<string, string>,
    sm_config: Record<string, string>) {
    const { emu } = call;
    return withOperation(call, 'SR', SR, 'vdi_introduce', async () => {
      choosePbd(emu, SR);
      assertPbdPlugged(emu, SR);
      for (const v of emu.db.get('SR', SR)!.VDIs as string[]) {
        const r = emu.db.get('VDI', v)!;
        if (r.location === location && r.uuid !== uuid) throw new XapiError('LOCATION_NOT_UNIQUE', [SR, location]);
      }
      const ref = await smVdiIntroduce(srCtx(emu, SR), { uuid, location, smConfig: sm_config });
      emu.db.update('VDI', ref, { other_config, xenstore_data, sharable, type });
      if (name_label !== '') emu.db.update('VDI', ref, { name_label });
      if (name_description !== '') emu.db.update('VDI', ref, { name_description });
      updateAllowedOperations(emu, 'VDI', ref);
      return ref;
    });
  },

  pool_introduce(call, ...args: IntroduceArgs) {
    return introduceDbOnly(call, args);
  },

  db_introduce(call, ...args: IntroduceArgs) {
    assertSmSession(call, args[3]);
    return introduceDbOnly(call, args);
  },
  db_forget(call, vdi: string) {
    assertSmSession(call, String(vdiRec(call, vdi).SR));
    dbForget(call.emu, vdi);
  },

  async update(call, vdi: string) {
    await withOperation(call, 'VDI', vdi, 'update', async () => {
      forward(call, vdi);
      const sr = String(vdiRec(call, vdi).SR);
      assertPbdPlugged(call.emu, sr);
      await smVdiUpdate(srCtx(call.emu, sr), vdi);
    });
  },

  async forget(call, vdi: string) {
    await withOperation(call, 'VDI', vdi, 'forget', () => {
      call.emu.db.destroy('VDI', vdi);
    });
  },

  set_name_label(call, self: string, value: string) {
    forward(call, self);
    call.emu.db.update('VDI', self, { name_label: value });
  },
  set_name_description(call, self: string, value: string) {
    forward(call, self);
    call.emu.db.update('VDI', self, { name_description: value });
  },

  async set_on_boot(call, self: string, value: string) {
    ensureNotOnRunningVm(call, self);
    await withOperations(call, marks(call, self, 'vdi_set_on_boot', 'set_on_boot'), () => {
      forward(call, self);
      assertPbdPlugged(call.emu, String(vdiRec(call, self).SR));
      call.emu.db.update('VDI', self, { on_boot: value });
    });
  },

  set_allow_caching(call, self: string, value: boolean) {
    ensureNotOnRunningVm(call, self);
    call.emu.db.update('VDI', self, { allow_caching: value });
  },

  // SM's own setters
  set_sharable: internalSetter('sharable'),
  set_read_only: internalSetter('read_only'),
  set_managed: internalSetter('managed'),
  set_missing: internalSetter('missing'),
  set_virtual_size: internalSetter('virtual_size'),
  set_physical_utilisation: internalSetter('physical_utilisation'),
  set_is_a_snapshot: internalSetter('is_a_snapshot'),
  set_snapshot_of: internalSetter('snapshot_of'),
  set_snapshot_time: internalSetter('snapshot_time'),
  set_metadata_of_pool: internalSetter('metadata_of_pool'),
  set_cbt_enabled: internalSetter('cbt_enabled'),
});

// ---- changed block tracking (Xapi_vdi.enable_cbt, disable_cbt, list_changed_blocks, data_destroy) ----

/** Xapi_vdi.change_cbt_status: nothing to do when CBT already is as asked. */
async function changeCbtStatus(call: Call, vdi: string, enable: boolean): Promise<void> {
  const op = enable ? 'enable_cbt' : 'disable_cbt';
  await withOperations(call, marks(call, vdi, `vdi_${op}`, op), async () => {
    forward(call, vdi);
    const rec = vdiRec(call, vdi);
    if (rec.cbt_enabled === enable) return;
    const sr = String(rec.SR);
    assertPbdPlugged(call.emu, sr);
    await smVdiConfigureCbt(srCtx(call.emu, sr), vdi, enable);
  });
}

/** VBDs of the VDI (Xapi_vdi.wait_for_vbds_to_be_unplugged_and_destroyed looks at all of them). */
async function waitForVbdsGone(call: Call, vdi: string, seconds: number): Promise<void> {
  if ((vdiRec(call, vdi).VBDs as string[]).length === 0) return;
  await call.emu.clock.sleep(seconds);
  if ((vdiRec(call, vdi).VBDs as string[]).length > 0) throw new XapiError('VDI_IN_USE', [vdi, 'data_destroy']);
}

registerProvider('VDI', {
  enable_cbt(call: Call, self: string) {
    return changeCbtStatus(call, self, true);
  },

  disable_cbt(call: Call, self: string) {
    return changeCbtStatus(call, self, false);
  },

  list_changed_blocks(call: Call, vdi_from: string, vdi_to: string) {
    const { emu } = call;
    recordOf(emu, 'VDI', vdi_from);
    return withOperations(call, marks(call, vdi_to, 'vdi_list_changed_blocks', 'list_changed_blocks'), () => {
      forward(call, vdi_to);
      return smVdiListChangedBlocks(srCtx(emu, String(vdiRec(call, vdi_to).SR)), vdi_from, vdi_to);
    });
  },

  async data_destroy(call: Call, self: string) {
    const { emu } = call;
    await withOperations(call, marks(call, self, 'vdi_data_destroy', 'data_destroy'), async () => {
      forward(call, self);
      const type = String(vdiRec(call, self).type);
      if (type === 'cbt_metadata') return;
      // marked cbt_metadata first, so that no new VBD takes the VDI meanwhile (Xapi_vdi._data_destroy)
      emu.db.update('VDI', self, { type: 'cbt_metadata' });
      try {
        const sr = String(vdiRec(call, self).SR);
        assertPbdPlugged(emu, sr);
        assertManaged(call, self);
        await waitForVbdsGone(call, self, 4);
        await smVdiDataDestroy(srCtx(emu, sr), self);
        for (const v of [...(vdiRec(call, self).VBDs as string[])]) emu.db.destroy('VBD', v);
      } catch (e) {
        if (emu.db.has('VDI', self)) emu.db.update('VDI', self, { type });
        throw e;
      }
    });
  },
});
