// PUT /import over real sockets: XVAs exported by the emulator imported back (into another SR of the
// same pool and into a second emulator, plain, gzip and zstd, with XO's putResource, restore=true),
// an XVA made by hand with Python's tarfile, and hostile archives, each of which fails the task with
// xapi's error and leaves the database and the SR directories as they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import type { Client } from './helpers/jsonrpc.js';
import { createSharedSr, localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { connect } from './helpers/jsonrpc.js';
import { exited, scratch as scratchOf } from './helpers/cli.js';
import { startServer } from '../../server/app.js';
import { fileSrProblems, smReady } from '../../server/sm/index.js';
import { cutImportsUndone } from '../../server/xva/import-journal.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'xva-import-test';
const { dir: dataDir, spawnCli } = scratchOf('xva-import');

let a: { srv: RunningServer; x: Client; url: string };
let b: { srv: RunningServer; x: Client; url: string };
let scratch: string;
let vm: string;
const disks: { vdi: string; bytes: Buffer }[] = [];
const xva: Record<'plain' | 'gzip' | 'zstd', string> = { plain: '', gzip: '', zstd: '' };

const q = (params: Record<string, string>) => new URLSearchParams(params).toString();

function pattern(size: number, seed: number, every = 3): Buffer {
  const buf = Buffer.alloc(size);
  for (let off = 0; off < size; off += 64 * 1024) {
    if ((off / (64 * 1024)) % every !== 0) continue;
    for (let i = 0; i < 512; i++) buf[off + i] = (i * 31 + seed + off / 4096) & 0xff;
  }
  return buf;
}

async function download(url: string, path: string, file: string): Promise<void> {
  const r = await fetch(new URL(path, url));
  expect(r.status).toBe(200);
  writeFileSync(file, Buffer.from(await r.arrayBuffer()));
}

async function rawOf(p: { url: string; x: Client }, vdi: string): Promise<Buffer> {
  const r = await fetch(new URL(`/export_raw_vdi?${q({ session_id: p.x.session, vdi, format: 'raw' })}`, p.url));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

/** PUT of `body` with its Content-Length; the status (or the connection cut) once the answer ends. */
function put(url: string, path: string, body: Buffer): Promise<number | 'cut'> {
  return new Promise((resolve) => {
    const req = request(new URL(path, url), { method: 'PUT', headers: { 'content-length': String(body.length) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve('cut'));
    });
    req.on('error', () => resolve('cut'));
    req.end(body);
  });
}

/** The task's final status, result and error, asked until it is no longer pending. */
async function taskOutcome(x: Client, task: string): Promise<{ status: string; result: string; error: string[] }> {
  for (let i = 0; i < 10000; i++) {
    const r = await x.call('task.get_record', task);
    if (r.status !== 'pending') return { status: r.status, result: r.result, error: r.error_info };
  }
  throw new Error('the task never ended');
}

/** PUT /import into `p` with a task of the caller's; the task's outcome. */
async function importXva(p: { url: string; x: Client }, body: Buffer, params: Record<string, string> = {}) {
  const task = await p.x.call('task.create', 'import', '');
  await put(p.url, `/import/?${q({ session_id: p.x.session, task_id: task, ...params })}`, body);
  const out = await taskOutcome(p.x, task);
  const progress = await p.x.call('task.get_progress', task);
  await p.x.call('task.destroy', task);
  return { ...out, progress, vms: [...out.result.matchAll(/<value>(OpaqueRef:[^<]+)<\/value>/g)].map((m) => m[1]) };
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p).map((f) => join(e, f)));
    else out.push(e);
  }
  return out.sort();
}

/** What a failed import must leave as it was: the VMs, VDIs, VBDs, VIFs, networks and SR files. */
async function inventory(p: { srv: RunningServer; x: Client }) {
  return {
    vms: (await p.x.call('VM.get_all')).length,
    vdis: (await p.x.call('VDI.get_all')).length,
    vbds: (await p.x.call('VBD.get_all')).length,
    vifs: (await p.x.call('VIF.get_all')).length,
    networks: (await p.x.call('network.get_all')).length,
    files: filesUnder(p.srv.emu.storageDir),
  };
}

