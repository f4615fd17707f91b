// What a guest's NIC sees of the network behind it: whether its VIF has a link (carrier) on the
// host the VM runs on, and whether the switch port lets its traffic through (the VIF's effective
// locking mode, Xapi_xenops.of_vif: network_default takes the network's default_locking_mode;
// disabled drops everything; locked lets DHCP out and otherwise only the addresses in
// ipv4_allowed / ipv6_allowed, as the vif rules of setup-vif-rules do).
//
// A network has a link on a host when networkd says so (networkHasCarrier): no PIF there (a
// private network: its bridge is always up), or its PIF there plugged with a NIC under it that has
// carrier, through VLANs, bonds, tunnels and SR-IOV alike.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { isIPv4, isIPv6 } from 'node:net';
import { offerIpv4, parseIpv4 } from './dhcp.js';
import { networkHasCarrier } from '../api/network-links.js';

export type EffectiveLockingMode = 'locked' | 'unlocked' | 'disabled';

/** The mode the switch applies to a VIF (a VIF's network_default is its network's default). */
export function effectiveLockingMode(emu: Emulator, vif: Rec): EffectiveLockingMode {
  const mode = String(vif.locking_mode ?? 'network_default');
  if (mode === 'locked' || mode === 'unlocked' || mode === 'disabled') return mode;
  const net = emu.db.get('network', String(vif.network));
  return net?.default_locking_mode === 'disabled' ? 'disabled' : 'unlocked';
}

/** Whether a VIF has a link: its VM runs on a host where its network is linked. */
export function vifHasLink(emu: Emulator, vif: string): boolean {
  const { db } = emu;
  const rec = db.get('VIF', vif);
  const vm = rec && db.get('VM', String(rec.VM));
  if (!rec || !vm) return false;
  const host = String(vm.resident_on ?? NULL_REF);
  if (host === NULL_REF) return false;
  const network = String(rec.network);
  return emu.db.has('network', network) && networkHasCarrier(emu, network, host);
}

/** Whether an address is one of the allowed ones (an address, or a CIDR that contains it). */
export function addressAllowed(allowed: string[], address: string): boolean {
  const ip = parseIpv4(address);
  for (const a of allowed) {
    if (a === address) return true;
    const [base, bits] = a.split('/');
    if (ip === null || bits === undefined || !isIPv4(base)) {
      if (isIPv6(address) && isIPv6(base) && bits === undefined && base.toLowerCase() === address.toLowerCase()) return true;
      continue;
    }
    const prefix = Number(bits);
    const b = parseIpv4(base);
    if (b === null || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) continue;
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if (((ip & mask) >>> 0) === ((b & mask) >>> 0)) return true;
  }
  return false;
}

/** Whether the guest's NIC on this VIF can obtain a lease and be reached at all: a link, and a
 * switch port that is not disabled (locked still lets DHCP through). */
export function vifCanLease(emu: Emulator, vif: string): boolean {
  const rec = emu.db.get('VIF', vif);
  return !!rec && effectiveLockingMode(emu, rec) !== 'disabled' && vifHasLink(emu, vif);
}

/** Whether traffic from the guest's address `address` on this VIF passes the switch (for the
 * data sources of its NIC). */
export function vifCarriesTraffic(emu: Emulator, vif: string, address: string | undefined): boolean {
  const rec = emu.db.get('VIF', vif);
  if (!rec || !vifCanLease(emu, vif)) return false;
  if (effectiveLockingMode(emu, rec) !== 'locked') return true;
  // a guest that reports nothing still has the address DHCP gave it
  address ??= offerIpv4(emu, vif) ?? undefined;
  if (!address) return false;
  const allowed = [...((rec.ipv4_allowed as string[]) ?? []), ...((rec.ipv6_allowed as string[]) ?? [])];
  return addressAllowed(allowed, address);
}
