// Fixtures over real sockets: each example loads and XO's `xen-api` client sees its pool; the export
// (GET /xapi-emu/fixture) loads into the same pool and exports to the same document; disk contents
// from a file and from a byte pattern read back through /export_raw_vdi; bad fixtures are refused
// with the path of the bad key; data directories that already hold a pool; the --fixture flag.
import { afterAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createClient } from 'xen-api';
import { parse as parseYaml } from 'yaml';
import { startServer, type RunningServer, type ServerOptions } from '../../server/app.js';
import { controlClient, ControlApiError } from '../../server/control/client.js';
import { FixtureError, parseSize } from '../../server/control/fixture/schema.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { exited, scratch } from './helpers/cli.js';

const PASSWORD = 'fixture-test';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLES = ['minimal.yaml', 'two-hosts-shared-sr.yaml', 'ci-lab.yaml', 'pattern-disks.json'];
const example = (name: string) => join(ROOT, 'fixtures', name);
const MiB = 1024 * 1024;
const { dir: tmp, spawnCli } = scratch('fixture');

const servers = new Set<RunningServer>();
afterAll(async () => {
  await Promise.all([...servers].map((s) => s.close()));
});

async function start(opts: ServerOptions): Promise<RunningServer> {
  const srv = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0, ...opts });
  servers.add(srv);
  return srv;
}
async function stop(srv: RunningServer): Promise<void> {
  servers.delete(srv);
  await srv.close();
}
const control = (srv: RunningServer) => controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });

/** What a pool is, as a client reads it: names, sizes, power states and links by name (no refs). */
async function poolSummary(x: Client) {
  const all = async (cls: string) => Object.values(await x.call(`${cls}.get_all_records`)) as any[];
  const [hosts, srs, networks, vms, vbds, vdis, vifs, pools, metrics] = await Promise.all(
    ['host', 'SR', 'network', 'VM', 'VBD', 'VDI', 'VIF', 'pool', 'host_metrics'].map(all),
  );
  const hostRecs = await x.call('host.get_all_records');
  const netRecs = await x.call('network.get_all_records');
  const srRecs = await x.call('SR.get_all_records');
  const vdiRecs = await x.call('VDI.get_all_records');
  const name = (recs: Record<string, any>, ref: string) => recs[ref]?.name_label ?? null;
  const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
  void vbds; void vdis; void vifs; void metrics;
  const vmRecs = await x.call('VM.get_all_records');
  const vbdRecs = await x.call('VBD.get_all_records');
  const vifRecs = await x.call('VIF.get_all_records');
  return {
    pool: { name: pools[0].name_label, other_config: pools[0].other_config },
    hosts: hosts.map((h) => ({ name: h.name_label, cpus: h.cpu_info.cpu_count })).sort(byName),
    srs: srs.map((s) => ({ name: s.name_label, type: s.type, shared: s.shared, size: s.type === 'ext' ? s.physical_size : null })).sort(byName),
    networks: networks.map((n) => ({ name: n.name_label, bridge: n.bridge, MTU: n.MTU, other_config: n.other_config })).sort(byName),
    vms: vms.filter((v) => !v.is_a_template && !v.is_control_domain).map((v) => ({
      name: v.name_label,
      snapshot: v.is_a_snapshot,
      power_state: v.power_state,
      resident_on: name(hostRecs, v.resident_on),
      vcpus: v.VCPUs_at_startup,
      memory: [v.memory_static_min, v.memory_static_max, v.memory_dynamic_min, v.memory_dynamic_max],
      tags: v.tags,
      disks: v.VBDs.map((b: string) => vbdRecs[b]).filter((b: any) => b.type === 'Disk')
        .map((b: any) => ({ device: b.userdevice, size: vdiRecs[b.VDI].virtual_size, sr: name(srRecs, vdiRecs[b.VDI].SR), mode: b.mode }))
        .sort((a: any, b: any) => Number(a.device) - Number(b.device)),
      vifs: v.VIFs.map((r: string) => vifRecs[r]).map((f: any) => ({ device: f.device, network: name(netRecs, f.network), MAC: f.MAC }))
        .sort((a: any, b: any) => Number(a.device) - Number(b.device)),
      snapshots: v.snapshots.map((s: string) => vmRecs[s].name_label).sort(),
    })).sort(byName),
  };
}

