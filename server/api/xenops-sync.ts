// The API side of xenopsd (xapi_xenops.ml): the metadata pushed before a start, the storage
// backend xenopsd attaches disks through (SM), the UPDATES consumer that re-reads xenopsd's state
// and writes only the differences to the database (power_state, domid, resident_on, VM_metrics,
// VBD/VIF.currently_attached, VBD.device, host_metrics.memory_free), the mapping of xenopsd's errors
// to XenAPI ones, and the resync at start.
//
// The simulated guest (server/guest/): its profile decides whether the domain runs PV drivers
// (always for pv/pvh domains, unless no OS runs); an HVM guest without them has only emulated
// devices (IDE disks hda, hdb ...). After each sync of a running VM the guest's side of update_vm
// runs (VM_guest_metrics from the drivers and the agent).
import { stat } from 'node:fs/promises';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { XapiError } from '../dispatch/errors.js';
import { xapiDate } from '../clock.js';
import { attachVdi } from '../sm/attachments.js';
import { driverFor } from '../sm/driver.js';
import { smReady, srCtx } from '../sm/sm.js';
import {
  xenopsdFor, XenopsError, type DomainType, type StorageBackend, type VifIpConfiguration, type VifLockingMode, type VifSpec, type VmSpec,
  type Xenopsd,
} from '../xenopsd/index.js';
import { updateAllowedOperations, resetOperations } from './operations.js';
import { hasPvDrivers, profileOf, PV_DRIVERS_KEY } from '../guest/profile.js';
import { startGuests, syncGuest } from '../guest/agent.js';

/** the older other_config key of the simulated guest's PV drivers (see server/guest/profile.ts) */
export { PV_DRIVERS_KEY };

const bound = new WeakMap<Emulator, Map<string, Xenopsd>>();

/** VMs whose xenopsd updates are not written while an API operation drives them
 * (Xapi_xenops.with_events_suppressed): a start shows no transient Paused; the operation writes
 * the final state itself when it ends. */
const suppressed = new WeakMap<Emulator, Map<string, number>>();

/** Hosts the master cannot reach (failed or cut off): their xenopsd's updates are not written. */
const unreachable = new WeakMap<Emulator, Set<string>>();
export function setHostReachable(emu: Emulator, host: string, reachable: boolean): void {
  let s = unreachable.get(emu);
  if (!s) unreachable.set(emu, (s = new Set()));
  if (reachable) s.delete(host);
  else s.add(host);
}
const reachableHost = (emu: Emulator, host: string): boolean => unreachable.get(emu)?.has(host) !== true;
/** A host the master can reach (not failed or isolated through the control API). */
export const isHostReachable = reachableHost;

export async function withEventsSuppressed<T>(emu: Emulator, host: string, uuid: string, fn: () => Promise<T>): Promise<T> {
  let m = suppressed.get(emu);
  if (!m) suppressed.set(emu, (m = new Map()));
  m.set(uuid, (m.get(uuid) ?? 0) + 1);
  try {
    return await fn();
  } finally {
    const n = (m.get(uuid) ?? 1) - 1;
    if (n > 0) m.set(uuid, n);
    else m.delete(uuid);
    if (bound.get(emu)?.has(host) && reachableHost(emu, host)) syncVm(emu, host, uuid);
  }
}

/** The xenopsd of a host. */
export function xenopsOf(emu: Emulator, host: string): Xenopsd {
  const x = bound.get(emu)?.get(host);
  if (!x) throw new XapiError('INTERNAL_ERROR', [`no xenopsd for host ${host}`]);
  return x;
}

// ---- devices ----

/** The domain type a VM boots with (VM.domain_type, or from HVM_boot_policy when unspecified). */
export function domainTypeOf(rec: Rec): DomainType {
  const t = String(rec.domain_type ?? '');
  if (t === 'hvm' || t === 'pv' || t === 'pvh' || t === 'pv_in_pvh') return t;
  return rec.HVM_boot_policy ? 'hvm' : 'pv';
}

/** The Linux device of a VBD (xapi-idl device_number.ml): an HVM guest's first four disks are
 * emulated IDE (hda=768 .. hdd=5696, majors 3 and 22), the others and a PV guest's are xvd*. */
