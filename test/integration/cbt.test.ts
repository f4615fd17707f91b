// Changed block tracking over real sockets: VDI.enable_cbt, writes through /import_raw_vdi (raw and
// VHD) and through a running guest's disk, snapshots carrying the log, VDI.list_changed_blocks
// decoded (xapi's base64 bitmap, block i is bit 7 - i%8 of byte i/8) against the blocks written,
// a snapshot's deletion keeping its changes, VDI.data_destroy, SR.scan, disable_cbt, and the errors.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { fileSrProblems, runSrGc } from '../../server/sm/index.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { localStorage, startPool } from './helpers/pool.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'cbt-test';
const KiB64 = 64 * 1024;

let srv: RunningServer;
let url: string;
let x: Client;
let local: string;

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

async function importBytes(vdi: string, body: Buffer, format: 'raw' | 'vhd' = 'raw'): Promise<number> {
  const r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: x.session, vdi, format })}`, url), { method: 'PUT', body: new Uint8Array(body) });
  await r.arrayBuffer();
  return r.status;
}

async function exportBytes(vdi: string, format: 'raw' | 'vhd', base?: string): Promise<Buffer> {
  const r = await fetch(new URL(`/export_raw_vdi?${q({ session_id: x.session, vdi, format, ...(base ? { base } : {}) })}`, url));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

async function guestWrite(vm: string, offset: number, data: Buffer): Promise<void> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset })}`, url), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  expect(r.status).toBe(200);
  await r.arrayBuffer();
}

/** The blocks a base64 bitmap of VDI.list_changed_blocks marks, and its length in bytes. */
function changed(b64: string): { blocks: number[]; bytes: number } {
  const b = Buffer.from(b64, 'base64');
  const blocks: number[] = [];
  for (let i = 0; i < b.length * 8; i++) if (b[i >> 3] & (0x80 >> (i & 7))) blocks.push(i);
  return { blocks, bytes: b.length };
}

/** The 64 KiB blocks [offset, offset+length) touches. */
function blocksOf(...ranges: [number, number][]): number[] {
  const s = new Set<number>();
  for (const [o, n] of ranges) for (let i = Math.floor(o / KiB64); i <= Math.floor((o + n - 1) / KiB64); i++) s.add(i);
  return [...s].sort((a, b) => a - b);
}

const fill = (n: number, seed: number) => Buffer.alloc(n, seed);
const lcb = async (from: string, to: string) => changed(await x.call('VDI.list_changed_blocks', from, to));

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  url = srv.urls[0];
  local = await localStorage(x);
});

afterAll(async () => {
  await srv?.close();
});

