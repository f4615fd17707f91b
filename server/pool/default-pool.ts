// The objects of a freshly installed XCP-ng 8.3 pool of N hosts: what xapi's first start writes
// (dbsync_slave, dbsync_master, create_misc, create_networks, license_init with XCP-ng's v6d), what
// the installer's firstboot scripts add (storage-init, generate-iscsi-iqn) and the default guest
// templates (imported from guest-templates-json). Every host is the same machine: one 4-core/8-thread
// Xeon, 32 GiB, one NIC (eth0) and a disk whose 3rd partition holds an ext "Local storage" SR.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { apiRelease, classes } from '../../schema/index.js';
import { NULL_REF, type Database, type Rec } from '../../storage/database.js';
import type { Ids } from '../../storage/ids.js';
import { xapiDate } from '../clock.js';

export interface DefaultPoolOptions {
  /** pool size, >= 1 */
  hosts: number;
  /** ms since epoch, for datetimes (boot times, created ...) */
  now: number;
  /** address of host i (0 .. hosts-1); host 0 is the pool master */
  hostAddress: (i: number) => string;
  /** where SR contents will live later (null = in memory). No default SR takes a path in its
   * device_config (ext takes a device, udev and the tools SR fixed dom0 paths), so it is unused. */
  dataDir: string | null;
}

// ---- data files (copied from the shared research; see their _about) ----

interface TemplateJson {
  rpm_package: string;
  uuid: string;
  reference_label: string;
  name_label: string;
  name_description: string;
  memory_static_min: number;
  memory_static_max: number;
  memory_dynamic_min: number;
  memory_dynamic_max: number;
  VCPUs_max: number;
  VCPUs_at_startup: number;
  domain_type: string;
  HVM_boot_policy: string;
  HVM_boot_params: Record<string, string>;
  HVM_shadow_multiplier: number;
  PV_bootloader: string;
  PV_args: string;
  actions_after_shutdown: string;
  actions_after_reboot: string;
  actions_after_crash: string;
  has_vendor_device: boolean;
  generation_id: string;
  platform: Record<string, string>;
  other_config: Record<string, string>;
  recommendations: string;
}

interface SmDriverJson {
  sm_type: string;
  installed_as: string;
  capabilities: string[];
  configuration: [string, string][];
  driver_info: {
    name: string; description: string; vendor: string; copyright: string;
    driver_version: string; required_api_version: string;
  };
}

const loadJson = <T>(name: string): T => JSON.parse(readFileSync(new URL(`./data/${name}`, import.meta.url), 'utf8')) as T;
let data: { templates: TemplateJson[]; drivers: SmDriverJson[] } | undefined;
const loadData = () =>
  (data ??= {
    templates: loadJson<{ templates: TemplateJson[] }>('templates.json').templates,
    drivers: loadJson<{ drivers: SmDriverJson[] }>('sm_drivers.json').drivers,
  });

/** XCP-ng 8.3 installs guest-templates-json-data-{linux,windows,other}; the legacy PV templates
 * (-data-pv) are not part of a default install. */
const INSTALLED_TEMPLATE_RPMS = new Set(['linux', 'windows', 'other'].map((s) => `guest-templates-json-data-${s}`));

/** The names of the templates a fresh pool has (what a fixture's VMs may be cloned from). */
export function defaultTemplateNames(): string[] {
  return loadData().templates.filter((t) => INSTALLED_TEMPLATE_RPMS.has(t.rpm_package)).map((t) => t.name_label);
}

/** The name of host i (0 .. hosts-1) in a fresh pool. */
export const defaultHostName = (i: number): string => `xcp-ng-host-${i + 1}`;

// ---- the emulated machine and software ----

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const HOST_MEMORY = 32 * GiB;
/** dom0 memory: squeezed's Fixed_size policy, so static_min = static_max = dynamic = target */
const DOM0_MEMORY = 4 * GiB;
const LOCAL_SR_SIZE = 500 * GiB;

