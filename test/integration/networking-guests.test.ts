// What guests see of the host's network, with real clients on a pool of two hosts: a running
// guest's address follows its network's carrier as networkd reads it (a NIC pulled under a VLAN,
// the members of a bond going down one by one) and comes back with it; network.attach brings
// PIFs up through networkd; a VM starts only on a host that can attach its networks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import type { RunningServer } from '../../server/app.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { MiB, NULL, memory, vifArgs, vmArgs } from './helpers/records.js';
import { parseCidr, parseIpv4 } from '../../server/guest/dhcp.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';

const PASSWORD = 'networking-guests';
let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let master: string;
let member: string;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, seed: 'networking-guests' }));
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  master = srv.emu.master;
  member = (await x.call('host.get_all')).find((h: string) => h !== master);
});

afterAll(async () => {
  await srv?.close();
});

const fault = faultOf;

const inSubnet = (ip: string | undefined, cidr: string): boolean => {
  const s = parseCidr(cidr)!;
  const n = ip ? parseIpv4(ip) : null;
  return n !== null && n >>> (32 - s.prefix) === s.base >>> (32 - s.prefix);
};

const newNetwork = (name: string, subnet: string): Promise<string> =>
  x.call('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: { 'xapi-emu-dhcp-subnet': subnet }, tags: [] });

/** The host's PIF of a device (not a VLAN). */
async function pifOf(host: string, device: string): Promise<string> {
  const pifs: string[] = await x.call('PIF.get_all_where', `field "host" = "${host}" and field "device" = "${device}" and field "VLAN" = "-1"`);
  expect(pifs, `${device} on ${host}`).toHaveLength(1);
  return pifs[0];
}

/** The guest agent's networks map (empty before it reports). */
async function networksOf(vm: string): Promise<Record<string, string>> {
  const gm: string = await x.call('VM.get_guest_metrics', vm);
  return gm === NULL ? {} : x.call('VM_guest_metrics.get_networks', gm);
}

/** Waits, as a client does with event.from, until `check` holds. */
async function until<T>(what: string, check: () => Promise<T | undefined | null | false>): Promise<T> {
  let token = '';
  for (let i = 0; i < 50; i++) {
    const v = await check();
    if (v) return v;
    token = (await x.call('event.from', ['vm', 'vm_guest_metrics'], token, 5)).token;
  }
  throw new Error(`never: ${what}`);
}

/** The bridge xenopsd on `host` has the backend of the VM's VIF 0 on. */
async function backendBridge(vm: string, host: string): Promise<string | undefined> {
  const uuid: string = await x.call('VM.get_uuid', vm);
  const d = xenopsOf(srv.emu, host).exportState().domains.find((e) => e.id === uuid);
  return d?.vifs.find((v) => v.spec.id === '0')?.spec.bridge;
}

/** A VM whose guest runs the agent, with a NIC on `network`, started on `host`; its address. */
async function bootedVm(name: string, network: string, host: string): Promise<{ vm: string; ip: string }> {
  const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(64 * MiB), other_config: {} }));
  await x.call('VIF.create', vifArgs(vm, network));
  await x.call('VM.start_on', vm, host, false, false);
  const ip = await until(`${name} has an address`, async () => (await networksOf(vm))['0/ip']);
  return { vm, ip };
}

describe('a guest follows the carrier under its network', () => {
  it('a NIC pulled under a VLAN takes the address away; plugged back, it returns', async () => {
    for (const h of [master, member]) {
      await ctl.nics.add({ host: h, device: 'eth1' });
      await x.call('PIF.scan', h);
    }
    const mac = (await ctl.nics.list({ host: master })).find((n) => n.device === 'eth1')!.MAC;
    const net = await newNetwork('vlan 30', '10.30.0.0/24');
    await x.call('pool.create_VLAN', 'eth1', net, 30);
    const { vm, ip } = await bootedVm('on-vlan', net, master);
    expect(inSubnet(ip, '10.30.0.0/24')).toBe(true);

    await ctl.nics.remove({ host: master, device: 'eth1' });
    expect((await networksOf(vm))['0/ip']).toBeUndefined();
    await ctl.nics.add({ host: master, device: 'eth1', MAC: mac });
    expect((await networksOf(vm))['0/ip']).toBe(ip);

    // the cable alone, too
    await ctl.nics.carrier({ host: master, device: 'eth1', carrier: false });
    expect((await networksOf(vm))['0/ip']).toBeUndefined();
    await ctl.nics.carrier({ host: master, device: 'eth1', carrier: true });
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    // the member's cable is not the master's
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: false });
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    await ctl.nics.carrier({ host: member, device: 'eth1', carrier: true });
    await x.call('VM.hard_shutdown', vm);
  });

  it('a bond keeps the link while one member has carrier, loses it with both', async () => {
    await ctl.nics.add({ host: master, device: 'eth2' });
    await ctl.nics.add({ host: master, device: 'eth3' });
    await x.call('PIF.scan', master);
    const net = await newNetwork('bond', '10.31.0.0/24');
    const bond: string = await x.call('Bond.create', net, [await pifOf(master, 'eth2'), await pifOf(master, 'eth3')], '', 'active-backup', {});
    const { vm, ip } = await bootedVm('on-bond', net, master);
    expect(inSubnet(ip, '10.31.0.0/24')).toBe(true);

    await ctl.nics.carrier({ host: master, device: 'eth2', carrier: false });
    expect(await x.call('Bond.get_links_up', bond)).toBe(1);
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    await ctl.nics.carrier({ host: master, device: 'eth3', carrier: false });
    expect(await x.call('Bond.get_links_up', bond)).toBe(0);
    expect((await networksOf(vm))['0/ip']).toBeUndefined();
    await ctl.nics.carrier({ host: master, device: 'eth2', carrier: true });
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    await ctl.nics.carrier({ host: master, device: 'eth3', carrier: true });
    await x.call('VM.hard_shutdown', vm);
  });
});

