// The ext and file SR types (SM's EXTSR and FileSR): a directory of VHD files, `<vdi-uuid>.vhd`
// (or `<vdi-uuid>.raw` for sm_config type=raw), mounted at <storage>/sr/<sr-uuid>.
//  - ext: the directory is the SR's filesystem on its "device" (device_config:device); the
//    device's size is kept next to the mount point in <uuid>.device.
//  - file: device_config:location is a directory (inside the storage directory, so that nothing
//    outside the emulator's own files is touched) bind-mounted, here symlinked, at the mount point.
// Snapshots and clones follow FileSR._snapshot: the leaf becomes a hidden read-only base copy under a
// new uuid (hard link), new empty children take the leaf's uuid and, for a DOUBLE snapshot, the new
// VDI's uuid. See gc.ts for what happens to base copies afterwards.
// New files are made whole under a temporary name and renamed into place; sm.ts journals each
// multi-step operation (journal.ts) and recovery.ts resolves what a crash cut. A VHD that cannot
// be read is logged and skipped by listings, so that it never blocks the other VDIs.
import { link, lstat, mkdir, readFile, readdir, readlink, rename, rm, rmdir, stat, statfs, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Rec } from '../../storage/database.js';
import { MAX_CHAIN_SIZE, MAX_VHD_SIZE, MIN_VHD_SIZE, BLOCK_SIZE, Vhd, VhdError } from '../../storage/vhd/index.js';
import {
  RawFile, registerDriver, smError, unimplemented,
  type DiskInfo, type ScanResult, type SnapshotResult, type SrCtx, type SrDriver, type SrStat, type VdiIo,
} from './driver.js';
import { inside, isUsableLocation, isUuid, srBase, srFile } from './paths.js';
import { fsyncPath, renameDurably } from './durable.js';
import { smLog } from './smlog.js';
import { cbtDelete, cbtLogPath, cbtLogUuids, cbtResize, cbtSnapshot, cbtUndoSnapshot, readLog, trackWrites } from './cbt.js';

const GiB = 1024 ** 3;
/** size of an ext SR's device when nothing says otherwise (the default pool's local disk partition) */
export const DEFAULT_DEVICE_SIZE = 500 * GiB;

/** SM's vhdutil.validate_and_round_vhd_size: 0..2040 GiB, at least 2 MiB, rounded up to 2 MiB. */
export function validateVhdSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_VHD_SIZE) {
    throw smError('VDISize', `VDI size must be between 1 MB and ${MAX_VHD_SIZE / (1024 * 1024)} MB`);
  }
  return Math.ceil(Math.max(size, MIN_VHD_SIZE) / BLOCK_SIZE) * BLOCK_SIZE;
}

/** One disk file of the SR, as vhd-util scan reports it. */
export interface DiskFile {
  uuid: string;
  file: string;
  kind: 'vhd' | 'raw';
  virtualSize: number;
  /** the file's size (physical_utilisation) */
  size: number;
  hidden: boolean;
  parent: string | null;
}

export const vhdName = (uuid: string) => `${uuid}.vhd`;
export const rawName = (uuid: string) => `${uuid}.raw`;
/** the temporary name a new disk file is made under (`<uuid>.vhd.tmp`) */
export const createTmpName = (name: string) => `${name}.tmp`;
/** the temporary name of a snapshot's new leaf before it replaces the source (`<uuid>.vhd.new`) */
export const snapshotTmpName = (uuid: string) => `${vhdName(uuid)}.new`;
/** the temporary name of a grown VHD before it replaces the old one (`<uuid>.vhd.resize`) */
export const resizeTmpSuffix = '.resize';

/** A `<uuid>.vhd` that vhd-util scan cannot read (scan-error): reported, never introduced. */
export interface BadDisk {
  uuid: string;
  file: string;
  reason: string;
}

/** The disk files of an SR by uuid, and the VHDs that cannot be read. Names that are not
 * `<uuid>.vhd` / `<uuid>.raw` are ignored. */
