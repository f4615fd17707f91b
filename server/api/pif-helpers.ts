// What PIF, VLAN, Bond, tunnel and network_sriov share (xapi_pif_helpers.ml, the assertions of
// xapi_pif.ml, nm.ml's bring_pif_up/bring_pif_down): the kind of a PIF and the stack under it, the
// checks the messages make, and the state changes of bringing an interface up or down on its host
// (currently_attached, bond members, addresses from the fabric, host.address).
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { XapiError } from '../dispatch/errors.js';
import { recordOf } from './generic.js';
import { linkOf, syncHostMetrics } from '../networkd/nics.js';
import { dhcpLease, slaacAddress } from '../networkd/dhclient.js';
import { xapiDate } from '../clock.js';

export type PifType =
  | { kind: 'tunnel_access'; ref: string }
  | { kind: 'vlan_untagged'; ref: string }
  | { kind: 'sriov_logical'; ref: string }
  | { kind: 'bond_master'; ref: string }
  | { kind: 'physical' };

const isRef = (v: unknown): v is string => typeof v === 'string' && v !== '' && v !== NULL_REF;

/** Xapi_pif_helpers.get_pif_type: the first that applies, in xapi's order. */
export function pifType(rec: Rec): PifType {
  const access = rec.tunnel_access_PIF_of as string[];
  if (access.length > 0) return { kind: 'tunnel_access', ref: access[0] };
  if (isRef(rec.VLAN_master_of)) return { kind: 'vlan_untagged', ref: rec.VLAN_master_of };
  const logical = rec.sriov_logical_PIF_of as string[];
  if (logical.length > 0) return { kind: 'sriov_logical', ref: logical[0] };
  const bonds = rec.bond_master_of as string[];
  if (bonds.length > 0) return { kind: 'bond_master', ref: bonds[0] };
  if (rec.physical === true) return { kind: 'physical' };
  throw new XapiError('INTERNAL_ERROR', [`Cannot calculate PIF type of ${String(rec.uuid)}`]);
}

export interface TopoEntry {
  type: PifType;
  pif: string;
  rec: Rec;
}

/** Xapi_pif_helpers.get_pif_topo: the PIF's type, then those of the PIFs under it, down to a
 * physical PIF or a bond master. */
export function pifTopo(emu: Emulator, pif: string): TopoEntry[] {
  const out: TopoEntry[] = [];
  let ref = pif;
  for (let depth = 0; depth < 8; depth++) {
    const rec = recordOf(emu, 'PIF', ref);
    const type = pifType(rec);
    out.push({ type, pif: ref, rec });
    let next: unknown;
    if (type.kind === 'tunnel_access') next = emu.db.get('tunnel', type.ref)?.transport_PIF;
    else if (type.kind === 'vlan_untagged') next = emu.db.get('VLAN', type.ref)?.tagged_PIF;
    else if (type.kind === 'sriov_logical') next = emu.db.get('network_sriov', type.ref)?.physical_PIF;
    else break;
    if (!isRef(next) || !emu.db.has('PIF', next)) break;
    ref = next;
  }
  return out;
}

// ---- assertions (xapi_pif.ml, xapi_pif_helpers.ml, xapi_network_attach_helpers.ml) ----

export function assertPifManaged(rec: Rec, pif: string): void {
  if (rec.managed !== true) throw new XapiError('PIF_UNMANAGED', [pif]);
}

export function assertNetworkManaged(emu: Emulator, network: string): void {
  if (recordOf(emu, 'network', network).managed !== true) throw new XapiError('NETWORK_UNMANAGED', [network]);
}

/** A call forwarded to a member that is down does not reach it (message_forwarding's do_op_on). */
export function assertHostReachable(emu: Emulator, host: string): void {
  if (host === emu.master) return;
  const h = recordOf(emu, 'host', host);
  if (emu.db.get('host_metrics', String(h.metrics))?.live === false) throw new XapiError('HOST_OFFLINE', [host]);
}

/** assert_no_protection_enabled: an attached PIF is not reconfigured under HA or the redo log. */
export function assertNoProtection(emu: Emulator, rec: Rec): void {
  if (rec.currently_attached !== true) return;
  const pool = emu.db.get('pool', emu.pool) ?? {};
  if (pool.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
  if (pool.redo_log_enabled === true) throw new XapiError('REDO_LOG_IS_ENABLED', []);
}

export function assertNoClusteringEnabledOn(emu: Emulator, pif: string): void {
  for (const [ref, row] of emu.db.table('Cluster_host')) {
    if (row.rec.PIF === pif && row.rec.enabled === true) throw new XapiError('CLUSTERING_ENABLED', [ref]);
  }
}

export function assertNotManagement(rec: Rec, pif: string): void {
  if (rec.management === true) throw new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [pif]);
}

