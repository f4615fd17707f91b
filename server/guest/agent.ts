// What a running guest tells xapi through xenstore, and what xapi makes of it
// (xapi_guest_agent.ml, Xapi_xenops.update_vm): once the PV drivers are up, a VM_guest_metrics
// record with PV_drivers_detected and the control/* keys the kernel writes (`other`); once the
// guest agent runs, after the simulated boot, os_version, PV_drivers_version (attr/PVAddons),
// netbios_name, networks (attr/vif/<dev>/ipv4/0 and ipv6/0, listed by xapi as <dev>/ip,
// <dev>/ipv4/0, <dev>/ipv6/0), the hotplug tristates (feature/hotplug/*). xapi writes memory and
// disks empty (it ignores the agent's meminfo) and sets live once, at creation.
//
// Everything here is derived from the database and xenopsd's domains. A start begins without guest
// metrics (VM.start deletes them, Xapi_vm_helpers.delete_guest_metrics); a reboot keeps the record,
// stale, until the new boot's agent reports (xapi's per-domid cache starts empty for the new
// domid, so it rewrites what the agent reports; a migration or a resume keeps the same guest). The
// agent has reported in the current boot when its last report is not older than the domain (kept
// in memory while the emulator runs, from last_updated after a restart); a stopped agent is a
// record with live=false. So after a toolstack restart or a state restore, resyncGuests arms the
// boots still under way from the domains' start times.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { xapiDate } from '../clock.js';
import { guestOsOf, BOOT_SECONDS, type GuestOs } from './os.js';
import { hasAgent, profileOf } from './profile.js';
import { formatIpv4, inSubnet, offerIpv4, parseIpv4, slaacIpv6, subnetOf } from './dhcp.js';
import { effectiveLockingMode, vifHasLink } from './link.js';
import { updateAllowedOperations } from '../api/operations.js';

/** The part of xenopsd's VM state the guest follows. */
export interface DomainState {
  domid: number;
  paused: boolean;
  /** ms since the epoch */
  startTime: number;
  pvDrivers: boolean;
}

/** What the database said of the VM before this sync. */
export interface PreviousState {
  power_state: string;
  domid: number;
  resident_on: string;
}

const gmOf = (emu: Emulator, rec: Rec): Rec | undefined => emu.db.get('VM_guest_metrics', String(rec.guest_metrics));

/** whether a guest agent ever reported in these metrics */
const everReported = (gm: Rec | undefined): boolean => !!gm && Object.keys((gm.os_version ?? {}) as object).length > 0;

/** by VM uuid, the domid whose agent has reported */
const reportedFor = new WeakMap<Emulator, Map<string, number>>();

function reportedMap(emu: Emulator): Map<string, number> {
  let m = reportedFor.get(emu);
  if (!m) reportedFor.set(emu, (m = new Map()));
  return m;
}

/** xapi's datetimes are to the second */
const seconds = (xapiTime: unknown): number => {
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d):(\d\d):(\d\d)Z$/.exec(String(xapiTime));
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) / 1000 : 0;
};

/** Whether the agent of the VM's current domain has reported. */
export function agentReported(emu: Emulator, rec: Rec, gm: Rec | undefined): boolean {
  if (!everReported(gm)) return false;
  const uuid = String(rec.uuid);
  const domid = Number(rec.domid);
  const m = reportedMap(emu);
  const known = m.get(uuid);
  if (known !== undefined) return known === domid;
  // after a restart: a report not older than the domain's start is this boot's
  const start = seconds(emu.db.get('VM_metrics', String(rec.metrics))?.start_time);
  const fresh = seconds(gm!.last_updated) >= start;
  if (fresh) m.set(uuid, domid);
  return fresh;
}

export type AgentState = 'none' | 'booting' | 'running' | 'stopped';

/** What the guest agent of a VM is doing, as far as its reports tell. */
export function agentState(emu: Emulator, rec: Rec): AgentState {
  const live = rec.power_state === 'Running' || rec.power_state === 'Paused';
  if (!live || !hasAgent(profileOf(emu, rec))) return 'none';
  const gm = gmOf(emu, rec);
  if (!agentReported(emu, rec, gm)) return 'booting';
  return gm!.live === false ? 'stopped' : 'running';
}

