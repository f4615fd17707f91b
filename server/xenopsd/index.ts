// The emulated xenopsd, one per host. Its domains live in this process, apart from the API layer:
// like a real host's, they survive a toolstack restart (a new Emulator on the same storage
// directory finds them again and re-binds them) and are gone when the process ends (a host
// reboot), after which the API layer's resync resets the VMs it believed running to Halted.
import { Xenopsd, type HostSpec, type XenopsdEnv } from './xenopsd.js';

export { Xenopsd, DURATIONS, type HostSpec, type XenopsdEnv, type Progress, type XenopsdState } from './xenopsd.js';
export { Tapdisk, Blktap, TD_VBD_PAUSED, type TapdiskInfo } from './tapdisk.js';
export { XenopsError, type VmSpec, type VbdSpec, type VifSpec, type VifLockingMode, type VifIpConfiguration, type VmState, type VbdState, type VifState, type StorageBackend, type DomainType } from './types.js';
export { Updates, type UpdateId } from './updates.js';
export { migrateVm, MigrationError, type MigrateOptions } from './migrate.js';
export { Mirror, MIRROR_CHUNK } from './mirror.js';
export { vbdInsert, vbdEject } from './media.js';

/** xenopsds by the emulator's storage directory (one machine), then by host uuid */
const machines = new Map<string, Map<string, Xenopsd>>();

/** The xenopsd of a host: the running one, re-bound to `env`, or a new one. */
export function xenopsdFor(machine: string, host: HostSpec, env: XenopsdEnv): Xenopsd {
  let m = machines.get(machine);
  if (!m) machines.set(machine, (m = new Map()));
  let x = m.get(host.uuid);
  if (x) x.bind(env);
  else m.set(host.uuid, (x = new Xenopsd(host, env)));
  return x;
}

/** The machine stops: every host's domains are destroyed. */
export async function destroyMachine(machine: string): Promise<void> {
  const m = machines.get(machine);
  machines.delete(machine);
  for (const x of m?.values() ?? []) await x.destroyAll();
}
