// A new user's script with Python's XenAPI (Debian's python3-os-xenapi) against a default pool of
// two hosts: a VM from the Debian 12 template on shared storage (clone, provision, a NIC, start, as Ansible's
// xenserver_guest does), waiting for VM_guest_metrics.networks["0/ip"] (wait_for_ip_address),
// `suspend` in allowed_operations (xapi's powercycle.py), a disk hotplugged, a live
// VM.pool_migrate (permute.py). The script waits with event.from, as a client that does not poll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startServer, type RunningServer } from '../../server/app.js';
import { parseCidr, parseIpv4, subnetOf } from '../../server/guest/dhcp.js';

const PYTHON = '/usr/bin/python3';
const XENAPI = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const PASSWORD = 'guest-python';

const SCRIPT = String.raw`
import json, sys, time
sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')
import XenAPI

url, password, shared_dir = sys.argv[1], sys.argv[2], sys.argv[3]
s = XenAPI.Session(url)
s.xenapi.login_with_password('root', password, '1.0', 'guest-python')
x = s.xenapi
out = {}

def wait_for(what, check, classes, limit=60.0):
    token = ''
    deadline = time.monotonic() + limit
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Exception('timed out waiting for ' + what)
        r = x.event_from(classes, token, 5.0)
        token = r['token']

pool = x.pool.get_all()[0]
# shared storage, so that the VM can move between the hosts
sr = x.SR.create(x.pool.get_master(pool), {'location': shared_dir}, '0', 'Shared', '', 'file', 'user', True, {})
x.pool.set_default_SR(pool, sr)
sr_uuid = x.SR.get_uuid(sr)
net = x.network.get_all_where('field "bridge" = "xenbr0"')[0]
templ = x.VM.get_by_name_label('Debian Bookworm 12')[0]

vm = x.VM.clone(templ, 'ansible-like')
oc = x.VM.get_other_config(vm)
x.VM.remove_from_other_config(vm, 'disks')
x.VM.add_to_other_config(vm, 'disks', oc['disks'].replace('sr=""', 'sr="%s"' % sr_uuid))
x.VM.provision(vm)
x.VM.set_is_a_template(vm, False)
x.VIF.create({'device': '0', 'network': net, 'VM': vm, 'MAC': '', 'MTU': '1500', 'other_config': {},
              'qos_algorithm_type': '', 'qos_algorithm_params': {}})
x.VM.start(vm, False, False)
out['power_state'] = x.VM.get_power_state(vm)

def ip():
    gm = x.VM.get_guest_metrics(vm)
    if gm == 'OpaqueRef:NULL':
        return None
    return x.VM_guest_metrics.get_networks(gm).get('0/ip')
out['ip'] = wait_for('0/ip', ip, ['vm', 'vm_guest_metrics'])
gm = x.VM.get_guest_metrics(vm)
g = x.VM_guest_metrics.get_record(gm)
out['networks'] = g['networks']
out['os_version'] = g['os_version']
out['PV_drivers_version'] = g['PV_drivers_version']
out['PV_drivers_detected'] = g['PV_drivers_detected']
out['live'] = g['live']
out['other'] = g['other']
out['vif_mac'] = x.VIF.get_MAC(x.VM.get_VIFs(vm)[0])

out['suspend_allowed'] = bool(wait_for('suspend', lambda: 'suspend' in x.VM.get_allowed_operations(vm), ['vm']))
out['allowed'] = x.VM.get_allowed_operations(vm)

vdi = x.VDI.create({'SR': sr, 'name_label': 'hotplugged', 'name_description': '', 'virtual_size': str(64 * 1024 * 1024),
                    'type': 'user', 'sharable': False, 'read_only': False, 'other_config': {}, 'xenstore_data': {},
                    'sm_config': {}, 'tags': []})
vbd = x.VBD.create({'VM': vm, 'VDI': vdi, 'userdevice': '1', 'bootable': False, 'mode': 'RW', 'type': 'Disk',
                    'unpluggable': True, 'empty': False, 'other_config': {}, 'qos_algorithm_type': '',
                    'qos_algorithm_params': {}})
x.VBD.plug(vbd)
out['hotplugged'] = x.VBD.get_currently_attached(vbd)
out['hotplugged_device'] = x.VBD.get_device(vbd)

here = x.VM.get_resident_on(vm)
other = [h for h in x.host.get_all() if h != here][0]
out['migrate_allowed'] = 'pool_migrate' in x.VM.get_allowed_operations(vm)
x.VM.pool_migrate(vm, other, {'live': 'true'})
out['migrated'] = x.VM.get_resident_on(vm) == other
out['ip_after_migrate'] = x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm)).get('0/ip')
x.VM.clean_shutdown(vm)
out['after_shutdown'] = x.VM.get_power_state(vm)
s.xenapi.session.logout()
print(json.dumps(out))
`;

