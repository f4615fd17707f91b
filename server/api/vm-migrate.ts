// VM.migrate_send, VM.assert_can_migrate / assert_can_migrate_sender and host.migrate_receive
// (xapi_vm_migrate.ml, xapi_host.ml's migrate_receive, the VM part of message_forwarding.ml), and
// VDI.pool_migrate, which xapi implements as a migrate_send of the VM to a host seeing the SRs with
// only that disk mapped elsewhere. Within the pool: the VM's disks mapped to another SR move
// through the storage motion of vdi-migrate.ts (mirrored while the VM runs, copied otherwise),
// those of its snapshots and its suspend image are copied, and a running VM's domain moves with
// xenopsd's VM_migrate (xenopsd/migrate.ts), its disks switched to the new VDIs between the close of
// the old tapdisks and the open of the new ones. To another pool (another emulator, reached over
// HTTP with the token's session, migrate-remote.ts): the disks through its /import_raw_vdi, the VM
// through its /import_metadata (with its snapshots, whose disks are made snapshots of the disk's copy
// through the destination's /services/SM), started there, or suspended there on its copied image.
// The VDIs a migration makes carry sm_config base_mirror until it ends: migrate-recovery.ts cleans
// up after one cut by a stop. A migration can be cancelled until its point of no return.
import { Readable } from 'node:stream';
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { poolRuntime } from '../pool/runtime.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { migrateVm, MigrationError, XenopsError } from '../xenopsd/index.js';
import { recordOf } from './generic.js';
import { createSession, destroySession } from './session.js';
import { updateAllowedOperations, withOperation } from './operations.js';
import { setProgress, vmCheck } from './VM.js';
import {
  forceStateReset, hostFreeMemory, linuxDevice, memoryRequired, refreshAllowed, syncHost, syncVm, toXapiFromXenops, vmSpec, withEventsSuppressed, xenopsOf,
} from './xenops-sync.js';
import { abandonMove, assertSrSupports, BASE_MIRROR, destroyVdi, finishMove, mirrorId, prepareMove, receiveFinalize, type DiskMove } from './vdi-migrate.js';
import { RemotePool, refsOf } from './migrate-remote.js';
import { inSubtask } from './operations.js';
import { assertNotCancelling } from './task-runner.js';
import { callMessage } from './vm-snapshot.js';
import { vmMigratedMessage } from './pool-ops.js';
import { vdiPath, withVdiFile } from '../sm/index.js';
import { exportVhd } from '../../storage/vhd/index.js';
import { vmMetadata } from '../xva/ova.js';
import { tarEnd, tarHeader, tarPadding } from '../xva/tar.js';

// ---- the token (host.migrate_receive) ----

/** the keys of migrate_receive's answer (Xapi_vm_migrate._sm, _host ...) */
export const TOKEN = { sm: 'SM', host: 'host', xenops: 'xenops', session: 'session_id', master: 'master' } as const;

/** ":<port>" the pool's hosts listen on, as the running server tells ("" for an emulator no
 * server runs, or on the scheme's port) */
function portSuffix(emu: Emulator): string {
  const port = poolRuntime(emu)?.port();
  return port && port !== 80 ? `:${port}` : '';
}

const urlHost = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);

/** Xapi_host.migrate_receive: a session for the migration (the caller's identity) and the URLs
 * of the host's address on `network` and of the pool's master. */