export async function scanDisks(ctx: SrCtx): Promise<{ disks: Map<string, DiskFile>; bad: BadDisk[] }> {
  const disks = new Map<string, DiskFile>();
  const bad: BadDisk[] = [];
  let names: string[];
  try {
    names = await readdir(ctx.path);
  } catch {
    throw smError('SRUnavailable', `no such directory ${ctx.path}`);
  }
  for (const name of names.sort()) {
    const m = DISK_NAME.exec(name);
    if (!m || !isUuid(m[1])) continue;
    const file = srFile(ctx.emu, ctx.uuid, name);
    try {
      const d = await readDisk(file, m[1], m[2] as 'vhd' | 'raw');
      if (d && !(d.kind === 'raw' && disks.has(d.uuid))) disks.set(d.uuid, d);
    } catch (e) {
      bad.push({ uuid: m[1], file, reason: e instanceof Error ? e.message : String(e) });
    }
  }
  return { disks, bad };
}

/**
 * The readable disk files of an SR, by uuid. A VHD that cannot be read is logged (as vhdutil logs
 * a scan-error line) and left out, so that one bad file never blocks the other VDIs.
 */
export async function listDisks(ctx: SrCtx): Promise<Map<string, DiskFile>> {
  const { disks, bad } = await scanDisks(ctx);
  for (const b of bad) smLog(ctx.emu, `SR ${ctx.uuid}: VHD scan error, ${b.file} ignored: ${b.reason}`);
  return disks;
}

export const DISK_NAME = /^(.+)\.(vhd|raw)$/;

export async function readDisk(file: string, uuid: string, kind: 'vhd' | 'raw'): Promise<DiskFile | null> {
  let st;
  try {
    st = await stat(file);
  } catch {
    return null;
  }
  if (!st.isFile()) return null;
  if (kind === 'raw') return { uuid, file, kind, virtualSize: st.size, size: st.size, hidden: false, parent: null };
  const v = await Vhd.open(file, { readOnly: true, parents: false });
  try {
    let parent: string | null = null;
    if (v.isDifferencing) {
      const name = (v.parentPath ?? v.parentName ?? '').split('/').pop() ?? '';
      parent = name.replace(/\.vhd$/, '') || v.parentUuid;
    }
    return { uuid, file, kind, virtualSize: v.virtualSize, size: st.size, hidden: v.hidden, parent };
  } finally {
    await v.close();
  }
}

export function diskInfo(d: DiskFile, extra: Partial<DiskInfo> = {}): DiskInfo {
  return {
    uuid: d.uuid,
    location: d.uuid,
    name_label: '',
    name_description: '',
    virtual_size: d.virtualSize,
    physical_utilisation: d.size,
    read_only: false,
    managed: !d.hidden,
    hidden: d.hidden,
    parent: d.parent,
    sm_config: d.kind === 'raw' ? { type: 'raw', 'vhd-parent': null } : { 'vhd-parent': d.parent },
    ...extra,
  };
}

async function sumFileSizes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await lstat(join(dir, name)).catch(() => null);
    if (st?.isFile()) total += st.size;
  }
  return total;
}

// ---- the ext device ----

interface Device {
  size: number;
  /** bytes the filesystem itself uses */
  overhead: number;
}

const deviceFile = (ctx: SrCtx) => inside(ctx.emu, join(srBase(ctx.emu), `${ctx.uuid}.device`));

async function readDevice(ctx: SrCtx): Promise<Device> {
  try {
    const d = JSON.parse(await readFile(deviceFile(ctx), 'utf8')) as Device;
    if (Number.isSafeInteger(d.size) && Number.isSafeInteger(d.overhead)) return d;
  } catch {
    /* made below */
  }
  // an SR from before (the default pool's): its record says how big its device is
  const size = Number(ctx.rec.physical_size) > 0 ? Number(ctx.rec.physical_size) : DEFAULT_DEVICE_SIZE;
  const overhead = Number(ctx.rec.physical_utilisation) > 0 && Number(ctx.rec.virtual_allocation) === 0 ? Number(ctx.rec.physical_utilisation) : 0;
  const d = { size, overhead };
  await writeDevice(ctx, d);
  return d;
}

async function writeDevice(ctx: SrCtx, d: Device): Promise<void> {
  await mkdir(srBase(ctx.emu), { recursive: true });
  await writeFile(deviceFile(ctx), JSON.stringify(d));
}

