// The simulated network cards of each host, as xcp-networkd sees them in sysfs: a device name, a
// MAC, link state (carrier, speed, duplex), the PCI identity and, for SR-IOV capable cards, the
// number of virtual functions. A host starts with the NICs its physical PIFs name (eth0 in a fresh
// pool); the control API plugs more, pulls them and cuts or restores their carrier.
//
// The table is kept in the database's meta entries (written at once, with no answer pending on
// it), by host uuid; a host that has no entry yet takes its physical PIFs' devices. xapi's records
// (PIF, PIF_metrics, Bond.links_up) follow the table through syncHostMetrics, as xapi's monitor
// thread copies networkd's readings into the database.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { xapiDate } from '../clock.js';
import { refreshGuestsOnHost } from '../guest/agent.js';

export interface Nic {
  device: string;
  MAC: string;
  /** Mbit/s when the link is up */
  speed: number;
  duplex: boolean;
  carrier: boolean;
  vendor_id: string;
  vendor_name: string;
  device_id: string;
  device_name: string;
  pci_bus_path: string;
  /** virtual functions of an SR-IOV capable card (0: not capable) */
  sriov_vfs: number;
  MTU: number;
}

const META_KEY = 'networkd.nics';
type Table = Record<string, Nic[]>;
const cache = new WeakMap<Emulator, Table>();

function load(emu: Emulator): Table {
  let t = cache.get(emu);
  if (!t) {
    t = {};
    try {
      const raw = emu.db.getMeta(META_KEY);
      if (raw) t = JSON.parse(raw) as Table;
    } catch {
      // an unreadable table: every host goes back to the NICs its PIFs name
    }
    cache.set(emu, t);
  }
  return t;
}

function save(emu: Emulator, t: Table): void {
  cache.set(emu, t);
  emu.db.setMeta(META_KEY, JSON.stringify(t));
}

const hostUuid = (emu: Emulator, host: string): string => String(emu.db.get('host', host)?.uuid ?? host);

/** The NICs a host's physical PIFs describe (its state before any change through networkd). */
function fromPifs(emu: Emulator, host: string): Nic[] {
  const out: Nic[] = [];
  for (const p of (emu.db.get('host', host)?.PIFs as string[] | undefined) ?? []) {
    const pif = emu.db.get('PIF', p);
    if (!pif || pif.physical !== true || out.some((n) => n.device === pif.device)) continue;
    const m = emu.db.get('PIF_metrics', String(pif.metrics)) ?? {};
    out.push({
      device: String(pif.device), MAC: String(pif.MAC).toLowerCase(), speed: Number(m.speed) || 1000, duplex: true,
      carrier: m.carrier !== false, vendor_id: String(m.vendor_id ?? ''), vendor_name: String(m.vendor_name ?? ''),
      device_id: String(m.device_id ?? ''), device_name: String(m.device_name ?? ''), pci_bus_path: String(m.pci_bus_path ?? ''),
      sriov_vfs: 0, MTU: Number(pif.MTU) || 1500,
    });
  }
  return out;
}

/** The NICs of a host, in their order (eth0 first). */
export function nicsOf(emu: Emulator, host: string): Nic[] {
  const t = load(emu);
  return t[hostUuid(emu, host)] ?? fromPifs(emu, host);
}

export function nicOf(emu: Emulator, host: string, device: string): Nic | undefined {
  return nicsOf(emu, host).find((n) => n.device === device);
}

/** Forgets the table: every host's NICs are again those its physical PIFs name (after the
 * database went back to a snapshot, the hardware is what that database describes). */
export function forgetNics(emu: Emulator): void {
  save(emu, {});
  bondsSeen.delete(emu);
}

/** Writes down a host's NICs as they are now, before its PIFs change (a forgotten PIF's card stays). */
export function pinNics(emu: Emulator, host: string): void {
  if (load(emu)[hostUuid(emu, host)] === undefined) put(emu, host, fromPifs(emu, host));
}

