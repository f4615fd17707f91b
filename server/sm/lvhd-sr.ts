// The LVHD SR types (SM's LVHDSR and its iSCSI and HBA variants): VHD disks inside logical
// volumes of a volume group VG_XenStorage-<sr-uuid> on a LUN of the fabric (lvmoiscsi, lvmohba)
// or on a host's local disk (lvm). The VG is a directory on the device and each LV a VHD file, so
// the datapath is FileSR's; what LVHD changes is what SM reports: a disk's physical_utilisation is
// the size of its LV.
//  - thick (the default): the LV holds the whole disk, calcSizeVHDLV(virtual size);
//  - thin (device_config or sm_config allocation=thin): the LV holds the VHD's metadata and the
//    blocks written, inflated to the full size while the disk is attached and deflated after.
// device_config: lvm: device; lvmoiscsi: target, targetIQN, SCSIid, port, chapuser/chappassword;
// lvmohba: SCSIid. Missing keys, unreachable targets and unknown LUNs fail as SM fails them; the
// probes print the target IQNs (ConfigTargetIQNMissing) and LUNs (ConfigSCSIid) SM prints.
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { smError, SmError, type DiskInfo, type SrCtx } from './driver.js';
import { isUuid } from './paths.js';
import { isDir, LVHD_MGT_SIZE, linkedDriver, pbdHostUuid } from './linked-sr.js';
import { isHostName, localDeviceDir, lunDir } from './fabric/contents.js';
import { defaultFcLun, defaultLun, fabricState, ISCSI_PORT, iscsiService, reachable, type IscsiTarget, type Lun } from './fabric/servers.js';
import { prettyXml, record, type XmlNode } from './probe-xml.js';
import { DEFAULT_DEVICE_SIZE } from './file-sr.js';
import type { Emulator } from '../emulator.js';

// ---- LVHD sizes (lvhdutil, vhdutil) ----

const MiB = 1024 * 1024;
const LVM_SIZE_INCREMENT = 4 * MiB;
const VHD_BLOCK_SIZE = 2 * MiB;
/** the virtual size every LVHD VHD's metadata is preallocated for (fast online resize) */
const MSIZE = 2 * 1024 * 1024 * MiB;

const roundup = (unit: number, n: number) => Math.ceil(n / unit) * unit;

/** vhdutil.calcOverheadEmpty */
export function calcOverheadEmpty(virtualSize: number): number {
  const sizeMb = Math.floor(virtualSize / MiB);
  let overhead = 3 * 1024;
  overhead += Math.floor(sizeMb / 2) * 4;
  overhead = roundup(512, overhead);
  overhead += Math.floor(Math.floor(sizeMb / 2) / 8);
  return roundup(4096, overhead);
}

/** vhdutil.calcOverheadBitmap */
export const calcOverheadBitmap = (virtualSize: number) => Math.ceil(virtualSize / VHD_BLOCK_SIZE) * 4096;

/** lvhdutil.calcSizeLV */
export const calcSizeLV = (sizeVhd: number) => roundup(LVM_SIZE_INCREMENT, sizeVhd);

/** lvhdutil.calcSizeVHDLV: the LV of a fully inflated VHD of that virtual size. */
export const calcSizeVHDLV = (virtualSize: number) => calcSizeLV(virtualSize + calcOverheadEmpty(MSIZE) + calcOverheadBitmap(virtualSize));

/** The LV of a deflated disk: the preallocated metadata and the blocks its VHD holds. */
export function deflatedLV(virtualSize: number, fileSize: number): number {
  return calcSizeLV(calcOverheadEmpty(MSIZE) + Math.max(0, fileSize - calcOverheadEmpty(virtualSize)));
}

export const VG_PREFIX = 'VG_XenStorage-';

// ---- provisioning ----

function provisioning(ctx: SrCtx): 'thin' | 'thick' {
  const a = ctx.dconf.allocation ?? (ctx.rec.sm_config as Record<string, string> | undefined)?.allocation;
  return a === 'thin' ? 'thin' : 'thick';
}

/** Whether the VDI at `location` is attached somewhere (a plugged VBD): thin disks are inflated then. */
function attached(ctx: SrCtx, location: string): boolean {
  for (const v of (ctx.emu.db.get('SR', ctx.sr)?.VDIs ?? []) as string[]) {
    const r = ctx.emu.db.get('VDI', v);
    if (r?.location !== location) continue;
    return ((r.VBDs ?? []) as string[]).some((b) => ctx.emu.db.get('VBD', b)?.currently_attached === true);
  }
  return false;
}

