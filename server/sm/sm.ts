// The SM layer between xapi and the drivers: what SMAPIv1's SRCommand and the SM base classes do
// around a driver call (SR lock, VDI._db_introduce / _db_update / _db_forget, SR._db_update, kicking
// the GC), and what xapi's storage_smapiv1.ml and sm_exec.ml add (picking the PBD, turning SM
// faults into API errors). The API providers (server/api/SR.ts, VDI.ts, PBD.ts) call these after
// their own checks.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { EPOCH } from '../../storage/defaults.js';
import { XapiError } from '../dispatch/errors.js';
import { updateAllowedOperations } from '../api/operations.js';
import { driverFor, smError, toXapiError, withSrLock, type DiskInfo, type SrCtx, type SrDriver, type SrStat, type VdiIo, type SnapshotKind } from './driver.js';
import { smOf } from './capabilities.js';
import { isUuid, srPath } from './paths.js';
import { attachVdi, pauseVdis } from './attachments.js';
import { kickGc } from './gc.js';
import { journalCreate, journalName, journalRemove, journalsOf, type Journal } from './journal.js';
import { resolveJournal } from './recovery.js';
import { smLog } from './smlog.js';
import { BLOCK_SIZE, Vhd } from '../../storage/vhd/index.js';
import { cbtDisable, cbtEnable, cbtListChangedBlocks, cbtLogUuids, cbtMark, logExists } from './cbt.js';

// ---- PBDs and contexts ----

/** The SR's record, or HANDLE_INVALID as xapi's lookups give for a ref that names nothing. */
function srRecord(emu: Emulator, sr: string): Rec {
  const rec = emu.db.get('SR', sr);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  return rec;
}

/** Helpers.is_sr_shared: more than one PBD (not the `shared` field). */
const hasManyPbds = (emu: Emulator, sr: string) => (emu.db.get('SR', sr)!.PBDs as string[]).length > 1;

/**
 * The PBD an SR operation runs through (message_forwarding's choose_pbd_for_sr): among the
 * attached PBDs (all with considerUnplugged), the master's first when the SR has several; none
 * is SR_HAS_NO_PBDS.
 */
export function choosePbd(emu: Emulator, sr: string, considerUnplugged = false): string {
  const rec = srRecord(emu, sr);
  const pbds = (rec.PBDs as string[]).filter((p) => considerUnplugged || emu.db.get('PBD', p)?.currently_attached === true);
  let ordered = pbds;
  if (hasManyPbds(emu, sr)) {
    const onMaster = pbds.filter((p) => emu.db.get('PBD', p)?.host === emu.master);
    ordered = onMaster.length ? [...onMaster, ...pbds.filter((p) => !onMaster.includes(p))] : [];
  }
  if (!ordered.length) throw new XapiError('SR_HAS_NO_PBDS', [sr]);
  return ordered[0];
}

/** Sm.assert_pbd_is_plugged on the host the operation was forwarded to. */
export function assertPbdPlugged(emu: Emulator, sr: string): void {
  choosePbd(emu, sr, false);
}

export function driverOf(emu: Emulator, sr: string): SrDriver {
  const type = String(srRecord(emu, sr).type);
  const d = driverFor(type);
  if (d) return d;
  // a type xapi knows no plugin for cannot even be attached; one with an SM record but no
  // emulated driver is honestly not implemented
  if (!smOf(emu, type)) throw new XapiError('SR_UNKNOWN_DRIVER', [type]);
  throw new XapiError('NOT_IMPLEMENTED', [`SR type ${type} (no emulated SM driver)`]);
}

/** The context of an SM call on an SR through one PBD (by default the one choosePbd picks). */
export function srCtx(emu: Emulator, sr: string, pbd?: string | null): SrCtx {
  const rec = emu.db.get('SR', sr);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  const p = pbd === undefined ? choosePbd(emu, sr) : pbd;
  const dconf = p ? ({ ...(emu.db.get('PBD', p)?.device_config as Record<string, string>) }) : {};
  const uuid = String(rec.uuid);
  return { emu, sr, uuid, type: String(rec.type).toLowerCase(), rec, dconf, path: srPath(emu, uuid) };
}

