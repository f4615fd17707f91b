// A host's faces besides the API's classes: XCP-ng's plugins through host.call_plugin as Xen
// Orchestra calls them (its own `xen-api` client), host extensions, CORS on every answer of every
// host, the web root (landing page, --www), the tools SR's guest-tools.iso, VM.copy without SR.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import { srFile } from '../../server/sm/index.js';
import { startPool } from './helpers/pool.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { MiB, NULL, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'host-faces-test';

let srv: RunningServer;
let x: Client;
let xo: Xapi;
let hosts: string[];

/** XO's call of a plugin: the answer is a JSON string it parses */
const plugin = async (host: string, name: string, fn: string, args: Record<string, string> = {}): Promise<any> =>
  JSON.parse(await xo.call('host.call_plugin', host, name, fn, args));

/** The error code and params a xen-api call rejects with. */
async function xoError(p: Promise<unknown>): Promise<[string, ...unknown[]]> {
  try {
    await p;
  } catch (e) {
    const err = e as { code?: string; params?: unknown[] };
    if (err.code !== undefined) return [err.code, ...(err.params ?? [])];
    throw e;
  }
  throw new Error('expected a XenAPI failure');
}

/** A raw GET, the path sent as given (fetch would normalise "..") */
function rawGet(url: string, path: string, method = 'GET'): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2 }));
  hosts = [srv.emu.master, ...srv.emu.hosts.filter((h) => h !== srv.emu.master)];
  xo = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, transport: 'json-rpc', debounce: 0 });
  await xo.connect();
});

afterAll(async () => {
  await xo?.disconnect();
  await srv?.close();
});