function utilisation(ctx: SrCtx, d: DiskInfo): number {
  if (d.type === 'cbt_metadata') return d.physical_utilisation;
  // base copies are deflated to what they hold (LVHDVDI._snapshot)
  if (d.hidden || !d.managed) return deflatedLV(d.virtual_size, d.physical_utilisation);
  if (provisioning(ctx) === 'thick' || attached(ctx, d.location)) return calcSizeVHDLV(d.virtual_size);
  return deflatedLV(d.virtual_size, d.physical_utilisation);
}

function spaceFor(ctx: SrCtx, size: number): number {
  return provisioning(ctx) === 'thin' ? calcSizeLV(calcOverheadEmpty(MSIZE)) : calcSizeVHDLV(size);
}

// ---- devices ----

interface Device {
  /** the directory of the device, holding the VG's directory */
  dir: string;
  size: number;
  /** the device's path as SM's probe prints it */
  path: string;
}

/** BaseISCSI.load's checks, then the target named. */
function iscsiTarget(emu: Emulator, dconf: Record<string, string>, host: string): { target: string; port: number; t: IscsiTarget | null; targets: IscsiTarget[] } {
  if (!dconf.target) throw smError('ConfigTargetMissing');
  const iqn = dconf.localIQN ?? String((emu.db.get('host', host)?.other_config as Record<string, string> | undefined)?.iscsi_iqn ?? '');
  if (!iqn) throw smError('ConfigISCSIIQNMissing');
  let port = ISCSI_PORT;
  if (dconf.port) {
    port = Number(dconf.port);
    if (!/^\d+$/.test(dconf.port) || port > 65535) throw smError('ISCSIPort');
  }
  const target = dconf.target.split(',')[0];
  if (!isHostName(target)) throw smError('DNSError');
  const svc = reachable(emu, target) ? iscsiService(emu, target) : null;
  const testHost = () => {
    if (!svc || svc.port !== port) throw smError('ISCSITarget');
  };
  if (!dconf.targetIQN) {
    // discovery: the target's IQNs are printed, and the request refused
    testHost();
    const entries: XmlNode[] = svc!.targets.map((t, i) => record('TGT', [['Index', i], ['IPAddress', target], ['Port', port !== ISCSI_PORT ? port : undefined], ['TargetIQN', t.iqn]]));
    entries.push(record('TGT', [['Index', entries.length], ['IPAddress', dconf.target], ['Port', port !== ISCSI_PORT ? port : undefined], ['TargetIQN', '*']]));
    throw smError('ConfigTargetIQNMissing', undefined, `${prettyXml({ name: 'iscsi-target-iqns', children: entries })}\n`);
  }
  testHost();
  return { target, port, t: svc!.targets.find((x) => x.iqn === dconf.targetIQN) ?? null, targets: svc!.targets };
}

/** The LUN of an lvmoiscsi SR, logging in to its target. */
function iscsiLun(emu: Emulator, dconf: Record<string, string>, host: string, probe: boolean): Lun {
  const { target, t: declaredTarget } = iscsiTarget(emu, dconf, host);
  const undeclared = !fabricState(emu).servers.some((s) => s.address === target);
  // an undeclared server has whatever target is asked for, with one LUN
  const t: IscsiTarget | null = declaredTarget ?? (undeclared ? { iqn: dconf.targetIQN, luns: [defaultLun(target, dconf.targetIQN, 0)] } : null);
  if (!t) throw smError('ISCSILogin');
  if (t.chap && (dconf.chapuser !== t.chap.user || dconf.chappassword !== t.chap.password)) throw smError('ISCSILogin');
  if (!dconf.SCSIid) {
    const luns = t.luns.map((l) => record('LUN', [['vendor', l.vendor], ['serial', l.serial], ['LUNid', l.id], ['size', l.size], ['SCSIid', l.scsi_id]]));
    throw smError('ConfigSCSIid', undefined, probe ? `${prettyXml({ name: 'iscsi-target', children: luns })}\n` : '');
  }
  const lun = t.luns.find((l) => l.scsi_id === dconf.SCSIid);
  if (!lun) throw smError('ConfigSCSIid');
  return lun;
}

/** The FC LUNs the HBAs see (devscan.scan's Devlist). */
function fcLuns(emu: Emulator): Lun[] {
  return fabricState(emu).fc_luns ?? [];
}