// ---- the driver ----

function requireConfig(ctx: SrCtx): void {
  if (ctx.type === 'file') {
    if (!ctx.dconf.location) throw smError('ConfigLocationMissing');
  } else if (!ctx.dconf.device) {
    throw smError('ConfigDeviceMissing');
  }
}

/** The directory a file SR's location names, if the emulator may use it. */
function locationDir(ctx: SrCtx): string {
  const loc = resolve(ctx.dconf.location);
  if (!isUsableLocation(ctx.emu, loc)) {
    throw smError('FileSRCreate', `location ${ctx.dconf.location} is outside the emulator's data directory ${ctx.emu.storageDir}`);
  }
  return loc;
}

async function isMounted(ctx: SrCtx): Promise<boolean> {
  const st = await lstat(ctx.path).catch(() => null);
  if (!st) return false;
  if (ctx.type !== 'file') return st.isDirectory();
  if (!st.isSymbolicLink()) return false;
  return resolve(dirname(ctx.path), await readlink(ctx.path)) === locationDir(ctx) && (await stat(ctx.path).catch(() => null))?.isDirectory() === true;
}

async function mount(ctx: SrCtx): Promise<void> {
  if (await isMounted(ctx)) return;
  await mkdir(srBase(ctx.emu), { recursive: true });
  if (ctx.type !== 'file') {
    await mkdir(ctx.path, { recursive: true, mode: 0o700 });
    await readDevice(ctx);
    return;
  }
  const loc = locationDir(ctx);
  const st = await stat(loc).catch(() => null);
  if (!st?.isDirectory()) throw smError('FileSRCreate', `fail to mount FileSR. Errno is 32`);
  await rm(ctx.path, { force: true });
  await symlink(loc, ctx.path, 'dir');
}

/** The SR's sizes. Without `disks` (sr_update) no VHD is read: the virtual allocation is the one
 * recorded, which FileSR maintains itself (FileSR._update). */
async function stats(ctx: SrCtx, disks?: Map<string, DiskFile>): Promise<SrStat> {
  let valloc = Number(ctx.emu.db.get('SR', ctx.sr)?.virtual_allocation ?? 0);
  if (disks) {
    valloc = 0;
    for (const d of disks.values()) if (!d.hidden) valloc += d.virtualSize;
  }
  const used = await sumFileSizes(ctx.path);
  if (ctx.type === 'file') {
    const fs = await statfs(ctx.path);
    return { physical_size: fs.blocks * fs.bsize, physical_utilisation: used, virtual_allocation: valloc };
  }
  const dev = await readDevice(ctx);
  return { physical_size: dev.size, physical_utilisation: dev.overhead + used, virtual_allocation: valloc };
}

async function assertMounted(ctx: SrCtx): Promise<void> {
  if (!(await isMounted(ctx))) throw smError('SRUnavailable', `no such directory ${ctx.path}`);
}

/**
 * Whether some VHD of the SR has `uuid` as its parent. The records say it for the disks they
 * describe (sm_config vhd-parent, kept by every operation); only files without a record (hidden
 * garbage, disks put there by hand) need their header read, so the cost does not grow with the SR.
 */
async function hasChildren(ctx: SrCtx, uuid: string): Promise<boolean> {
  const recorded = new Set<string>();
  for (const v of (ctx.emu.db.get('SR', ctx.sr)?.VDIs ?? []) as string[]) {
    const r = ctx.emu.db.get('VDI', v);
    if (!r) continue;
    if ((r.sm_config as Record<string, string>)['vhd-parent'] === uuid) return true;
    recorded.add(String(r.location));
  }
  for (const name of await readdir(ctx.path)) {
    const m = DISK_NAME.exec(name);
    if (!m || m[2] !== 'vhd' || !isUuid(m[1]) || m[1] === uuid || recorded.has(m[1])) continue;
    const d = await readDisk(srFile(ctx.emu, ctx.uuid, name), m[1], 'vhd').catch(() => null);
    if (d?.parent === uuid) return true;
  }
  return false;
}

