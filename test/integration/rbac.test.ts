// Users, roles and sessions over real sockets (WIRE.md §1 steps 6–7, §5): RBAC_PERMISSION_DENIED with
// xapi's permission names and message, map keys guarded by other roles, session records and
// subjects, failed logins, and calls received by a pool member.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';

const PASSWORD = 'rbac-test';
const NULL = 'OpaqueRef:NULL';
const ALL_ROLES = 'pool-admin, pool-operator, vm-power-admin, vm-admin, vm-operator';
const denied = (permission: string, roles: string) =>
  ['RBAC_PERMISSION_DENIED', permission, `No permission in user session. (Roles with this permission: ${roles})`];

let server: RunningServer;
let master: string; // URL of the master
let member: string; // URL of the pool member (127.0.0.2)

async function rpc(url: string, method: string, params: unknown[]): Promise<{ raw: string; result?: any; error?: string[] }> {
  const r = await fetch(new URL('/jsonrpc', url), {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }),
  });
  expect(r.status).toBe(200);
  const raw = await r.text();
  const body = JSON.parse(raw);
  if ('result' in body) return { raw, result: body.result };
  return { raw, error: [body.error.message, ...body.error.data] };
}
async function call(method: string, ...params: unknown[]): Promise<any> {
  const r = await rpc(master, method, params);
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}
async function fail(method: string, ...params: unknown[]): Promise<string[]> {
  const r = await rpc(master, method, params);
  if (!r.error) throw new Error(`${method}: expected an error, got ${r.raw}`);
  return r.error;
}
const login = (user: string, pwd: string) => call('session.login_with_password', user, pwd, '1.1', 'rbac-test');

async function xmlCall(url: string, method: string, ...params: string[]): Promise<string> {
  const body = `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params.map((p) => `<param><value>${p}</value></param>`).join('')}</params></methodCall>`;
  const r = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'text/xml' } });
  return r.text();
}
const xmlFailure = (...desc: string[]) =>
  '<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member>' +
  `<member><name>ErrorDescription</name><value><array><data>${desc.map((d) => `<value>${d}</value>`).join('')}</data></array></value></member></struct></value></param></params></methodResponse>`;

let root: string;
let ro: string;
let op: string;
let pool: string;
let vm: string;

beforeAll(async () => {
  server = await startServer({
    port: 0, memory: true, password: PASSWORD, authFailDelay: 0, hosts: 2,
    users: [
      { name: 'ro', password: 'x', role: 'read-only' },
      { name: 'op', password: 'y', role: 'vm-operator' },
      { name: 'pop', password: 'z', role: 'pool-operator' },
    ],
  });
  [master, member] = server.urls;
  root = await login('root', PASSWORD);
  ro = await login('ro', 'x');
  op = await login('op', 'y');
  [pool] = await call('pool.get_all', root);
  vm = Object.keys(await call('VM.get_all_records_where', root, 'field "is_a_template" = "false" and field "is_control_domain" = "false"'))[0]
    ?? await call('VM.create', root, {
      name_label: 'rbac-vm', user_version: 1, is_a_template: false, affinity: NULL, memory_static_max: 1073741824,
      memory_dynamic_max: 1073741824, memory_dynamic_min: 1073741824, memory_static_min: 1073741824, VCPUs_params: {},
      VCPUs_max: 1, VCPUs_at_startup: 1, actions_after_shutdown: 'destroy', actions_after_reboot: 'restart',
      actions_after_crash: 'restart', PV_bootloader: '', PV_kernel: '', PV_ramdisk: '', PV_args: '', PV_bootloader_args: '',
      PV_legacy_args: '', HVM_boot_policy: '', HVM_boot_params: {}, platform: {}, PCI_bus: '', other_config: {}, recommendations: '',
    });
});
afterAll(async () => {
  await server?.close();
});

