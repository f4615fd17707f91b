// Storage: SRs, PBDs and VDIs over JSON-RPC against a real server, with the files on disk checked
// (qemu-img for each VHD, the VHD library for chains) and data written and read through the
// emulator's own VDI I/O (server/sm openVdi).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { startServer, type RunningServer } from '../../server/app.js';
import { defaultConf } from '../../server/config.js';
import { gcPending, openVdi, runSrGc, smReady, vdiPath } from '../../server/sm/index.js';
import { withOperation } from '../../server/api/operations.js';
import { createTask, destroyTask } from '../../server/api/task-runner.js';
import type { Call } from '../../server/dispatch/registry.js';
import type { Emulator } from '../../server/emulator.js';
import { Vhd, chainOf } from '../../storage/vhd/index.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { GiB, MiB, NULL, vdiArgs as baseVdiArgs } from './helpers/records.js';

const PASSWORD = 'storage-test';

let srv: RunningServer;
let x: Client;
let emu: Emulator;
let local: string; // the master's Local storage
let master: string;

const dirs: string[] = [];
const servers: RunningServer[] = [];

function qemuInfo(file: string): { format: string; 'virtual-size': number } {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' }));
}

/** qemu-img info --backing-chain: each file of a VHD chain is a valid vpc image of the VDI's size
 * (qemu's vpc driver does not follow VHD parents: the chain itself is read with the VHD library). */
async function checkChain(file: string, size: number): Promise<string[]> {
  const out = execFileSync('qemu-img', ['info', '--backing-chain', file], { encoding: 'utf8' });
  expect(out).toContain('file format: vpc');
  const chain = await chainOf(file);
  for (const f of chain) {
    const info = qemuInfo(f);
    expect(info.format).toBe('vpc');
    expect(info['virtual-size']).toBe(size);
  }
  return chain.map((f) => basename(f, '.vhd'));
}

async function writeVdi(vdi: string, offset: number, data: Buffer): Promise<void> {
  const io = await openVdi(emu, vdi, { readOnly: false });
  try {
    await io.write(offset, data);
    await io.flush();
  } finally {
    await io.close();
  }
}

async function readVdi(vdi: string, offset: number, length: number): Promise<Buffer> {
  const io = await openVdi(emu, vdi, { readOnly: true });
  try {
    return await io.read(offset, length);
  } finally {
    await io.close();
  }
}

