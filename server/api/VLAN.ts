// VLAN: a tagged interface on a host (xapi_vlan.ml): the VLAN record links the tagged PIF (the
// physical NIC or bond under it) to a new untagged PIF on the VLAN's network, which shares the
// tagged PIF's metrics and is plugged at once. Calls for a member that is down fail with
// HOST_OFFLINE, as xapi's forwarding does.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { NULL_REF } from '../../storage/database.js';
import { recordOf } from './generic.js';
import {
  assertHostReachable, assertNetworkManaged, assertNoOtherLocalPifs, assertNoProtection, assertNotInBond, assertNotSlaveManagement,
  assertPifManaged, isRef, pifTopo,
} from './pif-helpers.js';
import { VLAN_MAC } from '../networkd/dhclient.js';
import { plugPif, unplugPif } from './PIF.js';

export function assertValidVlanTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > 4094) throw new XapiError('VLAN_TAG_INVALID', [String(tag)]);
}

/** assert_network_compatible_with_trunks_on_vif: a network whose VIFs carry trunks takes no VLAN PIF */
function assertNoTrunksOn(emu: Emulator, network: string): void {
  for (const v of (emu.db.get('network', network)?.VIFs as string[] | undefined) ?? []) {
    const trunks = emu.db.get('VIF', v)?.trunks;
    if (Array.isArray(trunks) && trunks.length > 0) throw new XapiError('NETWORK_INCOMPATIBLE_WITH_TRUNKS', [network]);
  }
}

/** A network made of SR-IOV logical PIFs (or VLANs on them) takes no VLAN on a bridge. */
function isSriovBasedNetwork(emu: Emulator, network: string): boolean {
  const [first] = (emu.db.get('network', network)?.PIFs as string[] | undefined) ?? [];
  if (!first || !emu.db.has('PIF', first)) return false;
  const topo = pifTopo(emu, first);
  return topo[0].type.kind === 'sriov_logical' || (topo[0].type.kind === 'vlan_untagged' && topo[1]?.type.kind === 'sriov_logical');
}

/** Xapi_vlan.create_internal: the VLAN and its untagged PIF (not plugged). */
export function createVlanRecords(emu: Emulator, host: string, tagged: string, tag: number, network: string, device: string): { vlan: string; untagged: string } {
  assertNoTrunksOn(emu, network);
  const t = recordOf(emu, 'PIF', tagged);
  const vlan = emu.ids.ref();
  const untagged = emu.ids.ref();
  emu.db.create('PIF', untagged, {
    uuid: emu.ids.uuid(), device, network, host, MAC: VLAN_MAC, MTU: t.MTU, VLAN: tag, metrics: t.metrics, physical: false,
    currently_attached: false, igmp_snooping_status: 'unknown', ip_configuration_mode: 'None', IP: '', netmask: '', gateway: '', DNS: '',
    bond_slave_of: NULL_REF, VLAN_master_of: vlan, management: false, other_config: {}, disallow_unplug: false,
    ipv6_configuration_mode: 'None', IPv6: [''], ipv6_gateway: '', primary_address_type: t.primary_address_type, managed: true,
    properties: {}, capabilities: [], PCI: NULL_REF,
  });
  emu.db.create('VLAN', vlan, { uuid: emu.ids.uuid(), tagged_PIF: tagged, untagged_PIF: untagged, tag, other_config: {} });
  return { vlan, untagged };
}

/** Xapi_vlan.create, run on the tagged PIF's host. */
export function createVlanOnHost(call: Call, tagged: string, tag: number, network: string): string {
  const { emu } = call;
  assertNetworkManaged(emu, network);
  const t = recordOf(emu, 'PIF', tagged);
  const host = String(t.host);
  assertHostReachable(emu, host);
  assertNoOtherLocalPifs(emu, host, network);
  assertPifManaged(t, tagged);
  const topo = pifTopo(emu, tagged);
  const root = topo[topo.length - 1];
  // vlan_is_allowed_on_pif
  if (root.type.kind === 'physical' && isRef(root.rec.bond_slave_of)) throw new XapiError('CANNOT_ADD_VLAN_TO_BOND_SLAVE', [tagged]);
  if (topo[0].type.kind === 'vlan_untagged') throw new XapiError('PIF_IS_VLAN', [tagged]);
  if (topo[0].type.kind === 'tunnel_access') throw new XapiError('IS_TUNNEL_ACCESS_PIF', [tagged]);
  // assert_vlan_network_compatible_with_pif (a VLAN on an SR-IOV logical PIF is not simulated)
  if (topo[0].type.kind === 'sriov_logical') throw new XapiError('NETWORK_INCOMPATIBLE_WITH_VLAN_ON_SRIOV', [network]);
  if (isSriovBasedNetwork(emu, network)) throw new XapiError('NETWORK_INCOMPATIBLE_WITH_VLAN_ON_BRIDGE', [network]);
  assertValidVlanTag(tag);
  const device = String(t.device);
  for (const v of t.VLAN_slave_of as string[]) {
    if (Number(emu.db.get('VLAN', v)?.tag) === tag) throw new XapiError('PIF_VLAN_EXISTS', [device]);
  }
  const { vlan, untagged } = createVlanRecords(emu, host, tagged, tag, network, device);
  plugPif(emu, untagged);
  return vlan;
}

/** Xapi_vlan.destroy */
export function destroyVlan(call: Call, self: string): void {
  const { emu } = call;
  const rec = recordOf(emu, 'VLAN', self);
  const untagged = String(rec.untagged_PIF);
  const u = emu.db.get('PIF', untagged);
  if (!u) {
    // an orphaned record
    emu.db.destroy('VLAN', self);
    return;
  }
  assertHostReachable(emu, String(u.host));
  assertNotInBond(emu, u, untagged);
  assertNotSlaveManagement(emu, u, untagged);
  assertNoProtection(emu, u);
  if (Number(u.VLAN) < 0) throw new XapiError('PIF_IS_PHYSICAL', []);
  unplugPif(emu, untagged);
  const vlan = u.VLAN_master_of;
  if (isRef(vlan) && emu.db.has('VLAN', vlan)) emu.db.destroy('VLAN', vlan);
  // the metrics are the tagged PIF's: they stay
  emu.db.destroy('PIF', untagged);
}

registerProvider('VLAN', {
  create: (call, tagged_PIF: string, tag: number, network: string) => createVlanOnHost(call, tagged_PIF, Number(tag), network),
  destroy: (call, self: string) => destroyVlan(call, self),

  /** Xapi_vlan.pool_introduce: the record only; the untagged PIF takes the tagged PIF's metrics */
  pool_introduce(call, tagged_PIF: string, untagged_PIF: string, tag: number, other_config: Record<string, string>) {
    const { emu } = call;
    const t = recordOf(emu, 'PIF', tagged_PIF);
    const u = recordOf(emu, 'PIF', untagged_PIF);
    const vlan = emu.ids.ref();
    emu.db.create('VLAN', vlan, { uuid: emu.ids.uuid(), tagged_PIF, untagged_PIF, tag, other_config: other_config ?? {} });
    emu.db.update('PIF', untagged_PIF, { VLAN_master_of: vlan });
    if (u.metrics !== t.metrics) {
      const old = String(u.metrics);
      emu.db.update('PIF', untagged_PIF, { metrics: t.metrics });
      if (emu.db.has('PIF_metrics', old)) emu.db.destroy('PIF_metrics', old);
    }
    return vlan;
  },
});