describe('example fixtures', () => {
  for (const name of EXAMPLES) {
    it(`${name} loads, and XO's client sees its pool`, async () => {
      const srv = await start({ fixture: example(name) });
      const text = (await import('node:fs')).readFileSync(example(name), 'utf8');
      const doc = (name.endsWith('.json') ? JSON.parse(text) : parseYaml(text)) as any;
      const xapi = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, debounce: 0 });
      await xapi.connect();
      try {
        await xapi.objectsFetched;
        const objs = Object.values(xapi.objects.all);
        const of = (type: string) => objs.filter((o) => o.$type === type);
        const vms = of('VM').filter((v) => !v.is_a_template && !v.is_control_domain && !v.is_a_snapshot);
        expect(vms.map((v) => v.name_label)).toEqual(doc.vms.map((v: any) => v.name));
        for (const v of doc.vms) {
          const vm = vms.find((o) => o.name_label === v.name)!;
          expect(vm.power_state, v.name).toBe(v.power_state ?? 'Halted');
          expect(vm.VBDs.map((b: string) => xapi.getObjectByRef(b)).filter((b: any) => b.type === 'Disk').length, v.name).toBe(v.disks?.length ?? 0);
          expect(vm.VIFs.length, v.name).toBe(v.vifs?.length ?? 0);
          if (v.host && v.power_state === 'Running') expect(xapi.getObjectByRef(vm.resident_on).name_label).toBe(v.host);
          if (v.snapshots) expect(vm.snapshots.map((s: string) => xapi.getObjectByRef(s).name_label).sort()).toEqual([...v.snapshots].sort());
        }
        const hosts = of('host');
        expect(hosts.length).toBe(typeof doc.hosts === 'number' ? doc.hosts : (doc.hosts?.length ?? 1));
        for (const h of Array.isArray(doc.hosts) ? doc.hosts : []) {
          const host = hosts.find((o) => o.name_label === h.name);
          expect(host, h.name).toBeDefined();
          if (h.cpus) expect(of('host_cpu').filter((c) => c.host === host!.$ref).length).toBe(h.cpus);
          if (h.memory) expect(Number(xapi.getObjectByRef(host!.metrics).memory_total)).toBe(parseSize(h.memory));
        }
        for (const s of doc.srs ?? []) expect(of('SR').find((o) => o.name_label === s.name)?.type, s.name).toBe(s.type);
        for (const n of doc.networks ?? []) {
          const net = of('network').find((o) => o.name_label === n.name);
          expect(net, n.name).toBeDefined();
          if (n.dhcp_subnet) expect(net!.other_config['xapi-emu-dhcp-subnet']).toBe(n.dhcp_subnet);
        }
        if (doc.pool?.name) expect(xapi.pool.name_label).toBe(doc.pool.name);
        if (doc.pool?.guest_profile) expect(xapi.pool.other_config['xapi-emu-guest-profile']).toBe(doc.pool.guest_profile);
      } finally {
        await xapi.disconnect();
        await stop(srv);
      }
    });
  }

  it("ci-lab's users log in with their roles", async () => {
    const srv = await start({ fixture: example('ci-lab.yaml') });
    const op = await connect(srv.urls[0], 'ci-operator', 'ci-operator');
    const [vm] = await op.call('VM.get_by_name_label', 'installer');
    await expect(op.call('VM.destroy', vm)).rejects.toMatchObject({ description: expect.arrayContaining(['RBAC_PERMISSION_DENIED']) });
    const admin = controlClient({ url: srv.urls[0], username: 'ci-admin', password: 'ci-admin' });
    expect((await admin.fixture.export()).vms?.length).toBe(5);
    await stop(srv);
  });
});

describe('hosts', () => {
  it("are the machines the fixture describes: a VM needs their memory to start", async () => {
    const big = await start({ fixture: { doc: { hosts: [{ name: 'big', memory: '64GiB' }], vms: [{ name: 'v', memory: '40GiB', power_state: 'Running' }] } } });
    const x = await connect(big.urls[0], 'root', PASSWORD);
    const [vm] = await x.call('VM.get_by_name_label', 'v');
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    await stop(big);
    const e = await start({ fixture: { doc: { hosts: [{ memory: '8GiB' }], vms: [{ name: 'v', memory: '6GiB', power_state: 'Running' }] } } }).catch((x) => x);
    expect(e).toBeInstanceOf(FixtureError);
    // (placed by VM.start, as xapi answers when no host can take it)
    expect(e.message).toBe('vms[0].power_state: VM.start failed: NO_HOSTS_AVAILABLE');
  });
});

