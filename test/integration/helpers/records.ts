// The records VM.create, VDI.create, VBD.create and VIF.create take, with every field XAPI requires
// filled in; what a caller cares about is passed as overrides.
export const NULL = 'OpaqueRef:NULL';
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

type Fields = Record<string, unknown>;

/** The four memory_* fields: static and dynamic maximum `max`, static and dynamic minimum `min`. */
export const memory = (max: number, min = max) => ({
  memory_static_max: max, memory_dynamic_max: max, memory_dynamic_min: min, memory_static_min: min,
});

/** other_config of a guest with PV drivers (the older key: with the pool's default profile, agent, the guest agent runs too). */
export const PV_DRIVERS = { 'xapi-emu-pv-drivers': 'true' };

/** other_config of a guest whose OS has emulated devices only. */
export const NO_DRIVERS = { 'xapi-emu-guest-profile': 'no-drivers' };

/** A halted HVM guest of 256 MiB and one VCPU, booting from disk then CD, whose OS has emulated
 * devices only (guest profile no-drivers) unless other_config says otherwise. */
export const vmArgs = (name: string, extra: Fields = {}) => ({
  name_label: name, name_description: '', user_version: 1, is_a_template: false, affinity: NULL,
  ...memory(256 * MiB),
  VCPUs_params: {}, VCPUs_max: 1, VCPUs_at_startup: 1,
  actions_after_shutdown: 'destroy', actions_after_reboot: 'restart', actions_after_crash: 'restart',
  PV_bootloader: '', PV_kernel: '', PV_ramdisk: '', PV_args: '', PV_bootloader_args: '', PV_legacy_args: '',
  HVM_boot_policy: 'BIOS order', HVM_boot_params: { order: 'cd' }, platform: {}, PCI_bus: '',
  other_config: NO_DRIVERS, recommendations: '', domain_type: 'hvm', ...extra,
});

/** A user disk of `size` bytes on `sr`. */
export const vdiArgs = (sr: string, size: number, name = 'disk', extra: Fields = {}) => ({
  SR: sr, name_label: name, name_description: '', virtual_size: size, type: 'user', sharable: false, read_only: false,
  other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
  ...extra,
});

/** A read-write disk drive; the one at device 0 is the bootable one. */
export const vbdArgs = (vm: string, vdi: string, userdevice: string, extra: Fields = {}) => ({
  VM: vm, VDI: vdi, userdevice, bootable: userdevice === '0', mode: 'RW', type: 'Disk', unpluggable: true, empty: false,
  other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, ...extra,
});

/** A NIC on `network` with a generated MAC address. */
export const vifArgs = (vm: string, network: string, device = '0', extra: Fields = {}) => ({
  device, network, VM: vm, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, ...extra,
});
