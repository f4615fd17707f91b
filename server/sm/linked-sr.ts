// SRs whose contents live on a device of the fabric (an NFS export, an SMB share, a LUN, a host's
// local disk): the mount point <storage>/sr/<sr-uuid> is a link to the SR's directory on that
// device (server/sm/fabric/contents.ts), as SM mounts the export or activates the VG there. The
// disks are FileSR's VHD files, handled by file-sr.ts's code through the link, so the datapath,
// the journal, the GC and the recovery at start see a file SR; what differs per driver is its
// device_config checks, how it reaches its device, its probe, and the sizes it reports.
import { lstat, mkdir, readdir, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Rec } from '../../storage/database.js';
import fileSr from './file-sr.js';
import { registerDriver, smError, type DiskInfo, type SrCtx, type SrDriver, type SrStat } from './driver.js';
import type { Emulator } from '../emulator.js';

export interface LinkedSpec {
  types: string[];
  /** The SR's directory on its device, from the PBD's device_config (no I/O: SM's load(); a
   * missing key is the driver's error). */
  contents(ctx: SrCtx): string;
  /** What attaching does before the directory is used: the server answers, the export, share or
   * LUN is there (the driver's errors otherwise). */
  reach(ctx: SrCtx): Promise<void>;
  /** sr_create's own checks and the SR's directory on the device. */
  create(ctx: SrCtx, physicalSize: number): Promise<void>;
  probe: SrDriver['probe'];
  /** The size of the device holding the SR. */
  deviceSize(ctx: SrCtx): Promise<number>;
  /** LVHD: a disk's logical volume size, reported as its physical_utilisation. */
  utilisation?(ctx: SrCtx, d: DiskInfo): number;
  /** LVHD: the space a new disk of `size` takes (SRNoSpace when the device has less free). */
  spaceFor?(ctx: SrCtx, size: number): number;
  /** Runs before each operation on an attached SR: an unreachable server fails it. */
  alive?(ctx: SrCtx): void;
}

/** The context file-sr.ts works with: a file SR at the SR's directory on its device. */
export function asFileSr(ctx: SrCtx, dir: string): SrCtx {
  return { ...ctx, type: 'file', dconf: { location: dir } };
}

export async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null))?.isDirectory() === true;
}

/** The SR's directory on a remote export or share: kept if it is there and empty (an SR created
 * again after a forget), SRExists if it holds something. */
export async function makeSrDirIn(parent: string, uuid: string): Promise<void> {
  const srDir = join(parent, uuid);
  if (await isDir(srDir)) {
    if ((await readdir(srDir)).length) throw smError('SRExists');
    return;
  }
  await mkdir(srDir);
}

/** Bytes held by the files of a directory (not its subdirectories). */
export async function usedBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await lstat(`${dir}/${name}`).catch(() => null);
    if (st?.isFile()) total += st.size;
  }
  return total;
}

/** The host of the SR's PBD (local SRs have one). */
export function pbdHostUuid(emu: Emulator, rec: Rec): string {
  for (const p of (rec.PBDs ?? []) as string[]) {
    const h = emu.db.get('PBD', p)?.host;
    const hr = h ? emu.db.get('host', String(h)) : undefined;
    if (hr) return String(hr.uuid);
  }
  return String(emu.db.get('host', emu.master)!.uuid);
}

/** The sum of the LVHD utilisation of the SR's VDI records (base copies included). */
function recordedUtilisation(ctx: SrCtx): number {
  let total = 0;
  for (const v of (ctx.emu.db.get('SR', ctx.sr)?.VDIs ?? []) as string[]) total += Number(ctx.emu.db.get('VDI', v)?.physical_utilisation ?? 0);
  return total;
}