const ready = new WeakMap<Emulator, Promise<void>>();

/** Storage start-up work (index.ts startSm): SM calls wait for it. */
export function setReady(emu: Emulator, p: Promise<void>): void {
  ready.set(emu, p.catch(() => undefined));
}

export function smReady(emu: Emulator): Promise<void> {
  return ready.get(emu) ?? Promise.resolve();
}

/** Runs fn once the storage start-up work is done, before any SM call that comes after this one
 * (they wait for fn too): what must see the SRs as the start left them, untouched by clients. */
export function afterStorageStartup<T>(emu: Emulator, fn: () => Promise<T>): Promise<T> {
  const p = smReady(emu).then(fn);
  setReady(emu, p.then(() => undefined));
  return p;
}

/** Runs a driver call under the SR lock, with SM faults turned into API errors. */
export async function smCall<T>(ctx: SrCtx, fn: () => Promise<T>, errCtx: { vdi?: string; onUnimplemented?: () => XapiError; startup?: boolean } = {}): Promise<T> {
  try {
    if (!errCtx.startup) await smReady(ctx.emu);
    return await withSrLock(ctx.emu, ctx.uuid, fn);
  } catch (e) {
    throw toXapiError(e, { sr: ctx.sr, ...errCtx });
  }
}

// ---- records (SM's calls back into xapi) ----

function applySmConfig(cur: Record<string, string>, overrides: Record<string, string | null>): Record<string, string> {
  const out = { ...cur };
  for (const [k, v] of Object.entries(overrides)) {
    if (v) out[k] = v;
    else delete out[k];
  }
  return out;
}

/** VDI.db_introduce (xapi_vdi.introduce_dbonly): a new record for a disk SM found or made. */
export function dbIntroduce(emu: Emulator, sr: string, d: DiskInfo, extra: Rec = {}): string {
  for (const v of emu.db.get('SR', sr)!.VDIs as string[]) {
    if (emu.db.get('VDI', v)?.location === d.location) throw new XapiError('LOCATION_NOT_UNIQUE', [sr, d.location]);
  }
  const uuid = d.uuid || emu.ids.uuid();
  if (!isUuid(uuid)) throw new XapiError('UUID_INVALID', ['VDI', uuid]);
  const ref = emu.ids.ref();
  emu.db.create('VDI', ref, {
    uuid,
    name_label: d.name_label,
    name_description: d.name_description,
    allowed_operations: [],
    current_operations: {},
    SR: sr,
    virtual_size: d.virtual_size,
    physical_utilisation: d.physical_utilisation,
    type: d.type ?? 'user',
    sharable: false,
    read_only: d.read_only,
    other_config: {},
    storage_lock: false,
    location: d.location,
    managed: d.managed,
    missing: false,
    parent: NULL_REF,
    xenstore_data: {},
    sm_config: applySmConfig({}, d.sm_config),
    is_a_snapshot: false,
    snapshot_of: NULL_REF,
    snapshot_time: EPOCH,
    tags: [],
    allow_caching: false,
    on_boot: 'persist',
    metadata_of_pool: NULL_REF,
    metadata_latest: false,
    is_tools_iso: d.sm_config['xs-tools'] === 'true',
    cbt_enabled: false,
    ...extra,
  });
  updateAllowedOperations(emu, 'VDI', ref);
  return ref;
}

/** VDI._db_update: what SM knows of an existing disk. */
export function dbUpdate(emu: Emulator, vdi: string, d: DiskInfo): void {
  const rec = emu.db.get('VDI', vdi);
  if (!rec) return;
  emu.db.update('VDI', vdi, {
    virtual_size: d.virtual_size,
    physical_utilisation: d.physical_utilisation,
    read_only: d.read_only,
    sm_config: applySmConfig(rec.sm_config as Record<string, string>, d.sm_config),
  });
}

