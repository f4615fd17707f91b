// The storage fabric a pool sees: NFS servers and their exports, SMB shares, iSCSI targets and
// their LUNs, Fibre Channel LUNs. What the control API or a fixture declared is kept in
// <storage>/fabric/servers.json; anything not declared answers as a healthy server whose export,
// share, target or LUN exists (made on demand, DEFAULT_SIZE virtual), so that
// SR.create(type=nfs, {server, serverpath}) just works. A declared server has only what it
// declares: an export it does not list is missing, a service it does not list does not answer.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, renameSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import type { StorageRoot } from '../paths.js';

export const TiB = 1024 ** 4;
/** the size of an export or LUN nothing declared */
export const DEFAULT_SIZE = TiB;
export const NFS_VERSIONS = ['3', '4', '4.0', '4.1'] as const;
export const ISCSI_PORT = 3260;

export interface NfsExport { path: string; size: number }
export interface SmbShare { name: string; size: number; username?: string; password?: string }
export interface Lun { id: number; scsi_id: string; size: number; vendor: string; serial: string }
export interface IscsiTarget { iqn: string; chap?: { user: string; password: string }; luns: Lun[] }

export interface ServerDecl {
  /** host name or IP address, as device_config names it */
  address: string;
  /** false: nothing answers at this address (SM's _testHost fails) */
  reachable: boolean;
  nfs?: { versions: string[]; exports: NfsExport[] };
  smb?: { shares: SmbShare[] };
  iscsi?: { port: number; targets: IscsiTarget[] };
}

export interface FabricState {
  servers: ServerDecl[];
  /** the Fibre Channel LUNs the hosts' HBAs see; null: any SCSI id asked for exists */
  fc_luns: Lun[] | null;
}

const EMPTY: FabricState = { servers: [], fc_luns: null };

/** Where the fabric's declarations and contents live. A future pair of instances that should see
 * one fabric points both <storage>/fabric at the same directory (a symlink): nothing in it names
 * the instance. */
export const fabricDir = (emu: StorageRoot): string => join(emu.storageDir, 'fabric');
const stateFile = (emu: StorageRoot) => join(fabricDir(emu), 'servers.json');

/** The declarations, read from their file at each use (SM calls only): a pool snapshot restored
 * brings its own back. */
export function fabricState(emu: StorageRoot): FabricState {
  try {
    return { ...EMPTY, ...(JSON.parse(readFileSync(stateFile(emu), 'utf8')) as Partial<FabricState>) };
  } catch {
    return { ...EMPTY, servers: [] };
  }
}

/** Replaces the declarations, durably (written whole under a temporary name, then renamed). */
export function setFabricState(emu: StorageRoot, s: FabricState): void {
  mkdirSync(fabricDir(emu), { recursive: true });
  const tmp = `${stateFile(emu)}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 1));
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, stateFile(emu));
  const dfd = openSync(fabricDir(emu), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Declares (or replaces) one server. */
export function putServer(emu: StorageRoot, decl: ServerDecl): void {
  const s = fabricState(emu);
  setFabricState(emu, { ...s, servers: [...s.servers.filter((x) => x.address !== decl.address), decl] });
}

export function removeServer(emu: StorageRoot, address: string): boolean {
  const s = fabricState(emu);
  if (!s.servers.some((x) => x.address === address)) return false;
  setFabricState(emu, { ...s, servers: s.servers.filter((x) => x.address !== address) });
  return true;
}

export function declared(emu: StorageRoot, address: string): ServerDecl | undefined {
  return fabricState(emu).servers.find((x) => x.address === address);
}

// ---- what an undeclared server offers ----

const hex = (s: string, n: number) => createHash('sha256').update(s).digest('hex').slice(0, n);

/** The IQN an undeclared iSCSI server's one target has. */
export const defaultIqn = (address: string) => `iqn.2026-01.org.xcp-ng.xapi-emu:${address.replace(/[^A-Za-z0-9.-]/g, '-')}`;

/** A LUN's SCSI id, stable for its place in the fabric (NAA 6 form: "36" and 30 hex digits). */
export const scsiIdOf = (where: string) => `36${hex(where, 30)}`;

export function defaultLun(address: string, iqn: string, id: number): Lun {
  const serial = hex(`${address}/${iqn}/${id}/serial`, 12);
  return { id, scsi_id: scsiIdOf(`${address}/${iqn}/${id}`), size: DEFAULT_SIZE, vendor: 'XAPIEMU', serial };
}

/** An FC LUN nothing declared, for a SCSI id a client names. */
export function defaultFcLun(scsiId: string): Lun {
  return { id: 0, scsi_id: scsiId, size: DEFAULT_SIZE, vendor: 'XAPIEMU', serial: hex(`${scsiId}/serial`, 12) };
}

export interface NfsService { versions: string[]; exports: NfsExport[] | null }

/** The NFS service at an address: null when none answers; exports null: any path exists. */
export function nfsService(emu: StorageRoot, address: string): NfsService | null {
  const d = declared(emu, address);
  if (!d) return { versions: ['3', '4'], exports: null };
  if (!d.reachable || !d.nfs) return null;
  return { versions: d.nfs.versions, exports: d.nfs.exports };
}

export function smbService(emu: StorageRoot, address: string): { shares: SmbShare[] | null } | null {
  const d = declared(emu, address);
  if (!d) return { shares: null };
  if (!d.reachable || !d.smb) return null;
  return { shares: d.smb.shares };
}

export function iscsiService(emu: StorageRoot, address: string): { port: number; targets: IscsiTarget[] } | null {
  const d = declared(emu, address);
  if (!d) {
    const iqn = defaultIqn(address);
    return { port: ISCSI_PORT, targets: [{ iqn, luns: [defaultLun(address, iqn, 0)] }] };
  }
  if (!d.reachable || !d.iscsi) return null;
  return d.iscsi;
}

export function reachable(emu: StorageRoot, address: string): boolean {
  return declared(emu, address)?.reachable !== false;
}