describe('host.call_plugin', () => {
  it('updater.py: a fresh host has no update; published ones are listed, then installed by update', async () => {
    for (const h of hosts) expect(await plugin(h, 'updater.py', 'check_update')).toEqual([]);
    const ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
    const member = String((await x.call('host.get_record', hosts[1])).uuid);
    const state = await ctl.updates.publish({
      hosts: [member],
      packages: [
        { name: 'xapi-core', version: '25.6.0', release: '1.3.xcpng8.3', description: 'xapi', size: 4_000_000, changelog: { date: '1750000000', author: 'XCP-ng', description: '- fixes' } },
        { name: 'kernel', version: '4.19.19', release: '8.0.40.1.xcpng8.3' },
      ],
    });
    expect(state.hosts.find((h) => h.host === member)?.packages.map((p) => p.name)).toEqual(['kernel', 'xapi-core']);

    // only the member is offered them
    expect(await plugin(hosts[0], 'updater.py', 'check_update')).toEqual([]);
    const offered = await plugin(hosts[1], 'updater.py', 'check_update');
    expect(offered).toEqual([
      { name: 'kernel', version: '4.19.19', release: '8.0.40.1.xcpng8.3', description: '', changelog: null, url: '', size: 0, license: 'GPLv2' },
      { name: 'xapi-core', version: '25.6.0', release: '1.3.xcpng8.3', description: 'xapi', changelog: { date: '1750000000', author: 'XCP-ng', description: '- fixes' }, url: '', size: 4000000, license: 'GPLv2' },
    ]);
    // the answer is Python's json.dumps, as the script prints it
    expect(await xo.call('host.call_plugin', hosts[1], 'updater.py', 'check_update', {})).toContain('"name": "kernel", "version"');

    const one = await plugin(hosts[1], 'updater.py', 'update', { packages: 'kernel' });
    expect(one).toMatchObject({ returncode: 0, stderr: '', command: ['yum', 'update', '--disablerepo=*', '--enablerepo=xcp-ng-base,xcp-ng-updates', '-y', 'kernel'] });
    expect(one.stdout).toContain('kernel.x86_64 0:4.19.19-8.0.40.1.xcpng8.3');
    expect((await plugin(hosts[1], 'updater.py', 'check_update')).map((p: { name: string }) => p.name)).toEqual(['xapi-core']);
    const rest = await plugin(hosts[1], 'updater.py', 'update');
    expect(rest.stdout).toContain('xapi-core');
    expect(await plugin(hosts[1], 'updater.py', 'check_update')).toEqual([]);
    expect((await ctl.updates.get({})).hosts.every((h) => h.packages.length === 0)).toBe(true);
  });

  it('updater.py: published updates and proxies survive a toolstack restart', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'xapi-emu-updates-'));
    const { srv: s2 } = await startPool(PASSWORD, { memory: false, dataDir, nbdPort: null });
    try {
      const ctl = controlClient({ url: s2.urls[0], username: 'root', password: PASSWORD });
      await ctl.updates.publish({ packages: [{ name: 'xen-hypervisor', version: '4.17.5', release: '3.xcpng8.3' }] });
      let c = await connect(s2.urls[0], 'root', PASSWORD);
      await c.call('host.call_plugin', s2.emu.master, 'updater.py', 'set_proxies', { proxies: '{"xcp-ng-updates": "http://cache:3142"}' });
      await s2.toolstackRestart();
      c = await connect(s2.urls[0], 'root', PASSWORD);
      const offered = JSON.parse(await c.call('host.call_plugin', s2.emu.master, 'updater.py', 'check_update', {}));
      expect(offered.map((p: { name: string }) => p.name)).toEqual(['xen-hypervisor']);
      expect(JSON.parse(await c.call('host.call_plugin', s2.emu.master, 'updater.py', 'get_proxies', {}))['xcp-ng-updates']).toBe('http://cache:3142');
      await ctl.updates.withdraw({});
      expect(JSON.parse(await c.call('host.call_plugin', s2.emu.master, 'updater.py', 'check_update', {}))).toEqual([]);
    } finally {
      await s2.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('updater.py: the proxies of the repositories', async () => {
    const before = await plugin(hosts[0], 'updater.py', 'get_proxies');
    expect(before).toMatchObject({ 'xcp-ng-base': '_none_', 'xcp-ng-updates': '_none_' });
    expect(await xo.call('host.call_plugin', hosts[0], 'updater.py', 'set_proxies', { proxies: JSON.stringify({ 'xcp-ng-base': 'http://proxy:3142' }) })).toBe('');
    expect(await plugin(hosts[0], 'updater.py', 'get_proxies')).toMatchObject({ 'xcp-ng-base': 'http://proxy:3142', 'xcp-ng-updates': '_none_' });
    expect(await plugin(hosts[1], 'updater.py', 'get_proxies')).toMatchObject({ 'xcp-ng-base': '_none_' });
    await xo.call('host.call_plugin', hosts[0], 'updater.py', 'set_proxies', { proxies: '{"xcp-ng-base":"_none_"}' });
    expect(await plugin(hosts[0], 'updater.py', 'get_proxies')).toEqual(before);
    const bad = await xoError(xo.call('host.call_plugin', hosts[0], 'updater.py', 'set_proxies', { proxies: '{"nope":"http://p"}' }));
    expect(bad.slice(0, 2)).toEqual(['-1', "Can't find section 'nope' in config file"]);
    expect(bad).toHaveLength(4);
  });

  it('the hardware plugins describe the simulated host', async () => {
    const [host] = hosts;
    const cpu = (await x.call('host.get_record', host)).cpu_info;
    expect(await plugin(host, 'hyperthreading.py', 'get_hyperthreading')).toBe(Number(cpu.threads_per_core) > 1);

    const pbds: string[] = (await x.call('host.get_record', host)).PBDs;
    let local: any;
    for (const p of pbds) {
      const r = await x.call('PBD.get_record', p);
      if (r.device_config.device === '/dev/sda3') local = await x.call('SR.get_record', r.SR);
    }
    expect(local?.type).toBe('ext');
    const { blockdevices } = await plugin(host, 'lsblk.py', 'list_block_devices');
    expect(blockdevices).toHaveLength(1);
    const sda = blockdevices[0];
    expect(sda).toMatchObject({ name: 'sda', kname: 'sda', pkname: '', type: 'disk', ro: '0' });
    const parts = sda.children as any[];
    expect(parts.map((p) => p.name)).toEqual(['sda4', 'sda2', 'sda5', 'sda3', 'sda1', 'sda6']);
    expect(parts.find((p) => p.name === 'sda1').mountpoint).toBe('/');
    const sda3 = parts.find((p) => p.name === 'sda3');
    expect(sda3.children[0]).toMatchObject({ kname: 'dm-0', pkname: 'sda3', type: 'lvm', mountpoint: `/run/sr-mount/${local.uuid}` });
    expect(Number(sda3.children[0].size)).toBeGreaterThanOrEqual(Number(local.physical_size));
    expect(Number(sda.size)).toBeGreaterThan(parts.reduce((s, p) => s + Number(p.size), 0) - Number(sda3.children[0].size));

    const vg = `XSLocalEXT-${local.uuid}`;
    expect(await plugin(host, 'lvm.py', 'list_physical_volumes')).toMatchObject({ '/dev/sda3': { vg_name: vg, format: 'lvm2' } });
    expect(await plugin(host, 'lvm.py', 'list_volume_groups')).toMatchObject({ [vg]: { pv_count: 1, lv_count: 1, sn_count: 0 } });
    expect(await plugin(host, 'lvm.py', 'list_volume_groups', { vg_name: 'nope' })).toEqual({});
    expect(await plugin(host, 'lvm.py', 'list_logical_volumes', { vg_name: vg })).toMatchObject({ [local.uuid]: { vg_name: vg, pool: '' } });
    const noVg = await xoError(xo.call('host.call_plugin', host, 'lvm.py', 'list_logical_volumes', { vg_name: 'nope' }));
    expect(noVg[0]).toBe('5');

    expect(await plugin(host, 'smartctl.py', 'health')).toEqual({ '/dev/sda:scsi': 'PASSED' });
    const info = await plugin(host, 'smartctl.py', 'information');
    expect(info['/dev/sda:scsi']).toMatchObject({ device: { name: '/dev/sda' }, smart_status: { passed: true }, user_capacity: { bytes: Number(sda.size) } });
    expect(await plugin(host, 'raid.py', 'check_raid_pool')).toEqual({});
    expect(await plugin(host, 'zfs.py', 'list_zfs_pools')).toEqual({});
    expect(await plugin(host, 'netdata.py', 'is_netdata_installed')).toBe(false);
    expect(await xo.call('host.call_plugin', host, 'netdata.py', 'get_netdata_api_key', {})).toBe('');
  });

  it("answers xapi's errors for unknown plugins and functions, and refuses what it does not simulate", async () => {
    expect(await faultOf(x.call('host.call_plugin', hosts[0], 'nope.py', 'f', {}))).toEqual(['XENAPI_MISSING_PLUGIN', 'nope.py']);
    expect(await xoError(xo.call('host.call_plugin', hosts[1], 'updater.py', 'nope', {}))).toEqual(['UNKNOWN_XENAPI_PLUGIN_FUNCTION', 'nope']);
    // a name that is a property of every JS object is not a function of the plugin
    expect(await faultOf(x.call('host.call_plugin', hosts[0], 'updater.py', 'constructor', {}))).toEqual(['UNKNOWN_XENAPI_PLUGIN_FUNCTION', 'constructor']);
    expect(await faultOf(x.call('host.call_plugin', hosts[0], 'lsblk.py/../updater.py', 'check_update', {}))).toEqual(['XENAPI_MISSING_PLUGIN', 'lsblk.py/../updater.py']);
    expect(await faultOf(x.call('host.call_plugin', 'OpaqueRef:nope', 'updater.py', 'check_update', {}))).toEqual(['HANDLE_INVALID', 'host', 'OpaqueRef:nope']);
    expect((await faultOf(x.call('host.call_plugin', hosts[0], 'service.py', 'start_service', {}))).slice(0, 2)).toEqual(['-1', 'Missing or empty argument `service`']);
    expect((await faultOf(x.call('host.call_plugin', hosts[0], 'service.py', 'start_service', { service: 'netdata' })))[0]).toBe('NOT_IMPLEMENTED');
    expect((await faultOf(x.call('host.call_plugin', hosts[0], 'updater.py', 'install', { packages: 'x' })))[0]).toBe('NOT_IMPLEMENTED');
  });

  it('host.has_extension / call_extension: a host has no extension', async () => {
    expect(await xo.call('host.has_extension', hosts[0], 'Test.echo')).toBe(false);
    expect(await faultOf(x.call('host.call_extension', hosts[0], JSON.stringify({ method: 'Test.echo', params: [], id: 1 })))).toEqual(['MESSAGE_METHOD_UNKNOWN', 'Test.echo']);
    expect((await faultOf(x.call('host.call_extension', hosts[0], 'not json')))[0]).toBe('INTERNAL_ERROR');
  });
});

