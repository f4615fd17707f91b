// Datapath section of the benchmark (bench/run.ts, section "datapath"): a guest's sequential write
// through blkfront → blkif ring → tapback/tapdisk → VHD, next to a plain sequential write of the
// same bytes to a file on the same disk, and the emulated path (qemu-dm's IDE → tapdisk → VHD)
// for reference. In-process: the ring, the Tapdisk and the VHD are the emulator's own classes
// (server/xenopsd/blkif.ts, tapdisk.ts, storage/vhd); the HTTP control call is left out, as it
// would measure the HTTP body transfer rather than the datapath.
//
// Each run writes BENCH_DATAPATH_MIB (default 256) MiB of non-zero data to a fresh dynamic VHD
// (blocks are allocated as they are written, as a guest's first write does) and ends with the data
// on stable storage: the blkif run with a FLUSH request at the end (WRITEs are acknowledged once in
// the image, as Xen's cache semantics allow), the plain run with one fsync; the emulated IDE path
// syncs each command (qemu-dm's cache=none drive). The guest writes in
// BENCH_DATAPATH_IO_KIB (default 1024) KiB I/Os, 4 in flight (a guest's queue depth). Best of
// BENCH_DATAPATH_ROUNDS (default 5) for each, interleaved (the disk
// may be shared: the best run is the least disturbed one), then the ratio. The emulated path
// (one synced IDE command of 128 KiB at a time, far slower) writes a quarter of the size.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Vhd } from '../storage/vhd/index.js';
import { Blktap, Tapdisk } from '../server/xenopsd/tapdisk.js';
import { BlkifDevice, BLKIF_RSP_OKAY } from '../server/xenopsd/blkif.js';
import { QemuDm } from '../server/xenopsd/qemu-dm.js';
import type { StorageBackend } from '../server/xenopsd/types.js';
import { table, fmt, now } from './lib.js';

const MiB = 1024 * 1024;
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const SIZE_MIB = env('BENCH_DATAPATH_MIB', 256);
const IO_KIB = env('BENCH_DATAPATH_IO_KIB', 1024);
const ROUNDS = env('BENCH_DATAPATH_ROUNDS', 5);
const QUEUE_DEPTH = 4;

/** a tapdisk on one VHD file, without SM in between */
async function tapdiskOn(path: string): Promise<Tapdisk> {
  const storage: StorageBackend = {
    open: async () => ({ io: await Vhd.open(path), path, type: 'vhd' }),
    hold: async () => () => undefined,
    fingerprint: async () => path,
  };
  return Tapdisk.create(new Blktap(), () => storage, 'bench-sr', randomUUID(), false);
}

async function freshVhd(dir: string, size: number): Promise<string> {
  const path = join(dir, `${randomUUID()}.vhd`);
  const v = await Vhd.create(path, { size, uuid: randomUUID() });
  await v.close();
  return path;
}

/** the guest's I/Os, QUEUE_DEPTH at a time */
async function guestLoop(total: number, io: number, data: Buffer, submit: (offset: number, chunk: Buffer) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const off = next;
      next += io;
      await submit(off, data.subarray(0, Math.min(io, total - off)));
    }
  };
  await Promise.all(Array.from({ length: QUEUE_DEPTH }, worker));
}

async function blkifRun(dir: string, total: number, data: Buffer): Promise<{ ms: number; stats: ReturnType<BlkifDevice['info']> }> {
  const path = await freshVhd(dir, total);
  const t = await tapdiskOn(path);
  const dev = new BlkifDevice(51712, 'xvda', t);
  const t0 = now();
  await guestLoop(total, IO_KIB * 1024, data, async (off, chunk) => {
    const st = await dev.front.write(off / 512, chunk);
    if (st !== BLKIF_RSP_OKAY) throw new Error(`blkif write: status ${st}`);
  });
  if ((await dev.front.flush()) !== BLKIF_RSP_OKAY) throw new Error('blkif flush failed');
  const ms = now() - t0;
  const stats = dev.info();
  dev.close();
  await t.destroy();
  rmSync(path);
  return { ms, stats };
}

