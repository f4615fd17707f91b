// A running VM's NIC moved, locked and given a static address, then the toolstack restarts on the
// same data directory (xenopsd and the guest keep running): the VIF's record is as acknowledged,
// still attached, and the guest still reports what it saw before.
import { afterAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';
import { scratch } from './helpers/cli.js';
import { connectKeepAlive, type Client, type KeepAliveClient } from './helpers/jsonrpc.js';
import { MiB, NULL, memory, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'vif-restart';
const { dir: tmp } = scratch('vif-restart');
let srv: RunningServer | undefined;

afterAll(async () => {
  await srv?.close();
});

async function networksOf(x: Client, vm: string): Promise<Record<string, string>> {
  const gm: string = await x.call('VM.get_guest_metrics', vm);
  return gm === NULL ? {} : x.call('VM_guest_metrics.get_networks', gm);
}

async function until<T>(x: Client, check: () => Promise<T | undefined>): Promise<T> {
  let token = '';
  for (let i = 0; i < 50; i++) {
    const v = await check();
    if (v) return v;
    token = (await x.call('event.from', ['vm', 'vm_guest_metrics'], token, 5)).token;
  }
  throw new Error('never');
}

describe('VIF changes across a toolstack restart', () => {
  it('keeps the moved, locked, statically configured NIC and what the guest reports', async () => {
    srv = await startServer({ port: 0, password: PASSWORD, authFailDelay: 0, dataDir: tmp(), seed: 'vif-restart', closeGrace: 0 });
    // a connection of its own for each side of the restart: no pooled socket outlives the server
    let x: KeepAliveClient = await connectKeepAlive(srv.urls[0], 'root', PASSWORD);
    const net = (name: string, subnet: string): Promise<string> =>
      x.call('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: { 'xapi-emu-dhcp-subnet': subnet }, tags: [] });
    const a = await net('a', '10.50.0.0/24');
    const b = await net('b', '10.51.0.0/24');
    const vm: string = await x.call('VM.create', vmArgs('restart', { ...memory(64 * MiB), other_config: {} }));
    const vif: string = await x.call('VIF.create', vifArgs(vm, a));
    await x.call('VM.start', vm, false, false);
    await until(x, async () => (await networksOf(x, vm))['0/ip']);
    await x.call('VIF.move', vif, b);
    await x.call('VIF.set_locking_mode', vif, 'locked');
    await x.call('VIF.set_ipv4_allowed', vif, ['10.51.0.99']);
    await x.call('VIF.configure_ipv4', vif, 'Static', '10.51.0.99/24', '10.51.0.1');
    const before = await networksOf(x, vm);
    expect(before['0/ip']).toBe('10.51.0.99');

    x.close();
    await srv.toolstackRestart();
    x = await connectKeepAlive(srv.urls[0], 'root', PASSWORD);
    expect(await x.call('VIF.get_record', vif)).toMatchObject({
      network: b, currently_attached: true, locking_mode: 'locked', ipv4_allowed: ['10.51.0.99'],
      ipv4_configuration_mode: 'Static', ipv4_addresses: ['10.51.0.99/24'], ipv4_gateway: '10.51.0.1',
    });
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    expect(await networksOf(x, vm)).toEqual(before);
    // and it goes on: back to DHCP on the network it is on now
    await x.call('VIF.configure_ipv4', vif, 'None', '', '');
    await x.call('VIF.set_locking_mode', vif, 'unlocked');
    expect((await networksOf(x, vm))['0/ip']).toMatch(/^10\.51\.0\.\d+$/);
    expect((await networksOf(x, vm))['0/ip']).not.toBe('10.51.0.99');
    x.close();
  });
});
