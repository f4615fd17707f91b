// The addresses a host's interface gets from the simulated fabric: DHCP on the network's subnet
// (the same one the guests' DHCP serves, see server/guest/dhcp.ts) and SLAAC in its unique local
// /64. A lease is drawn from the pool's seed, the host and the MAC, probing forward past the
// addresses other interfaces and guests hold, so the same pool gives the same answers every run.
import { createHmac } from 'node:crypto';
import type { Emulator } from '../emulator.js';
import { dhcpSeed, formatIpv4, leasesOn, macBytes, parseIpv4, slaacAddressOf, subnetOf } from '../guest/dhcp.js';

/** the MAC xapi gives every VLAN PIF (Xapi_vlan.vlan_mac) */
export const VLAN_MAC = 'fe:ff:ff:ff:ff:ff';

export interface Lease {
  IP: string;
  netmask: string;
  gateway: string;
}

const netmaskOf = (prefix: number): string => formatIpv4(prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** The lease DHCP gives the PIF on its network, or null when the subnet is full. */
export function dhcpLease(emu: Emulator, pif: string): Lease | null {
  const { db } = emu;
  const rec = db.get('PIF', pif);
  const net = rec && db.get('network', String(rec.network));
  if (!rec || !net) return null;
  const s = subnetOf(net);
  const lo = s.base + 2;
  const size = 2 ** (32 - s.prefix) - 3;
  if (size <= 0) return null;
  const used = leasesOn(emu, String(rec.network));
  for (const p of net.PIFs as string[]) {
    if (p === pif) continue;
    const ip = parseIpv4(String(db.get('PIF', p)?.IP ?? ''));
    if (ip !== null) used.add(ip);
  }
  const host = String(db.get('host', String(rec.host))?.uuid ?? '');
  const h = createHmac('sha256', dhcpSeed(emu)).update(`dhcp:${host}:${String(rec.MAC).toLowerCase()}`).digest();
  const start = h.readUInt32BE(0) % size;
  for (let i = 0; i < size; i++) {
    const ip = lo + ((start + i) % size);
    if (!used.has(ip)) return { IP: formatIpv4(ip), netmask: netmaskOf(s.prefix), gateway: formatIpv4(s.base + 1) };
  }
  return null;
}

/** The SLAAC address (with its /64) of the PIF in its network's unique local prefix. */
export function slaacAddress(emu: Emulator, pif: string): string | null {
  const rec = emu.db.get('PIF', pif);
  const net = rec && emu.db.get('network', String(rec.network));
  const mac = rec && macBytes(String(rec.MAC));
  if (!rec || !net || !mac) return null;
  // a VLAN PIF's MAC is the same dummy on every host: there the host's uuid stands in for the card
  if (String(rec.MAC).toLowerCase() === VLAN_MAC) {
    const hh = createHmac('sha256', dhcpSeed(emu)).update(`iid:${String(emu.db.get('host', String(rec.host))?.uuid ?? '')}`).digest();
    for (let i = 0; i < 6; i++) mac[i] = hh[i];
  }
  return `${slaacAddressOf(emu, String(net.uuid), mac)}/64`;
}