/** The disk of a VDI record (by its location), or null when no file exists. */
export async function diskOf(ctx: SrCtx, vdi: Rec): Promise<DiskFile | null> {
  const uuid = String(vdi.location);
  if (!isUuid(uuid)) return null;
  const file = srFile(ctx.emu, ctx.uuid, vhdName(uuid));
  try {
    return (await readDisk(file, uuid, 'vhd')) ?? (await readDisk(srFile(ctx.emu, ctx.uuid, rawName(uuid)), uuid, 'raw'));
  } catch (e) {
    // FileVDI.load: vhd-util cannot read the VDI's own file
    smLog(ctx.emu, `SR ${ctx.uuid}: failed to load VDI ${uuid}: ${e instanceof Error ? e.message : String(e)}`);
    throw smError('VDILoad', `Failed load VDI information ${file}`);
  }
}

async function chainDepth(file: string): Promise<number> {
  const v = await Vhd.open(file, { readOnly: true });
  try {
    return v.chain().length;
  } finally {
    await v.close();
  }
}

/** Grows a VHD in place (vhd-util resize): a new file with the larger BAT, the same identity and
 * parent, holding this file's own blocks, renamed over the old one. */
export async function growVhd(file: string, size: number): Promise<void> {
  const old = await Vhd.open(file, { readOnly: true, parents: false });
  const tmp = `${file}${resizeTmpSuffix}`;
  let nv: Vhd | null = null;
  try {
    if (old.virtualSize >= size) return;
    if (old.diskType === 'fixed') throw new VhdError('UNSUPPORTED', 'cannot resize a fixed VHD', { path: file });
    if (old.isDifferencing && !old.parentPath) throw new VhdError('PARENT_NOT_FOUND', 'parent not found', { path: file });
    nv = await Vhd.create(tmp, { uuid: old.uuid, size, parent: old.parentPath ?? undefined, timestamp: old.creationTime, overwrite: true });
    for (const blk of old.allocatedBlocks()) {
      const b = await old.readBlock(blk);
      if (b) await nv.mergeBlock(blk, b.bitmap, Buffer.from(b.data));
    }
    if (old.hidden) await nv.setHidden(true);
    await nv.flush();
    await nv.close();
    nv = null;
    await renameDurably(tmp, file);
  } catch (e) {
    await nv?.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await old.close();
  }
}

/**
 * Puts the SR back as it was before a snapshot of `srcUuid` (FileVDI._clonecleanup): the new leaf
 * and the temporary file go, and when the source already is the new child of the base copy, the
 * base copy (the original file) takes the source's name back, visible again.
 */
export async function undoSnapshot(ctx: SrCtx, srcUuid: string, baseUuid: string, dstUuid: string | null): Promise<void> {
  const src = srFile(ctx.emu, ctx.uuid, vhdName(srcUuid));
  const base = srFile(ctx.emu, ctx.uuid, vhdName(baseUuid));
  if (dstUuid) await cbtUndoSnapshot(ctx, srcUuid, dstUuid);
  if (dstUuid) await rm(srFile(ctx.emu, ctx.uuid, vhdName(dstUuid)), { force: true });
  await rm(srFile(ctx.emu, ctx.uuid, snapshotTmpName(srcUuid)), { force: true });
  const hasBase = Boolean(await stat(base).catch(() => null));
  const leafNow = await readDisk(src, srcUuid, 'vhd').catch(() => null);
  if (hasBase && (!leafNow || leafNow.parent === baseUuid)) {
    await renameDurably(base, src);
    await setHidden(src, false);
    await fsyncPath(src);
  } else if (hasBase) {
    // the source was never replaced: base is only a second link to it
    await rm(base, { force: true });
  }
  await fsyncPath(ctx.path);
}

export async function setHidden(file: string, hidden: boolean): Promise<void> {
  const v = await Vhd.open(file, { readOnly: false, parents: false });
  try {
    await v.setHidden(hidden);
  } finally {
    await v.close();
  }
}