/** A member keeps its attached management interface: it is how it reaches the master. */
export function assertNotSlaveManagement(emu: Emulator, rec: Rec, pif: string): void {
  if (rec.host !== emu.master && rec.currently_attached === true && rec.management === true) throw new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [pif]);
}

export function assertNotInBond(emu: Emulator, rec: Rec, pif: string): void {
  if (isRef(rec.bond_slave_of) && emu.db.has('Bond', rec.bond_slave_of)) throw new XapiError('PIF_ALREADY_BONDED', [pif]);
  if ((rec.bond_master_of as string[]).length > 0) throw new XapiError('PIF_ALREADY_BONDED', [pif]);
}

export function assertNoVlans(rec: Rec, pif: string): void {
  if ((rec.VLAN_slave_of as string[]).length > 0) throw new XapiError('PIF_VLAN_STILL_EXISTS', [pif]);
  if (Number(rec.VLAN) !== -1) throw new XapiError('PIF_VLAN_STILL_EXISTS', [pif]);
}

export function assertNoTunnels(rec: Rec, pif: string): void {
  if ((rec.tunnel_transport_PIF_of as string[]).length > 0) throw new XapiError('PIF_TUNNEL_STILL_EXISTS', [pif]);
  if ((rec.tunnel_access_PIF_of as string[]).length > 0) throw new XapiError('PIF_TUNNEL_STILL_EXISTS', [pif]);
}

export function assertNoSriov(emu: Emulator, rec: Rec, pif: string): void {
  const [top] = pifTopo(emu, pif);
  if (top.type.kind === 'sriov_logical') throw new XapiError('CANNOT_FORGET_SRIOV_LOGICAL', [pif]);
  if (top.type.kind === 'physical' && (rec.sriov_physical_PIF_of as string[]).length > 0) throw new XapiError('PIF_SRIOV_STILL_EXISTS', [pif]);
}

/** assert_no_other_local_pifs: a network has at most one PIF per host. */
export function assertNoOtherLocalPifs(emu: Emulator, host: string, network: string): void {
  for (const p of (recordOf(emu, 'network', network).PIFs as string[]) ?? []) {
    if (emu.db.get('PIF', p)?.host === host) throw new XapiError('NETWORK_ALREADY_CONNECTED', [host, p]);
  }
}

/** The network's VIFs plugged into a live VM on the host (assert_network_has_no_vifs_in_use_on_me). */
export function assertNetworkHasNoVifsInUseOn(emu: Emulator, host: string, network: string): void {
  const { db } = emu;
  for (const v of (db.get('network', network)?.VIFs as string[] | undefined) ?? []) {
    const vif = db.get('VIF', v);
    if (!vif) continue;
    const vm = db.get('VM', String(vif.VM)) ?? {};
    const here = vm.resident_on === host || vm.scheduled_to_be_resident_on === host;
    if (here && Object.values((vif.current_operations ?? {}) as Record<string, string>).includes('attach')) {
      throw new XapiError('VIF_IN_USE', [network, v]);
    }
    if (vif.currently_attached === true && vm.resident_on === host && (vm.power_state === 'Running' || vm.power_state === 'Paused')) {
      throw new XapiError('VIF_IN_USE', [network, v]);
    }
  }
}

/** Helpers.assert_is_valid_ip for IPv4. */
export function isIpv4(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return m !== null && m.slice(1).every((o) => Number(o) <= 255 && (o.length === 1 || o[0] !== '0'));
}

/** An IPv6 address in any of its textual forms (RFC 4291 2.2, with an IPv4 tail). */
export function isIpv6(s: string): boolean {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.includes(':::')) return false;
  const halves = s.split('::');
  if (halves.length > 2) return false;
  const groups = (h: string): string[] | null => (h === '' ? [] : h.split(':'));
  const parts = halves.map(groups);
  if (parts.some((p) => p === null)) return false;
  const all = parts.flat() as string[];
  let n = 0;
  for (let i = 0; i < all.length; i++) {
    const g = all[i];
    if (i === all.length - 1 && g.includes('.')) {
      if (!isIpv4(g)) return false;
      n += 2;
    } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) n += 1;
    else return false;
  }
  return halves.length === 2 ? n < 8 : n === 8;
}

export function assertValidIp(kind: 'ipv4' | 'ipv6', field: string, s: string): void {
  if (!(kind === 'ipv4' ? isIpv4(s) : isIpv6(s))) throw new XapiError('INVALID_IP_ADDRESS_SPECIFIED', [field]);
}

/** Helpers.assert_is_valid_cidr for IPv6: address/prefix, 0 <= prefix <= 128. */
export function assertValidCidr6(field: string, s: string): void {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m || !isIpv6(m[1]) || Number(m[2]) > 128) throw new XapiError('INVALID_CIDR_ADDRESS_SPECIFIED', [field]);
}