describe('CORS', () => {
  it('every answer of every host allows any origin, errors and 404s included', async () => {
    for (const url of srv.urls) {
      const notFound = await fetch(new URL('/no/such/thing', url));
      expect(notFound.status).toBe(404);
      expect(notFound.headers.get('access-control-allow-origin')).toBe('*');
      const put = await fetch(new URL('/no/such/thing', url), { method: 'PUT', body: 'x' });
      expect(put.status).toBe(404);
      expect(put.headers.get('access-control-allow-origin')).toBe('*');
    }
    const member = srv.urls[1];
    // an RPC body that is no JSON: xapi's HTML 500
    const rpc = await fetch(new URL('/jsonrpc', member), { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } });
    expect(rpc.status).toBe(500);
    expect(rpc.headers.get('access-control-allow-origin')).toBe('*');
    // an RPC error answer
    const fault = await fetch(new URL('/jsonrpc', member), { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', method: 'VM.get_record', params: ['bad', 'bad'], id: 1 }) });
    expect((await fault.json()).error).toBeDefined();
    expect(fault.headers.get('access-control-allow-origin')).toBe('*');
    // an HTTP handler's error (no credentials)
    const handler = await fetch(new URL('/export_raw_vdi?vdi=OpaqueRef:nope', member));
    expect(handler.status).toBeGreaterThanOrEqual(400);
    expect(handler.headers.get('access-control-allow-origin')).toBe('*');
    // the control API's errors
    const control = await fetch(new URL('/xapi-emu/nope', member));
    expect(control.status).toBe(401);
    expect(control.headers.get('access-control-allow-origin')).toBe('*');
    // a request line Fastify cannot route
    const bad = await rawGet(member, '/%zz');
    expect(bad.status).toBe(400);
    expect(bad.headers['access-control-allow-origin']).toBe('*');
    // the preflight
    const pre = await fetch(new URL('/jsonrpc', member), { method: 'OPTIONS', headers: { 'access-control-request-headers': 'content-type' } });
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-headers')).toContain('content-type');
  });
});

describe('web root', () => {
  it('GET / on every host: a landing page naming the host and its web clients', async () => {
    for (const [i, url] of srv.urls.entries()) {
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('access-control-allow-origin')).toBe('*');
      const page = await res.text();
      const h = await x.call('host.get_record', hosts[i]);
      expect(page).toContain(`${h.software_version.product_brand} ${h.software_version.product_version}`);
      expect(page).toContain(h.hostname);
      expect(page).toContain('XO Lite');
    }
    expect((await fetch(new URL('/missing.js', srv.urls[0]))).status).toBe(404);
  });

  it('--www DIR: its files, index.html for directories, nothing outside it', async () => {
    const base = mkdtempSync(join(tmpdir(), 'xapi-emu-www-'));
    const www = join(base, 'www');
    mkdirSync(join(www, 'assets'), { recursive: true });
    writeFileSync(join(www, 'index.html'), '<html>lite</html>');
    writeFileSync(join(www, 'assets', 'index.html'), '<html>assets</html>');
    writeFileSync(join(www, 'assets', 'app.js'), 'console.log(1)');
    writeFileSync(join(www, 'assets', 'style.css'), 'body{}');
    writeFileSync(join(base, 'secret.txt'), 'secret');
    symlinkSync(join(base, 'secret.txt'), join(www, 'leak.txt'));
    const { srv: s2, x: x2 } = await startPool(PASSWORD, { www, nbdPort: null });
    try {
      const url = s2.urls[0];
      const root = await fetch(url);
      expect([root.status, await root.text(), root.headers.get('content-type')]).toEqual([200, '<html>lite</html>', 'text/html']);
      const js = await fetch(new URL('/assets/app.js', url));
      expect([await js.text(), js.headers.get('content-type'), js.headers.get('access-control-allow-origin')]).toEqual(['console.log(1)', 'application/javascript', '*']);
      expect((await fetch(new URL('/assets/style.css', url))).headers.get('content-type')).toBe('text/css');
      expect(await (await fetch(new URL('/assets/', url))).text()).toBe('<html>assets</html>');
      expect(await (await fetch(new URL('/assets/app.js?v=2', url))).text()).toBe('console.log(1)');
      expect((await fetch(new URL('/assets/none.js', url))).status).toBe(404);
      for (const path of ['/../secret.txt', '/assets/../../secret.txt', '/%2e%2e/secret.txt', '/..%2fsecret.txt', '/leak.txt']) {
        const r = await rawGet(url, path);
        expect(r.status, path).toBe(403);
        expect(r.body).not.toContain('secret');
      }
      // the API is still there
      expect(await x2.call('pool.get_all')).toHaveLength(1);
    } finally {
      await s2.close();
      rmSync(base, { recursive: true, force: true });
    }
  });
});

