// The master role moving between the hosts of a pool, seen by real clients on each host's own
// address: pool.designate_new_master (the old master then answers HOST_IS_SLAVE with the new
// master's address, XO's xen-api follows it, the sessions go with the restarted toolstacks, a
// restart keeps the new master), and a master that fails with HA off: its members run in
// emergency mode until one takes the role (pool.emergency_transition_to_master) and points the
// others at itself (pool.recover_slaves, pool.emergency_reset_master).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createClient } from 'xen-api';
import { startServer, type RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { connect, XapiFault, type Client } from './helpers/jsonrpc.js';

const PASSWORD = 'master-test';
const PYTHON = '/usr/bin/python3';

const errorOf = async (p: Promise<unknown>): Promise<string[]> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof XapiFault) return e.description;
    throw e;
  }
  throw new Error('no error');
};

/** A JSON-RPC call on one host's address, on a connection of its own (none survives a restart). */
function rpc(url: string, method: string, ...params: unknown[]): Promise<{ result?: any; error?: string[] }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ method, params, id: 1 });
    const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    const req = request(new URL('/jsonrpc', url), { method: 'POST', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const j = JSON.parse(Buffer.concat(chunks).toString()) as { result?: unknown; error?: string[] | null };
        resolve(j.error ? { error: j.error } : { result: j.result });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const login = (url: string) => rpc(url, 'session.login_with_password', 'root', PASSWORD, '1.0', 'master-test');

describe('pool.designate_new_master', () => {
  let dir: string;
  let srv: RunningServer;
  let x: Client;
  let hosts: string[];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xapi-emu-master-'));
    srv = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0, hosts: 3, closeGrace: 0, nbdPort: null });
    x = await connect(srv.urls[0], 'root', PASSWORD);
    hosts = srv.urls.map((u) => srv.emu.hostByAddress(new URL(u).hostname)!);
  });

  afterAll(async () => {
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('moves the role: the old master answers HOST_IS_SLAVE with the new address, the new one answers', async () => {
    const [old, next] = hosts;
    const nextAddress = await x.call('host.get_address', next);
    expect(await x.call('pool.is_slave', next)).toBe(true);
    expect(await x.call('pool.is_slave', old)).toBe(false);
    // the master already: nothing happens
    await x.call('pool.designate_new_master', old);
    expect(await x.call('pool.get_master', srv.emu.pool)).toBe(old);

    await x.call('pool.designate_new_master', next);
    // both toolstacks restarted: the sessions (which xapi does not persist) are gone
    expect((await rpc(srv.urls[1], 'pool.get_all', x.session)).error).toEqual(['SESSION_INVALID', x.session]);
    expect((await login(srv.urls[0])).error).toEqual(['HOST_IS_SLAVE', nextAddress]);
    const y = await connect(srv.urls[1], 'root', PASSWORD);
    expect(await y.call('pool.get_master', srv.emu.pool)).toBe(next);
    expect(await y.call('pool.is_slave', old)).toBe(true);
    expect(await y.call('pool.is_slave', next)).toBe(false);
    // a session of the new master on the old one: HOST_IS_SLAVE too
    expect((await rpc(srv.urls[0], 'pool.get_all', y.session)).error).toEqual(['HOST_IS_SLAVE', nextAddress]);
    const nextUuid = await y.call('host.get_uuid', next);
    const msgs = Object.values(await y.call('message.get_all_records')) as { name: string; obj_uuid: string; cls: string; priority: string }[];
    expect(msgs.filter((m) => m.name === 'POOL_MASTER_TRANSITION')).toEqual([expect.objectContaining({ obj_uuid: nextUuid, cls: 'Host', priority: 4 })]);
  });

  it('XO\'s xen-api, pointed at the old master, follows HOST_IS_SLAVE to the new one', async () => {
    const xo = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, watchEvents: false });
    try {
      await xo.connect();
      expect((xo as unknown as { _url: { hostname: string } })._url.hostname).toBe(new URL(srv.urls[1]).hostname);
      expect(await xo.call('pool.get_master', srv.emu.pool)).toBe(hosts[1]);
    } finally {
      await xo.disconnect();
    }
  });

  it('Python\'s XenAPI gets HOST_IS_SLAVE with the master\'s address from the old master', async () => {
    const script = `
import sys, json
sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')
import XenAPI
s = XenAPI.Session(sys.argv[1])
try:
    s.xenapi.login_with_password('root', sys.argv[2], '1.0', 'py')
    print(json.dumps(None))
except XenAPI.Failure as f:
    print(json.dumps(f.details))
`;
    const { stdout } = await promisify(execFile)(PYTHON, ['-c', script, srv.urls[0], PASSWORD], { timeout: 20_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
    expect(JSON.parse(stdout)).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[1]).hostname]);
  });

  it('a restart keeps the new master', async () => {
    await srv.toolstackRestart();
    expect(srv.emu.master).toBe(hosts[1]);
    expect((await login(srv.urls[0])).error).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[1]).hostname]);
    const y = await connect(srv.urls[1], 'root', PASSWORD);
    expect(await y.call('pool.get_master', srv.emu.pool)).toBe(hosts[1]);
    // and the role can move back
    await y.call('pool.designate_new_master', hosts[0]);
    expect((await login(srv.urls[1])).error).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[0]).hostname]);
    x = await connect(srv.urls[0], 'root', PASSWORD);
    expect(await x.call('pool.get_master', srv.emu.pool)).toBe(hosts[0]);
  });

  it('a member that is down cannot become master', async () => {
    const ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
    const rule = await ctl.faults.create({ match: { host: hosts[2] }, effect: { host_down: true } });
    try {
      expect(await errorOf(x.call('pool.designate_new_master', hosts[2]))).toEqual(['HOST_OFFLINE', hosts[2]]);
      // a peer that cannot be reached makes the proposal fail: nothing changes
      expect(await errorOf(x.call('pool.designate_new_master', hosts[1]))).toEqual(['HOST_OFFLINE', hosts[2]]);
      expect(await x.call('pool.get_master', srv.emu.pool)).toBe(hosts[0]);
    } finally {
      await ctl.faults.delete({ id: rule.id });
    }
  });
});