describe('export and load again', () => {
  for (const name of EXAMPLES) {
    it(`${name}: the export loads into the same pool, which exports to the same document`, async () => {
      const a = await start({ fixture: example(name) });
      const first = await control(a).fixture.export();
      const summaryA = await poolSummary(await connect(a.urls[0], 'root', PASSWORD));
      await stop(a);
      const b = await start({ fixture: { doc: first } });
      const second = await control(b).fixture.export();
      const summaryB = await poolSummary(await connect(b.urls[0], 'root', PASSWORD));
      await stop(b);
      expect(second).toEqual(first);
      expect(summaryB).toEqual(summaryA);
    });
  }

  it('as YAML too, and the YAML loads', async () => {
    const a = await start({ fixture: example('pattern-disks.json') });
    const res = await fetch(new URL('/xapi-emu/fixture?format=yaml', a.urls[0]), { headers: { authorization: `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/yaml/);
    const text = await res.text();
    const json = await control(a).fixture.export({ format: 'json' });
    await stop(a);
    expect(parseYaml(text)).toEqual(json);
    const file = join(tmp(), 'exported.yaml');
    writeFileSync(file, text);
    const b = await start({ fixture: file });
    expect(await control(b).fixture.export()).toEqual(json);
    await stop(b);
  });

  it('the same fixture and seed give the same refs and uuids', async () => {
    const refs = async () => {
      const srv = await start({ fixture: example('ci-lab.yaml'), seed: 'fixture-seed' });
      const x = await connect(srv.urls[0], 'root', PASSWORD);
      const out: Record<string, string> = {};
      for (const cls of ['VM', 'VDI', 'VIF', 'SR', 'network']) {
        for (const [ref, r] of Object.entries(await x.call(`${cls}.get_all_records`)) as [string, any][]) out[`${cls} ${r.name_label} ${r.uuid}`] = ref;
      }
      await stop(srv);
      return out;
    };
    const one = await refs();
    expect(Object.keys(one).filter((k) => /^(VM (db-1|app-1|app-2|win-1|installer|before-tests)|SR Lab|network Lab) /.test(k)).length).toBe(9);
    expect(await refs()).toEqual(one);
  });
});

describe('disk contents', () => {
  async function readDisk(url: string, x: Client, vdi: string): Promise<Buffer> {
    const q = new URLSearchParams({ session_id: x.session, vdi, format: 'raw' });
    const res = await fetch(new URL(`/export_raw_vdi?${q}`, url));
    expect(res.status).toBe(200);
    return Buffer.from(await res.arrayBuffer());
  }

  it('from a file next to the fixture and from a byte pattern, read back through /export_raw_vdi', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'img'));
    const image = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7 + 3) & 0xff));
    writeFileSync(join(dir, 'img', 'boot.img'), image);
    writeFileSync(join(dir, 'lab.yaml'), [
      'vms:',
      '  - name: c',
      '    disks:',
      '      - { name: from-file, size: 4MiB, content: { file: img/boot.img } }',
      '      - { name: pattern, size: 6MiB, content: { pattern: "c0ffee", bytes: 5MiB } }',
      '      - { name: whole, size: 2MiB, content: { pattern: "7e" } }',
      '      - { name: zero-tail, size: 2MiB, content: { pattern: "ab00" } }',
    ].join('\n'));
    const srv = await start({ fixture: join(dir, 'lab.yaml') });
    const x = await connect(srv.urls[0], 'root', PASSWORD);
    const vdi = async (n: string) => (await x.call('VDI.get_by_name_label', n))[0];

    const fromFile = await readDisk(srv.urls[0], x, await vdi('from-file'));
    expect(fromFile.length).toBe(4 * MiB);
    expect(fromFile.subarray(0, image.length).equals(image)).toBe(true);
    expect(fromFile.subarray(image.length).equals(Buffer.alloc(4 * MiB - image.length))).toBe(true);

    const pattern = await readDisk(srv.urls[0], x, await vdi('pattern'));
    const want = Buffer.alloc(6 * MiB);
    for (let i = 0; i < 5 * MiB; i++) want[i] = [0xc0, 0xff, 0xee][i % 3];
    expect(pattern.equals(want)).toBe(true);
    expect((await readDisk(srv.urls[0], x, await vdi('whole'))).equals(Buffer.alloc(2 * MiB, 0x7e))).toBe(true);

    // the export tells the patterns, not the file's bytes
    const disks = (await control(srv).fixture.export()).vms![0].disks!;
    expect(disks.map((d) => [d.name, d.content])).toEqual([
      ['from-file', undefined],
      ['pattern', { pattern: 'c0ffee', bytes: '5MiB' }],
      ['whole', { pattern: '7e' }],
      // (its last byte is a zero of the pattern: still the whole disk)
      ['zero-tail', { pattern: 'ab00' }],
    ]);
    await stop(srv);
  });

  it('a content file must stay inside the fixture\'s directory', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'secret.img'), 'x');
    mkdirSync(join(dir, 'fx'));
    const doc = { vms: [{ name: 'v', disks: [{ size: '1MiB', content: { file: '../secret.img' } }] }] };
    await expect(start({ fixture: { doc, baseDir: join(dir, 'fx') } })).rejects.toThrow('vms[0].disks[0].content.file: ../secret.img is outside the fixture\'s directory');
    await expect(start({ fixture: { doc: { vms: [{ name: 'v', disks: [{ size: '1MiB', content: { file: '/etc/hostname' } }] }] }, baseDir: dir } }))
      .rejects.toThrow("vms[0].disks[0].content.file: /etc/hostname: expected a path relative to the fixture's directory");
  });
});

describe('bad fixtures', () => {
  it('name the path of the bad key, at start and through the control API', async () => {
    const bad = { vms: [{ name: 'a' }, { name: 'b' }, { name: 'c', disks: [{ size: '10 potatoes' }] }] };
    const e = await start({ fixture: { doc: bad } }).catch((x) => x);
    expect(e).toBeInstanceOf(FixtureError);
    expect(e.message).toBe('vms[2].disks[0].size: expected a size like 10GiB (or a number of bytes)');

    const srv = await start({});
    const err = await control(srv).fixture.load({ fixture: { vms: [{ name: 'v', disks: [{ size: '1GiB', sr: 'Nowhere' }], vifs: [{ network: 'Nonet' }] }] } }).catch((x) => x);
    expect(err).toBeInstanceOf(ControlApiError);
    expect(err.status).toBe(400);
    expect(err.code).toBe('INVALID_FIXTURE');
    expect(err.params).toEqual(['vms[0].disks[0].sr: no SR named "Nowhere"', 'vms[0].vifs[0].network: no network named "Nonet"']);
    // nothing was made
    const x = await connect(srv.urls[0], 'root', PASSWORD);
    expect(await x.call('VM.get_by_name_label', 'v')).toEqual([]);
    const wrongHosts = await control(srv).fixture.load({ fixture: { hosts: 3 } }).catch((x) => x);
    expect(wrongHosts.params[0]).toMatch(/^hosts: the pool has 1 host\(s\), the fixture 3/);
    const fromFile = await control(srv).fixture.load({ fixture: { vms: [{ name: 'f', disks: [{ size: '1MiB', content: { file: 'fixtures/images/seed.img' } }] }] } }).catch((x) => x);
    expect(fromFile.params).toEqual(['vms[0].disks[0].content.file: content from a file is only read from a fixture file given at start']);
    // a good one adds to the pool
    const ok = await control(srv).fixture.load({ fixture: { vms: [{ name: 'added', power_state: 'Running', disks: [{ size: '8MiB' }] }] } });
    expect(ok.vms.length).toBe(1);
    const [vm] = await x.call('VM.get_by_name_label', 'added');
    expect(await x.call('VM.get_uuid', vm)).toBe(ok.vms[0]);
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    await stop(srv);
  });
});

describe('data directories', () => {
  it('start from the fixture once, then as they are; another fixture or a pool without one is refused', async () => {
    const dir = tmp();
    const a = await start({ memory: false, dataDir: dir, fixture: example('minimal.yaml') });
    let x = await connect(a.urls[0], 'root', PASSWORD);
    const [vm] = await x.call('VM.get_by_name_label', 'vm1');
    await x.call('VM.set_name_description', vm, 'changed by a client');
    await stop(a);

    const b = await start({ memory: false, dataDir: dir, fixture: example('minimal.yaml') });
    x = await connect(b.urls[0], 'root', PASSWORD);
    expect(await x.call('VM.get_by_name_label', 'vm1')).toEqual([vm]);
    expect(await x.call('VM.get_name_description', vm)).toBe('changed by a client');
    await stop(b);

    await expect(start({ memory: false, dataDir: dir, fixture: example('pattern-disks.json') })).rejects.toThrow(/already holds a pool loaded from another fixture/);
    const plain = tmp();
    await stop(await start({ memory: false, dataDir: plain }));
    await expect(start({ memory: false, dataDir: plain, fixture: example('minimal.yaml') })).rejects.toThrow(/already holds a pool made without a fixture/);
  });

  it('a load that did not finish is started over', async () => {
    const dir = tmp();
    // a pool as a killed load leaves it: made, partly filled, still marked as loading
    const a = await start({ memory: false, dataDir: dir });
    const x = await connect(a.urls[0], 'root', PASSWORD);
    await x.call('VM.clone', (await x.call('VM.get_by_name_label', 'Other install media'))[0], 'half-made');
    await stop(a);
    writeFileSync(join(dir, 'fixture-loading'), 'x');

    const b = await start({ memory: false, dataDir: dir, fixture: example('minimal.yaml') });
    const y = await connect(b.urls[0], 'root', PASSWORD);
    expect(await y.call('VM.get_by_name_label', 'half-made')).toEqual([]);
    expect((await y.call('VM.get_by_name_label', 'vm1')).length).toBe(1);
    await stop(b);
    expect(existsSync(join(dir, 'fixture-loading'))).toBe(false);
  });
});

describe('a start killed while loading', () => {
  it('is started over by the next start', async () => {
    const dir = tmp();
    const file = join(tmp(), 'heavy.yaml');
    writeFileSync(file, 'vms:\n  - name: h\n    power_state: Running\n    disks:\n      - { size: 64MiB, content: { pattern: "ab" } }\n');
    const child = spawn(process.execPath, ['bin/xapi-emu.js', '--port', '0', '--password', PASSWORD, '--data', dir, '--fixture', file], { cwd: ROOT, stdio: 'ignore' });
    // killed as soon as the load has begun
    await new Promise<void>((resolve) => {
      const w = watch(dir, () => {
        if (!existsSync(join(dir, 'fixture-loading'))) return;
        w.close();
        resolve();
      });
    });
    child.kill('SIGKILL');
    await exited(child);

    const srv = await start({ memory: false, dataDir: dir, fixture: file });
    const x = await connect(srv.urls[0], 'root', PASSWORD);
    const vms = await x.call('VM.get_by_name_label', 'h');
    expect(vms.length).toBe(1);
    expect(await x.call('VM.get_power_state', vms[0])).toBe('Running');
    expect((await control(srv).fixture.export()).vms![0].disks![0].content).toEqual({ pattern: 'ab' });
    await stop(srv);
    expect(existsSync(join(dir, 'fixture-loading'))).toBe(false);
  });
});

describe('the --fixture flag', () => {
  it('loads the file into the new pool', async () => {
    const cli = await spawnCli(PASSWORD, ['--memory', '--fixture', example('two-hosts-shared-sr.yaml')]);
    expect(cli.output()).toMatch(/a pool of 2 hosts\n/);
    const x = await connect(cli.url, 'root', PASSWORD);
    const vms = await x.call('VM.get_all_records_where', 'field "is_a_template" = "false" and field "is_control_domain" = "false"');
    expect(Object.values(vms).map((v: any) => [v.name_label, v.power_state]).sort()).toEqual([['web-1', 'Running'], ['web-2', 'Running']]);
    cli.child.kill('SIGTERM');
  });

  it('exits with status 2 and the path of the bad key, without a stack trace', async () => {
    const file = join(tmp(), 'bad.yaml');
    writeFileSync(file, 'vms:\n  - name: a\n    memory: lots\n');
    const run = promisify(execFile)(process.execPath, ['bin/xapi-emu.js', '--memory', '--port', '0', '--fixture', file], { cwd: ROOT });
    const e = (await run.catch((x) => x)) as { code: number; stderr: string };
    expect(e.code).toBe(2);
    expect(e.stderr).toContain(`--fixture ${file}: vms[0].memory: `);
    expect(e.stderr).not.toMatch(/\n\s+at /);
  });
});
