// tunnel: a GRE or VxLAN tunnel of Open vSwitch over a transport PIF (xapi_tunnel.ml): an access
// PIF on the tunnel's network, sharing the transport PIF's metrics, plugged at once (which brings
// the transport PIF up). Calls for a member that is down fail with HOST_OFFLINE.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { NULL_REF } from '../../storage/database.js';
import { recordOf } from './generic.js';
import { assertHostReachable, assertNetworkManaged, assertNoOtherLocalPifs, assertPifManaged, isRef, pifTopo } from './pif-helpers.js';
import { randomMac } from './VIF.js';
import { plugPif, unplugPif } from './PIF.js';

function chooseTunnelDevice(emu: Emulator, host: string): string {
  const devices = new Set<string>();
  for (const p of (emu.db.get('host', host)?.PIFs as string[]) ?? []) {
    const r = emu.db.get('PIF', p);
    if (r && (r.tunnel_access_PIF_of as string[]).length > 0) devices.add(String(r.device));
  }
  let n = 0;
  while (devices.has(`tunnel${n}`)) n++;
  return `tunnel${n}`;
}

/** Xapi_tunnel.create_internal: the tunnel and its access PIF (not plugged). */
export function createTunnelRecords(emu: Emulator, transport: string, network: string, host: string, protocol: string): { tunnel: string; access: string } {
  const t = recordOf(emu, 'PIF', transport);
  const tunnel = emu.ids.ref();
  const access = emu.ids.ref();
  emu.db.create('PIF', access, {
    uuid: emu.ids.uuid(), device: chooseTunnelDevice(emu, host), network, host, MAC: randomMac(emu), MTU: -1, VLAN: -1, metrics: t.metrics,
    physical: false, currently_attached: false, igmp_snooping_status: 'unknown', ip_configuration_mode: 'None', IP: '', netmask: '',
    gateway: '', DNS: '', bond_slave_of: NULL_REF, VLAN_master_of: NULL_REF, management: false, other_config: {}, disallow_unplug: false,
    ipv6_configuration_mode: 'None', IPv6: [''], ipv6_gateway: '', primary_address_type: t.primary_address_type, managed: true,
    properties: {}, capabilities: [], PCI: NULL_REF,
  });
  emu.db.create('tunnel', tunnel, { uuid: emu.ids.uuid(), access_PIF: access, transport_PIF: transport, status: { active: 'false' }, other_config: {}, protocol });
  return { tunnel, access };
}

function create(call: Call, transport: string, network: string, protocol = 'gre'): string {
  const { emu } = call;
  assertNetworkManaged(emu, network);
  const t = recordOf(emu, 'PIF', transport);
  const host = String(t.host);
  assertHostReachable(emu, host);
  assertNoOtherLocalPifs(emu, host, network);
  assertPifManaged(t, transport);
  // tunnel_is_allowed_on_pif
  const topo = pifTopo(emu, transport);
  const root = topo[topo.length - 1];
  if (root.type.kind === 'physical' && isRef(root.rec.bond_slave_of)) throw new XapiError('CANNOT_ADD_TUNNEL_TO_BOND_SLAVE', [transport]);
  if (topo[0].type.kind === 'tunnel_access') throw new XapiError('IS_TUNNEL_ACCESS_PIF', [transport]);
  if (topo[0].type.kind === 'sriov_logical') throw new XapiError('CANNOT_ADD_TUNNEL_TO_SRIOV_LOGICAL', [transport]);
  if (topo[0].type.kind === 'vlan_untagged' && topo[1]?.type.kind === 'sriov_logical') throw new XapiError('CANNOT_ADD_TUNNEL_TO_VLAN_ON_SRIOV_LOGICAL', [transport]);
  const [first] = (emu.db.get('network', network)!.PIFs as string[]) ?? [];
  if (first && pifTopo(emu, first).some((e) => e.type.kind === 'sriov_logical')) throw new XapiError('NETWORK_INCOMPATIBLE_WITH_TUNNEL', [network]);
  for (const [, row] of emu.db.table('host')) {
    if ((row.rec.software_version as Record<string, string>)?.network_backend !== 'openvswitch') throw new XapiError('OPENVSWITCH_NOT_ACTIVE', []);
  }
  // plugging the access PIF needs a configured transport PIF: refused before any record is made
  if (t.ip_configuration_mode === 'None') throw new XapiError('TRANSPORT_PIF_NOT_CONFIGURED', [transport]);
  const { tunnel, access } = createTunnelRecords(emu, transport, network, host, protocol);
  plugPif(emu, access);
  return tunnel;
}

registerProvider('tunnel', {
  create: (call, transport_PIF: string, network: string, protocol?: string) => create(call, transport_PIF, network, protocol ?? 'gre'),

  destroy(call, self: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'tunnel', self);
    const access = String(rec.access_PIF);
    const a = emu.db.get('PIF', access);
    if (a) {
      assertHostReachable(emu, String(a.host));
      unplugPif(emu, access);
      emu.db.destroy('PIF', access);
    }
    emu.db.destroy('tunnel', self);
  },
});