function hbaLun(emu: Emulator, dconf: Record<string, string>): Lun {
  if (!dconf.SCSIid) {
    const inUse = scsiIdsInUse(emu);
    const devs = fcLuns(emu).filter((l) => !inUse.has(l.scsi_id)).map((l, i) => record('BlockDevice', [
      ['path', `/dev/sd${String.fromCharCode(98 + i)}`], ['numpaths', 1], ['SCSIid', l.scsi_id], ['vendor', l.vendor], ['serial', l.serial],
      ['size', l.size], ['adapter', 1], ['channel', 0], ['id', 0], ['lun', l.id], ['hba', 'qla2xxx'],
    ]));
    throw smError('ConfigSCSIid', undefined, `${prettyXml({ name: 'Devlist', children: devs })}\n`);
  }
  const luns = fabricState(emu).fc_luns;
  if (!luns) return defaultFcLun(dconf.SCSIid);
  const lun = luns.find((l) => l.scsi_id === dconf.SCSIid);
  if (!lun) throw smError('ConfigSCSIid');
  return lun;
}

/** SCSI ids named by PBDs of SRs other than `except` (util.test_SCSIid). */
function scsiIdsInUse(emu: Emulator, except?: string): Set<string> {
  const out = new Set<string>();
  for (const row of emu.db.table('PBD').values()) {
    if (row.rec.SR === except) continue;
    const id = (row.rec.device_config as Record<string, string>)?.SCSIid;
    if (id) out.add(id);
  }
  return out;
}

const localSizeFile = (dir: string) => join(dir, 'device.json');

async function localDevice(emu: Emulator, hostUuid: string, dconf: Record<string, string>): Promise<Device> {
  if (!dconf.device) throw smError('ConfigDeviceMissing');
  const dir = localDeviceDir(emu, hostUuid, dconf.device);
  if (!dir) throw smError('ConfigDeviceInvalid');
  let size = DEFAULT_DEVICE_SIZE;
  try {
    const s = JSON.parse(await readFile(localSizeFile(dir), 'utf8')) as { size: number };
    if (Number.isSafeInteger(s.size)) size = s.size;
  } catch {
    /* a disk nothing sized yet */
  }
  return { dir, size, path: dconf.device };
}

function lunDevice(emu: Emulator, lun: Lun): Device {
  return { dir: lunDir(emu, lun.scsi_id), size: lun.size, path: `/dev/disk/by-id/scsi-${lun.scsi_id}` };
}

function hostOf(ctx: SrCtx): string {
  for (const p of (ctx.rec.PBDs ?? []) as string[]) {
    const h = ctx.emu.db.get('PBD', p)?.host;
    if (h) return String(h);
  }
  return ctx.emu.master;
}

async function deviceOf(emu: Emulator, type: string, dconf: Record<string, string>, host: string, probe = false): Promise<Device> {
  if (type === 'lvm') return localDevice(emu, String(emu.db.get('host', host)?.uuid ?? ''), dconf);
  if (type === 'lvmoiscsi') return lunDevice(emu, iscsiLun(emu, dconf, host, probe));
  return lunDevice(emu, hbaLun(emu, dconf));
}

/** The VG's directory, from device_config alone (no I/O). */
function contents(ctx: SrCtx): string {
  if (ctx.type === 'lvm') {
    if (!ctx.dconf.device) throw smError('ConfigDeviceMissing');
    const dir = localDeviceDir(ctx.emu, pbdHostUuid(ctx.emu, ctx.rec), ctx.dconf.device);
    if (!dir) throw smError('ConfigDeviceInvalid');
    return join(dir, `${VG_PREFIX}${ctx.uuid}`);
  }
  if (!ctx.dconf.SCSIid) throw smError('ConfigSCSIid');
  return join(lunDir(ctx.emu, ctx.dconf.SCSIid), `${VG_PREFIX}${ctx.uuid}`);
}

const vgsOn = async (dir: string) => (await readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith(VG_PREFIX) && isUuid(n.slice(VG_PREFIX.length))).sort();

