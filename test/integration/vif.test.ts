// VIF's messages beyond plug and unplug, over JSON-RPC as a client sends them: the allowed
// addresses of the switch port (addresses or CIDRs, each once), locking modes and the network's
// default, the static IP settings the guest's tools apply, 802.1Q trunks, VIF.move of a running
// VM's NIC. And what the guest makes of them: a disabled port or a NIC without link loses its
// DHCP address (and its traffic in the data sources), a static setting is the address reported,
// a NIC moved to another network leases an address there.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { startPool, xenbr0 } from './helpers/pool.js';
import { MiB, NULL, memory, vifArgs, vmArgs } from './helpers/records.js';
import { parseCidr, parseIpv4 } from '../../server/guest/dhcp.js';

const PASSWORD = 'vif-messages';
let srv: RunningServer;
let x: Client;
let host: string;
let netA: string;
let netB: string;

const SUBNET_A = '10.20.0.0/24';
const SUBNET_B = '10.21.0.0/24';

const newNetwork = (name: string, subnet: string, extra: Record<string, unknown> = {}): Promise<string> =>
  x.call('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: { 'xapi-emu-dhcp-subnet': subnet }, tags: [], ...extra });

const inSubnet = (ip: string | undefined, cidr: string): boolean => {
  const s = parseCidr(cidr)!;
  const n = ip ? parseIpv4(ip) : null;
  return n !== null && n >>> (32 - s.prefix) === s.base >>> (32 - s.prefix);
};

/** A halted VM whose guest runs the agent, with a NIC on `network`. */
async function newVm(name: string, network: string): Promise<{ vm: string; vif: string }> {
  const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(64 * MiB), other_config: {} }));
  const vif: string = await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vif };
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
    token = (await x.call('event.from', ['vm', 'vm_guest_metrics', 'vif'], token, 5)).token;
  }
  throw new Error(`never: ${what}`);
}

/** A running VM whose agent reported an address on VIF 0. */
async function bootedVm(name: string, network: string): Promise<{ vm: string; vif: string; ip: string }> {
  const v = await newVm(name, network);
  await x.call('VM.start', v.vm, false, false);
  const ip = await until(`${name} has an address`, async () => (await networksOf(v.vm))['0/ip']);
  return { ...v, ip };
}

/** Whether the agent of a running VM has reported (its OS is known). */
async function agentReported(vm: string): Promise<boolean> {
  const gm: string = await x.call('VM.get_guest_metrics', vm);
  return gm !== NULL && Object.keys(await x.call('VM_guest_metrics.get_os_version', gm)).length > 0;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { seed: 'vif-messages', closeGrace: 0 }));
  host = (await x.call('host.get_all'))[0];
  netA = await newNetwork('A', SUBNET_A);
  netB = await newNetwork('B', SUBNET_B);
});

afterAll(async () => {
  await srv?.close();
});

describe('allowed addresses of the switch port', () => {
  it('ipv4_allowed: addresses and CIDRs, each once, at its last place; add appends, remove drops', async () => {
    const { vif } = await newVm('allowed4', netA);
    await x.call('VIF.set_ipv4_allowed', vif, ['10.0.0.1', '10.1.0.0/16', '10.0.0.1']);
    expect(await x.call('VIF.get_ipv4_allowed', vif)).toEqual(['10.1.0.0/16', '10.0.0.1']);
    await x.call('VIF.add_ipv4_allowed', vif, '10.0.0.2');
    await x.call('VIF.add_ipv4_allowed', vif, '10.0.0.2');
    expect(await x.call('VIF.get_ipv4_allowed', vif)).toEqual(['10.1.0.0/16', '10.0.0.1', '10.0.0.2']);
    await x.call('VIF.remove_ipv4_allowed', vif, '10.0.0.1');
    await x.call('VIF.remove_ipv4_allowed', vif, '192.0.2.9');
    expect(await x.call('VIF.get_ipv4_allowed', vif)).toEqual(['10.1.0.0/16', '10.0.0.2']);
    await x.call('VIF.set_ipv4_allowed', vif, []);
    expect(await x.call('VIF.get_ipv4_allowed', vif)).toEqual([]);
  });

  it('refuses what is not an address of the family, changing nothing', async () => {
    const { vif } = await newVm('allowed-bad', netA);
    await x.call('VIF.set_ipv4_allowed', vif, ['10.0.0.1']);
    for (const bad of ['nonsense', '10.0.0.256', '10.0.0.0/33', 'fd00::1']) {
      expect(await faultOf(x.call('VIF.set_ipv4_allowed', vif, ['10.0.0.3', bad]))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'ipv4_allowed']);
      expect(await faultOf(x.call('VIF.add_ipv4_allowed', vif, bad))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'ipv4_allowed']);
    }
    expect(await x.call('VIF.get_ipv4_allowed', vif)).toEqual(['10.0.0.1']);
    await x.call('VIF.set_ipv6_allowed', vif, ['fd00::1', 'fd00:1::/64']);
    await x.call('VIF.add_ipv6_allowed', vif, 'fd00::2');
    expect(await x.call('VIF.get_ipv6_allowed', vif)).toEqual(['fd00::1', 'fd00:1::/64', 'fd00::2']);
    expect(await faultOf(x.call('VIF.add_ipv6_allowed', vif, '10.0.0.1'))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'ipv6_allowed']);
    await x.call('VIF.remove_ipv6_allowed', vif, 'fd00::1');
    expect(await x.call('VIF.get_ipv6_allowed', vif)).toEqual(['fd00:1::/64', 'fd00::2']);
    expect(await faultOf(x.call('VIF.add_ipv4_allowed', 'OpaqueRef:nope', '10.0.0.1'))).toEqual(['HANDLE_INVALID', 'VIF', 'OpaqueRef:nope']);
  });
});