describe('changed block tracking', () => {
  it('tracks raw imports, guest writes and VHD imports across snapshots, and keeps changes through snapshot deletion and data_destroy', async () => {
    const size = 64 * MiB;
    const vm: string = await x.call('VM.create', vmArgs('cbt-vm', { ...memory(1 * GiB, 512 * MiB) }));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, size, 'cbt-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(false);
    await x.call('VDI.enable_cbt', vdi);
    expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(true);
    // enabling again does nothing (Xapi_vdi.change_cbt_status)
    await x.call('VDI.enable_cbt', vdi);

    // raw import of 3 blocks and a byte
    const raw0: [number, number] = [0, 3 * KiB64 + 1];
    expect(await importBytes(vdi, fill(raw0[1], 7))).toBe(200);
    const s1: string = await x.call('VDI.snapshot', vdi, {});
    expect(await x.call('VDI.get_cbt_enabled', s1)).toBe(true);

    // guest writes through the running VM's disk
    await x.call('VM.start', vm, false, false);
    const g1: [number, number] = [10 * KiB64, 100];
    const g2: [number, number] = [20 * KiB64 - 10, 20];
    await guestWrite(vm, g1[0], fill(g1[1], 1));
    await guestWrite(vm, g2[0], fill(g2[1], 2));
    const s2: string = await x.call('VDI.snapshot', vdi, {});
    const g3: [number, number] = [5 * MiB + 4096, 8192];
    await guestWrite(vm, g3[0], fill(g3[1], 3));
    const s3: string = await x.call('VDI.snapshot', vdi, {});
    // the leaf is in use by the running VM
    expect(await faultOf(x.call('VDI.list_changed_blocks', s3, vdi))).toEqual(['VDI_IN_USE', vdi, 'list_changed_blocks']);
    await x.call('VM.hard_shutdown', vm);

    const bitmapBytes = size / KiB64 / 8;
    expect(await lcb(s1, s2)).toEqual({ blocks: blocksOf(g1, g2), bytes: bitmapBytes });
    expect((await lcb(s2, s3)).blocks).toEqual(blocksOf(g3));
    expect((await lcb(s1, s3)).blocks).toEqual(blocksOf(g1, g2, g3));
    expect((await lcb(s3, vdi)).blocks).toEqual([]);
    // the snapshots' contents agree with the bitmap: the delta between them is in those blocks
    const a = await exportBytes(s1, 'raw');
    const b = await exportBytes(s3, 'raw');
    const differing = new Set<number>();
    for (let i = 0; i < size; i += KiB64) if (!a.subarray(i, i + KiB64).equals(b.subarray(i, i + KiB64))) differing.add(i / KiB64);
    expect([...differing].sort((m, n) => m - n)).toEqual(blocksOf(g1, g2, g3));

    // a VHD stream import (a differencing delta from s3 to itself plus a write) marks what it carries
    await guestWriteHalted(vdi, [7 * MiB, 3 * KiB64]);
    const s4: string = await x.call('VDI.snapshot', vdi, {});
    const delta = await exportBytes(s4, 'vhd', s3);
    expect(await importBytes(vdi, delta, 'vhd')).toBe(200);
    expect((await lcb(s3, s4)).blocks).toEqual(blocksOf([7 * MiB, 3 * KiB64]));
    // the stream carries whole 2 MiB VHD blocks or less: the marks cover the write, within its VHD block
    const imported = (await lcb(s4, vdi)).blocks;
    expect(imported).toEqual(expect.arrayContaining(blocksOf([7 * MiB, 3 * KiB64])));
    expect(imported.every((i) => i >= 96 && i < 128)).toBe(true);

    // deleting a snapshot in the middle moves its changes to the next log
    await x.call('VDI.destroy', s2);
    expect((await lcb(s1, s3)).blocks).toEqual(blocksOf(g1, g2, g3));

    // data_destroy: the snapshot becomes cbt_metadata, its data gone, its log kept
    expect(await faultOf(x.call('VDI.data_destroy', vdi))).toEqual(['OPERATION_NOT_ALLOWED', `VDI is not a snapshot: ${vdi}`]);
    await x.call('VDI.data_destroy', s1);
    expect(await x.call('VDI.get_type', s1)).toBe('cbt_metadata');
    expect((await lcb(s1, s3)).blocks).toEqual(blocksOf(g1, g2, g3));
    // SR.scan keeps the cbt_metadata VDI (its log is its only file) and the CBT flags
    await x.call('SR.scan', local);
    expect(await x.call('VDI.get_type', s1)).toBe('cbt_metadata');
    expect(await x.call('VDI.get_cbt_enabled', s1)).toBe(true);
    expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(true);
    expect((await lcb(s1, s4)).blocks).toEqual(blocksOf(g1, g2, g3, [7 * MiB, 3 * KiB64]));
    // what a cbt_metadata VDI refuses
    expect(await faultOf(x.call('VDI.snapshot', s1, {}))).toEqual(['VDI_INCOMPATIBLE_TYPE', s1, 'cbt_metadata']);
    // destroying it is allowed, and drops its log
    await x.call('VDI.destroy', s1);
    expect((await faultOf(x.call('VDI.list_changed_blocks', s3, s1)))[0]).toBe('HANDLE_INVALID');

    // disable: the leaf's log goes, the snapshots' logs end there
    await x.call('VDI.disable_cbt', vdi);
    expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(false);
    const f = await faultOf(x.call('VDI.list_changed_blocks', s4, vdi));
    expect(f[0]).toBe('SR_BACKEND_FAILURE_460');
    expect(f[2]).toContain('unrelated');
    // writes while disabled are not tracked: enabling again starts a new, empty chain
    expect(await importBytes(vdi, fill(KiB64, 9))).toBe(200);
    await x.call('VDI.enable_cbt', vdi);
    const s5: string = await x.call('VDI.snapshot', vdi, {});
    expect((await faultOf(x.call('VDI.list_changed_blocks', s4, s5)))[0]).toBe('SR_BACKEND_FAILURE_460');
    expect((await lcb(s5, vdi)).blocks).toEqual([]);
    expect(await importBytes(vdi, fill(KiB64 + 1, 4))).toBe(200);
    const s6: string = await x.call('VDI.snapshot', vdi, {});
    expect((await lcb(s5, s6)).blocks).toEqual([0, 1]);
  });

  it('follows VM.snapshot as a backup does: changed blocks between the snapshots\' disks, then data_destroy of the older one', async () => {
    const vm: string = await x.call('VM.create', vmArgs('cbt-backup', { ...memory(1 * GiB, 512 * MiB) }));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 32 * MiB, 'cbt-backup-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await x.call('VDI.enable_cbt', vdi);
    const diskOf = async (snapVm: string) => {
      for (const vbd of await x.call('VM.get_VBDs', snapVm)) {
        const d: string = await x.call('VBD.get_VDI', vbd);
        if ((await x.call('VDI.get_snapshot_of', d)) === vdi) return d;
      }
      throw new Error('no snapshot disk');
    };
    await x.call('VM.start', vm, false, false);
    const snap1: string = await x.call('VM.snapshot', vm, 'backup-1');
    const w: [number, number] = [17 * MiB + 3, 200 * 1024];
    await guestWrite(vm, w[0], fill(w[1], 8));
    const snap2: string = await x.call('VM.snapshot', vm, 'backup-2');
    const [d1, d2] = [await diskOf(snap1), await diskOf(snap2)];
    expect(await x.call('VDI.get_cbt_enabled', d2)).toBe(true);
    expect((await lcb(d1, d2)).blocks).toEqual(blocksOf(w));
    // the snapshot VM still holds the disk: data_destroy waits for its VBDs, then gives up
    expect(await faultOf(x.call('VDI.data_destroy', d1))).toEqual(['VDI_IN_USE', d1, 'data_destroy']);
    expect(await x.call('VDI.get_type', d1)).toBe('user');
    await x.call('VM.destroy', snap1);
    await x.call('VDI.data_destroy', d1);
    expect(await x.call('VDI.get_type', d1)).toBe('cbt_metadata');
    expect((await lcb(d1, d2)).blocks).toEqual(blocksOf(w));
    await x.call('VM.hard_shutdown', vm);
  });

  it('grows the log with the disk (VDI.resize): bitmaps of the larger size, the earlier changes kept', async () => {
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 8 * MiB, 'cbt-resize'));
    await x.call('VDI.enable_cbt', vdi);
    expect(await importBytes(vdi, fill(KiB64, 1))).toBe(200);
    const s1: string = await x.call('VDI.snapshot', vdi, {});
    expect(await importBytes(vdi, Buffer.concat([Buffer.alloc(2 * KiB64), fill(KiB64, 2)]))).toBe(200);
    await x.call('VDI.resize', vdi, 16 * MiB);
    const tail = Buffer.concat([Buffer.alloc(16 * MiB - KiB64), fill(KiB64, 3)]);
    expect(await importBytes(vdi, tail)).toBe(200);
    const s2: string = await x.call('VDI.snapshot', vdi, {});
    const r = await lcb(s1, s2);
    expect(r.bytes).toBe(16 * MiB / KiB64 / 8);
    // the second import wrote the whole 16 MiB range
    expect(r.blocks).toEqual(blocksOf([0, 16 * MiB]));
    expect(await importBytes(vdi, fill(KiB64, 4))).toBe(200);
    const s3: string = await x.call('VDI.snapshot', vdi, {});
    expect(await lcb(s2, s3)).toEqual({ blocks: [0], bytes: 16 * MiB / KiB64 / 8 });
  });

  it('answers xapi\'s errors', async () => {
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 8 * MiB, 'cbt-errors'));
    const plain: string = await x.call('VDI.snapshot', vdi, {});
    expect(await faultOf(x.call('VDI.enable_cbt', plain))).toEqual(['OPERATION_NOT_ALLOWED', `VDI is a snapshot: ${plain}`]);
    expect(await faultOf(x.call('VDI.data_destroy', plain))).toEqual(['VDI_NO_CBT_METADATA', plain]);
    expect(await faultOf(x.call('VDI.list_changed_blocks', vdi, vdi))).toEqual([
      'SR_BACKEND_FAILURE_460', '', 'Failed to calculate changed blocks for given VDIs. [opterr=Source and target VDI are same]', '',
    ]);
    // without logs the VDIs are unrelated
    expect((await faultOf(x.call('VDI.list_changed_blocks', plain, vdi)))[0]).toBe('SR_BACKEND_FAILURE_460');

    await x.call('VDI.enable_cbt', vdi);
    // CBT and on_boot=reset exclude each other
    expect(await faultOf(x.call('VDI.set_on_boot', vdi, 'reset'))).toEqual(['VDI_CBT_ENABLED', vdi]);
    await x.call('VDI.disable_cbt', vdi);
    await x.call('VDI.set_on_boot', vdi, 'reset');
    expect(await faultOf(x.call('VDI.enable_cbt', vdi))).toEqual(['VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION']);
    await x.call('VDI.set_on_boot', vdi, 'persist');

    // a raw VDI: SM's VDIType
    const raw: string = await x.call('VDI.create', vdiArgs(local, 8 * MiB, 'cbt-raw', { sm_config: { type: 'raw' } }));
    const r = await faultOf(x.call('VDI.enable_cbt', raw));
    expect(r[0]).toBe('SR_BACKEND_FAILURE_66');
    expect(await x.call('VDI.get_cbt_enabled', raw)).toBe(false);

    // a VDI of an SR type without VDI_CONFIG_CBT (SM's DummySR)
    const [host] = await x.call('host.get_all');
    const dummy: string = await x.call('SR.create', host, {}, 0, 'dummy', '', 'dummy', 'user', false, {});
    const dvdi: string = await x.call('VDI.create', vdiArgs(dummy, 8 * MiB, 'on-dummy'));
    expect(await faultOf(x.call('VDI.enable_cbt', dvdi))).toEqual(['SR_OPERATION_NOT_SUPPORTED', dummy]);
    expect(await faultOf(x.call('VDI.list_changed_blocks', dvdi, dvdi))).toEqual(['SR_OPERATION_NOT_SUPPORTED', dummy]);

    // no VDI of type cbt_metadata is created by hand
    expect((await faultOf(x.call('VDI.create', vdiArgs(local, 8 * MiB, 'meta', { type: 'cbt_metadata' }))))[0]).toBe('VDI_INCOMPATIBLE_TYPE');
  });
});