/** The settings an import keeps, for comparing a VM with its import. */
async function settings(x: Client, ref: string) {
  const r = await x.call('VM.get_record', ref);
  const oc = { ...r.other_config };
  delete oc.mac_seed;
  delete oc.import_task;
  return {
    name_label: r.name_label, name_description: r.name_description, memory_static_max: r.memory_static_max,
    memory_dynamic_min: r.memory_dynamic_min, VCPUs_max: r.VCPUs_max, VCPUs_at_startup: r.VCPUs_at_startup,
    HVM_boot_policy: r.HVM_boot_policy, HVM_boot_params: r.HVM_boot_params, platform: r.platform, domain_type: r.domain_type,
    actions_after_crash: r.actions_after_crash, other_config: oc, power_state: r.power_state, is_a_template: r.is_a_template,
    tags: r.tags,
  };
}

/** The VM's disks by userdevice: their bytes read back through /export_raw_vdi. */
async function disksOf(p: { url: string; x: Client }, ref: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const vbd of await p.x.call('VM.get_VBDs', ref)) {
    const r = await p.x.call('VBD.get_record', vbd);
    if (r.type === 'Disk') out.set(r.userdevice, await rawOf(p, r.VDI));
  }
  return out;
}

/** A Python rewrite of an archive: each member passed to `edit` (name, data) → list of (tarinfo kwargs, data). */
function rewrite(src: string, dst: string, edit: string): void {
  const py = [
    'import sys, tarfile, io',
    'src, dst = sys.argv[1], sys.argv[2]',
    'out = tarfile.open(dst, "w", format=tarfile.GNU_FORMAT)',
    'def add(name, data, **kw):',
    '    ti = tarfile.TarInfo(name); ti.size = len(data)',
    '    for k, v in kw.items(): setattr(ti, k, v)',
    '    out.addfile(ti, io.BytesIO(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else None)',
    'with tarfile.open(src) as t:',
    '    for m in t.getmembers():',
    '        data = t.extractfile(m).read()',
    ...edit.split('\n').map((l) => '        ' + l),
    'out.close()',
  ].join('\n');
  execFileSync('python3', ['-c', py, src, dst]);
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'xva-import-'));
  const p1 = await startPool(PASSWORD);
  a = { ...p1, url: p1.srv.urls[0] };
  const p2 = await startPool(PASSWORD);
  b = { ...p2, url: p2.srv.urls[0] };
  const sr = await localStorage(a.x);
  vm = await a.x.call('VM.create', vmArgs('xva-source', { other_config: { 'xapi-emu-guest-profile': 'no-drivers', 'xva-test': 'kept' }, VCPUs_max: 2 }));
  await a.x.call('VM.set_tags', vm, ['backup']);
  await a.x.call('VIF.create', vifArgs(vm, await xenbr0(a.x)));
  for (const [i, size] of [[0, 5 * MiB], [1, 3 * MiB]] as const) {
    const vdi = await a.x.call('VDI.create', vdiArgs(sr, size, `disk-${i}`));
    await a.x.call('VBD.create', vbdArgs(vm, vdi, String(i)));
    const full = Number(await a.x.call('VDI.get_virtual_size', vdi));
    const bytes = pattern(full, i + 1);
    const r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: a.x.session, vdi, format: 'raw' })}`, a.url), { method: 'PUT', body: new Uint8Array(bytes) });
    expect(r.status).toBe(200);
    await r.arrayBuffer();
    disks.push({ vdi, bytes });
  }
  await a.x.call('VBD.create', vbdArgs(vm, 'OpaqueRef:NULL', '3', { type: 'CD', mode: 'RO', empty: true, bootable: false }));
  for (const [kind, c] of [['plain', 'false'], ['gzip', 'gzip'], ['zstd', 'zstd']] as const) {
    xva[kind] = join(scratch, `${kind}.xva`);
    await download(a.url, `/export?${q({ session_id: a.x.session, ref: vm, use_compression: c })}`, xva[kind]);
  }
});

afterAll(async () => {
  await a?.srv.close();
  await b?.srv.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('PUT /import', () => {
  it('imports an export into another SR of the pool: same settings, byte-identical disks, new uuids and MACs', async () => {
    const host = (await a.x.call('host.get_all'))[0];
    const shared = await createSharedSr(a.x, a.srv, host);
    const out = await importXva(a, readFileSync(xva.plain), { sr_id: shared });
    expect(out.status).toBe('success');
    // the task's result is the VMs as an XML-RPC array (what XO reads the VM's ref from)
    expect(out.result).toMatch(/^<value><array><data><value>OpaqueRef:[^<]+<\/value><\/data><\/array><\/value>$/);
    expect(out.vms).toHaveLength(1);
    expect(out.progress).toBe(1);
    const copy = out.vms[0];
    expect(await settings(a.x, copy)).toEqual(await settings(a.x, vm));
    expect(await a.x.call('VM.get_uuid', copy)).not.toBe(await a.x.call('VM.get_uuid', vm));
    expect(await a.x.call('VM.get_current_operations', copy)).toEqual({});
    expect(await a.x.call('VM.get_allowed_operations', copy)).toContain('start');
    // disks in the chosen SR, with the source's bytes
    const got = await disksOf(a, copy);
    expect([...got.keys()].sort()).toEqual(['0', '1']);
    for (const [i, d] of disks.entries()) expect(got.get(String(i))!.equals(d.bytes)).toBe(true);
    for (const vbd of await a.x.call('VM.get_VBDs', copy)) {
      const r = await a.x.call('VBD.get_record', vbd);
      if (r.type === 'Disk') expect(await a.x.call('VDI.get_SR', r.VDI)).toBe(shared);
      else expect(r.empty).toBe(true);
    }
    // the NIC on the network of the same name, with a new MAC
    const [vif] = await a.x.call('VM.get_VIFs', copy);
    const [orig] = await a.x.call('VM.get_VIFs', vm);
    expect(await a.x.call('VIF.get_network', vif)).toBe(await xenbr0(a.x));
    expect(await a.x.call('VIF.get_MAC', vif)).not.toBe(await a.x.call('VIF.get_MAC', orig));
    // and the import can be undone by the API
    await a.x.call('VM.destroy', copy);
  });

  it('imports gzip and zstd archives into a second emulator (into its default SR)', async () => {
    for (const kind of ['gzip', 'zstd'] as const) {
      const out = await importXva(b, readFileSync(xva[kind]));
      expect(out.status, kind).toBe('success');
      const copy = out.vms[0];
      expect(await settings(b.x, copy)).toEqual(await settings(a.x, vm));
      const got = await disksOf(b, copy);
      for (const [i, d] of disks.entries()) expect(got.get(String(i))!.equals(d.bytes)).toBe(true);
      const sr = await b.x.call('pool.get_default_SR', (await b.x.call('pool.get_all'))[0]);
      for (const vdi of (await Promise.all((await b.x.call('VM.get_VBDs', copy)).map((v: string) => b.x.call('VBD.get_VDI', v)))).filter((v: string) => v !== 'OpaqueRef:NULL')) {
        expect(await b.x.call('VDI.get_SR', vdi)).toBe(sr);
      }
    }
  });

  it("with XO's putResource (its probe PUT, then the archive): the VM's ref as its result", async () => {
    const xapi: Xapi = createClient({ url: b.url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, transport: 'json-rpc', debounce: 0 });
    await xapi.connect();
    try {
      const data = readFileSync(xva.plain);
      const body = Object.assign(Readable.from([data.subarray(0, data.length >> 1), data.subarray(data.length >> 1)]), { length: data.length });
      const sr = await localStorage(b.x);
      const result = await (xapi as unknown as { putResource(b: unknown, p: string, o: unknown): Promise<unknown> }).putResource(body, '/import/', { query: { sr_id: sr } });
      const ref = String(Array.isArray(result) ? result[0] : result).match(/OpaqueRef:[0-9a-f-]+/)![0];
      expect(await b.x.call('VM.get_name_label', ref)).toBe('xva-source');
      const got = await disksOf(b, ref);
      for (const [i, d] of disks.entries()) expect(got.get(String(i))!.equals(d.bytes)).toBe(true);
    } finally {
      await xapi.disconnect();
    }
  });

  it('restore=true keeps the uuids and MACs, and refuses to restore over a VM that is not older', async () => {
    const c = await startPool(PASSWORD);
    const p = { ...c, url: c.srv.urls[0] };
    try {
      const out = await importXva(p, readFileSync(xva.plain), { restore: 'true' });
      expect(out.status).toBe('success');
      const copy = out.vms[0];
      expect(await p.x.call('VM.get_uuid', copy)).toBe(await a.x.call('VM.get_uuid', vm));
      const [vif] = await p.x.call('VM.get_VIFs', copy);
      const [orig] = await a.x.call('VM.get_VIFs', vm);
      expect(await p.x.call('VIF.get_MAC', vif)).toBe(await a.x.call('VIF.get_MAC', orig));
      expect(await p.x.call('VIF.get_uuid', vif)).toBe(await a.x.call('VIF.get_uuid', orig));
      expect(await p.x.call('VM.get_other_config', copy)).toMatchObject({ 'xva-test': 'kept' });
      const before = await inventory(p);
      const again = await importXva(p, readFileSync(xva.plain), { restore: 'true' });
      expect(again.status).toBe('failure');
      expect(again.error[0]).toBe('VM_TO_IMPORT_IS_NOT_NEWER_VERSION');
      expect(again.error[1]).toBe(copy);
      expect(await inventory(p)).toEqual(before);
    } finally {
      await c.srv.close();
    }
  });

  it('imports an XVA made by hand from the format (Python tarfile, .checksum SHA-1 and .xxhash members, chunks left out)', async () => {
    const file = join(scratch, 'hand.xva');
    const py = String.raw`
