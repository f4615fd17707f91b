// What xapi tells xenopsd about a VM (xenops_interface's Vm.t / Vbd.t / Vif.t, pushed as metadata
// before a start), what xenopsd reports back (Vm.state / Vbd.state / Vif.state), and its errors.
import type { VdiIo } from '../sm/driver.js';

export type DomainType = 'hvm' | 'pv' | 'pvh' | 'pv_in_pvh';

export interface VbdSpec {
  /** the Linux device name, as xenopsd's Vbd.id (vm, "hda") */
  id: string;
  /** VBD.userdevice */
  position: number;
  mode: 'RO' | 'RW';
  /** VDI "<sr-uuid>/<vdi-uuid>", or none (an empty CD drive) */
  backend: { sr: string; vdi: string } | null;
  ty: 'Disk' | 'CDROM' | 'Floppy';
  unpluggable: boolean;
}

/** Vif.locking_mode: what the switch port lets through */
export type VifLockingMode = { kind: 'unlocked' } | { kind: 'disabled' } | { kind: 'locked'; ipv4: string[]; ipv6: string[] };

/** Vif.ipv4_configuration / ipv6_configuration: what the guest's tools read in xenstore */
export type VifIpConfiguration = { kind: 'unspecified' } | { kind: 'dhcp' } | { kind: 'static'; addresses: string[]; gateway?: string };

export interface VifSpec {
  /** VIF.device ("0", "1" ...) */
  id: string;
  position: number;
  mac: string;
  bridge: string;
  lockingMode?: VifLockingMode;
  ipv4Configuration?: VifIpConfiguration;
  ipv6Configuration?: VifIpConfiguration;
  /** 802.1Q VLANs the port carries */
  trunks?: number[];
}

export interface VmSpec {
  /** the VM's uuid */
  id: string;
  name: string;
  domainType: DomainType;
  vcpus: number;
  /** bytes the domain takes from the host (static max + overhead) */
  memoryRequired: number;
  /** the balloon target reported as memory_actual */
  memoryTarget: number;
  /** the simulated guest: whether it runs PV drivers (its profile, server/guest/profile.ts) */
  pvDrivers: boolean;
  /** HVM_boot_params:order, qemu-dm's -boot order= */
  bootOrder?: string;
  vbds: VbdSpec[];
  vifs: VifSpec[];
}

export type PowerState = 'Running' | 'Paused' | 'Halted' | 'Suspended';

export interface VmState {
  power_state: PowerState;
  domid: number;
  memory_actual: number;
  vcpus: number;
  /** ms since the epoch */
  last_start_time: number;
  hvm: boolean;
  domain_type: DomainType;
  pv_drivers_detected: boolean;
}

export interface VbdState {
  plugged: boolean;
  active: boolean;
  /** the tapdisk serving the disk while attached */
  tapdisk: { pid: number; minor: number } | null;
}

export interface VifState {
  plugged: boolean;
  active: boolean;
}

/** xenops_interface's errors (the subset the emulated xenopsd raises). */
export type XenopsErrorKind =
  | 'Already_exists'
  | 'Does_not_exist'
  | 'Bad_power_state'
  | 'Domain_not_built'
  | 'Not_enough_memory'
  | 'Device_is_connected'
  | 'Device_not_connected'
  | 'Storage_backend_error'
  | 'Internal_error';

export class XenopsError extends Error {
  constructor(readonly kind: XenopsErrorKind, readonly args: string[] = []) {
    super(`${kind}(${args.join(', ')})`);
  }
}

/** The storage side xenopsd uses to attach disks (xapi's SMAPIv2 VDI.attach/activate): provided by
 * the API layer, which knows the SRs. */
export interface StorageBackend {
  /** opens the VDI's disk (attach + activate); I/O must be bracketed with hold(). A disk without
   * a file (udev, dummy SRs) attaches with no I/O: its requests fail. */
  open(sr: string, vdi: string, readOnly: boolean): Promise<{ io: VdiIo | null; path: string | null; type: 'vhd' | 'aio' }>;
  /** registers an I/O in progress: SM's pauses (snapshot, resize, GC) wait for it, and it waits for them */
  hold(vdi: string, write: boolean): Promise<() => void>;
  /** the identity of the VDI's file now; it changes when SM renames or replaces the file */
  fingerprint(sr: string, vdi: string): Promise<string>;
}
