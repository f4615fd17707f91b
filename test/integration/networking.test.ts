// Host networking with real clients on a pool of two hosts: PIFs (metrics, scan/introduce/forget,
// plug/unplug, IP configuration and its errors), NICs plugged, pulled and cut through the control
// API, VLANs across the pool, a bond that takes the management interface and gives it back, the
// management interface moved and disabled, and the events all this gives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { controlClient, ControlApiError, type ControlClient } from '../../server/control/client.js';
import { startServer, type RunningServer } from '../../server/app.js';
import { networkHasCarrier } from '../../server/api/network-links.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { MiB, memory, vifArgs, vmArgs } from './helpers/records.js';
import { scratch } from './helpers/cli.js';

const PASSWORD = 'networking';
let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let master: string;
let member: string;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, seed: 'networking' }));
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  master = srv.emu.master;
  member = (await x.call('host.get_all')).find((h: string) => h !== master);
});

afterAll(async () => {
  await srv?.close();
});

const fault = faultOf;

const controlFault = async (p: Promise<unknown>): Promise<ControlApiError> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof ControlApiError) return e;
    throw e;
  }
  throw new Error('expected a control API error');
};

/** The host's PIF of a device (not a VLAN). */
async function pifOf(host: string, device: string): Promise<string> {
  const pifs: string[] = await x.call('PIF.get_all_where', `field "host" = "${host}" and field "device" = "${device}" and field "VLAN" = "-1"`);
  expect(pifs, `${device} on ${host}`).toHaveLength(1);
  return pifs[0];
}

const metricsOf = async (pif: string) => x.call('PIF_metrics.get_record', await x.call('PIF.get_metrics', pif));

describe('PIF_metrics and the simulated NICs', () => {
  it('eth0 reports its card and link', async () => {
    const m = await metricsOf(await pifOf(master, 'eth0'));
    expect(m).toMatchObject({ carrier: true, speed: 1000, duplex: true, vendor_name: 'Intel Corporation' });
    const nics = await ctl.nics.list({ host: master });
    expect(nics.map((n) => n.device)).toEqual(['eth0']);
    expect(nics[0].pif).toBe(await pifOf(master, 'eth0'));
  });

  it('a NIC plugged into a host gets a PIF at PIF.scan, on the pool-wide network of its position', async () => {
    for (const host of [master, member]) {
      const nic = await ctl.nics.add({ host, device: 'eth1', speed: 10000 });
      expect(nic).toMatchObject({ device: 'eth1', carrier: true, pif: null });
      await x.call('PIF.scan', host);
    }
    const [a, b] = [await pifOf(master, 'eth1'), await pifOf(member, 'eth1')];
    const ra = await x.call('PIF.get_record', a);
    expect(ra).toMatchObject({ physical: true, currently_attached: false, management: false, ip_configuration_mode: 'None', VLAN: -1, properties: { gro: 'on' } });
    expect(ra.MAC).toBe((await ctl.nics.list({ host: master }))[1].MAC);
    // both on the same network: the one on bridge xenbr1
    const net = await x.call('network.get_record', ra.network);
    expect(net.bridge).toBe('xenbr1');
    expect(await x.call('PIF.get_network', b)).toBe(ra.network);
    expect(await metricsOf(a)).toMatchObject({ carrier: true, speed: 10000 });
    // a second scan finds nothing new
    const before = (await x.call('PIF.get_all')).length;
    await x.call('PIF.scan', member);
    expect(await x.call('PIF.get_all')).toHaveLength(before);
  });

  it('introduce checks the MAC and device', async () => {
    expect(await fault(x.call('PIF.introduce', member, 'zz:00', 'eth9', true))).toEqual(['MAC_INVALID', 'zz:00']);
    const mac = (await ctl.nics.list({ host: member }))[1].MAC;
    expect(await fault(x.call('PIF.introduce', member, mac, 'eth1', true))).toEqual(['DUPLICATE_PIF_DEVICE_NAME', 'eth1']);
    expect(await fault(x.call('PIF.introduce', member, '02:00:00:00:00:09', 'eth9', true)))
      .toEqual(['COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS', 'eth9', '02:00:00:00:00:09']);
  });

  it('forget then introduce gives the NIC a new PIF', async () => {
    await ctl.nics.add({ host: member, device: 'eth2', MAC: '02:aa:bb:cc:dd:02' });
    expect(await fault(x.call('PIF.introduce', member, '02:aa:bb:cc:dd:03', 'eth2', true)))
      .toEqual(['COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS', 'eth2', '02:aa:bb:cc:dd:03']);
    const pif = await x.call('PIF.introduce', member, '02:AA:BB:CC:DD:02', 'eth2', true);
    expect(await x.call('PIF.get_MAC', pif)).toBe('02:aa:bb:cc:dd:02');
    const metrics = await x.call('PIF.get_metrics', pif);
    await x.call('PIF.forget', pif);
    expect(await fault(x.call('PIF.get_record', pif))).toEqual(['HANDLE_INVALID', 'PIF', pif]);
    expect(await fault(x.call('PIF_metrics.get_record', metrics))).toEqual(['HANDLE_INVALID', 'PIF_metrics', metrics]);
    // the card is still there
    expect((await ctl.nics.list({ host: member })).map((n) => n.device)).toContain('eth2');
    expect(await fault(x.call('PIF.forget', await pifOf(member, 'eth0')))).toEqual(['PIF_IS_MANAGEMENT_INTERFACE', await pifOf(member, 'eth0')]);
  });

  it('a NIC pulled out or cut off: carrier false in PIF_metrics, and its network has no carrier', async () => {
    const pif = await pifOf(member, 'eth1');
    const net = await x.call('PIF.get_network', pif);
    await x.call('PIF.plug', pif);
    expect(networkHasCarrier(srv.emu, net, member)).toBe(true);
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: false });
    expect(await metricsOf(pif)).toMatchObject({ carrier: false, speed: 0 });
    expect(networkHasCarrier(srv.emu, net, member)).toBe(false);
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: true });
    expect(await metricsOf(pif)).toMatchObject({ carrier: true, speed: 10000 });
    expect(networkHasCarrier(srv.emu, net, member)).toBe(true);

    await ctl.nics.add({ host: member, device: 'eth3' });
    await x.call('PIF.scan', member);
    const eth3 = await pifOf(member, 'eth3');
    const pulled = await ctl.nics.remove({ host: member, device: 'eth3' });
    expect(pulled).toMatchObject({ device: 'eth3', pif: eth3, carrier: false });
    expect((await metricsOf(eth3)).carrier).toBe(false);
    // networkd cannot bring up a bridge on a card that is not there
    expect(await fault(x.call('PIF.plug', eth3))).toEqual(['PIF_CONFIGURATION_ERROR', eth3, '']);
    expect(await x.call('PIF.get_currently_attached', eth3)).toBe(false);
    // a private network (no PIF on the host) always carries traffic
    const priv = await x.call('network.create', { name_label: 'private', name_description: '', other_config: {}, tags: [] });
    expect(networkHasCarrier(srv.emu, priv, member)).toBe(true);
    // control API errors
    expect((await controlFault(ctl.nics.remove({ host: member, device: 'eth3' }))).code).toBe('NIC_NOT_FOUND');
    expect((await controlFault(ctl.nics.add({ host: member, device: 'eth1' }))).code).toBe('NIC_EXISTS');
    expect((await controlFault(ctl.nics.list({ host: 'no-such-host' }))).status).toBe(404);
  });
});

