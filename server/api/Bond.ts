// Bond: NICs of a host bonded under one master PIF (xapi_bond.ml, with message_forwarding.ml's
// checks). Creating a bond moves onto the master what the members carried: the primary member's
// IP configuration, the management interface, the VLANs, the tunnels and the VIFs of the host's VMs; destroying
// it moves them back onto the primary member. links_up follows the members' carrier (networkd).
// Every change of a create or a destroy is made in one go, so that no kill leaves half a bond.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { recordOf } from './generic.js';
import {
  assertHostReachable, assertNetworkManaged, assertNoOtherLocalPifs, assertPifManaged, bringPifDown, bringPifUp, isRef,
  makePifMetrics, moveConfiguration, onDom0NetworkingChange, pifTopo, setManagementBridge,
} from './pif-helpers.js';
import { isValidMac, linkOf, syncHostMetrics } from '../networkd/nics.js';
import { createVlanRecords } from './VLAN.js';
import { createTunnelRecords } from './tunnel.js';
import { moveVifBackends } from './VIF.js';

interface Requirement {
  key: string;
  default?: string;
  valid: (v: string) => boolean;
}

/** requirements_of_mode: only LACP bonds take properties */
function requirementsOf(mode: string): Requirement[] {
  if (mode !== 'lacp') return [];
  return [
    { key: 'hashing_algorithm', default: 'tcpudp_ports', valid: (v) => ['src_mac', 'tcpudp_ports'].includes(v) },
    { key: 'lacp-time', default: 'slow', valid: (v) => ['fast', 'slow'].includes(v) },
    { key: 'lacp-aggregation-key', valid: (v) => /^[+-]?\d+$/.test(v) },
    { key: 'lacp-fallback-ab', default: 'true', valid: (v) => ['true', 'false'].includes(v) },
  ];
}

/** Map_check.validate_kvpair */
function validateProperty(reqs: Requirement[], key: string, value: string): void {
  const r = reqs.find((q) => q.key === key);
  if (!r || !r.valid(value)) throw new XapiError('INVALID_VALUE', ['properties', `${key} = ${value}`]);
}

/** Map_check.add_defaults */
function withDefaults(reqs: Requirement[], props: Record<string, string>): Record<string, string> {
  const out = { ...props };
  for (const r of reqs) if (!(r.key in out) && r.default !== undefined) out[r.key] = r.default;
  return out;
}

function chooseBondDevice(emu: Emulator, host: string): string {
  const devices = new Set<string>();
  for (const p of (emu.db.get('host', host)?.PIFs as string[]) ?? []) {
    const r = emu.db.get('PIF', p);
    if (r && (r.bond_master_of as string[]).length > 0) devices.add(String(r.device));
  }
  let n = 0;
  while (devices.has(`bond${n}`)) n++;
  return `bond${n}`;
}

/** move_management: the management interface goes to `to` (brought up, then flagged). */
function moveManagement(emu: Emulator, host: string, to: string): void {
  bringPifUp(emu, to);
  const bridge = String(emu.db.get('network', String(emu.db.get('PIF', to)?.network))?.bridge ?? '');
  setManagementBridge(emu, host, bridge);
  onDom0NetworkingChange(emu, host);
}

/** get_local_vifs: the VIFs on these networks of the VMs that run on the host. (xapi also takes
 * halted VMs that can start on this host only; the emulator leaves those where they are.) */
function localVifs(emu: Emulator, host: string, networks: string[]): string[] {
  const out: string[] = [];
  for (const n of networks) {
    for (const v of (emu.db.get('network', n)?.VIFs as string[] | undefined) ?? []) {
      const vm = emu.db.get('VM', String(emu.db.get('VIF', v)?.VM));
      if (vm?.resident_on === host) out.push(v);
    }
  }
  return out;
}

/** Xapi_vif.move_internal, as far as the records go: the VIF now is on `network` (its backend
 * follows in xenopsd once the bond's records are all written, moveVifBackends). */
function moveVifs(emu: Emulator, vifs: string[], network: string): void {
  for (const v of vifs) if (emu.db.has('VIF', v)) emu.db.update('VIF', v, { network });
}