import sys, tarfile, io, hashlib, xmlrpc.client
MiB = 1024 * 1024
def vm():
    return {'uuid': '6a0b5a3e-1111-4c2d-9e3f-0123456789ab', 'name_label': 'hand-made', 'name_description': 'from the format',
      'user_version': '1', 'is_a_template': False, 'memory_static_max': str(128 * MiB), 'memory_dynamic_max': str(128 * MiB),
      'memory_dynamic_min': str(128 * MiB), 'memory_static_min': str(128 * MiB), 'VCPUs_params': {}, 'VCPUs_max': '1',
      'VCPUs_at_startup': '1', 'actions_after_shutdown': 'destroy', 'actions_after_reboot': 'restart',
      'actions_after_crash': 'restart', 'PV_bootloader': '', 'PV_kernel': '', 'PV_ramdisk': '', 'PV_args': '',
      'PV_bootloader_args': '', 'PV_legacy_args': '', 'HVM_boot_policy': 'BIOS order', 'HVM_boot_params': {'order': 'dc'},
      'platform': {}, 'PCI_bus': '', 'other_config': {}, 'recommendations': '', 'power_state': 'Halted',
      'VBDs': ['Ref:2'], 'VIFs': [], 'domain_type': 'hvm', 'resident_on': 'OpaqueRef:NULL',
      'affinity': 'OpaqueRef:NULL', 'domid': '-1', 'domarch': '', 'is_control_domain': False, 'metrics': 'OpaqueRef:NULL',
      'guest_metrics': 'OpaqueRef:NULL'}
