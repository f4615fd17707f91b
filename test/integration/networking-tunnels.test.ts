// Tunnels and SR-IOV networks with the JSON-RPC client: a GRE/VxLAN tunnel over a configured
// transport PIF (and its checks), a tunnel that follows its transport NIC into a bond, and SR-IOV
// on a card the control API declares capable, with its capacity.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import type { RunningServer } from '../../server/app.js';
import { networkHasCarrier } from '../../server/api/network-links.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';

const PASSWORD = 'tunnels';
let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let host: string;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { closeGrace: 0, seed: 'tunnels' }));
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  host = srv.emu.master;
  await ctl.nics.add({ host, device: 'eth1' });
  await ctl.nics.add({ host, device: 'eth2' });
  await ctl.nics.add({ host, device: 'eth3', sriov_vfs: 8 });
  await ctl.nics.add({ host, device: 'eth4', sriov_vfs: 4 });
  await x.call('PIF.scan', host);
});

afterAll(async () => {
  await srv?.close();
});

const fault = faultOf;

const pifOf = async (device: string): Promise<string> =>
  (await x.call('PIF.get_all_where', `field "device" = "${device}" and field "physical" = "true"`))[0];
const newNetwork = (name: string) => x.call('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: {}, tags: [] });

describe('tunnels', () => {
  it('need a configured transport PIF; the access PIF brings it up', async () => {
    const eth1 = await pifOf('eth1');
    const net = await newNetwork('gre');
    expect(await fault(x.call('tunnel.create', eth1, net, 'gre'))).toEqual(['TRANSPORT_PIF_NOT_CONFIGURED', eth1]);
    expect(await x.call('tunnel.get_all')).toEqual([]);
    await x.call('PIF.reconfigure_ip', eth1, 'Static', '10.1.0.5', '255.255.0.0', '', '');
    const tunnel = await x.call('tunnel.create', eth1, net, 'vxlan');
    const t = await x.call('tunnel.get_record', tunnel);
    expect(t).toMatchObject({ transport_PIF: eth1, protocol: 'vxlan', status: { active: 'false' } });
    const access = await x.call('PIF.get_record', t.access_PIF);
    expect(access).toMatchObject({ device: 'tunnel0', network: net, currently_attached: true, physical: false, metrics: await x.call('PIF.get_metrics', eth1) });
    expect(await x.call('PIF.get_currently_attached', eth1)).toBe(true);
    expect(networkHasCarrier(srv.emu, net, host)).toBe(true);
    expect(await fault(x.call('tunnel.create', t.access_PIF, await newNetwork('nested'), 'gre'))).toEqual(['IS_TUNNEL_ACCESS_PIF', t.access_PIF]);
    expect(await fault(x.call('tunnel.create', eth1, net, 'gre'))).toEqual(['NETWORK_ALREADY_CONNECTED', host, t.access_PIF]);
    expect(await fault(x.call('PIF.forget', eth1))).toEqual(['PIF_TUNNEL_STILL_EXISTS', eth1]);
    // unplugging the transport PIF takes the access PIF down with it
    await x.call('PIF.unplug', eth1);
    expect(await x.call('PIF.get_currently_attached', t.access_PIF)).toBe(false);
    expect(networkHasCarrier(srv.emu, net, host)).toBe(false);
    await x.call('PIF.plug', t.access_PIF);
    expect(await x.call('PIF.get_currently_attached', eth1)).toBe(true);
  });

  it('follow their transport NIC into a bond and back', async () => {
    const eth1 = await pifOf('eth1');
    const eth2 = await pifOf('eth2');
    const [tunnel] = await x.call('tunnel.get_all');
    const net = await x.call('PIF.get_network', await x.call('tunnel.get_access_PIF', tunnel));
    const bond = await x.call('Bond.create', await newNetwork('bond'), [eth1, eth2], '', 'active-backup', {});
    const master = await x.call('Bond.get_master', bond);
    expect(await x.call('PIF.get_IP', master)).toBe('10.1.0.5');
    const [moved] = await x.call('PIF.get_tunnel_transport_PIF_of', master);
    expect(await x.call('tunnel.get_protocol', moved)).toBe('vxlan');
    expect(await x.call('PIF.get_record', await x.call('tunnel.get_access_PIF', moved))).toMatchObject({ network: net, currently_attached: true });
    expect(await fault(x.call('tunnel.get_record', tunnel))).toEqual(['HANDLE_INVALID', 'tunnel', tunnel]);
    expect(await fault(x.call('tunnel.create', eth2, await newNetwork('on member'), 'gre'))).toEqual(['CANNOT_ADD_TUNNEL_TO_BOND_SLAVE', eth2]);
    await x.call('Bond.destroy', bond);
    const [back] = await x.call('PIF.get_tunnel_transport_PIF_of', eth1);
    const access = await x.call('tunnel.get_access_PIF', back);
    await x.call('tunnel.destroy', back);
    expect(await fault(x.call('PIF.get_record', access))).toEqual(['HANDLE_INVALID', 'PIF', access]);
    expect(await x.call('tunnel.get_all')).toEqual([]);
  });
});

describe('SR-IOV', () => {
  it('is enabled on capable cards only, with their virtual functions as capacity', async () => {
    const eth1 = await pifOf('eth1');
    const eth3 = await pifOf('eth3');
    expect(await x.call('PIF.get_capabilities', eth3)).toEqual(['sriov']);
    const net = await newNetwork('sriov');
    expect(await fault(x.call('network_sriov.create', eth1, net))).toEqual(['PIF_IS_NOT_SRIOV_CAPABLE', eth1]);
    const sriov = await x.call('network_sriov.create', eth3, net);
    const rec = await x.call('network_sriov.get_record', sriov);
    expect(rec).toMatchObject({ physical_PIF: eth3, configuration_mode: 'sysfs', requires_reboot: false });
    expect(await x.call('PIF.get_record', rec.logical_PIF)).toMatchObject({ network: net, currently_attached: true, device: 'eth3', physical: false });
    expect(await x.call('network_sriov.get_remaining_capacity', sriov)).toBe(8);
    expect(await fault(x.call('network_sriov.create', eth3, await newNetwork('again')))).toEqual(['NETWORK_SRIOV_ALREADY_ENABLED', eth3]);
    expect(await fault(x.call('network_sriov.create', rec.logical_PIF, await newNetwork('logical')))).toEqual(['PIF_IS_NOT_PHYSICAL', rec.logical_PIF]);
    // a network has one PIF per host, checked after the card itself
    expect(await fault(x.call('network_sriov.create', await pifOf('eth4'), await x.call('PIF.get_network', eth1))))
      .toEqual(['NETWORK_ALREADY_CONNECTED', host, eth1]);
    expect(await fault(x.call('PIF.forget', eth3))).toEqual(['PIF_SRIOV_STILL_EXISTS', eth3]);
    expect(await fault(x.call('Bond.create', net, [eth1], '', 'active-backup', {}))).toEqual(['NETWORK_ALREADY_CONNECTED', host, rec.logical_PIF]);
    await ctl.nics.carrier({ host, device: 'eth3', carrier: false });
    expect(networkHasCarrier(srv.emu, net, host)).toBe(false);
    await ctl.nics.carrier({ host, device: 'eth3', carrier: true });
    await x.call('network_sriov.destroy', sriov);
    expect(await fault(x.call('PIF.get_record', rec.logical_PIF))).toEqual(['HANDLE_INVALID', 'PIF', rec.logical_PIF]);
    expect(await x.call('PIF.get_sriov_physical_PIF_of', eth3)).toEqual([]);
    expect((await x.call('PIF_metrics.get_record', await x.call('PIF.get_metrics', eth3))).carrier).toBe(true);
  });
});

describe('a pool reset', () => {
  it('gives back the cards the initial pool has', async () => {
    expect((await ctl.nics.list({ host })).length).toBe(5);
    await ctl.snapshots.reset({});
    const nics = await ctl.nics.list({ host });
    expect(nics.map((n) => [n.device, n.carrier, n.pif !== null])).toEqual([['eth0', true, true]]);
    // scanning finds nothing more, and the card's metrics are as they were
    const y = await import('./helpers/jsonrpc.js').then((m) => m.connect(srv.urls[0], 'root', PASSWORD));
    await y.call('PIF.scan', host);
    expect(await y.call('PIF.get_all')).toHaveLength(1);
    expect(await y.call('PIF_metrics.get_record', await y.call('PIF.get_metrics', (await y.call('PIF.get_all'))[0]))).toMatchObject({ carrier: true, speed: 1000 });
  });
});