export function linkedDriver(spec: LinkedSpec): SrDriver {
  const fctx = (ctx: SrCtx) => asFileSr(ctx, spec.contents(ctx));
  const util = (ctx: SrCtx, d: DiskInfo): DiskInfo => (spec.utilisation ? { ...d, physical_utilisation: spec.utilisation(ctx, d) } : d);
  const live = (ctx: SrCtx) => spec.alive?.(ctx);

  async function stats(ctx: SrCtx, valloc: number, disks?: DiskInfo[]): Promise<SrStat> {
    const size = await spec.deviceSize(ctx);
    const used = spec.utilisation
      ? (disks ? disks.reduce((n, d) => n + d.physical_utilisation, 0) : recordedUtilisation(ctx)) + LVHD_MGT_SIZE
      : await usedBytes(ctx.path);
    return { physical_size: size, physical_utilisation: used, virtual_allocation: valloc };
  }

  async function ensureSpace(ctx: SrCtx, need: number): Promise<void> {
    if (!spec.spaceFor) return;
    const s = await stats(ctx, 0);
    if (s.physical_size - s.physical_utilisation < need) throw smError('SRNoSpace');
  }

  const d: SrDriver = {
    types: spec.types,
    vhdBased: true,

    async create(ctx, physicalSize) {
      await spec.create(ctx, physicalSize);
    },

    async delete(ctx) {
      live(ctx);
      const dir = spec.contents(ctx);
      await fileSr.delete(asFileSr(ctx, dir));
      await rmdir(dir).catch(() => undefined);
    },

    async attach(ctx) {
      const dir = spec.contents(ctx);
      await spec.reach(ctx);
      // the SR's directory must be on the device (a mount of <export>/<sr-uuid> fails otherwise)
      if (!(await isDir(dir))) throw smError('SRUnavailable', `no SR directory on the device for ${ctx.uuid}`);
      await mkdir(ctx.path.slice(0, ctx.path.lastIndexOf('/')), { recursive: true });
      await fileSr.attach(asFileSr(ctx, dir));
    },

    async detach(ctx) {
      await fileSr.detach(asFileSr(ctx, spec.contents(ctx)));
    },

    probe: spec.probe,

    async scan(ctx) {
      live(ctx);
      const r = await fileSr.scan(fctx(ctx));
      const disks = r.disks.map((x) => util(ctx, x));
      const valloc = disks.reduce((n, x) => n + (x.hidden ? 0 : x.virtual_size), 0);
      return { ...r, disks, stat: await stats(ctx, valloc, disks) };
    },

    async update(ctx) {
      live(ctx);
      if (!(await isDir(ctx.path))) throw smError('SRUnavailable', `no such directory ${ctx.path}`);
      return stats(ctx, Number(ctx.emu.db.get('SR', ctx.sr)?.virtual_allocation ?? 0));
    },

    async vdiCreate(ctx, req) {
      live(ctx);
      if (spec.spaceFor) await ensureSpace(ctx, spec.spaceFor(ctx, req.size));
      return util(ctx, await fileSr.vdiCreate(fctx(ctx), req));
    },

    async vdiDelete(ctx, vdi, opts) {
      live(ctx);
      await fileSr.vdiDelete(fctx(ctx), vdi, opts);
    },

    async vdiSnapshot(ctx, vdi, opts, newUuid) {
      live(ctx);
      const r = await fileSr.vdiSnapshot(fctx(ctx), vdi, opts, newUuid);
      const base = r.base ? util(ctx, r.base) : null;
      return { result: r.result === r.base ? base! : util(ctx, r.result), base, source: util(ctx, r.source) };
    },

    async vdiResize(ctx, vdi, size) {
      live(ctx);
      if (spec.spaceFor) await ensureSpace(ctx, Math.max(0, spec.spaceFor(ctx, size) - Number(vdi.physical_utilisation)));
      return util(ctx, await fileSr.vdiResize(fctx(ctx), vdi, size));
    },

    async vdiIntroduce(ctx, req) {
      return fileSr.vdiIntroduce(fctx(ctx), req);
    },

    async vdiStat(ctx, vdi) {
      live(ctx);
      return util(ctx, await fileSr.vdiStat(fctx(ctx), vdi));
    },

    vdiPath(ctx, vdi) {
      return fileSr.vdiPath(fctx(ctx), vdi);
    },

    async openVdi(ctx, vdi, opts) {
      live(ctx);
      return fileSr.openVdi(fctx(ctx), vdi, opts);
    },
  };
  registerDriver(d);
  return d;
}

/** LVHD's management volume (MGT), on every LVHD SR. */
export const LVHD_MGT_SIZE = 4 * 1024 * 1024;