/** Xapi_pif.assert_usable_for_management */
export function assertUsableForManagement(rec: Rec, pif: string, addressType: string): void {
  if (isRef(rec.bond_slave_of)) throw new XapiError('CANNOT_PLUG_BOND_SLAVE', [pif]);
  if (addressType === 'IPv4' && rec.ip_configuration_mode === 'None') throw new XapiError('PIF_HAS_NO_NETWORK_CONFIGURATION', [pif]);
  if (addressType === 'IPv6' && rec.ipv6_configuration_mode === 'None') throw new XapiError('PIF_HAS_NO_V6_NETWORK_CONFIGURATION', [pif]);
}

// ---- bringing interfaces up and down (nm.ml) ----

/** The physical devices an interface stands on (a bond's members, a VLAN's base ...). */
function devicesUnder(emu: Emulator, pif: string): string[] {
  const topo = pifTopo(emu, pif);
  const root = topo[topo.length - 1];
  if (root.type.kind === 'bond_master') {
    const bond = emu.db.get('Bond', root.type.ref);
    return ((bond?.slaves as string[]) ?? []).map((s) => String(emu.db.get('PIF', s)?.device ?? ''));
  }
  if (root.type.kind === 'physical') return [String(root.rec.device)];
  return [];
}

/** nm.bring_pif_up: networkd builds the bridge (failing, as PIF_CONFIGURATION_ERROR, when a device
 * under it is missing), then the PIF is attached; a bond's members are not attached themselves. */
export function bringPifUp(emu: Emulator, pif: string): void {
  const { db } = emu;
  const rec = recordOf(emu, 'PIF', pif);
  const host = String(rec.host);
  const topo = pifTopo(emu, pif);
  if (topo[0].type.kind === 'sriov_logical') {
    db.update('PIF', pif, { currently_attached: true });
    syncHostMetrics(emu, host);
    return;
  }
  if (topo[0].type.kind === 'vlan_untagged' && topo[1]?.type.kind === 'sriov_logical') {
    db.update('PIF', pif, { currently_attached: topo[1].rec.currently_attached === true });
    syncHostMetrics(emu, host);
    return;
  }
  // a bond comes up on the members that are there; any other interface needs its card
  const present = devicesUnder(emu, pif).map((d) => linkOf(emu, host, d) !== null);
  const bonded = topo[topo.length - 1].type.kind === 'bond_master';
  if (present.length === 0 || (bonded ? !present.some(Boolean) : !present.every(Boolean))) throw new XapiError('PIF_CONFIGURATION_ERROR', [pif, '']);
  const type = topo[0].type;
  if (type.kind === 'bond_master') {
    const bond = db.get('Bond', type.ref)!;
    const mtu = Number(db.get('network', String(rec.network))?.MTU ?? 1500);
    for (const s of bond.slaves as string[]) {
      db.update('PIF', s, { currently_attached: false });
      const slaveNet = String(db.get('PIF', s)?.network);
      if (db.has('network', slaveNet) && Number(db.get('network', slaveNet)!.MTU) !== mtu) db.update('network', slaveNet, { MTU: mtu });
    }
    // maybe_update_master_pif_mac: a bond that took its MAC from the primary member follows it
    const primary = db.get('PIF', String(bond.primary_slave));
    if (bond.auto_update_mac === true && primary && primary.MAC !== rec.MAC) db.update('PIF', pif, { MAC: primary.MAC });
  }
  db.update('PIF', pif, { currently_attached: true });
  if (isRef(rec.bond_slave_of)) {
    const master = db.get('Bond', rec.bond_slave_of)?.master;
    if (isRef(master) && db.has('PIF', master)) db.update('PIF', master, { currently_attached: false });
  }
  // the MTU of the bridge (the network's) is what networkd reports back
  const netMtu = Number(db.get('network', String(rec.network))?.MTU ?? rec.MTU);
  if (Number(rec.MTU) !== netMtu && netMtu > 0) db.update('PIF', pif, { MTU: netMtu });
  if (Number(rec.VLAN) === -1) {
    const igmp = db.get('pool', emu.pool)?.igmp_snooping_enabled === true ? 'enabled' : 'disabled';
    if (rec.igmp_snooping_status !== igmp) db.update('PIF', pif, { igmp_snooping_status: igmp });
  }
  onDom0NetworkingChange(emu, host);
}

/** nm.bring_pif_down */
export function bringPifDown(emu: Emulator, pif: string): void {
  const rec = emu.db.get('PIF', pif);
  if (!rec) return;
  emu.db.update('PIF', pif, { currently_attached: false });
  // the guests on its network lose their link
  syncHostMetrics(emu, String(rec.host));
}