describe('PIF plug, unplug and IP configuration', () => {
  it('plug and unplug follow the rules of the management PIF and disallow_unplug', async () => {
    const mgmt = await pifOf(master, 'eth0');
    expect(await fault(x.call('PIF.unplug', mgmt))).toEqual(['PIF_IS_MANAGEMENT_INTERFACE', mgmt]);
    const eth1 = await pifOf(master, 'eth1');
    await x.call('PIF.plug', eth1);
    expect(await x.call('PIF.get_currently_attached', eth1)).toBe(true);
    await x.call('PIF.set_disallow_unplug', eth1, true);
    expect(await fault(x.call('PIF.unplug', eth1))).toEqual(['PIF_DOES_NOT_ALLOW_UNPLUG', eth1]);
    await x.call('PIF.set_disallow_unplug', eth1, false);
    await x.call('PIF.unplug', eth1);
    expect(await x.call('PIF.get_currently_attached', eth1)).toBe(false);
  });

  it('unplug is refused while a running VM on the host has a VIF plugged on the network', async () => {
    const eth1 = await pifOf(master, 'eth1');
    const net = await x.call('PIF.get_network', eth1);
    await x.call('PIF.plug', eth1);
    const vm = await x.call('VM.create', vmArgs('on xenbr1', { ...memory(64 * MiB), other_config: {} }));
    const vif = await x.call('VIF.create', vifArgs(vm, net));
    await x.call('VM.start_on', vm, master, false, false);
    expect(await fault(x.call('PIF.unplug', eth1))).toEqual(['VIF_IN_USE', net, vif]);
    // the member's PIF on the same network is not in use
    await x.call('PIF.unplug', await pifOf(member, 'eth1'));
    await x.call('VM.hard_shutdown', vm);
    await x.call('PIF.unplug', eth1);
    expect(await x.call('PIF.get_currently_attached', eth1)).toBe(false);
    await x.call('VM.destroy', vm);
  });

  it('reconfigure_ip checks addresses as xapi does', async () => {
    const eth1 = await pifOf(master, 'eth1');
    expect(await fault(x.call('PIF.reconfigure_ip', eth1, 'Static', '10.1.0.300', '255.255.0.0', '', ''))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'IP']);
    expect(await fault(x.call('PIF.reconfigure_ip', eth1, 'Static', '10.1.0.30', '', '', ''))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'netmask']);
    expect(await fault(x.call('PIF.reconfigure_ip', eth1, 'DHCP', '', '', 'gw', ''))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'gateway']);
    const mgmt = await pifOf(master, 'eth0');
    expect(await fault(x.call('PIF.reconfigure_ip', mgmt, 'None', '', '', '', ''))).toEqual(['PIF_IS_MANAGEMENT_INTERFACE', mgmt]);
    expect(await fault(x.call('PIF.set_primary_address_type', mgmt, 'IPv6'))).toEqual(['PIF_IS_MANAGEMENT_INTERFACE', mgmt]);
    expect(await fault(x.call('PIF.reconfigure_ipv6', eth1, 'Static', 'fd00::1', '', ''))).toEqual(['INVALID_CIDR_ADDRESS_SPECIFIED', 'IPv6']);
    expect(await fault(x.call('PIF.reconfigure_ipv6', eth1, 'Static', 'fd00::1/64', 'nope', ''))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'gateway']);
    // nothing changed
    expect(await x.call('PIF.get_record', eth1)).toMatchObject({ ip_configuration_mode: 'None', IP: '', ipv6_configuration_mode: 'None' });
  });

  it('Static keeps what it is given (DNS of its family); DHCP takes a lease of the network, the same each time', async () => {
    const eth1 = await pifOf(master, 'eth1');
    await x.call('PIF.reconfigure_ip', eth1, 'Static', '10.1.0.30', '255.255.0.0', '10.1.0.1', '10.1.0.1,fd00::53');
    expect(await x.call('PIF.get_record', eth1)).toMatchObject({ ip_configuration_mode: 'Static', IP: '10.1.0.30', netmask: '255.255.0.0', gateway: '10.1.0.1', DNS: '10.1.0.1' });
    await x.call('PIF.plug', eth1);
    await x.call('PIF.reconfigure_ip', eth1, 'DHCP', '', '', '', '');
    const leased = await x.call('PIF.get_record', eth1);
    expect(leased.ip_configuration_mode).toBe('DHCP');
    // xenbr1's subnet is 10.1.0.0/16
    expect(leased.IP).toMatch(/^10\.1\.\d+\.\d+$/);
    expect(leased.netmask).toBe('255.255.0.0');
    await x.call('PIF.reconfigure_ip', eth1, 'DHCP', '', '', '', '');
    expect(await x.call('PIF.get_IP', eth1)).toBe(leased.IP);
    // the member's eth1 gets another address on the same network
    const other = await pifOf(member, 'eth1');
    await x.call('PIF.reconfigure_ip', other, 'DHCP', '', '', '', '');
    // an interface that is down asks for no lease
    expect(await x.call('PIF.get_IP', other)).toBe('');
    await x.call('PIF.plug', other);
    expect(await x.call('PIF.get_IP', other)).toMatch(/^10\.1\./);
    expect(await x.call('PIF.get_IP', other)).not.toBe(leased.IP);
    await x.call('PIF.reconfigure_ipv6', eth1, 'Autoconf', '', '', '');
    const v6: string[] = await x.call('PIF.get_IPv6', eth1);
    expect(v6).toHaveLength(1);
    expect(v6[0]).toMatch(/^fd[0-9a-f]{2}:[0-9a-f:]+\/64$/);
    await x.call('PIF.reconfigure_ip', eth1, 'None', '', '', '', '');
    expect(await x.call('PIF.get_record', eth1)).toMatchObject({ ip_configuration_mode: 'None', IP: '' });
  });

  it('set_property takes gro on/off on physical PIFs only', async () => {
    const eth1 = await pifOf(master, 'eth1');
    expect(await fault(x.call('PIF.set_property', eth1, 'mtu', '9000'))).toEqual(['INVALID_VALUE', 'properties', 'mtu = 9000']);
    expect(await fault(x.call('PIF.set_property', eth1, 'gro', 'maybe'))).toEqual(['INVALID_VALUE', 'properties', 'gro = maybe']);
    await x.call('PIF.set_property', eth1, 'gro', 'off');
    expect(await x.call('PIF.get_properties', eth1)).toEqual({ gro: 'off' });
    await x.call('PIF.set_property', eth1, 'gro', 'on');
  });
});

