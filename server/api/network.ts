// network: custom messages (xapi_network.ml, xapi_network_attach_helpers.ml). Purposes say what a
// network is for: `nbd` and `insecure_nbd` make VDI.get_nbd_info offer the hosts' NBD servers on
// that network's PIFs. Attaching a network on a host brings up its managed PIFs there (an
// unmanaged network's bridge must already be up); a network's default locking mode is what its
// VIFs in network_default mode get, changed only while none of them is attached.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { recordOf } from './generic.js';
import type { Emulator } from '../emulator.js';
import { NULL_REF } from '../../storage/database.js';
import { bringPifUp } from './pif-helpers.js';

/** a pool offers NBD either with TLS or without, never both (Xapi_network.assert_can_add_purpose) */
const INCOMPATIBLE: Record<string, string[]> = { nbd: ['insecure_nbd'], insecure_nbd: ['nbd'] };

/** Xapi_network_attach_helpers.get_local_pifs: the network's PIFs on a host */
function localPifs(emu: Emulator, network: string, host: string): string[] {
  return ((emu.db.get('network', network)?.PIFs as string[] | undefined) ?? []).filter((p) => emu.db.get('PIF', p)?.host === host);
}

/** Xapi_network_sriov_helpers.is_sriov_network: its PIF is an SR-IOV logical PIF */
export function isSriovNetwork(emu: Emulator, network: string): boolean {
  const [pif] = (emu.db.get('network', network)?.PIFs as string[] | undefined) ?? [];
  return !!pif && (((emu.db.get('PIF', pif)?.sriov_logical_PIF_of as string[] | undefined) ?? []).length > 0);
}

/** Whether the host can see a network: one with PIFs through them; one without (private) from any
 * host when shared by assumption or unmanaged, else only from the host where VMs on it run. */
function networkAvailableOn(emu: Emulator, host: string, network: string): boolean {
  const { db } = emu;
  const net = recordOf(emu, 'network', network);
  const pifs = (net.PIFs as string[]) ?? [];
  if (pifs.length) return pifs.some((p) => db.get('PIF', p)?.host === host);
  if (((net.other_config ?? {}) as Record<string, string>).assume_network_is_shared === 'true') return true;
  if (net.managed !== true) return true;
  const hosts = ((net.VIFs as string[]) ?? [])
    .map((v) => db.get('VM', String(db.get('VIF', v)?.VM)))
    .filter((r) => r?.power_state === 'Running')
    .map((r) => String(r!.resident_on));
  return hosts.length === 0 || hosts.includes(host);
}

/** Xapi_network_attach_helpers.assert_can_see_named_networks: every network available on the host
 * (else VM_REQUIRES_NETWORK naming the first that is not), then none needing a bond slave there. */
export function assertCanSeeNetworks(emu: Emulator, vm: string, host: string, networks: string[]): void {
  const missing = networks.find((n) => !networkAvailableOn(emu, host, n));
  if (missing !== undefined) throw new XapiError('VM_REQUIRES_NETWORK', [vm, missing]);
  for (const n of networks) {
    if (localPifs(emu, n, host).some((p) => String(emu.db.get('PIF', p)?.bond_slave_of ?? NULL_REF) !== NULL_REF)) {
      throw new XapiError('HOST_CANNOT_ATTACH_NETWORK', [host, n]);
    }
  }
}

export function assertCanSeeNetwork(emu: Emulator, vm: string, host: string, network: string): void {
  assertCanSeeNetworks(emu, vm, host, [network]);
}

/** The networks of a VM's VIFs (Xapi_vm_helpers.assert_can_see_networks' reqd_nets). */
export const networksOfVm = (emu: Emulator, vm: string): string[] =>
  ((emu.db.get('VM', vm)?.VIFs as string[] | undefined) ?? []).map((v) => String(emu.db.get('VIF', v)?.network)).filter((n) => emu.db.has('network', n));

/** Xapi_network.attach_internal: an unmanaged network's bridge must be up already (a PIF of it
 * plugged on the host); a managed one gets its managed PIFs there brought up through networkd
 * (all of them when forced, else those not attached), which fails as PIF_CONFIGURATION_ERROR when
 * a card under one is missing. A bond slave cannot be brought up on its own. */