export function linuxDevice(vm: Rec, vbd: Rec): string {
  const n = Number(vbd.userdevice);
  const pos = Number.isInteger(n) && n >= 0 ? n : 0;
  if (domainTypeOf(vm) === 'hvm' && pos < 4) return `hd${String.fromCharCode(97 + pos)}`;
  let name = '';
  let i = pos;
  do {
    name = String.fromCharCode(97 + (i % 26)) + name;
    i = Math.floor(i / 26) - 1;
  } while (i >= 0);
  return `xvd${name}`;
}

/** Xen's device number of a Linux device name. */
export function deviceNumber(dev: string): number {
  const ide = /^hd([a-d])$/.exec(dev);
  if (ide) {
    const d = ide[1].charCodeAt(0) - 97;
    return ((d < 2 ? 3 : 22) << 8) | ((d % 2) << 6);
  }
  const m = /^xvd([a-z]+)$/.exec(dev);
  if (!m) return -1;
  let disk = 0;
  for (const c of m[1]) disk = disk * 26 + (c.charCodeAt(0) - 96);
  disk -= 1;
  return disk < 16 ? (202 << 8) | (disk << 4) : (1 << 28) | (disk << 8);
}

/** whether the VM's guest runs PV drivers (its profile) */
export function hasPvDriversConfigured(emu: Emulator, rec: Rec): boolean {
  return hasPvDrivers(profileOf(emu, rec));
}

/** Xenopsd_metadata.push: what xenopsd needs to start the VM. */
export function vmSpec(emu: Emulator, vm: string): VmSpec {
  const { db } = emu;
  const rec = db.get('VM', vm)!;
  const hvm = domainTypeOf(rec) === 'hvm';
  const vbds = (rec.VBDs as string[])
    .map((r) => db.get('VBD', r))
    .filter((b): b is Rec => !!b && (b.empty !== true || (hvm && b.type === 'CD')))
    .map((b) => {
      const vdi = b.empty === true ? undefined : db.get('VDI', String(b.VDI));
      const sr = vdi ? db.get('SR', String(vdi.SR)) : undefined;
      return {
        id: linuxDevice(rec, b),
        position: Number(b.userdevice) || 0,
        mode: (b.mode === 'RO' ? 'RO' : 'RW') as 'RO' | 'RW',
        backend: vdi && sr ? { sr: String(sr.uuid), vdi: String(vdi.uuid) } : null,
        ty: (b.type === 'CD' ? 'CDROM' : b.type === 'Floppy' ? 'Floppy' : 'Disk') as 'Disk' | 'CDROM' | 'Floppy',
        unpluggable: b.unpluggable === true,
      };
    });
  const vifs = (rec.VIFs as string[])
    .map((r) => db.get('VIF', r))
    .filter((v): v is Rec => !!v)
    .map((v) => vifSpec(emu, v));
  return {
    id: String(rec.uuid),
    name: String(rec.name_label),
    domainType: domainTypeOf(rec),
    vcpus: Number(rec.VCPUs_at_startup) || 1,
    memoryRequired: memoryRequired(rec),
    memoryTarget: Number(rec.memory_dynamic_max) || Number(rec.memory_static_max) || 0,
    pvDrivers: hasPvDriversConfigured(emu, rec),
    bootOrder: String((rec.HVM_boot_params as Record<string, string> | undefined)?.order ?? 'cd'),
    vbds,
    vifs,
  };
}

/** Xapi_xenops.of_vif: a VIF as xenopsd sees it, with its switch port's locking mode (a
 * network_default VIF takes its network's default) and the IP settings for the guest's tools. */
export function vifSpec(emu: Emulator, v: Rec): VifSpec {
  const net = emu.db.get('network', String(v.network));
  const mode = String(v.locking_mode ?? 'network_default');
  const lockingMode: VifLockingMode =
    mode === 'locked' ? { kind: 'locked', ipv4: [...((v.ipv4_allowed as string[]) ?? [])], ipv6: [...((v.ipv6_allowed as string[]) ?? [])] }
      : mode === 'disabled' || (mode === 'network_default' && net?.default_locking_mode === 'disabled') ? { kind: 'disabled' }
        : { kind: 'unlocked' };
  const ip = (m: unknown, dynamic: string, addresses: unknown, gateway: unknown): VifIpConfiguration =>
    m === 'Static' ? { kind: 'static', addresses: [...((addresses as string[]) ?? [])], ...(gateway ? { gateway: String(gateway) } : {}) }
      : m === dynamic ? { kind: 'dhcp' } : { kind: 'unspecified' };
  return {
    id: String(v.device), position: Number(v.device) || 0, mac: String(v.MAC ?? ''), bridge: String(net?.bridge ?? ''), lockingMode,
    ipv4Configuration: ip(v.ipv4_configuration_mode, 'DHCP', v.ipv4_addresses, v.ipv4_gateway),
    ipv6Configuration: ip(v.ipv6_configuration_mode, 'Autoconf', v.ipv6_addresses, v.ipv6_gateway),
    trunks: ((v.trunks as unknown[]) ?? []).map(Number),
  };
}

