// A generic XML-RPC client (the `xmlrpc` npm package) against the emulator over real sockets:
// the Status/Value envelope, XML-RPC types as a standard deserializer reads them, xapi's error codes
// and params, the /RPC2 path, the bare system.listMethods answer and an Async call followed to its
// task result through event.from.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import xmlrpc from 'xmlrpc';
import { startServer, type RunningServer } from '../../server/app.js';
import { model } from '../../schema/index.js';

const PASSWORD = 'xmlrpc-test';
const BAD = 'OpaqueRef:00000000-0000-0000-0000-00000000dead';

let srv: RunningServer;
let client: xmlrpc.Client;
let session: string;

type Envelope = { Status: 'Success'; Value: any } | { Status: 'Failure'; ErrorDescription: string[] };

function methodCall(c: xmlrpc.Client, method: string, params: unknown[]): Promise<any> {
  return new Promise((resolve, reject) => c.methodCall(method, params, (err: unknown, value: unknown) => (err ? reject(err) : resolve(value))));
}
const call = (method: string, ...params: unknown[]): Promise<Envelope> => methodCall(client, method, params);
/** The Value of a call that must succeed. */
async function value(method: string, ...params: unknown[]): Promise<any> {
  const r = await call(method, ...params);
  expect(r, method).toMatchObject({ Status: 'Success' });
  return (r as { Value: unknown }).Value;
}
const failure = (...description: string[]) => ({ Status: 'Failure', ErrorDescription: description });

beforeAll(async () => {
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, seed: 'xmlrpc-client', authFailDelay: 0, hosts: 1, closeGrace: 0 });
  const u = new URL(srv.urls[0]);
  client = xmlrpc.createClient({ host: u.hostname, port: Number(u.port), path: '/' });
  session = await value('session.login_with_password', 'root', PASSWORD, '1.0', 'xmlrpc-test');
});

afterAll(async () => {
  if (session) await call('session.logout', session);
  await srv?.close();
});

