// PIF: a host's network interfaces (xapi_pif.ml, with message_forwarding.ml's checks): plug and
// unplug, IP configuration, properties, and the records of the host's NICs (scan, introduce,
// forget). The NICs themselves are networkd's (server/networkd/nics.ts); a call for a member that
// is down fails with HOST_OFFLINE, as xapi's forwarding does.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { recordOf } from './generic.js';
import {
  assertHostReachable, assertNetworkHasNoVifsInUseOn, assertNoClusteringEnabledOn, assertNoProtection, assertNoSriov,
  assertNoTunnels, assertNotInBond, assertNotManagement, assertNotSlaveManagement, assertNoVlans, assertPifManaged,
  assertValidCidr6, assertValidIp, bringPifDown, bringPifUp, isIpv4, isIpv6, isRef, makePifMetrics, managementBridge,
  pifTopo, pifType, setManagementBridge, updatePifAddress,
} from './pif-helpers.js';
import { isValidMac, nicsOf, pinNics, syncHostMetrics } from '../networkd/nics.js';
import { createVlanOnHost, destroyVlan } from './VLAN.js';

const pifRec = (call: Call, pif: string): Rec => recordOf(call.emu, 'PIF', pif);

/** The PIF's host, which must be reachable (the call is forwarded there). */
function onHostOf(call: Call, rec: Rec): string {
  const host = String(rec.host);
  assertHostReachable(call.emu, host);
  return host;
}

// ---- plug / unplug (Xapi_pif.plug, Xapi_pif.unplug) ----

export function plugPif(emu: Emulator, pif: string): void {
  const rec = recordOf(emu, 'PIF', pif);
  assertPifManaged(rec, pif);
  const type = pifType(rec);
  if (type.kind === 'tunnel_access') {
    const transport = String(emu.db.get('tunnel', type.ref)?.transport_PIF);
    if (emu.db.get('PIF', transport)?.ip_configuration_mode === 'None') throw new XapiError('TRANSPORT_PIF_NOT_CONFIGURED', [transport]);
    plugPif(emu, transport);
  } else if (type.kind === 'vlan_untagged') {
    const tagged = String(emu.db.get('VLAN', type.ref)?.tagged_PIF);
    if (((emu.db.get('PIF', tagged)?.sriov_logical_PIF_of as string[]) ?? []).length > 0) plugPif(emu, tagged);
  } else if (type.kind === 'sriov_logical') {
    plugPif(emu, String(emu.db.get('network_sriov', type.ref)?.physical_PIF));
  } else if (type.kind === 'physical' && isRef(rec.bond_slave_of)) {
    if ((rec.sriov_physical_PIF_of as string[]).length === 0) throw new XapiError('CANNOT_PLUG_BOND_SLAVE', [pif]);
    plugPif(emu, String(emu.db.get('Bond', rec.bond_slave_of)?.master));
  }
  // a bond member comes up with its bond
  if (!isRef(rec.bond_slave_of)) bringPifUp(emu, pif);
}

export function unplugPif(emu: Emulator, pif: string): void {
  const rec = recordOf(emu, 'PIF', pif);
  assertPifManaged(rec, pif);
  assertNoProtection(emu, rec);
  assertNotManagement(rec, pif);
  assertNetworkHasNoVifsInUseOn(emu, String(rec.host), String(rec.network));
  if (rec.disallow_unplug === true) throw new XapiError('PIF_DOES_NOT_ALLOW_UNPLUG', [pif]);
  for (const t of rec.tunnel_transport_PIF_of as string[]) {
    const access = emu.db.get('tunnel', t)?.access_PIF;
    if (isRef(access) && emu.db.has('PIF', access)) unplugPif(emu, access);
  }
  const [top] = pifTopo(emu, pif);
  if (top.type.kind === 'bond_master') {
    for (const s of (emu.db.get('Bond', top.type.ref)?.slaves as string[]) ?? []) {
      if (((emu.db.get('PIF', s)?.sriov_physical_PIF_of as string[]) ?? []).length > 0) unplugPif(emu, s);
    }
  } else if (top.type.kind === 'sriov_logical') {
    for (const v of rec.VLAN_slave_of as string[]) {
      const untagged = emu.db.get('VLAN', v)?.untagged_PIF;
      if (isRef(untagged) && emu.db.has('PIF', untagged)) unplugPif(emu, untagged);
    }
  } else if (top.type.kind === 'physical') {
    for (const s of rec.sriov_physical_PIF_of as string[]) {
      const logical = emu.db.get('network_sriov', s)?.logical_PIF;
      if (isRef(logical) && emu.db.has('PIF', logical)) unplugPif(emu, logical);
    }
  }
  if (!isRef(rec.bond_slave_of)) bringPifDown(emu, pif);
}

// ---- IP configuration ----

