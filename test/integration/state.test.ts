// State across restarts: a clean close and restart on the same data directory, an unclean stop
// (SIGKILL of the real CLI right after the last acknowledged write), the toolstack restart
// (in-process and by SIGHUP), and --seed determinism.
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { startServer, type RunningServer } from '../../server/app.js';
import { exited, scratch } from './helpers/cli.js';

const PASSWORD = 'state-test';

/** JSON-RPC v1 over a fresh connection each time (agent: false): no pooled keep-alive socket can
 * outlive a restart of the server. */
function rpc(url: string, method: string, params: unknown[]): Promise<{ result?: any; error?: string[] }> {
  const body = JSON.stringify({ method, params, id: 1 });
  return new Promise((resolve, reject) => {
    const req = request(new URL('/jsonrpc', url), { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => {
        try {
          const j = JSON.parse(data);
          resolve(j.error ? { error: j.error } : { result: j.result });
        } catch (e) {
          reject(new Error(`${method}: HTTP ${res.statusCode} ${data.slice(0, 200)}`));
        }
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
async function call(url: string, method: string, ...params: unknown[]): Promise<any> {
  const r = await rpc(url, method, params);
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}
const login = (url: string) => call(url, 'session.login_with_password', 'root', PASSWORD);

const { dir: tmp, spawnCli } = scratch('state');
const servers: RunningServer[] = [];
const start = async (opts: Parameters<typeof startServer>[0]) => {
  const srv = await startServer({ port: 0, password: PASSWORD, authFailDelay: 0, ...opts });
  servers.push(srv);
  return srv;
};

afterEach(async () => {
  await Promise.all(servers.splice(0).map((x) => x.close()));
});

/** Every ref and uuid of the classes that make up a pool. */
async function identity(url: string, s: string): Promise<Record<string, Record<string, string>>> {
  const out: Record<string, Record<string, string>> = {};
  for (const cls of ['pool', 'host', 'VM', 'SR', 'PBD', 'network', 'PIF', 'VM_metrics', 'host_metrics', 'SM', 'role', 'Certificate']) {
    const recs = await call(url, `${cls}.get_all_records`, s);
    out[cls] = Object.fromEntries(Object.entries(recs).map(([ref, r]: [string, any]) => [ref, r.uuid]));
  }
  return out;
}


describe('restart on the same data directory', () => {
  it('keeps the pool, hosts and VMs (refs and uuids) and every write; not sessions or tasks', async () => {
    const dir = tmp();
    const a = await start({ dataDir: dir, hosts: 2 });
    let url = a.urls[0];
    const s = await login(url);
    const before = await identity(url, s);
    const [pool] = Object.keys(before.pool);
    const net = await call(url, 'network.create', s, { name_label: 'persisted', other_config: { a: '1' } });
    await call(url, 'network.set_name_label', s, net, 'persisted-renamed');
    await call(url, 'network.add_to_other_config', s, net, 'b', '2');
    await call(url, 'network.remove_from_other_config', s, net, 'a');
    await call(url, 'network.add_tags', s, net, 'tag');
    await call(url, 'pool.set_name_label', s, pool, 'my pool');
    await call(url, 'pool.add_to_other_config', s, pool, '__proto__', 'kept');
    const gone = await call(url, 'network.create', s, { name_label: 'destroyed', other_config: {} });
    await call(url, 'network.destroy', s, gone);
    const task = await call(url, 'task.create', s, 'volatile', '');
    const tokenBefore = (await call(url, 'event.from', s, ['network'], '', 0)).token;
    await a.close();
    servers.splice(servers.indexOf(a), 1);

    const b = await start({ dataDir: dir, hosts: 1 }); // --hosts is ignored for an existing database
    url = b.urls[0];
    expect(b.urls).toHaveLength(2);
    expect((await rpc(url, 'pool.get_all', [s])).error).toEqual(['SESSION_INVALID', s]);
    const s2 = await login(url);
    const after = await identity(url, s2);
    after.network = Object.fromEntries(Object.entries(after.network).filter(([r]) => r !== net));
    expect(after).toEqual(before);
    expect(await call(url, 'network.get_record', s2, net)).toMatchObject({ name_label: 'persisted-renamed', other_config: { b: '2' }, tags: ['tag'] });
    expect(await call(url, 'pool.get_name_label', s2, pool)).toBe('my pool');
    expect(Object.keys(await call(url, 'pool.get_other_config', s2, pool))).toContain('__proto__');
    expect((await rpc(url, 'network.get_record', [s2, gone])).error).toEqual(['HANDLE_INVALID', 'network', gone]);
    expect((await rpc(url, 'task.get_record', [s2, task])).error).toEqual(['HANDLE_INVALID', 'task', task]);
    // the generation continues: tokens only grow, and an old one still parses
    const tokenAfter = (await call(url, 'event.from', s2, ['network'], '', 0)).token;
    expect(tokenAfter >= tokenBefore).toBe(true);
    const since = await call(url, 'event.from', s2, ['network'], tokenBefore, 0);
    expect(since.token >= tokenBefore).toBe(true);
  });

  it('continues the seeded id sequence after a restart instead of repeating it', async () => {
    const dir = tmp();
    const a = await start({ dataDir: dir, seed: 'continue' });
    const s = await login(a.urls[0]);
    const n1 = await call(a.urls[0], 'network.create', s, { name_label: 'n1', other_config: {} });
    await a.close();
    servers.splice(servers.indexOf(a), 1);
    const b = await start({ dataDir: dir, seed: 'continue' });
    const s2 = await login(b.urls[0]);
    expect(s2).not.toBe(s);
    const n2 = await call(b.urls[0], 'network.create', s2, { name_label: 'n2', other_config: {} });
    expect(n2).not.toBe(n1);
    expect(await call(b.urls[0], 'network.get_name_label', s2, n1)).toBe('n1');
    const all = await call(b.urls[0], 'network.get_all_records', s2);
    const uuids = Object.values(all).map((r: any) => r.uuid);
    expect(new Set(uuids).size).toBe(uuids.length);
  });
});

describe('unclean stop', () => {
  it('loses no acknowledged write when the process is SIGKILLed right after the last answer', async () => {
    const dir = tmp();
    const cli = await spawnCli(PASSWORD, ['--data', dir]);
    const s = await login(cli.url);
    const [pool] = await call(cli.url, 'pool.get_all', s);
    const net = await call(cli.url, 'network.create', s, { name_label: 'crash', other_config: {} });
    // 100 concurrent writes, then one last one; the kill follows the last acknowledgement at once
    await Promise.all(Array.from({ length: 100 }, (_, i) => call(cli.url, 'network.add_to_other_config', s, net, `k${i}`, `v${i}`)));
    const vm = await call(cli.url, 'VM.create', s, {
      name_label: 'crash-vm', user_version: 1, is_a_template: false, affinity: 'OpaqueRef:NULL', memory_static_max: 1073741824,
      memory_dynamic_max: 1073741824, memory_dynamic_min: 1073741824, memory_static_min: 1073741824, VCPUs_params: {},
      VCPUs_max: 1, VCPUs_at_startup: 1, actions_after_shutdown: 'destroy', actions_after_reboot: 'restart',
      actions_after_crash: 'restart', PV_bootloader: '', PV_kernel: '', PV_ramdisk: '', PV_args: '', PV_bootloader_args: '',
      PV_legacy_args: '', HVM_boot_policy: '', HVM_boot_params: {}, platform: {}, PCI_bus: '', other_config: {}, recommendations: '',
    });
    await call(cli.url, 'pool.set_name_description', s, pool, 'last write');
    cli.child.kill('SIGKILL');
    expect((await exited(cli.child)).signal).toBe('SIGKILL');

    const b = await start({ dataDir: dir });
    const url = b.urls[0];
    const s2 = await login(url);
    const oc = await call(url, 'network.get_other_config', s2, net);
    expect(oc).toEqual(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, `v${i}`])));
    expect(await call(url, 'VM.get_name_label', s2, vm)).toBe('crash-vm');
    const metrics = await call(url, 'VM.get_metrics', s2, vm);
    expect(await call(url, 'VM_metrics.get_uuid', s2, metrics)).toMatch(/^[0-9a-f-]{36}$/);
    expect(await call(url, 'pool.get_name_description', s2, pool)).toBe('last write');
  });
});

describe('toolstack restart', () => {
  it('toolstackRestart(): state kept, old sessions SESSION_INVALID, a new login works', async () => {
    const srv = await start({ dataDir: tmp() });
    const s = await login(srv.urls[0]);
    const [pool] = await call(srv.urls[0], 'pool.get_all', s);
    const net = await call(srv.urls[0], 'network.create', s, { name_label: 'before restart', other_config: { x: 'y' } });
    const emuBefore = srv.emu;
    await srv.toolstackRestart();
    expect(srv.emu).not.toBe(emuBefore); // re-opened from the data directory
    const url = srv.urls[0];
    expect((await rpc(url, 'pool.get_all', [s])).error).toEqual(['SESSION_INVALID', s]);
    const s2 = await login(url);
    expect(await call(url, 'pool.get_all', s2)).toEqual([pool]);
    expect(await call(url, 'network.get_other_config', s2, net)).toEqual({ x: 'y' });
    await call(url, 'network.set_name_label', s2, net, 'after restart');
    expect(await call(url, 'network.get_name_label', s2, net)).toBe('after restart');
  });

  it('SIGHUP to the CLI restarts the toolstack on the same port', async () => {
    const dir = tmp();
    const cli = await spawnCli(PASSWORD, ['--data', dir]);
    const s = await login(cli.url);
    const net = await call(cli.url, 'network.create', s, { name_label: 'hup', other_config: {} });
    const restarted = cli.waitFor(/toolstack restarted/);
    cli.child.kill('SIGHUP');
    await restarted;
    expect((await rpc(cli.url, 'network.get_name_label', [s, net])).error).toEqual(['SESSION_INVALID', s]);
    const s2 = await login(cli.url);
    expect(await call(cli.url, 'network.get_name_label', s2, net)).toBe('hup');
    cli.child.kill('SIGTERM');
    const end = await exited(cli.child);
    expect(end.code).toBe(0);
    expect(cli.output()).toMatch(/SIGTERM, stopping/);
  });
});

describe('--seed', () => {
  it('gives two fresh pools the same refs and uuids; another seed gives others', async () => {
    const a = await start({ memory: true, seed: 'same', hosts: 2 });
    const b = await start({ memory: true, seed: 'same', hosts: 2 });
    const c = await start({ memory: true, seed: 'other', hosts: 2 });
    const [sa, sb, sc] = [await login(a.urls[0]), await login(b.urls[0]), await login(c.urls[0])];
    expect(sb).toBe(sa); // the same sequence of calls gives the same refs
    const [ia, ib, ic] = [await identity(a.urls[0], sa), await identity(b.urls[0], sb), await identity(c.urls[0], sc)];
    expect(ib).toEqual(ia);
    expect(Object.keys(ic.pool)).not.toEqual(Object.keys(ia.pool));
    expect(Object.keys(ic.host)).not.toEqual(Object.keys(ia.host));
    const na = await call(a.urls[0], 'network.create', sa, { name_label: 'n', other_config: {} });
    const nb = await call(b.urls[0], 'network.create', sb, { name_label: 'n', other_config: {} });
    expect(nb).toBe(na);
    // MACs are seeded too
    const macs = async (url: string, s: string) => Object.values(await call(url, 'PIF.get_all_records', s)).map((p: any) => p.MAC).sort();
    expect(await macs(b.urls[0], sb)).toEqual(await macs(a.urls[0], sa));
  });
});
