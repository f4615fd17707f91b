// network_sriov: SR-IOV enabled on a capable NIC (xapi_network_sriov.ml and its helpers): a
// logical PIF on the SR-IOV network, sharing the physical PIF's metrics; networkd enables the
// virtual functions through sysfs (no reboot needed), which get_remaining_capacity counts down as
// the VIFs of running VMs take them.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { NULL_REF } from '../../storage/database.js';
import { recordOf } from './generic.js';
import { assertHostReachable, assertNetworkManaged, assertNoOtherLocalPifs, assertPifManaged, pifType } from './pif-helpers.js';
import { VLAN_MAC } from '../networkd/dhclient.js';
import { nicOf } from '../networkd/nics.js';
import { plugPif, unplugPif } from './PIF.js';

function create(call: Call, pif: string, network: string): string {
  const { emu } = call;
  const { db } = emu;
  assertNetworkManaged(emu, network);
  const rec = recordOf(emu, 'PIF', pif);
  assertPifManaged(rec, pif);
  const host = String(rec.host);
  assertHostReachable(emu, host);
  // sriov_is_allowed_on_pif
  if (pifType(rec).kind !== 'physical') throw new XapiError('PIF_IS_NOT_PHYSICAL', [pif]);
  if ((rec.sriov_physical_PIF_of as string[]).length > 0) throw new XapiError('NETWORK_SRIOV_ALREADY_ENABLED', [pif]);
  if (!(rec.capabilities as string[]).includes('sriov')) throw new XapiError('PIF_IS_NOT_SRIOV_CAPABLE', [pif]);
  assertNoOtherLocalPifs(emu, host, network);
  // assert_network_compatible_with_sriov: an SR-IOV network is made of the same kind of card
  const [first] = (db.get('network', network)!.PIFs as string[]) ?? [];
  if (first) {
    const [sriov] = (db.get('PIF', first)?.sriov_logical_PIF_of as string[]) ?? [];
    if (!sriov) throw new XapiError('NETWORK_INCOMPATIBLE_WITH_SRIOV', [network]);
    const other = db.get('PIF', String(db.get('network_sriov', sriov)?.physical_PIF));
    const card = (p: typeof other) => {
      const n = p && nicOf(emu, String(p.host), String(p.device));
      return n ? `${n.vendor_id}:${n.device_id}` : '';
    };
    if (card(other) !== card(rec)) throw new XapiError('NETWORK_HAS_INCOMPATIBLE_SRIOV_PIFS', [pif, network]);
  }
  const sriov = emu.ids.ref();
  const logical = emu.ids.ref();
  db.create('PIF', logical, {
    uuid: emu.ids.uuid(), device: rec.device, network, host, MAC: VLAN_MAC, MTU: rec.MTU, VLAN: -1, metrics: rec.metrics, physical: false,
    currently_attached: false, igmp_snooping_status: 'unknown', ip_configuration_mode: 'None', IP: '', netmask: '', gateway: '', DNS: '',
    bond_slave_of: NULL_REF, VLAN_master_of: NULL_REF, management: false, other_config: {}, disallow_unplug: false,
    ipv6_configuration_mode: 'None', IPv6: [], ipv6_gateway: '', primary_address_type: rec.primary_address_type, managed: true,
    properties: {}, capabilities: [], PCI: NULL_REF,
  });
  db.create('network_sriov', sriov, { uuid: emu.ids.uuid(), physical_PIF: pif, logical_PIF: logical, requires_reboot: false, configuration_mode: 'unknown' });
  plugPif(emu, logical);
  // Net.Sriov.enable through sysfs
  db.update('network_sriov', sriov, { configuration_mode: 'sysfs', requires_reboot: false });
  return sriov;
}

registerProvider('network_sriov', {
  create,

  destroy(call, self: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'network_sriov', self);
    const logical = String(rec.logical_PIF);
    const l = emu.db.get('PIF', logical);
    if (l) {
      assertHostReachable(emu, String(l.host));
      if ((l.VLAN_slave_of as string[]).length > 0) throw new XapiError('PIF_VLAN_STILL_EXISTS', [logical]);
      unplugPif(emu, logical);
      emu.db.update('network_sriov', self, { requires_reboot: false });
      emu.db.destroy('PIF', logical);
    }
    emu.db.destroy('network_sriov', self);
  },

  /** the card's virtual functions that no plugged VIF of a VM on its host holds */
  get_remaining_capacity(call, self: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'network_sriov', self);
    const logical = emu.db.get('PIF', String(rec.logical_PIF));
    const phys = emu.db.get('PIF', String(rec.physical_PIF));
    if (!logical || !phys || logical.currently_attached !== true) return 0;
    const host = String(phys.host);
    const vfs = nicOf(emu, host, String(phys.device))?.sriov_vfs ?? 0;
    let used = 0;
    for (const v of (emu.db.get('network', String(logical.network))?.VIFs as string[]) ?? []) {
      const vif = emu.db.get('VIF', v);
      if (vif?.currently_attached === true && emu.db.get('VM', String(vif.VM))?.resident_on === host) used++;
    }
    return Math.max(0, vfs - used);
  },
});