/** restrict_to: the addresses of one family in a comma-separated DNS list */
const dnsOf = (dns: string, family: 'ipv4' | 'ipv6'): string[] =>
  dns.split(',').filter((a) => a !== '' && (family === 'ipv4' ? isIpv4(a) : isIpv6(a)));

/** After a change of configuration an attached interface is brought up again with it. */
function reapply(emu: Emulator, pif: string): void {
  const rec = emu.db.get('PIF', pif)!;
  if (rec.currently_attached !== true) return;
  emu.db.update('PIF', pif, { currently_attached: false });
  bringPifUp(emu, pif);
  updatePifAddress(emu, pif);
}

function reconfigureIp(call: Call, self: string, mode: string, IP: string, netmask: string, gateway: string, DNS: string): void {
  const { emu } = call;
  const rec = pifRec(call, self);
  onHostOf(call, rec);
  assertPifManaged(rec, self);
  // only a change of DNS servers in static mode keeps HA and clustering safe from fencing
  const onlyDns = mode === 'Static' && rec.ip_configuration_mode === mode && rec.IP === IP && rec.netmask === netmask && rec.gateway === gateway;
  if (!onlyDns) {
    assertNoProtection(emu, rec);
    assertNoClusteringEnabledOn(emu, self);
  }
  if (mode === 'Static') {
    assertValidIp('ipv4', 'IP', IP);
    assertValidIp('ipv4', 'netmask', netmask);
  }
  for (const [param, value] of [['IP', IP], ['netmask', netmask], ['gateway', gateway]] as const) {
    if (value !== '') assertValidIp('ipv4', param, value);
  }
  if (rec.management === true && mode === 'None' && rec.primary_address_type === 'IPv4') throw new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [self]);
  const dns = [...dnsOf(DNS, 'ipv4'), ...dnsOf(String(rec.DNS), 'ipv6')].join(',');
  emu.db.update('PIF', self, { ip_configuration_mode: mode, IP, netmask, gateway, DNS: dns });
  reapply(emu, self);
}

function reconfigureIpv6(call: Call, self: string, mode: string, IPv6: string, gateway: string, DNS: string): void {
  const { emu } = call;
  const rec = pifRec(call, self);
  onHostOf(call, rec);
  assertPifManaged(rec, self);
  const same = mode === 'Static' && rec.ipv6_configuration_mode === mode && (rec.IPv6 as string[]).length === 1 && (rec.IPv6 as string[])[0] === IPv6 && rec.ipv6_gateway === gateway;
  if (!same) {
    assertNoProtection(emu, rec);
    assertNoClusteringEnabledOn(emu, self);
  }
  if (gateway !== '') assertValidIp('ipv6', 'gateway', gateway);
  if (IPv6 !== '') assertValidCidr6('IPv6', IPv6);
  if (rec.management === true && mode === 'None' && rec.primary_address_type === 'IPv6') throw new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [self]);
  const dns = [...dnsOf(DNS, 'ipv6'), ...dnsOf(String(rec.DNS), 'ipv4')].join(',');
  emu.db.update('PIF', self, { ipv6_configuration_mode: mode, ipv6_gateway: gateway, IPv6: [IPv6], DNS: dns });
  reapply(emu, self);
}

// ---- the host's NICs as PIF records (introduce_internal, scan, forget) ----

/** bridge_naming_convention: xenbr<position>, or br<device> for a device with no position. */
function positionOf(emu: Emulator, host: string, device: string): number | undefined {
  const i = nicsOf(emu, host).findIndex((n) => n.device === device);
  return i < 0 ? undefined : i;
}

function findOrCreateNetwork(emu: Emulator, bridge: string, device: string, position: number | undefined, managed: boolean): string {
  const found: string[] = [];
  for (const [ref, row] of emu.db.table('network')) if (row.rec.bridge === bridge) found.push(ref);
  if (found.length === 1) return found[0];
  const ref = emu.ids.ref();
  emu.db.create('network', ref, {
    uuid: emu.ids.uuid(), name_label: position !== undefined ? `Pool-wide network ${position}` : `Pool-wide network associated with ${device}`,
    name_description: '', MTU: 1500, purpose: [], bridge, managed, other_config: {}, blobs: {}, tags: [], default_locking_mode: 'unlocked', assigned_ips: {},
  });
  return ref;
}