/** Bytes a VM needs on a host to start (static max + overhead, Memory_check without ballooning). */
export function memoryRequired(rec: Rec): number {
  return (Number(rec.memory_static_max) || 0) + (Number(rec.memory_overhead) || 0);
}

// ---- errors (Xapi_xenops.with_events_suppressed / reraise table) ----

export function toXapiFromXenops(e: unknown, vm: string): unknown {
  if (!(e instanceof XenopsError)) return e;
  switch (e.kind) {
    case 'Bad_power_state':
      // [vm; expected; found], capitalised here (Record_util.vm_power_state_to_string)
      return new XapiError('VM_BAD_POWER_STATE', [vm, e.args[1] ?? '', e.args[0] ?? '']);
    case 'Does_not_exist':
      return new XapiError('INTERNAL_ERROR', [`Object with type ${e.args[0]} and id ${e.args[1]} does not exist in xenopsd`]);
    case 'Already_exists':
      return new XapiError('INTERNAL_ERROR', [`Object with type ${e.args[0]} and id ${e.args[1]} already exists in xenopsd`]);
    case 'Domain_not_built':
      return new XapiError('INTERNAL_ERROR', ['domain has not been built']);
    case 'Not_enough_memory':
      return new XapiError('INTERNAL_ERROR', [`there was not enough memory (needed ${e.args[0]} bytes)`]);
    case 'Device_is_connected':
      return new XapiError('INTERNAL_ERROR', ['Cannot remove device because it is connected to a VM']);
    case 'Device_not_connected':
      return new XapiError('INTERNAL_ERROR', ['Device is not connected']);
    case 'Storage_backend_error':
      return new XapiError(e.args[0] ?? 'INTERNAL_ERROR', e.args.slice(1));
    default:
      return new XapiError('INTERNAL_ERROR', [e.message]);
  }
}

// ---- storage for tapdisks (SMAPIv2 VDI.attach / activate over the SM layer) ----

function storageFor(emu: Emulator): StorageBackend {
  const vdiOf = (uuid: string) => {
    const ref = emu.db.refByUuid('VDI', uuid);
    if (!ref) throw new XapiError('UUID_INVALID', ['VDI', uuid]);
    const rec = emu.db.get('VDI', ref)!;
    const sr = String(rec.SR);
    const srRec = emu.db.get('SR', sr)!;
    const driver = driverFor(String(srRec.type));
    if (!driver) throw new XapiError('SR_BACKEND_FAILURE_38', ['', 'The requested method is not supported/implemented', '']);
    return { ref, rec, sr, driver };
  };
  return {
    async open(_sr, vdi, readOnly) {
      await smReady(emu);
      const { rec, sr, driver } = vdiOf(vdi);
      const ctx = srCtx(emu, sr);
      const path = driver.vdiPath(ctx, rec);
      if (!path) return { io: null, path: null, type: 'aio' };
      const io = await driver.openVdi(ctx, rec, { readOnly });
      return { io, path, type: path && !path.endsWith('.vhd') ? 'aio' : 'vhd' };
    },
    hold: (vdi, write) => attachVdi(emu, vdi, write),
    async fingerprint(_sr, vdi) {
      const { rec, sr, driver } = vdiOf(vdi);
      const path = driver.vdiPath(srCtx(emu, sr), rec);
      if (!path) return '';
      const s = await stat(path).catch(() => null);
      return s ? `${path}:${s.ino}:${s.mtimeMs}:${s.size}` : `${path}:gone`;
    },
  };
}

// ---- the database side of a VM's state ----

function setIfChanged(emu: Emulator, cls: string, ref: string, changes: Rec): void {
  if (emu.db.has(cls, ref)) emu.db.update(cls, ref, changes);
}