objects = [
  {'class': 'SR', 'id': 'Ref:1', 'snapshot': {'uuid': '9c1e6d1b-2222-4c2d-9e3f-0123456789ab', 'name_label': 'theirs', 'content_type': 'user', 'type': 'ext', 'VDIs': ['Ref:3'],
    'virtual_allocation': '0', 'physical_utilisation': '0', 'physical_size': '0', 'shared': False, 'other_config': {}}},
  {'class': 'VM', 'id': 'Ref:0', 'snapshot': vm()},
  {'class': 'VBD', 'id': 'Ref:2', 'snapshot': {'uuid': '1d2f7c44-3333-4c2d-9e3f-0123456789ab', 'VM': 'Ref:0', 'VDI': 'Ref:3', 'userdevice': '0', 'bootable': True, 'mode': 'RW', 'type': 'Disk', 'unpluggable': True, 'empty': False, 'other_config': {}, 'qos_algorithm_type': '', 'qos_algorithm_params': {},
    'storage_lock': False, 'status_code': '0', 'status_detail': '', 'runtime_properties': {}, 'qos_supported_algorithms': []}},
  {'class': 'VDI', 'id': 'Ref:3', 'snapshot': {'uuid': '0e3a8b55-4444-4c2d-9e3f-0123456789ab', 'name_label': 'hand disk', 'name_description': '', 'SR': 'Ref:1', 'virtual_size': str(4 * MiB), 'type': 'user', 'sharable': False, 'read_only': False, 'other_config': {}, 'xenstore_data': {}, 'sm_config': {}, 'tags': [],
    'physical_utilisation': '0', 'storage_lock': False, 'managed': True, 'missing': False, 'parent': 'OpaqueRef:NULL'}},
]
version = {'hostname': 'elsewhere', 'date': '2020-01-01', 'product_version': '8.2.1', 'product_brand': 'XCP-ng', 'build_number': 'release/yangtze', 'xapi_major': 1, 'xapi_minor': 20, 'export_vsn': 2}
doc = xmlrpc.client.dumps(({'version': version, 'objects': objects},))
ova = doc[doc.index('<value>'):doc.rindex('</param>')].encode()
out = tarfile.open(sys.argv[1], 'w', format=tarfile.USTAR_FORMAT)
def add(name, data):
    ti = tarfile.TarInfo(name); ti.size = len(data); out.addfile(ti, io.BytesIO(data))