function put(emu: Emulator, host: string, nics: Nic[]): void {
  const t = load(emu);
  save(emu, { ...t, [hostUuid(emu, host)]: nics });
}

export class NicError extends Error {
  constructor(readonly code: 'NIC_EXISTS' | 'NIC_NOT_FOUND' | 'MAC_INVALID' | 'MAC_IN_USE', message: string) {
    super(message);
  }
}

export const isValidMac = (mac: string): boolean => /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac);

export interface NicSpec {
  device: string;
  MAC?: string;
  speed?: number;
  carrier?: boolean;
  duplex?: boolean;
  sriov_vfs?: number;
}

/** Plugs a new card into a host (it gets a PIF at the next PIF.scan or PIF.introduce). PCI slots
 * follow the device's position. */
export function addNic(emu: Emulator, host: string, spec: NicSpec): Nic {
  const nics = nicsOf(emu, host);
  if (nics.some((n) => n.device === spec.device)) throw new NicError('NIC_EXISTS', `the host already has a NIC ${spec.device}`);
  const MAC = (spec.MAC ?? emu.ids.mac()).toLowerCase();
  if (!isValidMac(MAC)) throw new NicError('MAC_INVALID', `not a MAC address: ${spec.MAC}`);
  if (nics.some((n) => n.MAC === MAC)) throw new NicError('MAC_IN_USE', `another NIC of the host has the MAC ${MAC}`);
  const sriov = (spec.sriov_vfs ?? 0) > 0;
  const nic: Nic = {
    device: spec.device, MAC, speed: spec.speed ?? (sriov ? 10000 : 1000), duplex: spec.duplex ?? true, carrier: spec.carrier ?? true,
    vendor_id: '8086', vendor_name: 'Intel Corporation',
    device_id: sriov ? '1572' : '1521',
    device_name: sriov ? 'Ethernet Controller X710 for 10GbE SFP+' : 'I350 Gigabit Network Connection',
    pci_bus_path: `0000:${(nics.length + 1).toString(16).padStart(2, '0')}:00.0`,
    sriov_vfs: spec.sriov_vfs ?? 0, MTU: 1500,
  };
  put(emu, host, [...nics, nic]);
  syncHostMetrics(emu, host);
  return nic;
}

/** Pulls a card out: its PIF stays (as xapi keeps PIFs of absent devices) with no carrier. */
export function removeNic(emu: Emulator, host: string, device: string): Nic {
  const nics = nicsOf(emu, host);
  const nic = nics.find((n) => n.device === device);
  if (!nic) throw new NicError('NIC_NOT_FOUND', `the host has no NIC ${device}`);
  put(emu, host, nics.filter((n) => n !== nic));
  syncHostMetrics(emu, host);
  return nic;
}

/** Plugs or unplugs the cable of a card. */
export function setCarrier(emu: Emulator, host: string, device: string, carrier: boolean): Nic {
  const nics = nicsOf(emu, host);
  const nic = nics.find((n) => n.device === device);
  if (!nic) throw new NicError('NIC_NOT_FOUND', `the host has no NIC ${device}`);
  const next = { ...nic, carrier };
  put(emu, host, nics.map((n) => (n === nic ? next : n)));
  syncHostMetrics(emu, host);
  return next;
}

/** What networkd reads of a device: absent (null) or its link. */
export interface LinkStat {
  carrier: boolean;
  speed: number;
  duplex: boolean;
}

export function linkOf(emu: Emulator, host: string, device: string): LinkStat | null {
  const nic = nicOf(emu, host, device);
  if (!nic) return null;
  // a link that is down reports no speed and an unknown duplex
  return nic.carrier ? { carrier: true, speed: nic.speed, duplex: nic.duplex } : { carrier: false, speed: 0, duplex: false };
}

/** What networkd last saw of each bond (its members, those up), by bond ref: a change is an alert. */
const bondsSeen = new WeakMap<Emulator, Map<string, { links: number; up: number }>>();

