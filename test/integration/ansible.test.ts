// Ansible's own module for XenServer/XCP-ng guests (community.general.xenserver_guest, Debian's
// ansible) against the emulator, as a user's playbook runs it: a VM made from a default template,
// powered on, and `wait_for_ip_address: true` returning once the simulated guest agent reports its
// address. The module imports XenAPI.py, which Debian ships as python3-os-xenapi.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startEmulator, type EmulatorHandle } from '../../server/index.js';
import { connect } from './helpers/jsonrpc.js';

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