describe('a master that fails with HA off', () => {
  let srv: RunningServer;
  let ctl: ControlClient;
  let hosts: string[];

  beforeAll(async () => {
    srv = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, hosts: 3, closeGrace: 0, nbdPort: null });
    hosts = srv.urls.map((u) => srv.emu.hostByAddress(new URL(u).hostname)!);
    ctl = controlClient({ url: srv.urls[1], username: 'root', password: PASSWORD });
  });

  afterAll(async () => {
    await srv?.close();
  });

  it('leaves its members in emergency mode until one takes the role and recovers the others', async () => {
    const [old, a, b] = hosts;
    const rule = await ctl.faults.create({ match: { host: old }, effect: { host_down: true } });
    // the master's address answers nothing; its members wait for it
    await expect(login(srv.urls[0])).rejects.toThrow();
    expect((await login(srv.urls[1])).error).toEqual(['HOST_STILL_BOOTING']);
    expect((await login(srv.urls[2])).error).toEqual(['HOST_STILL_BOOTING']);

    // the emergency calls work, on a local session
    const local = (await rpc(srv.urls[1], 'session.slave_local_login_with_password', 'root', PASSWORD)).result as string;
    expect((await rpc(srv.urls[1], 'host.is_in_emergency_mode', local)).result).toBe(true);
    expect((await rpc(srv.urls[1], 'pool.emergency_transition_to_master', local)).result).toBe('');

    const y = await connect(srv.urls[1], 'root', PASSWORD);
    expect(await y.call('pool.get_master', srv.emu.pool)).toBe(a);
    // the other member still follows the old master
    expect((await login(srv.urls[2])).error).toEqual(['HOST_STILL_BOOTING']);
    expect(await y.call('pool.recover_slaves')).toEqual([b]);
    expect((await login(srv.urls[2])).error).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[1]).hostname]);

    // a member pointed at the dead master by emergency_reset_master is in emergency mode again
    const localB = (await rpc(srv.urls[2], 'session.slave_local_login_with_password', 'root', PASSWORD)).result as string;
    expect((await rpc(srv.urls[2], 'pool.emergency_reset_master', localB, new URL(srv.urls[0]).hostname)).result).toBe('');
    expect((await login(srv.urls[2])).error).toEqual(['HOST_STILL_BOOTING']);
    const localB2 = (await rpc(srv.urls[2], 'session.slave_local_login_with_password', 'root', PASSWORD)).result as string;
    expect((await rpc(srv.urls[2], 'pool.emergency_reset_master', localB2, new URL(srv.urls[1]).hostname)).result).toBe('');
    expect((await login(srv.urls[2])).error).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[1]).hostname]);

    // the old master comes back as a member of the new one
    await ctl.faults.delete({ id: rule.id });
    expect((await login(srv.urls[0])).error).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[1]).hostname]);
    const z = await connect(srv.urls[1], 'root', PASSWORD);
    expect(await z.call('pool.get_master', srv.emu.pool)).toBe(a);
    expect(await z.call('host_metrics.get_live', await z.call('host.get_metrics', old))).toBe(true);
  });
});