const CPU = {
  count: 8,
  sockets: 1,
  vendor: 'GenuineIntel',
  modelname: 'Intel(R) Xeon(R) E-2134 CPU @ 3.50GHz',
  speed: '3504.000',
  family: 6,
  model: 158,
  stepping: '10',
  flags:
    'fpu de tsc msr pae mce cx8 apic sep mca cmov pat clflush acpi mmx fxsr sse sse2 ss ht syscall nx lm ' +
    'constant_tsc arch_perfmon rep_good nopl nonstop_tsc cpuid pni pclmulqdq monitor est ssse3 fma cx16 ' +
    'sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault ' +
    'ssbd ibrs ibpb stibp fsgsbase bmi1 hle avx2 bmi2 erms rtm rdseed adx clflushopt xsaveopt xsavec ' +
    'xgetbv1 md_clear flush_l1d arch_capabilities',
  // Xen CPU policies, as CPU_policy.to_string prints them (featureset words joined by '-')
  featuresPv: '1fc9cbf5-f6f83203-2991cbf5-00000123-00000007-009c0fa9-00000000-00000000-00001000-9c000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000',
  featuresHvm: '1fcbfbff-f7fa3223-2d93fbff-00000523-0000000f-009c0fab-00000000-00000000-00101000-bc000400-00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000',
};

const XAPI_BUILD = '25.27.0';
/** host.software_version: Xapi_globs.software_version () @ create_misc's keys (no OEM, livepatch or pack keys) */
const SOFTWARE_VERSION: Record<string, string> = {
  product_version: '8.3.0',
  product_version_text: '8.3',
  product_version_text_short: '8.3',
  platform_name: 'XCP',
  platform_version: '3.4.0',
  product_brand: 'XCP-ng',
  xapi: XAPI_BUILD.split('.').slice(0, 2).join('.'),
  build_number: 'cloud',
  hostname: 'localhost',
  date: '2025-07-22',
  xapi_build: XAPI_BUILD,
  xen: '4.17.5-15',
  linux: '4.19.0+1',
  xencenter_min: `${apiRelease.version_major}.${apiRelease.version_minor}`,
  xencenter_max: `${apiRelease.version_major}.${apiRelease.version_minor}`,
  network_backend: 'openvswitch',
  db_schema: '5.789',
};

/** host.license_params and pool.restrictions: XCP-ng's v6d enables every feature but Corosync and
 * adds its extra keys first (xapi stores additional @ Features.to_assoc_list). */
const LICENSE_PARAMS: Record<string, string> = (() => {
  const additional = [
    'vswitch_controller', 'lab', 'stage', 'storagelink', 'storagelink_site_recovery', 'web_selfservice',
    'web_selfservice_manager', 'hotfix_apply', 'export_resource_data', 'read_caching', 'cifs', 'health_check',
    'xcm', 'vm_memory_introspection', 'batch_hotfix_apply', 'management_on_vlan', 'ws_proxy',
    'cloud_management', 'vtpm',
  ].map((k) => `restrict_${k}`);
  const core = [
    'restrict_vlan', 'restrict_qos', 'restrict_pool_attached_storage', 'restrict_netapp', 'restrict_equalogic',
    'restrict_pooling', 'enable_xha', 'restrict_marathon', 'restrict_email_alerting',
    'restrict_historical_performance', 'restrict_wlb', 'restrict_rbac', 'restrict_dmc', 'restrict_checkpoint',
    'restrict_cpu_masking', 'restrict_connection', 'platform_filter', 'regular_nag_dialog', 'restrict_vmpr',
    'restrict_vmss', 'restrict_intellicache', 'restrict_gpu', 'restrict_dr', 'restrict_vif_locking',
    'restrict_storage_xen_motion', 'restrict_vgpu', 'restrict_integrated_gpu_passthrough', 'restrict_vss',
    'restrict_guest_agent_auto_update', 'restrict_pci_device_for_auto_update', 'restrict_xen_motion',
    'restrict_guest_ip_setting', 'restrict_ad', 'restrict_nested_virt', 'restrict_live_patching',
    'restrict_set_vcpus_number_live', 'restrict_pvs_proxy', 'restrict_igmp_snooping', 'restrict_rpu',
    'restrict_pool_size', 'restrict_cbt', 'restrict_usb_passthrough', 'restrict_network_sriov',
    'restrict_corosync', 'restrict_cluster_address', 'restrict_zstd_export', 'restrict_pool_secret_rotation',
    'restrict_certificate_verification', 'restrict_updates', 'restrict_internal_repo_access', 'restrict_vtpm',
    'restrict_vm_groups', 'restrict_vm_start', 'restrict_vm_appliance_start',
  ];
  // enable_xha is the one positive key; Corosync is the one feature XCP-ng leaves restricted
  const value = (k: string) => String(k === 'enable_xha' || k === 'restrict_corosync');
  return Object.fromEntries([...additional, ...core].map((k) => [k, value(k)]));
})();

