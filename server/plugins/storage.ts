// XCP-ng's storage plugins on the simulated disks (disks.ts): lsblk.py, lvm.py, smartctl.py,
// raid.py (no md array) and zfs.py (no zfs).
import { installPlugin, notSimulated, commandFailed, pyJson } from './registry.js';
import type { Emulator } from '../emulator.js';
import { blockDevices, extLvSize, localSrOf, srPartitionSize, vgName, type LocalSr } from './disks.js';

type Device = Record<string, unknown> & { children?: Device[] };

installPlugin('lsblk.py', {
  // `lsblk -P -b -o NAME,KNAME,PKNAME,SIZE,TYPE,RO,MOUNTPOINT` nested by parent, all values strings
  list_block_devices: ({ emu, host }) => {
    const roots: Device[] = [];
    const byKname = new Map<string, Device>();
    for (const d of blockDevices(emu, host)) {
      const out: Device = { name: d.name, kname: d.kname, pkname: d.pkname, size: String(d.size), type: d.type, ro: d.ro ? '1' : '0', mountpoint: d.mountpoint };
      const parent = d.pkname ? byKname.get(d.pkname) : undefined;
      if (parent) (parent.children ??= []).push(out);
      else roots.push(out);
      byKname.set(d.kname, out);
    }
    return pyJson({ blockdevices: roots });
  },
});

/** An ext SR: one volume holding its filesystem; an lvm SR: its MGT volume and one VHD-<uuid> per VDI. */
function logicalVolumes(emu: Emulator, sr: LocalSr): Record<string, { vg_name: string; attributes: string; capacity: number; pool: string }> {
  const vg = vgName(sr);
  if (sr.type === 'ext') return { [sr.uuid]: { vg_name: vg, attributes: '-wi-ao----', capacity: extLvSize(sr), pool: '' } };
  const out: ReturnType<typeof logicalVolumes> = { MGT: { vg_name: vg, attributes: '-wi-a-----', capacity: 4 * 1024 * 1024, pool: '' } };
  const srRef = emu.db.refByUuid('SR', sr.uuid);
  for (const vdi of (srRef ? (emu.db.get('SR', srRef)?.VDIs as string[] | undefined) : undefined) ?? []) {
    const v = emu.db.get('VDI', vdi);
    if (v) out[`VHD-${String(v.uuid)}`] = { vg_name: vg, attributes: '-wi-------', capacity: Number(v.physical_utilisation), pool: '' };
  }
  return out;
}

function vgFree(emu: Emulator, sr: LocalSr, size: number): number {
  const used = Object.values(logicalVolumes(emu, sr)).reduce((sum, lv) => sum + lv.capacity, 0);
  return Math.max(0, size - used);
}

const lvm = 'lvm.py';
installPlugin(lvm, {
  list_physical_volumes: ({ emu, host }) => {
    const sr = localSrOf(emu, host);
    if (!sr) return '{}';
    const size = srPartitionSize(sr) - 4 * 1024 * 1024;
    return pyJson({ '/dev/sda3': { vg_name: vgName(sr), format: 'lvm2', attributes: 'a--', capacity: size, free: vgFree(emu, sr, size) } });
  },
  list_volume_groups: ({ emu, host, args }) => {
    const sr = localSrOf(emu, host);
    const name = args.vg_name;
    // (vgs naming a group that does not exist: the plugin answers an empty map)
    if (!sr || (name && name !== vgName(sr))) return '{}';
    const size = srPartitionSize(sr) - 4 * 1024 * 1024;
    const lvs = Object.keys(logicalVolumes(emu, sr)).length;
    return pyJson({ [vgName(sr)]: { pv_count: 1, lv_count: lvs, sn_count: 0, attributes: 'wz--n-', capacity: size, free: vgFree(emu, sr, size) } });
  },
  list_logical_volumes: ({ emu, host, args }) => {
    const sr = localSrOf(emu, host);
    if (!sr || (args.vg_name && args.vg_name !== vgName(sr))) {
      // lvs on a volume group that does not exist exits 5
      if (args.vg_name) {
        throw commandFailed(['lvs', '--noheadings', '--units', 'B', '--nosuffix', '--separator', ':', '-olv_name,vg_name,lv_attr,lv_size,pool_lv', args.vg_name], 5, '', `  Volume group "${args.vg_name}" not found\n  Cannot process volume group ${args.vg_name}\n`);
      }
      return '{}';
    }
    return pyJson(logicalVolumes(emu, sr));
  },
  create_physical_volume: notSimulated(lvm),
  create_volume_group: notSimulated(lvm),
  destroy_volume_group: notSimulated(lvm),
  create_thin_pool: notSimulated(lvm),
});

/** `smartctl --scan`: the one SATA disk, seen through the SCSI layer. */
const SMART_DEVICE = { name: '/dev/sda', type: 'scsi' };

installPlugin('smartctl.py', {
  health: () => pyJson({ [`${SMART_DEVICE.name}:${SMART_DEVICE.type}`]: 'PASSED' }),
  // `smartctl -j -a`: the parts of its JSON that describe the disk and its health
  information: ({ emu, host }) => {
    const size = blockDevices(emu, host)[0].size;
    const serial = String(emu.db.get('host', host)?.uuid ?? '').replace(/-/g, '').slice(0, 20).toUpperCase();
    return pyJson({
      [`${SMART_DEVICE.name}:${SMART_DEVICE.type}`]: {
        json_format_version: [1, 0],
        smartctl: { version: [7, 0], svn_revision: '4883', platform_info: 'x86_64-linux-4.19.0+1', build_info: '(local build)', argv: ['smartctl', '-j', '-a', '-d', SMART_DEVICE.type, SMART_DEVICE.name], exit_status: 0 },
        device: { name: SMART_DEVICE.name, info_name: SMART_DEVICE.name, type: SMART_DEVICE.type, protocol: 'SCSI' },
        vendor: 'ATA',
        product: 'XAPI-EMU DISK',
        model_name: 'ATA XAPI-EMU DISK',
        revision: '1.0',
        serial_number: serial,
        user_capacity: { blocks: size / 512, bytes: size },
        logical_block_size: 512,
        rotation_rate: 0,
        smart_status: { passed: true },
        temperature: { current: 30, drive_trip: 70 },
        power_on_time: { hours: 0 },
      },
    });
  },
});

// mdadm --detail /dev/md127 fails: no software RAID
installPlugin('raid.py', { check_raid_pool: () => '{}' });
// no zfs command: the plugin answers an empty map
installPlugin('zfs.py', { list_zfs_pools: () => '{}' });