describe('static IP settings for the guest', () => {
  it('checks the address (CIDR), the gateway, the locked port and the tools before writing', async () => {
    const { vm, vif } = await newVm('static-checks', netA);
    expect(await faultOf(x.call('VIF.configure_ipv4', vif, 'Static', '10.20.0.9', ''))).toEqual(['INVALID_CIDR_ADDRESS_SPECIFIED', 'address']);
    expect(await faultOf(x.call('VIF.configure_ipv4', vif, 'Static', '10.20.0.9/24', 'gw'))).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'gateway']);
    expect(await faultOf(x.call('VIF.configure_ipv6', vif, 'Static', '10.20.0.9/24', ''))).toEqual(['INVALID_CIDR_ADDRESS_SPECIFIED', 'address']);
    // a locked port passes only its allowed addresses
    await x.call('VIF.set_locking_mode', vif, 'locked');
    await x.call('VIF.set_ipv4_allowed', vif, ['10.20.0.9']);
    expect(await faultOf(x.call('VIF.configure_ipv4', vif, 'Static', '10.20.0.10/24', ''))).toEqual(['ADDRESS_VIOLATES_LOCKING_CONSTRAINT', '10.20.0.10/24']);
    // a guest that never ran has no tools to apply it
    expect(await faultOf(x.call('VIF.configure_ipv4', vif, 'Static', '10.20.0.9/24', '10.20.0.1'))).toEqual(['VM_LACKS_FEATURE', vm]);
    expect(await faultOf(x.call('VIF.configure_ipv4', vif, 'None', '', ''))).toEqual(['VM_LACKS_FEATURE', vm]);
    const rec = await x.call('VIF.get_record', vif);
    expect([rec.ipv4_configuration_mode, rec.ipv4_addresses, rec.ipv4_gateway]).toEqual(['None', [], '']);
  });

  it('Static: the agent reports the address set; None: back to its DHCP lease', async () => {
    const { vm, vif, ip } = await bootedVm('static', netA);
    expect(inSubnet(ip, SUBNET_A)).toBe(true);
    await x.call('VIF.configure_ipv4', vif, 'Static', '10.20.0.200/24', '10.20.0.1');
    const rec = await x.call('VIF.get_record', vif);
    expect([rec.ipv4_configuration_mode, rec.ipv4_addresses, rec.ipv4_gateway]).toEqual(['Static', ['10.20.0.200/24'], '10.20.0.1']);
    expect((await networksOf(vm))['0/ip']).toBe('10.20.0.200');
    expect((await networksOf(vm))['0/ipv4/0']).toBe('10.20.0.200');
    await x.call('VIF.configure_ipv6', vif, 'Static', 'fd00:20::5/64', '');
    expect((await networksOf(vm))['0/ipv6/0']).toBe('fd00:20::5');
    await x.call('VIF.configure_ipv4', vif, 'None', '', '');
    expect(await x.call('VIF.get_ipv4_addresses', vif)).toEqual(['']);
    const back = (await networksOf(vm))['0/ip'];
    expect(back).not.toBe('10.20.0.200');
    expect(inSubnet(back, SUBNET_A)).toBe(true);
  });
});

