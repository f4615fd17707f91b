// The VIF messages from the clients that send them: XO's xen-api client (xo-server moves a running
// VM's NIC with VIF.move and sets its locking mode and allowed addresses, then waits for the
// record through its event loop), and Python's XenAPI over XML-RPC (a script that configures a
// static address and reads the errors as XenAPI.Failure details).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { createClient, type Xapi } from 'xen-api';
import { startServer, type RunningServer } from '../../server/app.js';
import { MiB, memory, vifArgs, vmArgs } from './helpers/records.js';

const PYTHON = '/usr/bin/python3';
const XENAPI = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const PASSWORD = 'vif-clients';
let srv: RunningServer;
let xapi: Xapi;

const SCRIPT = String.raw`
import json, sys
sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')
import XenAPI

url, password, vm, vif = sys.argv[1:5]
s = XenAPI.Session(url)
s.xenapi.login_with_password('root', password, '1.0', 'vif-clients')
x = s.xenapi
out = {}

def failure(f, *args):
    try:
        f(*args)
    except XenAPI.Failure as e:
        return e.details
    return None

out['bad_allowed'] = failure(x.VIF.set_ipv4_allowed, vif, ['10.0.0.1', 'not-an-address'])
x.VIF.set_ipv4_allowed(vif, ['10.30.0.0/24', '10.30.0.5'])
x.VIF.add_ipv4_allowed(vif, '10.30.0.6')
out['allowed'] = x.VIF.get_ipv4_allowed(vif)
out['bad_cidr'] = failure(x.VIF.configure_ipv4, vif, 'Static', '10.30.0.7', '')
x.VIF.configure_ipv4(vif, 'Static', '10.30.0.7/24', '10.30.0.1')
rec = x.VIF.get_record(vif)
out['configured'] = [rec['ipv4_configuration_mode'], rec['ipv4_addresses'], rec['ipv4_gateway']]
gm = x.VM.get_guest_metrics(vm)
out['networks'] = x.VM_guest_metrics.get_networks(gm)
out['bad_trunk'] = failure(x.VIF.add_trunks, vif, '4095')
s.xenapi.session.logout()
print(json.dumps(out))
`;

beforeAll(async () => {
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, seed: 'vif-clients', authFailDelay: 0, closeGrace: 0 });
  xapi = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true });
  await xapi.connect();
});

afterAll(async () => {
  await xapi?.disconnect();
  await srv?.close();
});

const network = (name: string, subnet: string): Promise<string> =>
  xapi.call('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: { 'xapi-emu-dhcp-subnet': subnet }, tags: [] });

/** A running VM whose agent reported an address on VIF 0, found with the client's event loop. */
async function bootedVm(name: string, net: string): Promise<{ vm: string; vif: string; ip: string }> {
  const vm = await xapi.call<string>('VM.create', vmArgs(name, { ...memory(64 * MiB), other_config: {} }));
  const vif = await xapi.call<string>('VIF.create', vifArgs(vm, net));
  await xapi.call('VM.start', vm, false, false);
  const uuid = await xapi.call<string>('VM.get_uuid', vm);
  const ip = await addressOf(uuid, (nets) => nets['0/ip']);
  return { vm, vif, ip };
}

/** VIF 0's address once `pick` finds one in the VM's guest metrics, read from xen-api's cache of
 * objects (brought up to date with a barrier, as xo-server does after a call). */
async function addressOf(vmUuid: string, pick: (nets: Record<string, string>) => string | undefined | false): Promise<string> {
  for (let i = 0; i < 100; i++) {
    await xapi.barrier();
    const vm = xapi.getObjectByUuid(vmUuid, null);
    const gm = vm && xapi.getObjectByRef(vm.guest_metrics, null);
    const found = gm && pick(gm.networks);
    if (found) return found;
  }
  throw new Error(`no address for ${vmUuid}`);
}

describe("XO's xen-api client", () => {
  it("moves a running VM's NIC to another network and sees the new address through events", async () => {
    const a = await network('xo-a', '10.40.0.0/24');
    const b = await network('xo-b', '10.41.0.0/24');
    const { vm, vif, ip } = await bootedVm('xo-mover', a);
    expect(ip).toMatch(/^10\.40\.0\.\d+$/);
    await xapi.call('VIF.move', vif, b);
    const uuid = await xapi.call<string>('VM.get_uuid', vm);
    expect(await addressOf(uuid, (nets) => /^10\.41\.0\.\d+$/.test(nets['0/ip'] ?? '') && nets['0/ip'])).toMatch(/^10\.41\.0\.\d+$/);
    expect(await xapi.call('VIF.get_network', vif)).toBe(b);
  });

  it('sets the locking mode and allowed addresses, and reads XAPI errors', async () => {
    const net = await network('xo-lock', '10.42.0.0/24');
    const { vm, vif, ip } = await bootedVm('xo-lock', net);
    await xapi.call('VIF.set_locking_mode', vif, 'locked');
    await xapi.call('VIF.set_ipv4_allowed', vif, [ip]);
    expect(await xapi.call('VIF.get_record', vif)).toMatchObject({ locking_mode: 'locked', ipv4_allowed: [ip] });
    await expect(xapi.call('VIF.add_ipv4_allowed', vif, 'nope')).rejects.toMatchObject({ code: 'INVALID_IP_ADDRESS_SPECIFIED', params: ['ipv4_allowed'] });
    await xapi.call('VIF.set_locking_mode', vif, 'disabled');
    const uuid = await xapi.call<string>('VM.get_uuid', vm);
    await addressOf(uuid, (nets) => nets['0/ip'] === undefined && 'gone');
  });
});

describe('Python XenAPI', () => {
  it('allowed addresses round trip, a static address reported by the agent, errors as Failure details', async () => {
    if (!existsSync(PYTHON) || !existsSync(XENAPI)) throw new Error(`${PYTHON} with os_xenapi is needed (apt-get install python3-os-xenapi)`);
    const net = await network('py', '10.30.0.0/24');
    const { vm, vif } = await bootedVm('py-static', net);
    const { stdout } = await promisify(execFile)(PYTHON, ['-c', SCRIPT, srv.urls[0], PASSWORD, vm, vif], { timeout: 30_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
    const out = JSON.parse(stdout);
    expect(out.bad_allowed).toEqual(['INVALID_IP_ADDRESS_SPECIFIED', 'ipv4_allowed']);
    expect(out.allowed).toEqual(['10.30.0.0/24', '10.30.0.5', '10.30.0.6']);
    expect(out.bad_cidr).toEqual(['INVALID_CIDR_ADDRESS_SPECIFIED', 'address']);
    expect(out.configured).toEqual(['Static', ['10.30.0.7/24'], '10.30.0.1']);
    expect(out.networks['0/ip']).toBe('10.30.0.7');
    expect(out.bad_trunk).toEqual(['VLAN_TAG_INVALID', '4095']);
  });
});