/** Xapi_vm_helpers.delete_guest_metrics */
export function deleteGuestMetrics(emu: Emulator, vm: string): void {
  const rec = emu.db.get('VM', vm);
  if (!rec) return;
  const gm = String(rec.guest_metrics);
  if (gm !== NULL_REF) emu.db.update('VM', vm, { guest_metrics: NULL_REF });
  if (emu.db.has('VM_guest_metrics', gm)) emu.db.destroy('VM_guest_metrics', gm);
}

/** control/* as the guest's kernel (Linux) or Windows PV drivers write them, with xenopsd's
 * control/has-vendor-device. */
function controlKeys(os: GuestOs, rec: Rec): Record<string, string> {
  const vendor = rec.has_vendor_device === true ? '1' : '0';
  if (os.family === 'windows') {
    return {
      'feature-balloon': '1', 'feature-poweroff': '1', 'feature-reboot': '1', 'feature-s3': '1', 'feature-s4': '1',
      'feature-shutdown': '1', 'feature-suspend': '1', 'feature-vcpu-hotplug': '1', 'has-vendor-device': vendor,
    };
  }
  // Linux's xenbus drivers: one feature-<command> per shutdown handler (no feature-shutdown)
  return {
    'feature-balloon': '1', 'feature-poweroff': '1', 'feature-reboot': '1', 'feature-suspend': '1', 'feature-sysrq': '1',
    'has-vendor-device': vendor, 'platform-feature-multiprocessor-suspend': '1', 'platform-feature-xs_reset_watches': '1',
  };
}

/** Xapi_guest_agent.create_and_set_guest_metrics when the PV drivers come up (the agent has not
 * written anything yet; Windows drivers announce hotplug themselves). */
function createDriversMetrics(emu: Emulator, vm: string, rec: Rec): void {
  const os = guestOsOf(rec);
  const hotplug = os.family === 'windows' ? 'yes' : 'unspecified';
  const ref = emu.ids.ref();
  emu.db.create('VM_guest_metrics', ref, {
    uuid: emu.ids.uuid(), os_version: {}, netbios_name: {}, PV_drivers_version: {}, PV_drivers_up_to_date: true,
    memory: {}, disks: {}, networks: {}, other: controlKeys(os, rec), last_updated: xapiDate(emu.clock.now()), other_config: {},
    live: true, can_use_hotplug_vbd: hotplug, can_use_hotplug_vif: hotplug, PV_drivers_detected: true, services: {},
  });
  emu.db.update('VM', vm, { guest_metrics: ref });
}

/** The address part of the first CIDR the VIF's static configuration holds ("" when none). */
const staticAddress = (addresses: unknown): string => String(((addresses as string[] | undefined) ?? [])[0] ?? '').split('/')[0];

/** The networks map the agent reports: every attached VIF's addresses. An interface without a
 * link has none. A static configuration pushed by xapi (VIF.configure_ipv4/6, read by the tools
 * from xenstore's static-ip-setting) is the guest's address; otherwise the guest keeps its lease
 * while it is one of its network's (a VIF moved to another network leases anew) and asks DHCP,
 * and SLAAC, which need the switch to let its traffic through (not a disabled VIF). */
function networksOf(emu: Emulator, rec: Rec, current: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  const vifs = ((rec.VIFs as string[]) ?? [])
    .map((v) => [v, emu.db.get('VIF', v)] as const)
    .filter(([, r]) => r && r.currently_attached === true)
    .sort(([, a], [, b]) => Number(a!.device) - Number(b!.device));
  for (const [ref, vif] of vifs) {
    if (!vifHasLink(emu, ref)) continue;
    const dev = String(vif!.device);
    const lease = effectiveLockingMode(emu, vif!) !== 'disabled';
    let ip: string | null = null;
    const static4 = vif!.ipv4_configuration_mode === 'Static' ? staticAddress(vif!.ipv4_addresses) : '';
    if (static4) ip = static4;
    else if (lease) {
      const net = emu.db.get('network', String(vif!.network));
      const held = parseIpv4(current[`${dev}/ip`] ?? '');
      ip = held !== null && net && inSubnet(subnetOf(net), held) ? formatIpv4(held) : offerIpv4(emu, ref);
    }
    if (ip) {
      out[`${dev}/ip`] = ip;
      out[`${dev}/ipv4/0`] = ip;
    }
    const static6 = vif!.ipv6_configuration_mode === 'Static' ? staticAddress(vif!.ipv6_addresses) : '';
    const ip6 = static6 || (lease ? slaacIpv6(emu, ref) : null);
    if (ip6) out[`${dev}/ipv6/0`] = ip6;
  }
  return out;
}