/** Xapi_vm_lifecycle.force_state_reset: the power state, and on Halted every device detached. */
export function forceStateReset(emu: Emulator, vm: string, value: 'Halted' | 'Suspended'): void {
  const { db } = emu;
  const rec = db.get('VM', vm);
  if (!rec) return;
  db.update('VM', vm, { power_state: value });
  if (value === 'Halted') {
    for (const b of rec.VBDs as string[]) setIfChanged(emu, 'VBD', b, { currently_attached: false, current_operations: {} });
    for (const v of rec.VIFs as string[]) setIfChanged(emu, 'VIF', v, { currently_attached: false, current_operations: {} });
    db.update('VM', vm, { requires_reboot: false });
  }
  db.update('VM', vm, { resident_on: NULL_REF, scheduled_to_be_resident_on: NULL_REF, domid: -1 });
  syncConsoles(emu, vm, null);
  refreshAllowed(emu, vm);
}

/**
 * update_vm's consoles: xenopsd reports an HVM guest's RFB console (qemu's VNC) and a PV guest's
 * RFB and VT100 (vncterm); each is located at https://<resident host's address>/console?uuid=<uuid>.
 * A console whose (protocol, uri) is gone is destroyed and one that appeared is created, so a
 * migration (another host's address) recreates them; none while halted or suspended
 * (Xapi_vm_lifecycle.force_state_reset).
 */
export function syncConsoles(emu: Emulator, vm: string, running: { host: string; hvm: boolean } | null): void {
  const { db } = emu;
  const rec = db.get('VM', vm);
  if (!rec) return;
  let wanted: string[] = [];
  let uri = '';
  if (running) {
    const address = String(db.get('host', running.host)?.address ?? '');
    uri = `https://${address}/console`;
    wanted = running.hvm ? ['rfb'] : ['rfb', 'vt100'];
  }
  const current = new Map<string, string>();
  for (const c of [...((rec.consoles as string[] | undefined) ?? [])]) {
    const con = db.get('console', c);
    if (!con) continue;
    const key = `${con.protocol} ${String(con.location).split('?')[0]}`;
    if (wanted.some((p) => `${p} ${uri}` === key) && !current.has(key)) current.set(key, c);
    else db.destroy('console', c);
  }
  for (const protocol of wanted) {
    if (current.has(`${protocol} ${uri}`)) continue;
    const uuid = emu.ids.uuid();
    db.create('console', emu.ids.ref(), { uuid, protocol, location: `${uri}?uuid=${uuid}`, VM: vm, other_config: {} });
  }
}

/** Emulators whose start-up resync is running: it computes every object's allowed_operations
 * once when it ends (as xapi's Cancel_tasks.update_all_allowed_operations), not after each VM. */
const resyncing = new WeakSet<Emulator>();

/** allowed_operations of a VM and its devices */
export function refreshAllowed(emu: Emulator, vm: string): void {
  if (resyncing.has(emu)) return;
  const rec = emu.db.get('VM', vm);
  if (!rec) return;
  updateAllowedOperations(emu, 'VM', vm);
  for (const b of rec.VBDs as string[]) updateAllowedOperations(emu, 'VBD', b);
  for (const v of rec.VIFs as string[]) updateAllowedOperations(emu, 'VIF', v);
}

/** update_vm / update_vbd / update_vif: re-reads xenopsd's view of one VM and writes what differs. */
/** Told when xenopsd reports that a running VM's domain is gone (server/api/ha-failover.ts). */
export const vmHaltedHooks: { halted: ((emu: Emulator, vm: string) => void) | null } = { halted: null };

