// The simulated DHCP server of each network, and SLAAC. A network's IPv4 subnet is
// network.other_config:xapi-emu-dhcp-subnet (CIDR), else derived: the network on bridge xenbrN →
// 10.N.0.0/16, the host internal management network → 169.254.0.0/16 as on a real host, any
// other network a /16 of 10.128.0.0/9 drawn from its uuid. The first address is the gateway's.
// A VIF's address is drawn from the pool's seed and its MAC; when another VIF on the network holds
// it, the next free one is taken (probing forward). The leases are the addresses the guests report
// (VM_guest_metrics.networks of VMs that are not halted), so they come back from the database
// after a restart or a state restore. IPv6: a unique local /64 of the network (from the seed and
// the network's uuid) with the interface identifier of the MAC (modified EUI-64, as SLAAC).
import { createHmac } from 'node:crypto';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';

export const DHCP_SUBNET_KEY = 'xapi-emu-dhcp-subnet';

export interface Subnet {
  /** network address, as a 32-bit unsigned integer */
  base: number;
  prefix: number;
}

export function parseIpv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s.trim());
  if (!m) return null;
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255)) return null;
  return ((o[0] << 24) >>> 0) + (o[1] << 16) + (o[2] << 8) + o[3];
}

export const formatIpv4 = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

export function parseCidr(s: string): Subnet | null {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(String(s).trim());
  if (!m) return null;
  const addr = parseIpv4(m[1]);
  const prefix = Number(m[2]);
  if (addr === null || prefix < 8 || prefix > 30) return null;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (addr & mask) >>> 0, prefix };
}

export const formatCidr = (s: Subnet): string => `${formatIpv4(s.base)}/${s.prefix}`;

/** The subnet of a network (see above). */
export function subnetOf(net: Rec): Subnet {
  const given = parseCidr(String(((net.other_config ?? {}) as Record<string, string>)[DHCP_SUBNET_KEY] ?? ''));
  if (given) return given;
  const bridge = String(net.bridge ?? '');
  let m = /^xenbr(\d+)$/.exec(bridge);
  if (m) return { base: ((10 << 24) >>> 0) + ((Number(m[1]) % 128) << 16), prefix: 16 };
  if (bridge === 'xenapi') return { base: parseIpv4('169.254.0.0')!, prefix: 16 };
  // any other network (network.create's, whatever its bridge): a /16 of 10.128.0.0/9 from its uuid
  const h = createHmac('sha256', 'network').update(String(net.uuid)).digest();
  return { base: ((10 << 24) >>> 0) + ((128 + (h[0] & 127)) << 16), prefix: 16 };
}

/** the first and last address a guest may get (after the gateway, before broadcast) */
function range(s: Subnet): [number, number] {
  const size = 2 ** (32 - s.prefix);
  return [s.base + 2, s.base + size - 2];
}

export const inSubnet = (s: Subnet, ip: number): boolean => {
  const [lo, hi] = range(s);
  return ip >= lo && ip <= hi;
};

/** the seed leases are drawn from: the pool's --seed, else its uuid (kept in the database) */
export function dhcpSeed(emu: Emulator): string {
  return emu.ids.seed ?? String(emu.db.get('pool', emu.pool)?.uuid ?? '');
}

/** The IPv4 addresses VIFs hold on a network (other than `except`), from their guests' reports. */
export function leasesOn(emu: Emulator, network: string, except?: string): Set<number> {
  const { db } = emu;
  const out = new Set<number>();
  for (const v of (db.get('network', network)?.VIFs as string[] | undefined) ?? []) {
    if (v === except) continue;
    const vif = db.get('VIF', v);
    const vm = vif && db.get('VM', String(vif.VM));
    if (!vm || vm.power_state === 'Halted') continue;
    const ip = ((db.get('VM_guest_metrics', String(vm.guest_metrics))?.networks ?? {}) as Record<string, string>)[`${vif.device}/ip`];
    const n = ip ? parseIpv4(ip) : null;
    if (n !== null) out.add(n);
  }
  return out;
}

/** The address DHCP offers a VIF: drawn from the seed and its MAC, probing forward from there
 * (`from`, when given, is where the probe starts: a renewal that must change the address). Null
 * when the subnet is full. */
export function offerIpv4(emu: Emulator, vif: string, from?: number): string | null {
  const rec = emu.db.get('VIF', vif);
  const net = rec && emu.db.get('network', String(rec.network));
  if (!rec || !net) return null;
  const s = subnetOf(net);
  const [lo, hi] = range(s);
  const size = hi - lo + 1;
  if (size <= 0) return null;
  const used = leasesOn(emu, String(rec.network), vif);
  let start: number;
  if (from !== undefined) start = from - lo;
  else {
    const h = createHmac('sha256', dhcpSeed(emu)).update(`dhcp:${String(rec.MAC).toLowerCase()}`).digest();
    start = h.readUInt32BE(0) % size;
  }
  for (let i = 0; i < size; i++) {
    const ip = lo + ((((start + i) % size) + size) % size);
    if (!used.has(ip)) return formatIpv4(ip);
  }
  return null;
}

/** A MAC's six bytes, or null for one that is not aa:bb:cc:dd:ee:ff. */
export function macBytes(mac: string): number[] | null {
  const b = mac.toLowerCase().split(':').map((x) => parseInt(x, 16));
  return b.length === 6 && b.every((x) => Number.isInteger(x) && x >= 0 && x <= 255) ? b : null;
}

/** The SLAAC address of an interface with these MAC bytes in the network's unique local /64
 * (fd + a 40-bit global ID from the network's uuid, subnet 0, the EUI-64 of the MAC). */
export function slaacAddressOf(emu: Emulator, networkUuid: string, mac: number[]): string {
  const g = createHmac('sha256', dhcpSeed(emu)).update(`ula:${networkUuid}`).digest();
  const prefix = [0xfd00 | g[0], (g[1] << 8) | g[2], (g[3] << 8) | g[4], 0];
  const eui = [mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
  const iid = [0, 2, 4, 6].map((i) => (eui[i] << 8) | eui[i + 1]);
  return [...prefix, ...iid].map((x) => x.toString(16)).join(':');
}

/** The SLAAC address of a VIF in its network's unique local /64. */
export function slaacIpv6(emu: Emulator, vif: string): string | null {
  const rec = emu.db.get('VIF', vif);
  const net = rec && emu.db.get('network', String(rec.network));
  const mac = rec && macBytes(String(rec.MAC));
  if (!rec || !net || !mac) return null;
  return slaacAddressOf(emu, String(net.uuid), mac);
}