const pattern = (seed: number, n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

/** The disks here carry a description, other_config and tags, which the tests find again on snapshots and copies. */
const vdiArgs = (sr: string, size: number, name = 'disk', extra: Record<string, unknown> = {}) =>
  baseVdiArgs(sr, size, name, { name_description: 'a test disk', other_config: { owner: 'test' }, tags: ['t'], ...extra });

const rec = (cls: string, ref: string) => x.call(`${cls}.get_record`, ref);
const uuidOf = async (cls: string, ref: string) => (await rec(cls, ref)).uuid as string;

/** A fake in-process call holding an operation (a long-running operation of another client). */
function holder(): { call: Call; done: () => void } {
  const task = createTask(emu, { label: 'hold', session: x.session, host: master });
  return { call: { emu, task, session: x.session, host: master } as unknown as Call, done: () => destroyTask(emu, task) };
}

beforeAll(async () => {
  srv = await startServer({ port: 0, memory: true, hosts: 2, password: PASSWORD, authFailDelay: 0, conf: { ...defaultConf(), sr_gc_auto: 0 } });
  servers.push(srv);
  emu = srv.emu;
  x = await connect(srv.urls[0], 'root', PASSWORD);
  master = (await x.call('pool.get_all_records'))[(await x.call('pool.get_all'))[0]].master;
  const srs = await x.call('SR.get_all_records');
  local = Object.keys(srs).find((r) => srs[r].name_label === 'Local storage' && srs[r].PBDs.some((p: string) => emu.db.get('PBD', p)?.host === master))!;
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the default pool', () => {
  it('has its SRs attached with xapi\'s allowed operations and the local SR directories made', async () => {
    const srs = await x.call('SR.get_all_records');
    const l = srs[local];
    // (the directories are made by the storage start-up, which API calls wait for and this check does not)
    await smReady(emu);
    expect(existsSync(join(emu.srRoot, l.uuid))).toBe(true);
    expect(l.allowed_operations).toEqual(expect.arrayContaining(['scan', 'plug', 'unplug', 'vdi_create', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot', 'update', 'pbd_create', 'pbd_destroy']));
    // attached PBDs forbid destroy and forget (CA-70294); ext has no VDI_INTRODUCE
    expect(l.allowed_operations).not.toContain('destroy');
    expect(l.allowed_operations).not.toContain('forget');
    expect(l.allowed_operations).not.toContain('vdi_introduce');
    expect(l.current_operations).toEqual({});
    const dvd = Object.values<any>(srs).find((r) => r.name_label === 'DVD drives');
    expect(dvd.allowed_operations).toContain('vdi_introduce');
    expect(dvd.allowed_operations).not.toContain('vdi_create');
    const tools = Object.values<any>(srs).find((r) => r.is_tools_sr);
    expect(tools.allowed_operations).not.toContain('vdi_create');
    expect(tools.allowed_operations).not.toContain('vdi_destroy');
  });

  it('refuses VDI creation on udev SRs: SR_OPERATION_NOT_SUPPORTED', async () => {
    const dvd = (await x.call('SR.get_by_name_label', 'DVD drives'))[0];
    expect(await faultOf(x.call('VDI.create', vdiArgs(dvd, 10 * MiB)))).toEqual(['SR_OPERATION_NOT_SUPPORTED', dvd]);
  });
});

describe('VDIs on an ext SR', () => {
  it('creates a VHD rounded to 2 MiB and destroys it', async () => {
    const before = await rec('SR', local);
    const vdi = await x.call('VDI.create', vdiArgs(local, 10 * MiB + 1));
    const r = await rec('VDI', vdi);
    expect(r).toMatchObject({
      name_label: 'disk', name_description: 'a test disk', virtual_size: 12 * MiB, type: 'user', read_only: false, sharable: false,
      managed: true, missing: false, is_a_snapshot: false, snapshot_of: NULL, location: r.uuid, sm_config: {},
      other_config: { owner: 'test' }, tags: ['t'], current_operations: {}, SR: local,
    });
    const file = vdiPath(emu, vdi)!;
    expect(file).toBe(join(emu.srRoot, before.uuid, `${r.uuid}.vhd`));
    expect(r.physical_utilisation).toBe(statSync(file).size);
    expect(qemuInfo(file)).toMatchObject({ format: 'vpc', 'virtual-size': 12 * MiB });
    expect(r.allowed_operations).toEqual(expect.arrayContaining(['clone', 'copy', 'resize', 'snapshot', 'destroy', 'forget', 'update', 'generate_config']));
    expect(r.allowed_operations).not.toContain('resize_online');
    expect((await rec('SR', local)).virtual_allocation).toBe(before.virtual_allocation + 12 * MiB);

    await x.call('VDI.destroy', vdi);
    expect(existsSync(file)).toBe(false);
    expect(await faultOf(rec('VDI', vdi))).toEqual(['HANDLE_INVALID', 'VDI', vdi]);
    expect((await rec('SR', local)).virtual_allocation).toBe(before.virtual_allocation);
  });

  it('checks sizes as SM does', async () => {
    const small = await x.call('VDI.create', vdiArgs(local, 1));
    expect((await rec('VDI', small)).virtual_size).toBe(2 * MiB);
    await x.call('VDI.destroy', small);
    const n = (await x.call('VDI.get_all')).length;
    expect(await faultOf(x.call('VDI.create', vdiArgs(local, 2041 * GiB)))).toEqual([
      'SR_BACKEND_FAILURE_79', '', 'VDI Invalid size [opterr=VDI size must be between 1 MB and 2088960 MB]', '',
    ]);
    expect(await faultOf(x.call('VDI.create', vdiArgs(local, 20 * MiB, 'cbt', { type: 'cbt_metadata' })))).toEqual(['VDI_INCOMPATIBLE_TYPE', '', 'cbt_metadata']);
    expect((await x.call('VDI.get_all')).length).toBe(n);
  });

  it('grows a VDI keeping its data, and refuses to shrink it', async () => {
    const vdi = await x.call('VDI.create', vdiArgs(local, 4 * MiB));
    await writeVdi(vdi, 1000, pattern(1, 3 * MiB));
    await x.call('VDI.resize', vdi, 64 * MiB);
    expect((await rec('VDI', vdi)).virtual_size).toBe(64 * MiB);
    expect(qemuInfo(vdiPath(emu, vdi)!)['virtual-size']).toBe(64 * MiB);
    expect((await readVdi(vdi, 1000, 3 * MiB)).equals(pattern(1, 3 * MiB))).toBe(true);
    await writeVdi(vdi, 60 * MiB, pattern(2, MiB));
    expect((await readVdi(vdi, 60 * MiB, MiB)).equals(pattern(2, MiB))).toBe(true);
    expect(await faultOf(x.call('VDI.resize', vdi, 8 * MiB))).toEqual(['SR_BACKEND_FAILURE_79', '', 'VDI Invalid size [opterr=shrinking not allowed]', '']);
    await x.call('VDI.destroy', vdi);
  });

  it('snapshots as FileSR: a hidden base copy, two leaves, data kept apart', async () => {
    const v = await x.call('VDI.create', vdiArgs(local, 8 * MiB, 'origin'));
    const A = pattern(3, 2 * MiB);
    await writeVdi(v, 0, A);
    const s = await x.call('VDI.snapshot', v, {});
    const vr = await rec('VDI', v);
    const sr = await rec('VDI', s);
    const baseUuid = vr.sm_config['vhd-parent'];
    expect(baseUuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(sr.sm_config).toEqual({ 'vhd-parent': baseUuid });
    expect(sr).toMatchObject({ name_label: 'origin', name_description: 'a test disk', is_a_snapshot: true, snapshot_of: v, read_only: false, managed: true, other_config: { owner: 'test' }, tags: ['t'], virtual_size: 8 * MiB });
    expect(sr.snapshot_time).not.toBe('19700101T00:00:00Z');
    expect(vr.snapshots).toEqual([s]);
    const base = await x.call('VDI.get_by_uuid', baseUuid);
    expect(await rec('VDI', base)).toMatchObject({ name_label: 'base copy', managed: false, read_only: true, sm_config: {}, location: baseUuid, virtual_size: 8 * MiB });

    const chainV = await checkChain(vdiPath(emu, v)!, 8 * MiB);
    const chainS = await checkChain(vdiPath(emu, s)!, 8 * MiB);
    expect(chainV).toEqual([vr.uuid, baseUuid]);
    expect(chainS).toEqual([sr.uuid, baseUuid]);
    const b = await Vhd.open(join(emu.srRoot, (await rec('SR', local)).uuid, `${baseUuid}.vhd`), { readOnly: true });
    expect(b.hidden).toBe(true);
    await b.close();

    const B = pattern(4, 2 * MiB);
    await writeVdi(v, 0, B);
    expect((await readVdi(v, 0, 2 * MiB)).equals(B)).toBe(true);
    expect((await readVdi(s, 0, 2 * MiB)).equals(A)).toBe(true);

    // the base copy is SM's, not the user's
    expect(await faultOf(x.call('VDI.destroy', base))).toEqual(['VDI_NOT_MANAGED', base]);
    expect(await faultOf(x.call('VDI.snapshot', base, {}))).toEqual(['VDI_NOT_MANAGED', base]);

    // a clone: the same chain shape, not a snapshot
    const c = await x.call('VDI.clone', v, {});
    const cr = await rec('VDI', c);
    expect(cr).toMatchObject({ is_a_snapshot: false, snapshot_of: NULL, name_label: 'origin' });
    const base2 = (await rec('VDI', v)).sm_config['vhd-parent'];
    expect(base2).not.toBe(baseUuid);
    expect(cr.sm_config).toEqual({ 'vhd-parent': base2 });
    expect(await checkChain(vdiPath(emu, c)!, 8 * MiB)).toEqual([cr.uuid, base2, baseUuid]);
    await writeVdi(c, 0, pattern(5, MiB));
    expect((await readVdi(v, 0, 2 * MiB)).equals(B)).toBe(true);
    expect((await readVdi(c, MiB, MiB)).equals(B.subarray(MiB))).toBe(true);

    for (const d of [c, s, v]) await x.call('VDI.destroy', d);
    await runSrGc(emu, local);
    expect((await rec('SR', local)).VDIs).toEqual([]);
  });

  it('refuses snapshots beyond 30 files in a chain (SnapshotChainTooLong)', async () => {
    const v = await x.call('VDI.create', vdiArgs(local, 2 * MiB));
    for (let i = 1; i < 30; i++) await x.call('VDI.snapshot', v, { type: 'single' });
    expect((await chainOf(vdiPath(emu, v)!)).length).toBe(30);
    expect(await faultOf(x.call('VDI.snapshot', v, {}))).toEqual(['SR_BACKEND_FAILURE_109', '', 'The snapshot chain is too long', '']);
    await x.call('VDI.destroy', v);
    const res = await runSrGc(emu, local);
    expect(res.deleted.length).toBe(29);
    expect((await rec('SR', local)).VDIs).toEqual([]);
  });

  it('collects garbage: destroyed snapshots leave the leaf intact and the base copies go', async () => {
    const v = await x.call('VDI.create', vdiArgs(local, 16 * MiB, 'keeper'));
    await writeVdi(v, 0, pattern(6, 4 * MiB));
    const s1 = await x.call('VDI.snapshot', v, {});
    await writeVdi(v, 3 * MiB, pattern(7, 6 * MiB));
    const s2 = await x.call('VDI.snapshot', v, {});
    await writeVdi(v, 12 * MiB, pattern(8, 3 * MiB));
    const before = await readVdi(v, 0, 16 * MiB);
    const vuuid = await uuidOf('VDI', v);
    expect((await chainOf(vdiPath(emu, v)!)).length).toBe(3);
    await x.call('VDI.destroy', s1);
    await x.call('VDI.destroy', s2);
    // until the GC runs, the base copies stay
    expect((await rec('SR', local)).VDIs.length).toBe(3);
    const res = await runSrGc(emu, local);
    expect(res.deleted.length + res.coalesced.length + res.leafCoalesced.length).toBeGreaterThan(0);
    expect((await rec('SR', local)).VDIs).toEqual([v]);
    expect(await checkChain(vdiPath(emu, v)!, 16 * MiB)).toEqual([vuuid]);
    const after = await rec('VDI', v);
    expect(after).toMatchObject({ uuid: vuuid, virtual_size: 16 * MiB, sm_config: {}, managed: true, read_only: false, name_label: 'keeper' });
    expect(after.physical_utilisation).toBe(statSync(vdiPath(emu, v)!).size);
    expect((await readVdi(v, 0, 16 * MiB)).equals(before)).toBe(true);
    const srDir = join(emu.srRoot, (await rec('SR', local)).uuid);
    expect(readdirSync(srDir).filter((f) => f.endsWith('.vhd'))).toEqual([`${vuuid}.vhd`]);
    await x.call('VDI.destroy', v);
  });

  it('marks operations in current_operations and queues conflicting ones; OTHER_OPERATION_IN_PROGRESS once xapi gives up', async () => {
    // another client's long SR.scan
    const h = holder();
    let release!: () => void;
    const held = withOperation(h.call, 'SR', local, 'scan', () => new Promise<void>((r) => (release = r)));
    const during = await rec('SR', local);
    expect(during.current_operations).toEqual({ [h.call.task]: 'scan' });
    expect(during.allowed_operations).toEqual([]);
    // at time scale 0 a conflicting call waits for the scan to end
    const task = await x.call('Async.VDI.create', vdiArgs(local, 2 * MiB));
    await new Promise((r) => setTimeout(r, 50));
    expect((await rec('task', task)).status).toBe('pending');
    release();
    await held;
    for (let i = 0; i < 100 && (await rec('task', task)).status === 'pending'; i++) await new Promise((r) => setTimeout(r, 10));
    const t = await rec('task', task);
    expect(t.status).toBe('success');
    const vdi = /OpaqueRef:[0-9a-f-]+/.exec(t.result)![0];
    expect((await rec('SR', local)).current_operations).toEqual({});
    expect((await rec('SR', local)).allowed_operations).toContain('vdi_create');

    // a waiting call's task can be cancelled
    const h3 = holder();
    let release3!: () => void;
    const held3 = withOperation(h3.call, 'SR', local, 'scan', () => new Promise<void>((r) => (release3 = r)));
    const waiting = await x.call('Async.VDI.create', vdiArgs(local, 2 * MiB));
    await new Promise((r) => setTimeout(r, 20));
    expect((await rec('task', waiting)).allowed_operations).toEqual(['cancel']);
    await x.call('task.cancel', waiting);
    for (let i = 0; i < 100 && (await rec('task', waiting)).status === 'pending'; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await rec('task', waiting)).toMatchObject({ status: 'cancelled', error_info: ['TASK_CANCELLED', waiting] });
    release3();
    await held3;
    h3.done();

    // with time running, xapi retries for two (simulated) hours before giving up
    const h2 = holder();
    let release2!: () => void;
    const held2 = withOperation(h2.call, 'SR', local, 'scan', () => new Promise<void>((r) => (release2 = r)));
    emu.clock.scale = 0.00005; // 2 h in 0.36 s
    try {
      expect(await faultOf(x.call('VDI.destroy', vdi))).toEqual(['OTHER_OPERATION_IN_PROGRESS', 'SR', local, 'scan', h2.call.task]);
    } finally {
      emu.clock.scale = 0;
      release2();
      await held2;
      h.done();
      h2.done();
    }
    await x.call('VDI.destroy', vdi);
  });
});

describe('file SRs', () => {
  let fsr: string;
  let location: string;

  it('SR.create makes a shared file SR with a plugged PBD per host', async () => {
    location = join(emu.storageDir, 'file-sr-1');
    fsr = await x.call('SR.create', master, { location }, 0, 'File SR', 'files', 'file', 'user', true, {});
    const r = await rec('SR', fsr);
    expect(r).toMatchObject({ name_label: 'File SR', name_description: 'files', type: 'file', content_type: 'user', shared: true, virtual_allocation: 0, physical_utilisation: 0 });
    expect(r.physical_size).toBeGreaterThan(0);
    expect(r.PBDs.length).toBe(2);
    const hosts = new Set<string>();
    for (const p of r.PBDs) {
      const pr = await rec('PBD', p);
      expect(pr).toMatchObject({ SR: fsr, device_config: { location }, currently_attached: true, other_config: {} });
      hosts.add(pr.host);
    }
    expect(hosts.size).toBe(2);
    expect(r.allowed_operations).toContain('vdi_create');
    expect(existsSync(location)).toBe(true);
    expect(statSync(join(emu.srRoot, r.uuid)).isDirectory()).toBe(true);
  });

  it('refuses a location outside the data directory and a location that is not empty', async () => {
    const n = (await x.call('SR.get_all')).length;
    const outside = await faultOf(x.call('SR.create', master, { location: '/etc' }, 0, 'bad', '', 'file', 'user', false, {}));
    expect(outside[0]).toBe('SR_BACKEND_FAILURE_61');
    expect(outside[2]).toMatch(/^File SR creation error/);
    // nor the data directory itself (it holds the database)
    const intro = await x.call('SR.introduce', '', 'x', '', 'file', 'user', false, {});
    const pbd = await x.call('PBD.create', { host: master, SR: intro, device_config: { location: emu.storageDir } });
    expect((await faultOf(x.call('PBD.plug', pbd)))[0]).toBe('SR_BACKEND_FAILURE_61');
    expect((await rec('PBD', pbd)).currently_attached).toBe(false);
    await x.call('SR.forget', intro);
    const busy = join(emu.storageDir, 'busy');
    mkdirSync(busy);
    writeFileSync(join(busy, 'x'), 'x');
    expect(await faultOf(x.call('SR.create', master, { location: busy }, 0, 'bad', '', 'file', 'user', false, {}))).toEqual(['SR_BACKEND_FAILURE_61', '', 'File SR creation error', '']);
    expect(await faultOf(x.call('SR.create', master, {}, 0, 'bad', '', 'file', 'user', false, {}))).toEqual(['SR_BACKEND_FAILURE_94', '', 'The request is missing the location parameter', '']);
    expect(await faultOf(x.call('SR.create', master, { location: busy }, 0, 'bad', '', 'nosuchtype', 'user', false, {}))).toEqual(['SR_UNKNOWN_DRIVER', 'nosuchtype']);
    expect((await x.call('SR.get_all')).length).toBe(n);
  });

  it('copies a VDI with its chain into another SR as one flat VHD', async () => {
    const v = await x.call('VDI.create', vdiArgs(local, 20 * MiB, 'to copy'));
    await writeVdi(v, 0, pattern(9, 5 * MiB));
    const snap = await x.call('VDI.snapshot', v, {});
    await writeVdi(v, 10 * MiB, pattern(10, 5 * MiB));
    const c = await x.call('VDI.copy', v, fsr, NULL, NULL);
    const cr = await rec('VDI', c);
    expect(cr).toMatchObject({ SR: fsr, name_label: 'to copy', virtual_size: 20 * MiB, read_only: false, is_a_snapshot: false, sm_config: {}, other_config: { owner: 'test' } });
    expect(await checkChain(vdiPath(emu, c)!, 20 * MiB)).toEqual([cr.uuid]);
    expect((await readVdi(c, 0, 20 * MiB)).equals(await readVdi(v, 0, 20 * MiB))).toBe(true);
    expect(cr.physical_utilisation).toBe(statSync(vdiPath(emu, c)!).size);
    // into an existing VDI
    const small = await x.call('VDI.create', vdiArgs(fsr, 2 * MiB));
    expect(await faultOf(x.call('VDI.copy', v, fsr, NULL, small))).toEqual(['VDI_TOO_SMALL', small, String(20 * MiB)]);
    for (const d of [small, c, snap]) await x.call('VDI.destroy', d);
    await x.call('VDI.destroy', v);
    await runSrGc(emu, local);
  });

  it('SR.scan introduces VHDs put there by hand, forgets removed ones and ignores hidden leaves', async () => {
    const r = await rec('SR', fsr);
    const dir = join(emu.srRoot, r.uuid);
    const added = randomUUID();
    execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', join(dir, `${added}.vhd`), '10M']);
    const hidden = randomUUID();
    const h = await Vhd.create(join(dir, `${hidden}.vhd`), { uuid: hidden, size: 4 * MiB });
    await h.setHidden(true);
    await h.close();
    writeFileSync(join(dir, 'notes.txt'), 'not a disk');
    await x.call('SR.scan', fsr);
    const ref = await x.call('VDI.get_by_uuid', added);
    const vr = await rec('VDI', ref);
    expect(vr).toMatchObject({ uuid: added, location: added, SR: fsr, name_label: '', managed: true, read_only: false, type: 'user', virtual_size: qemuInfo(join(dir, `${added}.vhd`))['virtual-size'] });
    expect(await faultOf(x.call('VDI.get_by_uuid', hidden))).toEqual(['UUID_INVALID', 'VDI', hidden]);
    // virtual_allocation after a scan: the sum over the SR's VDI records (Xapi_sr.scan)
    const all = await x.call('VDI.get_all_records');
    const sum = Object.values<any>(all).filter((v) => v.SR === fsr).reduce((a, v) => a + v.virtual_size, 0);
    expect((await rec('SR', fsr)).virtual_allocation).toBe(sum);

    rmSync(join(dir, `${added}.vhd`));
    await x.call('SR.scan', fsr);
    expect(await faultOf(rec('VDI', ref))).toEqual(['HANDLE_INVALID', 'VDI', ref]);
    // the hidden leaf is garbage
    const res = await runSrGc(emu, fsr);
    expect(res.deleted).toContain(hidden);
    expect(existsSync(join(dir, `${hidden}.vhd`))).toBe(false);
  });

  it('refuses VDI operations once unplugged, SR.destroy while not empty, and forgets and reintroduces', async () => {
    const v = await x.call('VDI.create', vdiArgs(fsr, 4 * MiB, 'survivor'));
    await writeVdi(v, 0, pattern(11, MiB));
    const vuuid = await uuidOf('VDI', v);
    const sr = await rec('SR', fsr);
    expect(await faultOf(x.call('SR.destroy', fsr))).toEqual(['SR_HAS_PBD', fsr]);
    expect(await faultOf(x.call('SR.forget', fsr))).toEqual(['SR_HAS_PBD', fsr]);
    expect(await faultOf(x.call('PBD.destroy', sr.PBDs[0]))).toEqual(['OPERATION_NOT_ALLOWED', 'PBD is currently attached']);
    for (const p of sr.PBDs) await x.call('PBD.unplug', p);
    expect((await rec('SR', fsr)).allowed_operations).toEqual(expect.arrayContaining(['forget', 'plug', 'vdi_create']));
    expect(await faultOf(x.call('VDI.create', vdiArgs(fsr, 2 * MiB)))).toEqual(['SR_HAS_NO_PBDS', fsr]);
    expect(await faultOf(x.call('VDI.snapshot', v, {}))).toEqual(['SR_HAS_NO_PBDS', fsr]);
    expect(await faultOf(x.call('SR.scan', fsr))).toEqual(['SR_HAS_NO_PBDS', fsr]);
    expect(await faultOf(x.call('SR.destroy', fsr))).toEqual(['SR_NOT_EMPTY']);

    // forget: records go, files stay
    const nPbd = (await x.call('PBD.get_all')).length;
    await x.call('SR.forget', fsr);
    expect(await faultOf(rec('VDI', v))).toEqual(['HANDLE_INVALID', 'VDI', v]);
    expect((await x.call('PBD.get_all')).length).toBe(nPbd - 2);
    expect(existsSync(join(location, `${vuuid}.vhd`))).toBe(true);

    // introduce it again and find the disk
    fsr = await x.call('SR.introduce', sr.uuid, 'File SR again', '', 'file', 'user', true, {});
    expect(await rec('SR', fsr)).toMatchObject({ uuid: sr.uuid, physical_size: -1, physical_utilisation: -1, PBDs: [], VDIs: [] });
    const pbd = await x.call('PBD.create', { host: master, SR: fsr, device_config: { location }, other_config: { ignored: 'yes' } });
    expect(await rec('PBD', pbd)).toMatchObject({ currently_attached: false, other_config: {} });
    expect(await faultOf(x.call('PBD.create', { host: master, SR: fsr, device_config: { location } }))).toEqual(['PBD_EXISTS', fsr, master, pbd]);
    await x.call('PBD.plug', pbd);
    expect((await rec('SR', fsr)).physical_size).toBeGreaterThan(0);
    await x.call('SR.scan', fsr);
    const back = await x.call('VDI.get_by_uuid', vuuid);
    expect(await rec('VDI', back)).toMatchObject({ virtual_size: 4 * MiB, managed: true, SR: fsr });
    expect((await readVdi(back, 0, MiB)).equals(pattern(11, MiB))).toBe(true);

    await x.call('VDI.destroy', back);
    await x.call('PBD.unplug', pbd);
    await x.call('SR.destroy', fsr);
    expect(await faultOf(rec('SR', fsr))).toEqual(['HANDLE_INVALID', 'SR', fsr]);
    expect(await faultOf(rec('PBD', pbd))).toEqual(['HANDLE_INVALID', 'PBD', pbd]);
    expect(readdirSync(location)).toEqual([]);
    expect(existsSync(join(emu.srRoot, sr.uuid))).toBe(false);
  });
});

describe('ISO SRs', () => {
  it('lists the images of its directory and refuses snapshots and resizes', async () => {
    const location = join(emu.storageDir, 'isos');
    mkdirSync(location);
    writeFileSync(join(location, 'installer.iso'), Buffer.alloc(64 * 1024, 7));
    writeFileSync(join(location, 'readme.txt'), 'not an image');
    const iso = await x.call('SR.create', master, { location, legacy_mode: 'true' }, 0, 'ISOs', '', 'iso', 'iso', true, {});
    await x.call('SR.scan', iso);
    const [img] = await x.call('VDI.get_by_name_label', 'installer.iso');
    expect(await rec('VDI', img)).toMatchObject({ location: 'installer.iso', read_only: true, virtual_size: 64 * 1024, SR: iso });
    expect((await readVdi(img, 0, 16)).equals(Buffer.alloc(16, 7))).toBe(true);
    expect(await faultOf(x.call('VDI.snapshot', img, {}))).toEqual(['SR_OPERATION_NOT_SUPPORTED', iso]);
    expect(await faultOf(x.call('VDI.resize', img, 1 * MiB))).toEqual(['SR_OPERATION_NOT_SUPPORTED', iso]);
    expect(await faultOf(x.call('VDI.clone', img, {}))).toEqual(['SR_OPERATION_NOT_SUPPORTED', iso]);
    expect(await faultOf(x.call('SR.probe', master, { location }, 'iso', {}))).toEqual(['SR_BACKEND_FAILURE', "Operation 'sr_probe' not supported by this SR type", '', '']);
    rmSync(join(location, 'installer.iso'));
    await x.call('SR.scan', iso);
    expect(await x.call('VDI.get_by_name_label', 'installer.iso')).toEqual([]);
  });
});

describe('restart', () => {
  it('keeps SR and VDI records and their files; the GC runs by itself after a delete', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'xapi-emu-storage-'));
    dirs.push(dataDir);
    const opts = { port: 0, dataDir, password: PASSWORD, authFailDelay: 0, conf: { ...defaultConf(), sr_gc_interval: 0 } };
    let s1: RunningServer | null = await startServer(opts);
    let c = await connect(s1.urls[0], 'root', PASSWORD);
    const [lsr] = await c.call('SR.get_by_name_label', 'Local storage');
    const v = await c.call('VDI.create', vdiArgs(lsr, 6 * MiB, 'persistent'));
    const io = await openVdi(s1.emu, v, { readOnly: false });
    await io.write(4096, pattern(12, 4096));
    await io.close();
    const snap = await c.call('VDI.snapshot', v, {});
    const vdis = (await c.call('SR.get_record', lsr)).VDIs.sort();
    await s1.close();
    s1 = null;

    const s2 = await startServer(opts);
    servers.push(s2);
    c = await connect(s2.urls[0], 'root', PASSWORD);
    expect((await c.call('SR.get_record', lsr)).VDIs.sort()).toEqual(vdis);
    const r = await c.call('VDI.get_record', v);
    expect(r).toMatchObject({ name_label: 'persistent', virtual_size: 6 * MiB, current_operations: {} });
    expect(r.allowed_operations).toContain('snapshot');
    expect((await c.call('SR.get_record', lsr)).allowed_operations).toContain('vdi_create');
    const io2 = await openVdi(s2.emu, v, { readOnly: true });
    expect((await io2.read(4096, 4096)).equals(pattern(12, 4096))).toBe(true);
    await io2.close();

    // sr_gc_auto: the delete kicks the GC (quiet period 0 here), which leaf-coalesces
    await c.call('VDI.destroy', snap);
    expect(gcPending(s2.emu, lsr)).toBe(true);
    for (let i = 0; i < 1000 && gcPending(s2.emu, lsr); i++) await new Promise((res) => setTimeout(res, 10));
    expect((await c.call('SR.get_record', lsr)).VDIs).toEqual([v]);
    expect((await chainOf(vdiPath(s2.emu, v)!)).length).toBe(1);
    const tasks = Object.values<any>(await c.call('task.get_all_records'));
    expect(tasks.some((t) => t.name_label === 'Garbage Collection' && t.status === 'success')).toBe(true);
  });
});

describe('an invalid file in an SR directory', () => {
  it('never blocks the other VDIs: an empty <uuid>.vhd is reported and left alone', async () => {
    const srUuid = await uuidOf('SR', local);
    const dir = join(emu.srRoot, srUuid);
    const bad = randomUUID();
    writeFileSync(join(dir, `${bad}.vhd`), '');
    try {
      const n = (await x.call('VDI.get_all')).length;
      const vdi = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'beside a bad file'));
      expect((await x.call('VDI.get_all')).length).toBe(n + 1);
      expect(existsSync(vdiPath(emu, vdi)!)).toBe(true);
      await x.call('SR.scan', local);
      // the bad file is not introduced; the good VDI stays
      expect(await x.call('VDI.get_by_uuid', bad).catch(() => null)).toBeNull();
      expect((await rec('VDI', vdi)).name_label).toBe('beside a bad file');
      await x.call('VDI.destroy', vdi);
      expect((await x.call('VDI.get_all')).length).toBe(n);
      // reported in the SM log, and left where it was
      expect(statSync(join(dir, `${bad}.vhd`)).size).toBe(0);
      const log = readFileSync(join(emu.storageDir, 'SMlog'), 'utf8');
      expect(log).toContain(`${bad}.vhd`);
    } finally {
      rmSync(join(dir, `${bad}.vhd`), { force: true });
    }
  });
});