export function syncVm(emu: Emulator, host: string, uuid: string): void {
  const { db } = emu;
  const vm = db.refByUuid('VM', uuid);
  if (!vm) return;
  const rec = db.get('VM', vm)!;
  if (rec.is_control_domain === true) return;
  const x = xenopsOf(emu, host);
  const running = x.list().includes(uuid);
  if (!running) {
    // another host's VM, or one this host never ran
    if (rec.resident_on !== host && rec.resident_on !== NULL_REF) return;
    const suspended = x.stat(uuid).power_state === 'Suspended';
    if (suspended && rec.power_state !== 'Suspended') forceStateReset(emu, vm, 'Suspended');
    else if (!suspended && (rec.power_state === 'Running' || rec.power_state === 'Paused')) {
      forceStateReset(emu, vm, 'Halted');
      // a domain that went away by itself (the guest shut down or crashed): HA may restart it
      if (!resyncing.has(emu)) vmHaltedHooks.halted?.(emu, vm);
    }
    for (const b of rec.VBDs as string[]) setIfChanged(emu, 'VBD', b, { currently_attached: false });
    for (const v of rec.VIFs as string[]) setIfChanged(emu, 'VIF', v, { currently_attached: false });
    if (rec.resident_on !== NULL_REF || rec.domid !== -1) db.update('VM', vm, { resident_on: NULL_REF, domid: -1 });
    syncConsoles(emu, vm, null);
    refreshAllowed(emu, vm);
    return;
  }
  const s = x.stat(uuid);
  const prev = { power_state: String(rec.power_state), domid: Number(rec.domid), resident_on: String(rec.resident_on) };
  db.update('VM', vm, { power_state: s.power_state, domid: s.domid, resident_on: host, scheduled_to_be_resident_on: NULL_REF });
  syncConsoles(emu, vm, { host, hvm: s.hvm });
  const metrics = String(rec.metrics);
  if (db.has('VM_metrics', metrics)) {
    const m = db.get('VM_metrics', metrics)!;
    const changes: Rec = {
      start_time: xapiDate(s.last_start_time), VCPUs_number: s.vcpus, memory_actual: s.memory_actual, hvm: s.hvm,
      current_domain_type: s.domain_type,
    };
    if (Object.entries(changes).some(([k, v]) => m[k] !== v)) db.update('VM_metrics', metrics, { ...changes, last_updated: xapiDate(emu.clock.now()) });
  }
  for (const b of rec.VBDs as string[]) {
    const vbd = db.get('VBD', b);
    if (!vbd) continue;
    const dev = linuxDevice(rec, vbd);
    const st = x.vbdStat(uuid, dev);
    const attached = st.plugged || st.active;
    db.update('VBD', b, attached ? { currently_attached: true, device: dev } : { currently_attached: false });
  }
  for (const v of rec.VIFs as string[]) {
    const vif = db.get('VIF', v);
    if (!vif) continue;
    const st = x.vifStat(uuid, String(vif.device));
    db.update('VIF', v, { currently_attached: st.plugged || st.active });
  }
  syncGuest(emu, vm, host, prev, { domid: s.domid, paused: s.power_state === 'Paused', startTime: s.last_start_time, pvDrivers: s.pv_drivers_detected });
  refreshAllowed(emu, vm);
}

export function syncHost(emu: Emulator, host: string): void {
  const x = xenopsOf(emu, host);
  const metrics = String(emu.db.get('host', host)?.metrics);
  if (emu.db.has('host_metrics', metrics)) emu.db.update('host_metrics', metrics, { memory_free: x.freeMemory() });
}

/** The host's free memory as xapi computes it for placement (host.compute_free_memory). */
export function hostFreeMemory(emu: Emulator, host: string): number {
  const x = xenopsOf(emu, host);
  // Memory_check: the VMs scheduled to this host (a start or a migration under way) reserve
  // their memory until their domain exists there
  let reserved = 0;
  const here = new Set(x.list());
  for (const [, row] of emu.db.table('VM')) {
    if (row.rec.scheduled_to_be_resident_on === host && !here.has(String(row.rec.uuid))) reserved += memoryRequired(row.rec);
  }
  return Math.max(0, x.freeMemory() - reserved);
}

// ---- start / stop with the emulator ----

/** memory_static_max of the control domains, by the host they are resident on */
function controlDomainMemory(emu: Emulator): Map<string, number> {
  const out = new Map<string, number>();
  for (const [, row] of emu.db.table('VM')) {
    if (row.rec.is_control_domain !== true) continue;
    const host = String(row.rec.resident_on);
    out.set(host, (out.get(host) ?? 0) + (Number(row.rec.memory_static_max) || 0));
  }
  return out;
}

function hostSpec(emu: Emulator, host: string, dom0s: Map<string, number>) {
  const { db } = emu;
  const h = db.get('host', host)!;
  const m = db.get('host_metrics', String(h.metrics));
  const total = Number(m?.memory_total) || 0;
  let dom0 = dom0s.get(host) ?? 0;
  if (!dom0) dom0 = total - (Number(m?.memory_free) || 0);
  return { uuid: String(h.uuid), totalMemory: total, dom0Memory: dom0 };
}

/**
 * Binds each host's xenopsd (surviving from before a toolstack restart, or new after a start of
 * the process) and resyncs the database with it, as xapi does at start (Xapi_xenops.on_xapi_restart,
 * Dbsync_slave): a VM the database believes Running or Paused without a domain becomes Halted
 * with its devices detached; no VBD or VIF of a Halted VM stays attached; a domain whose VM is gone
 * is destroyed. Then the UPDATES consumers start.
 */