const lvhd = linkedDriver({
  types: ['lvm', 'lvmoiscsi', 'lvmohba'],
  contents,
  utilisation,
  spaceFor,

  async reach(ctx) {
    await deviceOf(ctx.emu, ctx.type, ctx.dconf, hostOf(ctx));
  },

  alive(ctx) {
    if (ctx.type === 'lvmoiscsi' && !reachable(ctx.emu, String(ctx.dconf.target ?? '').split(',')[0])) {
      throw smError('SRUnavailable', `iSCSI target ${ctx.dconf.target} not responding`);
    }
  },

  async create(ctx, physicalSize) {
    const dev = await deviceOf(ctx.emu, ctx.type, ctx.dconf, hostOf(ctx));
    const vg = join(dev.dir, `${VG_PREFIX}${ctx.uuid}`);
    if (await isDir(vg)) throw smError('SRExists');
    if (ctx.type !== 'lvm' && scsiIdsInUse(ctx.emu, ctx.sr).has(ctx.dconf.SCSIid)) throw smError('SRInUse');
    if (ctx.type === 'lvm') {
      for (const row of ctx.emu.db.table('PBD').values()) {
        if (row.rec.SR !== ctx.sr && row.rec.host === hostOf(ctx) && (row.rec.device_config as Record<string, string>)?.device === ctx.dconf.device) throw smError('SRInUse');
      }
    }
    const a = ctx.dconf.allocation;
    if (a !== undefined && a !== 'thin' && a !== 'thick') throw smError('InvalidArg', `Allocation parameter must be one of ['thin', 'thick']`);
    // lvutil.createVG: the device gets a new VG, whatever it held before
    await mkdir(dev.dir, { recursive: true });
    for (const old of await vgsOn(dev.dir)) await rm(join(dev.dir, old), { recursive: true, force: true });
    if (ctx.type === 'lvm') await writeFile(localSizeFile(dev.dir), JSON.stringify({ size: physicalSize > 0 ? physicalSize : dev.size }));
    await mkdir(vg);
    // LVHDSR.create / updateSRMetadata: the SR is VHD-on-LVM with its provisioning recorded
    const sm: Record<string, string> = { ...(ctx.emu.db.get('SR', ctx.sr)!.sm_config as Record<string, string>), use_vhd: 'true', allocation: provisioning(ctx) };
    if (ctx.type !== 'lvm') sm.devserial = `scsi-${ctx.dconf.SCSIid}`;
    ctx.emu.db.update('SR', ctx.sr, { sm_config: sm });
  },

  async probe(emu, type, dconf) {
    const dev = await deviceOf(emu, type, dconf, emu.master, true);
    const srs: XmlNode[] = [];
    for (const vg of await vgsOn(dev.dir)) srs.push(record('SR', [['UUID', vg.slice(VG_PREFIX.length)], ['Devlist', dev.path], ['size', dev.size]]));
    return prettyXml({ name: 'SRlist', children: srs });
  },

  async deviceSize(ctx) {
    try {
      return (await deviceOf(ctx.emu, ctx.type, ctx.dconf, hostOf(ctx))).size;
    } catch (e) {
      if (e instanceof SmError) return Number(ctx.rec.physical_size);
      throw e;
    }
  },
});

// ---- thin provisioning: inflate on attach, deflate on detach (LVHDVDI.attach / detach) ----

/** Records a disk's new LV size (SM's _db_update after lvhdutil.inflate / deflate). */
function setLvSize(ctx: SrCtx, uuid: string, size: number): void {
  const ref = ctx.emu.db.refByUuid('VDI', uuid);
  if (ref && ctx.emu.db.get('VDI', ref)?.physical_utilisation !== size) ctx.emu.db.update('VDI', ref, { physical_utilisation: size });
}

const openDisk = lvhd.openVdi.bind(lvhd);
lvhd.openVdi = async (ctx, vdi, opts) => {
  const thin = provisioning(ctx) === 'thin' && !opts.readOnly && vdi.managed !== false;
  const full = calcSizeVHDLV(Number(vdi.virtual_size));
  const grow = thin ? full - Number(vdi.physical_utilisation) : 0;
  if (grow > 0) {
    // the LV grows to the whole disk: the VG must have room for it
    let free = 0;
    for (const v of (ctx.emu.db.get('SR', ctx.sr)?.VDIs ?? []) as string[]) free -= Number(ctx.emu.db.get('VDI', v)?.physical_utilisation ?? 0);
    free += (await lvhd.update(ctx)).physical_size - LVHD_MGT_SIZE;
    if (free < grow) throw smError('SRNoSpace');
  }
  const io = await openDisk(ctx, vdi, opts);
  if (!thin) return io;
  const uuid = String(vdi.uuid);
  setLvSize(ctx, uuid, full);
  const close = io.close.bind(io);
  io.close = async () => {
    await close();
    const file = lvhd.vdiPath(ctx, vdi);
    const st = file ? await stat(file).catch(() => null) : null;
    if (st) setLvSize(ctx, uuid, deflatedLV(Number(vdi.virtual_size), st.size));
  };
  return io;
};