describe('xmlrpc npm client', () => {
  it('logs in with 2, 3 or 4 params and gets a session ref', async () => {
    expect(session).toMatch(/^OpaqueRef:[0-9a-f-]{36}$/);
    expect(srv.emu.db.get('session', session)?.originator).toBe('xmlrpc-test');
    for (const extra of [[], ['1.1']]) {
      const s = await value('session.login_with_password', 'root', PASSWORD, ...extra);
      expect(s).toMatch(/^OpaqueRef:/);
      expect(await call('session.logout', s)).toEqual({ Status: 'Success', Value: '' });
    }
  });

  it('reads VM.get_all_records: a struct by ref of complete records in XML-RPC types', async () => {
    const vms: Record<string, Record<string, any>> = await value('VM.get_all_records', session);
    expect(Object.keys(vms).sort()).toEqual([...srv.emu.db.table('VM').keys()].sort());
    const vm = model.classes.find((c) => c.name === 'VM')!;
    const required = vm.fields.filter((f) => f.ty.k !== 'option').map((f) => f.name);
    for (const [ref, rec] of Object.entries(vms)) {
      expect(Object.keys(rec), ref).toEqual(expect.arrayContaining(required));
    }
    const [dom0Ref, dom0] = Object.entries(vms).find(([, r]) => r.is_control_domain)!;
    expect(dom0.power_state).toBe('Running');
    expect(dom0.resident_on).toBe(srv.emu.master);
    expect(dom0.memory_static_max).toBe(String(srv.emu.db.get('VM', dom0Ref)!.memory_static_max)); // ints: bare strings
    expect(dom0.domid).toBe('0');
    expect(dom0.is_a_template).toBe(false); // <boolean>
    expect(typeof dom0.HVM_shadow_multiplier).toBe('number'); // <double>
    expect(dom0.snapshot_time).toBeInstanceOf(Date); // <dateTime.iso8601>
    expect((dom0.snapshot_time as Date).getTime()).toBe(0);
    expect(dom0.name_description).toBe(srv.emu.db.get('VM', dom0Ref)!.name_description); // bare text: a string
    expect(Array.isArray(dom0.VBDs)).toBe(true);
    expect(typeof dom0.other_config).toBe('object');
    expect(await value('VM.get_record', session, dom0Ref)).toEqual(dom0);
    // the X_y alias
    expect((await value('VM_get_all', session)).sort()).toEqual(Object.keys(vms).sort());
  });

  it('answers errors as Status Failure with exact codes and params', async () => {
    const pool = srv.emu.pool;
    expect(await call('VM.get_record', session, BAD)).toEqual(failure('HANDLE_INVALID', 'VM', BAD));
    expect(await call('VM.get_all', BAD)).toEqual(failure('SESSION_INVALID', BAD));
    expect(await call('VM.start', session)).toEqual(failure('MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.start', '3', '0'));
    // the count is checked before the session
    expect(await call('VM.get_record', BAD)).toEqual(failure('MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_record', '1', '0'));
    expect(await call('VM.get_by_uuid', session, 'nope')).toEqual(failure('UUID_INVALID', 'VM', 'nope'));
    expect(await call('VM.no_such_message')).toEqual(failure('MESSAGE_METHOD_UNKNOWN', 'VM.no_such_message'));
    expect(await call('VM.no_such_message', BAD)).toEqual(failure('SESSION_INVALID', BAD));
    expect(await call('vm.get_all', session)).toEqual(failure('MESSAGE_METHOD_UNKNOWN', 'vm.get_all'));
    expect(await call('session.login_with_password', 'root', 'wrong')).toEqual(failure('SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure'));
    expect(await call('pool.add_to_other_config', session, pool, 'xmlrpc', '1')).toEqual({ Status: 'Success', Value: '' });
    expect(await call('pool.add_to_other_config', session, pool, 'xmlrpc', '2')).toEqual(failure('MAP_DUPLICATE_KEY', 'pool', 'other_config', pool, 'xmlrpc'));
    expect(await call('pool.remove_from_other_config', session, pool, 'xmlrpc')).toEqual({ Status: 'Success', Value: '' });
    expect(await call('Async.VM.get_record', session, BAD)).toEqual(failure('Fault', 'No async mode for this operation (rpc: VM.get_record)'));
    // a read-only field has no setter
    expect(await call('VM.set_power_state', session, BAD, 'Halted')).toEqual(failure('MESSAGE_METHOD_UNKNOWN', 'VM.set_power_state'));
  });

  it('serves the /RPC2 path (Python ServerProxy without a path)', async () => {
    const u = new URL(srv.urls[0]);
    const rpc2 = xmlrpc.createClient({ host: u.hostname, port: Number(u.port), path: '/RPC2' });
    const r = await methodCall(rpc2, 'session.login_with_password', ['root', PASSWORD]);
    expect(r.Status).toBe('Success');
    const s = r.Value as string;
    expect(await methodCall(rpc2, 'pool.get_all', [s])).toEqual({ Status: 'Success', Value: [srv.emu.pool] });
    // sessions are shared with the other endpoints
    expect(await call('pool.get_all', s)).toEqual({ Status: 'Success', Value: [srv.emu.pool] });
    expect(await methodCall(rpc2, 'session.logout', [s])).toEqual({ Status: 'Success', Value: '' });
    expect(await call('pool.get_all', s)).toEqual(failure('SESSION_INVALID', s));
  });

  it('gets system.listMethods as a bare array of sync names, without a session', async () => {
    const names = await methodCall(client, 'system.listMethods', []);
    expect(Array.isArray(names)).toBe(true);
    expect(names).toContain('VM.get_all_records');
    expect(names).toContain('session.login_with_password');
    expect(names).toContain('event.from');
    expect(names.filter((n: string) => n.startsWith('Async.'))).toEqual([]);
    for (const n of names) expect(n).toMatch(/^[A-Za-z_0-9]+\.[A-Za-z_0-9]+$/);
  });

  it('runs Async calls in tasks whose result is an XML-RPC fragment, followed with event.from', async () => {
    /** The task's last snapshot once it is no longer pending, from event.from on that task only. */
    async function settled(task: string): Promise<Record<string, any>> {
      let token = '';
      let snapshot: Record<string, any> | undefined;
      while (snapshot === undefined || snapshot.status === 'pending') {
        // returns at once when the task has news; 30.5 goes as a <double>
        const r = await value('event.from', session, [`task/${task}`], token, 30.5);
        expect(typeof r.valid_ref_counts.task).toBe('number'); // <i4>
        expect(r.token).toMatch(/^\d{20},\d{20}$/);
        token = r.token;
        for (const e of r.events) {
          expect(e.class).toBe('task');
          if (e.ref === task && e.operation !== 'del') snapshot = e.snapshot;
        }
      }
      return snapshot;
    }

    const net = { name_label: 'xmlrpc-net', name_description: '', MTU: 1500, other_config: {}, bridge: '', managed: true, tags: [] };
    const task: string = await value('Async.network.create', session, net);
    expect(task).toMatch(/^OpaqueRef:/);
    const done = await settled(task);
    expect(done.status).toBe('success');
    expect(done.name_label).toBe('Async.network.create');
    expect(done.progress).toBe(1);
    expect(done.error_info).toEqual([]);
    expect(done.finished).toBeInstanceOf(Date);
    const m = /^<value>(OpaqueRef:[0-9a-f-]{36})<\/value>$/.exec(done.result);
    expect(m, done.result).not.toBeNull();
    const netRef = m![1];
    expect(await value('network.get_name_label', session, netRef)).toBe('xmlrpc-net');
    expect(await call('task.destroy', session, task)).toEqual({ Status: 'Success', Value: '' });
    expect(await call('task.get_status', session, task)).toEqual(failure('HANDLE_INVALID', 'task', task));

    // a void result is the empty value
    const task2: string = await value('Async.network.destroy', session, netRef);
    const done2 = await settled(task2);
    expect(done2.status).toBe('success');
    expect(done2.result).toBe('<value></value>');
    expect(await call('network.get_record', session, netRef)).toEqual(failure('HANDLE_INVALID', 'network', netRef));

    // a failure inside the task: error_info, status failure
    const holder: string = await value('task.create', session, 'holder', '');
    await value('task.add_to_other_config', session, holder, 'k', 'v1');
    const task3: string = await value('Async.task.add_to_other_config', session, holder, 'k', 'v2');
    const done3 = await settled(task3);
    expect(done3.status).toBe('failure');
    expect(done3.error_info).toEqual(['MAP_DUPLICATE_KEY', 'task', 'other_config', holder, 'k']);
    expect(done3.result).toBe('');
    for (const t of [task2, task3]) expect(await call('task.destroy', session, t)).toEqual({ Status: 'Success', Value: '' });
  });
});
