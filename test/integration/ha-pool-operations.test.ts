// The pool's allowed_operations and current_operations (xapi_pool_helpers.ml), through JSON-RPC and
// the Python XenAPI SDK: what HA on or off allows, an HA enable in progress (held by a hang on the
// VDI.create of its statefile) blocking the other pool-wide operations with HA_ENABLE_IN_PROGRESS,
// the events of the pool's marking, and a restart dropping the marking of a task that is gone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool } from './helpers/pool.js';

const PASSWORD = 'ha-ops-test';

let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let shared: string;
let hosts: string[];

/** Polls (each turn is a call over a socket) until `f` gives a value. */
async function until<T>(what: string, f: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = await f();
    if (v !== undefined) return v;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`still waiting: ${what}`);
}

const finished = (task: string) =>
  until(`task ${task}`, async () => {
    const rec = await x.call('task.get_record', task);
    return rec.status === 'pending' ? undefined : rec;
  });

/** A restart closed the connections: a kept-alive one fails once. */
async function once<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if ((e as Error).message !== 'fetch failed') throw e;
    return f();
  }
}

const poolRef = () => srv.emu.pool;
const allowed = async (): Promise<string[]> => x.call('pool.get_allowed_operations', poolRef());

const WITH_HA_OFF = [
  'ha_enable', 'cluster_create', 'designate_new_master', 'tls_verification_enable', 'configure_repositories', 'sync_updates',
  'sync_bundle', 'apply_updates', 'cert_refresh', 'exchange_certificates_on_join', 'exchange_ca_certificates_on_join',
  'copy_primary_host_certs', 'eject', 'get_updates', 'exchange_crls_on_join',
];

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, nbdPort: null }));
  hosts = srv.urls.map((u) => srv.emu.hostByAddress(new URL(u).hostname)!);
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  shared = await createSharedSr(x, srv, hosts[0]);
});

afterAll(async () => {
  await srv?.close();
});

describe("the pool's operations", () => {
  it('with HA off: everything but ha_disable, in xapi order', async () => {
    expect(await allowed()).toEqual(WITH_HA_OFF);
    expect(await x.call('pool.get_current_operations', poolRef())).toEqual({});
  });

  it('an HA enable in progress blocks the other pool-wide operations, with events', async () => {
    const token = (await x.call('event.from', ['pool'], '', 0)).token as string;
    // the enable stops at the creation of its statefile
    const rule = await ctl.faults.create({ match: { method: 'VDI.create' }, effect: { hang: true } });
    const task: string = await x.call('Async.pool.enable_ha', [shared], {});
    await until('the enable to hang', async () => ((await ctl.faults.get({ id: rule.id })).hanging === 1 ? true : undefined));

    expect(await x.call('pool.get_current_operations', poolRef())).toEqual({ [task]: 'ha_enable' });
    expect(await allowed()).toEqual([]);
    expect(await faultOf(x.call('pool.disable_ha'))).toEqual(['HA_ENABLE_IN_PROGRESS']);
    expect(await faultOf(x.call('pool.enable_ha', [shared], {}))).toEqual(['HA_ENABLE_IN_PROGRESS']);
    expect(await faultOf(x.call('pool.designate_new_master', hosts[1]))).toEqual(['HA_ENABLE_IN_PROGRESS']);

    const marked = await x.call('event.from', ['pool'], token, 0);
    expect(marked.events.map((e: any) => [e.operation, e.snapshot.current_operations, e.snapshot.allowed_operations])).toContainEqual(['mod', { [task]: 'ha_enable' }, []]);

    await ctl.faults.release({ id: rule.id });
    expect((await finished(task)).status).toBe('success');
    await ctl.faults.delete({ id: rule.id });

    const after = await x.call('event.from', ['pool'], marked.token, 0);
    const last = after.events.at(-1);
    expect(last.snapshot).toMatchObject({ ha_enabled: true, current_operations: {} });
    expect(last.snapshot.allowed_operations).toEqual(await allowed());
  });

  it('with HA on: ha_disable, neither ha_enable nor tls_verification_enable nor cluster_create', async () => {
    const ops = await allowed();
    expect(ops).toEqual(['ha_disable', ...WITH_HA_OFF.filter((o) => !['ha_enable', 'tls_verification_enable', 'cluster_create'].includes(o))]);
    expect(await faultOf(x.call('pool.enable_ha', [shared], {}))).toEqual(['HA_IS_ENABLED']);
  });

  it('the Python SDK reads them; disable_ha gives ha_enable back', async () => {
    const script = `
import sys
sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')
import XenAPI
s = XenAPI.Session(sys.argv[1])
s.xenapi.login_with_password('root', sys.argv[2])
p = s.xenapi.pool.get_all()[0]
s.xenapi.pool.disable_ha()
print(','.join(s.xenapi.pool.get_allowed_operations(p)))
print(len(s.xenapi.pool.get_current_operations(p)))
`;
    const { stdout } = await promisify(execFile)('python3', ['-c', script, srv.urls[0], PASSWORD], { timeout: 60_000 });
    const out = stdout.trim().split('\n');
    expect(out).toEqual([WITH_HA_OFF.join(','), '0']);
  });

  it('a toolstack restart drops the marking of an enable it cut', async () => {
    // without a statefile VDI the enable makes one again, and stops there
    const statefiles = Object.entries(await x.call('VDI.get_all_records')).filter(([, v]: [string, any]) => v.type === 'ha_statefile');
    for (const [vdi] of statefiles) await x.call('VDI.destroy', vdi);
    const rule = await ctl.faults.create({ match: { method: 'VDI.create' }, effect: { hang: true } });
    const task: string = await x.call('Async.pool.enable_ha', [shared], {});
    await until('the enable to hang', async () => ((await ctl.faults.get({ id: rule.id })).hanging === 1 ? true : undefined));
    expect(await x.call('pool.get_current_operations', poolRef())).toEqual({ [task]: 'ha_enable' });

    await srv.toolstackRestart();
    x = await once(() => connect(srv.urls[0], 'root', PASSWORD));
    expect(await x.call('pool.get_current_operations', poolRef())).toEqual({});
    expect(await allowed()).toEqual(WITH_HA_OFF);
    expect(await x.call('pool.get_ha_enabled', poolRef())).toBe(false);
  });
});
