// The simulated host's block devices, as an XCP-ng 8.3 installation lays out its first disk
// (GPT: root, backup root, local SR, EFI boot, logs, swap) with the local SR of the database on
// sda3: for an ext SR, a logical volume XSLocalEXT-<uuid> mounted on /run/sr-mount/<uuid>; for an
// lvm SR, the volume group VG_XenStorage-<uuid> alone. What lsblk.py, lvm.py and smartctl.py read.
import type { Emulator } from '../emulator.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** a local SR's size when the host has none any more (the partition stays) */
const DEFAULT_SR_PARTITION = 500 * GiB;

export interface BlockDevice {
  name: string;
  kname: string;
  pkname: string;
  size: number;
  type: 'disk' | 'part' | 'lvm';
  ro: boolean;
  mountpoint: string;
}

export interface LocalSr {
  uuid: string;
  type: 'ext' | 'lvm';
  size: number;
}

/** The host's SR on /dev/sda3 (PBD device_config:device), if it still has one. */
export function localSrOf(emu: Emulator, host: string): LocalSr | null {
  for (const pbd of (emu.db.get('host', host)?.PBDs as string[] | undefined) ?? []) {
    const p = emu.db.get('PBD', pbd);
    if ((p?.device_config as Record<string, string> | undefined)?.device !== '/dev/sda3') continue;
    const sr = emu.db.get('SR', String(p?.SR));
    if (sr?.type === 'ext' || sr?.type === 'lvm') return { uuid: String(sr.uuid), type: sr.type, size: Number(sr.physical_size) };
  }
  return null;
}

/** The volume group an SR of the local disk is made of. */
export const vgName = (sr: LocalSr): string => `${sr.type === 'ext' ? 'XSLocalEXT' : 'VG_XenStorage'}-${sr.uuid}`;
/** The logical volume an ext SR's filesystem lives on (named after the SR's uuid). */
export const extLvSize = (sr: LocalSr): number => Math.ceil(sr.size / (4 * MiB)) * 4 * MiB;
/** sda3: the volume group's extents and its metadata area. */
export const srPartitionSize = (sr: LocalSr | null): number => (sr ? extLvSize(sr) + 16 * MiB : DEFAULT_SR_PARTITION);

/** lsblk's order: the disk, then its partitions as the kernel lists them, each followed by its holders. */
export function blockDevices(emu: Emulator, host: string): BlockDevice[] {
  const sr = localSrOf(emu, host);
  const part = (n: number, size: number, mountpoint = ''): BlockDevice => ({ name: `sda${n}`, kname: `sda${n}`, pkname: 'sda', size, type: 'part', ro: false, mountpoint });
  const sda3 = srPartitionSize(sr);
  const parts: BlockDevice[] = [
    part(4, 512 * MiB),
    part(2, 18 * GiB),
    part(5, 4 * GiB, '/var/log'),
    part(3, sda3),
  ];
  if (sr?.type === 'ext') {
    // device-mapper doubles the dashes of the names it joins
    const dm = `${vgName(sr).replace(/-/g, '--')}-${sr.uuid.replace(/-/g, '--')}`;
    parts.push({ name: dm, kname: 'dm-0', pkname: 'sda3', size: extLvSize(sr), type: 'lvm', ro: false, mountpoint: `/run/sr-mount/${sr.uuid}` });
  }
  parts.push(part(1, 18 * GiB, '/'), part(6, 1 * GiB, '[SWAP]'));
  const total = parts.filter((p) => p.type === 'part').reduce((s, p) => s + p.size, 0) + 2 * MiB;
  return [{ name: 'sda', kname: 'sda', pkname: '', size: total, type: 'disk', ro: false, mountpoint: '' }, ...parts];
}