const sameMap = (a: unknown, b: unknown): boolean => {
  const x = (a ?? {}) as Record<string, string>;
  const y = (b ?? {}) as Record<string, string>;
  const kx = Object.keys(x);
  return kx.length === Object.keys(y).length && kx.every((k) => y[k] === x[k]);
};

/** Xapi_guest_agent.all: the agent's report, written where it differs. */
export function agentReport(emu: Emulator, vm: string): void {
  const { db } = emu;
  const rec = db.get('VM', vm);
  if (!rec) return;
  if (!gmOf(emu, rec)) createDriversMetrics(emu, vm, rec);
  const gmRef = String(db.get('VM', vm)!.guest_metrics);
  const gm = db.get('VM_guest_metrics', gmRef)!;
  const os = guestOsOf(rec);
  const hotplug = os.family === 'windows' ? 'yes' : 'unspecified';
  const report: Rec = {
    os_version: os.osVersion,
    PV_drivers_version: os.pvDriversVersion,
    netbios_name: os.hostName ? { host_name: os.hostName } : {},
    networks: networksOf(emu, rec, (gm.networks ?? {}) as Record<string, string>),
    // the tools apply static IP settings pushed through xenstore (VIF.configure_ipv4/6)
    other: { ...controlKeys(os, rec), 'feature-static-ip-setting': '1' },
    can_use_hotplug_vbd: hotplug,
    can_use_hotplug_vif: hotplug,
  };
  reportedMap(emu).set(String(rec.uuid), Number(rec.domid));
  const changes: Rec = {};
  for (const [k, v] of Object.entries(report)) if (typeof v === 'string' ? gm[k] !== v : !sameMap(gm[k], v)) changes[k] = v;
  if (gm.live !== true) changes.live = true;
  db.update('VM_guest_metrics', gmRef, { ...changes, last_updated: xapiDate(emu.clock.now()) });
  // the advertised features and hotplug decide allowed_operations (VM.update_allowed_operations)
  updateAllowedOperations(emu, 'VM', vm);
  for (const b of (rec.VBDs as string[]) ?? []) updateAllowedOperations(emu, 'VBD', b);
  for (const v of (rec.VIFs as string[]) ?? []) updateAllowedOperations(emu, 'VIF', v);
}

/** The networks of a reporting agent follow its VIFs (a hotplugged NIC gets an address). */
function refreshNetworks(emu: Emulator, vm: string, rec: Rec, gm: Rec): void {
  const current = (gm.networks ?? {}) as Record<string, string>;
  const next = networksOf(emu, rec, current);
  if (!sameMap(current, next)) emu.db.update('VM_guest_metrics', String(rec.guest_metrics), { networks: next, last_updated: xapiDate(emu.clock.now()) });
}

/** A running agent reports its NICs again after something changed under them outside a sync of
 * the VM (a link, a switch port's mode). */
export function refreshGuestNetworks(emu: Emulator, vm: string): void {
  const rec = emu.db.get('VM', vm);
  if (!rec || agentState(emu, rec) !== 'running') return;
  refreshNetworks(emu, vm, rec, gmOf(emu, rec)!);
}

/** The guests on `host` with a NIC on `network` report what they now see (after its PIFs there
 * were plugged or unplugged, or their carrier changed). */
export function refreshGuestsOn(emu: Emulator, network: string, host: string): void {
  const vms = new Set<string>();
  for (const v of (emu.db.get('network', network)?.VIFs as string[] | undefined) ?? []) {
    const vm = String(emu.db.get('VIF', v)?.VM);
    if (emu.db.get('VM', vm)?.resident_on === host) vms.add(vm);
  }
  for (const vm of vms) refreshGuestNetworks(emu, vm);
}

/** Every guest running on `host` reports what its NICs now see (after networkd read the host's
 * links again, or PIFs there came up or went down). */
export function refreshGuestsOnHost(emu: Emulator, host: string): void {
  for (const vm of (emu.db.get('host', host)?.resident_VMs as string[] | undefined) ?? []) refreshGuestNetworks(emu, vm);
}

/** The guest's tools give up a VIF's static IPv4 address for its default configuration: its
 * DHCP client leases afresh at the next report (a running agent's record, where it lists it). */