/** SM capabilities xapi knows (Smint.Feature); others (ATOMIC_PAUSE) are dropped when it registers a driver. */
const KNOWN_SM_FEATURES = new Set([
  'SR_CREATE', 'SR_DELETE', 'SR_ATTACH', 'SR_DETACH', 'SR_SCAN', 'SR_PROBE', 'SR_UPDATE',
  'SR_SUPPORTS_LOCAL_CACHING', 'SR_METADATA', 'SR_TRIM', 'SR_MULTIPATH', 'SR_CACHING', 'SR_STATS',
  'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_MIRROR', 'VDI_MIRROR_IN', 'VDI_RESIZE',
  'VDI_RESIZE_ONLINE', 'VDI_CLONE', 'VDI_SNAPSHOT', 'VDI_ACTIVATE', 'VDI_ACTIVATE_READONLY', 'VDI_DEACTIVATE',
  'VDI_UPDATE', 'VDI_INTRODUCE', 'VDI_GENERATE_CONFIG', 'VDI_ATTACH_OFFLINE', 'VDI_RESET_ON_BOOT',
  'VDI_CONFIG_CBT', 'VDI_COMPOSE', 'LARGE_VDI', 'THIN_PROVISIONING', 'VDI_READ_CACHING', 'VDI_REVERT',
]);