function introduceInternal(emu: Emulator, host: string, device: string, MAC: string, MTU: number, managed: boolean, disallowUnplug = false): string {
  const position = positionOf(emu, host, device);
  const bridge = managed ? (position !== undefined ? `xenbr${position}` : `br${device}`) : '';
  const network = findOrCreateNetwork(emu, bridge, device, position, managed);
  const nic = nicsOf(emu, host).find((n) => n.device === device);
  const mgmt = managementBridge(emu, host);
  let primary = 'IPv4';
  for (const p of (emu.db.get('host', host)?.PIFs as string[]) ?? []) {
    const r = emu.db.get('PIF', p);
    if (r?.management === true) primary = String(r.primary_address_type);
  }
  const ref = emu.ids.ref();
  emu.db.create('PIF', ref, {
    uuid: emu.ids.uuid(), device, network, host, MAC, MTU, VLAN: -1, metrics: makePifMetrics(emu), physical: true, currently_attached: false,
    igmp_snooping_status: 'unknown', ip_configuration_mode: 'None', IP: '', netmask: '', gateway: '', DNS: '', bond_slave_of: NULL_REF,
    VLAN_master_of: NULL_REF, management: false, other_config: {}, disallow_unplug: disallowUnplug, ipv6_configuration_mode: 'None',
    IPv6: [], ipv6_gateway: '', primary_address_type: primary, managed, properties: { gro: 'on' },
    capabilities: nic && nic.sriov_vfs > 0 ? ['sriov'] : [], PCI: NULL_REF,
  });
  // is_my_management_pif: the NIC under the management bridge is the management interface
  if (mgmt !== '' && bridge === mgmt) emu.db.update('PIF', ref, { management: true, currently_attached: true });
  syncHostMetrics(emu, host);
  return ref;
}

/** the devices of the host's physical PIFs (make_tables' pif_to_device_table) */
const physicalDevices = (emu: Emulator, host: string): string[] =>
  ((emu.db.get('host', host)?.PIFs as string[]) ?? []).map((p) => emu.db.get('PIF', p)).filter((r) => r?.physical === true).map((r) => String(r!.device));

function scan(call: Call, host: string): void {
  const { emu } = call;
  recordOf(emu, 'host', host);
  assertHostReachable(emu, host);
  syncHostMetrics(emu, host);
  const devices = new Set(physicalDevices(emu, host));
  for (const nic of nicsOf(emu, host)) {
    if (!devices.has(nic.device)) introduceInternal(emu, host, nic.device, nic.MAC, nic.MTU, true);
  }
  setManagementBridge(emu, host, managementBridge(emu, host));
}

function introduce(call: Call, host: string, MAC: string, device: string, managed = true): string {
  const { emu } = call;
  recordOf(emu, 'host', host);
  assertHostReachable(emu, host);
  let mac = String(MAC).toLowerCase();
  const nics = nicsOf(emu, host);
  if (mac === '') mac = nics.find((n) => n.device === device)?.MAC ?? '';
  if (!isValidMac(mac)) throw new XapiError('MAC_INVALID', [mac]);
  if (physicalDevices(emu, host).includes(device)) throw new XapiError('DUPLICATE_PIF_DEVICE_NAME', [device]);
  const nic = nics.find((n) => n.device === device && n.MAC === mac);
  if (!nic) throw new XapiError('COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS', [device, mac]);
  return introduceInternal(emu, host, device, mac, nic.MTU, managed !== false);
}

function forgetPif(emu: Emulator, self: string): void {
  const rec = recordOf(emu, 'PIF', self);
  assertNoClusteringEnabledOn(emu, self);
  pinNics(emu, String(rec.host));
  if (rec.managed === true) bringPifDown(emu, self);
  const metrics = String(rec.metrics);
  // a VLAN PIF shares its metrics with the PIF under it
  const shared = [...emu.db.table('PIF')].some(([ref, row]) => ref !== self && row.rec.metrics === metrics);
  if (!shared && emu.db.has('PIF_metrics', metrics)) emu.db.destroy('PIF_metrics', metrics);
  emu.db.destroy('PIF', self);
}

// ---- properties ----

const PROPERTY_VALUES: Record<string, string[]> = { gro: ['on', 'off'] };

function setProperty(call: Call, self: string, name: string, value: string): void {
  const { emu } = call;
  const rec = pifRec(call, self);
  onHostOf(call, rec);
  if (!(PROPERTY_VALUES[name] ?? []).includes(value)) throw new XapiError('INVALID_VALUE', ['properties', `${name} = ${value}`]);
  const hasProperties = (rec.bond_master_of as string[]).length > 0 || rec.physical === true;
  if (!hasProperties || isRef(rec.bond_slave_of)) throw new XapiError('CANNOT_CHANGE_PIF_PROPERTIES', [self]);
  const rest = Object.fromEntries(Object.entries(rec.properties as Record<string, string>).filter(([k]) => k !== name));
  const properties = { [name]: value, ...rest };
  emu.db.update('PIF', self, { properties });
  // a bond's members take the bond's properties
  for (const b of rec.bond_master_of as string[]) {
    for (const s of (emu.db.get('Bond', b)?.slaves as string[]) ?? []) emu.db.update('PIF', s, { properties });
  }
  if (rec.currently_attached === true) bringPifUp(emu, self);
}

