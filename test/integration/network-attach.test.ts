// network.attach and its internal kin in a pool of two hosts, over JSON-RPC: a network attached on
// a host has its managed PIFs there plugged (an unmanaged one needs its bridge up already),
// attach_for_vm does so for each NIC of a VM, pool_introduce writes the record as given, and
// VIF.move refuses a network the VM's host cannot reach.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { startPool, xenbr0 } from './helpers/pool.js';
import { MiB, memory, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'network-attach';
let srv: RunningServer;
let x: Client;
let master: string;
let slave: string;
let mgmt: string;

const newNetwork = (name: string, extra: Record<string, unknown> = {}): Promise<string> =>
  x.call('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: {}, tags: [], ...extra });

async function newVm(name: string, network: string): Promise<{ vm: string; vif: string }> {
  const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(64 * MiB), other_config: {} }));
  const vif: string = await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vif };
}

/** The PIF of `network` on `host`. */
async function pifOn(network: string, host: string): Promise<string> {
  for (const p of await x.call('network.get_PIFs', network)) if ((await x.call('PIF.get_host', p)) === host) return p;
  throw new Error(`no PIF of ${network} on ${host}`);
}

/** A PIF taken down under the pool (as PIF.unplug leaves it). */
const unplugged = (pif: string) => srv.emu.db.update('PIF', pif, { currently_attached: false });

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { seed: 'network-attach', hosts: 2, closeGrace: 0 }));
  const pool = (await x.call('pool.get_all'))[0];
  master = await x.call('pool.get_master', pool);
  slave = (await x.call('host.get_all')).find((h: string) => h !== master);
  mgmt = await xenbr0(x);
});

afterAll(async () => {
  await srv?.close();
});

describe('network.attach', () => {
  it("plugs the network's PIF on the host named, not elsewhere", async () => {
    const here = await pifOn(mgmt, slave);
    const there = await pifOn(mgmt, master);
    unplugged(here);
    unplugged(there);
    await x.call('network.attach', mgmt, slave);
    expect(await x.call('PIF.get_currently_attached', here)).toBe(true);
    expect(await x.call('PIF.get_currently_attached', there)).toBe(false);
    const task: string = await x.call('Async.network.attach', mgmt, master);
    for (let token = ''; (await x.call('task.get_status', task)) === 'pending';) token = (await x.call('event.from', ['task'], token, 5)).token;
    expect(await x.call('task.get_status', task)).toBe('success');
    expect(await x.call('PIF.get_currently_attached', there)).toBe(true);
  });

  it('a private network needs nothing; an unmanaged one needs its bridge up; bad refs are refused', async () => {
    const priv = await newNetwork('private');
    await x.call('network.attach', priv, master);
    const unmanaged = await newNetwork('unmanaged', { bridge: 'br-outside', managed: false });
    expect(await x.call('network.get_managed', unmanaged)).toBe(false);
    expect(await faultOf(x.call('network.attach', unmanaged, master))).toEqual(['BRIDGE_NOT_AVAILABLE', 'br-outside']);
    expect(await faultOf(x.call('network.attach', 'OpaqueRef:nope', master))).toEqual(['HANDLE_INVALID', 'network', 'OpaqueRef:nope']);
    expect(await faultOf(x.call('network.attach', priv, 'OpaqueRef:nope'))).toEqual(['HANDLE_INVALID', 'host', 'OpaqueRef:nope']);
  });

  it('refuses to plug a bond slave on its own', async () => {
    const net = await newNetwork('slave-net');
    const { db, ids } = srv.emu;
    const bond = ids.ref();
    db.create('Bond', bond, { uuid: ids.uuid(), mode: 'active-backup' });
    const pif = ids.ref();
    db.create('PIF', pif, { uuid: ids.uuid(), device: 'eth1', network: net, host: master, VLAN: -1, MAC: '02:00:00:00:01:01', MTU: 1500, physical: true, managed: true, bond_slave_of: bond, currently_attached: false });
    expect(await faultOf(x.call('network.attach', net, master))).toEqual(['CANNOT_PLUG_BOND_SLAVE', pif]);
    // and a VM's NIC cannot move onto it
    const { vm, vif } = await newVm('to-slave', mgmt);
    await x.call('VM.start_on', vm, master, false, false);
    expect(await faultOf(x.call('VIF.move', vif, net))).toEqual(['HOST_CANNOT_ATTACH_NETWORK', master, net]);
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('network.attach_for_vm, detach_for_vm', () => {
  it("attach_for_vm plugs each of the VM's networks on the host; detach_for_vm checks its handles", async () => {
    const { vm } = await newVm('for-vm', mgmt);
    const pif = await pifOn(mgmt, slave);
    unplugged(pif);
    await x.call('network.attach_for_vm', slave, vm);
    expect(await x.call('PIF.get_currently_attached', pif)).toBe(true);
    await x.call('network.detach_for_vm', slave, vm);
    expect(await x.call('PIF.get_currently_attached', pif)).toBe(true);
    expect(await faultOf(x.call('network.attach_for_vm', slave, 'OpaqueRef:nope'))).toEqual(['HANDLE_INVALID', 'VM', 'OpaqueRef:nope']);
    expect(await faultOf(x.call('network.detach_for_vm', 'OpaqueRef:nope', vm))).toEqual(['HANDLE_INVALID', 'host', 'OpaqueRef:nope']);
  });
});

describe('network.pool_introduce', () => {
  it('writes the record as given, with its purposes and an unlocked default', async () => {
    const net: string = await x.call('network.pool_introduce', 'joined', 'from a joining host', 9000, { k: 'v' }, 'xapi42', true, ['nbd']);
    const rec = await x.call('network.get_record', net);
    expect(rec).toMatchObject({
      name_label: 'joined', name_description: 'from a joining host', MTU: 9000, other_config: { k: 'v' }, bridge: 'xapi42', managed: true,
      purpose: ['nbd'], default_locking_mode: 'unlocked', PIFs: [], VIFs: [],
    });
  });
});

describe('VIF.move across hosts', () => {
  it('refuses a private network pinned to the other host by a running VM, or one with PIFs only there', async () => {
    const priv = await newNetwork('pinned');
    const other = await newVm('pinning', priv);
    await x.call('VM.start_on', other.vm, slave, false, false);
    const { vm, vif } = await newVm('moving', mgmt);
    await x.call('VM.start_on', vm, master, false, false);
    expect(await faultOf(x.call('VIF.move', vif, priv))).toEqual(['HOST_CANNOT_ATTACH_NETWORK', master, priv]);
    // the same network is fine once nothing runs on it
    await x.call('VM.hard_shutdown', other.vm);
    await x.call('VIF.move', vif, priv);
    expect(await x.call('VIF.get_network', vif)).toBe(priv);
    expect(await x.call('VIF.get_currently_attached', vif)).toBe(true);
    // a network with a PIF on the other host only
    const remote = await newNetwork('remote');
    const { db, ids } = srv.emu;
    db.create('PIF', ids.ref(), { uuid: ids.uuid(), device: 'eth2', network: remote, host: slave, VLAN: -1, MAC: '02:00:00:00:02:02', MTU: 1500, physical: true, managed: true, currently_attached: true });
    expect(await faultOf(x.call('VIF.move', vif, remote))).toEqual(['HOST_CANNOT_ATTACH_NETWORK', master, remote]);
    expect(await x.call('VIF.get_network', vif)).toBe(priv);
    await x.call('VM.hard_shutdown', vm);
  });
});
