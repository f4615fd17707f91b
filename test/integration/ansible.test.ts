// Ansible's own module for XenServer/XCP-ng guests (community.general.xenserver_guest, Debian's
// ansible) against the emulator, as a user's playbook runs it: a VM made from a default template,
// powered on, and `wait_for_ip_address: true` returning once the simulated guest agent reports its
// address; and the same on a VLAN network made through XAPI, read back by xenserver_guest_info.
// The modules import XenAPI.py, which Debian ships as python3-os-xenapi. (xenserver_facts talks to
// xapi over the host's local socket only, so it has no place in a test from outside the host.)
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startEmulator, type EmulatorHandle } from '../../server/index.js';
import { connect } from './helpers/jsonrpc.js';
import { parseCidr, parseIpv4 } from '../../server/guest/dhcp.js';

const PLAYBOOK_BIN = '/usr/bin/ansible-playbook';
const XENAPI = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
let pool: EmulatorHandle;
let dir: string;

beforeAll(async () => {
  if (!existsSync(PLAYBOOK_BIN) || !existsSync(XENAPI)) {
    throw new Error(`${PLAYBOOK_BIN} and XenAPI.py are needed (apt-get install ansible python3-os-xenapi)`);
  }
  pool = await startEmulator({ seed: 'ansible' });
  dir = mkdtempSync(join(tmpdir(), 'xapi-emu-ansible-'));
});
afterAll(async () => {
  await pool?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs a playbook of these tasks against the pool; the value each registered, by name. */
async function play(name: string, tasks: string, registered: string[]): Promise<Record<string, any>> {
  const playbook = join(dir, `${name}.yml`);
  const out = (r: string) => join(dir, `${name}-${r}.json`);
  writeFileSync(playbook, `
- hosts: localhost
  gather_facts: false
  tasks:
${tasks}
${registered.map((r) => `    - ansible.builtin.copy:
        content: "{{ ${r} | to_json }}"
        dest: "${out(r)}"`).join('\n')}
`);
  await promisify(execFile)(PLAYBOOK_BIN, [playbook], {
    cwd: dir,
    env: { ...process.env, PYTHONPATH: dirname(XENAPI), ANSIBLE_NOCOLOR: '1', ANSIBLE_LOCALHOST_WARNING: 'false', ANSIBLE_INVENTORY_UNPARSED_WARNING: 'false' },
    timeout: 120_000,
  });
  return Object.fromEntries(registered.map((r) => [r, JSON.parse(readFileSync(out(r), 'utf8'))]));
}

const login = () => {
  const { hostname, port } = new URL(pool.url);
  return `hostname: "http://${hostname}:${port}"
        username: ${pool.username}
        password: "${pool.password}"
        validate_certs: false`;
};

it('xenserver_guest puts a NIC on a VLAN network by name: the guest leases in its subnet; xenserver_guest_info reads it', async () => {
  const x = await connect(pool.url, pool.username, pool.password);
  const SUBNET = '10.77.0.0/24';
  const net: string = await x.call('network.create', { name_label: 'vlan 77', name_description: '', MTU: 1500, other_config: { 'xapi-emu-dhcp-subnet': SUBNET }, tags: [] });
  const [vlanPif] = await x.call('pool.create_VLAN', 'eth0', net, 77);
  expect(await x.call('PIF.get_VLAN', vlanPif)).toBe(77);
  const { guest, info } = await play('vlan', `
    - community.general.xenserver_guest:
        ${login()}
        name: web-vlan
        template: Debian Bookworm 12
        state: poweredon
        wait_for_ip_address: true
        hardware:
          num_cpus: 1
          memory_mb: 512
        disks:
          - size_gb: 4
            sr: Local storage
        networks:
          - name: vlan 77
      register: guest
    - community.general.xenserver_guest_info:
        ${login()}
        name: web-vlan
      register: info
`, ['guest', 'info']);
  const s = parseCidr(SUBNET)!;
  const inSubnet = (ip: string) => parseIpv4(ip) !== null && parseIpv4(ip)! >>> (32 - s.prefix) === s.base >>> (32 - s.prefix);
  expect(guest.changed).toBe(true);
  expect(guest.instance.networks[0].name).toBe('vlan 77');
  expect(inSubnet(guest.instance.networks[0].ip)).toBe(true);
  expect(info.instance.state).toBe('poweredon');
  expect(info.instance.networks[0].ip).toBe(guest.instance.networks[0].ip);
  expect(info.instance.networks[0].mac).toBe(guest.instance.networks[0].mac);
  const [vm] = await x.call('VM.get_by_name_label', 'web-vlan');
  const [vif] = await x.call('VM.get_VIFs', vm);
  expect(await x.call('VIF.get_network', vif)).toBe(net);
  expect(await x.call('PIF.get_currently_attached', vlanPif)).toBe(true);
}, 150_000);

it('xenserver_guest creates a VM from a template, powers it on and waits for its IP address', async () => {
  const { hostname, port } = new URL(pool.url);
  const playbook = join(dir, 'guest.yml');
  writeFileSync(playbook, `
- hosts: localhost
  gather_facts: false
  tasks:
    - name: a guest from a default template
      community.general.xenserver_guest:
        hostname: "http://${hostname}:${port}"
        username: ${pool.username}
        password: "${pool.password}"
        validate_certs: false
        name: web-1
        template: Debian Bookworm 12
        state: poweredon
        wait_for_ip_address: true
        hardware:
          num_cpus: 2
          memory_mb: 1024
        disks:
          - size_gb: 8
            sr: Local storage
        networks:
          - name: Pool-wide network associated with eth0
      register: guest
    - name: the result
      ansible.builtin.copy:
        content: "{{ guest | to_json }}"
        dest: "${join(dir, 'result.json')}"
`);
  await promisify(execFile)(PLAYBOOK_BIN, [playbook], {
    cwd: dir,
    env: { ...process.env, PYTHONPATH: dirname(XENAPI), ANSIBLE_NOCOLOR: '1', ANSIBLE_LOCALHOST_WARNING: 'false', ANSIBLE_INVENTORY_UNPARSED_WARNING: 'false' },
    timeout: 120_000,
  });
  const result = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8'));
  expect(result.changed).toBe(true);
  expect(result.instance.state).toBe('poweredon');
  expect(result.instance.networks[0].ip).toMatch(/^10\.0\.\d+\.\d+$/);
  // the pool agrees with what the module saw
  const x = await connect(pool.url, pool.username, pool.password);
  const [vm] = await x.call('VM.get_by_name_label', 'web-1');
  expect(await x.call('VM.get_power_state', vm)).toBe('Running');
  const gm = await x.call('VM.get_guest_metrics', vm);
  expect((await x.call('VM_guest_metrics.get_networks', gm))['0/ip']).toBe(result.instance.networks[0].ip);
}, 150_000);