describe('the tools SR', () => {
  it('holds guest-tools.iso, a valid ISO 9660 image that goes into a CD drive', async () => {
    const srs = (await x.call('SR.get_all_records')) as Record<string, any>;
    const tools = Object.keys(srs).filter((r) => srs[r].is_tools_sr);
    expect(tools).toHaveLength(1);
    expect(srs[tools[0]].name_label).toBe('XCP-ng Tools');
    const vdis: string[] = srs[tools[0]].VDIs;
    expect(vdis).toHaveLength(1);
    const iso = await x.call('VDI.get_record', vdis[0]);
    expect(iso).toMatchObject({ name_label: 'guest-tools.iso', location: 'guest-tools.iso', is_tools_iso: true, read_only: true, sm_config: { 'xs-tools': 'true' } });
    const file = readFileSync(srFile(srv.emu, srs[tools[0]].uuid, 'guest-tools.iso'));
    expect(Number(iso.virtual_size)).toBe(file.length);
    expect(file.subarray(0x8001, 0x8006).toString()).toBe('CD001');
    expect(file.readUInt32LE(0x8000 + 80) * 2048).toBe(file.length);
    // the root directory (its record in the primary descriptor) lists one file, readable
    const rootDir = file.readUInt32LE(0x8000 + 156 + 2) * 2048;
    const names: string[] = [];
    for (let off = rootDir; file[off] > 0; off += file[off]) {
      const name = file.subarray(off + 33, off + 33 + file[off + 32]).toString('latin1');
      if (file[off + 25] === 0) names.push(name);
      if (name === 'README.TXT;1') expect(file.subarray(file.readUInt32LE(off + 2) * 2048, file.readUInt32LE(off + 2) * 2048 + file.readUInt32LE(off + 10)).toString()).toMatch(/guest tools/);
    }
    expect(names).toEqual(['README.TXT;1']);
    if (existsSync('/usr/sbin/blkid')) {
      expect(execFileSync('/usr/sbin/blkid', ['-p', '-o', 'export', srFile(srv.emu, srs[tools[0]].uuid, 'guest-tools.iso')]).toString()).toMatch(/^TYPE=iso9660$/m);
    }

    const vm: string = await x.call('VM.create', vmArgs('tools-cd'));
    const cd: string = await x.call('VBD.create', vbdArgs(vm, NULL, '3', { type: 'CD', mode: 'RO', empty: true, bootable: false }));
    await x.call('VBD.insert', cd, vdis[0]);
    expect(await x.call('VBD.get_record', cd)).toMatchObject({ empty: false, VDI: vdis[0] });
    await x.call('VM.start', vm, false, false);
    expect(await x.call('VBD.get_currently_attached', cd)).toBe(true);
    await x.call('VM.hard_shutdown', vm);
    await x.call('VBD.eject', cd);
  });
});

