// The storage fabric as the control API and fixtures declare it (servers.ts keeps it, contents.ts
// says where what lives on it holds its data).
import type { StorageRoot } from '../paths.js';
import { defaultLun, DEFAULT_SIZE, fabricState, putServer, scsiIdOf, setFabricState, type Lun, type ServerDecl } from './servers.js';

export { fabricState, removeServer, fabricDir, type ServerDecl, type FabricState } from './servers.js';

export interface LunInput { id: number; scsi_id?: string; size?: number; vendor?: string; serial?: string }

export interface ServerInput {
  address: string;
  reachable?: boolean;
  nfs?: { versions?: string[]; exports?: { path: string; size?: number }[] };
  smb?: { shares?: { name: string; size?: number; username?: string; password?: string }[] };
  iscsi?: { port?: number; targets?: { iqn: string; chap?: { user: string; password: string }; luns?: LunInput[] }[] };
}

function lunOf(l: LunInput, where: { address: string; iqn: string }): Lun {
  const d = defaultLun(where.address, where.iqn, l.id);
  return { id: l.id, scsi_id: l.scsi_id ?? d.scsi_id, size: l.size ?? DEFAULT_SIZE, vendor: l.vendor ?? d.vendor, serial: l.serial ?? d.serial };
}

/** A server declaration with its defaults filled in, kept durably. */
export function declareServer(emu: StorageRoot, s: ServerInput): ServerDecl {
  const decl: ServerDecl = { address: s.address, reachable: s.reachable ?? true };
  if (s.nfs) decl.nfs = { versions: s.nfs.versions ?? ['3', '4'], exports: (s.nfs.exports ?? []).map((e) => ({ path: e.path, size: e.size ?? DEFAULT_SIZE })) };
  if (s.smb) decl.smb = { shares: (s.smb.shares ?? []).map((x) => ({ ...x, size: x.size ?? DEFAULT_SIZE })) };
  if (s.iscsi) {
    decl.iscsi = {
      port: s.iscsi.port ?? 3260,
      targets: (s.iscsi.targets ?? []).map((t) => ({
        iqn: t.iqn, ...(t.chap ? { chap: t.chap } : {}), luns: (t.luns ?? [{ id: 0 }]).map((l) => lunOf(l, { address: s.address, iqn: t.iqn })),
      })),
    };
  }
  putServer(emu, decl);
  return decl;
}

export function setFcLuns(emu: StorageRoot, luns: (LunInput & { scsi_id: string })[] | null): void {
  const fc = luns?.map((l) => ({ id: l.id, scsi_id: l.scsi_id, size: l.size ?? DEFAULT_SIZE, vendor: l.vendor ?? 'XAPIEMU', serial: l.serial ?? scsiIdOf(`${l.scsi_id}/serial`).slice(2, 14) })) ?? null;
  setFabricState(emu, { ...fabricState(emu), fc_luns: fc });
}