/** Xapi_mgmt_iface.on_dom0_networking_change: the addresses of the host's attached interfaces as
 * networkd reads them (DHCP leases, SLAAC), then host.address from the management interface, and
 * the console URLs of the host's domains with it. The emulator's listeners do not move. */
export function onDom0NetworkingChange(emu: Emulator, host: string): void {
  const { db } = emu;
  let management: Rec | undefined;
  for (const p of (db.get('host', host)?.PIFs as string[] | undefined) ?? []) {
    const rec = db.get('PIF', p);
    if (!rec) continue;
    if (rec.currently_attached === true) updatePifAddress(emu, p);
    if (rec.management === true) management = db.get('PIF', p);
  }
  syncHostMetrics(emu, host);
  if (!management) return;
  const address = primaryAddress(management);
  const h = db.get('host', host)!;
  if (address === null || address === h.address) return;
  db.update('host', host, { address });
  // Dbsync_master.refresh_console_urls
  for (const vm of h.resident_VMs as string[]) {
    for (const c of (db.get('VM', vm)?.consoles as string[] | undefined) ?? []) {
      db.update('console', c, { location: `https://${address}/console?ref=${c}` });
    }
  }
}

/** Xapi_pif_helpers.get_primary_address */
export function primaryAddress(rec: Rec): string | null {
  if (rec.primary_address_type === 'IPv6') {
    for (const a of rec.IPv6 as string[]) {
      const addr = a.split('/')[0];
      if (addr && !/^fe[89ab]/i.test(addr)) return addr;
    }
    return null;
  }
  return rec.IP ? String(rec.IP) : null;
}

/** Helpers.update_pif_address: what dhclient and SLAAC gave the interface, when its link is up. */
export function updatePifAddress(emu: Emulator, pif: string): void {
  const { db } = emu;
  const rec = db.get('PIF', pif);
  if (!rec) return;
  const host = String(rec.host);
  const up = devicesUnder(emu, pif).some((d) => linkOf(emu, host, d)?.carrier === true);
  if (rec.ip_configuration_mode === 'DHCP' && up) {
    const lease = dhcpLease(emu, pif);
    if (lease && (lease.IP !== rec.IP || lease.netmask !== rec.netmask)) db.update('PIF', pif, { IP: lease.IP, netmask: lease.netmask });
  }
  if ((rec.ipv6_configuration_mode === 'Autoconf' || rec.ipv6_configuration_mode === 'DHCP') && up) {
    const a = slaacAddress(emu, pif);
    if (a && !(rec.IPv6 as string[]).includes(a)) db.update('PIF', pif, { IPv6: [a] });
  }
}

/** Bond.create/destroy's move_configuration: the IPv4 configuration goes from one PIF to another. */
export function moveConfiguration(emu: Emulator, from: string, to: string): void {
  const f = recordOf(emu, 'PIF', from);
  emu.db.update('PIF', to, { ip_configuration_mode: f.ip_configuration_mode, IP: f.IP, netmask: f.netmask, gateway: f.gateway, DNS: f.DNS });
  emu.db.update('PIF', from, { ip_configuration_mode: 'None', IP: '', netmask: '', gateway: '', DNS: '' });
}

/** Xapi_pif.update_management_flags: the PIFs of the host on the management bridge are the
 * management PIFs (`bridge` '' when management is disabled). */
export function setManagementBridge(emu: Emulator, host: string, bridge: string): void {
  const { db } = emu;
  for (const p of (db.get('host', host)?.PIFs as string[] | undefined) ?? []) {
    const rec = db.get('PIF', p);
    if (!rec) continue;
    const on = bridge !== '' && db.get('network', String(rec.network))?.bridge === bridge;
    if ((rec.management === true) !== on) db.update('PIF', p, { management: on });
  }
}

/** The bridge of the host's management interface, '' when it has none. */
export function managementBridge(emu: Emulator, host: string): string {
  for (const p of (emu.db.get('host', host)?.PIFs as string[] | undefined) ?? []) {
    const rec = emu.db.get('PIF', p);
    if (rec?.management === true) return String(emu.db.get('network', String(rec.network))?.bridge ?? '');
  }
  return '';
}

/** Creates a PIF_metrics as xapi's make_pif_metrics does: all empty until the monitor reads it. */
export function makePifMetrics(emu: Emulator): string {
  const ref = emu.ids.ref();
  emu.db.create('PIF_metrics', ref, {
    uuid: emu.ids.uuid(), carrier: false, device_name: '', vendor_name: '', device_id: '', vendor_id: '', speed: 0, duplex: false,
    pci_bus_path: '', io_read_kbs: 0, io_write_kbs: 0, last_updated: xapiDate(0), other_config: {},
  });
  return ref;
}

export { isRef };