describe('changed block tracking across a restart', () => {
  it('keeps the logs and the flags, tracks writes after the restart, and leaves the SR consistent', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'xapi-emu-cbt-'));
    const saved = { srv, x, url, local };
    try {
      ({ srv, x } = await startPool(PASSWORD, { memory: false, dataDir }));
      url = srv.urls[0];
      local = await localStorage(x);
      const vdi: string = await x.call('VDI.create', vdiArgs(local, 16 * MiB, 'cbt-durable'));
      await x.call('VDI.enable_cbt', vdi);
      expect(await importBytes(vdi, fill(KiB64, 1))).toBe(200);
      const s1: string = await x.call('VDI.snapshot', vdi, {});
      expect(await importBytes(vdi, fill(3 * KiB64, 2))).toBe(200);
      const s2: string = await x.call('VDI.snapshot', vdi, {});
      await x.call('VDI.data_destroy', s1);
      // the GC's pass over the chain data_destroy shortened, done before the stop
      await runSrGc(srv.emu, local);
      await srv.close();

      ({ srv } = await startPool(PASSWORD, { memory: false, dataDir }));
      url = srv.urls[0];
      x = await connect(url, 'root', PASSWORD);
      expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(true);
      expect(await x.call('VDI.get_type', s1)).toBe('cbt_metadata');
      expect((await lcb(s1, s2)).blocks).toEqual([0, 1, 2]);
      expect(await importBytes(vdi, Buffer.concat([Buffer.alloc(9 * KiB64), fill(KiB64, 3)]))).toBe(200);
      const s3: string = await x.call('VDI.snapshot', vdi, {});
      expect((await lcb(s2, s3)).blocks).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect((await lcb(s1, s3)).blocks).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      const problems: string[] = [];
      for (const [ref] of srv.emu.db.table('SR')) problems.push(...(await fileSrProblems(srv.emu, ref)));
      expect(problems).toEqual([]);
    } finally {
      await srv.close();
      ({ srv, x, url, local } = saved);
      await rm(dataDir, { recursive: true, force: true, maxRetries: 10 });
    }
  });
});

/** Writes through a short-lived guest: the VM starts, writes, stops. */
async function guestWriteHalted(vdi: string, range: [number, number]): Promise<void> {
  const [vbd] = await x.call('VDI.get_VBDs', vdi);
  const vm: string = await x.call('VBD.get_VM', vbd);
  await x.call('VM.start', vm, false, false);
  await guestWrite(vm, range[0], fill(range[1], 5));
  await x.call('VM.hard_shutdown', vm);
}