describe("a VM's networks attached where it runs", () => {
  it('VM.start_on refuses a host without a PIF of the VM\'s VLAN; VM.start picks one that has it and plugs it', async () => {
    const net = await newNetwork('vlan 40 on the master', '10.40.0.0/24');
    const vlan: string = await x.call('VLAN.create', await pifOf(master, 'eth1'), 40, net);
    const untagged: string = await x.call('VLAN.get_untagged_PIF', vlan);
    if (await x.call('PIF.get_currently_attached', untagged)) await x.call('PIF.unplug', untagged);
    const vm: string = await x.call('VM.create', vmArgs('pinned', { ...memory(64 * MiB), other_config: {}, affinity: member }));
    await x.call('VIF.create', vifArgs(vm, net));
    expect(await fault(x.call('VM.start_on', vm, member, false, false))).toEqual(['VM_REQUIRES_NETWORK', vm, net]);
    await x.call('VM.start', vm, false, false);
    expect(await x.call('VM.get_resident_on', vm)).toBe(master);
    expect(await x.call('PIF.get_currently_attached', untagged)).toBe(true);
    const ip = await until('an address on VLAN 40', async () => (await networksOf(vm))['0/ip']);
    expect(inSubnet(ip, '10.40.0.0/24')).toBe(true);
    // nor can it move to the member
    expect(await fault(x.call('VM.pool_migrate', vm, member, {}))).toEqual(['VM_REQUIRES_NETWORK', vm, net]);
    expect(await x.call('VM.get_resident_on', vm)).toBe(master);
    await x.call('VM.hard_shutdown', vm);
  });

  it('pool_migrate brings the VLAN up on the destination; the guest keeps its address there', async () => {
    const net = await newNetwork('vlan 41', '10.41.0.0/24');
    await x.call('pool.create_VLAN', 'eth1', net, 41);
    const [memberPif] = await x.call('PIF.get_all_where', `field "network" = "${net}" and field "host" = "${member}"`);
    if (await x.call('PIF.get_currently_attached', memberPif)) await x.call('PIF.unplug', memberPif);
    const { vm, ip } = await bootedVm('mover', net, master);
    await x.call('VM.pool_migrate', vm, member, { live: 'true' });
    expect(await x.call('VM.get_resident_on', vm)).toBe(member);
    expect(await x.call('PIF.get_currently_attached', memberPif)).toBe(true);
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    await x.call('VM.hard_shutdown', vm);
  });

  it('network.attach brings PIFs up through networkd: a card that is gone cannot be', async () => {
    await ctl.nics.add({ host: member, device: 'eth4' });
    await x.call('PIF.scan', member);
    const pif = await pifOf(member, 'eth4');
    const net: string = await x.call('PIF.get_network', pif);
    if (await x.call('PIF.get_currently_attached', pif)) await x.call('PIF.unplug', pif);
    await ctl.nics.remove({ host: member, device: 'eth4' });
    expect(await fault(x.call('network.attach', net, member))).toEqual(['PIF_CONFIGURATION_ERROR', pif, '']);
    expect(await x.call('PIF.get_currently_attached', pif)).toBe(false);
    await ctl.nics.add({ host: member, device: 'eth4' });
    await x.call('network.attach', net, member);
    expect(await x.call('PIF.get_currently_attached', pif)).toBe(true);
  });
});

describe('a bond made or undone under running guests', () => {
  it("moves their VIFs' backends to the bond's bridge and back, with an address of the network they are on", async () => {
    await ctl.nics.add({ host: master, device: 'eth5' });
    await ctl.nics.add({ host: master, device: 'eth6' });
    await x.call('PIF.scan', master);
    const eth5 = await pifOf(master, 'eth5');
    const eth5Net: string = await x.call('PIF.get_network', eth5);
    await x.call('network.set_other_config', eth5Net, { 'xapi-emu-dhcp-subnet': '10.50.0.0/24' });
    const { vm } = await bootedVm('under-bond', eth5Net, master);
    expect(await backendBridge(vm, master)).toBe(await x.call('network.get_bridge', eth5Net));

    const bondNet = await newNetwork('bond 2', '10.51.0.0/24');
    const bond: string = await x.call('Bond.create', bondNet, [eth5, await pifOf(master, 'eth6')], '', 'balance-slb', {});
    const [vif] = await x.call('VM.get_VIFs', vm);
    expect(await x.call('VIF.get_network', vif)).toBe(bondNet);
    expect(await backendBridge(vm, master)).toBe(await x.call('network.get_bridge', bondNet));
    expect(inSubnet((await networksOf(vm))['0/ip'], '10.51.0.0/24')).toBe(true);

    await x.call('Bond.destroy', bond);
    expect(await x.call('VIF.get_network', vif)).toBe(eth5Net);
    expect(await backendBridge(vm, master)).toBe(await x.call('network.get_bridge', eth5Net));
    expect(inSubnet((await networksOf(vm))['0/ip'], '10.50.0.0/24')).toBe(true);
    await x.call('VM.hard_shutdown', vm);
  });
});
