// A fixture that declares the hosts' network cards, bonds and VLANs: the pool it makes, seen with a
// real client (PIFs, bonds, VLANs on every host, a guest on the VLAN network leasing an address in
// its subnet), and the fixtures refused with the path of the bad key.
import { afterAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer, type ServerOptions } from '../../server/app.js';
import { FixtureError } from '../../server/control/fixture/schema.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { NULL } from './helpers/records.js';
import { parseCidr, parseIpv4 } from '../../server/guest/dhcp.js';

const PASSWORD = 'networking-fixture';
const servers = new Set<RunningServer>();
afterAll(async () => {
  await Promise.all([...servers].map((s) => s.close()));
});

async function start(opts: ServerOptions): Promise<RunningServer> {
  const srv = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0, seed: 'networking-fixture', ...opts });
  servers.add(srv);
  return srv;
}

const inSubnet = (ip: string | undefined, cidr: string): boolean => {
  const s = parseCidr(cidr)!;
  const n = ip ? parseIpv4(ip) : null;
  return n !== null && n >>> (32 - s.prefix) === s.base >>> (32 - s.prefix);
};

const LAB = {
  hosts: [{ name: 'h1' }, { name: 'h2' }],
  networks: [
    { name: 'bonded', dhcp_subnet: '10.60.0.0/24' },
    { name: 'vlan 100', dhcp_subnet: '10.61.0.0/24' },
  ],
  nics: [
    { host: 'h1', device: 'eth1' }, { host: 'h1', device: 'eth2', speed: 10000 },
    { host: 'h2', device: 'eth1' }, { host: 'h2', device: 'eth2', mac: '02:00:00:00:02:02' },
  ],
  bonds: [{ network: 'bonded', devices: ['eth1', 'eth2'], mode: 'active-backup' }],
  vlans: [{ network: 'vlan 100', device: 'bond0', tag: 100 }],
  vms: [{ name: 'web', host: 'h2', power_state: 'Running', vifs: [{ network: 'vlan 100' }] }],
};

describe('a fixture with NICs, bonds and VLANs', () => {
  it('makes them on the hosts it names, and the guest on the VLAN leases in its subnet', async () => {
    const srv = await start({ fixture: { doc: LAB } });
    const x: Client = await connect(srv.urls[0], 'root', PASSWORD);
    const hosts: string[] = await x.call('host.get_all');
    expect(hosts).toHaveLength(2);
    const [bonded] = await x.call('network.get_by_name_label', 'bonded');
    const [vlanNet] = await x.call('network.get_by_name_label', 'vlan 100');
    const bonds: string[] = await x.call('Bond.get_all');
    expect(bonds).toHaveLength(2);
    for (const b of bonds) {
      const r = await x.call('Bond.get_record', b);
      expect(r.mode).toBe('active-backup');
      expect(r.slaves).toHaveLength(2);
      expect(r.links_up).toBe(2);
      expect(await x.call('PIF.get_network', r.master)).toBe(bonded);
    }
    const vlans: string[] = await x.call('network.get_PIFs', vlanNet);
    expect(vlans).toHaveLength(2);
    for (const p of vlans) {
      const r = await x.call('PIF.get_record', p);
      expect(r.VLAN).toBe(100);
      expect(r.device).toBe('bond0');
    }
    const [h2] = await x.call('host.get_by_name_label', 'h2');
    const eth2: string[] = await x.call('PIF.get_all_where', `field "host" = "${h2}" and field "device" = "eth2"`);
    expect(await x.call('PIF.get_MAC', eth2[0])).toBe('02:00:00:00:02:02');
    const [vm] = await x.call('VM.get_by_name_label', 'web');
    expect(await x.call('VM.get_resident_on', vm)).toBe(h2);
    let token = '';
    let ip: string | undefined;
    for (let i = 0; i < 50 && !ip; i++) {
      const gm: string = await x.call('VM.get_guest_metrics', vm);
      ip = gm === NULL ? undefined : (await x.call('VM_guest_metrics.get_networks', gm))['0/ip'];
      if (!ip) token = (await x.call('event.from', ['vm', 'vm_guest_metrics'], token, 5)).token;
    }
    expect(inSubnet(ip, '10.61.0.0/24')).toBe(true);
  });

  it('refuses what it cannot make, with the path of the bad key', async () => {
    const refused = async (doc: unknown): Promise<string> => {
      const e = await start({ fixture: { doc } }).catch((err) => err);
      expect(e).toBeInstanceOf(FixtureError);
      return (e as FixtureError).message;
    };
    expect(await refused({ hosts: 1, nics: [{ host: 'nowhere', device: 'eth1' }] })).toBe('nics[0].host: no host named "nowhere"');
    expect(await refused({ nics: [{ host: 'x', device: 'eth 1' }] })).toBe('nics[0].device: expected a device name such as eth1');
    expect(await refused({ hosts: [{ name: 'a' }], nics: [{ host: 'a', device: 'eth1' }, { host: 'a', device: 'eth1' }] }))
      .toBe('nics[1].device: a already has a NIC eth1 (nics[0])');
    expect(await refused({ hosts: [{ name: 'a' }], networks: [{ name: 'n' }], bonds: [{ network: 'n', devices: ['eth7'] }] }))
      .toBe('bonds[0].devices[0]: a has no NIC eth7');
    expect(await refused({ vlans: [{ network: 'none', device: 'eth0', tag: 5 }] })).toBe('vlans[0].network: no network named "none"');
    expect(await refused({ networks: [{ name: 'n' }], vlans: [{ network: 'n', device: 'eth9', tag: 5 }] }))
      .toBe('vlans[0]: pool.create_VLAN failed: INVALID_VALUE device eth9');
  });
});