export function startXenops(emu: Emulator): () => void {
  const storage = storageFor(emu);
  const stopGuests = startGuests(emu);
  const map = new Map<string, Xenopsd>();
  bound.set(emu, map);
  const dom0s = controlDomainMemory(emu);
  for (const host of emu.hosts) map.set(host, xenopsdFor(emu.storageDir, hostSpec(emu, host, dom0s), { clock: emu.clock, storage }));
  /** the host whose xenopsd has each domain */
  const domainHost = new Map<string, string>();
  for (const [host, x] of map) {
    for (const uuid of x.list()) {
      const vm = emu.db.refByUuid('VM', uuid);
      if (!vm) void x.shutdown(uuid, { clean: false }).catch(() => undefined);
      else if (!domainHost.has(uuid)) domainHost.set(uuid, host);
    }
  }
  // all of it derived from the domains and the database, which the next start finds again: the
  // writes go to disk in the background (Database.derived) and a start does not wait for them
  emu.db.derived(() => {
    resyncing.add(emu);
    try {
      for (const [vm, row] of [...emu.db.table('VM')]) {
        if (row.rec.is_control_domain === true) continue;
        const uuid = String(row.rec.uuid);
        const host = domainHost.get(uuid);
        if (host) syncVm(emu, host, uuid);
        else if (row.rec.power_state === 'Running' || row.rec.power_state === 'Paused') forceStateReset(emu, vm, 'Halted');
        else if (row.rec.power_state === 'Halted') {
          for (const b of row.rec.VBDs as string[]) setIfChanged(emu, 'VBD', b, { currently_attached: false });
          for (const v of row.rec.VIFs as string[]) setIfChanged(emu, 'VIF', v, { currently_attached: false });
          if (row.rec.resident_on !== NULL_REF || row.rec.domid !== -1) emu.db.update('VM', vm, { resident_on: NULL_REF, domid: -1 });
        }
      }
    } finally {
      resyncing.delete(emu);
    }
    for (const host of map.keys()) syncHost(emu, host);
    // operations of tasks that did not survive, then allowed_operations of every object, once
    resetOperations(emu, ['VM', 'VBD', 'VIF', 'host', 'pool']);
  });
  emu.db.flush();

  const unsubs: (() => void)[] = [];
  subscriptions.set(emu, unsubs);
  for (const [host, x] of map) unsubs.push(consumeUpdates(emu, map, host, x));
  return () => {
    for (const u of unsubs) u();
    stopGuests();
    if (bound.get(emu) === map) bound.delete(emu);
    subscriptions.delete(emu);
  };
}

const subscriptions = new WeakMap<Emulator, (() => void)[]>();

/** The UPDATES consumer of one host's xenopsd. */
function consumeUpdates(emu: Emulator, map: Map<string, Xenopsd>, host: string, x: Xenopsd): () => void {
  let last = x.updates.lastId();
  return x.updates.subscribe(() => {
    if (bound.get(emu) !== map || !reachableHost(emu, host)) return;
    const { ids, next } = x.updates.get(last);
    last = next;
    const vms = new Set<string>();
    for (const id of ids) {
      const [kind, uuid] = id.split('/');
      if (kind === 'HOST') syncHost(emu, host);
      else if (uuid) vms.add(uuid);
    }
    const quiet = suppressed.get(emu);
    for (const uuid of vms) if (!quiet?.has(uuid)) syncVm(emu, host, uuid);
    emu.db.flush();
  });
}

/** A host that left the running pool (pool.eject): its xenopsd is no longer the pool's. */
export function unbindXenopsHost(emu: Emulator, host: string): void {
  bound.get(emu)?.delete(host);
}

/** A host that joined the running pool: its xenopsd, bound as those of the hosts at start. */
export function bindXenopsHost(emu: Emulator, host: string): void {
  const map = bound.get(emu);
  if (!map || map.has(host)) return;
  const x = xenopsdFor(emu.storageDir, hostSpec(emu, host, controlDomainMemory(emu)), { clock: emu.clock, storage: storageFor(emu) });
  map.set(host, x);
  subscriptions.get(emu)?.push(consumeUpdates(emu, map, host, x));
  syncHost(emu, host);
}