describe('roles', () => {
  it('read-only reads everything it may', async () => {
    expect(Object.keys(await call('VM.get_all_records', ro))).toContain(vm);
    expect((await call('pool.get_record', ro, pool)).uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect((await call('event.from', ro, ['pool'], '', 0)).events.length).toBe(1);
  });

  it('read-only: pool.add_to_other_config is RBAC_PERMISSION_DENIED [lower-case permission; message with the roles]', async () => {
    expect(await fail('pool.add_to_other_config', ro, pool, 'k', 'v')).toEqual(denied('pool.add_to_other_config', 'pool-admin, pool-operator'));
    // a key guarded for more roles gives the key permission
    expect(await fail('pool.add_to_other_config', ro, pool, 'folder', '/f')).toEqual(denied('pool.add_to_other_config/key:folder', ALL_ROLES));
    expect(await fail('network.create', ro, { name_label: 'n', other_config: {} })).toEqual(denied('network.create', 'pool-admin, pool-operator, vm-power-admin, vm-admin'));
    expect(await fail('VM.set_name_label', ro, vm, 'x')).toEqual(denied('vm.set_name_label', 'pool-admin, pool-operator, vm-power-admin, vm-admin'));
    expect(await fail('VM.add_tags', ro, vm, 'x')).toEqual(denied('vm.add_tags', ALL_ROLES));
    expect(await call('pool.get_other_config', root, pool)).not.toHaveProperty('k');
    // the Async form is refused the same way
    expect(await fail('Async.network.create', ro, { name_label: 'n', other_config: {} })).toEqual(denied('network.create', 'pool-admin, pool-operator, vm-power-admin, vm-admin'));
  });

  it('RBAC comes after the arity and session checks, before the handles', async () => {
    expect(await fail('pool.add_to_other_config', ro, pool, 'k')).toEqual(['MESSAGE_PARAMETER_COUNT_MISMATCH', 'pool.add_to_other_config', '3', '2']);
    expect(await fail('pool.add_to_other_config', 'OpaqueRef:dead', pool, 'k', 'v')).toEqual(['SESSION_INVALID', 'OpaqueRef:dead']);
    expect(await fail('pool.add_to_other_config', ro, 'OpaqueRef:nope', 'k', 'v')).toEqual(denied('pool.add_to_other_config', 'pool-admin, pool-operator'));
  });

  it('vm-operator: VM.add_to_other_config with the key "folder" (map_keys_roles), not with another key', async () => {
    await call('VM.add_to_other_config', op, vm, 'folder', '/mine');
    await call('VM.add_to_other_config', op, vm, 'XenCenter.CustomFields.colour', 'blue');
    expect(await fail('VM.add_to_other_config', op, vm, 'other', 'v')).toEqual(denied('vm.add_to_other_config', 'pool-admin, pool-operator, vm-power-admin, vm-admin'));
    expect(await fail('VM.add_to_other_config', op, vm, 'pci', '0/0000:00:02.0')).toEqual(denied('vm.add_to_other_config/key:pci', 'pool-admin'));
    expect(await fail('VM.remove_from_other_config', op, vm, 'other')).toEqual(denied('vm.remove_from_other_config', 'pool-admin, pool-operator, vm-power-admin, vm-admin'));
    await call('VM.remove_from_other_config', op, vm, 'folder');
    const oc = await call('VM.get_other_config', root, vm);
    expect(oc).toMatchObject({ 'XenCenter.CustomFields.colour': 'blue' });
    expect(oc).not.toHaveProperty('folder');
    expect(oc).not.toHaveProperty('other');
    // root may do anything
    await call('VM.add_to_other_config', root, vm, 'pci', 'x');
    await call('VM.remove_from_other_config', root, vm, 'pci');
  });

  it('the alias form is checked as the same permission', async () => {
    expect(await fail('pool_add_to_other_config', ro, pool, 'k', 'v')).toEqual(expect.arrayContaining(['RBAC_PERMISSION_DENIED']));
  });

  it('another user’s task needs the task.destroy/any permission (pool-operator)', async () => {
    // TaskHelper.assert_op_valid checks Rbac_static.permission_task_destroy_any, "task.destroy/any"
    const rootTask = await call('task.create', root, 'root-task', '');
    expect(await fail('task.cancel', ro, rootTask)).toEqual(denied('task.destroy/any', 'pool-admin, pool-operator'));
    expect(await fail('task.destroy', ro, rootTask)).toEqual(denied('task.destroy/any', 'pool-admin, pool-operator'));
    expect(await fail('task.set_status', op, rootTask, 'success')).toEqual(denied('task.destroy/any', 'pool-admin, pool-operator'));
    const own = await call('task.create', ro, 'ro-task', '');
    await call('task.cancel', ro, own);
    await call('task.set_status', ro, own, 'success');
    await call('task.destroy', ro, own);
    const pop = await login('pop', 'z');
    expect((await call('session.get_rbac_permissions', pop, pop))).toContain('task.destroy/any');
    expect((await call('session.get_rbac_permissions', ro, ro))).not.toContain('task.destroy/any');
    await call('task.cancel', pop, rootTask);
    expect(Object.values(await call('task.get_current_operations', root, rootTask))).toEqual(['cancel']);
    await call('session.logout', pop);
  });
});

describe('sessions and subjects', () => {
  it('session.get_record(s, s): a user session is not the local superuser and lists its permissions', async () => {
    const rec = await call('session.get_record', ro, ro);
    expect(rec.is_local_superuser).toBe(false);
    expect(rec.auth_user_name).toBe('ro');
    expect(rec.auth_user_sid).toMatch(/^S-1-5-21-/);
    expect(rec.originator).toBe('rbac-test');
    expect(rec.pool).toBe(false);
    expect(rec.rbac_permissions).toEqual(expect.arrayContaining(['vm.get_record', 'pool.get_all_records', 'event.from', 'session.logout']));
    expect(rec.rbac_permissions).not.toContain('pool.add_to_other_config');
    expect(rec.rbac_permissions).not.toContain('vm.add_to_other_config/key:folder');
    expect(rec.rbac_permissions.every((p: string) => p === p.toLowerCase())).toBe(true);
    const opRec = await call('session.get_record', op, op);
    expect(opRec.rbac_permissions).toEqual(expect.arrayContaining(['vm.add_to_other_config/key:folder', 'vm.add_to_other_config/key:xencenter.customfields.*', 'vm.start']));
    expect(opRec.rbac_permissions).not.toContain('vm.add_to_other_config');
    const rootRec = await call('session.get_record', root, root);
    expect(rootRec.is_local_superuser).toBe(true);
    expect(rootRec.subject).toBe(NULL);
    expect(rec.subject).not.toBe(NULL);
    expect((await call('subject.get_record', root, rec.subject)).subject_identifier).toBe(rec.auth_user_sid);
  });

  it('session getters take the session twice; there is no session.get_all', async () => {
    const [masterHost] = (await call('host.get_all_where', root, 'field "address" = "127.0.0.1"'));
    expect(await call('session.get_this_host', ro, ro)).toBe(masterHost);
    expect(await call('session.get_this_user', root, root)).toBe(NULL);
    expect(await call('session.get_is_local_superuser', root, ro)).toBe(false);
    expect(await fail('session.get_this_host', ro)).toEqual(['MESSAGE_PARAMETER_COUNT_MISMATCH', 'session.get_this_host', '1', '0']);
    expect(await fail('session.get_all', root)).toEqual(['MESSAGE_METHOD_UNKNOWN', 'session.get_all']);
    expect(await fail('session.get_all_records', root)).toEqual(['MESSAGE_METHOD_UNKNOWN', 'session.get_all_records']);
    const methods: string[] = await call('system.listMethods');
    expect(methods).toContain('session.get_this_host');
    expect(methods.filter((m) => m.startsWith('session.get_all'))).toEqual(['session.get_all_subject_identifiers']);
  });

  it('configured users are subjects with their role; session.get_all_subject_identifiers lists them', async () => {
    const subjects = Object.values(await call('subject.get_all_records', root)) as any[];
    const byName = new Map(subjects.map((x) => [x.other_config['subject-name'], x]));
    expect([...byName.keys()].sort()).toEqual(['op', 'pop', 'ro']);
    const roleName = async (r: string) => call('role.get_name_label', root, r);
    expect(await Promise.all(byName.get('ro').roles.map(roleName))).toEqual(['read-only']);
    expect(await Promise.all(byName.get('op').roles.map(roleName))).toEqual(['vm-operator']);
    const sids = await call('session.get_all_subject_identifiers', ro);
    expect([...sids].sort()).toEqual(subjects.map((x) => x.subject_identifier).sort());
    expect(sids).toContain((await call('session.get_record', op, op)).auth_user_sid);
  });

  it('a bad password is SESSION_AUTHENTICATION_FAILED [uname; message]', async () => {
    for (const [u, p] of [['ro', 'wrong'], ['root', 'wrong'], ['nobody', 'x'], ['ro', 'y']]) {
      const e = await fail('session.login_with_password', u, p);
      expect(e).toEqual(['SESSION_AUTHENTICATION_FAILED', u, 'Authentication failure']);
    }
    const x = await xmlCall(master, 'session.login_with_password', 'ro', 'bad');
    expect(x).toBe(xmlFailure('SESSION_AUTHENTICATION_FAILED', 'ro', 'Authentication failure'));
  });

  it('logout ends only that session', async () => {
    const s2 = await login('ro', 'x');
    await call('session.logout', s2);
    expect(await fail('pool.get_all', s2)).toEqual(['SESSION_INVALID', s2]);
    expect(await call('pool.get_all', ro)).toEqual([pool]);
  });
});

describe('failed-login delay', () => {
  it('waits the configured delay before answering a failed login (xapi: 5 s)', async () => {
    const other = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0.3 });
    try {
      expect(other.emu.authFailDelay).toBe(0.3);
      const url = other.urls[0];
      const t0 = performance.now();
      const r = await rpc(url, 'session.login_with_password', ['root', 'wrong']);
      const waited = performance.now() - t0;
      expect(r.error).toEqual(['SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure']);
      expect(waited).toBeGreaterThanOrEqual(280);
      const ok = await rpc(url, 'session.login_with_password', ['root', PASSWORD]);
      expect(ok.result).toMatch(/^OpaqueRef:/);
    } finally {
      await other.close();
    }
  });

  it('defaults to 5 s (not waited for here)', async () => {
    const other = await startServer({ port: 0, memory: true, password: PASSWORD });
    try {
      expect(other.emu.authFailDelay).toBe(5);
    } finally {
      await other.close();
    }
    expect(server.emu.authFailDelay).toBe(0);
  });
});

