// A large pool for the bench: a data directory with `hosts` hosts (the default pool) plus `vms`
// guest VMs, each with its VM_metrics, written through the object database in-process.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Emulator } from '../server/emulator.js';
import { xapiDate } from '../server/clock.js';
import { classes } from '../schema/index.js';
import { NULL_REF, type Rec } from '../storage/database.js';
import { PASSWORD } from './lib.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const OSES = [
  { tpl: 'Debian Bookworm 12', distro: 'debian', pv: false },
  { tpl: 'Ubuntu Jammy Jellyfish 22.04', distro: 'ubuntu', pv: false },
  { tpl: 'Rocky Linux 9', distro: 'rhel', pv: false },
  { tpl: 'Windows Server 2022 (64-bit)', distro: 'windows', pv: false },
  { tpl: 'Windows 10 (64-bit)', distro: 'windows', pv: false },
  { tpl: 'AlmaLinux 8', distro: 'rhel', pv: false },
];

/** Fields of a record that the schema does not know (db.create would drop them silently). */
function unknownFields(cls: string, rec: Rec): string[] {
  const c = classes.get(cls)!;
  return Object.keys(rec).filter((k) => !c.field.has(k));
}

export interface Populated {
  dataDir: string;
  hosts: number;
  vms: number;
  running: number;
  ms: number;
  dbMiB: number;
}

export function populate(dataDir: string, hosts: number, vms: number): Populated {
  const t0 = performance.now();
  const emu = new Emulator({ dataDir, hosts, password: PASSWORD, seed: 'xapi-emu-bench', authFailDelay: 0 });
  const { db, ids } = emu;
  const hostRefs = emu.hosts;
  const now = Date.now();
  let running = 0;
  for (let i = 0; i < vms; i++) {
    const os = OSES[i % OSES.length];
    const isRunning = i % 5 < 3; // 60 % running
    const host = isRunning ? hostRefs[i % hostRefs.length] : NULL_REF;
    const memory = [1, 2, 4, 8, 16][i % 5] * GiB;
    const vcpus = [1, 2, 4, 8][i % 4];
    const installed = now - (i % 1000) * 86_400_000;
    const started = now - (i % 72) * 3_600_000;
    const metrics = ids.ref();
    const mrec: Rec = {
      uuid: ids.uuid(),
      memory_actual: isRunning ? memory : 0,
      VCPUs_number: isRunning ? vcpus : 0,
      VCPUs_utilisation: {},
      VCPUs_CPU: {},
      VCPUs_params: {},
      VCPUs_flags: {},
      state: [],
      start_time: xapiDate(isRunning ? started : 0),
      install_time: xapiDate(installed),
      last_updated: xapiDate(0),
      other_config: {},
      hvm: true,
      nested_virt: false,
      nomigrate: false,
      current_domain_type: isRunning ? 'hvm' : 'unspecified',
    };
    const ref = ids.ref();
    const rec: Rec = {
      uuid: ids.uuid(),
      name_label: `bench-vm-${String(i).padStart(5, '0')}`,
      name_description: `${os.tpl} guest #${i} created by the benchmark`,
      power_state: isRunning ? 'Running' : 'Halted',
      allowed_operations: isRunning
        ? ['changing_dynamic_range', 'suspend', 'hard_reboot', 'pause', 'clean_shutdown', 'clean_reboot', 'hard_shutdown', 'pool_migrate', 'snapshot', 'checkpoint']
        : ['changing_memory_limits', 'changing_VCPUs', 'start', 'start_on', 'export', 'copy', 'clone', 'destroy', 'snapshot'],
      user_version: 1,
      is_a_template: false,
      is_default_template: false,
      is_control_domain: false,
      suspend_VDI: NULL_REF,
      resident_on: host,
      scheduled_to_be_resident_on: NULL_REF,
      affinity: isRunning ? host : NULL_REF,
      memory_overhead: 10 * MiB + vcpus * MiB,
      memory_target: isRunning ? memory : 0,
      memory_static_max: memory,
      memory_dynamic_max: memory,
      memory_dynamic_min: memory,
      memory_static_min: 512 * MiB,
      VCPUs_params: {},
      VCPUs_max: vcpus,
      VCPUs_at_startup: vcpus,
      actions_after_softreboot: 'soft_reboot',
      actions_after_shutdown: 'destroy',
      actions_after_reboot: 'restart',
      actions_after_crash: 'restart',
      PV_bootloader: '', PV_kernel: '', PV_ramdisk: '', PV_args: '', PV_bootloader_args: '', PV_legacy_args: '',
      HVM_boot_policy: 'BIOS order',
      HVM_boot_params: { order: 'cdn', firmware: os.distro === 'windows' ? 'uefi' : 'bios' },
      HVM_shadow_multiplier: 1,
      platform: { timeoffset: '0', 'device-model': 'qemu-upstream-compat', videoram: '8', hpet: 'true', secureboot: 'false', vga: 'std', apic: 'true', pae: 'true', nx: 'true', viridian: os.distro === 'windows' ? 'true' : 'false', acpi: '1', cores_per_socket: String(vcpus) },
      PCI_bus: '',
      other_config: {
        base_template_name: os.tpl,
        'install-methods': 'cdrom,nfs,http,ftp',
        mac_seed: ids.uuid(),
        linux_template: os.distro === 'windows' ? 'false' : 'true',
        import_task: NULL_REF,
        'xo:resource:namespace': 'bench',
        owner: `team-${i % 17}`,
      },
      domid: isRunning ? 100 + i : -1,
      domarch: isRunning ? 'x64' : '',
      last_boot_CPU_flags: isRunning ? { vendor: 'GenuineIntel', features: '1fcbfbff-f7fa3223-2d93fbff-00000523-00000001-029c6fbf-00000000-00000000-00001000-ac000400-00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000' } : {},
      metrics,
      guest_metrics: NULL_REF,
      recommendations: '<restrictions><restriction field="memory-static-max" max="1649267441664"/><restriction field="vcpus-max" max="32"/></restrictions>',
      xenstore_data: { 'vm-data': '', 'vm-data/mmio-hole-size': '268435456' },
      ha_always_run: false,
      ha_restart_priority: '',
      is_a_snapshot: false,
      snapshot_of: NULL_REF,
      snapshot_time: xapiDate(0),
      tags: i % 3 === 0 ? ['prod', `rack-${i % 8}`] : [],
      blocked_operations: {},
      parent: NULL_REF,
      protection_policy: NULL_REF,
      snapshot_schedule: NULL_REF,
      appliance: NULL_REF,
      suspend_SR: NULL_REF,
      start_delay: 0,
      shutdown_delay: 0,
      order: 0,
      generation_id: '',
      hardware_platform_version: 2,
      has_vendor_device: os.distro === 'windows',
      domain_type: 'hvm',
    };
    if (i === 0) {
      const bad = [...unknownFields('VM', rec), ...unknownFields('VM_metrics', mrec)];
      if (bad.length) throw new Error(`populate: fields unknown to the schema: ${bad.join(', ')}`);
    }
    db.create('VM_metrics', metrics, mrec);
    db.create('VM', ref, rec);
    if (isRunning) running++;
  }
  db.flush();
  emu.close();
  return {
    dataDir, hosts, vms, running, ms: performance.now() - t0,
    dbMiB: statSync(join(dataDir, 'xapi.db')).size / MiB,
  };
}
