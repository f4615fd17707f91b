// The local file-based SR types of XCP-ng beside ext: xfs (XFSSR: an XFS filesystem made on
// device_config:device), largeblock (LargeBlockSR: ext4 on a 4KiB-sector device, device), zfs
// (ZFSSR: a directory of a ZFS pool, location). Each is a filesystem on the host's local disk,
// <storage>/fabric/local/<host uuid>/<device>/<sr-uuid>, holding VHD files as FileSR does.
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { smError, type SrCtx } from './driver.js';
import { isUuid } from './paths.js';
import { isDir, linkedDriver, pbdHostUuid } from './linked-sr.js';
import { localDeviceDir } from './fabric/contents.js';
import { DEFAULT_DEVICE_SIZE, srListXml } from './file-sr.js';
import type { Emulator } from '../emulator.js';

/** The key naming the device: zfs names its pool's directory, the others a block device. */
const keyOf = (type: string) => (type === 'zfs' ? 'location' : 'device');

function deviceDir(emu: Emulator, type: string, hostUuid: string, dconf: Record<string, string>): string {
  const key = keyOf(type);
  if (!dconf[key]) throw smError(key === 'location' ? 'ConfigLocationMissing' : 'ConfigDeviceMissing');
  const dir = localDeviceDir(emu, hostUuid, dconf[key]);
  if (!dir) throw smError(key === 'location' ? 'ConfigLocationMissing' : 'ConfigDeviceInvalid');
  return dir;
}

const sizeFile = (dir: string) => join(dir, 'device.json');

const hostUuidOf = (ctx: SrCtx) => pbdHostUuid(ctx.emu, ctx.rec);

linkedDriver({
  types: ['xfs', 'zfs', 'largeblock'],
  contents: (ctx) => join(deviceDir(ctx.emu, ctx.type, hostUuidOf(ctx), ctx.dconf), ctx.uuid),
  async reach(ctx) {
    deviceDir(ctx.emu, ctx.type, hostUuidOf(ctx), ctx.dconf);
  },

  async create(ctx, physicalSize) {
    const dir = deviceDir(ctx.emu, ctx.type, hostUuidOf(ctx), ctx.dconf);
    const srDir = join(dir, ctx.uuid);
    if ((await isDir(srDir)) && (await readdir(srDir)).length) throw smError('SRExists');
    // a new filesystem on the device (mkfs): what it held before goes
    if (ctx.type !== 'zfs') {
      for (const old of (await readdir(dir).catch(() => [] as string[])).filter(isUuid)) await rm(join(dir, old), { recursive: true, force: true });
    }
    await mkdir(srDir, { recursive: true });
    await writeFile(sizeFile(dir), JSON.stringify({ size: physicalSize > 0 ? physicalSize : DEFAULT_DEVICE_SIZE }));
  },

  async probe(emu, type, dconf) {
    const dir = deviceDir(emu, type, String(emu.db.get('host', emu.master)!.uuid), dconf);
    const uuids = (await readdir(dir).catch(() => [] as string[])).filter(isUuid).sort();
    return srListXml(uuids.map((uuid) => ({ uuid })));
  },

  async deviceSize(ctx) {
    const dir = deviceDir(ctx.emu, ctx.type, hostUuidOf(ctx), ctx.dconf);
    try {
      const s = JSON.parse(await readFile(sizeFile(dir), 'utf8')) as { size: number };
      if (Number.isSafeInteger(s.size)) return s.size;
    } catch {
      /* not sized */
    }
    return DEFAULT_DEVICE_SIZE;
  },
});