describe('locking modes', () => {
  it('disabled: the guest loses its DHCP address and its NIC its traffic; unlocked gives them back', async () => {
    const { vm, vif, ip } = await bootedVm('disabled', netA);
    const ctl = controlClient({ url: srv.urls[0], session: x.session });
    await ctl.guests.setLoad({ vm, network: 1_000_000 });
    await x.call('VIF.set_locking_mode', vif, 'disabled');
    expect(await x.call('VIF.get_locking_mode', vif)).toBe('disabled');
    const nets = await networksOf(vm);
    expect(nets['0/ip']).toBeUndefined();
    expect(nets['0/ipv6/0']).toBeUndefined();
    expect(await agentReported(vm)).toBe(true);
    // the data sources of its NIC see nothing pass
    const uuid: string = await x.call('VM.get_uuid', vm);
    const { vmReadings } = await import('../../server/rrdd/sources.js');
    const { xenopsOf } = await import('../../server/api/xenops-sync.js');
    const readings = () => {
      const rx = vmReadings(srv.emu, 'seed', xenopsOf(srv.emu, host), vm, uuid).find((r) => r.def.name === 'vif_0_rx')!;
      return 'at' in rx ? rx.at(1) : rx.counter;
    };
    expect(readings()).toBe(0);
    await x.call('VIF.set_locking_mode', vif, 'unlocked');
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    expect(readings()).toBeGreaterThan(0);
    // locked: DHCP passes, other traffic only from the allowed addresses
    await x.call('VIF.set_locking_mode', vif, 'locked');
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    expect(readings()).toBe(0);
    await x.call('VIF.add_ipv4_allowed', vif, ip);
    expect(readings()).toBeGreaterThan(0);
  });

  it("network_default follows the network's default, which changes only while no VIF on it is attached", async () => {
    const net = await newNetwork('C', '10.22.0.0/24');
    const running = await bootedVm('in-use', net);
    expect(await faultOf(x.call('network.set_default_locking_mode', net, 'disabled'))).toEqual(['VIF_IN_USE', net, running.vif]);
    await x.call('VM.hard_shutdown', running.vm);
    await x.call('network.set_default_locking_mode', net, 'disabled');
    expect(await x.call('network.get_default_locking_mode', net)).toBe('disabled');
    const { vm, vif } = await newVm('default-disabled', net);
    expect(await x.call('VIF.get_locking_mode', vif)).toBe('network_default');
    await x.call('VM.start', vm, false, false);
    await until('the agent reports', () => agentReported(vm));
    expect((await networksOf(vm))['0/ip']).toBeUndefined();
    await x.call('VIF.set_locking_mode', vif, 'unlocked');
    expect(inSubnet((await networksOf(vm))['0/ip'], '10.22.0.0/24')).toBe(true);
  });
});

describe('VIF.move', () => {
  it("moves a running VM's NIC: still attached, an address of the new network", async () => {
    const { vm, vif, ip } = await bootedVm('mover', netA);
    const v6 = (await networksOf(vm))['0/ipv6/0'];
    await x.call('VIF.move', vif, netB);
    const rec = await x.call('VIF.get_record', vif);
    expect(rec.network).toBe(netB);
    expect(rec.currently_attached).toBe(true);
    expect(await x.call('network.get_VIFs', netB)).toContain(vif);
    expect(await x.call('network.get_VIFs', netA)).not.toContain(vif);
    const nets = await networksOf(vm);
    expect(inSubnet(nets['0/ip'], SUBNET_B)).toBe(true);
    expect(nets['0/ip']).not.toBe(ip);
    expect(nets['0/ipv6/0']).not.toBe(v6);
    // and back, as Async: the task ends with an empty result
    const task: string = await x.call('Async.VIF.move', vif, netA);
    await until('the task ends', async () => (await x.call('task.get_status', task)) !== 'pending');
    expect(await x.call('task.get_status', task)).toBe('success');
    expect(inSubnet((await networksOf(vm))['0/ip'], SUBNET_A)).toBe(true);
  });

  it('moves a halted VM\'s VIF in the database only; refuses trunks onto a VLAN network', async () => {
    const { vif } = await newVm('halted-mover', netA);
    await x.call('VIF.move', vif, netB);
    expect(await x.call('VIF.get_network', vif)).toBe(netB);
    expect(await faultOf(x.call('VIF.move', vif, 'OpaqueRef:nope'))).toEqual(['HANDLE_INVALID', 'network', 'OpaqueRef:nope']);
    // a network carried by a VLAN PIF
    const vlanNet = await newNetwork('vlan', '10.23.0.0/24');
    await x.call('pool.create_VLAN', 'eth0', vlanNet, 10);
    await x.call('VIF.add_trunks', vif, 100);
    expect(await faultOf(x.call('VIF.move', vif, vlanNet))).toEqual(['NETWORK_INCOMPATIBLE_WITH_TRUNKS', vlanNet]);
    expect(await x.call('VIF.get_network', vif)).toBe(netB);
    // nor created there with trunks
    const vm: string = await x.call('VIF.get_VM', vif);
    expect(await faultOf(x.call('VIF.create', vifArgs(vm, vlanNet, '1', { trunks: [100] })))).toEqual(['NETWORK_INCOMPATIBLE_WITH_TRUNKS', vlanNet]);
    const plain: string = await x.call('VIF.create', vifArgs(vm, vlanNet, '1'));
    expect(await faultOf(x.call('VIF.add_trunks', plain, 100))).toEqual(['NETWORK_INCOMPATIBLE_WITH_TRUNKS', vlanNet]);
  });
});

