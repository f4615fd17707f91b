// Python's XenAPI module (Debian's python3-os-xenapi, the SDK's XenAPI.py) against the emulator:
// test/python/xenapi_session.py logs in, reads records, provokes errors, follows events and logs out,
// then prints what it saw as JSON; the assertions are here. It runs with the system interpreter
// (/usr/bin/python3, where apt installs the module), asynchronously so that this process keeps
// serving its calls.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startServer, type RunningServer } from '../../server/app.js';
import { model } from '../../schema/index.js';

const PYTHON = '/usr/bin/python3';
const XENAPI = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const SCRIPT = fileURLToPath(new URL('../python/xenapi_session.py', import.meta.url));
const PASSWORD = 'python-test';

let srv: RunningServer;
let out: any;

beforeAll(async () => {
  if (!existsSync(PYTHON) || !existsSync(XENAPI)) {
    throw new Error(`${PYTHON} with os_xenapi is needed (apt-get install python3-os-xenapi)`);
  }
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, seed: 'python-xenapi', authFailDelay: 0, hosts: 2, closeGrace: 0 });
  const { stdout } = await promisify(execFile)(PYTHON, [SCRIPT, srv.urls[0], PASSWORD], {
    timeout: 20_000,
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
  });
  out = JSON.parse(stdout);
});

afterAll(async () => {
  await srv?.close();
});

describe('Python XenAPI.Session', () => {
  it('logs in with four params and reads the API version through pool.get_master', () => {
    const { emu } = srv;
    expect(out.handle).toMatch(/^OpaqueRef:[0-9a-f-]{36}$/);
    const release = model.releases.find((r) => `${r.version_major}.${r.version_minor}` === out.api_version);
    expect(release, out.api_version).toBeDefined();
    expect(out.api_version).toBe('2.21');
    expect(out.host).toEqual({
      API_version_major: '2', // an int over XML-RPC: a bare string
      API_version_major_kind: 'str',
      API_version_minor: '21',
      name_label: emu.db.get('host', emu.master)!.name_label,
      address: emu.db.get('host', emu.master)!.address,
    });
    expect(out.pool).toEqual({ count: 1, ref: emu.pool, master: emu.master, get_master: emu.master, other_config_kind: 'dict' });
  });

  it('reads records with XML-RPC types: ints as strings, DateTime, bool, float, struct, array', () => {
    const { emu } = srv;
    expect(out.vms.count).toBe(emu.db.count('VM'));
    expect(out.vms.templates).toBeGreaterThan(10);
    expect(out.vms.dom0_power_state).toBe('Running');
    expect(out.vms.kinds).toEqual({
      memory_static_max: 'str',
      domid: 'str',
      is_a_template: 'bool',
      HVM_shadow_multiplier: 'float',
      snapshot_time: 'DateTime',
      other_config: 'dict',
      VBDs: 'list',
      name_description: 'str',
    });
    expect(out.vms.memory_static_max).toBe(String(emu.db.get('VM', out.vms.dom0)!.memory_static_max));
    expect(out.vms.snapshot_time).toBe('19700101T00:00:00Z');
    expect(out.host_metrics.last_updated_kind).toBe('DateTime');
    expect(out.host_metrics.last_updated).toMatch(/^\d{8}T\d\d:\d\d:\d\dZ$/);
    expect(out.host_metrics.live).toBe(true);
    // the record has every field of the class (option fields may be absent)
    const vm = model.classes.find((c) => c.name === 'VM')!;
    const required = vm.fields.filter((f) => f.ty.k !== 'option').map((f) => f.name);
    expect(out.vms.dom0_fields).toEqual(expect.arrayContaining(required));
    for (const f of out.vms.dom0_fields) expect(vm.field.has(f), f).toBe(true);
    expect(out.vms.record_equals_get_record).toBe(true);
    expect(out.vms.by_uuid).toBe(out.vms.dom0);
    expect(out.vms.alias_VM_get_all).toBe(true);
  });

  it('finds VMs by name label', () => {
    expect(out.get_by_name_label.refs).toEqual([out.get_by_name_label.ref]);
    expect(srv.emu.db.get('VM', out.get_by_name_label.ref)!.name_label).toBe(out.get_by_name_label.label);
    expect(out.get_by_name_label_none).toEqual([]);
  });

  it('raises XenAPI.Failure with exact codes and params', () => {
    const { emu } = srv;
    const bad = 'OpaqueRef:00000000-0000-0000-0000-00000000dead';
    expect(out.errors).toEqual({
      handle_invalid: ['HANDLE_INVALID', 'VM', bad],
      count_mismatch: ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.start', '3', '0'],
      count_mismatch_extra: ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_record', '1', '2'],
      uuid_invalid: ['UUID_INVALID', 'VM', 'not-a-uuid'],
      method_unknown: ['MESSAGE_METHOD_UNKNOWN', 'VM.no_such_message'],
      // a default template cannot start (Xapi_vm_lifecycle.check_template)
      vm_is_template: ['VM_IS_TEMPLATE', out.get_by_name_label.ref, 'start'],
      async_fault: ['Fault', 'No async mode for this operation (rpc: VM.get_record)'],
      map_duplicate_key: ['MAP_DUPLICATE_KEY', 'pool', 'other_config', emu.pool, 'python-test'],
      auth_failed: ['SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure'],
      auth_failed_user: ['SESSION_AUTHENTICATION_FAILED', 'nobody', 'Authentication failure'],
    });
    expect(out.other_config_value).toBe('one');
    expect(out.other_config_removed).toBe(true);
  });

  it('follows event.from with a float timeout: struct result, lowercase classes, int counts', () => {
    const ev = out.events;
    expect(ev.initial_classes).toEqual(['pool', 'vm']);
    expect(ev.initial_ops).toEqual(['add']);
    expect(ev.initial_count).toBe(srv.emu.db.count('VM') + 1);
    expect(ev.token).toMatch(/^\d{20},\d{20}$/);
    expect(ev.counts_kind).toBe('int'); // <i4>, not a string
    expect(ev.count_vm).toBe(srv.emu.db.count('VM'));
    expect(ev.changed).toEqual([{ class: 'pool', operation: 'mod', ref: srv.emu.pool }]);
    expect(ev.changed_description).toBe('touched by python');
    expect(ev.changed_token_after).toBe(true);
    expect(ev.idle_events).toEqual([]);
    expect(ev.idle_token_same).toBe(true);
    expect(ev.alias).toBe(1); // event_from, the X_y alias
  });

  it('logs in again by itself after SESSION_INVALID', () => {
    expect(out.relogin).toEqual({ old_invalid: ['SESSION_INVALID', out.handle], pools_after: true, new_handle: true });
  });

  it('slave_local_login_with_password then local_logout', () => {
    expect(out.local).toEqual({
      handle: expect.stringMatching(/^OpaqueRef:/),
      api_version: '2.21',
      is_local_superuser: true,
      this_host: srv.emu.master,
      vms: srv.emu.db.count('VM'),
      after_logout: ['SESSION_INVALID', out.local.handle],
      handle_cleared: true,
    });
  });

  it('logs out', () => {
    // the session XenAPI.py opened again after SESSION_INVALID
    expect(out.logout.handle).not.toBe(out.handle);
    expect(out.logout.after).toEqual(['SESSION_INVALID', out.logout.handle]);
    expect(out.logout.handle_cleared).toBe(true);
    // no session of the script is left
    for (const [, row] of srv.emu.db.table('session')) expect(row.rec.originator).not.toBe('xapi-emu-test');
  });
});