/** move_vlan: the VLAN goes from its tagged PIF to `newTagged` (a bond master or primary member). */
function moveVlan(emu: Emulator, host: string, newTagged: string, oldVlan: string, moved: string[]): void {
  const { db } = emu;
  const old = db.get('VLAN', oldVlan)!;
  const oldMaster = String(old.untagged_PIF);
  const om = recordOf(emu, 'PIF', oldMaster);
  const tag = Number(old.tag);
  const network = String(om.network);
  const plugged = om.currently_attached === true;
  const management = om.management === true;
  if (plugged && !management) bringPifDown(emu, oldMaster);
  const same = ((db.get('PIF', newTagged)?.VLAN_slave_of as string[]) ?? []).find((v) => Number(db.get('VLAN', v)?.tag) === tag);
  let newMaster: string;
  if (same) {
    newMaster = String(db.get('VLAN', same)!.untagged_PIF);
    const vifs = localVifs(emu, host, [network]);
    moveVifs(emu, vifs, String(db.get('PIF', newMaster)!.network));
    moved.push(...vifs);
  } else {
    newMaster = createVlanRecords(emu, host, newTagged, tag, network, String(db.get('PIF', newTagged)!.device)).untagged;
  }
  moveConfiguration(emu, oldMaster, newMaster);
  db.destroy('VLAN', oldVlan);
  db.destroy('PIF', oldMaster);
  if (plugged) {
    if (management) moveManagement(emu, host, newMaster);
    else bringPifUp(emu, newMaster);
  }
}

/** move_tunnel: the tunnel goes from its transport PIF to `newTransport`. */
function moveTunnel(emu: Emulator, host: string, newTransport: string, oldTunnel: string): void {
  const { db } = emu;
  const old = db.get('tunnel', oldTunnel)!;
  const oldAccess = String(old.access_PIF);
  const a = recordOf(emu, 'PIF', oldAccess);
  const { access } = createTunnelRecords(emu, newTransport, String(a.network), host, String(old.protocol));
  db.destroy('tunnel', oldTunnel);
  db.destroy('PIF', oldAccess);
  if (a.currently_attached === true) bringPifUp(emu, access);
}

const hasIpConf = (r: Rec): boolean =>
  r.primary_address_type === 'IPv6' ? r.ipv6_configuration_mode !== 'None' : r.ip_configuration_mode !== 'None';