export function dropStaticAddress(emu: Emulator, vif: string): void {
  const v = emu.db.get('VIF', vif);
  const rec = v && emu.db.get('VM', String(v.VM));
  if (!rec || agentState(emu, rec) !== 'running') return;
  const gm = gmOf(emu, rec)!;
  const dev = String(v.device);
  const networks = { ...((gm.networks ?? {}) as Record<string, string>) };
  if (networks[`${dev}/ip`] === undefined) return;
  delete networks[`${dev}/ip`];
  delete networks[`${dev}/ipv4/0`];
  emu.db.update('VM_guest_metrics', String(rec.guest_metrics), { networks });
}

// ---- boots under way ----

interface Boot {
  domid: number;
}

const booting = new WeakMap<Emulator, Map<string, Boot>>();
const running = new WeakSet<Emulator>();

/** Arms the guest agent's first report of the VM's current boot. */
function armAgent(emu: Emulator, vm: string, uuid: string, d: DomainState): void {
  let m = booting.get(emu);
  if (!m) booting.set(emu, (m = new Map()));
  if (m.get(uuid)?.domid === d.domid) return;
  const boot: Boot = { domid: d.domid };
  m.set(uuid, boot);
  const rec = emu.db.get('VM', vm)!;
  const total = BOOT_SECONDS[guestOsOf(rec).family];
  const left = Math.max(0, total - (emu.clock.now() - d.startTime) / 1000);
  void emu.clock.sleep(left).then(() => {
    if (m.get(uuid) === boot) m.delete(uuid);
    if (!running.has(emu)) return;
    try {
      const ref = emu.db.refByUuid('VM', uuid);
      const r = ref && emu.db.get('VM', ref);
      // the boot this timer was armed for is still the VM's, and still wants an agent
      if (!r || r.power_state !== 'Running' || Number(r.domid) !== boot.domid) return;
      if (!hasAgent(profileOf(emu, r))) return;
      const gm = gmOf(emu, r);
      if (!gm || gm.PV_drivers_detected !== true || agentReported(emu, r, gm)) return;
      agentReport(emu, ref);
      emu.db.flush();
    } catch {
      // the emulator went away under the timer
    }
  });
}

/**
 * The guest's side of Xapi_xenops.update_vm for a VM that has a domain on `host`, called by the
 * sync after it wrote the VM's power state. A start begins with no guest metrics; the PV drivers'
 * arrival creates them; the agent of each boot reports after the boot time.
 */
export function syncGuest(emu: Emulator, vm: string, host: string, prev: PreviousState, d: DomainState): void {
  const { db } = emu;
  let rec = db.get('VM', vm);
  if (!rec) return;
  const uuid = String(rec.uuid);
  const reported = reportedMap(emu);
  if (prev.power_state === 'Halted') {
    reported.delete(uuid);
    if (rec.guest_metrics !== NULL_REF) deleteGuestMetrics(emu, vm);
    rec = db.get('VM', vm)!;
  } else if (prev.domid !== d.domid) {
    // a resume or a migration moves the same running guest to a new domain; a reboot starts a new one
    const sameGuest = prev.power_state === 'Suspended' || (prev.resident_on !== host && prev.resident_on !== NULL_REF);
    if (!sameGuest) reported.delete(uuid);
    else if (reported.has(uuid)) reported.set(uuid, d.domid);
  }
  let gm = gmOf(emu, rec);
  if (d.pvDrivers && !gm) {
    createDriversMetrics(emu, vm, rec);
    rec = db.get('VM', vm)!;
    gm = gmOf(emu, rec);
  } else if (gm && gm.PV_drivers_detected !== d.pvDrivers) {
    // the different pv_drivers_detected branch of update_vm
    db.update('VM_guest_metrics', String(rec.guest_metrics), { PV_drivers_detected: d.pvDrivers, PV_drivers_up_to_date: d.pvDrivers });
  }
  if (!gm || !d.pvDrivers || !hasAgent(profileOf(emu, rec))) return;
  if (agentReported(emu, rec, gm)) {
    if (gm.live !== false) refreshNetworks(emu, vm, rec, gm);
    return;
  }
  if (!d.paused) armAgent(emu, vm, uuid, d);
}

/** Forgets the boots armed so far (their timers find nothing left to do). */
export function forgetBoots(emu: Emulator): void {
  booting.delete(emu);
  reportedFor.delete(emu);
}

/** Starts following guests (the sync calls syncGuest for each running VM at start). */
export function startGuests(emu: Emulator): () => void {
  running.add(emu);
  return () => {
    running.delete(emu);
    booting.delete(emu);
    reportedFor.delete(emu);
  };
}