/** VDI.db_forget. An empty CD drive's VBD stays, emptied (CA-419840). */
export function dbForget(emu: Emulator, vdi: string): void {
  const rec = emu.db.get('VDI', vdi);
  if (!rec) return;
  const [vbd] = rec.VBDs as string[];
  if (vbd && emu.db.get('VBD', vbd)?.type === 'CD') emu.db.update('VBD', vbd, { VDI: NULL_REF, empty: true });
  emu.db.destroy('VDI', vdi);
}

export function vdiByLocation(emu: Emulator, sr: string, location: string): string | undefined {
  for (const v of emu.db.get('SR', sr)?.VDIs as string[] ?? []) if (emu.db.get('VDI', v)?.location === location) return v;
  return undefined;
}

/** SR._db_update. */
export function setSrStat(emu: Emulator, sr: string, s: SrStat): void {
  if (!emu.db.has('SR', sr)) return;
  emu.db.update('SR', sr, { physical_size: s.physical_size, physical_utilisation: s.physical_utilisation, virtual_allocation: s.virtual_allocation });
}

/** FileSR._update: the sizes now, the virtual allocation moved by `delta`. It comes after the
 * disk operation is done and recorded, so a failure to read the sizes only leaves them stale. */
async function srUpdateDelta(ctx: SrCtx, delta: number): Promise<void> {
  if (!ctx.emu.db.has('SR', ctx.sr)) return;
  const valloc = Number(ctx.emu.db.get('SR', ctx.sr)!.virtual_allocation) + delta;
  try {
    const s = await driverOf(ctx.emu, ctx.sr).update(ctx);
    setSrStat(ctx.emu, ctx.sr, { ...s, virtual_allocation: valloc });
  } catch (e) {
    ctx.emu.db.update('SR', ctx.sr, { virtual_allocation: valloc });
    smLog(ctx.emu, `SR ${ctx.uuid}: sr_update failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * Runs a multi-step operation on a VHD-based SR under a journal (SM's journaler): the intent is
 * on disk before `fn` touches a file, and goes once `fn`'s files are whole and its records
 * committed. If `fn` fails, the journal is resolved at once, as start-up would resolve it after a
 * crash, so a failed operation leaves the SR as consistent as a finished one.
 */
async function journaled<T>(ctx: SrCtx, j: Journal, fn: () => Promise<T>): Promise<T> {
  if (!driverOf(ctx.emu, ctx.sr).vhdBased) return fn();
  try {
    await journalCreate(ctx.path, j);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    // an earlier operation on the disk whose resolution failed: resolve it first
    const [old] = (await journalsOf(ctx.path, [journalName(j.type, j.id)]));
    if (old) smLog(ctx.emu, `SR ${ctx.uuid}: earlier ${old.type} of ${old.id} ${await resolveJournal(ctx, old)}`);
    await journalCreate(ctx.path, j);
  }
  let out: T;
  try {
    out = await fn();
  } catch (e) {
    ctx.emu.db.flush();
    await resolveJournal(ctx, j).catch((r) => smLog(ctx.emu, `SR ${ctx.uuid}: ${j.type} ${j.id} left journaled: ${r instanceof Error ? r.message : String(r)}`));
    throw e;
  }
  ctx.emu.db.flush();
  await journalRemove(ctx.path, j.type, j.id);
  return out;
}

// ---- SR operations ----

/** journaled, for the GC's own multi-step operations */
export { journaled as withJournal };

export async function smSrCreate(ctx: SrCtx, physicalSize: number): Promise<void> {
  const d = driverOf(ctx.emu, ctx.sr);
  await smCall(ctx, () => d.create(ctx, physicalSize));
}

export async function smSrDelete(ctx: SrCtx): Promise<void> {
  const d = driverOf(ctx.emu, ctx.sr);
  if (d.vhdBased) {
    // FileSR.delete runs the GC first (cleanup.gc_force)
    const { runSrGc } = await import('./gc.js');
    await runSrGc(ctx.emu, ctx.sr, { ctx });
  }
  await smCall(ctx, () => d.delete(ctx));
}

export async function smSrAttach(ctx: SrCtx, opts: { startup?: boolean } = {}): Promise<void> {
  const d = driverOf(ctx.emu, ctx.sr);
  await smCall(ctx, () => d.attach(ctx), { startup: opts.startup });
}

export async function smSrDetach(ctx: SrCtx): Promise<void> {
  const d = driverOf(ctx.emu, ctx.sr);
  await smCall(ctx, () => d.detach(ctx));
}

/** sr_update (SR.update, and xapi's SR.stat). FileSR.update refreshes the physical sizes and keeps
 * the virtual allocation it maintains. */
export async function smSrUpdate(ctx: SrCtx): Promise<void> {
  const d = driverOf(ctx.emu, ctx.sr);
  const s = await smCall(ctx, () => d.update(ctx));
  const valloc = d.vhdBased ? Number(ctx.emu.db.get('SR', ctx.sr)?.virtual_allocation ?? 0) : s.virtual_allocation;
  setSrStat(ctx.emu, ctx.sr, { ...s, virtual_allocation: valloc });
}

/**
 * sr_scan (SR.scan: SM's ScanRecord.synchronise): new disks are introduced, records of disks that
 * are gone forgotten, changed ones updated; then xapi sets the SR's sizes, its virtual_allocation
 * being the sum of the virtual sizes of all its VDI records (Xapi_sr.scan).
 */
export async function smSrScan(ctx: SrCtx): Promise<void> {
  const { emu, sr } = ctx;
  const d = driverOf(emu, sr);
  await smCall(ctx, async () => {
    const res = await d.scan(ctx);
    const byLocation = new Map<string, string>();
    for (const v of emu.db.get('SR', sr)!.VDIs as string[]) byLocation.set(String(emu.db.get('VDI', v)!.location), v);
    const seen = new Set<string>();
    for (const disk of res.disks) {
      seen.add(disk.location);
      const ref = byLocation.get(disk.location);
      if (!ref) {
        dbIntroduce(emu, sr, disk);
        continue;
      }
      const r = emu.db.get('VDI', ref)!;
      const differs = r.read_only !== disk.read_only || r.virtual_size !== disk.virtual_size || r.physical_utilisation !== disk.physical_utilisation ||
        Object.entries(disk.sm_config).some(([k, v]) => (v ?? undefined) !== (r.sm_config as Record<string, string>)[k]);
      if (differs) dbUpdate(emu, ref, disk);
      if (r.missing) emu.db.update('VDI', ref, { missing: false });
    }
    const unreadable = new Set(res.unreadable ?? []);
    for (const [location, ref] of byLocation) {
      if (seen.has(location) || unreadable.has(location)) continue;
      if (res.keepGone) {
        const r = emu.db.get('VDI', ref)!;
        const label = String(r.name_label);
        emu.db.update('VDI', ref, { missing: true, name_label: label.startsWith('Old version of ') ? label : `Old version of ${label}` });
      } else if (d.vhdBased || d.types.includes('iso') || d.types.includes('udev')) {
        dbForget(emu, ref);
      }
    }
    if (d.vhdBased) {
      // FileSR.scan: a disk with a log has CBT enabled (a log alone is a cbt_metadata VDI, above)
      const logs = await cbtLogUuids(ctx);
      for (const v of emu.db.get('SR', sr)!.VDIs as string[]) {
        const r = emu.db.get('VDI', v)!;
        const on = logs.has(String(r.location));
        if (r.cbt_enabled !== on) emu.db.update('VDI', v, { cbt_enabled: on });
      }
    }
    let valloc = 0;
    for (const v of emu.db.get('SR', sr)!.VDIs as string[]) valloc += Number(emu.db.get('VDI', v)!.virtual_size);
    setSrStat(emu, sr, { ...res.stat, virtual_allocation: valloc });
    const oc = { ...(emu.db.get('SR', sr)!.other_config as Record<string, string>) };
    if ('dirty' in oc) {
      delete oc.dirty;
      emu.db.update('SR', sr, { other_config: oc });
    }
  });
  if (d.vhdBased) kickGc(emu, sr);
}

export async function smSrProbe(emu: Emulator, type: string, dconf: Record<string, string>, smConfig: Record<string, string>): Promise<string> {
  const d = driverFor(type);
  const sm = smOf(emu, type);
  if (!sm) throw new XapiError('SR_UNKNOWN_DRIVER', [type.toLowerCase()]);
  if (!d) throw new XapiError('NOT_IMPLEMENTED', [`SR type ${type} (no emulated SM driver)`]);
  if (!Object.prototype.hasOwnProperty.call(sm.rec.features, 'SR_PROBE')) {
    throw new XapiError('SR_BACKEND_FAILURE', ["Operation 'sr_probe' not supported by this SR type", '', '']);
  }
  try {
    return await d.probe(emu, type.toLowerCase(), dconf, smConfig);
  } catch (e) {
    // Smint.Not_implemented_in_backend escaping to the API as an exception name
    throw toXapiError(e, { onUnimplemented: () => new XapiError('INTERNAL_ERROR', ['Smint.Not_implemented_in_backend']) });
  }
}

// ---- VDI operations ----

export interface NewVdi {
  uuid?: string;
  name_label: string;
  name_description: string;
  virtual_size: number;
  type: string;
  read_only: boolean;
  sm_config: Record<string, string>;
}

/** vdi_create: the disk and its record (the fields SRCommand passes: name, type, read_only). The
 * record is committed once the file is whole, and never for a create that fails. */
export async function smVdiCreate(ctx: SrCtx, v: NewVdi): Promise<string> {
  const { emu, sr } = ctx;
  const d = driverOf(emu, sr);
  const uuid = v.uuid ?? emu.ids.uuid();
  const passThrough: Record<string, string> = {};
  for (const k of ['base_mirror', 'key_hash']) if (v.sm_config[k]) passThrough[k] = v.sm_config[k];
  return smCall(ctx, async () => {
    // a file already there is the driver's VDIExists, and not this create's to clean up
    const journal = d.vhdBased && isUuid(uuid) && !(await diskFileExists(ctx, uuid));
    const work = async () => {
      const disk = await d.vdiCreate(ctx, { uuid, size: v.virtual_size, smConfig: v.sm_config });
      const ref = dbIntroduce(emu, sr, { ...disk, sm_config: { ...disk.sm_config, ...passThrough } }, {
        name_label: v.name_label, name_description: v.name_description, type: v.type, read_only: v.read_only,
      });
      if (d.vhdBased) await srUpdateDelta(ctx, disk.virtual_size);
      return ref;
    };
    return journal ? journaled(ctx, { type: 'create', id: uuid, value: {} }, work) : work();
  });
}

async function diskFileExists(ctx: SrCtx, uuid: string): Promise<boolean> {
  for (const ext of ['vhd', 'raw']) if (await stat(join(ctx.path, `${uuid}.${ext}`)).catch(() => null)) return true;
  return false;
}

export async function smVdiDelete(ctx: SrCtx, vdi: string): Promise<void> {
  const { emu, sr } = ctx;
  const d = driverOf(emu, sr);
  const rec = emu.db.get('VDI', vdi)!;
  const location = String(rec.location);
  const journal: Journal | null = isUuid(location) ? { type: 'delete', id: location, value: {} } : null;
  await withPaused(emu, [String(rec.uuid)], () => smCall(ctx, async () => {
    const work = async () => {
      await d.vdiDelete(ctx, rec);
      dbForget(emu, vdi);
      if (d.vhdBased) await srUpdateDelta(ctx, -Number(rec.virtual_size));
    };
    await (journal ? journaled(ctx, journal, work) : work());
  }, { vdi }));
  if (d.vhdBased) kickGc(emu, sr);
}

/** vdi_snapshot / vdi_clone: returns the new VDI (the new leaf, or the base copy of a SINGLE one). */
export async function smVdiSnapshot(ctx: SrCtx, vdi: string, opts: { clone: boolean; kind: SnapshotKind; onUnimplemented?: () => XapiError }): Promise<string> {
  const { emu, sr } = ctx;
  const d = driverOf(emu, sr);
  return withPaused(emu, [String(emu.db.get('VDI', vdi)!.uuid)], () => smCall(ctx, async () => {
    const rec = emu.db.get('VDI', vdi)!;
    // the uuids the driver will take, known to the journal before any file is made
    const uuids = [emu.ids.uuid(), emu.ids.uuid()];
    const value: Record<string, string> = { base: uuids[0] };
    if (opts.kind === 'double') value.dst = uuids[1];
    const location = String(rec.location);
    if (!d.vhdBased || !isUuid(location)) return snapshotRecords(ctx, d, vdi, rec, opts, () => uuids.shift() ?? emu.ids.uuid());
    return journaled(ctx, { type: 'clone', id: location, value }, () => snapshotRecords(ctx, d, vdi, rec, opts, () => uuids.shift() ?? emu.ids.uuid()));
  }, { vdi, onUnimplemented: opts.onUnimplemented }));
}

async function snapshotRecords(ctx: SrCtx, d: SrDriver, vdi: string, rec: Rec, opts: { kind: SnapshotKind; clone: boolean }, newUuid: () => string): Promise<string> {
  const { emu, sr } = ctx;
  {
    const res = await d.vdiSnapshot(ctx, rec, opts, newUuid);
    let created = '';
    if (res.result !== res.base) created = dbIntroduce(emu, sr, res.result);
    if (res.base) {
      const baseRef = dbIntroduce(emu, sr, res.base);
      if (!created) created = baseRef;
    }
    dbUpdate(emu, vdi, { ...res.source, read_only: Boolean(rec.read_only), virtual_size: Number(rec.virtual_size), physical_utilisation: Number(rec.physical_utilisation) });
    // the new snapshot took the leaf's CBT log (VDI._cbt_snapshot)
    if (rec.cbt_enabled === true && res.result !== res.base && (await logExists(ctx, res.result.location))) emu.db.update('VDI', created, { cbt_enabled: true });
    if (d.vhdBased && opts.kind !== 'internal') await srUpdateDelta(ctx, Number(rec.virtual_size));
    return created;
  }
}

export async function smVdiResize(ctx: SrCtx, vdi: string, size: number): Promise<number> {
  const { emu, sr } = ctx;
  const d = driverOf(emu, sr);
  return withPaused(emu, [String(emu.db.get('VDI', vdi)!.uuid)], () => smCall(ctx, async () => {
    const rec = emu.db.get('VDI', vdi)!;
    const before = Number(rec.virtual_size);
    const work = async () => {
      const disk = await d.vdiResize(ctx, rec, size);
      dbUpdate(emu, vdi, { ...disk, read_only: Boolean(rec.read_only) });
      if (d.vhdBased) await srUpdateDelta(ctx, disk.virtual_size - before);
      return disk.virtual_size;
    };
    const location = String(rec.location);
    return isUuid(location) ? journaled(ctx, { type: 'resize', id: location, value: { size: String(size) } }, work) : work();
  }, { vdi, onUnimplemented: () => new XapiError('UNIMPLEMENTED_IN_SM_BACKEND', [sr]) }));
}

export async function smVdiIntroduce(ctx: SrCtx, req: { uuid: string; location: string; smConfig: Record<string, string> }): Promise<string> {
  const d = driverOf(ctx.emu, ctx.sr);
  const disk = await smCall(ctx, () => d.vdiIntroduce(ctx, req));
  const existing = vdiByLocation(ctx.emu, ctx.sr, disk.location);
  if (existing) {
    dbUpdate(ctx.emu, existing, disk);
    return existing;
  }
  return dbIntroduce(ctx.emu, ctx.sr, { ...disk, uuid: req.uuid || disk.uuid });
}

/** vdi_update / VDI.stat: the record refreshed from the disk. */
export async function smVdiUpdate(ctx: SrCtx, vdi: string): Promise<void> {
  const d = driverOf(ctx.emu, ctx.sr);
  await smCall(ctx, async () => {
    const rec = ctx.emu.db.get('VDI', vdi);
    if (!rec) return;
    dbUpdate(ctx.emu, vdi, await d.vdiStat(ctx, rec));
  }, { vdi });
}

// ---- changed block tracking (SMAPIv1 vdi_enable_cbt, vdi_disable_cbt, vdi_list_changed_blocks, vdi_data_destroy) ----

/** The disk of a VDI of a VHD SR, or SR_OPERATION_NOT_SUPPORTED for others. */
function cbtDisk(ctx: SrCtx, vdi: string): { d: SrDriver; rec: Rec; location: string } {
  const d = driverOf(ctx.emu, ctx.sr);
  const rec = ctx.emu.db.get('VDI', vdi);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['VDI', vdi]);
  if (!d.vhdBased) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [ctx.sr]);
  return { d, rec, location: String(rec.location) };
}

/** vdi_enable_cbt / vdi_disable_cbt (configure_blocktracking), the VDI paused meanwhile; the record's
 * cbt_enabled follows before I/O resumes. */
export async function smVdiConfigureCbt(ctx: SrCtx, vdi: string, enable: boolean): Promise<void> {
  const { emu } = ctx;
  const { rec, location } = cbtDisk(ctx, vdi);
  await withPaused(emu, [String(rec.uuid)], () => smCall(ctx, async () => {
    const r = emu.db.get('VDI', vdi)!;
    if ((r.sm_config as Record<string, string>).type === 'raw' || r.is_a_snapshot === true) {
      throw smError('VDIType', 'Raw VDI or snapshot not permitted');
    }
    if (enable) await cbtEnable(ctx, location, Number(r.virtual_size));
    else await cbtDisable(ctx, location);
    emu.db.update('VDI', vdi, { cbt_enabled: enable });
    emu.db.flush();
  }, { vdi }));
}

/** vdi_list_changed_blocks: xapi's base64 bitmap of the blocks changed from `from` to `to`. */
export async function smVdiListChangedBlocks(ctx: SrCtx, from: string, to: string): Promise<string> {
  const { location } = cbtDisk(ctx, to);
  const fromRec = ctx.emu.db.get('VDI', from);
  if (!fromRec) throw new XapiError('HANDLE_INVALID', ['VDI', from]);
  return smCall(ctx, () => cbtListChangedBlocks(ctx, String(fromRec.location), location), { vdi: to });
}

/** vdi_data_destroy (FileVDI.delete with data_only): the disk's file goes, its record (already of
 * type cbt_metadata) and its CBT log stay. A single unlink: no journal needed. */
export async function smVdiDataDestroy(ctx: SrCtx, vdi: string): Promise<void> {
  const { emu, sr } = ctx;
  const { d, rec } = cbtDisk(ctx, vdi);
  emu.db.flush();
  await withPaused(emu, [String(rec.uuid)], () => smCall(ctx, async () => {
    const r = emu.db.get('VDI', vdi)!;
    if (r.is_a_snapshot !== true) throw smError('VDIType', 'Only allowed for snapshot VDIs');
    await d.vdiDelete(ctx, r, { dataOnly: true });
    await srUpdateDelta(ctx, 0);
  }, { vdi }));
  kickGc(emu, sr);
}

/** Marks [offset, offset+length) of a VDI changed in its CBT log, if it has one (for writes that
 * reach the VHD without a VdiIo, such as the stream import). */
export async function markVdiChanged(emu: Emulator, vdi: string, offset: number, length: number): Promise<void> {
  const rec = emu.db.get('VDI', vdi);
  if (rec?.cbt_enabled !== true) return;
  const ctx = srCtx(emu, String(rec.SR));
  await cbtMark(ctx, String(rec.location), offset, length);
}

// ---- I/O: for the HTTP handlers (/import_raw_vdi, /export_raw_vdi) and, later, tapdisk ----

function vdiCtx(emu: Emulator, vdi: string): { ctx: SrCtx; rec: Rec; driver: SrDriver } {
  const rec = emu.db.get('VDI', vdi);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['VDI', vdi]);
  const sr = String(rec.SR);
  return { ctx: srCtx(emu, sr), rec, driver: driverOf(emu, sr) };
}

/** The file holding a VDI's data (the leaf of a VHD chain, or a raw image); null for SRs without
 * files (udev, dummy). The SR must be attached (SR_HAS_NO_PBDS otherwise). */
export function vdiPath(emu: Emulator, vdi: string): string | null {
  const { ctx, rec, driver } = vdiCtx(emu, vdi);
  return driver.vdiPath(ctx, rec);
}

/**
 * Opens a VDI's virtual disk for I/O: a Vhd (read through its chain) for VHD SRs, a raw file for
 * ISO images. While it is open for writing, snapshots, resizes and the GC wait for it to close
 * (as SM pauses the VDI's tapdisk). Close it when done.
 */
export async function openVdi(emu: Emulator, vdi: string, opts: { readOnly: boolean }): Promise<VdiIo> {
  await smReady(emu);
  const { ctx, rec, driver } = vdiCtx(emu, vdi);
  const release = await attachVdi(emu, String(rec.uuid), !opts.readOnly);
  let io: VdiIo;
  try {
    io = await driver.openVdi(ctx, rec, opts);
  } catch (e) {
    release();
    throw toXapiError(e, { sr: ctx.sr, vdi });
  }
  let closed = false;
  const vhd = io instanceof Vhd ? io : null;
  return {
    get virtualSize() {
      return io.virtualSize;
    },
    hasData: (index: number) => !vhd || vhd.chain().some((v) => index * BLOCK_SIZE < v.virtualSize && v.hasBlock(index)),
    read: (o, l) => io.read(o, l),
    write: (o, d) => io.write(o, d),
    flush: () => io.flush(),
    async close() {
      if (closed) return;
      closed = true;
      try {
        await io.close();
      } finally {
        release();
      }
    },
  };
}

/** Runs fn with the VDI's file path held (for code that works on the file itself, such as the
 * VHD stream import/export): snapshots, resizes and the GC wait while it runs with `write`. */
export async function withVdiFile<T>(emu: Emulator, vdi: string, opts: { write: boolean }, fn: (path: string) => Promise<T>): Promise<T> {
  await smReady(emu);
  const { ctx, rec, driver } = vdiCtx(emu, vdi);
  const path = driver.vdiPath(ctx, rec);
  if (!path) throw new XapiError('VDI_MISSING', [ctx.sr, vdi]);
  const release = await attachVdi(emu, String(rec.uuid), opts.write);
  try {
    return await fn(path);
  } finally {
    release();
  }
}

/** After writes through openVdi / withVdiFile: the VDI's physical_utilisation and the SR's sizes. */
export async function refreshVdi(emu: Emulator, vdi: string): Promise<void> {
  const { ctx, driver } = vdiCtx(emu, vdi);
  await smVdiUpdate(ctx, vdi);
  const s = await smCall(ctx, () => driver.update(ctx));
  setSrStat(emu, ctx.sr, { ...s, virtual_allocation: Number(emu.db.get('SR', ctx.sr)!.virtual_allocation) });
}

// ---- pausing I/O (tap_pause) ----

/** Runs fn with the VDIs paused. Pausing waits for writers, so it is done before taking the SR
 * lock: a writer may need the lock (refreshVdi) before it lets go. */
async function withPaused<T>(emu: Emulator, uuids: string[], fn: () => Promise<T>): Promise<T> {
  const resume = await pauseVdis(emu, uuids);
  try {
    return await fn();
  } finally {
    resume();
  }
}