function createRecords(call: Call, network: string, members: string[], MAC: string, mode: string, properties: Record<string, string>): { bond: string; moved: string[] } {
  const { emu } = call;
  const { db } = emu;
  if (!Array.isArray(members) || members.length === 0) throw new XapiError('PIF_BOND_NEEDS_MORE_MEMBERS', []);
  const host = String(recordOf(emu, 'PIF', members[0]).host);
  assertHostReachable(emu, host);
  assertNetworkManaged(emu, network);
  assertNoOtherLocalPifs(emu, host, network);
  const [firstOnNet] = (db.get('network', network)!.PIFs as string[]) ?? [];
  if (firstOnNet && pifTopo(emu, firstOnNet).some((t) => t.type.kind === 'sriov_logical')) throw new XapiError('NETWORK_INCOMPATIBLE_WITH_BOND', [network]);
  const userMac = MAC !== '';
  if (userMac && !isValidMac(MAC)) throw new XapiError('MAC_INVALID', [MAC]);
  const reqs = requirementsOf(mode);
  for (const [k, v] of Object.entries(properties ?? {})) validateProperty(reqs, k, String(v));
  const props = withDefaults(reqs, properties ?? {});
  const pifs = [...new Set(members)];
  const recs = pifs.map((p) => recordOf(emu, 'PIF', p));

  const vlans = recs.flatMap((r) => r.VLAN_slave_of as string[]);
  const tunnels = recs.flatMap((r) => r.tunnel_transport_PIF_of as string[]);
  const managementOnVlan = vlans.some((v) => db.get('PIF', String(db.get('VLAN', v)?.untagged_PIF))?.management === true);
  const management = pifs.find((_, i) => recs[i].management === true);
  const withIp = pifs.filter((_, i) => hasIpConf(recs[i]));
  const primary = management ?? withIp[0] ?? pifs[0];
  const primaryRec = db.get('PIF', primary)!;
  const addressType = primaryRec.primary_address_type;
  pifs.forEach((p, i) => {
    if (recs[i].primary_address_type !== addressType) throw new XapiError('PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE', [p]);
  });
  const bondMac = userMac ? MAC : String(primaryRec.MAC);
  const disallowUnplug = recs.some((r) => r.disallow_unplug === true);
  const haEnabled = db.get('pool', emu.pool)?.ha_enabled === true;
  pifs.forEach((p, i) => {
    const r = recs[i];
    assertPifManaged(r, p);
    // bond_is_allowed_on_pif
    const topo = pifTopo(emu, p);
    const root = topo[topo.length - 1];
    if (root.type.kind === 'physical' && isRef(root.rec.bond_slave_of) && db.has('Bond', root.rec.bond_slave_of)) throw new XapiError('PIF_ALREADY_BONDED', [p]);
    if (topo[0].type.kind === 'vlan_untagged') throw new XapiError('PIF_VLAN_EXISTS', [String(r.device)]);
    if (topo[0].type.kind === 'tunnel_access') throw new XapiError('IS_TUNNEL_ACCESS_PIF', [p]);
    if (topo[0].type.kind === 'sriov_logical') throw new XapiError('PIF_IS_SRIOV_LOGICAL', [p]);
    if (haEnabled && r.management === true) throw new XapiError('HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE', []);
  });
  if (new Set(recs.map((r) => r.host)).size !== 1) throw new XapiError('PIF_CANNOT_BOND_CROSS_HOST', []);
  const propsOf = (r: Rec) => JSON.stringify(Object.entries(r.properties as Record<string, string>).sort());
  if (recs.some((r) => propsOf(r) !== propsOf(recs[0]))) throw new XapiError('INCOMPATIBLE_PIF_PROPERTIES', []);
  if (withIp.length > 1) throw new XapiError('PIF_BOND_MORE_THAN_ONE_IP', []);
  // networkd cannot build a bond of cards that are not there: refused before any record is made
  if (recs.every((r) => linkOf(emu, host, String(r.device)) === null)) throw new XapiError('PIF_CONFIGURATION_ERROR', [pifs[0], '']);

  const vifs = localVifs(emu, host, recs.map((r) => String(r.network)));
  const master = emu.ids.ref();
  const bond = emu.ids.ref();
  db.create('PIF', master, {
    uuid: emu.ids.uuid(), device: chooseBondDevice(emu, host), network, host, MAC: bondMac, MTU: -1, VLAN: -1, metrics: makePifMetrics(emu),
    physical: false, currently_attached: false, igmp_snooping_status: 'unknown', ip_configuration_mode: 'None', IP: '', netmask: '',
    gateway: '', DNS: '', bond_slave_of: NULL_REF, VLAN_master_of: NULL_REF, management: false, other_config: {}, disallow_unplug: false,
    ipv6_configuration_mode: 'None', IPv6: [''], ipv6_gateway: '', primary_address_type: addressType, managed: true,
    properties: { ...(recs[0].properties as Record<string, string>) }, capabilities: [], PCI: NULL_REF,
  });
  db.create('Bond', bond, {
    uuid: emu.ids.uuid(), master, other_config: {}, primary_slave: primary, mode, properties: props, links_up: 0, auto_update_mac: !userMac,
  });
  for (const p of pifs) db.update('PIF', p, { bond_slave_of: bond });
  moveConfiguration(emu, primary, master);
  if (management) moveManagement(emu, host, master);
  else if (!managementOnVlan) bringPifUp(emu, master);
  const movedOnVlans: string[] = [];
  for (const v of vlans) moveVlan(emu, host, master, v, movedOnVlans);
  if (managementOnVlan) bringPifUp(emu, master);
  for (const t of tunnels) moveTunnel(emu, host, master, t);
  moveVifs(emu, vifs, network);
  if (disallowUnplug) {
    db.update('PIF', master, { disallow_unplug: true });
    for (const p of pifs) db.update('PIF', p, { disallow_unplug: false });
  }
  syncHostMetrics(emu, host);
  return { bond, moved: [...vifs, ...movedOnVlans] };
}