function attachInternal(emu: Emulator, network: string, host: string, force: boolean): void {
  const { db } = emu;
  const net = recordOf(emu, 'network', network);
  const local = localPifs(emu, network, host);
  if (net.managed !== true) {
    if (!local.some((p) => db.get('PIF', p)?.currently_attached === true)) throw new XapiError('BRIDGE_NOT_AVAILABLE', [String(net.bridge)]);
    return;
  }
  for (const p of local) {
    const pif = db.get('PIF', p)!;
    if (pif.managed !== true || (!force && pif.currently_attached === true)) continue;
    if (String(pif.bond_slave_of ?? NULL_REF) !== NULL_REF) throw new XapiError('CANNOT_PLUG_BOND_SLAVE', [p]);
    // nm.bring_pif_up, which reads the links again and lets the guests there see them
    bringPifUp(emu, p);
  }
}

/** Xapi_network.attach_for_vm: each of the VM's networks attached on the host, before xenopsd
 * starts, resumes or receives it there (with_networks_attached_for_vm). */
export function attachNetworksForVm(emu: Emulator, vm: string, host: string): void {
  for (const v of recordOf(emu, 'VM', vm).VIFs as string[]) {
    const network = String(emu.db.get('VIF', v)?.network);
    if (emu.db.has('network', network)) attachInternal(emu, network, host, false);
  }
}

/** Xapi_network.attach_for_vif: the VIF's network attached on the host its VM runs on. */
export function attachNetworkForVif(emu: Emulator, vif: string, host: string): void {
  attachInternal(emu, String(recordOf(emu, 'VIF', vif).network), host, false);
}

registerProvider('network', {
  add_purpose(call: Call, self: string, value: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'network', self);
    if (!rec.managed) throw new XapiError('NETWORK_UNMANAGED', [self]);
    const current = rec.purpose as string[];
    if (current.includes(value)) return;
    const bad = INCOMPATIBLE[value] ?? [];
    for (const [, row] of emu.db.table('network')) {
      const clash = (row.rec.purpose as string[]).find((p) => bad.includes(p));
      if (clash) throw new XapiError('NETWORK_INCOMPATIBLE_PURPOSES', [value, clash]);
    }
    // xapi conses the new purpose onto the list
    emu.db.update('network', self, { purpose: [value, ...current] });
  },

  remove_purpose(call: Call, self: string, value: string) {
    const { emu } = call;
    const current = recordOf(emu, 'network', self).purpose as string[];
    if (current.includes(value)) emu.db.update('network', self, { purpose: current.filter((p) => p !== value) });
  },

  /** Xapi_network.attach: the network brought up on the host, its PIFs there plugged again. */
  attach(call: Call, network: string, host: string) {
    recordOf(call.emu, 'host', host);
    attachInternal(call.emu, network, host, true);
  },

  /** Xapi_network.attach_for_vm: each of the VM's networks attached on the host. */
  attach_for_vm(call: Call, host: string, vm: string) {
    const { emu } = call;
    recordOf(emu, 'host', host);
    attachNetworksForVm(emu, vm, host);
  },

  /** Xapi_network.detach_for_vm: the host forgets the VM's VIFs; a private network's bridge goes
   * with its last VIF, which the database does not record, and failures are only logged. */
  detach_for_vm(call: Call, host: string, vm: string) {
    recordOf(call.emu, 'host', host);
    recordOf(call.emu, 'VM', vm);
  },

  /** Xapi_network.set_default_locking_mode: refused while a VIF on the network is attached. */
  set_default_locking_mode(call: Call, network: string, value: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'network', network);
    const inUse = ((rec.VIFs as string[]) ?? []).find((v) => emu.db.get('VIF', v)?.currently_attached === true);
    if (inUse) throw new XapiError('VIF_IN_USE', [network, inUse]);
    emu.db.update('network', network, { default_locking_mode: value });
  },

  /** Xapi_network.pool_introduce: the record as given (a joining host's network), no checks. */
  pool_introduce(call: Call, name_label: string, name_description: string, MTU: number, other_config: Record<string, string>, bridge: string, managed: boolean, purpose: string[]) {
    const { emu } = call;
    const ref = emu.ids.ref();
    emu.db.create('network', ref, {
      uuid: emu.ids.uuid(), name_label, name_description, MTU, other_config, bridge, managed, purpose: [...(purpose ?? [])],
      tags: [], blobs: {}, default_locking_mode: 'unlocked', assigned_ips: {},
    });
    return ref;
  },
});