describe('VM.copy', () => {
  it('an SR that does not exist ("" from XO Lite, or a stale ref) is no SR: each disk stays in its SR', async () => {
    const local = (await x.call('SR.get_by_name_label', 'Local storage'))[0];
    const vm: string = await x.call('VM.create', vmArgs('copy-me'));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'copy-me-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    for (const sr of ['', 'OpaqueRef:00000000-0000-0000-0000-000000000000']) {
      const copy: string = await x.call('VM.copy', vm, `copy of ${sr || 'nothing'}`, sr);
      const vbds: string[] = await x.call('VM.get_VBDs', copy);
      const disks = await Promise.all(vbds.map((b) => x.call('VBD.get_VDI', b)));
      expect(disks).toHaveLength(1);
      expect(disks[0]).not.toBe(vdi);
      expect(await x.call('VDI.get_SR', disks[0])).toBe(local);
    }
    // as XO Lite sends it, through its Async variant
    const copied = String(await xo.callAsync('VM.copy', vm, 'async copy', ''));
    expect(await x.call('VM.get_name_label', copied)).toBe('async copy');
    // the VM itself must exist
    expect(await faultOf(x.call('VM.copy', 'OpaqueRef:nope', 'x', ''))).toEqual(['HANDLE_INVALID', 'VM', 'OpaqueRef:nope']);
  });
});

describe('a member that is down', () => {
  it('runs no plugin: HOST_OFFLINE, as message forwarding answers', async () => {
    await x.call('host.disable', hosts[1]);
    await x.call('host.shutdown', hosts[1]);
    expect((await x.call('host_metrics.get_live', (await x.call('host.get_record', hosts[1])).metrics))).toBe(false);
    expect(await faultOf(x.call('host.call_plugin', hosts[1], 'updater.py', 'check_update', {}))).toEqual(['HOST_OFFLINE', hosts[1]]);
    expect(await plugin(hosts[0], 'updater.py', 'check_update')).toEqual([]);
  });
});
