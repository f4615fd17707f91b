// host: the management interface (xapi_host.ml: management_reconfigure, management_disable,
// local_management_reconfigure, get_management_interface). The management interface is the PIF on
// the host's management bridge (the inventory's MANAGEMENT_INTERFACE); host.address follows its
// address as xapi's on_dom0_networking_change does, while the emulator keeps listening where it
// started: a host's listeners never move.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { recordOf } from './generic.js';
import { assertHostReachable, assertUsableForManagement, onDom0NetworkingChange, pifTopo, setManagementBridge } from './pif-helpers.js';
import { plugPif } from './PIF.js';
import { createVlanRecords } from './VLAN.js';
import { createTunnelRecords } from './tunnel.js';
import type { Rec } from '../../storage/database.js';

export function managementInterfaceOf(emu: Emulator, host: string): string | undefined {
  return ((emu.db.get('host', host)?.PIFs as string[]) ?? []).find((p) => emu.db.get('PIF', p)?.management === true);
}

function assertNoHa(emu: Emulator): void {
  if (emu.db.get('pool', emu.pool)?.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
}

/** Xapi_host.management_reconfigure, on the PIF's host. (xapi's comparison of the new and the
 * current management address types is inside a handler that swallows its own error, so it never
 * refuses anything: neither does the emulator.) */
export function managementReconfigure(emu: Emulator, pif: string): void {
  assertNoHa(emu);
  const rec = recordOf(emu, 'PIF', pif);
  const host = String(rec.host);
  assertHostReachable(emu, host);
  if (rec.managed === true) assertUsableForManagement(rec, pif, String(rec.primary_address_type));
  if (rec.management === true) return;
  // Xapi_network.attach_internal: the network's PIF on this host is brought up
  if (rec.currently_attached !== true) plugPif(emu, pif);
  const bridge = String(emu.db.get('network', String(rec.network))?.bridge ?? '');
  setManagementBridge(emu, host, bridge);
  onDom0NetworkingChange(emu, host);
}

const pifsOf = (emu: Emulator, host: string): [string, Rec][] =>
  ((emu.db.get('host', host)?.PIFs as string[]) ?? []).map((p) => [p, emu.db.get('PIF', p)] as [string, Rec | undefined]).filter((e): e is [string, Rec] => e[1] !== undefined);

/** The host's PIF on a network, if it has one. */
const pifOn = (emu: Emulator, host: string, network: string): [string, Rec] | undefined => pifsOf(emu, host).find(([, r]) => r.network === network);

/** The network of the PIF under a VLAN or tunnel PIF. */
function networkUnder(emu: Emulator, pif: string): string {
  const topo = pifTopo(emu, pif);
  return String(topo[1]?.rec.network ?? '');
}

/** Xapi_host.sync_vlans: the master's VLANs made on the host where it has the PIF under them (not plugged). */
export function syncVlans(emu: Emulator, host: string): void {
  const mine = pifsOf(emu, host).filter(([p, r]) => r.VLAN_master_of !== 'OpaqueRef:NULL' && emu.db.has('VLAN', String(r.VLAN_master_of)) && networkUnder(emu, p) !== '');
  for (const [mp, mr] of pifsOf(emu, emu.master)) {
    if (mr.VLAN_master_of === 'OpaqueRef:NULL' || !emu.db.has('VLAN', String(mr.VLAN_master_of))) continue;
    const under = networkUnder(emu, mp);
    if (mine.some(([p, r]) => r.network === mr.network && Number(r.VLAN) === Number(mr.VLAN) && networkUnder(emu, p) === under)) continue;
    const base = pifOn(emu, host, under);
    if (base) createVlanRecords(emu, host, base[0], Number(mr.VLAN), String(mr.network), String(base[1].device));
  }
}

/** Xapi_host.sync_tunnels: the master's tunnels made on the host where it has a PIF on the transport network. */
export function syncTunnels(emu: Emulator, host: string): void {
  const mine = pifsOf(emu, host).filter(([, r]) => (r.tunnel_access_PIF_of as string[]).length > 0);
  for (const [, mr] of pifsOf(emu, emu.master)) {
    const [tunnel] = mr.tunnel_access_PIF_of as string[];
    if (!tunnel || mine.some(([, r]) => r.network === mr.network)) continue;
    const t = emu.db.get('tunnel', tunnel);
    const transportNet = String(emu.db.get('PIF', String(t?.transport_PIF))?.network ?? '');
    const base = pifOn(emu, host, transportNet);
    if (t && base) createTunnelRecords(emu, base[0], String(mr.network), host, String(t.protocol));
  }
}

registerProvider('host', {
  sync_vlans(call: Call, host: string) {
    recordOf(call.emu, 'host', host);
    syncVlans(call.emu, host);
  },

  sync_tunnels(call: Call, host: string) {
    recordOf(call.emu, 'host', host);
    syncTunnels(call.emu, host);
  },

  /** Xapi_host.sync_pif_currently_attached: the host's PIFs are attached when their bridge is up */
  sync_pif_currently_attached(call: Call, host: string, bridges: string[]) {
    const { emu } = call;
    recordOf(emu, 'host', host);
    for (const [p, r] of pifsOf(emu, host)) {
      const top = pifTopo(emu, p);
      if (top.some((e) => e.type.kind === 'sriov_logical')) continue;
      const bridge = emu.db.get('network', String(r.network))?.bridge;
      const attached = typeof bridge === 'string' && (bridges ?? []).includes(bridge);
      if (r.currently_attached !== attached) emu.db.update('PIF', p, { currently_attached: attached });
    }
  },

  /** a DHCP client on the host got a new lease: the addresses and host.address are read again */
  signal_networking_change(call: Call) {
    onDom0NetworkingChange(call.emu, call.host);
  },

  management_reconfigure(call: Call, pif: string) {
    managementReconfigure(call.emu, pif);
  },

  /** for a member in emergency mode only, which no emulated host is in */
  local_management_reconfigure(_call: Call, _iface: string) {
    throw new XapiError('NOT_IN_EMERGENCY_MODE', []);
  },

  /** Xapi_host.management_disable, on the host that receives the call */
  management_disable(call: Call) {
    const { emu } = call;
    assertNoHa(emu);
    if (call.host !== emu.master) throw new XapiError('SLAVE_REQUIRES_MANAGEMENT_INTERFACE', []);
    setManagementBridge(emu, call.host, '');
  },

  get_management_interface(call: Call, host: string) {
    recordOf(call.emu, 'host', host);
    const pif = managementInterfaceOf(call.emu, host);
    // xapi lets its Not_found escape
    if (!pif) throw new XapiError('INTERNAL_ERROR', ['Not_found']);
    return pif;
  },
});
