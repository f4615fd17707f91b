// The simulated DHCP: a network's subnet from network.other_config:xapi-emu-dhcp-subnet, addresses
// drawn from the pool's seed and each VIF's MAC, no address given twice on a network (a /26 for
// 50 guests makes the draws collide, and the probe moves them on), the same seed giving the same
// addresses, another seed other ones. Each pool is driven over JSON-RPC as a client would.
import { describe, expect, it } from 'vitest';
import type { Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { MiB, NULL, memory, vifArgs, vmArgs } from './helpers/records.js';
import { formatIpv4, parseIpv4 } from '../../server/guest/dhcp.js';

const PASSWORD = 'guest-dhcp';
const SUBNET = '10.9.0.0/24';
/** 61 addresses for the guests: 50 draws in it collide many times over */
const CROWDED = '10.9.0.0/26';

const macOf = (i: number) => `02:00:5e:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

/** Starts `n` guests on a fresh network of SUBNET in a pool of `seed`; their addresses, in order. */
async function leases(seed: string, n: number, subnet = SUBNET): Promise<{ v4: string[]; v6: string[] }> {
  const { srv, x } = await startPool(PASSWORD, { seed, closeGrace: 0 });
  try {
    const net: string = await x.call('network.create', { name_label: 'dhcp', name_description: '', MTU: 1500, other_config: { 'xapi-emu-dhcp-subnet': subnet }, tags: [] });
    const v4: string[] = [];
    const v6: string[] = [];
    for (let i = 0; i < n; i++) {
      const vm: string = await x.call('VM.create', vmArgs(`g${i}`, { ...memory(64 * MiB), other_config: {} }));
      await x.call('VIF.create', vifArgs(vm, net, '0', { MAC: macOf(i) }));
      await x.call('VM.start', vm, false, false);
      const nets = await networksOf(x, vm);
      v4.push(nets['0/ip']);
      v6.push(nets['0/ipv6/0']);
    }
    return { v4, v6 };
  } finally {
    await srv.close();
  }
}

/** VM_guest_metrics.networks once the agent reported, waited for with event.from. */
async function networksOf(x: Client, vm: string): Promise<Record<string, string>> {
  let token = '';
  for (let i = 0; i < 50; i++) {
    const gm = await x.call('VM.get_guest_metrics', vm);
    if (gm !== NULL) {
      const nets = await x.call('VM_guest_metrics.get_networks', gm);
      if (nets['0/ip']) return nets;
    }
    token = (await x.call('event.from', ['vm', 'vm_guest_metrics'], token, 5)).token;
  }
  throw new Error(`no address for ${vm}`);
}

describe('simulated DHCP', () => {
  it('50 guests on a /26: every address in the subnet, none twice; the same seed gives the same ones', async () => {
    const a = await leases('dhcp-seed', 50, CROWDED);
    expect(new Set(a.v4).size).toBe(50);
    expect(new Set(a.v6).size).toBe(50);
    const lo = parseIpv4('10.9.0.2')!;
    const hi = parseIpv4('10.9.0.62')!;
    for (const ip of a.v4) {
      const n = parseIpv4(ip)!;
      expect(n >= lo && n <= hi, ip).toBe(true);
    }
    // the draws collided (50 of 61): some addresses were found by probing forward
    const b = await leases('dhcp-seed', 50, CROWDED);
    expect(b).toEqual(a);
    // the interface identifier is the MAC's (SLAAC), in one /64 of the network
    expect(a.v6[1]).toMatch(/:5eff:fe00:1$/);
    expect(new Set(a.v6.map((s) => s.split(':').slice(0, 4).join(':'))).size).toBe(1);
  }, 120_000);

  it('another seed draws other addresses', async () => {
    const a = await leases('dhcp-seed', 20);
    const c = await leases('another-seed', 20);
    expect(c.v4.filter((ip, i) => ip === a.v4[i]).length).toBeLessThan(5);
    expect(c.v6).not.toEqual(a.v6);
  }, 60_000);

  it('a network without a subnet key gets a /16 of its own; an unparsable key is ignored', async () => {
    const { srv, x } = await startPool(PASSWORD, { seed: 'bridges', closeGrace: 0 });
    try {
      const subnets: string[] = [];
      for (const key of [{ 'xapi-emu-dhcp-subnet': 'nonsense' }, {}]) {
        const net: string = await x.call('network.create', { name_label: 'other', name_description: '', MTU: 1500, other_config: key, tags: [] });
        const vm: string = await x.call('VM.create', vmArgs('b', { ...memory(64 * MiB), other_config: {} }));
        await x.call('VIF.create', vifArgs(vm, net));
        await x.call('VM.start', vm, false, false);
        const ip = parseIpv4((await networksOf(x, vm))['0/ip'])!;
        subnets.push(formatIpv4(ip & 0xffff0000));
      }
      for (const s of subnets) expect(s).toMatch(/^10\.(1[3-9]\d|12[89]|2[0-5]\d)\.0\.0$/);
      expect(subnets[0]).not.toBe(subnets[1]);
    } finally {
      await srv.close();
    }
  });
});