async function qemuRun(dir: string, total: number, data: Buffer): Promise<number> {
  const path = await freshVhd(dir, total);
  const t = await tapdiskOn(path);
  const q = new QemuDm({ domid: 1, memoryMiB: 1024, bootOrder: 'cd', vcpus: 1, maxVcpus: 1, disks: [{ dev: 'hda', position: 0, cdrom: false, backend: { sr: 'bench-sr', vdi: t.vdi }, tapdisk: t }] });
  const t0 = now();
  // IDE has one command in flight
  for (let off = 0; off < total; off += IO_KIB * 1024) await q.write('hda', t, off, data.subarray(0, Math.min(IO_KIB * 1024, total - off)));
  await q.flush('hda', t);
  const ms = now() - t0;
  await t.destroy();
  rmSync(path);
  return ms;
}

async function plainRun(dir: string, total: number, data: Buffer): Promise<number> {
  const path = join(dir, `${randomUUID()}.raw`);
  const t0 = now();
  const fh = await open(path, 'w');
  for (let off = 0; off < total; off += IO_KIB * 1024) {
    const chunk = data.subarray(0, Math.min(IO_KIB * 1024, total - off));
    let done = 0;
    while (done < chunk.length) done += (await fh.write(chunk, done, chunk.length - done, off + done)).bytesWritten;
  }
  await fh.sync();
  await fh.close();
  const ms = now() - t0;
  rmSync(path);
  return ms;
}

export async function sectionDatapath(tmp: string): Promise<string> {
  const dir = join(tmp, 'datapath');
  mkdirSync(dir, { recursive: true });
  const total = SIZE_MIB * MiB;
  const data = randomBytes(IO_KIB * 1024);
  let plain = Infinity;
  let blkif = Infinity;
  let qemu = Infinity;
  let stats: ReturnType<BlkifDevice['info']> | undefined;
  // warm-up (JIT): the ring's code is hot before the first timed run
  await blkifRun(dir, 32 * MiB, data);
  await qemuRun(dir, 8 * MiB, data);
  for (let r = 0; r < ROUNDS; r++) {
    process.stderr.write(`[bench] datapath: round ${r + 1}/${ROUNDS}\n`);
    plain = Math.min(plain, await plainRun(dir, total, data));
    const b = await blkifRun(dir, total, data);
    if (b.ms < blkif) {
      blkif = b.ms;
      stats = b.stats;
    }
    qemu = Math.min(qemu, await qemuRun(dir, total / 4, data));
  }
  rmSync(dir, { recursive: true, force: true });
  const mbs = (ms: number) => fmt(total / MiB / (ms / 1000), 0);
  const rows: (string | number)[][] = [
    ['path', 'MiB', 'ms (best)', 'MiB/s', 'vs plain'],
    ['plain sequential file write + fsync', String(SIZE_MIB), fmt(plain, 0), mbs(plain), '1.00'],
    ['guest → blkfront → blkif ring → tapdisk → VHD, then FLUSH', String(SIZE_MIB), fmt(blkif, 0), mbs(blkif), fmt(plain / blkif, 2)],
    ['guest → qemu-dm (IDE) → tapdisk → VHD (each command synced)', String(SIZE_MIB / 4), fmt(qemu, 0), mbs(qemu * 4), fmt(plain / (qemu * 4), 2)],
  ];
  const s = stats!;
  return `${table(`datapath: guest sequential write, ${IO_KIB} KiB I/Os, queue depth ${QUEUE_DEPTH}, best of ${ROUNDS}`, rows)}\n`
    + `blkif ring (32 slots): ${s.requests} requests (${s.ops.write} writes, ${s.ops.flush_diskcache} flush), ${s.segments} segments, `
    + `${s.batches} backend batches, ${s.tapdisk_ios} tapdisk writes; ratio blkif/plain throughput ${fmt(plain / blkif, 2)}`;
}