describe('licence and vswitch controller', () => {
  it('a pool restricted from VIF locking or guest IP setting refuses them; an SDN controller forbids locked ports', async () => {
    const { vif } = await newVm('restricted', netA);
    const { db, pool, ids } = srv.emu;
    const restrictions = db.get('pool', pool)!.restrictions as Record<string, string>;
    db.update('pool', pool, { restrictions: { ...restrictions, restrict_vif_locking: 'true', restrict_guest_ip_setting: 'true' } });
    try {
      expect(await faultOf(x.call('VIF.set_locking_mode', vif, 'locked'))).toEqual(['LICENCE_RESTRICTION', 'VIF_locking']);
      expect(await faultOf(x.call('VIF.add_ipv4_allowed', vif, '10.0.0.1'))).toEqual(['LICENCE_RESTRICTION', 'VIF_locking']);
      expect(await faultOf(x.call('VIF.configure_ipv4', vif, 'Static', '10.20.0.9/24', ''))).toEqual(['LICENCE_RESTRICTION', 'Guest_ip_setting']);
      // what needs no licence still works: unlocking, emptying, removing
      await x.call('VIF.set_locking_mode', vif, 'disabled');
      await x.call('VIF.set_ipv4_allowed', vif, []);
      await x.call('VIF.remove_ipv4_allowed', vif, '10.0.0.1');
    } finally {
      db.update('pool', pool, { restrictions });
    }
    const sdn = ids.ref();
    db.create('SDN_controller', sdn, { uuid: ids.uuid(), protocol: 'ssl', address: '192.0.2.1', port: 6632 });
    try {
      expect(await faultOf(x.call('VIF.set_locking_mode', vif, 'locked'))).toEqual(['OPERATION_NOT_ALLOWED', 'A vswitch controller is active']);
      await x.call('VIF.set_locking_mode', vif, 'unlocked');
    } finally {
      db.destroy('SDN_controller', sdn);
    }
    await x.call('VIF.set_locking_mode', vif, 'locked');
    expect(await x.call('VIF.get_locking_mode', vif)).toBe('locked');
  });
});

describe('trunks', () => {
  it('valid 802.1Q tags, each once; add conses, set keeps the last of each', async () => {
    const { vif } = await newVm('trunks', netA);
    for (const bad of [4095, -1]) expect(await faultOf(x.call('VIF.add_trunks', vif, bad))).toEqual(['VLAN_TAG_INVALID', String(bad)]);
    expect(await faultOf(x.call('VIF.set_trunks', vif, [1, 5000]))).toEqual(['VLAN_TAG_INVALID', '5000']);
    await x.call('VIF.add_trunks', vif, 10);
    await x.call('VIF.add_trunks', vif, 20);
    await x.call('VIF.add_trunks', vif, 10);
    expect((await x.call('VIF.get_trunks', vif)).map(Number)).toEqual([20, 10]);
    await x.call('VIF.set_trunks', vif, [5, 6, 5]);
    expect((await x.call('VIF.get_trunks', vif)).map(Number)).toEqual([6, 5]);
    await x.call('VIF.remove_trunks', vif, 6);
    await x.call('VIF.remove_trunks', vif, 7);
    expect((await x.call('VIF.get_trunks', vif)).map(Number)).toEqual([5]);
  });
});

describe('link of a NIC', () => {
  it('a NIC on a network whose PIF is unplugged has no address; network.attach plugs it again', async () => {
    const mgmt = await xenbr0(x);
    const { vm, vif, ip } = await bootedVm('link', mgmt);
    const [pif] = await x.call('network.get_PIFs', mgmt);
    // the PIF goes down under the guest (as PIF.unplug leaves it); the next report sees no link
    srv.emu.db.update('PIF', pif, { currently_attached: false });
    await x.call('VIF.set_locking_mode', vif, 'unlocked');
    expect((await networksOf(vm))['0/ip']).toBeUndefined();
    await x.call('network.attach', mgmt, host);
    expect(await x.call('PIF.get_currently_attached', pif)).toBe(true);
    expect((await networksOf(vm))['0/ip']).toBe(ip);
    // no carrier (the cable cut through the control API): plugging does not help
    const ctl = controlClient({ url: srv.urls[0], session: x.session });
    await ctl.nics.carrier({ host, device: 'eth0', carrier: false });
    await x.call('network.attach', mgmt, host);
    expect((await networksOf(vm))['0/ip']).toBeUndefined();
    await ctl.nics.carrier({ host, device: 'eth0', carrier: true });
    expect((await networksOf(vm))['0/ip']).toBe(ip);
  });
});