describe('VLANs', () => {
  it('create_VLAN_from_PIF makes a tagged PIF on every host, sharing the base PIF metrics', async () => {
    const net = await x.call('network.create', { name_label: 'vlan 42', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const eth0 = await pifOf(master, 'eth0');
    const pifs: string[] = await x.call('pool.create_VLAN_from_PIF', eth0, net, 42);
    expect(pifs).toHaveLength(2);
    for (const host of [master, member]) {
      const base = await pifOf(host, 'eth0');
      const pif = pifs.find((p) => srv.emu.db.get('PIF', p)?.host === host)!;
      const rec = await x.call('PIF.get_record', pif);
      expect(rec).toMatchObject({ device: 'eth0', VLAN: 42, physical: false, currently_attached: true, MAC: 'fe:ff:ff:ff:ff:ff', network: net });
      expect(rec.metrics).toBe(await x.call('PIF.get_metrics', base));
      const vlan = await x.call('VLAN.get_record', rec.VLAN_master_of);
      expect(vlan).toMatchObject({ tagged_PIF: base, untagged_PIF: pif, tag: 42 });
      expect(await x.call('PIF.get_VLAN_slave_of', base)).toContain(rec.VLAN_master_of);
    }
    // the checks
    expect(await fault(x.call('VLAN.create', eth0, 42, net))).toEqual(['NETWORK_ALREADY_CONNECTED', master, pifs.find((p) => srv.emu.db.get('PIF', p)?.host === master)]);
    const net2 = await x.call('network.create', { name_label: 'vlan x', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    expect(await fault(x.call('VLAN.create', eth0, 42, net2))).toEqual(['PIF_VLAN_EXISTS', 'eth0']);
    expect(await fault(x.call('VLAN.create', eth0, 4095, net2))).toEqual(['VLAN_TAG_INVALID', '4095']);
    expect(await fault(x.call('VLAN.create', eth0, -1, net2))).toEqual(['VLAN_TAG_INVALID', '-1']);
    const onMaster = pifs.find((p) => srv.emu.db.get('PIF', p)?.host === master)!;
    expect(await fault(x.call('VLAN.create', onMaster, 7, net2))).toEqual(['PIF_IS_VLAN', onMaster]);
    expect(await fault(x.call('PIF.destroy', eth0))).toEqual(['PIF_IS_PHYSICAL']);
    expect(await fault(x.call('PIF.forget', eth0))).toEqual(['PIF_IS_MANAGEMENT_INTERFACE', eth0]);
    // a NIC without carrier leaves the VLAN without carrier too
    const eth1 = await pifOf(member, 'eth1');
    const net3 = await x.call('network.create', { name_label: 'vlan 5 on eth1', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const v5 = await x.call('VLAN.create', eth1, 5, net3);
    expect(networkHasCarrier(srv.emu, net3, member)).toBe(true);
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: false });
    expect(networkHasCarrier(srv.emu, net3, member)).toBe(false);
    expect((await metricsOf(await x.call('VLAN.get_untagged_PIF', v5))).carrier).toBe(false);
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: true });
    await x.call('VLAN.destroy', v5);
    // destroyed: the tagged PIF and its metrics stay
    for (const p of pifs) await x.call('PIF.destroy', p);
    expect(await x.call('PIF.get_VLAN_slave_of', eth0)).toEqual([]);
    expect(await x.call('VLAN.get_all')).toEqual([]);
    expect((await metricsOf(eth0)).carrier).toBe(true);
  });

  it('pool.create_VLAN by device, and a failure on one host undoes the others', async () => {
    const net = await x.call('network.create', { name_label: 'vlan 43', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const pifs: string[] = await x.call('pool.create_VLAN', 'eth1', net, 43);
    expect(pifs).toHaveLength(2);
    expect(await Promise.all(pifs.map((p) => x.call('PIF.get_VLAN', p)))).toEqual([43, 43]);
    const net2 = await x.call('network.create', { name_label: 'vlan 44', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    // eth2 is on the member only (its PIF was forgotten): no PIF of that device on the master
    await x.call('PIF.scan', member);
    const before = (await x.call('PIF.get_all')).length;
    expect(await fault(x.call('pool.create_VLAN', 'eth2', net2, 44))).toEqual(['INVALID_VALUE', 'device', 'eth2']);
    expect(await x.call('PIF.get_all')).toHaveLength(before);
    for (const p of pifs) await x.call('VLAN.destroy', await x.call('PIF.get_VLAN_master_of', p));
  });
});

describe('a member catching up with the master', () => {
  it('host.sync_vlans and sync_tunnels make the master\'s VLANs and tunnels on the member', async () => {
    const net = await x.call('network.create', { name_label: 'vlan 77', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const vlan = await x.call('VLAN.create', await pifOf(master, 'eth0'), 77, net);
    await x.call('host.sync_vlans', member);
    const [pif] = await x.call('PIF.get_all_where', `field "host" = "${member}" and field "VLAN" = "77"`);
    expect(await x.call('PIF.get_record', pif)).toMatchObject({ network: net, device: 'eth0', currently_attached: false });
    const tagged = await x.call('VLAN.get_tagged_PIF', await x.call('PIF.get_VLAN_master_of', pif));
    expect(tagged).toBe(await pifOf(member, 'eth0'));
    // once is enough
    await x.call('host.sync_vlans', member);
    expect(await x.call('PIF.get_all_where', `field "host" = "${member}" and field "VLAN" = "77"`)).toHaveLength(1);
    // the bridges a host reports set its PIFs' currently_attached
    const bridge = await x.call('network.get_bridge', net);
    expect(bridge).toMatch(/^xapi\d+$/);
    await x.call('host.sync_pif_currently_attached', member, ['xenbr0', bridge]);
    expect(await x.call('PIF.get_currently_attached', pif)).toBe(true);
    await x.call('VLAN.destroy', await x.call('PIF.get_VLAN_master_of', pif));
    await x.call('VLAN.destroy', vlan);
  });
});

describe('a member that is down', () => {
  it('answers HOST_OFFLINE; create_VLAN_from_PIF leaves it out, create_VLAN fails and undoes', async () => {
    const rule = await ctl.faults.create({ match: { host: member }, effect: { host_down: true } });
    try {
      const eth1 = await pifOf(member, 'eth1');
      expect(await fault(x.call('PIF.plug', eth1))).toEqual(['HOST_OFFLINE', member]);
      expect(await fault(x.call('PIF.reconfigure_ip', eth1, 'DHCP', '', '', '', ''))).toEqual(['HOST_OFFLINE', member]);
      expect(await fault(x.call('PIF.scan', member))).toEqual(['HOST_OFFLINE', member]);
      const net = await x.call('network.create', { name_label: 'vlan 88', name_description: '', MTU: 1500, other_config: {}, tags: [] });
      const before = (await x.call('PIF.get_all')).length;
      expect(await fault(x.call('pool.create_VLAN', 'eth0', net, 88))).toEqual(['HOST_OFFLINE', member]);
      expect(await x.call('PIF.get_all')).toHaveLength(before);
      const made: string[] = await x.call('pool.create_VLAN_from_PIF', await pifOf(master, 'eth0'), net, 88);
      expect(made.map((p) => srv.emu.db.get('PIF', p)?.host)).toEqual([master]);
      await x.call('PIF.destroy', made[0]);
    } finally {
      await ctl.faults.delete({ id: rule.id });
    }
  });
});

describe('bonds', () => {
  it('a bond of the management NIC takes the management interface and its address, and gives them back', async () => {
    const eth0 = await pifOf(member, 'eth0');
    const eth1 = await pifOf(member, 'eth1');
    await x.call('PIF.reconfigure_ip', eth1, 'None', '', '', '', '');
    const address = await x.call('host.get_address', member);
    const ip = await x.call('PIF.get_IP', eth0);
    const net = await x.call('network.create', { name_label: 'bond', name_description: '', MTU: 1500, other_config: {}, tags: [] });

    expect(await fault(x.call('Bond.create', net, [], '', 'lacp', {}))).toEqual(['PIF_BOND_NEEDS_MORE_MEMBERS']);
    expect(await fault(x.call('Bond.create', net, [eth0, eth1], 'nope', 'lacp', {}))).toEqual(['MAC_INVALID', 'nope']);
    expect(await fault(x.call('Bond.create', net, [eth0, eth1], '', 'lacp', { 'lacp-time': 'sometimes' }))).toEqual(['INVALID_VALUE', 'properties', 'lacp-time = sometimes']);
    expect(await fault(x.call('Bond.create', net, [eth0, eth1], '', 'balance-slb', { 'lacp-time': 'fast' }))).toEqual(['INVALID_VALUE', 'properties', 'lacp-time = fast']);
    expect(await fault(x.call('Bond.create', net, [eth0, await pifOf(master, 'eth1')], '', 'lacp', {}))).toEqual(['PIF_CANNOT_BOND_CROSS_HOST']);

    const bond = await x.call('Bond.create', net, [eth0, eth1], '', 'lacp', { 'lacp-time': 'fast' });
    const b = await x.call('Bond.get_record', bond);
    expect(b).toMatchObject({ mode: 'lacp', primary_slave: eth0, links_up: 2, auto_update_mac: true });
    expect(b.properties).toEqual({ 'lacp-time': 'fast', hashing_algorithm: 'tcpudp_ports', 'lacp-fallback-ab': 'true' });
    expect([...b.slaves].sort()).toEqual([eth0, eth1].sort());
    const m = await x.call('PIF.get_record', b.master);
    expect(m).toMatchObject({
      device: 'bond0', network: net, management: true, currently_attached: true, ip_configuration_mode: 'Static', IP: ip,
      MAC: await x.call('PIF.get_MAC', eth0), physical: false, MTU: 1500,
    });
    expect(await x.call('PIF.get_record', eth0)).toMatchObject({ management: false, currently_attached: false, ip_configuration_mode: 'None', IP: '', bond_slave_of: bond });
    expect(await x.call('host.get_management_interface', member)).toBe(b.master);
    expect(await x.call('host.get_address', member)).toBe(address);
    expect(await fault(x.call('PIF.plug', eth1))).toEqual(['CANNOT_PLUG_BOND_SLAVE', eth1]);
    expect(await fault(x.call('Bond.create', net, [eth1], '', 'lacp', {}))).toEqual(['NETWORK_ALREADY_CONNECTED', member, b.master]);
    expect((await metricsOf(b.master))).toMatchObject({ carrier: true, speed: 11000 });

    // links_up follows the members' carrier
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: false });
    expect(await x.call('Bond.get_links_up', bond)).toBe(1);
    expect(networkHasCarrier(srv.emu, net, member)).toBe(true);
    // networkd's alert
    const alerts = Object.values(await x.call('message.get_all_records_where', 'field "name" = "BOND_STATUS_CHANGED"')) as any[];
    expect(alerts.map((a) => [a.body, a.cls, a.obj_uuid, a.priority])).toEqual([
      ['The status of the eth0+eth1 bond changed: 1/2 up (was 2/2)', 'Host', await x.call('host.get_uuid', member), 3],
    ]);
    await ctl.nics.carrier({ host: member, device: 'eth0', carrier: false });
    expect(await x.call('Bond.get_links_up', bond)).toBe(0);
    expect(networkHasCarrier(srv.emu, net, member)).toBe(false);
    await ctl.nics.carrier({ host: member, device: 'eth0', carrier: true });
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: true });
    expect(await x.call('Bond.get_links_up', bond)).toBe(2);

    await x.call('Bond.set_property', bond, 'hashing_algorithm', 'src_mac');
    expect((await x.call('Bond.get_properties', bond)).hashing_algorithm).toBe('src_mac');
    await x.call('Bond.set_mode', bond, 'active-backup');
    expect(await x.call('Bond.get_record', bond)).toMatchObject({ mode: 'active-backup', properties: {} });
    expect(await fault(x.call('Bond.set_property', bond, 'hashing_algorithm', 'src_mac'))).toEqual(['INVALID_VALUE', 'properties', 'hashing_algorithm = src_mac']);
    await x.call('Bond.set_mode', bond, 'lacp');
    expect(await x.call('Bond.get_properties', bond)).toEqual({ hashing_algorithm: 'tcpudp_ports', 'lacp-time': 'slow', 'lacp-fallback-ab': 'true' });

    await x.call('Bond.destroy', bond);
    expect(await fault(x.call('Bond.get_record', bond))).toEqual(['HANDLE_INVALID', 'Bond', bond]);
    expect(await fault(x.call('PIF.get_record', b.master))).toEqual(['HANDLE_INVALID', 'PIF', b.master]);
    expect(await x.call('PIF.get_record', eth0)).toMatchObject({ management: true, currently_attached: true, ip_configuration_mode: 'Static', IP: ip, bond_slave_of: 'OpaqueRef:NULL' });
    expect(await x.call('PIF.get_record', eth1)).toMatchObject({ management: false, currently_attached: true, bond_slave_of: 'OpaqueRef:NULL' });
    expect(await x.call('host.get_management_interface', member)).toBe(eth0);
    expect(await x.call('host.get_address', member)).toBe(address);
  });

  it('a bond comes up on the members whose cards are there, and is destroyed with one pulled', async () => {
    const eth1 = await pifOf(member, 'eth1');
    const eth3 = await pifOf(member, 'eth3'); // its card was pulled
    const net = await x.call('network.create', { name_label: 'degraded', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const bond = await x.call('Bond.create', net, [eth1, eth3], '', 'active-backup', {});
    const master_ = await x.call('Bond.get_master', bond);
    expect(await x.call('Bond.get_links_up', bond)).toBe(1);
    expect(await x.call('PIF.get_currently_attached', master_)).toBe(true);
    expect(networkHasCarrier(srv.emu, net, member)).toBe(true);
    await x.call('Bond.destroy', bond);
    expect(await x.call('PIF.get_currently_attached', eth1)).toBe(true);
    expect(await x.call('PIF.get_currently_attached', eth3)).toBe(false);
  });

  it('a VLAN on a member moves onto the bond and back', async () => {
    const eth1 = await pifOf(master, 'eth1');
    const eth2 = await ctl.nics.add({ host: master, device: 'eth2' }).then(() => x.call('PIF.scan', master)).then(() => pifOf(master, 'eth2'));
    const vnet = await x.call('network.create', { name_label: 'vlan 9', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const vlan = await x.call('VLAN.create', eth1, 9, vnet);
    const untagged = await x.call('VLAN.get_untagged_PIF', vlan);
    await x.call('PIF.reconfigure_ip', untagged, 'Static', '192.168.9.2', '255.255.255.0', '', '');
    const net = await x.call('network.create', { name_label: 'bond 2', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const bond = await x.call('Bond.create', net, [eth1, eth2], '02:00:00:00:b0:01', 'balance-slb', {});
    const master_ = await x.call('Bond.get_master', bond);
    expect(await x.call('PIF.get_record', master_)).toMatchObject({ MAC: '02:00:00:00:b0:01', currently_attached: true });
    expect(await x.call('Bond.get_auto_update_mac', bond)).toBe(false);
    // the old VLAN is gone, a new one on the bond keeps the network, tag and address
    expect(await fault(x.call('VLAN.get_record', vlan))).toEqual(['HANDLE_INVALID', 'VLAN', vlan]);
    const [moved] = await x.call('PIF.get_VLAN_slave_of', master_);
    const mv = await x.call('PIF.get_record', await x.call('VLAN.get_untagged_PIF', moved));
    expect(mv).toMatchObject({ network: vnet, VLAN: 9, IP: '192.168.9.2', currently_attached: true, device: 'bond0' });
    await x.call('Bond.destroy', bond);
    const [back] = await x.call('PIF.get_VLAN_slave_of', eth1);
    expect(await x.call('PIF.get_record', await x.call('VLAN.get_untagged_PIF', back))).toMatchObject({ network: vnet, VLAN: 9, IP: '192.168.9.2', device: 'eth1' });
    await x.call('VLAN.destroy', back);
  });
});

describe('the management interface', () => {
  it('host.management_reconfigure moves it; host.address follows the new address', async () => {
    const eth0 = await pifOf(member, 'eth0');
    const eth1 = await pifOf(member, 'eth1');
    const address = await x.call('host.get_address', member);
    expect(await fault(x.call('host.management_reconfigure', eth1))).toEqual(['PIF_HAS_NO_NETWORK_CONFIGURATION', eth1]);
    await x.call('PIF.reconfigure_ip', eth1, 'Static', '10.1.0.77', '255.255.0.0', '10.1.0.1', '');
    await x.call('host.management_reconfigure', eth1);
    expect(await x.call('host.get_management_interface', member)).toBe(eth1);
    expect(await x.call('PIF.get_management', eth0)).toBe(false);
    expect(await x.call('host.get_address', member)).toBe('10.1.0.77');
    // the member still listens where it started, and answers there as the member it is
    const there = await fetch(new URL('/jsonrpc', srv.urls[1]), {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ method: 'session.login_with_password', params: ['root', PASSWORD, '1.0', 'test'], id: 1 }),
    }).then((r) => r.json());
    expect(there.error).toEqual(['HOST_IS_SLAVE', await x.call('host.get_address', master)]);
    // now eth0 may be unplugged, eth1 may not
    expect(await fault(x.call('PIF.unplug', eth1))).toEqual(['PIF_IS_MANAGEMENT_INTERFACE', eth1]);
    await x.call('host.management_reconfigure', eth0);
    expect(await x.call('host.get_address', member)).toBe(address);
    expect(await x.call('host.get_management_interface', member)).toBe(eth0);
  });

  it('pool.management_reconfigure needs a usable PIF on every host', async () => {
    const net = await x.call('network.create', { name_label: 'lonely', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    const some = (await x.call('host.get_all'))[0];
    expect(await fault(x.call('pool.management_reconfigure', net))).toEqual(['PIF_NOT_PRESENT', some, net]);
    const xenbr1 = await x.call('PIF.get_network', await pifOf(master, 'eth1'));
    await x.call('PIF.reconfigure_ip', await pifOf(member, 'eth1'), 'None', '', '', '', '');
    const eth1 = await pifOf(master, 'eth1');
    expect(await fault(x.call('pool.management_reconfigure', xenbr1))).toEqual(['PIF_HAS_NO_NETWORK_CONFIGURATION', expect.stringMatching(/^OpaqueRef:/)]);
    expect(await x.call('host.get_management_interface', master)).toBe(await pifOf(master, 'eth0'));
    void eth1;
  });

  it('management_disable on the master clears the flag; local_management_reconfigure needs emergency mode', async () => {
    expect(await fault(x.call('host.local_management_reconfigure', 'eth0'))).toEqual(['NOT_IN_EMERGENCY_MODE']);
    // a member keeps its management interface: it is how it reaches the master
    const rpc = (method: string, params: unknown[]) => fetch(new URL('/jsonrpc', srv.urls[1]), {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ method, params, id: 1 }),
    }).then((r) => r.json());
    const local = (await rpc('session.slave_local_login_with_password', ['root', PASSWORD])).result;
    expect(local).toMatch(/^OpaqueRef:/);
    expect((await rpc('host.management_disable', [local])).error).toEqual(['SLAVE_REQUIRES_MANAGEMENT_INTERFACE']);
    expect(await x.call('host.get_management_interface', member)).toBe(await pifOf(member, 'eth0'));
    await x.call('host.management_disable');
    expect(await fault(x.call('host.get_management_interface', master))).toEqual(['INTERNAL_ERROR', 'Not_found']);
    const eth0 = await pifOf(master, 'eth0');
    await x.call('host.management_reconfigure', eth0);
    expect(await x.call('host.get_management_interface', master)).toBe(eth0);
  });
});

describe('events', () => {
  it('event.from sees PIF and PIF_metrics changes', async () => {
    const eth2 = await pifOf(master, 'eth2');
    const { token } = await x.call('event.from', ['PIF', 'PIF_metrics'], '', 0);
    await ctl.nics.carrier({ host: master, device: 'eth2', carrier: false });
    await x.call('PIF.unplug', eth2);
    const r = await x.call('event.from', ['PIF', 'PIF_metrics'], token, 0);
    const seen = r.events.map((e: any) => `${e.class}/${e.operation}/${e.ref}`);
    expect(seen).toContain(`pif_metrics/mod/${await x.call('PIF.get_metrics', eth2)}`);
    expect(seen).toContain(`pif/mod/${eth2}`);
    const mod = r.events.find((e: any) => e.ref === eth2);
    expect(mod.snapshot.currently_attached).toBe(false);
    await ctl.nics.carrier({ host: master, device: 'eth2', carrier: true });
  });
});

describe('Python XenAPI', () => {
  it('sees the PIF errors and records as the SDK reports them', async () => {
    const script = `
import json, sys
sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')
import XenAPI
s = XenAPI.Session(sys.argv[1]); s.xenapi.login_with_password('root', sys.argv[2], '1.0', 'test')
out = {}
pif = s.xenapi.PIF.get_all_where('field "device" = "eth1" and field "host" = "%s"' % sys.argv[3])[0]
try:
    s.xenapi.PIF.reconfigure_ip(pif, 'Static', '300.1.1.1', '255.0.0.0', '', '')
except XenAPI.Failure as f:
    out['error'] = f.details
s.xenapi.PIF.reconfigure_ip(pif, 'Static', '10.1.0.99', '255.255.0.0', '', '')
rec = s.xenapi.PIF.get_record(pif)
out['IP'] = rec['IP']; out['mode'] = rec['ip_configuration_mode']; out['VLAN'] = rec['VLAN']
out['carrier'] = s.xenapi.PIF_metrics.get_carrier(rec['metrics'])
s.xenapi.logout()
print(json.dumps(out))
`;
    const { stdout } = await promisify(execFile)('/usr/bin/python3', ['-c', script, srv.urls[0], PASSWORD, master], { timeout: 20_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
    expect(JSON.parse(stdout)).toEqual({ error: ['INVALID_IP_ADDRESS_SPECIFIED', 'IP'], IP: '10.1.0.99', mode: 'Static', VLAN: '-1', carrier: true });
  });
});

describe('restart', () => {
  const { dir } = scratch('networking');
  it('keeps the NICs, bonds and VLANs', async () => {
    const data = dir();
    let s = await startServer({ port: 0, password: PASSWORD, authFailDelay: 0, dataDir: data, hosts: 1, closeGrace: 0 });
    try {
      const c = controlClient({ url: s.urls[0], username: 'root', password: PASSWORD });
      await c.nics.add({ host: s.emu.master, device: 'eth1', MAC: '02:00:00:00:00:11', carrier: false });
      await c.nics.add({ host: s.emu.master, device: 'eth2', MAC: '02:00:00:00:00:12' });
      const { connect } = await import('./helpers/jsonrpc.js');
      const y = await connect(s.urls[0], 'root', PASSWORD);
      await y.call('PIF.scan', s.emu.master);
      const [e1] = await y.call('PIF.get_all_where', 'field "device" = "eth1"');
      const [e2] = await y.call('PIF.get_all_where', 'field "device" = "eth2"');
      const net = await y.call('network.create', { name_label: 'b', name_description: '', MTU: 1500, other_config: {}, tags: [] });
      const bond = await y.call('Bond.create', net, [e1, e2], '', 'active-backup', {});
      expect(await y.call('Bond.get_links_up', bond)).toBe(1);
      // a kill between networkd's table and the database: the metrics still say the cable is in
      const m1 = await y.call('PIF.get_metrics', e1);
      s.emu.db.update('PIF_metrics', m1, { carrier: true, speed: 1000 });
      s.emu.db.update('Bond', bond, { links_up: 2 });
      await s.close();
      s = await startServer({ port: 0, password: PASSWORD, authFailDelay: 0, dataDir: data, hosts: 1, closeGrace: 0 });
      const z = await connect(s.urls[0], 'root', PASSWORD);
      // networkd reads its links again at start
      expect(await z.call('Bond.get_record', bond)).toMatchObject({ mode: 'active-backup', links_up: 1 });
      expect(await z.call('PIF_metrics.get_record', m1)).toMatchObject({ carrier: false, speed: 0 });
      const nics = await controlClient({ url: s.urls[0], username: 'root', password: PASSWORD }).nics.list({ host: s.emu.master });
      expect(nics.map((n) => [n.device, n.carrier])).toEqual([['eth0', true], ['eth1', false], ['eth2', true]]);
    } finally {
      await s.close();
    }
  });
});