let srv: RunningServer;
let out: any;

beforeAll(async () => {
  if (!existsSync(PYTHON) || !existsSync(XENAPI)) throw new Error(`${PYTHON} with os_xenapi is needed (apt-get install python3-os-xenapi)`);
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, seed: 'guest-python', authFailDelay: 0, hosts: 2, closeGrace: 0 });
  const { stdout } = await promisify(execFile)(PYTHON, ['-c', SCRIPT, srv.urls[0], PASSWORD, join(srv.emu.storageDir, 'shared-sr')], { timeout: 60_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
  out = JSON.parse(stdout);
}, 90_000);

afterAll(async () => {
  await srv?.close();
});

describe('a VM from a default template, driven by Python XenAPI', () => {
  it('boots and reports an address of its network\'s subnet in networks["0/ip"]', () => {
    const { emu } = srv;
    expect(out.power_state).toBe('Running');
    const net = [...emu.db.table('network').values()].find((r) => r.rec.bridge === 'xenbr0')!.rec;
    const subnet = subnetOf(net);
    expect(subnet).toEqual(parseCidr('10.0.0.0/16'));
    const ip = parseIpv4(out.ip)!;
    expect(ip).not.toBeNull();
    expect(ip >>> 16).toBe(subnet.base >>> 16);
    expect(out.networks['0/ipv4/0']).toBe(out.ip);
    // SLAAC: the interface identifier is the MAC's modified EUI-64
    const mac = String(out.vif_mac).split(':');
    const eui = `${(parseInt(mac[0], 16) ^ 2).toString(16)}${mac[1]}`.replace(/^0+/, '');
    expect(out.networks['0/ipv6/0']).toMatch(/^fd[0-9a-f]{2}:/);
    expect(out.networks['0/ipv6/0']).toContain(`${eui}:${mac[2].replace(/^0/, '')}ff:fe${mac[3]}`.replace(/:0+([0-9a-f])/g, ':$1'));
  });

  it('reports the guest as xe-guest-utilities on Debian 12 does', () => {
    expect(out.os_version).toMatchObject({ distro: 'debian', major: '12', name: 'Debian GNU/Linux 12 (bookworm)' });
    expect(out.os_version.uname).toMatch(/amd64$/);
    expect(out.PV_drivers_version).toMatchObject({ major: '8', minor: '4' });
    expect(out.PV_drivers_detected).toBe(true);
    expect(out.live).toBe(true);
    expect(out.other).toMatchObject({ 'feature-suspend': '1', 'feature-poweroff': '1', 'has-vendor-device': '0' });
  });

  it('allows suspend, clean_shutdown, clean_reboot and pool_migrate', () => {
    expect(out.suspend_allowed).toBe(true);
    expect(out.allowed).toEqual(expect.arrayContaining(['suspend', 'clean_shutdown', 'clean_reboot', 'pool_migrate']));
  });

  it('hotplugs a disk', () => {
    expect(out.hotplugged).toBe(true);
    // userdevice 1 (hdb while an HVM guest's first four disks have IDE names)
    expect(out.hotplugged_device).toMatch(/^(hd|xvd)b$/);
  });

  it('live-migrates to the other host, keeping its address', () => {
    expect(out.migrate_allowed).toBe(true);
    expect(out.migrated).toBe(true);
    expect(out.ip_after_migrate).toBe(out.ip);
    expect(out.after_shutdown).toBe('Halted');
  });
});