/** "X" -> [X, 1], "X/2" -> [X, 2]; unknown ones dropped, one per name, sorted (Smint.Feature.parse_string_int64). */
function smFeatures(caps: string[]): [string, number][] {
  const out = new Map<string, number>();
  for (const c of caps) {
    const [name, v] = c.split('/');
    if (KNOWN_SM_FEATURES.has(name) && !out.has(name)) out.set(name, Math.max(1, Number.parseInt(v ?? '1', 10) || 1));
  }
  return [...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Short descriptions of the RBAC roles (our wording). */
const ROLE_DESCRIPTIONS: Record<string, string> = {
  'pool-admin': 'Full access, including dom0, subjects, roles and external authentication',
  'pool-operator': 'Manages host- and pool-wide resources: storage, pooling, patches, HA and WLB',
  'vm-power-admin': 'Full VM and template management, including placement, memory control and snapshots',
  'vm-admin': 'Manages VMs and templates',
  'vm-operator': 'Uses VMs and their consoles',
  'read-only': 'Read-only access',
};

/** Memory overhead of a PV domain (Memory.Linux in xapi-idl): 1 MiB extra, the shadow/p2m pages and
 * 38 pages per vCPU, rounded up to MiB. */
function pvMemoryOverhead(staticMax: number, vcpus: number): number {
  const mibOfPages = (pages: number) => Math.ceil(pages / 256);
  const staticMaxMib = Math.ceil(staticMax / MiB);
  const shadow = Math.max(1, mibOfPages(256 * vcpus + 2 * staticMaxMib));
  return (1 + shadow + mibOfPages(38 * vcpus)) * MiB;
}

/** Ref fields whose datamodel default is "" (VM.snapshot_of, PIF.bond_slave_of ...): we store NULL. */
const emptyRefFields = new Map<string, string[]>();
function nullRefs(cls: string): string[] {
  let names = emptyRefFields.get(cls);
  if (!names) {
    names = classes.get(cls)!.fields.filter((f) => f.ty.k === 'ref' && f.default !== undefined && f.default !== NULL_REF).map((f) => f.name);
    emptyRefFields.set(cls, names);
  }
  return names;
}

const colonHex = (buf: Buffer) => [...buf].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':');
/** OCaml's string_of_float of a whole number of seconds, as xapi writes boot_time/agent_start_time. */
const ocamlSeconds = (ms: number) => `${Math.floor(ms / 1000)}.`;

export function createDefaultPool(db: Database, ids: Ids, opts: DefaultPoolOptions): { pool: string; master: string; hosts: string[] } {
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1) throw new Error(`a pool needs at least one host (got ${opts.hosts})`);
  const { now } = opts;
  const { templates, drivers } = loadData();
  const make = (cls: string, rec: Rec, ref = ids.ref()): string => {
    for (const f of nullRefs(cls)) if (!(f in rec)) rec[f] = NULL_REF;
    db.create(cls, ref, { uuid: ids.uuid(), ...rec });
    return ref;
  };
  // The machine booted a few minutes before xapi started, which was just before `now`.
  const bootTime = now - 180_000;
  const agentStart = now - 60_000;

  // ---- pool-wide networks (the management network's record comes with the first PIF on xenbr0) ----
  const mgmtNet = make('network', {
    name_label: 'Pool-wide network associated with eth0', name_description: '', MTU: 1500,
    bridge: 'xenbr0', managed: true, other_config: {},
  });
  make('network', {
    name_label: 'Host internal management network',
    name_description: 'Network on which guests get a private link-local address to reach the XenAPI of their host',
    MTU: 1500, bridge: 'xenapi', managed: true,
    other_config: {
      is_guest_installer_network: 'true', is_host_internal_management_network: 'true',
      ip_begin: '169.254.0.1', ip_end: '169.254.255.254', netmask: '255.255.0.0',
    },
  });

  // ---- hosts ----
  const hosts: string[] = [];
  const localSRs: string[] = [];
  for (let i = 0; i < opts.hosts; i++) {
    const hostname = defaultHostName(i);
    const address = opts.hostAddress(i);
    const hostRef = ids.ref();
    const hostUuid = ids.uuid();
    const dom0 = ids.ref();
    const localSR = ids.ref();
    hosts.push(hostRef);
    localSRs.push(localSR);

    const metrics = make('host_metrics', {
      memory_total: HOST_MEMORY, memory_free: HOST_MEMORY - DOM0_MEMORY, live: true, last_updated: xapiDate(agentStart),
    });
    const iqn = `iqn.${xapiDate(now).slice(0, 4)}-${xapiDate(now).slice(4, 6)}.com.example:${hostUuid.slice(0, 8)}`;
    const cpuInfo = {
      cpu_count: String(CPU.count), socket_count: String(CPU.sockets), threads_per_core: '2', nr_nodes: '1',
      vendor: CPU.vendor, speed: CPU.speed, modelname: CPU.modelname, family: String(CPU.family),
      model: String(CPU.model), stepping: CPU.stepping, flags: CPU.flags,
      features_pv: CPU.featuresPv, features_hvm: CPU.featuresHvm,
      features_hvm_host: CPU.featuresHvm, features_pv_host: CPU.featuresPv,
    };
    const serial = hostUuid.replace(/-/g, '').slice(0, 10).toUpperCase();
    db.create('host', hostRef, {
      uuid: hostUuid,
      name_label: hostname,
      name_description: 'Default install',
      hostname,
      address,
      enabled: true,
      API_version_major: apiRelease.version_major,
      API_version_minor: apiRelease.version_minor,
      API_version_vendor: 'XenSource',
      API_version_vendor_implementation: {},
      software_version: { ...SOFTWARE_VERSION },
      other_config: { agent_start_time: ocamlSeconds(agentStart), boot_time: ocamlSeconds(bootTime), iscsi_iqn: iqn, multipathing: 'false' },
      capabilities: ['xen-3.0-x86_64', 'hvm-3.0-x86_32', 'hvm-3.0-x86_32p', 'hvm-3.0-x86_64'],
      cpu_configuration: {},
      sched_policy: 'credit',
      supported_bootloaders: ['pygrub', 'eliloader'],
      logging: {},
      // storage-init points them at the local SR; ext SRs also get local caching enabled
      suspend_image_sr: localSR,
      crash_dump_sr: localSR,
      local_cache_sr: localSR,
      cpu_info: cpuInfo,
      metrics,
      license_params: { ...LICENSE_PARAMS },
      edition: 'xcp-ng',
      editions: ['xcp-ng'],
      license_server: { address: 'localhost', port: '27000' },
      bios_strings: {
        'bios-vendor': 'American Megatrends Inc.', 'bios-version': '3.4', 'system-manufacturer': 'Supermicro',
        'system-product-name': 'SYS-5019C-M', 'system-version': '0123456789', 'system-serial-number': `S${serial}`,
        'baseboard-manufacturer': 'Supermicro', 'baseboard-product-name': 'X11SCM-F', 'baseboard-version': '1.01',
        'baseboard-serial-number': `WM${serial}`, 'baseboard-asset-tag': 'To be filled by O.E.M.',
        'baseboard-location-in-chassis': 'To be filled by O.E.M.', 'enclosure-asset-tag': 'To be filled by O.E.M.',
        'oem-1': 'Supermicro motherboard-X11 Series', 'hp-rombios': '',
      },
      chipset_info: { iommu: 'true' },
      // xapi: total minus the host's free memory at boot, i.e. what dom0 took
      memory_overhead: DOM0_MEMORY,
      virtual_hardware_platform_versions: [0, 1, 2],
      control_domain: dom0,
      iscsi_iqn: iqn,
      multipathing: false,
      ssl_legacy: false,
    });

    // one host_cpu per logical CPU (create_misc.create_host_cpu: features is left empty)
    for (let n = 0; n < CPU.count; n++) {
      make('host_cpu', {
        host: hostRef, number: n, vendor: CPU.vendor, speed: Math.trunc(Number(CPU.speed)), modelname: CPU.modelname,
        family: CPU.family, model: CPU.model, stepping: CPU.stepping, flags: CPU.flags, features: '', utilisation: 0,
      });
    }

    // ---- control domain (create_misc.create_domain_zero_record) ----
    const dom0Metrics = make('VM_metrics', {
      memory_actual: DOM0_MEMORY, VCPUs_number: CPU.count, VCPUs_CPU: {}, VCPUs_params: {}, VCPUs_flags: {},
      state: [], start_time: xapiDate(bootTime), install_time: xapiDate(now), last_updated: xapiDate(agentStart),
      hvm: false, current_domain_type: 'pv',
    });
    db.create('VM', dom0, {
      uuid: ids.uuid(),
      name_label: `Control domain on host: ${hostname}`,
      name_description: 'The domain that drives the physical devices and manages the other domains',
      power_state: 'Running',
      user_version: 1,
      is_a_template: false,
      is_default_template: false,
      is_control_domain: true,
      resident_on: hostRef,
      affinity: hostRef,
      memory_overhead: pvMemoryOverhead(DOM0_MEMORY, CPU.count),
      memory_target: DOM0_MEMORY,
      memory_static_max: DOM0_MEMORY,
      memory_dynamic_max: DOM0_MEMORY,
      memory_dynamic_min: DOM0_MEMORY,
      memory_static_min: DOM0_MEMORY,
      VCPUs_params: {},
      VCPUs_max: CPU.count,
      VCPUs_at_startup: CPU.count,
      actions_after_shutdown: 'destroy',
      actions_after_reboot: 'destroy',
      actions_after_crash: 'destroy',
      PV_bootloader: '', PV_kernel: '', PV_ramdisk: '', PV_args: '', PV_bootloader_args: '', PV_legacy_args: '',
      HVM_boot_policy: '', HVM_boot_params: {}, HVM_shadow_multiplier: 1, platform: {}, PCI_bus: '',
      other_config: {},
      domid: 0,
      domarch: 'x64',
      metrics: dom0Metrics,
      guest_metrics: NULL_REF,
      recommendations: '',
      snapshot_of: NULL_REF,
      parent: NULL_REF,
      generation_id: '',
      has_vendor_device: false,
      domain_type: 'pv',
    });
    // an RFB and a VT100 console, each located by its own ref
    for (const protocol of ['rfb', 'vt100']) {
      const ref = ids.ref();
      make('console', { protocol, location: `https://${address}/console?ref=${ref}`, VM: dom0, other_config: {} }, ref);
    }

    // ---- eth0, the management interface ----
    const pifMetrics = make('PIF_metrics', {
      carrier: true, vendor_id: '8086', vendor_name: 'Intel Corporation', device_id: '1521',
      device_name: 'I350 Gigabit Network Connection', speed: 1000, duplex: true, pci_bus_path: '0000:01:00.0',
      last_updated: xapiDate(agentStart),
    });
    make('PIF', {
      device: 'eth0', network: mgmtNet, host: hostRef, MAC: ids.mac(), MTU: 1500, VLAN: -1, metrics: pifMetrics,
      physical: true, currently_attached: true, management: true, managed: true, disallow_unplug: false,
      properties: { gro: 'on' }, capabilities: [], other_config: {}, ...ipConfig(address),
    });

    // ---- local SRs (storage-init) and their PBDs ----
    const sr = (ref: string, rec: Rec, device_config: Record<string, string>) => {
      make('SR', { virtual_allocation: 0, physical_utilisation: 0, physical_size: 0, shared: false, sm_config: {}, ...rec }, ref);
      make('PBD', { host: hostRef, SR: ref, device_config, currently_attached: true, other_config: {} });
    };
    sr(localSR, {
      name_label: 'Local storage', name_description: '', type: 'ext', content_type: 'user',
      physical_size: LOCAL_SR_SIZE, physical_utilisation: 100 * MiB,
      other_config: { 'i18n-key': 'local-storage', 'i18n-original-value-name_label': 'Local storage' },
      // the SM's attach records the serial of the disk under the SR
      sm_config: { devserial: `scsi-SATA_Samsung_SSD_870_S${serial}` },
      local_cache_enabled: true,
    }, { device: '/dev/sda3' });
    sr(ids.ref(), {
      name_label: 'Removable storage', name_description: '', type: 'udev', content_type: 'disk',
      other_config: { 'i18n-key': 'local-hotplug-disk', 'i18n-original-value-name_label': 'Removable storage' },
      sm_config: { type: 'block' },
    }, { location: '/dev/xapi/block' });
    sr(ids.ref(), {
      name_label: 'DVD drives', name_description: 'Physical DVD drives', type: 'udev', content_type: 'iso',
      other_config: {
        'i18n-key': 'local-hotplug-cd', 'i18n-original-value-name_label': 'DVD drives',
        'i18n-original-value-name_description': 'Physical DVD drives',
      },
      sm_config: { type: 'cd' },
    }, { location: '/dev/xapi/cd' });

    // ---- the host's TLS certificates: the API one and the pool-internal one (10 years) ----
    for (const type of ['host', 'host_internal']) {
      const der = createHash('sha256').update(`${hostUuid}/${type}`).digest();
      make('Certificate', {
        name: '', type, host: hostRef, not_before: xapiDate(now), not_after: xapiDate(now + 3650 * 86_400_000),
        fingerprint: colonHex(der), fingerprint_sha256: colonHex(der),
        fingerprint_sha1: colonHex(createHash('sha1').update(der).digest()), purpose: [],
      });
    }
  }

  // ---- the tools SR: shared, one PBD per host (dbsync_master.create_tools_sr) ----
  const brand = SOFTWARE_VERSION.product_brand;
  const toolsSR = make('SR', {
    name_label: `${brand} Tools`, name_description: `${brand} Tools ISOs`, type: 'iso', content_type: 'iso',
    shared: true, is_tools_sr: true, sm_config: {}, virtual_allocation: 0,
    // an ISO SR on a dom0 directory reports the root filesystem
    physical_size: 18 * GiB, physical_utilisation: 3 * GiB,
    other_config: {
      xensource_internal: 'true', xenserver_tools_sr: 'true', 'i18n-key': 'xenserver-tools',
      'i18n-original-value-name_label': `${brand} Tools`, 'i18n-original-value-name_description': `${brand} Tools ISOs`,
    },
  });
  for (const host of hosts) {
    make('PBD', {
      host, SR: toolsSR, currently_attached: true, other_config: {},
      device_config: { path: '/opt/xensource/packages/iso', location: '/opt/xensource/packages/iso', legacy_mode: 'true' },
    });
  }

  // ---- the pool (dbsync_master.create_pool_record, then firstboot sets the SRs) ----
  const master = hosts[0];
  const telemetry = make('secret', { value: ids.uuid(), other_config: {} });
  const pool = make('pool', {
    name_label: '', name_description: '', master,
    default_SR: localSRs[0], suspend_image_SR: localSRs[0], crash_dump_SR: localSRs[0],
    other_config: { 'memory-ratio-hvm': '0.25', 'memory-ratio-pv': '0.25' },
    ha_enabled: false, ha_cluster_stack: 'xhad', ha_reboot_vm_on_internal_shutdown: true,
    restrictions: { ...LICENSE_PARAMS },
    cpu_info: {
      vendor: CPU.vendor, socket_count: String(CPU.sockets * opts.hosts), cpu_count: String(CPU.count * opts.hosts),
      features_pv_host: CPU.featuresPv, features_hvm_host: CPU.featuresHvm,
    },
    // dbsync_master.setup_telemetry: a secret uuid, first collection a day (and some hours) later
    telemetry_uuid: telemetry,
    telemetry_next_collection: xapiDate(now + 86_400_000 + 7 * 3_600_000),
    // create_pool_record's value (the schema default is true)
    ext_auth_cache_enabled: false,
  });

  // ---- SM plugins: one record per SMAPIv1 driver (Xapi_sm.create_from_query_result) ----
  for (const d of drivers) {
    const features = smFeatures(d.capabilities);
    const info = d.driver_info;
    make('SM', {
      name_label: info.name, name_description: info.description, type: d.sm_type, vendor: info.vendor,
      copyright: info.copyright, version: info.driver_version, required_api_version: info.required_api_version,
      configuration: Object.fromEntries(d.configuration), capabilities: features.map(([f]) => f),
      features: Object.fromEntries(features), other_config: {}, driver_filename: d.installed_as,
      required_cluster_stack: [], supported_image_formats: [],
    });
  }

  // ---- default templates, as create-guest-templates imports them ----
  for (const t of templates) {
    if (!INSTALLED_TEMPLATE_RPMS.has(t.rpm_package)) continue;
    // every VM has a VM_metrics (dbsync_master.ensure_vm_metrics_records_exist)
    const metrics = make('VM_metrics', {
      memory_actual: 0, VCPUs_number: 0, VCPUs_CPU: {}, VCPUs_params: {}, VCPUs_flags: {}, state: [],
      start_time: xapiDate(0), install_time: xapiDate(0), last_updated: xapiDate(0), current_domain_type: 'unspecified',
    });
    const ref = ids.ref();
    db.create('VM', ref, {
      uuid: t.uuid, // the uuids are fixed by guest-templates-json
      name_label: t.name_label, name_description: t.name_description, reference_label: t.reference_label,
      power_state: 'Halted', user_version: 1, is_a_template: true, is_default_template: true,
      resident_on: NULL_REF, affinity: NULL_REF, snapshot_of: NULL_REF, parent: NULL_REF,
      memory_static_max: t.memory_static_max, memory_dynamic_max: t.memory_dynamic_max,
      memory_dynamic_min: t.memory_dynamic_min, memory_static_min: t.memory_static_min,
      VCPUs_params: {}, VCPUs_max: t.VCPUs_max, VCPUs_at_startup: t.VCPUs_at_startup,
      actions_after_shutdown: t.actions_after_shutdown, actions_after_reboot: t.actions_after_reboot,
      actions_after_crash: t.actions_after_crash,
      PV_bootloader: t.PV_bootloader, PV_kernel: '', PV_ramdisk: '', PV_args: t.PV_args,
      PV_bootloader_args: '', PV_legacy_args: '',
      HVM_boot_policy: t.HVM_boot_policy, HVM_boot_params: { ...t.HVM_boot_params },
      HVM_shadow_multiplier: t.HVM_shadow_multiplier, platform: { ...t.platform }, PCI_bus: '',
      // the file keeps default_template "false": create-guest-templates flips it after the import;
      // mac_seed is random per install
      other_config: { ...t.other_config, default_template: 'true', mac_seed: ids.uuid() },
      domid: -1, domarch: '', is_control_domain: false,
      metrics, guest_metrics: NULL_REF, recommendations: t.recommendations,
      has_vendor_device: t.has_vendor_device, generation_id: t.generation_id, domain_type: t.domain_type,
    });
  }

  // ---- RBAC roles (static in xapi, records here) and the local superuser ----
  for (const name of Object.keys(ROLE_DESCRIPTIONS)) {
    make('role', { name_label: name, name_description: ROLE_DESCRIPTIONS[name], subroles: [], is_internal: false });
  }
  make('user', { short_name: 'root', fullname: 'superuser', other_config: {} });

  return { pool, master, hosts };
}

/** eth0's IP configuration: a static IPv4 /24 (gateway and DNS on .1, or .254 when the host is .1),
 * a static IPv6 /64, or DHCP when the address is a name. */
function ipConfig(address: string): Rec {
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  if (v4) {
    const net = `${v4[1]}.${v4[2]}.${v4[3]}`;
    const gateway = `${net}.${v4[4] === '1' ? 254 : 1}`;
    return { ip_configuration_mode: 'Static', IP: address, netmask: '255.255.255.0', gateway, DNS: gateway, primary_address_type: 'IPv4' };
  }
  if (address.includes(':')) {
    return { ip_configuration_mode: 'None', ipv6_configuration_mode: 'Static', IPv6: [`${address}/64`], primary_address_type: 'IPv6' };
  }
  return { ip_configuration_mode: 'DHCP', primary_address_type: 'IPv4' };
}