describe('pool member (127.0.0.2)', () => {
  it('refuses a login with HOST_IS_SLAVE [master address]', async () => {
    expect(member).toMatch(/^http:\/\/127\.0\.0\.2:\d+\/$/);
    expect(await xmlCall(member, 'session.login_with_password', 'root', PASSWORD)).toBe(xmlFailure('HOST_IS_SLAVE', '127.0.0.1'));
    expect((await rpc(member, 'session.login_with_password', ['ro', 'x'])).error).toEqual(['HOST_IS_SLAVE', '127.0.0.1']);
  });

  it('refuses a pool session with HOST_IS_SLAVE, after the session check', async () => {
    expect((await rpc(member, 'pool.get_all', [root])).error).toEqual(['HOST_IS_SLAVE', '127.0.0.1']);
    expect((await rpc(member, 'VM.get_record', [ro, vm])).error).toEqual(['HOST_IS_SLAVE', '127.0.0.1']);
    expect((await rpc(member, 'pool.get_all', ['OpaqueRef:dead'])).error).toEqual(['SESSION_INVALID', 'OpaqueRef:dead']);
    // the same sessions still work on the master
    expect(await call('pool.get_all', root)).toEqual([pool]);
  });

  it('accepts an emergency local login, valid on that host only', async () => {
    const r = await rpc(member, 'session.slave_local_login_with_password', ['root', PASSWORD]);
    const local = r.result as string;
    expect(local).toMatch(/^OpaqueRef:/);
    expect((await rpc(member, 'pool.get_all', [local])).result).toEqual([pool]);
    expect((await rpc(master, 'pool.get_all', [local])).error).toEqual(['SESSION_INVALID', local]);
    expect((await rpc(member, 'session.local_logout', [local])).result).toBe('');
    expect((await rpc(member, 'pool.get_all', [local])).error).toEqual(['SESSION_INVALID', local]);
  });
});
