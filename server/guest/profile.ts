// The simulated guest OS a VM runs, by profile:
//   agent       PV drivers and the guest agent (an installed Linux or Windows with XCP-ng tools)
//   pv-drivers  PV drivers, no agent: features and PV_drivers_detected, no IP reported
//   no-drivers  emulated devices only (qemu-dm's IDE and NIC); an OS runs but tells xapi nothing
//   no-os       nothing bootable: the domain sits in its firmware
// Chosen by VM.other_config:xapi-emu-guest-profile, else the older xapi-emu-pv-drivers key
// (true: drivers at least, false: none), else pool.other_config:xapi-emu-guest-profile, else the
// emulator's --guest-profile, else agent.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';

export const GUEST_PROFILES = ['agent', 'pv-drivers', 'no-drivers', 'no-os'] as const;
export type GuestProfile = (typeof GUEST_PROFILES)[number];

/** other_config key of a VM's (or the pool's) guest profile */
export const GUEST_PROFILE_KEY = 'xapi-emu-guest-profile';
/** the older other_config key: whether the guest runs PV drivers */
export const PV_DRIVERS_KEY = 'xapi-emu-pv-drivers';

export const isGuestProfile = (v: unknown): v is GuestProfile => (GUEST_PROFILES as readonly unknown[]).includes(v);

const otherConfig = (rec: Rec | undefined): Record<string, string> => (rec?.other_config ?? {}) as Record<string, string>;

/** The pool-wide default profile. */
export function poolProfile(emu: Emulator): GuestProfile {
  const v = otherConfig(emu.db.get('pool', emu.pool))[GUEST_PROFILE_KEY];
  if (isGuestProfile(v)) return v;
  return emu.opts.guestProfile ?? 'agent';
}

/** The profile of a VM's guest. A PV kernel always runs its own drivers, so no-drivers means
 * pv-drivers there. */
export function profileOf(emu: Emulator, rec: Rec): GuestProfile {
  const oc = otherConfig(rec);
  let p: GuestProfile;
  const own = oc[GUEST_PROFILE_KEY];
  if (isGuestProfile(own)) p = own;
  else {
    const legacy = String(oc[PV_DRIVERS_KEY] ?? '').toLowerCase();
    const pool = poolProfile(emu);
    if (legacy === 'true' || legacy === '1') p = pool === 'agent' || pool === 'pv-drivers' ? pool : 'pv-drivers';
    else if (legacy === 'false' || legacy === '0') p = 'no-drivers';
    else p = pool;
  }
  if (p === 'no-drivers' && !isHvm(rec)) return 'pv-drivers';
  return p;
}

function isHvm(rec: Rec): boolean {
  const t = String(rec.domain_type ?? '');
  if (t === 'pv' || t === 'pvh' || t === 'pv_in_pvh') return false;
  if (t === 'hvm') return true;
  return !!rec.HVM_boot_policy;
}

export const hasPvDrivers = (p: GuestProfile): boolean => p === 'agent' || p === 'pv-drivers';
export const hasAgent = (p: GuestProfile): boolean => p === 'agent';
/** whether an OS runs at all (it can shut down, reboot, crash and take a DHCP lease) */
export const hasOs = (p: GuestProfile): boolean => p !== 'no-os';