const fileSr: SrDriver = {
  types: ['ext', 'file'],
  vhdBased: true,

  async create(ctx, physicalSize) {
    requireConfig(ctx);
    if (ctx.type === 'file') {
      const loc = locationDir(ctx);
      const st = await stat(loc).catch(() => null);
      // FileSR.create reports any failure, SRExists included, as FileSRCreate
      if (st && (!st.isDirectory() || (await readdir(loc)).length > 0)) throw smError('FileSRCreate');
      if (!st) await mkdir(loc).catch(() => { throw smError('FileSRCreate'); });
      return;
    }
    if (await isMounted(ctx)) {
      if ((await readdir(ctx.path)).length > 0) throw smError('SRExists');
    }
    await writeDevice(ctx, { size: physicalSize > 0 ? physicalSize : DEFAULT_DEVICE_SIZE, overhead: 0 });
    await mkdir(ctx.path, { recursive: true, mode: 0o700 });
  },

  async delete(ctx) {
    requireConfig(ctx);
    await mount(ctx);
    // FileSR.delete loads every VDI first: an unreadable VHD fails it as it fails SM's scan
    const { disks, bad } = await scanDisks(ctx);
    if (bad.length) throw smError('SRScan', `uuid=${bad[0].uuid}`);
    if (disks.size > 0) throw smError('SRNotEmpty', 'VDIs still exist in SR');
    for (const name of await readdir(ctx.path)) {
      const st = await lstat(join(ctx.path, name));
      if (!st.isDirectory()) await unlink(join(ctx.path, name)).catch((e: NodeJS.ErrnoException) => {
        throw smError('FileSRDelete', `failed to remove ${join(ctx.path, name)} error ${e.errno ?? ''}`);
      });
    }
    if (ctx.type === 'file') {
      await rm(ctx.path, { force: true });
    } else {
      await rm(ctx.path, { recursive: true, force: true });
      await rm(deviceFile(ctx), { force: true });
    }
  },

  async attach(ctx) {
    requireConfig(ctx);
    await mount(ctx);
  },

  async detach(ctx) {
    // an ext filesystem stays on its device; a file SR's bind mount goes
    if (ctx.type === 'file') {
      const st = await lstat(ctx.path).catch(() => null);
      if (st?.isSymbolicLink()) await unlink(ctx.path);
      else if (st?.isDirectory()) await rmdir(ctx.path).catch(() => undefined);
    }
  },

  async probe(emu, type, dconf) {
    // EXTSR.probe lists the SRs found on the device; FileSR does not implement probe
    if (type === 'file') throw unimplemented();
    if (!dconf.device) throw smError('ConfigDeviceMissing');
    const found: string[] = [];
    for (const [, row] of emu.db.table('SR')) {
      if (row.rec.type !== 'ext') continue;
      const pbds = (row.rec.PBDs as string[]).map((p) => emu.db.get('PBD', p)).filter(Boolean);
      if (pbds.some((p) => (p!.device_config as Record<string, string>).device === dconf.device)) found.push(String(row.rec.uuid));
    }
    return srListXml(found.map((uuid) => ({ uuid })));
  },

  async scan(ctx): Promise<ScanResult> {
    await assertMounted(ctx);
    const { disks, bad } = await scanDisks(ctx);
    for (const b of bad) smLog(ctx.emu, `SR ${ctx.uuid}: VHD scan error, ${b.file} not introduced: ${b.reason}`);
    const children = new Map<string, string[]>();
    for (const d of disks.values()) if (d.parent) children.set(d.parent, [...(children.get(d.parent) ?? []), d.uuid]);
    const out: DiskInfo[] = [];
    for (const d of disks.values()) {
      // hidden leaves are GC garbage (freshly deleted VDIs): not introduced
      if (d.hidden && !children.has(d.uuid)) continue;
      out.push(diskInfo(d, { read_only: children.has(d.uuid) }));
    }
    // a CBT log without its disk is a cbt_metadata VDI (a snapshot whose data was destroyed)
    for (const uuid of await cbtLogUuids(ctx)) {
      if (disks.has(uuid) || bad.some((b) => b.uuid === uuid)) continue;
      const log = await readLog(ctx, uuid).catch(() => null);
      if (!log) continue;
      const size = (await stat(cbtLogPath(ctx, uuid)).catch(() => null))?.size ?? 0;
      out.push({
        uuid, location: uuid, name_label: '', name_description: '', virtual_size: log.size, physical_utilisation: size,
        read_only: false, managed: true, hidden: false, parent: null, sm_config: {}, type: 'cbt_metadata',
      });
    }
    return { disks: out, stat: await stats(ctx, disks), unreadable: bad.map((b) => b.uuid) };
  },

  async update(ctx) {
    await assertMounted(ctx);
    return stats(ctx);
  },

  async vdiCreate(ctx, { uuid, size, smConfig }) {
    await assertMounted(ctx);
    const type = smConfig.type ?? 'vhd';
    if (type !== 'vhd' && type !== 'raw') throw smError('VDIType', `Invalid VDI type ${type}`);
    const name = type === 'raw' ? rawName(uuid) : vhdName(uuid);
    const file = srFile(ctx.emu, ctx.uuid, name);
    if (await stat(file).catch(() => null)) throw smError('VDIExists');
    // made whole under a temporary name, then renamed into place: a crash never leaves a
    // partial <uuid>.vhd for scans to trip over
    const tmp = srFile(ctx.emu, ctx.uuid, createTmpName(name));
    try {
      if (type === 'raw') {
        if (!Number.isSafeInteger(size) || size < 0) throw smError('VDISize');
        await writeFile(tmp, '');
        await truncate(tmp, size);
        await fsyncPath(tmp);
      } else {
        const rounded = validateVhdSize(size);
        try {
          const v = await Vhd.create(tmp, { uuid, size: rounded, overwrite: true });
          await v.close();
        } catch (e) {
          throw smError('VDICreate', `error ${e instanceof VhdError ? (e.errno ?? e.code) : String(e)}`);
        }
      }
      await renameDurably(tmp, file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    const d = (await readDisk(file, uuid, type))!;
    return diskInfo(d, { sm_config: type === 'raw' ? { type: 'raw' } : {} });
  },

  async vdiDelete(ctx, vdi, opts = {}) {
    await assertMounted(ctx);
    // the log's bits go to the next one of its chain first (VDI.delete); data_destroy keeps it
    if (!opts.dataOnly && isUuid(String(vdi.location))) await cbtDelete(ctx, String(vdi.location));
    const d = await diskOf(ctx, vdi);
    if (!d) return;
    // a disk other disks descend from (scanned in with its children) is hidden rather than
    // unlinked, as LVHD does, so that the GC can coalesce it and no child loses its data
    if (d.kind === 'vhd') {
      if (await hasChildren(ctx, d.uuid)) {
        await setHidden(d.file, true);
        await fsyncPath(d.file);
        return;
      }
    }
    try {
      await unlink(d.file);
      await fsyncPath(ctx.path);
    } catch (e) {
      throw smError('VDIDelete', `Failed to unlink file during deleting VDI: ${(e as Error).message}`);
    }
  },

  async vdiSnapshot(ctx, vdi, { kind, clone }, newUuid): Promise<SnapshotResult> {
    await assertMounted(ctx);
    const d = await diskOf(ctx, vdi);
    if (!d) throw smError('VDIUnavailable', `VDI ${vdi.location} not found`);
    if (d.kind !== 'vhd') throw unimplemented();
    if (d.hidden) throw smError('VDIClone', 'hidden VDI');
    let depth: number;
    try {
      depth = await chainDepth(d.file);
    } catch {
      throw smError('VDIUnavailable', 'failed to get VHD depth');
    }
    if (depth >= MAX_CHAIN_SIZE) throw smError('SnapshotChainTooLong');
    const baseUuid = newUuid();
    const destUuid = kind === 'double' ? newUuid() : null;
    const src = d.file;
    const base = srFile(ctx.emu, ctx.uuid, vhdName(baseUuid));
    const dst = destUuid ? srFile(ctx.emu, ctx.uuid, vhdName(destUuid)) : null;
    const tmp = srFile(ctx.emu, ctx.uuid, snapshotTmpName(d.uuid));
    try {
      await link(src, base);
      // as td-util snapshot: the new file has a footer uuid of its own (the base keeps the old one)
      const child = await Vhd.create(tmp, { uuid: newUuid(), parent: base, overwrite: true });
      await child.close();
      await renameDurably(tmp, src);
      if (dst) await (await Vhd.create(dst, { uuid: destUuid!, parent: base })).close();
      await setHidden(base, true);
      await fsyncPath(base);
      await fsyncPath(ctx.path);
      // a user snapshot (DOUBLE, not a clone) carries the leaf's CBT log (FileVDI._snapshot)
      if (dst && !clone) await cbtSnapshot(ctx, d.uuid, destUuid!);
    } catch (e) {
      await undoSnapshot(ctx, d.uuid, baseUuid, destUuid).catch(() => undefined);
      throw smError('VDIClone', `VDI clone failed error ${e instanceof VhdError ? (e.errno ?? e.code) : String(e)}`);
    }
    const baseDisk = (await readDisk(base, baseUuid, 'vhd'))!;
    const baseInfo = diskInfo(baseDisk, {
      name_label: 'base copy',
      read_only: true,
      managed: false,
      // SM introduces both with the size and utilisation of the source before the snapshot
      virtual_size: d.virtualSize,
      physical_utilisation: d.size,
      sm_config: baseDisk.parent ? { 'vhd-parent': baseDisk.parent } : {},
    });
    const source = diskInfo((await readDisk(src, d.uuid, 'vhd'))!);
    if (!dst) return { result: baseInfo, base: baseInfo, source };
    const leaf = diskInfo((await readDisk(dst, destUuid!, 'vhd'))!, {
      virtual_size: d.virtualSize,
      physical_utilisation: d.size,
      sm_config: { 'vhd-parent': baseUuid },
    });
    return { result: leaf, base: baseInfo, source };
  },

  async vdiResize(ctx, vdi, size) {
    await assertMounted(ctx);
    const d = await diskOf(ctx, vdi);
    if (!d) throw smError('VDIUnavailable', `VDI ${vdi.location} unavailable ${srFile(ctx.emu, ctx.uuid, vhdName(String(vdi.location)))}`);
    if (d.kind !== 'vhd') throw unimplemented();
    if (d.hidden) throw smError('VDIUnavailable', 'hidden VDI');
    if (size < d.virtualSize) throw smError('VDISize', 'shrinking not allowed');
    if (size === d.virtualSize) return diskInfo(d);
    const rounded = validateVhdSize(size);
    try {
      await growVhd(d.file, rounded);
    } catch {
      throw smError('VDISize', 'resize operation failed');
    }
    await cbtResize(ctx, d.uuid, rounded);
    return diskInfo((await readDisk(d.file, d.uuid, 'vhd'))!);
  },

  async vdiIntroduce() {
    throw unimplemented();
  },

  async vdiStat(ctx, vdi) {
    await assertMounted(ctx);
    const d = await diskOf(ctx, vdi);
    if (!d) throw smError('VDIUnavailable', `VDI ${vdi.location} not found`);
    return diskInfo(d, { read_only: Boolean(vdi.read_only) });
  },

  vdiPath(ctx, vdi) {
    const uuid = String(vdi.location);
    if (!isUuid(uuid)) return null;
    const sm = (vdi.sm_config ?? {}) as Record<string, string>;
    return srFile(ctx.emu, ctx.uuid, sm.type === 'raw' ? rawName(uuid) : vhdName(uuid));
  },

  async openVdi(ctx, vdi, { readOnly }): Promise<VdiIo> {
    const d = await diskOf(ctx, vdi);
    if (!d) throw smError('VDIUnavailable', `VDI ${vdi.location} not found`);
    if (d.kind === 'raw') return RawFile.open(d.file, readOnly);
    const v = await Vhd.open(d.file, { readOnly });
    // tapdisk opened read-write with the VDI's CBT log (blktap2 activate): writes mark it
    if (!readOnly) trackWrites(ctx, String(vdi.uuid), d.uuid, v);
    return v;
  },
};

/** SM's util.SRtoXML answer of a probe. */
export function srListXml(srs: { uuid: string; size?: number }[]): string {
  const items = srs.map((s) => `\t<SR>\n\t\t<UUID>${s.uuid}</UUID>\n${s.size !== undefined ? `\t\t<size>${s.size}</size>\n` : ''}\t</SR>\n`).join('');
  return `<?xml version="1.0" ?>\n<SRlist>\n${items}</SRlist>\n`;
}

registerDriver(fileSr);
export default fileSr;