add('ova.xml', ova)
chunk0 = bytes([i % 251 for i in range(MiB)])
chunk3 = b'\x00' * (MiB - 5) + b'last!'
add('Ref:3/00000000', chunk0)
add('Ref:3/00000000.checksum', hashlib.sha1(chunk0).hexdigest().encode())
add('Ref:3/00000003', chunk3)
add('Ref:3/00000003.checksum', hashlib.sha1(chunk3).hexdigest().encode())
out.close()
`;
    execFileSync('python3', ['-c', py, file]);
    const out = await importXva(b, readFileSync(file));
    expect(out.status, JSON.stringify(out.error)).toBe('success');
    const ref = out.vms[0];
    expect(await b.x.call('VM.get_name_label', ref)).toBe('hand-made');
    expect(await b.x.call('VM.get_power_state', ref)).toBe('Halted');
    const got = (await disksOf(b, ref)).get('0')!;
    const expected = Buffer.alloc(4 * MiB);
    for (let i = 0; i < MiB; i++) expected[i] = i % 251;
    expected.write('last!', 4 * MiB - 5, 'latin1');
    expect(got.equals(expected)).toBe(true);
  });
});

describe('VM.import', () => {
  it("imports from a URL the pool serves (its own /export)", async () => {
    const sr = await localStorage(a.x);
    const url = new URL(`/export?${q({ session_id: a.x.session, ref: vm })}`, a.url).toString();
    const refs = await a.x.call('VM.import', url, sr, false, false);
    expect(refs).toHaveLength(1);
    expect(await settings(a.x, refs[0])).toEqual(await settings(a.x, vm));
    const got = await disksOf(a, refs[0]);
    for (const [i, d] of disks.entries()) expect(got.get(String(i))!.equals(d.bytes)).toBe(true);
    await a.x.call('VM.destroy', refs[0]);
  });

  it('refuses URLs outside the pool, and reports a failed fetch as xapi does', async () => {
    const sr = await localStorage(a.x);
    await expect(a.x.call('VM.import', 'http://192.0.2.1/export', sr, false, false)).rejects.toMatchObject({ description: ['NOT_IMPLEMENTED', 'VM.import from a URL not served by this pool'] });
    await expect(a.x.call('VM.import', 'ftp://127.0.0.1/x.xva', sr, false, false)).rejects.toMatchObject({ description: expect.arrayContaining([expect.stringMatching(/^IMPORT_ERROR/)]) });
    const before = await inventory(a);
    const missing = new URL(`/export?${q({ session_id: a.x.session, ref: 'OpaqueRef:nope' })}`, a.url).toString();
    await expect(a.x.call('VM.import', missing, sr, false, false)).rejects.toMatchObject({ description: expect.arrayContaining([expect.stringMatching(/^IMPORT_ERROR/)]) });
    expect(await inventory(a)).toEqual(before);
  });
});

describe('PUT /import of hostile or broken archives', () => {
  /** Each case: how the archive is made, the error the task fails with. */
  const cases: [string, () => Buffer, string[]][] = [
    ['truncated in the middle of a disk', () => readFileSync(xva.plain).subarray(0, Math.floor(statSync(xva.plain).size * 0.6)), ['IMPORT_ERROR_PREMATURE_EOF']],
    ['cut after a chunk, before its checksum', () => {
      const f = join(scratch, 'cut.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name.endswith("/00000001"): break');
      return readFileSync(f);
    }, ['IMPORT_ERROR_PREMATURE_EOF']],
    ['a bad checksum', () => {
      const f = join(scratch, 'badsum.xva');
      rewrite(xva.plain, f, 'if m.name.endswith("00000001.xxhash"): data = b"0123456789ABCDEF"\nadd(m.name, data)');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['a chunk beyond the disk\'s virtual_size', () => {
      const f = join(scratch, 'beyond.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name == "ova.xml": add("Ref:0/99999999", b"x" * 512); add("Ref:0/99999999.xxhash", b"0")');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['an oversized chunk', () => {
      const f = join(scratch, 'oversize.xva');
      rewrite(xva.plain, f, 'if m.name.endswith("/00000000"): data = data + b"y" * 4096\nadd(m.name, data)');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['a ../ member', () => {
      const f = join(scratch, 'dotdot.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name == "ova.xml": add("../x", b"escape")');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['an absolute member', () => {
      const f = join(scratch, 'abs.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name == "ova.xml": add("/tmp/x", b"escape")');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['a symlink member', () => {
      const f = join(scratch, 'symlink.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name == "ova.xml": add("Ref:0/00000000", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['a hard link member', () => {
      const f = join(scratch, 'hardlink.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name == "ova.xml": add("Ref:0/00000000", b"", type=tarfile.LNKTYPE, linkname="ova.xml")');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['a device member', () => {
      const f = join(scratch, 'device.xva');
      rewrite(xva.plain, f, 'add(m.name, data)\nif m.name == "ova.xml": add("Ref:0/00000000", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['garbage', () => Buffer.from('this is not an archive at all, not even a compressed one'.repeat(100)), ['IMPORT_ERROR_PREMATURE_EOF']],
    ['an empty body', () => Buffer.alloc(0), ['IMPORT_ERROR_PREMATURE_EOF']],
    ['a first member that is not ova.xml', () => {
      const f = join(scratch, 'first.xva');
      rewrite(xva.plain, f, 'add("x" + m.name if m.name == "ova.xml" else m.name, data)');
      return readFileSync(f);
    }, ['IMPORT_ERROR_UNEXPECTED_FILE', 'ova.xml', 'xova.xml']],
    ['an export from a newer xapi', () => {
      const f = join(scratch, 'newer.xva');
      rewrite(xva.plain, f, 'if m.name == "ova.xml":\n    import re; data = re.sub(rb"<name>xapi_major</name><value><i4>\\d+</i4>", b"<name>xapi_major</name><value><i4>999</i4>", data)\nadd(m.name, data)');
      return readFileSync(f);
    }, ['IMPORT_INCOMPATIBLE_VERSION']],
    ['ova.xml that is not XML-RPC', () => {
      const f = join(scratch, 'badxml.xva');
      rewrite(xva.plain, f, 'add(m.name, b"<value><struct><member>" if m.name == "ova.xml" else data)');
      return readFileSync(f);
    }, ['IMPORT_ERROR']],
    ['a huge gzip-compressed ova.xml', () => {
      const f = join(scratch, 'huge.tar');
      execFileSync('python3', ['-c', 'import sys, tarfile, io\nt = tarfile.open(sys.argv[1], "w")\nti = tarfile.TarInfo("ova.xml"); ti.size = 40 * 1024 * 1024\nt.addfile(ti, io.BytesIO(b" " * ti.size))\nt.close()', f]);
      execFileSync('gzip', ['-f', f]);
      return readFileSync(`${f}.gz`);
    }, ['IMPORT_ERROR']],
  ];

  it.each(cases)('%s: the task fails with xapi\'s error and nothing is left', async (_name, make, error) => {
    const body = make();
    const before = await inventory(b);
    const out = await importXva(b, body, { sr_id: await localStorage(b.x) });
    expect(out.status).toBe('failure');
    expect(out.error.slice(0, error.length)).toEqual(error);
    expect(await inventory(b)).toEqual(before);
    // the server still answers
    expect((await b.x.call('VM.get_all')).length).toBe(before.vms);
  });

  it('a client that goes away in the middle of the disks: the task fails and nothing is left', async () => {
    const before = await inventory(b);
    const archive = readFileSync(xva.plain);
    const task = await b.x.call('task.create', 'import', '');
    const req = request(new URL(`/import?${q({ session_id: b.x.session, task_id: task })}`, b.url), {
      method: 'PUT', headers: { 'content-length': String(archive.length) },
    });
    req.on('error', () => undefined);
    req.write(archive.subarray(0, Math.floor(archive.length * 0.7)));
    let created = false;
    for (let i = 0; i < 10000 && !created; i++) created = (await b.x.call('task.get_other_config', task)).object_creation === 'complete';
    expect(created).toBe(true);
    req.destroy();
    const out = await taskOutcome(b.x, task);
    expect(out.status).toBe('failure');
    expect(out.error).toEqual(['IMPORT_ERROR_PREMATURE_EOF']);
    expect(await inventory(b)).toEqual(before);
  });

  it('refuses an ISO library and chunked uploads before reading the body', async () => {
    const iso = (await b.x.call('SR.get_all_records_where', 'field "content_type" = "iso"')) as Record<string, unknown>;
    const isoSr = Object.keys(iso)[0];
    if (isoSr) {
      const out = await importXva(b, readFileSync(xva.plain), { sr_id: isoSr });
      expect(out.error).toEqual(['SR_OPERATION_NOT_SUPPORTED']);
    }
    const task = await b.x.call('task.create', 'import', '');
    const status = await new Promise<number>((resolve) => {
      const req = request(new URL(`/import?${q({ session_id: b.x.session, task_id: task })}`, b.url), { method: 'PUT' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(0));
      req.write('chunk');
      req.end();
    });
    expect(status).toBe(403);
    expect((await taskOutcome(b.x, task)).error).toEqual(['IMPORT_ERROR_CANNOT_HANDLE_CHUNKED']);
  });
});

describe('PUT /import_metadata', () => {
  /** PUT /import_metadata into `p`; the task's outcome. */
  async function importMetadata(p: { url: string; x: Client }, body: Buffer, params: Record<string, string> = {}) {
    const task = await p.x.call('task.create', 'import metadata', '');
    await put(p.url, `/import_metadata?${q({ session_id: p.x.session, task_id: task, ...params })}`, body);
    const out = await taskOutcome(p.x, task);
    await p.x.call('task.destroy', task);
    return { ...out, vms: [...out.result.matchAll(/<value>(OpaqueRef:[^<]+)<\/value>/g)].map((m) => m[1]) };
  }

  let meta: Buffer;
  let metaVm: string;
  let metaDisk: string;
  beforeAll(async () => {
    const sr = await localStorage(a.x);
    metaVm = await a.x.call('VM.create', vmArgs('meta-vm'));
    metaDisk = await a.x.call('VDI.create', vdiArgs(sr, 2 * MiB, 'meta-disk'));
    await a.x.call('VBD.create', vbdArgs(metaVm, metaDisk, '0'));
    await a.x.call('VIF.create', vifArgs(metaVm, await xenbr0(a.x)));
    await a.x.call('VM.snapshot', metaVm, 'meta-snap', []);
    const r = await fetch(new URL(`/export_metadata?${q({ session_id: a.x.session, ref: metaVm })}`, a.url));
    expect(r.status).toBe(200);
    meta = Buffer.from(await r.arrayBuffer());
  });

  it('dry_run finds everything and makes nothing', async () => {
    const before = await inventory(a);
    const out = await importMetadata(a, meta, { dry_run: 'true' });
    expect(out.status).toBe('success');
    expect(out.vms).toEqual([]);
    expect(await inventory(a)).toEqual(before);
  });

  it('brings back a destroyed VM and its snapshot onto the disks still in the SR', async () => {
    const [snap] = await a.x.call('VM.get_snapshots', metaVm);
    const snapDisks = new Set<string>();
    for (const vbd of await a.x.call('VM.get_VBDs', snap)) snapDisks.add(await a.x.call('VBD.get_VDI', vbd));
    const snapUuid = await a.x.call('VM.get_uuid', snap);
    await a.x.call('VM.destroy', snap);
    await a.x.call('VM.destroy', metaVm);
    const out = await importMetadata(a, meta);
    expect(out.status, JSON.stringify(out.error)).toBe('success');
    // the result names the VM, not its snapshot
    expect(out.vms).toHaveLength(1);
    const back = out.vms[0];
    expect(await a.x.call('VM.get_name_label', back)).toBe('meta-vm');
    const [vbd] = (await a.x.call('VM.get_VBDs', back)) as string[];
    expect(await a.x.call('VBD.get_VDI', vbd)).toBe(metaDisk);
    const snaps = await a.x.call('VM.get_snapshots', back);
    expect(snaps).toHaveLength(1);
    const s = await a.x.call('VM.get_record', snaps[0]);
    expect(s.is_a_snapshot).toBe(true);
    expect(s.snapshot_of).toBe(back);
    expect(s.uuid).not.toBe(snapUuid);
    for (const v of s.VBDs) expect(snapDisks.has(await a.x.call('VBD.get_VDI', v))).toBe(true);
    expect(await a.x.call('VM.get_current_operations', back)).toEqual({});
  });

  it('fails with VDI_CONTENT_ID_MISSING where the disks are unknown, and maps them with vdi:<uuid>=<uuid>', async () => {
    const before = await inventory(b);
    const out = await importMetadata(b, meta);
    expect(out.status).toBe('failure');
    expect(out.error).toEqual(['VDI_CONTENT_ID_MISSING']);
    expect(await inventory(b)).toEqual(before);
    // every disk of the archive mapped onto one disk of the second pool
    const target = await b.x.call('VDI.create', vdiArgs(await localStorage(b.x), 2 * MiB, 'target'));
    const uuids = [...meta.toString('latin1').matchAll(/<member><name>class<\/name><value>VDI<\/value><\/member>.*?<name>uuid<\/name><value>([0-9a-f-]{36})<\/value>/g)].map((m) => m[1]);
    expect(uuids.length).toBeGreaterThan(0);
    const targetUuid = await b.x.call('VDI.get_uuid', target);
    const map = Object.fromEntries(uuids.map((u) => [`vdi:${u}`, targetUuid]));
    const mapped = await importMetadata(b, meta, map);
    expect(mapped.status, JSON.stringify(mapped.error)).toBe('success');
    const [vbd] = (await b.x.call('VM.get_VBDs', mapped.vms[0])) as string[];
    expect(await b.x.call('VBD.get_VDI', vbd)).toBe(target);
  });
});

describe('an import cut by a kill', () => {
  it('is undone when the emulator starts again: no VM, no VDI, no file of it left', async () => {
    const data = dataDir();
    const cli = await spawnCli(PASSWORD, ['--data', data]);
    const x = await connect(cli.url, 'root', PASSWORD);
    const vmsBefore = (await x.call('VM.get_all')).length;
    const vdisBefore = (await x.call('VDI.get_all')).length;
    const archive = readFileSync(xva.plain);
    const task = await x.call('task.create', 'import', '');
    // the archive up to the middle of its disks, the rest never sent
    const req = request(new URL(`/import?${q({ session_id: x.session, task_id: task })}`, cli.url), {
      method: 'PUT', headers: { 'content-length': String(archive.length) },
    });
    req.on('error', () => undefined);
    req.write(archive.subarray(0, Math.floor(archive.length * 0.7)));
    // the objects exist, the disks are coming
    let created = false;
    for (let i = 0; i < 10000 && !created; i++) created = (await x.call('task.get_other_config', task)).object_creation === 'complete';
    expect(created).toBe(true);
    expect((await x.call('VM.get_all')).length).toBe(vmsBefore + 1);
    cli.child.kill('SIGKILL');
    await exited(cli.child);
    req.destroy();
    const srv = await startServer({ port: 0, dataDir: data, password: PASSWORD, authFailDelay: 0, closeGrace: 0 });
    try {
      await smReady(srv.emu);
      await cutImportsUndone(srv.emu);
      const y = await connect(srv.urls[0], 'root', PASSWORD);
      expect((await y.call('VM.get_all')).length).toBe(vmsBefore);
      expect((await y.call('VDI.get_all')).length).toBe(vdisBefore);
      const problems: string[] = [];
      for (const sr of await y.call('SR.get_all')) problems.push(...(await fileSrProblems(srv.emu, sr)));
      expect(problems).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});