async function create(call: Call, network: string, members: string[], MAC: string, mode: string, properties: Record<string, string>): Promise<string> {
  const { bond, moved } = createRecords(call, network, members, MAC, mode, properties);
  await moveVifBackends(call, moved);
  return bond;
}

function destroyRecords(call: Call, self: string): string[] {
  const { emu } = call;
  const { db } = emu;
  const b = recordOf(emu, 'Bond', self);
  const master = String(b.master);
  const m = recordOf(emu, 'PIF', master);
  const host = String(m.host);
  assertHostReachable(emu, host);
  const members = [...(b.slaves as string[])];
  const plugged = m.currently_attached === true;
  const primary = isRef(b.primary_slave) && db.has('PIF', b.primary_slave) ? b.primary_slave : members[0];
  const primaryNetwork = String(db.get('PIF', primary)?.network);
  const vifs = localVifs(emu, host, [String(m.network)]);
  const vlans = [...(m.VLAN_slave_of as string[])];
  const tunnels = [...(m.tunnel_transport_PIF_of as string[])];
  const managementOnVlan = vlans.some((v) => db.get('PIF', String(db.get('VLAN', v)?.untagged_PIF))?.management === true);
  if (db.get('pool', emu.pool)?.ha_enabled === true && m.management === true) throw new XapiError('HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE', []);
  // the primary member takes the bond's configuration and comes up with it: its card must be there
  // (refused before anything moves); a member whose card was pulled stays down
  const present = (s: string) => linkOf(emu, host, String(db.get('PIF', s)?.device)) !== null;
  if (!present(primary)) throw new XapiError('PIF_CONFIGURATION_ERROR', [primary, '']);
  const bringUp = (s: string) => {
    if (present(s)) bringPifUp(emu, s);
  };

  moveConfiguration(emu, master, primary);
  if (m.management === true) {
    moveManagement(emu, host, primary);
    for (const s of members) if (s !== primary) bringUp(s);
  } else if (plugged && !managementOnVlan) {
    for (const s of members) bringUp(s);
  }
  const movedOnVlans: string[] = [];
  for (const v of vlans) moveVlan(emu, host, primary, v, movedOnVlans);
  if (managementOnVlan) for (const s of members) bringUp(s);
  moveVifs(emu, vifs, primaryNetwork);
  for (const t of tunnels) moveTunnel(emu, host, primary, t);
  if (db.get('PIF', master)?.disallow_unplug === true) db.update('PIF', primary, { disallow_unplug: true });
  db.destroy('Bond', self);
  const metrics = String(db.get('PIF', master)?.metrics);
  db.destroy('PIF', master);
  if (db.has('PIF_metrics', metrics)) db.destroy('PIF_metrics', metrics);
  for (const s of members) if (db.has('PIF', s)) db.update('PIF', s, { bond_slave_of: NULL_REF });
  syncHostMetrics(emu, host);
  return [...vifs, ...movedOnVlans];
}

async function destroy(call: Call, self: string): Promise<void> {
  await moveVifBackends(call, destroyRecords(call, self));
}

registerProvider('Bond', {
  create,
  destroy,

  set_mode(call, self: string, value: string) {
    const { emu } = call;
    const b = recordOf(emu, 'Bond', self);
    const master = String(b.master);
    assertHostReachable(emu, String(recordOf(emu, 'PIF', master).host));
    const reqs = requirementsOf(value);
    const kept = Object.fromEntries(Object.entries(b.properties as Record<string, string>).filter(([k, v]) => {
      const r = reqs.find((q) => q.key === k);
      return r !== undefined && r.valid(v);
    }));
    emu.db.update('Bond', self, { mode: value, properties: withDefaults(reqs, kept) });
    bringPifUp(emu, master);
  },

  set_property(call, self: string, name: string, value: string) {
    const { emu } = call;
    const b = recordOf(emu, 'Bond', self);
    const master = String(b.master);
    assertHostReachable(emu, String(recordOf(emu, 'PIF', master).host));
    validateProperty(requirementsOf(String(b.mode)), name, value);
    emu.db.update('Bond', self, { properties: { ...(b.properties as Record<string, string>), [name]: value } });
    bringPifUp(emu, master);
  },
});
