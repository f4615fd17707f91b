// GET /export and /export_metadata over real sockets: the XVA of a halted VM read back with Debian's tar and Python's
// tarfile, ova.xml parsed as XML-RPC (version header, the VM and its devices with references
// inside the archive), each disk's 1 MiB chunks and their XXH64 checksum files reassembling to the
// bytes written through /import_raw_vdi, empty chunks left out but the first and the last; gzip,
// zstd, credentials, a bad VM, the client's task, and a client that goes away.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import xxhash from 'xxhash-wasm';
import type { RunningServer } from '../../server/app.js';
import type { Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'xva-export-test';

let srv: RunningServer;
let url: string;
let x: Client;
let scratch: string;
let vm: string;
const disks: { vdi: string; size: number; bytes: Buffer; chunks: number[] }[] = [];

const q = (params: Record<string, string>) => new URLSearchParams(params).toString();

/** Some bytes at `offset` of a zero disk of `size`. */
function disk(size: number, writes: [number, number][]): Buffer {
  const b = Buffer.alloc(size);
  for (const [off, len] of writes) for (let i = 0; i < len; i++) b[off + i] = (i * 7 + off / 4096 + 1) & 0xff || 1;
  return b;
}

async function importRaw(vdi: string, bytes: Buffer): Promise<void> {
  const r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`, url), { method: 'PUT', body: new Uint8Array(bytes) });
  expect(r.status).toBe(200);
  // (the answer's headers come first; the import is done when its body ends)
  await r.arrayBuffer();
}

/** GET into a file; the status and headers. */
async function download(path: string, file: string): Promise<{ status: number; headers: Headers }> {
  const r = await fetch(new URL(path, url));
  writeFileSync(file, Buffer.from(await r.arrayBuffer()));
  return { status: r.status, headers: r.headers };
}

/** ova.xml parsed by Python's own XML-RPC reader, as JSON. */
function parseOva(xml: string): any {
  const py = [
    'import sys, json, xmlrpc.client',
    'doc = "<methodResponse><params><param>" + sys.stdin.read() + "</param></params></methodResponse>"',
    '(v,), _ = xmlrpc.client.loads(doc)',
    'print(json.dumps(v, default=str))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', py], { input: xml }).toString());
}

/** The members Python's tarfile sees, with their sizes. */
function pythonList(file: string, mode: string): [string, number][] {
  const py = `import sys, tarfile, json\nt = tarfile.open(sys.argv[1], '${mode}')\nprint(json.dumps([[m.name, m.size] for m in t.getmembers() if m.isfile()]))`;
  return JSON.parse(execFileSync('python3', ['-c', py, file]).toString());
}

/** Extracts with Debian's tar and checks each disk: its chunks, their checksums, its bytes. */
async function checkArchive(file: string, gz: boolean): Promise<any> {
  const dir = mkdtempSync(join(scratch, 'x-'));
  execFileSync('tar', [gz ? '-xzf' : '-xf', file, '-C', dir]);
  const names = execFileSync('tar', [gz ? '-tzf' : '-tf', file]).toString().trim().split('\n');
  expect(names[0]).toBe('ova.xml');
  expect(pythonList(file, gz ? 'r:gz' : 'r:').map(([n]) => n)).toEqual(names);
  const ova = parseOva(readFileSync(join(dir, 'ova.xml'), 'utf8'));
  const { h64Raw } = await xxhash();
  const vdiIds = new Map<string, string>(); // uuid → id
  for (const o of ova.objects) if (o.class === 'VDI') vdiIds.set(o.snapshot.uuid, o.id);
  for (const d of disks) {
    const uuid = await x.call('VDI.get_uuid', d.vdi);
    const id = vdiIds.get(uuid)!;
    expect(id).toMatch(/^Ref:\d+$/);
    const files = readdirSync(join(dir, id)).sort();
    const chunks = files.filter((f) => /^\d{8}$/.test(f));
    expect(chunks.map(Number)).toEqual(d.chunks);
    expect(files.filter((f) => f.endsWith('.xxhash')).sort()).toEqual(chunks.map((c) => `${c}.xxhash`));
    const back = Buffer.alloc(d.size);
    for (const c of chunks) {
      const data = readFileSync(join(dir, id, c));
      const sum = readFileSync(join(dir, id, `${c}.xxhash`), 'ascii');
      expect(sum).toBe(h64Raw(data).toString(16).toUpperCase().padStart(16, '0'));
      data.copy(back, Number(c) * MiB);
    }
    expect(back.equals(d.bytes)).toBe(true);
  }
  rmSync(dir, { recursive: true, force: true });
  return ova;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  url = srv.urls[0];
  scratch = mkdtempSync(join(tmpdir(), 'xva-export-'));
  const sr = await localStorage(x);
  vm = await x.call('VM.create', vmArgs('xva-vm', { other_config: { 'xva-test': 'kept' } }));
  await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
  // 8 MiB: data in chunk 0 and chunk 3; the VHD blocks (2 MiB) holding them travel whole, zero
  // chunks 1 and 2 included, as xapi sends allocated clusters; none of 4..7 is allocated, but the
  // last chunk always travels
  const a = disk(8 * MiB, [[4096, 8192], [3 * MiB + 512, 1000]]);
  // 3 MiB, every chunk with data; the SR rounds the disk up to 4 MiB (whole VHD blocks), and
  // chunk 3 shares its block with chunk 2
  const b = disk(3 * MiB, [[0, 100], [MiB + 7, 100], [2 * MiB + 9, 100]]);
  for (const [i, bytes, chunks] of [[0, a, [0, 1, 2, 3, 7]], [1, b, [0, 1, 2, 3]]] as const) {
    const vdi = await x.call('VDI.create', vdiArgs(sr, bytes.length, `xva-disk-${i}`));
    await x.call('VBD.create', vbdArgs(vm, vdi, String(i)));
    const size = Number(await x.call('VDI.get_virtual_size', vdi));
    const whole = Buffer.concat([bytes, Buffer.alloc(size - bytes.length)]);
    await importRaw(vdi, whole);
    disks.push({ vdi, size, bytes: whole, chunks: [...chunks] });
  }
  // a CD drive's ISO is not part of the archive
  await x.call('VBD.create', vbdArgs(vm, 'OpaqueRef:NULL', '3', { type: 'CD', mode: 'RO', empty: true, bootable: false }));
});

afterAll(async () => {
  await srv?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('GET /export', () => {
  it('XXH64 is the checksum the format names (the reference vectors)', async () => {
    const { h64Raw } = await xxhash();
    expect(h64Raw(new Uint8Array()).toString(16).toUpperCase()).toBe('EF46DB3751D8E999');
    expect(h64Raw(Buffer.from('a')).toString(16).toUpperCase()).toBe('D24EC4F1A98C6E5B');
  });

  it('streams an XVA that tar and Python read back: ova.xml and every disk, byte for byte', async () => {
    const file = join(scratch, 'plain.xva');
    const { status, headers } = await download(`/export?${q({ session_id: x.session, ref: vm })}`, file);
    expect(status).toBe(200);
    expect(headers.get('content-type')).toBe('application/octet-stream');
    expect(headers.get('content-disposition')).toBe('attachment; filename="export.xva"');
    expect(headers.get('content-length')).toBeNull();
    const ova = await checkArchive(file, false);
    const version = ova.version;
    expect(version.export_vsn).toBe(2);
    expect(typeof version.xapi_major).toBe('number');
    expect(version.product_brand).toBe((await x.call('host.get_software_version', (await x.call('host.get_all'))[0])).product_brand);
    const byClass = (c: string) => ova.objects.filter((o: any) => o.class === c);
    const [v] = byClass('VM');
    expect(v.snapshot.uuid).toBe(await x.call('VM.get_uuid', vm));
    expect(v.snapshot.other_config['xva-test']).toBe('kept');
    expect(v.snapshot.power_state).toBe('Halted');
    // references point inside the archive
    const ids = new Set(ova.objects.map((o: any) => o.id));
    expect(v.snapshot.VBDs).toHaveLength(3);
    for (const r of [...v.snapshot.VBDs, ...v.snapshot.VIFs]) expect(ids.has(r)).toBe(true);
    expect(byClass('VDI')).toHaveLength(2);
    expect(byClass('SR')).toHaveLength(1);
    expect(byClass('VIF')).toHaveLength(1);
    expect(byClass('network')).toHaveLength(1);
    expect(byClass('VM_metrics')).toHaveLength(1);
    for (const d of byClass('VDI')) expect(ids.has(d.snapshot.SR)).toBe(true);
    for (const b of byClass('VBD')) expect(b.snapshot.VM).toBe(v.id);
    expect(byClass('SR')[0].snapshot.PBDs).toEqual([]);
    // the VM's export mark is gone
    expect(await x.call('VM.get_current_operations', vm)).toEqual({});
  });

  it('by uuid, gzip-compressed (use_compression=true and gzip)', async () => {
    const uuid = await x.call('VM.get_uuid', vm);
    for (const c of ['true', 'gzip']) {
      const file = join(scratch, `gz-${c}.xva`);
      const { status } = await download(`/export/?${q({ session_id: x.session, uuid, use_compression: c })}`, file);
      expect(status).toBe(200);
      expect(readFileSync(file).subarray(0, 2).toString('hex')).toBe('1f8b');
      await checkArchive(file, true);
    }
  });

  it('zstd-compressed (use_compression=zstd), read back by Debian\'s zstd', async () => {
    const file = join(scratch, 'zstd.xva');
    const { status } = await download(`/export?${q({ session_id: x.session, ref: vm, use_compression: 'zstd' })}`, file);
    expect(status).toBe(200);
    expect(readFileSync(file).subarray(0, 4).toString('hex')).toBe('28b52ffd');
    const tar = join(scratch, 'zstd.tar');
    execFileSync('zstd', ['-q', '-d', '-f', file, '-o', tar]);
    await checkArchive(tar, false);
    expect(await x.call('VM.get_current_operations', vm)).toEqual({});
  });

  it('completes the client\'s task', async () => {
    const task = await x.call('task.create', 'export', '');
    const file = join(scratch, 'task.xva');
    const { status, headers } = await download(`/export?${q({ session_id: x.session, ref: vm, task_id: task })}`, file);
    expect(status).toBe(200);
    expect(headers.get('task-id')).toBe(task);
    expect(await x.call('task.get_status', task)).toBe('success');
    expect(await x.call('task.get_progress', task)).toBe(1);
  });

  it('checks credentials and the VM', async () => {
    const r401 = await fetch(new URL(`/export?${q({ ref: vm })}`, url));
    expect(r401.status).toBe(401);
    await r401.arrayBuffer();
    const basic = await fetch(new URL(`/export?${q({ ref: vm })}`, url), { headers: { authorization: `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}` } });
    expect(basic.status).toBe(200);
    expect((await basic.arrayBuffer()).byteLength).toBeGreaterThan(4 * MiB);
    for (const [k, v, code] of [['uuid', 'not-a-uuid', 'UUID_INVALID'], ['ref', 'OpaqueRef:nope', 'HANDLE_INVALID']]) {
      const task = await x.call('task.create', 'bad export', '');
      const r = await fetch(new URL(`/export?${q({ session_id: x.session, [k]: v, task_id: task })}`, url));
      expect(r.status).toBe(500);
      await r.arrayBuffer();
      expect((await x.call('task.get_error_info', task))[0]).toBe(code);
    }
  });

  it('a client that goes away mid-stream fails the task and releases the VM', async () => {
    // a disk big enough that the stream waits on the client
    const sr = await localStorage(x);
    const big = await x.call('VM.create', vmArgs('xva-big'));
    const vdi = await x.call('VDI.create', vdiArgs(sr, 64 * MiB, 'big'));
    await x.call('VBD.create', vbdArgs(big, vdi, '0'));
    // (random bytes: zstd cannot make them small)
    await importRaw(vdi, randomBytes(64 * MiB));
    mkdirSync(join(scratch, 'after'), { recursive: true });
    for (const use_compression of ['false', 'zstd']) await cut(big, use_compression);
    // and the VM exports again
    const { status } = await download(`/export?${q({ session_id: x.session, ref: big })}`, join(scratch, 'after', 'big.xva'));
    expect(status).toBe(200);
  });
});

async function cut(big: string, use_compression: string): Promise<void> {
    const task = await x.call('task.create', 'cut export', '');
    await new Promise<void>((resolve) => {
      const req = request(new URL(`/export?${q({ session_id: x.session, ref: big, task_id: task, use_compression })}`, url), { agent: false }, (res) => {
        expect(res.statusCode).toBe(200);
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.end();
    });
    for (let i = 0; i < 200 && (await x.call('task.get_status', task)) === 'pending'; i++) await new Promise((r) => setImmediate(r));
    expect([use_compression, await x.call('task.get_status', task)]).toEqual([use_compression, 'failure']);
    expect(await x.call('VM.get_current_operations', big)).toEqual({});
}

describe('GET /export_metadata', () => {
  /** The archive's members (Debian's tar) and ova.xml parsed. */
  async function metadata(params: Record<string, string>): Promise<{ names: string[]; ova: any; length: string | null }> {
    const file = join(scratch, 'meta.xva');
    const { status, headers } = await download(`/export_metadata?${q({ session_id: x.session, ...params })}`, file);
    expect(status).toBe(200);
    const names = execFileSync('tar', ['-tf', file]).toString().trim().split('\n');
    const ova = parseOva(execFileSync('tar', ['-xOf', file, 'ova.xml']).toString());
    return { names, ova, length: headers.get('content-length') };
  }
  const ofClass = (ova: any, c: string) => ova.objects.filter((o: any) => o.class === c);

  it('ova.xml alone, with the VM\'s snapshots unless export_snapshots=false', async () => {
    const snap = await x.call('VM.snapshot', vm, 'xva-snap');
    const snapUuid = await x.call('VM.get_uuid', snap);
    const { names, ova, length } = await metadata({ uuid: await x.call('VM.get_uuid', vm) });
    expect(names).toEqual(['ova.xml']);
    expect(Number(length)).toBe(statSync(join(scratch, 'meta.xva')).size);
    const vms = ofClass(ova, 'VM');
    expect(vms).toHaveLength(2);
    const s = vms.find((v: any) => v.snapshot.uuid === snapUuid);
    const v = vms.find((v: any) => v.snapshot.uuid !== snapUuid);
    expect(s.snapshot.is_a_snapshot).toBe(true);
    expect(s.snapshot.snapshot_of).toBe(v.id);
    // the snapshot's own disks come along
    expect(ofClass(ova, 'VDI').length).toBe(4);
    expect(await x.call('VM.get_current_operations', vm)).toEqual({});

    const alone = await metadata({ ref: vm, export_snapshots: 'false' });
    expect(ofClass(alone.ova, 'VM').map((o: any) => o.snapshot.uuid)).toEqual([v.snapshot.uuid]);
  });

  it('excluded_device_types leaves devices out; an unknown type fails the task', async () => {
    const { ova } = await metadata({ ref: vm, export_snapshots: 'false', excluded_device_types: 'vif' });
    expect(ofClass(ova, 'VIF')).toHaveLength(0);
    expect(ofClass(ova, 'network')).toHaveLength(0);
    expect(ofClass(ova, 'VBD').length).toBeGreaterThan(0);
    expect(ofClass(ova, 'VM')[0].snapshot.VIFs).toEqual([]);
    const task = await x.call('task.create', 'bad metadata export', '');
    const r = await fetch(new URL(`/export_metadata?${q({ session_id: x.session, ref: vm, excluded_device_types: 'vif,nic', task_id: task })}`, url));
    expect(r.status).toBe(500);
    await r.arrayBuffer();
    expect(await x.call('task.get_error_info', task)).toEqual(['INTERNAL_ERROR', "Type 'nic' not one of [vif; vbd; vgpu; vtpm]"]);
  });

  it('all=true: every VM but default templates, the control domain unless include_dom0=false', async () => {
    const { ova } = await metadata({ all: 'true', include_dom0: 'false' });
    const uuids = new Set(ofClass(ova, 'VM').map((o: any) => o.snapshot.uuid));
    expect(uuids.has(await x.call('VM.get_uuid', vm))).toBe(true);
    for (const [ref, r] of Object.entries<any>(await x.call('VM.get_all_records'))) {
      const dflt = r.is_default_template || (r.is_a_template && r.other_config.default_template === 'true');
      expect([ref, uuids.has(r.uuid)]).toEqual([ref, !dflt && !r.is_control_domain]);
    }
    const withDom0 = await metadata({ all: 'true' });
    expect(ofClass(withDom0.ova, 'VM').some((o: any) => o.snapshot.is_control_domain)).toBe(true);
  });
});

