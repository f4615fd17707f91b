// Where the contents of the fabric's exports, shares and LUNs live, inside <storage>/fabric:
//   nfs/<server>/<export path>/         an NFS export (an SR is its <sr-uuid>/ directory)
//   smb/<server>/<share>/               an SMB share (likewise)
//   lun/<SCSI id>/                      a LUN, iSCSI or FC (an LVHD SR is its VG_XenStorage-<sr-uuid>/)
//   local/<host uuid>/<device>/         a host's local disk (lvm, xfs, largeblock, zfs)
// Names come from device_config: each component is checked to be a plain name, and the result to
// stay inside the storage directory.
import { join } from 'node:path';
import { inside, isPlainName, type StorageRoot } from '../paths.js';
import { fabricDir } from './servers.js';
import { smError } from '../driver.js';

/** The components of a path a client gave ("/exports/a" -> [exports, a]); null if one is not a
 * plain name or the path is empty. */
export function pathComponents(p: string): string[] | null {
  const parts = p.split('/').filter((c) => c !== '' && c !== '.');
  if (!parts.length || parts.some((c) => c === '..' || !isPlainName(c))) return null;
  return parts;
}

function under(emu: StorageRoot, kind: string, parts: string[]): string {
  return inside(emu, join(fabricDir(emu), kind, ...parts));
}

/** A server name or address device_config gives: one that cannot name a host does not resolve. */
export const isHostName = (a: string) => isPlainName(a) && /^[A-Za-z0-9._:\[\]-]+$/.test(a);

export function nfsExportDir(emu: StorageRoot, server: string, parts: string[]): string {
  if (!isHostName(server)) throw smError('DNSError');
  return under(emu, 'nfs', [server, ...parts]);
}

export function smbShareDir(emu: StorageRoot, server: string, parts: string[]): string {
  if (!isHostName(server)) throw smError('DNSError');
  return under(emu, 'smb', [server, ...parts]);
}

export function lunDir(emu: StorageRoot, scsiId: string): string {
  if (!/^[0-9A-Za-z_-]{1,64}$/.test(scsiId)) throw smError('ConfigSCSIid');
  return under(emu, 'lun', [scsiId]);
}

export function localDeviceDir(emu: StorageRoot, hostUuid: string, device: string): string | null {
  const parts = pathComponents(device);
  return parts ? under(emu, 'local', [hostUuid, ...parts]) : null;
}