function migrateReceive(call: Call, host: string, network: string): Record<string, string> {
  const { emu } = call;
  if (!emu.db.has('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host]);
  const net = emu.db.get('network', network);
  if (!net) throw new XapiError('HANDLE_INVALID', ['network', network]);
  const pif = (net.PIFs as string[]).find((p) => emu.db.get('PIF', p)?.host === host);
  if (!pif) throw new XapiError('HOST_CANNOT_ATTACH_NETWORK', [host, network]);
  const ip = pifAddress(emu, pif);
  const caller = emu.db.get('session', call.session);
  const session = createSession(emu, host, { uname: String(caller?.auth_user_name ?? 'root'), superuser: caller?.is_local_superuser !== false, role: 'pool-admin' }, '');
  // login_no_password: the caller's subject and permissions
  if (caller) {
    emu.db.update('session', session, {
      pool: caller.pool, subject: caller.subject, auth_user_sid: caller.auth_user_sid, rbac_permissions: [...(caller.rbac_permissions as string[])],
    });
  }
  const port = portSuffix(emu);
  const base = `http://${urlHost(ip)}${port}`;
  const master = String(emu.db.get('host', emu.master)?.address ?? ip);
  return {
    [TOKEN.sm]: `${base}/services/SM?session_id=${session}`,
    [TOKEN.host]: host,
    [TOKEN.xenops]: `${base}/services/xenops?session_id=${session}`,
    [TOKEN.session]: session,
    [TOKEN.master]: `http://${urlHost(master)}${port}`,
  };
}

/** The PIF's address by its primary address type; none is PIF_HAS_NO_NETWORK_CONFIGURATION (mode
 * None) or INTERFACE_HAS_NO_IP. */
function pifAddress(emu: Emulator, pif: string): string {
  const p = emu.db.get('PIF', pif)!;
  const v6 = p.primary_address_type === 'IPv6';
  const mode = String(v6 ? p.ipv6_configuration_mode : p.ip_configuration_mode);
  const ip = v6 ? String(((p.IPv6 as string[]) ?? []).find((a) => !a.toLowerCase().startsWith('fe80')) ?? '').replace(/\/\d+$/, '') : String(p.IP ?? '');
  if (ip === '') throw new XapiError(mode === 'None' ? 'PIF_HAS_NO_NETWORK_CONFIGURATION' : 'INTERFACE_HAS_NO_IP', [pif]);
  return ip;
}

interface Remote {
  host: string;
  session: string;
  master: string;
  /** the destination host's storage interface */
  sm: string;
  intraPool: boolean;
}

/** Xapi_vm_migrate.remote_of_dest: a token without one of its keys fails as List.assoc does. */
function remoteOf(emu: Emulator, dest: Record<string, string>): Remote {
  const d = dest ?? {};
  for (const k of Object.values(TOKEN)) if (typeof d[k] !== 'string') throw new XapiError('INTERNAL_ERROR', ['Not_found']);
  const host = d[TOKEN.host];
  return { host, session: d[TOKEN.session], master: d[TOKEN.master], sm: d[TOKEN.sm], intraPool: emu.db.has('host', host) };
}


const bool = (options: Record<string, string> | undefined, k: string) => String(options?.[k] ?? '').toLowerCase() === 'true';

// ---- the disks of a migration ----

interface VmDisk {
  vbd: string;
  vdi: string;
  vm: string;
  mode: string;
}

/** vdi_filter: the VBDs with a disk (neither empty nor CD) of the VM */
function disksOf(emu: Emulator, vm: string): VmDisk[] {
  const out: VmDisk[] = [];
  for (const b of (emu.db.get('VM', vm)?.VBDs as string[]) ?? []) {
    const r = emu.db.get('VBD', b);
    if (!r || r.empty === true || r.type === 'CD' || !emu.db.has('VDI', String(r.VDI))) continue;
    out.push({ vbd: b, vdi: String(r.VDI), vm, mode: String(r.mode) });
  }
  return out;
}

const isLive = (rec: Rec) => rec.power_state === 'Running' || rec.power_state === 'Paused';

/** Helpers.host_has_pbd_for_sr, with the PBD plugged (an SR the host sees) */
function hostSeesSr(emu: Emulator, host: string, sr: string): boolean {
  return ((emu.db.get('SR', sr)?.PBDs as string[]) ?? []).some((p) => {
    const pbd = emu.db.get('PBD', p);
    return pbd?.host === host && pbd.currently_attached === true;
  });
}

/** check_vdi_map: every disk of the VM has a destination SR */
function checkVdiMap(disks: VmDisk[], vdiMap: Record<string, string>): void {
  for (const d of disks) if (!Object.prototype.hasOwnProperty.call(vdiMap, d.vdi)) throw new XapiError('VDI_NOT_IN_MAP', [d.vdi]);
}

const srOfVdi = (emu: Emulator, vdi: string) => String(recordOf(emu, 'VDI', vdi).SR);

/** the (VDI, SR) pairs of the map whose disk changes SR */
function moving(emu: Emulator, vdiMap: Record<string, string>): [string, string][] {
  return Object.entries(vdiMap ?? {}).filter(([vdi, sr]) => srOfVdi(emu, vdi) !== sr);
}

/** assert_can_migrate_vdis: a disk that moves has no CBT and no encryption */
function assertCanMigrateVdis(emu: Emulator, vdiMap: Record<string, string>): void {
  for (const [vdi] of moving(emu, vdiMap)) {
    const r = emu.db.get('VDI', vdi)!;
    if (r.cbt_enabled === true) throw new XapiError('VDI_CBT_ENABLED', [vdi]);
    if (Object.prototype.hasOwnProperty.call(r.sm_config ?? {}, 'key_hash')) throw new XapiError('VDI_IS_ENCRYPTED', [vdi]);
  }
}

/** Xapi_vm_migrate.assert_can_migrate within the pool: what the destination must offer. */
function assertCanMigrate(emu: Emulator, vm: string, dest: Record<string, string>, vdiMap: Record<string, string>, vifMap: Record<string, string>): Remote {
  const rec = recordOf(emu, 'VM', vm);
  const remote = remoteOf(emu, dest);
  checkVdiMap(disksOf(emu, vm), vdiMap ?? {});
  for (const sr of Object.values(vdiMap ?? {})) if (!emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  // the SRs a disk leaves and enters must support the mirror
  for (const [vdi, sr] of moving(emu, vdiMap)) {
    assertSrSupports(emu, srOfVdi(emu, vdi), ['VDI_SNAPSHOT', 'VDI_MIRROR']);
    assertSrSupports(emu, sr, ['VDI_SNAPSHOT', 'VDI_MIRROR_IN']);
  }
  // assert_can_boot_here ~do_sr_check:false: the host is up and enabled and has the memory
  const h = emu.db.get('host', remote.host)!;
  if (emu.db.get('host_metrics', String(h.metrics))?.live === false) throw new XapiError('HOST_NOT_LIVE', []);
  if (h.enabled !== true) throw new XapiError('HOST_DISABLED', [remote.host]);
  const needed = memoryRequired(rec);
  const free = hostFreeMemory(emu, remote.host);
  if (isLive(rec) && needed > free) throw new XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', [String(needed), String(free)]);
  if (Object.keys(vifMap ?? {}).length > 0) {
    throw new XapiError('OPERATION_NOT_ALLOWED', ['VIF mapping is not allowed for intra-pool migration -all VIFs must be on the same network']);
  }
  assertCanMigrateVdis(emu, vdiMap ?? {});
  // the destination host must see the SR each disk ends on (the mirror's destination is attached there)
  for (const d of disksOf(emu, vm)) {
    const sr = vdiMap[d.vdi];
    if (!hostSeesSr(emu, remote.host, sr)) throw new XapiError('VM_REQUIRES_SR', [vm, sr]);
  }
  return remote;
}

/** assert_can_migrate_sender: a running VM's vGPUs must find a compatible pGPU there. The
 * emulated hosts have no pGPU: a live VM with a vGPU cannot go. */
function assertCanMigrateSender(emu: Emulator, vm: string, dest: Record<string, string>): void {
  const rec = recordOf(emu, 'VM', vm);
  remoteOf(emu, dest);
  if (rec.power_state !== 'Halted' && ((rec.VGPUs as string[]) ?? []).length > 0) throw new XapiError('VM_HAS_VGPU', [vm]);
}

// ---- migrate_send ----

/** Xapi_vm_migrate.with_migrate: at most 3 storage migrations at once per host */
const MAX_STORAGE_MIGRATES = 3;
const inFlight = new WeakMap<Emulator, number>();

async function withMigrate<T>(emu: Emulator, fn: () => Promise<T>): Promise<T> {
  const n = inFlight.get(emu) ?? 0;
  if (n >= MAX_STORAGE_MIGRATES) throw new XapiError('TOO_MANY_STORAGE_MIGRATES', [String(MAX_STORAGE_MIGRATES)]);
  inFlight.set(emu, n + 1);
  try {
    return await fn();
  } finally {
    inFlight.set(emu, (inFlight.get(emu) ?? 1) - 1);
  }
}

/** A disk of a snapshot or a suspend image: copied, never mirrored (migrate_send's extra_vdis). */
interface ExtraMove extends DiskMove {
  kind: 'snapshot' | 'suspend';
}

/** Where the disks of the VM's snapshots and the suspend images go (migrate_send's extra_vdi_map):
 * their own entry, that of the disk they are a snapshot of, the pool's suspend / default SR. */
function extraMoves(emu: Emulator, vm: string, rec: Rec, vdiMap: Record<string, string>, destHost: string): ExtraMove[] {
  const pool = emu.db.get('pool', emu.pool)!;
  const defaultSr = emu.db.has('SR', String(pool.default_SR)) ? String(pool.default_SR) : null;
  const suspendSr = emu.db.has('SR', String(pool.suspend_image_SR)) ? String(pool.suspend_image_SR)
    : emu.db.has('SR', String(emu.db.get('host', destHost)?.suspend_image_sr)) ? String(emu.db.get('host', destHost)!.suspend_image_sr) : null;
  const out: ExtraMove[] = [];
  const seen = new Set<string>(Object.keys(vdiMap));
  const place = (vdi: string, kind: 'snapshot' | 'suspend') => {
    if (seen.has(vdi)) return;
    seen.add(vdi);
    const r = recordOf(emu, 'VDI', vdi);
    const of = String(r.snapshot_of);
    const sr = vdiMap[vdi] ?? vdiMap[of] ?? (kind === 'suspend' ? suspendSr ?? defaultSr : defaultSr);
    if (!sr) throw new XapiError('VDI_NOT_IN_MAP', [vdi]);
    if (sr !== r.SR) out.push({ vdi, sr, size: Number(r.virtual_size), kind });
  };
  const snapshots = (rec.snapshots as string[]) ?? [];
  for (const s of snapshots) for (const d of disksOf(emu, s)) place(d.vdi, 'snapshot');
  for (const v of [vm, ...snapshots]) {
    const r = emu.db.get('VM', v);
    const sv = String(r?.suspend_VDI);
    if (r?.power_state !== 'Suspended' || !emu.db.has('VDI', sv)) continue;
    // a suspend image the destination sees stays where it is
    if (hostSeesSr(emu, destHost, srOfVdi(emu, sv))) continue;
    // the host copying it must see it
    if (!emu.hosts.some((h) => hostSeesSr(emu, h, srOfVdi(emu, sv)))) throw new XapiError('SUSPEND_IMAGE_NOT_ACCESSIBLE', [sv]);
    place(sv, 'suspend');
  }
  return out;
}

/** intra_pool_vdi_remap (and update_snapshot_info): the VBDs and suspend images of the VM and its
 * snapshots follow their disks to the new VDIs. */
function remapVdis(emu: Emulator, vm: string, moves: DiskMove[]): void {
  const to = new Map(moves.filter((m) => m.dest).map((m) => [m.vdi, m.dest!]));
  const rec = emu.db.get('VM', vm)!;
  for (const v of [vm, ...((rec.snapshots as string[]) ?? [])]) {
    const r = emu.db.get('VM', v);
    if (!r) continue;
    for (const b of r.VBDs as string[]) {
      const n = to.get(String(emu.db.get('VBD', b)?.VDI));
      if (n) emu.db.update('VBD', b, { VDI: n });
    }
    const sv = to.get(String(r.suspend_VDI));
    if (sv) emu.db.update('VM', v, { suspend_VDI: sv });
    const ssr = String(r.suspend_SR);
    if (emu.db.has('SR', ssr) && r.resident_on !== NULL_REF && !hostSeesSr(emu, String(r.resident_on), ssr)) emu.db.update('VM', v, { suspend_SR: NULL_REF });
  }
  // the copies of snapshot disks are snapshots of the new disks
  for (const m of moves) {
    if (!m.dest) continue;
    const old = emu.db.get('VDI', m.vdi)!;
    if (old.is_a_snapshot !== true) continue;
    emu.db.update('VDI', m.dest, { is_a_snapshot: true, snapshot_of: to.get(String(old.snapshot_of)) ?? old.snapshot_of, snapshot_time: old.snapshot_time });
  }
  for (const m of moves) {
    if (!m.dest) continue;
    receiveFinalize(emu, m.dest);
    updateAllowedOperations(emu, 'VDI', m.dest);
  }
}

/** The XenAPI error of a failed domain move (as pool_migrate's). */
function migrationError(emu: Emulator, e: unknown, vm: string, src: string, dst: string): unknown {
  if (e instanceof XenopsError && e.kind === 'Not_enough_memory') return new XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', [e.args[0] ?? '', String(hostFreeMemory(emu, dst))]);
  if (e instanceof MigrationError) {
    const inner = e.cause instanceof XapiError ? e.cause : toXapiFromXenops(e.cause, vm);
    const msg = inner instanceof XapiError ? [inner.code, ...inner.params].join(': ') : (e.cause as Error)?.message ?? String(e.cause);
    return new XapiError('VM_MIGRATE_FAILED', [vm, src, dst, msg]);
  }
  return toXapiFromXenops(e, vm);
}

/** TaskHelper.set_cancellable / set_not_cancellable */
function setCancellable(emu: Emulator, task: string, on: boolean): void {
  if (emu.db.has('task', task)) emu.db.update('task', task, { allowed_operations: on ? ['cancel'] : [] });
}

/** A migration that fails while its task is being cancelled failed because of it: TASK_CANCELLED
 * (migrate_send's handler checks exn_if_cancelling before it looks at the error). */
function cancelledOr(emu: Emulator, task: string, e: unknown): unknown {
  try {
    assertNotCancelling(emu, task);
  } catch (c) {
    return c;
  }
  return e;
}

/** migrate_send' within the pool, the VM marked migrate_send. Returns the VM. */
async function migrateIntraPool(call: Call, vm: string, remote: Remote, vdiMap: Record<string, string>): Promise<string> {
  const { emu } = call;
  const rec = recordOf(emu, 'VM', vm);
  const live = isLive(rec);
  const src = String(rec.resident_on);
  const dst = remote.host;
  const disks = disksOf(emu, vm);
  checkVdiMap(disks, vdiMap);
  // Block SXM when the VM has a VDI with on_boot=reset
  for (const d of disks) if (emu.db.get('VDI', d.vdi)?.on_boot === 'reset') throw new XapiError('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', [d.vdi]);
  const uuid = String(rec.uuid);
  const moves: DiskMove[] = disks.filter((d) => vdiMap[d.vdi] !== srOfVdi(emu, d.vdi)).map((d) => ({
    vdi: d.vdi, sr: vdiMap[d.vdi], size: Number(emu.db.get('VDI', d.vdi)!.virtual_size),
    device: live && d.mode === 'RW' ? linuxDevice(rec, emu.db.get('VBD', d.vbd)!) : undefined,
  }));
  const extras = extraMoves(emu, vm, rec, vdiMap, dst);
  // smaller disks first (as xapi sorts them), progress by bytes copied
  const all: DiskMove[] = [...moves, ...extras].sort((a, b) => a.size - b.size);
  const total = all.reduce((n, m) => n + m.size, 0);
  const copyShare = live ? 0.9 : 1;
  let done = 0;
  // the copies stop at the next block once the task is cancelled
  const progress = (n: number) => {
    done += n;
    if (total > 0) setProgress(emu, call.task, (copyShare * Math.min(done, total)) / total);
    assertNotCancelling(emu, call.task);
  };
  if (live) emu.db.update('VM', vm, { scheduled_to_be_resident_on: dst });
  const from = live ? xenopsOf(emu, src) : null;
  try {
    for (const m of all) {
      const tapdisk = m.device && from ? from.tapdisk(uuid, m.device) : null;
      if (m.device && !tapdisk) throw new XapiError('MIRROR_FAILED', [m.vdi]);
      await prepareMove(call, m, tapdisk, progress);
    }
    assertNotCancelling(emu, call.task);
    if (live) {
      const to = xenopsOf(emu, dst);
      // xenopsd's vdi_map: the VM's disks are the new VDIs on the destination
      const spec = vmSpec(emu, vm);
      for (const v of spec.vbds) {
        const m = moves.find((x) => v.backend && emu.db.get('VDI', x.vdi)?.uuid === v.backend.vdi);
        if (!m?.dest) continue;
        const n = emu.db.get('VDI', m.dest)!;
        v.backend = { sr: String(emu.db.get('SR', String(n.SR))!.uuid), vdi: String(n.uuid) };
      }
      try {
        await withEventsSuppressed(emu, dst, uuid, () => migrateVm(from!, to, spec, {
          progress: (p) => setProgress(emu, call.task, copyShare + (1 - copyShare) * p),
          // the source's tapdisks are closed: what the guest wrote during the copy goes across
          beforeAttach: async () => {
            for (const m of moves) await finishMove(emu, m);
          },
        }));
      } catch (e) {
        throw migrationError(emu, e, vm, src, dst);
      }
    }
    // no way back from here (TaskHelper.set_not_cancellable)
    setCancellable(emu, call.task, false);
  } catch (e) {
    for (const m of all) await abandonMove(call, m);
    throw cancelledOr(emu, call.task, e);
  } finally {
    if (live && emu.db.has('VM', vm)) {
      emu.db.update('VM', vm, { scheduled_to_be_resident_on: NULL_REF });
      syncHost(emu, src);
      syncHost(emu, dst);
    }
  }
  // the VM now runs on the new disks: the database follows, the old disks go
  remapVdis(emu, vm, all);
  if (live) {
    syncVm(emu, dst, uuid);
    if (src !== dst) syncVm(emu, src, uuid);
  }
  refreshAllowed(emu, vm);
  for (const m of all) await destroyVdi(call, m.vdi).catch(() => undefined);
  return vm;
}

async function migrateSend(call: Call, vm: string, dest: Record<string, string>, vdiMap: Record<string, string>, vifMap: Record<string, string>, options: Record<string, string>): Promise<string> {
  const { emu } = call;
  const rec = recordOf(emu, 'VM', vm);
  const remote = remoteOf(emu, dest);
  const force = bool(options, 'force');
  const precheck = () => {
    const r = recordOf(emu, 'VM', vm);
    const e = vmCheck(emu, vm, r, 'migrate_send', !force);
    if (e) throw e;
    if (isLive(r) && ((r.VGPUs as string[]) ?? []).length > 0) throw new XapiError('VM_HAS_VGPU', [vm]);
    if (isLive(r) && ((r.attached_PCIs as string[]) ?? []).length > 0) throw new XapiError('VM_HAS_PCI_ATTACHED', [vm]);
  };
  const wasLive = isLive(rec);
  const src = String(rec.resident_on);
  const result = await withOperation(call, 'VM', vm, 'migrate_send', async () => {
    if (!remote.intraPool) return withMigrate(emu, () => migrateCrossPool(call, vm, remote, vdiMap ?? {}, vifMap ?? {}, options ?? {}));
    assertCanMigrate(emu, vm, dest, vdiMap ?? {}, vifMap ?? {});
    if (bool(options, 'copy')) {
      throw new XapiError('OPERATION_NOT_ALLOWED', ['Copy mode is disallowed on intra pool storage migration, try efficient alternatives, for example, VM.copy/clone.']);
    }
    return withMigrate(emu, () => migrateIntraPool(call, vm, remote, vdiMap ?? {}));
  }, { precheck });
  if (wasLive && remote.intraPool) vmMigratedMessage(emu, vm, src, remote.host);
  return result;
}

registerProvider('host', {
  migrate_receive: (call, host: string, network: string, _options: Record<string, string>) => migrateReceive(call, host, network),
});

registerProvider('VM', {
  async assert_can_migrate(call, vm: string, dest: Record<string, string>, _live: boolean, vdi_map: Record<string, string>, vif_map: Record<string, string>,
    options: Record<string, string>) {
    const remote = remoteOf(call.emu, dest);
    if (remote.intraPool) assertCanMigrate(call.emu, vm, dest, vdi_map ?? {}, vif_map ?? {});
    else await assertCanMigrateCrossPool(call.emu, vm, remote, new RemotePool(remote.master, remote.session, remote.sm), vdi_map ?? {}, vif_map ?? {}, options ?? {});
    assertCanMigrateSender(call.emu, vm, dest);
  },
  assert_can_migrate_sender(call, vm: string, dest: Record<string, string>) {
    assertCanMigrateSender(call.emu, vm, dest);
  },
  migrate_send: (call, vm: string, dest: Record<string, string>, _live: boolean, vdi_map: Record<string, string>, vif_map: Record<string, string>,
    options: Record<string, string>) => migrateSend(call, vm, dest, vdi_map, vif_map, options),
});

// ---- VDI.pool_migrate (Xapi_vm_migrate.vdi_pool_migrate) ----

async function vdiPoolMigrate(call: Call, vdi: string, sr: string, options: Record<string, string>): Promise<string> {
  const { emu } = call;
  const v = recordOf(emu, 'VDI', vdi);
  if (!emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  // message_forwarding: the VM comes from the VDI's VBDs
  const vbds = (v.VBDs as string[]).filter((b) => emu.db.has('VBD', b));
  if (vbds.length === 0) throw new XapiError('VDI_NEEDS_VM_FOR_MIGRATE', [vdi]);
  const vm = String(emu.db.get('VBD', vbds[0])!.VM);
  const force = bool(options, 'force');
  const precheck = () => {
    const e = vmCheck(emu, vm, recordOf(emu, 'VM', vm), 'migrate_send', !force);
    if (e) throw e;
  };
  return withOperation(call, 'VM', vm, 'migrate_send', async () => {
    if (v.type === 'cbt_metadata') throw new XapiError('VDI_INCOMPATIBLE_TYPE', [vdi, 'cbt_metadata']);
    if (v.cbt_enabled === true) throw new XapiError('VDI_CBT_ENABLED', [vdi]);
    const rec = recordOf(emu, 'VM', vm);
    const vbd = vbds.find((b) => emu.db.get('VBD', b)?.VM === vm);
    if (!vbd) throw new XapiError('VBD_MISSING', []);
    // the other disks stay on their SRs
    const vdiMap: Record<string, string> = {};
    for (const b of rec.VBDs as string[]) {
      const r = emu.db.get('VBD', b);
      if (!r || r.empty === true || !emu.db.has('VDI', String(r.VDI))) continue;
      vdiMap[String(r.VDI)] = srOfVdi(emu, String(r.VDI));
    }
    vdiMap[vdi] = sr;
    // the VM's host when it sees every SR, else any host that does
    const srs = [...new Set(Object.values(vdiMap))];
    const here = isLive(rec) ? String(rec.resident_on) : emu.master;
    const host = [here, ...emu.hosts.filter((h) => h !== here)].find((h) => srs.every((s) => hostSeesSr(emu, h, s)));
    if (!host) throw new XapiError('VM_REQUIRES_SR', [vm, sr]);
    const network = managementNetwork(emu, host);
    const dest = migrateReceive(call, host, network);
    try {
      assertCanMigrate(emu, vm, dest, vdiMap, {});
      assertCanMigrateSender(emu, vm, dest);
      const remote = remoteOf(emu, dest);
      await withMigrate(emu, () => migrateIntraPool(call, vm, remote, vdiMap));
    } finally {
      if (emu.db.has('session', dest[TOKEN.session])) destroySession(emu, dest[TOKEN.session]);
    }
    return String(emu.db.get('VBD', vbd)!.VDI);
  }, { precheck });
}

/** the network of the host's management interface (Xapi_inventory's management bridge) */
function managementNetwork(emu: Emulator, host: string): string {
  for (const [, row] of emu.db.table('PIF')) {
    if (row.rec.host === host && row.rec.management === true) return String(row.rec.network);
  }
  throw new XapiError('HOST_HAS_NO_MANAGEMENT_IP', []);
}

registerProvider('VDI', {
  pool_migrate: (call, vdi: string, sr: string, options: Record<string, string>) => vdiPoolMigrate(call, vdi, sr, options ?? {}),
});

// ---- cross-pool (migrate_send' with a destination host of another pool) ----

/** One disk going to the other pool: the VDI made for it there. */
interface RemoteDisk {
  vdi: string;
  sr: string;
  size: number;
  /** a disk of the VM (mirrored when it runs), of one of its snapshots, or a suspend image (copied) */
  kind: 'disk' | 'snapshot' | 'suspend';
  remote?: string;
  remoteUuid?: string;
  /** the snapshot whose bytes went first, while the guest kept writing to the disk */
  snapshot?: string;
}

const snapshotsOf = (emu: Emulator, vm: string) => ((emu.db.get('VM', vm)?.snapshots as string[]) ?? []).filter((s) => emu.db.has('VM', s));

/** The suspend images of the VM and its snapshots (checkpoints), which go with them. */
function suspendImages(emu: Emulator, vm: string): string[] {
  const out: string[] = [];
  for (const v of [vm, ...snapshotsOf(emu, vm)]) {
    const r = emu.db.get('VM', v)!;
    const sv = String(r.suspend_VDI);
    if (r.power_state !== 'Suspended' || !emu.db.has('VDI', sv)) continue;
    // the source must see the image to copy it
    if (!emu.hosts.some((h) => hostSeesSr(emu, h, srOfVdi(emu, sv)))) throw new XapiError('SUSPEND_IMAGE_NOT_ACCESSIBLE', [sv]);
    out.push(sv);
  }
  return out;
}

/**
 * migrate_send's extra_vdi_map to another pool: a snapshot's disk or a suspend image goes where the
 * map says, else with the disk it is a snapshot of, else (a suspend image) to the destination's
 * suspend image SR (its pool's, else its host's), else to its default SR; else VDI_NOT_IN_MAP.
 */
async function remoteExtraDisks(emu: Emulator, vm: string, vdiMap: Record<string, string>, pool: RemotePool, remote: Remote): Promise<RemoteDisk[]> {
  const own = new Set(disksOf(emu, vm).map((d) => d.vdi));
  const suspends = suspendImages(emu, vm).filter((v) => !own.has(v));
  const snapshotVdis = [...new Set(snapshotsOf(emu, vm).flatMap((s) => disksOf(emu, s).map((d) => d.vdi)))].filter((v) => !own.has(v) && !suspends.includes(v));
  if (snapshotVdis.length + suspends.length === 0) return [];
  const pools = await pool.call<string[]>('pool.get_all');
  const valid = (r: string | undefined) => (r && r !== NULL_REF ? r : null);
  const defaultSr = valid(await pool.call<string>('pool.get_default_SR', pools[0]));
  const suspendSr = valid(await pool.call<string>('pool.get_suspend_image_SR', pools[0])) ?? valid(await pool.call<string>('host.get_suspend_image_sr', remote.host));
  const placed = (vdi: string, kind: 'snapshot' | 'suspend'): RemoteDisk => {
    const r = recordOf(emu, 'VDI', vdi);
    const sr = vdiMap[vdi] ?? vdiMap[String(r.snapshot_of)] ?? (kind === 'suspend' ? suspendSr ?? defaultSr : defaultSr);
    if (!sr) throw new XapiError('VDI_NOT_IN_MAP', [vdi]);
    return { vdi, sr, size: Number(r.virtual_size), kind };
  };
  return [...suspends.map((v) => placed(v, 'suspend')), ...snapshotVdis.map((v) => placed(v, 'snapshot'))];
}

/** Streams a VDI to the destination's VDI through /import_raw_vdi as a VHD: the whole disk, or
 * only what was written since `base` (a snapshot of it) as a differencing VHD. */
async function sendVdi(emu: Emulator, pool: RemotePool, vdi: string, remoteVdi: string, base: string | null, check: () => void = () => undefined): Promise<void> {
  const basePath = base ? vdiPath(emu, base) : null;
  await withVdiFile(emu, vdi, { write: false }, async (path) => {
    const out = await exportVhd(path, basePath ? { base: basePath } : {});
    // `check` before each chunk: its failure (a cancelled task) ends the stream
    const checked = Readable.from((async function* () {
      for await (const chunk of out.stream) {
        check();
        yield chunk as Buffer;
      }
    })());
    try {
      await pool.put('/import_raw_vdi', { vdi: remoteVdi, format: 'vhd' }, checked, out.size, 'Importing raw VDI');
    } finally {
      out.stream.destroy();
    }
  });
}

/** The VM's objects (and its snapshots') in an export_metadata archive (ova.xml alone), the NICs
 * left out: they are made on their mapped networks. */
function metadataArchive(emu: Emulator, host: string, vm: string, withSnapshots: boolean): Buffer {
  // the power state kept: a suspended VM (or checkpoint) arrives suspended on its image; the importer
  // makes any other VM halted and its devices detached
  const { xml } = vmMetadata(emu, host, [vm], { preservePowerState: true, withSnapshotMetadata: withSnapshots, includeVhdParents: false, excludedDevices: new Set(['VIF']) });
  const ova = Buffer.from(xml, 'utf8');
  return Buffer.concat([tarHeader('ova.xml', ova.length, Math.floor(emu.clock.now() / 1000)), ova, tarPadding(ova.length), tarEnd()]);
}

/** infer_vif_map: every VIF mapped, or sharing its MAC with a mapped one */
function inferVifMap(emu: Emulator, vifs: string[], vifMap: Record<string, string>): Map<string, string> {
  const out = new Map<string, string>();
  const byMac = new Map<string, string>();
  for (const [v, n] of Object.entries(vifMap)) {
    const mac = emu.db.get('VIF', v)?.MAC;
    if (mac !== undefined) byMac.set(String(mac), n);
  }
  for (const v of vifs) {
    const n = vifMap[v] ?? byMac.get(String(emu.db.get('VIF', v)?.MAC));
    if (n === undefined) throw new XapiError('VIF_NOT_IN_MAP', [v]);
    out.set(v, n);
  }
  return out;
}

/** assert_can_migrate's cross-pool checks, asking the destination over its API. */
async function assertCanMigrateCrossPool(emu: Emulator, vm: string, remote: Remote, pool: RemotePool, vdiMap: Record<string, string>, vifMap: Record<string, string>,
  options: Record<string, string>): Promise<Map<string, string>> {
  const rec = recordOf(emu, 'VM', vm);
  checkVdiMap(disksOf(emu, vm), vdiMap);
  const snapshots = ((rec.snapshots as string[]) ?? []).filter((s) => emu.db.has('VM', s));
  // the SRs a disk leaves and enters must support the mirror (the destination's SM records)
  const sms = await pool.call<Record<string, Rec>>('SM.get_all_records');
  for (const [vdi, sr] of Object.entries(vdiMap)) {
    assertSrSupports(emu, srOfVdi(emu, vdi), ['VDI_SNAPSHOT', 'VDI_MIRROR']);
    const type = await pool.call<string>('SR.get_type', sr);
    const features = (Object.values(sms).find((s) => s.type === type)?.features ?? {}) as Record<string, unknown>;
    const has = (f: string) => Object.prototype.hasOwnProperty.call(features, f);
    const missing = ['VDI_SNAPSHOT', 'VDI_MIRROR_IN'].filter((f) => !has(f) && !(f === 'VDI_MIRROR_IN' && has('VDI_MIRROR')));
    if (missing.length) throw new XapiError('SR_DOES_NOT_SUPPORT_MIGRATION', [sr, missing.join(';')]);
  }
  if (!bool(options, 'force') && bool(options, 'copy') && rec.power_state !== 'Halted') {
    throw new XapiError('VM_BAD_POWER_STATE', [vm, 'halted', String(rec.power_state).toLowerCase()]);
  }
  if ((await pool.call<boolean>('host.get_enabled', remote.host)) !== true) throw new XapiError('HOST_DISABLED', [remote.host]);
  const vifs = inferVifMap(emu, [vm, ...snapshots].flatMap((v) => (emu.db.get('VM', v)?.VIFs as string[]) ?? []), vifMap);
  for (const n of new Set(vifs.values())) await pool.call('network.get_uuid', n);
  assertCanMigrateVdis(emu, vdiMap);
  return vifs;
}

/** update_snapshot_info: the copies of snapshot disks there become snapshots of the copies of the
 * disks they are snapshots of (SR.update_snapshot_info_dest on the destination's storage). */
async function updateSnapshotInfo(emu: Emulator, pool: RemotePool, disks: RemoteDisk[]): Promise<void> {
  const byVdi = new Map(disks.map((d) => [d.vdi, d]));
  const pairs = new Map<RemoteDisk, [RemoteDisk, Rec][]>();
  for (const d of disks) {
    if (d.kind !== 'snapshot') continue;
    const r = recordOf(emu, 'VDI', d.vdi);
    const leaf = byVdi.get(String(r.snapshot_of));
    if (r.is_a_snapshot !== true || !leaf || leaf.kind !== 'disk') continue;
    pairs.set(leaf, [...(pairs.get(leaf) ?? []), [d, r]]);
  }
  for (const [leaf, snaps] of pairs) {
    const location = (d: RemoteDisk) => pool.call<string>('VDI.get_location', d.remote);
    await pool.storage('SR.update_snapshot_info_dest', {
      dbg: '', sr: await pool.call<string>('SR.get_uuid', leaf.sr), vdi: await location(leaf), src_vdi: { vdi: String(recordOf(emu, 'VDI', leaf.vdi).location) },
      snapshot_pairs: await Promise.all(snaps.map(async ([d, r]) => [await location(d), { vdi: String(r.location), snapshot_time: r.snapshot_time }])),
    });
  }
}

/** The VM's NICs, and those of its snapshots, made there on their mapped networks. */
async function createRemoteVifs(emu: Emulator, pool: RemotePool, vm: string, remoteVm: string, vifs: Map<string, string>, copy: boolean): Promise<void> {
  const owners: [string, string][] = [[vm, remoteVm]];
  if (!copy) {
    for (const s of snapshotsOf(emu, vm)) owners.push([s, await pool.call<string>('VM.get_by_uuid', recordOf(emu, 'VM', s).uuid)]);
  }
  for (const [local, there] of owners) {
    for (const vif of (emu.db.get('VM', local)?.VIFs as string[]) ?? []) {
      const network = vifs.get(vif);
      const r = emu.db.get('VIF', vif);
      if (!r || network === undefined) continue;
      await pool.call('VIF.create', {
        device: r.device, network, VM: there, MAC: copy ? '' : r.MAC, MTU: r.MTU, other_config: r.other_config,
        qos_algorithm_type: r.qos_algorithm_type, qos_algorithm_params: r.qos_algorithm_params, locking_mode: r.locking_mode,
        ipv4_allowed: r.ipv4_allowed, ipv6_allowed: r.ipv6_allowed,
      });
    }
  }
}

/**
 * migrate_send' to another pool: the disks go to VDIs made in the mapped SRs there (a running VM's
 * read-write disks: a snapshot's bytes while the guest runs, then what it wrote meanwhile, once its
 * domain is gone), with those of its snapshots (copies, made snapshots of the copies of their disks)
 * and its suspend image; the VM's objects and its snapshots through the destination's
 * /import_metadata (their uuids kept unless copy=true, when snapshots stay behind), the NICs on the
 * mapped networks; a running VM is started there, a suspended one stays suspended on its copied
 * image. The source VM, its snapshots and their disks are destroyed unless copy=true. A failure
 * before the source's domain is gone leaves the VM as it was and nothing on the destination; after
 * it, the VM is halted at the source.
 */
async function migrateCrossPool(call: Call, vm: string, remote: Remote, vdiMap: Record<string, string>, vifMap: Record<string, string>,
  options: Record<string, string>): Promise<string> {
  const { emu } = call;
  const pool = new RemotePool(remote.master, remote.session, remote.sm);
  const vifs = await assertCanMigrateCrossPool(emu, vm, remote, pool, vdiMap, vifMap, options);
  const copy = bool(options, 'copy');
  const rec = recordOf(emu, 'VM', vm);
  const live = isLive(rec);
  const paused = rec.power_state === 'Paused';
  const src = String(rec.resident_on);
  const uuid = String(rec.uuid);
  const snapshots = copy ? [] : snapshotsOf(emu, vm);
  const own: RemoteDisk[] = disksOf(emu, vm).map((d) => ({ vdi: d.vdi, sr: vdiMap[d.vdi], size: Number(emu.db.get('VDI', d.vdi)!.virtual_size), kind: 'disk' as const }));
  const extras = (await remoteExtraDisks(emu, vm, vdiMap, pool, remote)).filter((d) => !copy || d.kind !== 'snapshot');
  assertCanMigrateVdis(emu, Object.fromEntries(extras.map((d) => [d.vdi, d.sr])));
  // smaller disks first, then older ones (xapi's order)
  const time = (v: string) => String(emu.db.get('VDI', v)?.snapshot_time ?? '');
  const disks = [...own, ...extras].sort((a, b) => a.size - b.size || time(a.vdi).localeCompare(time(b.vdi)));
  const rw = new Set(disksOf(emu, vm).filter((d) => d.mode === 'RW').map((d) => d.vdi));
  const total = disks.reduce((n, d) => n + d.size, 0) || 1;
  let done = 0;
  let remoteVm: string | null = null;
  let sourceGone = false;
  const cleanupRemote = async () => {
    // the VM and its snapshots there, found by uuid (as xapi's cleanup does)
    if (remoteVm) {
      await pool.call('VM.hard_shutdown', remoteVm).catch(() => undefined);
      await pool.call('VM.destroy', remoteVm).catch(() => undefined);
    }
    for (const s of snapshots) {
      const there = await pool.call<string>('VM.get_by_uuid', emu.db.get('VM', s)?.uuid).catch(() => null);
      if (there) await pool.call('VM.destroy', there).catch(() => undefined);
    }
    for (const d of disks) if (d.remote) await pool.call('VDI.destroy', d.remote).catch(() => undefined);
  };
  try {
    // 1. the disks: a VDI there for each, filled from a snapshot (a running VM's disk) or the disk itself
    for (const d of disks) {
      assertNotCancelling(emu, call.task);
      const v = recordOf(emu, 'VDI', d.vdi);
      d.remote = await pool.call<string>('VDI.create', {
        name_label: v.name_label, name_description: v.name_description, SR: d.sr, virtual_size: v.virtual_size, type: v.type, sharable: v.sharable,
        read_only: v.read_only, other_config: v.other_config, xenstore_data: v.xenstore_data, sm_config: { [BASE_MIRROR]: mirrorId(emu, d.vdi) }, tags: v.tags,
      });
      d.remoteUuid = await pool.call<string>('VDI.get_uuid', d.remote);
      if (live && d.kind === 'disk' && rw.has(d.vdi)) {
        d.snapshot = await inSubtask(call, 'VDI.snapshot', (sub) => callMessage<string>(sub, 'VDI.snapshot', d.vdi, { [BASE_MIRROR]: mirrorId(emu, d.vdi) }));
      }
      await sendVdi(emu, pool, d.snapshot ?? d.vdi, d.remote, null, () => assertNotCancelling(emu, call.task));
      done += d.size;
      setProgress(emu, call.task, (0.8 * done) / total);
    }
    await updateSnapshotInfo(emu, pool, disks);
    assertNotCancelling(emu, call.task);
    // 2. the VM's objects there (with its snapshots unless copying), its disks being the new VDIs,
    // then the NICs
    const query: Record<string, string> = { restore: String(!copy), force: String(bool(options, 'force')) };
    for (const d of disks) query[`vdi:${emu.db.get('VDI', d.vdi)!.uuid}`] = d.remoteUuid!;
    const archive = metadataArchive(emu, call.host, vm, !copy);
    const made = refsOf(await pool.put('/import_metadata', query, archive, archive.length, 'VM.metadata_import'));
    remoteVm = made[0] ?? null;
    if (!remoteVm) throw new XapiError('INTERNAL_ERROR', ['the destination imported no VM']);
    await createRemoteVifs(emu, pool, vm, remoteVm, vifs, copy);
    setProgress(emu, call.task, 0.85);
    assertNotCancelling(emu, call.task);
    // no way back from here (TaskHelper.set_not_cancellable)
    assertNotCancelling(emu, call.task);
    setCancellable(emu, call.task, false);
    // 3. the switch: the source's domain goes (its tapdisks close: the guest writes no more), what
    // it wrote since the snapshots follows, and the VM runs there
    if (live) {
      const from = xenopsOf(emu, src);
      sourceGone = true;
      await withEventsSuppressed(emu, src, uuid, () => from.shutdown(uuid, { clean: false }));
      for (const d of disks) if (d.snapshot) await sendVdi(emu, pool, d.vdi, d.remote!, d.snapshot);
      setProgress(emu, call.task, 0.95);
      await pool.call('VM.start_on', remoteVm, remote.host, paused, true);
    }
    // receive_finalize: the VDIs there are the VM's disks now, no longer a migration's
    for (const d of disks) await pool.call('VDI.remove_from_sm_config', d.remote, BASE_MIRROR).catch(() => undefined);
  } catch (e) {
    await cleanupRemote();
    if (sourceGone) {
      forceStateReset(emu, vm, 'Halted');
      syncHost(emu, src);
    }
    throw cancelledOr(emu, call.task, e);
  } finally {
    for (const d of disks) if (d.snapshot) await destroyVdi(call, d.snapshot).catch(() => undefined);
  }
  // 4. the source VM, its snapshots and their disks go (copy mode keeps them)
  if (!copy) {
    const suspended = rec.power_state === 'Suspended';
    if (live || suspended) {
      forceStateReset(emu, vm, 'Halted');
      if (live) syncHost(emu, src);
    }
    for (const v of [vm, ...snapshots]) {
      const r = emu.db.get('VM', v);
      if (!r) continue;
      for (const b of [...(r.VBDs as string[])]) if (emu.db.has('VBD', b)) emu.db.destroy('VBD', b);
      for (const f of [...(r.VIFs as string[])]) if (emu.db.has('VIF', f)) emu.db.destroy('VIF', f);
    }
    for (const d of disks) await destroyVdi(call, d.vdi).catch(() => undefined);
    // Db.VM.destroy, as migrate_send' does (the VM is marked migrate_send: no VM.destroy)
    for (const v of [vm, ...snapshots]) {
      const r = emu.db.get('VM', v);
      if (!r) continue;
      for (const [cls, f] of [['VM_metrics', 'metrics'], ['VM_guest_metrics', 'guest_metrics']] as const) {
        if (emu.db.has(cls, String(r[f]))) emu.db.destroy(cls, String(r[f]));
      }
      for (const c of [...((r.consoles as string[]) ?? [])]) if (emu.db.has('console', c)) emu.db.destroy('console', c);
      emu.db.destroy('VM', v);
    }
    // Xenopsd_metadata.delete: no host keeps the VM (a suspended one is remembered as such)
    for (const h of emu.hosts) {
      const x = xenopsOf(emu, h);
      if (x.has(uuid) && ['Halted', 'Suspended'].includes(x.stat(uuid).power_state)) x.remove(uuid);
    }
  }
  setProgress(emu, call.task, 1);
  return remoteVm!;
}