function introduceRecord(call: Call, args: unknown[]): string {
  const { emu } = call;
  const [device, network, host, MAC, MTU, VLAN, physical, ip_configuration_mode, IP, netmask, gateway, DNS, , VLAN_master_of,
    management, other_config, disallow_unplug, ipv6_configuration_mode, IPv6, ipv6_gateway, primary_address_type, managed, properties] = args;
  recordOf(emu, 'host', String(host));
  recordOf(emu, 'network', String(network));
  const ref = emu.ids.ref();
  emu.db.create('PIF', ref, {
    uuid: emu.ids.uuid(), device, network, host, MAC, MTU, VLAN, metrics: makePifMetrics(emu), physical, currently_attached: false,
    igmp_snooping_status: 'unknown', ip_configuration_mode, IP, netmask, gateway, DNS, bond_slave_of: NULL_REF,
    VLAN_master_of: VLAN_master_of ?? NULL_REF, management, other_config: other_config ?? {}, disallow_unplug: disallow_unplug ?? false,
    ipv6_configuration_mode: ipv6_configuration_mode ?? 'None', IPv6: IPv6 ?? [], ipv6_gateway: ipv6_gateway ?? '',
    primary_address_type: primary_address_type ?? 'IPv4', managed: managed ?? true, properties: properties ?? {}, capabilities: [], PCI: NULL_REF,
  });
  return ref;
}

registerProvider('PIF', {
  plug(call, self: string) {
    onHostOf(call, pifRec(call, self));
    plugPif(call.emu, self);
  },

  unplug(call, self: string) {
    onHostOf(call, pifRec(call, self));
    unplugPif(call.emu, self);
  },

  reconfigure_ip: reconfigureIp,
  reconfigure_ipv6: reconfigureIpv6,

  set_primary_address_type(call, self: string, primary_address_type: string) {
    const rec = pifRec(call, self);
    onHostOf(call, rec);
    assertNoProtection(call.emu, rec);
    if (rec.management === true) throw new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [self]);
    call.emu.db.update('PIF', self, { primary_address_type });
  },

  set_disallow_unplug(call, self: string, value: boolean) {
    const rec = pifRec(call, self);
    if (rec.disallow_unplug === value) return;
    if (!value) {
      assertNoClusteringEnabledOn(call.emu, self);
      for (const [ref, row] of call.emu.db.table('Cluster')) {
        const op = Object.entries((row.rec.current_operations ?? {}) as Record<string, string>).find(([, o]) => o === 'enable' || o === 'add');
        if (op) throw new XapiError('OTHER_OPERATION_IN_PROGRESS', ['Cluster', ref, op[1], op[0]]);
      }
    }
    call.emu.db.update('PIF', self, { disallow_unplug: value });
  },

  set_property: setProperty,
  scan,
  introduce,

  forget(call, self: string) {
    const { emu } = call;
    const rec = pifRec(call, self);
    onHostOf(call, rec);
    assertNotManagement(rec, self);
    assertNotInBond(emu, rec, self);
    assertNoVlans(rec, self);
    assertNoTunnels(rec, self);
    assertNotSlaveManagement(emu, rec, self);
    assertNoProtection(emu, rec);
    assertNoSriov(emu, rec, self);
    forgetPif(emu, self);
  },

  pool_introduce: (call, ...args: unknown[]) => introduceRecord(call, args),
  db_introduce: (call, ...args: unknown[]) => introduceRecord(call, args),

  db_forget(call, self: string) {
    const rec = pifRec(call, self);
    pinNics(call.emu, String(rec.host));
    call.emu.db.destroy('PIF', self);
  },

  /** Xapi_pif.create_VLAN (deprecated): VLAN.create on the host's untagged PIF of that device */
  create_VLAN(call, device: string, network: string, host: string, VLAN: number) {
    const { emu } = call;
    recordOf(emu, 'host', host);
    assertHostReachable(emu, host);
    const base = ((emu.db.get('host', host)!.PIFs as string[]) ?? []).find((p) => {
      const r = emu.db.get('PIF', p);
      return r?.device === device && Number(r.VLAN) === -1;
    });
    if (!base) throw new XapiError('INVALID_VALUE', ['device', device]);
    const vlan = createVlanOnHost(call, base, Number(VLAN), network);
    return String(emu.db.get('VLAN', vlan)!.untagged_PIF);
  },

  /** Xapi_pif.destroy (deprecated): VLAN.destroy of the VLAN this PIF is the untagged PIF of */
  destroy(call, self: string) {
    const rec = pifRec(call, self);
    onHostOf(call, rec);
    if (Number(rec.VLAN) < 0) throw new XapiError('PIF_IS_PHYSICAL', []);
    destroyVlan(call, String(rec.VLAN_master_of));
  },
});