/** send_bond_change_alert: a BOND_STATUS_CHANGED message on the host, as networkd sends it. */
function bondAlert(emu: Emulator, host: string, bond: Rec, body: string): void {
  const ifaces = ((bond.slaves as string[]) ?? []).map((s) => String(emu.db.get('PIF', s)?.device ?? '')).sort().join('+');
  emu.db.create('message', emu.ids.ref(), {
    uuid: emu.ids.uuid(), name: 'BOND_STATUS_CHANGED', priority: 3, cls: 'Host', obj_uuid: hostUuid(emu, host),
    timestamp: xapiDate(emu.clock.now()), body: `The status of the ${ifaces} bond ${body}`,
  });
}

function checkBond(emu: Emulator, host: string, ref: string, bond: Rec, up: number): void {
  let seen = bondsSeen.get(emu);
  if (!seen) bondsSeen.set(emu, (seen = new Map()));
  const links = ((bond.slaves as string[]) ?? []).length;
  const before = seen.get(ref);
  seen.set(ref, { links, up });
  if (!before) {
    if (up !== links) bondAlert(emu, host, bond, `is: ${up}/${links} up`);
  } else if (before.up !== up) bondAlert(emu, host, bond, `changed: ${up}/${links} up (was ${before.up}/${before.links})`);
}

/** The members' links of a bond master PIF: carrier when one is up, speeds added up. */
function bondStat(emu: Emulator, host: string, bond: Rec): { stat: LinkStat; up: number } {
  let up = 0;
  let speed = 0;
  let duplex = false;
  for (const s of (bond.slaves as string[]) ?? []) {
    const l = linkOf(emu, host, String(emu.db.get('PIF', s)?.device ?? ''));
    if (l?.carrier) {
      up++;
      speed += l.speed;
      duplex = duplex || l.duplex;
    }
  }
  return { stat: { carrier: up > 0, speed, duplex }, up };
}

/** Copies networkd's view of a host's links into its PIF_metrics and Bond.links_up (xapi's monitor
 * thread does it every few seconds; here at once, on every change), then the guests on the host
 * see their NICs' links as they now are (an address goes with the carrier and comes back with it). */
export function syncHostMetrics(emu: Emulator, host: string): void {
  readLinks(emu, host);
  refreshGuestsOnHost(emu, host);
}

/** The PIF_metrics and Bond.links_up part of syncHostMetrics alone (at start, before xenopsd has
 * said which domains still run). */
export function readLinks(emu: Emulator, host: string): void {
  const { db } = emu;
  const now = xapiDate(emu.clock.now());
  for (const p of (db.get('host', host)?.PIFs as string[] | undefined) ?? []) {
    const pif = db.get('PIF', p);
    if (!pif) continue;
    let stat: LinkStat | null = null;
    let identity: Partial<Nic> = {};
    const bonds = pif.bond_master_of as string[];
    if (bonds.length > 0) {
      const bond = db.get('Bond', bonds[0]);
      if (!bond) continue;
      const b = bondStat(emu, host, bond);
      stat = b.stat;
      if (Number(bond.links_up) !== b.up) db.update('Bond', bonds[0], { links_up: b.up });
      checkBond(emu, host, bonds[0], bond, b.up);
    } else if (pif.physical === true) {
      stat = linkOf(emu, host, String(pif.device)) ?? { carrier: false, speed: 0, duplex: false };
      const nic = nicOf(emu, host, String(pif.device));
      if (nic) identity = nic;
    } else continue; // VLAN PIFs share their tagged PIF's metrics; tunnels and SR-IOV have none of their own
    const mref = String(pif.metrics);
    const m = db.get('PIF_metrics', mref);
    if (!m) continue;
    const changes: Rec = { carrier: stat.carrier, speed: stat.speed, duplex: stat.duplex };
    for (const k of ['vendor_id', 'vendor_name', 'device_id', 'device_name', 'pci_bus_path'] as const) {
      if (identity[k] !== undefined) changes[k] = identity[k];
    }
    if (Object.entries(changes).some(([k, v]) => m[k] !== v)) db.update('PIF_metrics', mref, { ...changes, last_updated: now });
  }
}
