// The iso SR type (SM's ISOSR): a directory of ISO images, each file a VDI whose location is its
// file name. The emulator cannot mount NFS or CIFS shares: the share is the SR's mount point
// <storage>/sr/<sr-uuid>, whose files outlive PBD.unplug and SR.destroy as a share's would. A
// location that is an absolute path inside the storage directory is used directly (symlinked).
// The tools SR (other_config:xenserver_tools_sr) never forgets its images: they are marked missing.
import { lstat, mkdir, readdir, readlink, rmdir, stat, statfs, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { xapiDate } from '../clock.js';
import { RawFile, registerDriver, smError, unimplemented, type DiskInfo, type SrCtx, type SrDriver, type SrStat } from './driver.js';
import { isPlainName, isUsableLocation, srBase, srFile } from './paths.js';

const IMAGE = /\.(iso|img)$/i;
const UUID_FILE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(iso|img)$/i;
const VDI_PATH = /^[a-z0-9.-]+\.(iso|img)$/i;

function requireLocation(ctx: SrCtx): void {
  if (!ctx.dconf.location) throw smError('ConfigLocationMissing');
}

/** A local directory the location names, when the emulator may use it. */
function localDir(ctx: SrCtx): string | null {
  const loc = ctx.dconf.location;
  if (!loc || !isAbsolute(loc)) return null;
  return isUsableLocation(ctx.emu, loc) ? resolve(loc) : null;
}

async function mount(ctx: SrCtx): Promise<void> {
  await mkdir(srBase(ctx.emu), { recursive: true });
  const local = localDir(ctx);
  const st = await lstat(ctx.path).catch(() => null);
  if (local) {
    if (!(await stat(local).catch(() => null))?.isDirectory()) throw smError('ISOLocalPath');
    if (st?.isSymbolicLink()) {
      if (resolve(dirname(ctx.path), await readlink(ctx.path)) === local) return;
      await unlink(ctx.path);
    } else if (st) {
      // an empty mount point only: never drop images
      await rmdir(ctx.path).catch(() => { throw smError('ISOMountFailure', `mount point ${ctx.path} is busy`); });
    }
    await symlink(local, ctx.path, 'dir');
    return;
  }
  if (!st) await mkdir(ctx.path, { recursive: true });
}

function imageInfo(ctx: SrCtx, name: string, size: number, prev?: Record<string, unknown>): DiskInfo {
  const m = UUID_FILE.exec(name);
  const prevSm = (prev?.sm_config ?? {}) as Record<string, string>;
  // an image made by VDI.create (sm_config:created) stays writable
  const created = prevSm.created;
  return {
    uuid: m ? m[1].toLowerCase() : '',
    location: name,
    name_label: name,
    name_description: '',
    virtual_size: size,
    physical_utilisation: size,
    read_only: !created,
    managed: true,
    hidden: false,
    parent: null,
    sm_config: created ? { created } : {},
    type: 'user',
  };
}

async function stats(ctx: SrCtx, used: number): Promise<SrStat> {
  if (ctx.rec.other_config && (ctx.rec.other_config as Record<string, string>).xenserver_tools_sr === 'true') {
    // dom0's root filesystem, as the default pool describes it
    const size = Number(ctx.rec.physical_size);
    return { physical_size: size, physical_utilisation: Number(ctx.rec.physical_utilisation), virtual_allocation: size };
  }
  const fs = await statfs(ctx.path);
  const size = fs.blocks * fs.bsize;
  return { physical_size: size, physical_utilisation: used, virtual_allocation: size };
}

function imagePath(ctx: SrCtx, location: string): string {
  if (!isPlainName(location)) throw smError('VDIUnavailable', `invalid location ${location}`);
  return srFile(ctx.emu, ctx.uuid, location);
}

/** ISOSR on the tools SR: one image is the official tools ISO (sm_config:xs-tools, hence
 * VDI.is_tools_iso): the first, unless a later one has a higher xs-tools-build; a guest-tools* or
 * xs-tools* image is labelled by its kind rather than its versioned file name. */
function markToolsIso(disks: DiskInfo[]): void {
  let best: DiskInfo | undefined;
  for (const d of disks) {
    if (/^(xs|guest)-tools/.test(d.location)) d.name_label = d.location.startsWith('xs-') ? 'xs-tools.iso' : 'guest-tools.iso';
    const build = d.sm_config['xs-tools-build'];
    if (!best || (build != null && build >= (best.sm_config['xs-tools-build'] ?? '0'))) best = d;
  }
  for (const d of disks) d.sm_config = { ...d.sm_config, 'xs-tools': d === best ? 'true' : null };
}

const isoSr: SrDriver = {
  types: ['iso'],
  vhdBased: false,

  async create(ctx) {
    requireLocation(ctx);
    await mount(ctx);
  },
  async delete() {
    // ISOSR.delete does nothing: the share keeps its images
  },
  async attach(ctx) {
    requireLocation(ctx);
    await mount(ctx);
  },
  async detach(ctx) {
    const st = await lstat(ctx.path).catch(() => null);
    if (st?.isSymbolicLink()) await unlink(ctx.path);
  },
  async probe() {
    throw unimplemented();
  },

  async scan(ctx) {
    if (!(await stat(ctx.path).catch(() => null))?.isDirectory()) throw smError('SRUnavailable', `no such directory ${ctx.path}`);
    const byLocation = new Map<string, Record<string, unknown>>();
    for (const v of ctx.rec.VDIs as string[]) {
      const r = ctx.emu.db.get('VDI', v);
      if (r) byLocation.set(String(r.location), r);
    }
    const disks: DiskInfo[] = [];
    let used = 0;
    for (const name of (await readdir(ctx.path)).sort()) {
      if (!IMAGE.test(name) || !isPlainName(name)) continue;
      const st = await stat(srFile(ctx.emu, ctx.uuid, name)).catch(() => null);
      if (!st?.isFile()) continue;
      used += st.size;
      disks.push(imageInfo(ctx, name, st.size, byLocation.get(name)));
    }
    const tools = (ctx.rec.other_config as Record<string, string>)?.xenserver_tools_sr === 'true';
    if (tools) markToolsIso(disks);
    return { disks, stat: await stats(ctx, used), keepGone: tools };
  },

  async update(ctx) {
    // ISOSR has no sr_update: the SR keeps what its last scan found
    const r = ctx.rec;
    return { physical_size: Number(r.physical_size), physical_utilisation: Number(r.physical_utilisation), virtual_allocation: Number(r.virtual_allocation) };
  },

  async vdiCreate(ctx, { uuid, size, smConfig }) {
    await mount(ctx);
    let name = `${uuid}.img`;
    if (smConfig.path !== undefined) {
      if (!VDI_PATH.test(smConfig.path)) throw smError('VDICreate', `Invalid path "${smConfig.path}"`);
      name = smConfig.path;
    }
    const file = imagePath(ctx, name);
    if (await stat(file).catch(() => null)) throw smError('VDIExists');
    try {
      await writeFile(file, '');
      await truncate(file, size);
    } catch {
      throw smError('VDICreate', `could not create file: "${file}"`);
    }
    const created = xapiDate(ctx.emu.clock.now());
    return {
      uuid, location: name, name_label: '', name_description: '', virtual_size: size, physical_utilisation: 0,
      read_only: false, managed: true, hidden: false, parent: null, sm_config: { ...smConfig, created },
    };
  },

  async vdiDelete(ctx, vdi) {
    const file = imagePath(ctx, String(vdi.location));
    try {
      await unlink(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw smError('VDIDelete');
    }
  },

  async vdiSnapshot() {
    throw unimplemented();
  },
  async vdiResize() {
    throw unimplemented();
  },
  async vdiIntroduce() {
    throw unimplemented();
  },

  async vdiStat(ctx, vdi) {
    const name = String(vdi.location);
    const st = await stat(imagePath(ctx, name)).catch(() => null);
    if (!st) throw smError('VDIMissing');
    return { ...imageInfo(ctx, name, st.size, vdi), uuid: String(vdi.uuid) };
  },

  vdiPath(ctx, vdi) {
    return imagePath(ctx, String(vdi.location));
  },

  async openVdi(ctx, vdi, { readOnly }) {
    try {
      return await RawFile.open(imagePath(ctx, String(vdi.location)), readOnly);
    } catch {
      throw smError('VDIMissing');
    }
  },
};

registerDriver(isoSr);
export default isoSr;
