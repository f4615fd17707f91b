import { execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MAX_VHD_SIZE,
  Vhd,
  VhdError,
  chainOf,
  chsGeometry,
  coalesce,
  exportRaw,
  exportVhd,
  importRaw,
  importVhd,
  roundVhdSize,
  setParent,
} from '../../storage/vhd/index.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function hasCmd(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const QEMU = hasCmd('qemu-img');
const QEMU_IO = QEMU && hasCmd('qemu-io');

let dir: string;
let n = 0;
const file = (name = `f${n++}`) => join(dir, `${name}.vhd`);
const uuid = () => randomUUID();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhd-test-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Deterministic pattern bytes. */
function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 16) & 0xff;
  }
  return b;
}

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

function chunked(buf: Buffer, size = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    })(),
    { objectMode: false },
  );
}

async function expectVhdError(p: Promise<unknown>, code: string): Promise<VhdError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(VhdError);
    expect((e as VhdError).code).toBe(code);
    return e as VhdError;
  }
  throw new Error(`expected VhdError ${code}`);
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
const qemuRaw = (p: string): Buffer => {
  const out = join(dir, `qemu-${n++}.raw`);
  execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', p, out]);
  const b = readFileSync(out);
  unlinkSync(out);
  return b;
};
const qemuInfo = (p: string) => JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'vpc', p]).toString());
const noTempFiles = () => expect(readdirSync(dir).filter((f) => f.includes('.import-'))).toEqual([]);

async function makeDisk(size: number, writes: [number, Buffer][] = [], parent?: string): Promise<{ path: string; uuid: string }> {
  const path = file();
  const id = uuid();
  const v = await Vhd.create(path, { size: parent ? undefined : size, uuid: id, parent });
  for (const [off, data] of writes) await v.write(off, data);
  await v.close();
  return { path, uuid: id };
}

describe('sizes and geometry', () => {
  it('rounds like SM and rejects out-of-range sizes', async () => {
    expect(roundVhdSize(0)).toBe(2 * MiB);
    expect(roundVhdSize(1)).toBe(2 * MiB);
    expect(roundVhdSize(2 * MiB)).toBe(2 * MiB);
    expect(roundVhdSize(2 * MiB + 1)).toBe(4 * MiB);
    expect(roundVhdSize(10 * MiB - 5)).toBe(10 * MiB);
    expect(roundVhdSize(MAX_VHD_SIZE)).toBe(2040 * GiB);
    for (const bad of [-1, MAX_VHD_SIZE + 1, Number.NaN, Infinity]) {
      expect(() => roundVhdSize(bad)).toThrow(VhdError);
    }
    await expectVhdError(Vhd.create(file(), { size: MAX_VHD_SIZE + 1, uuid: uuid() }), 'INVALID_SIZE');
    await expectVhdError(Vhd.create(file(), { size: -5, uuid: uuid() }), 'INVALID_SIZE');
    await expectVhdError(Vhd.create(file(), { size: MiB, uuid: 'not-a-uuid' }), 'INVALID_ARGUMENT');
    const v = await Vhd.create(file(), { size: 3 * MiB, uuid: uuid() });
    expect(v.virtualSize).toBe(4 * MiB);
    await v.close();
  });

  it('computes CHS geometry with the VHD spec algorithm', () => {
    expect(chsGeometry(10 * MiB)).toEqual({ cylinders: 301, heads: 4, sectorsPerTrack: 17 });
    expect(chsGeometry(2040 * GiB)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  });

  it('creates blktap-shaped empty disks (2040 GiB is allowed and stays small)', async () => {
    const id = uuid();
    const p = file();
    const v = await Vhd.create(p, { size: 10 * MiB, uuid: id });
    expect(v.physicalSize()).toBe(3584); // 3.5 KiB: footer, header, BAT, batmap header, batmap, footer
    expect(statSync(p).size).toBe(3584);
    expect(v.uuid).toBe(id);
    expect(v.hidden).toBe(false);
    expect(v.diskType).toBe('dynamic');
    expect(v.allocatedBlocks()).toEqual([]);
    await v.close();
    const raw = readFileSync(p);
    expect(raw.subarray(0, 512).equals(raw.subarray(raw.length - 512))).toBe(true);
    expect(raw.toString('latin1', 0, 8)).toBe('conectix');
    expect(raw.toString('latin1', 28, 32)).toBe('tap\0');
    expect(raw.readUInt32BE(32)).toBe(0x00010003);
    expect(raw.readUInt32BE(60)).toBe(3);
    expect(raw.toString('latin1', 512, 520)).toBe('cxsparse');
    expect(Number(raw.readBigUInt64BE(512 + 16))).toBe(1536);
    expect(raw.readUInt32BE(512 + 32)).toBe(2 * MiB);
    expect(raw.toString('latin1', 2048, 2056)).toBe('tdbatmap');
    // timestamp: seconds since 2000-01-01
    expect(Math.abs(raw.readUInt32BE(24) - (Date.now() / 1000 - 946684800))).toBeLessThan(60);
    const big = await Vhd.create(file(), { size: 10 * GiB, uuid: uuid() });
    expect(big.physicalSize()).toBe(24064);
    await big.close();
    const max = await Vhd.create(file(), { size: 2040 * GiB, uuid: uuid() });
    expect(max.blockCount).toBe(1044480);
    await max.close();
    if (QEMU) {
      const info = qemuInfo(p);
      expect(info['virtual-size']).toBe(10 * MiB); // qemu trusts current_size because creator is "tap"
    }
  });
});

describe('reads and writes', () => {
  it('handles unaligned I/O crossing block boundaries, and qemu reads the same bytes', async () => {
    const size = 10 * MiB;
    const model = Buffer.alloc(size);
    const p = file();
    const v = await Vhd.create(p, { size, uuid: uuid() });
    const writes: [number, number][] = [
      [1000, 3 * MiB + 123], // crosses blocks 0/1
      [2 * MiB - 3, 7], // straddles a block boundary inside a sector pair
      [6 * MiB + 511, 2], // two partial sectors
      [10 * MiB - 100, 100], // end of disk
      [4 * MiB, 2 * MiB], // a whole block
    ];
    let seed = 1;
    for (const [off, len] of writes) {
      const d = pattern(len, seed++);
      await v.write(off, d);
      d.copy(model, off);
    }
    expect((await v.read(0, size)).equals(model)).toBe(true);
    expect((await v.read(2 * MiB - 10, 20)).equals(model.subarray(2 * MiB - 10, 2 * MiB + 10))).toBe(true);
    expect((await v.read(12345, 0)).length).toBe(0);
    await expectVhdError(v.read(size - 1, 2), 'OUT_OF_RANGE');
    await expectVhdError(v.write(size, Buffer.alloc(1)), 'OUT_OF_RANGE');
    expect(v.allocatedBlocks()).toEqual([0, 1, 2, 3, 4]);
    expect(v.knownFull(2)).toBe(true); // whole-block write marks the batmap
    expect(v.physicalSize()).toBe(statSync(p).size);
    await v.flush();
    await v.close();

    const r = await Vhd.open(p, { readOnly: true });
    expect((await r.read(0, size)).equals(model)).toBe(true);
    expect(r.knownFull(2)).toBe(true);
    await expectVhdError(r.write(0, Buffer.alloc(1)), 'READ_ONLY');
    await r.close();
    await expectVhdError(r.read(0, 1), 'CLOSED');
    if (QEMU) expect(qemuRaw(p).equals(model)).toBe(true);
  });

  it('allocates at the end with 4 KiB-aligned data, footer moved to the new EOF', async () => {
    const p = file();
    const v = await Vhd.create(p, { size: 20 * MiB, uuid: uuid() });
    await v.write(8 * MiB, Buffer.alloc(512, 1));
    await v.write(MiB, Buffer.alloc(512, 2));
    const raw = readFileSync(p);
    const bat = [0, 1, 2, 3, 4].map((i) => raw.readUInt32BE(1536 + 4 * i));
    expect(bat[4]).not.toBe(0xffffffff);
    expect(bat[0]).toBeGreaterThan(bat[4]); // allocation order
    for (const s of [bat[0], bat[4]]) expect(((s + 1) * 512) % 4096).toBe(0);
    // bitmap MSB first: sector 0 of block 4 is bit 0x80 of the first bitmap byte
    expect(raw[bat[4] * 512]).toBe(0x80);
    expect(raw.subarray(raw.length - 512).equals(raw.subarray(0, 512))).toBe(true);
    await v.close();
  });

  it('does not allocate for all-zero writes into empty blocks of a dynamic disk', async () => {
    const p = file();
    const v = await Vhd.create(p, { size: 8 * MiB, uuid: uuid() });
    const before = v.physicalSize();
    await v.write(0, Buffer.alloc(3 * MiB));
    expect(v.allocatedBlocks()).toEqual([]);
    expect(v.physicalSize()).toBe(before);
    await v.close();
  });

  it('keeps the hidden flag in both footer copies', async () => {
    const p = file();
    const v = await Vhd.create(p, { size: 4 * MiB, uuid: uuid() });
    await v.write(0, Buffer.alloc(10, 9));
    await v.setHidden(true);
    expect(v.hidden).toBe(true);
    await v.close();
    const raw = readFileSync(p);
    expect(raw[85]).toBe(1);
    expect(raw[raw.length - 512 + 85]).toBe(1);
    const r = await Vhd.open(p);
    expect(r.hidden).toBe(true);
    await r.setHidden(false);
    await r.close();
    const r2 = await Vhd.open(p, { readOnly: true });
    expect(r2.hidden).toBe(false);
    await r2.close();
    if (QEMU) expect(qemuInfo(p)['virtual-size']).toBe(4 * MiB);
  });
});

describe.skipIf(!QEMU)('qemu interoperability', () => {
  it('reads a dynamic VHD made by qemu-img convert (odd CHS size) and qemu reads our writes into it', async () => {
    const rawPath = join(dir, 'src.raw');
    const src = Buffer.alloc(7 * MiB);
    pattern(MiB + 77, 5).copy(src, 300);
    pattern(4096, 6).copy(src, 6 * MiB);
    writeFileSync(rawPath, src);
    const q = file();
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', rawPath, q]);
    const v = await Vhd.open(q);
    expect(v.virtualSize).toBeGreaterThanOrEqual(7 * MiB);
    const model = Buffer.alloc(v.virtualSize);
    src.copy(model);
    expect((await v.read(0, v.virtualSize)).equals(model)).toBe(true);
    const w = pattern(5000, 9);
    await v.write(3 * MiB + 17, w);
    w.copy(model, 3 * MiB + 17);
    await v.close();
    expect(qemuRaw(q).equals(model)).toBe(true);
  });

  it.skipIf(!QEMU_IO)('reads what qemu-io wrote into a qemu-img create dynamic VHD', async () => {
    const q = file();
    execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', q, '10M']);
    execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0xab 1000 3M', '-c', 'write -P 0x11 7M 512', q], { stdio: 'ignore' });
    const v = await Vhd.open(q, { readOnly: true });
    const ours = await v.read(0, v.virtualSize);
    await v.close();
    expect(ours.equals(qemuRaw(q))).toBe(true);
    expect(ours[1000]).toBe(0xab);
    expect(ours[7 * MiB]).toBe(0x11);
  });
});

describe('differencing chains', () => {
  it('reads a chain of 3 with overlapping writes; locators as blktap writes them', async () => {
    const size = 8 * MiB;
    const model = Buffer.alloc(size);
    const apply = (off: number, d: Buffer) => d.copy(model, off);
    const aW: [number, Buffer][] = [[0, pattern(5 * MiB, 11)]];
    const a = await makeDisk(size, aW);
    aW.forEach(([o, d]) => apply(o, d));
    const bW: [number, Buffer][] = [[MiB + 3, pattern(2 * MiB, 12)], [6 * MiB, pattern(1000, 13)]];
    const b = await makeDisk(0, bW, a.path);
    bW.forEach(([o, d]) => apply(o, d));
    const cW: [number, Buffer][] = [[2 * MiB - 700, pattern(1400, 14)], [7, pattern(3, 15)], [4 * MiB, pattern(2 * MiB, 16)]];
    const c = await makeDisk(0, cW, b.path);
    cW.forEach(([o, d]) => apply(o, d));

    expect(await chainOf(c.path)).toEqual([c.path, b.path, a.path]);
    const v = await Vhd.open(c.path, { readOnly: true });
    expect(v.diskType).toBe('differencing');
    expect(v.parentUuid).toBe(b.uuid);
    expect(v.parentPath).toBe(b.path);
    expect(v.parentName).toBe(`${b.path.split('/').pop()}`);
    expect(Math.abs(v.parentTimestamp!.getTime() / 1000 - statSync(b.path).mtimeMs / 1000)).toBeLessThan(2);
    expect(v.virtualSize).toBe(size);
    expect((await v.read(0, size)).equals(model)).toBe(true);
    // a partially written block in the leaf: bit=0 sectors come from the parents
    expect((await v.read(2 * MiB - 1024, 2048)).equals(model.subarray(2 * MiB - 1024, 2 * MiB + 1024))).toBe(true);
    await v.close();

    const raw = readFileSync(c.path);
    const locs: [number, string][] = [];
    for (let i = 0; i < 8; i++) {
      const o = 512 + 576 + 24 * i;
      const code = raw.readUInt32BE(o);
      if (!code) continue;
      const len = raw.readUInt32BE(o + 8);
      const off = Number(raw.readBigUInt64BE(o + 16));
      expect(raw.readUInt32BE(o + 4)).toBe(512); // data_space in bytes, as blktap
      locs.push([code, raw.subarray(off, off + len).toString(code === 0x4d616358 ? 'utf8' : 'utf16le')]);
    }
    const bname = b.path.split('/').pop()!;
    expect(locs).toEqual([
      [0x4d616358, `file://./${bname}`],
      [0x57326b75, b.path.replace(/\//g, '\\')],
      [0x57327275, `.\\${bname}`],
    ]);
    const name = raw.subarray(512 + 64, 512 + 64 + bname.length * 2);
    expect(Buffer.from(name).swap16().toString('utf16le')).toBe(bname); // UTF-16BE
    if (QEMU) {
      // qemu's vpc driver opens differencing disks but does not follow parent locators
      expect(qemuInfo(c.path)['virtual-size']).toBe(size);
    }
  });

  it('resolves a parent in another directory and checks the parent uuid', async () => {
    const sub = join(dir, 'sub');
    mkdirSync(sub, { recursive: true });
    const parentPath = join(sub, 'p.vhd');
    const pv = await Vhd.create(parentPath, { size: 4 * MiB, uuid: uuid() });
    await pv.write(0, Buffer.from('parent'));
    await pv.close();
    const child = file();
    const cv = await Vhd.create(child, { uuid: uuid(), parent: parentPath });
    expect((await cv.read(0, 6)).toString()).toBe('parent');
    await cv.close();
    expect(readFileSync(child).includes(Buffer.from('file://./sub/p.vhd'))).toBe(true);
    // replace the parent with another disk: uuid mismatch
    unlinkSync(parentPath);
    await (await Vhd.create(parentPath, { size: 4 * MiB, uuid: uuid() })).close();
    await expectVhdError(Vhd.open(child), 'PARENT_MISMATCH');
    unlinkSync(parentPath);
    await expectVhdError(Vhd.open(child), 'PARENT_NOT_FOUND');
    const alone = await Vhd.open(child, { parents: false });
    expect(alone.parentPath).toBe(null);
    await expectVhdError(alone.read(0, 1), 'PARENT_NOT_OPEN');
    await alone.close();
  });

  it('limits chains to 30 files', async () => {
    let p = (await makeDisk(2 * MiB)).path;
    for (let i = 1; i < 30; i++) p = (await makeDisk(0, [], p)).path;
    expect((await chainOf(p)).length).toBe(30);
    await expectVhdError(Vhd.create(file(), { uuid: uuid(), parent: p }), 'CHAIN_TOO_LONG');
  });

  it('refuses a child smaller than its parent', async () => {
    const a = await makeDisk(8 * MiB);
    await expectVhdError(Vhd.create(file(), { uuid: uuid(), parent: a.path, size: 4 * MiB }), 'SIZE_MISMATCH');
    const big = await Vhd.create(file(), { uuid: uuid(), parent: a.path, size: 16 * MiB });
    expect(big.virtualSize).toBe(16 * MiB);
    expect((await big.read(8 * MiB - 2, 4)).equals(Buffer.alloc(4))).toBe(true); // beyond the parent: zeros
    await big.close();
  });

  it('coalesces a middle node and relinks the leaf; the leaf sees the same bytes', async () => {
    const size = 6 * MiB;
    const a = await makeDisk(size, [[0, pattern(3 * MiB, 21)]]);
    const b = await makeDisk(0, [[100, pattern(MiB, 22)], [4 * MiB + 7, pattern(9, 23)], [2 * MiB, pattern(2 * MiB, 24)]], a.path);
    const c = await makeDisk(0, [[MiB, pattern(5000, 25)]], b.path);
    const before = await (async () => {
      const v = await Vhd.open(c.path, { readOnly: true });
      const d = await v.read(0, size);
      await v.close();
      return d;
    })();
    const bView = await (async () => {
      const v = await Vhd.open(b.path, { readOnly: true });
      const d = await v.read(0, size);
      await v.close();
      return d;
    })();
    const res = await coalesce(b.path);
    expect(res.blocks).toBe(3);
    expect(res.parentPath).toBe(a.path);
    const av = await Vhd.open(a.path, { readOnly: true });
    expect((await av.read(0, size)).equals(bView)).toBe(true); // a now holds b's view
    await av.close();
    await setParent(c.path, a.path);
    unlinkSync(b.path);
    expect(await chainOf(c.path)).toEqual([c.path, a.path]);
    const cv = await Vhd.open(c.path, { readOnly: true });
    expect(cv.parentUuid).toBe(a.uuid);
    expect(cv.parentName).toBe(a.path.split('/').pop());
    expect((await cv.read(0, size)).equals(before)).toBe(true);
    await cv.close();
    await expectVhdError(coalesce(a.path), 'NOT_DIFFERENCING');
    if (QEMU) expect(qemuRaw(a.path).equals(bView)).toBe(true);
  });
  it('setParent moves locators that no longer fit to the end of the file', async () => {
    const a = await makeDisk(4 * MiB, [[0, Buffer.from('AAAA')]]);
    const b = await makeDisk(0, [[MiB, Buffer.from('BBBB')]], a.path);
    const deep = join(dir, 'deep');
    mkdirSync(deep, { recursive: true });
    const longParent = join(deep, `${'p'.repeat(240)}.vhd`);
    copyFileSync(a.path, longParent); // same uuid, longer absolute path (> 512 bytes in UTF-16)
    await setParent(b.path, longParent);
    const v = await Vhd.open(b.path);
    expect(v.parentPath).toBe(longParent);
    expect(v.physicalSize()).toBe(statSync(b.path).size);
    await v.write(3 * MiB, Buffer.from('CCCC')); // allocates after the moved locator
    await v.close();
    const r = await Vhd.open(b.path, { readOnly: true });
    expect(r.parentPath).toBe(longParent);
    expect((await r.read(0, 4)).toString()).toBe('AAAA');
    expect((await r.read(MiB, 4)).toString()).toBe('BBBB');
    expect((await r.read(3 * MiB, 4)).toString()).toBe('CCCC');
    await r.close();
    if (QEMU) expect(qemuInfo(b.path)['virtual-size']).toBe(4 * MiB);
  });

  it('serialises concurrent writes', async () => {
    const size = 16 * MiB;
    const v = await Vhd.create(file(), { size, uuid: uuid() });
    const model = Buffer.alloc(size);
    const ops = Array.from({ length: 24 }, (_, i) => {
      const off = ((i * 2654435761) >>> 0) % (size - 70000);
      const d = pattern(65537, 200 + i);
      return [off, d] as const;
    });
    await Promise.all(ops.map(([off, d]) => v.write(off, d)));
    for (const [off, d] of ops) d.copy(model, off); // same order as the mutex queue
    expect((await v.read(0, size)).equals(model)).toBe(true);
    await v.close();
  });
});

describe('corrupt and truncated files', () => {
  it('gives typed errors, never crashes', async () => {
    const good = await makeDisk(8 * MiB, [[0, pattern(5 * MiB, 31)]]);
    const copy = (mutate: (b: Buffer) => Buffer) => {
      const p = file();
      writeFileSync(p, mutate(Buffer.from(readFileSync(good.path))));
      return p;
    };
    // both footers broken
    await expectVhdError(Vhd.open(copy((b) => { b[70] ^= 1; b[b.length - 512 + 70] ^= 1; return b; })), 'BAD_FOOTER');
    // header checksum
    await expectVhdError(Vhd.open(copy((b) => { b[512 + 100] ^= 0xff; return b; })), 'BAD_HEADER');
    // truncated in the middle of data: the footer copy at 0 is used, the BAT points past EOF
    await expectVhdError(Vhd.open(copy((b) => b.subarray(0, 3 * MiB))), 'TRUNCATED');
    await expectVhdError(Vhd.open(copy((b) => b.subarray(0, 100))), 'TRUNCATED');
    await expectVhdError(Vhd.open(copy((b) => b.subarray(0, 1000))), 'TRUNCATED');
    await expectVhdError(Vhd.open(copy(() => pattern(4096, 3))), 'BAD_FOOTER');
    // a BAT entry pointing into the header
    await expectVhdError(Vhd.open(copy((b) => { b.writeUInt32BE(1, 1536); return b; })), 'BAD_BAT');
    // only the trailing footer lost (crash while allocating): opens from the copy at 0, like blktap
    const p = copy((b) => b.subarray(0, b.length - 512));
    const v = await Vhd.open(p);
    expect((await v.read(0, 5 * MiB)).equals(pattern(5 * MiB, 31))).toBe(true);
    await v.write(7 * MiB, Buffer.alloc(1, 1)); // rewrites a footer at the new end
    await v.close();
    const raw = readFileSync(p);
    expect(raw.subarray(raw.length - 512).toString('latin1', 0, 8)).toBe('conectix');
    await expectVhdError(Vhd.open(join(dir, 'missing.vhd')), 'IO');
  });
});

describe('streams', () => {
  it('exports raw through the chain', async () => {
    const a = await makeDisk(6 * MiB, [[0, pattern(3 * MiB, 41)]]);
    const b = await makeDisk(0, [[5 * MiB, pattern(100, 42)]], a.path);
    const { stream, size } = await exportRaw(b.path);
    expect(size).toBe(6 * MiB);
    const got = await collect(stream);
    const model = Buffer.alloc(6 * MiB);
    pattern(3 * MiB, 41).copy(model);
    pattern(100, 42).copy(model, 5 * MiB);
    expect(got.equals(model)).toBe(true);
  });

  it('exports a 100 GiB disk holding 10 MiB as a ~10 MiB VHD, and imports it back', async () => {
    const writes: [number, Buffer][] = [
      [0, pattern(2 * MiB, 51)],
      [37 * GiB + 4096, pattern(4 * MiB, 52)],
      [99 * GiB, pattern(2 * MiB, 53)],
      [100 * GiB - 2 * MiB, pattern(2 * MiB, 54)],
    ];
    const src = await makeDisk(100 * GiB, writes);
    const exp = await exportVhd(src.path);
    expect(exp.blocks).toBe(6);
    const vhd = await collect(exp.stream);
    expect(vhd.length).toBe(exp.size);
    expect(vhd.length).toBeLessThan(12.5 * MiB + 300 * 1024); // 12 MiB of blocks + BAT/batmap of 100 GiB
    expect(vhd.length).toBeGreaterThan(12 * MiB);
    const streamed = file();
    writeFileSync(streamed, vhd);
    const sv = await Vhd.open(streamed, { readOnly: true }); // the stream is itself a valid VHD file
    expect(sv.uuid).toBe(src.uuid);
    expect(sv.allocatedBlocks().length).toBe(6);
    await sv.close();

    const target = await makeDisk(100 * GiB);
    const res = await importVhd(target.path, chunked(vhd, 100_000));
    expect(res.blocks).toBe(6);
    const t = await Vhd.open(target.path, { readOnly: true });
    expect(t.uuid).toBe(target.uuid); // the target keeps its identity
    expect(t.allocatedBlocks().length).toBe(6);
    for (const [off, d] of writes) expect((await t.read(off, d.length)).equals(d)).toBe(true);
    expect((await t.read(50 * GiB, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await t.close();
    expect(statSync(target.path).size).toBeLessThan(13 * MiB);
    noTempFiles();
  });

  it.skipIf(!QEMU)('VHD exports of a chain are flattened dynamic VHDs that qemu reads', async () => {
    const a = await makeDisk(8 * MiB, [[0, pattern(3 * MiB, 61)]]);
    const b = await makeDisk(0, [[MiB, pattern(700, 62)], [6 * MiB, pattern(MiB, 63)]], a.path);
    const { stream } = await exportVhd(b.path);
    const p = file();
    writeFileSync(p, await collect(stream));
    const full = await collect((await exportRaw(b.path)).stream);
    expect(qemuRaw(p).equals(full)).toBe(true);
  });

  it('exports only the blocks above a base (ancestor or sibling snapshot) and imports them as an overlay', async () => {
    const size = 16 * MiB;
    // base copy B with data, leaf V (after snapshot S) with new writes
    const B = await makeDisk(size, [[0, pattern(6 * MiB, 71)]]);
    const S = await makeDisk(0, [[10 * MiB, pattern(10, 74)]], B.path); // snapshot leaf, diverged a bit
    const V = await makeDisk(0, [[MiB, pattern(100, 72)], [12 * MiB, pattern(3 * MiB, 73)]], B.path);
    const vView = await collect((await exportRaw(V.path)).stream);

    const d1 = await exportVhd(V.path, { base: B.path });
    expect(d1.blocks).toBe(3); // blocks 0, 6, 7
    const diff1 = await collect(d1.stream);
    expect(diff1.readUInt32BE(60)).toBe(4); // differencing
    // replay: a disk holding B's contents + the delta == V
    const t1 = await makeDisk(size);
    await importVhd(t1.path, chunked(await collect((await exportVhd(B.path)).stream)));
    await importVhd(t1.path, chunked(diff1));
    expect((await collect((await exportRaw(t1.path)).stream)).equals(vView)).toBe(true);

    // relative to the sibling snapshot S: also carries S's own block (5) so the target, holding S, becomes V
    const d2 = await exportVhd(V.path, { base: S.path });
    expect(d2.blocks).toBe(4);
    const t2 = await makeDisk(size);
    await importVhd(t2.path, chunked(await collect((await exportVhd(S.path)).stream)));
    await importVhd(t2.path, chunked(await collect(d2.stream)));
    expect((await collect((await exportRaw(t2.path)).stream)).equals(vView)).toBe(true);

    const other = await makeDisk(size);
    await expectVhdError(exportVhd(V.path, { base: other.path }), 'BASE_NOT_IN_CHAIN');
  });

  it('imports a differencing VHD file with partial bitmaps as an overlay (sector granularity)', async () => {
    const size = 8 * MiB;
    const A = await makeDisk(size, [[0, pattern(3 * MiB, 121)]]);
    const C = await makeDisk(0, [[1000, pattern(700, 122)], [5 * MiB + 512, pattern(1024, 123)]], A.path);
    const cView = await collect((await exportRaw(C.path)).stream);
    const T = await makeDisk(size);
    await importVhd(T.path, chunked(await collect((await exportVhd(A.path)).stream)));
    await importVhd(T.path, createReadStream(C.path)); // the differencing file itself is a valid stream
    expect((await collect((await exportRaw(T.path)).stream)).equals(cView)).toBe(true);
  });

  it('reuses one block buffer without mixing blocks up or touching the caller\'s chunks', async () => {
    // chunk sizes that make some blocks arrive whole in one chunk (views of the caller's buffer) and
    // others spread over several (copied into the import's reused buffer), partial bitmaps included
    const pieces = (buf: Buffer, sizes: number[]): Readable =>
      Readable.from(
        (function* () {
          for (let i = 0, k = 0; i < buf.length; k++) {
            const len = sizes[k % sizes.length];
            yield buf.subarray(i, i + len);
            i += len;
          }
        })(),
        { objectMode: false },
      );
    const size = 16 * MiB;
    const A = await makeDisk(size, [[0, pattern(7 * MiB, 131)], [12 * MiB, pattern(3 * MiB, 132)]]);
    const writes: [number, Buffer][] = [];
    for (let b = 0; b < 8; b++) writes.push([b * 2 * MiB + 512 * (b + 1), pattern(700 + 300 * b, 140 + b)]);
    const C = await makeDisk(0, writes, A.path);
    const cView = await collect((await exportRaw(C.path)).stream);
    const cFile = readFileSync(C.path);
    // garbage in the sectors the bitmaps mark absent: must be ignored, and must stay in the input
    const tableOffset = Number(cFile.readBigUInt64BE(512 + 16));
    let partial = 0;
    for (let b = 0; b < size / (2 * MiB); b++) {
      const sector = cFile.readUInt32BE(tableOffset + 4 * b);
      if (sector === 0xffffffff) continue;
      const bm = sector * 512;
      for (let s = 0; s < 4096; s++) {
        if (!((cFile[bm + (s >> 3)] >> (7 - (s & 7))) & 1)) {
          cFile.fill(0xaa, bm + 512 + s * 512, bm + 1024 + s * 512);
          if (s === 0 || s === 4095) partial++;
        }
      }
    }
    expect(partial).toBeGreaterThan(4);
    const aStream = await collect((await exportVhd(A.path)).stream);
    for (const sizes of [[cFile.length], [3 * MiB, 100_000], [5 * MiB + 1, 4096, 777_777]]) {
      const T = await makeDisk(size);
      await importVhd(T.path, pieces(aStream, sizes));
      const copy = Buffer.from(cFile);
      await importVhd(T.path, pieces(copy, sizes));
      expect(copy.equals(cFile)).toBe(true); // absent sectors zeroed in a copy, never in the input
      expect((await collect((await exportRaw(T.path)).stream)).equals(cView)).toBe(true);
      const raw = Buffer.concat([pattern(5 * MiB, 150), Buffer.alloc(2 * MiB), pattern(9 * MiB - 3, 151)]);
      const R = await makeDisk(size, [[15 * MiB, pattern(MiB, 152)]]);
      const rawCopy = Buffer.from(raw);
      await importRaw(R.path, pieces(rawCopy, sizes), raw.length);
      expect(rawCopy.equals(raw)).toBe(true);
      const model = Buffer.concat([raw, Buffer.alloc(size - raw.length)]);
      pattern(MiB, 152).subarray(MiB - 3).copy(model, raw.length);
      const r = await Vhd.open(R.path, { readOnly: true });
      expect((await r.read(0, size)).equals(model)).toBe(true);
      await r.close();
    }
  });

  it('imports a dynamic VHD into a differencing target: the result equals the input exactly', async () => {
    const size = 8 * MiB;
    const base = await makeDisk(size, [[0, pattern(8 * MiB, 81)]]);
    const leaf = await makeDisk(0, [[3 * MiB, pattern(10, 82)]], base.path);
    const srcDisk = await makeDisk(size, [[2 * MiB + 5, pattern(1000, 83)]]);
    const input = await collect((await exportVhd(srcDisk.path)).stream);
    await importVhd(leaf.path, chunked(input));
    const model = Buffer.alloc(size);
    pattern(1000, 83).copy(model, 2 * MiB + 5);
    expect((await collect((await exportRaw(leaf.path)).stream)).equals(model)).toBe(true);
    expect(await chainOf(leaf.path)).toEqual([leaf.path, base.path]);
  });

  it('rejects truncated and corrupt VHD streams without touching the target', async () => {
    const srcDisk = await makeDisk(8 * MiB, [[0, pattern(3 * MiB, 91)], [6 * MiB, pattern(5, 92)]]);
    const good = await collect((await exportVhd(srcDisk.path)).stream);
    const target = await makeDisk(8 * MiB, [[MiB, pattern(4000, 93)]]);
    const hash = sha(target.path);
    const cases: [Buffer, string][] = [
      [good.subarray(0, 300), 'TRUNCATED'], // inside the footer copy
      [good.subarray(0, 1000), 'TRUNCATED'], // inside the header
      [good.subarray(0, 1600), 'TRUNCATED'], // inside the BAT
      [good.subarray(0, good.length - 512 - MiB), 'TRUNCATED'], // inside a block
      [good.subarray(0, good.length - 512), 'TRUNCATED'], // no trailing footer
      [good.subarray(0, good.length - 100), 'TRUNCATED'], // partial trailing footer
      [Buffer.concat([Buffer.from('garbage!'), good.subarray(8)]), 'BAD_INPUT'], // cookie
      [(() => { const b = Buffer.from(good); b[512 + 40] ^= 1; return b; })(), 'BAD_INPUT'], // header checksum
      [(() => { const b = Buffer.from(good); b.writeUInt32BE(2, 1536); return b; })(), 'BAD_INPUT'], // BAT into metadata
      [(() => { const b = Buffer.from(good); b[good.length - 512 + 70] ^= 1; return b; })(), 'BAD_INPUT'], // trailing footer checksum
      [pattern(5 * MiB, 1), 'BAD_INPUT'], // not a VHD
    ];
    for (const [input, code] of cases) {
      await expectVhdError(importVhd(target.path, chunked(input, 77_777)), code);
      expect(sha(target.path)).toBe(hash);
      noTempFiles();
    }
    // an input stream that fails midway (aborted upload)
    const failing = Readable.from((async function* () {
      yield good.subarray(0, 2 * MiB);
      throw Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
    })(), { objectMode: false });
    await expectVhdError(importVhd(target.path, failing), 'TRUNCATED');
    expect(sha(target.path)).toBe(hash);
    // too big for the target
    const big = await makeDisk(16 * MiB);
    await expectVhdError(importVhd(target.path, chunked(await collect((await exportVhd(big.path)).stream))), 'SIZE_MISMATCH');
    expect(sha(target.path)).toBe(hash);
    noTempFiles();
  });

  it('imports raw streams, skipping zero blocks; short or long inputs leave the target intact', async () => {
    const size = 10 * MiB;
    const raw = Buffer.alloc(size);
    pattern(MiB, 101).copy(raw, 2 * MiB + 100);
    pattern(10, 102).copy(raw, 9 * MiB);
    const target = await makeDisk(size, [[0, pattern(MiB, 103)]]); // old data in block 0 must vanish
    const res = await importRaw(target.path, chunked(raw, 50_000), size);
    expect(res.bytes).toBe(size);
    const t = await Vhd.open(target.path, { readOnly: true });
    expect(t.allocatedBlocks()).toEqual([1, 4]);
    expect((await t.read(0, size)).equals(raw)).toBe(true);
    await t.close();
    if (QEMU) expect(qemuRaw(target.path).equals(raw)).toBe(true);

    const hash = sha(target.path);
    await expectVhdError(importRaw(target.path, chunked(raw.subarray(0, size - 1)), size), 'TRUNCATED');
    expect(sha(target.path)).toBe(hash);
    await expectVhdError(importRaw(target.path, chunked(Buffer.concat([raw, Buffer.alloc(1)])), size), 'BAD_INPUT');
    expect(sha(target.path)).toBe(hash);
    await expectVhdError(importRaw(target.path, chunked(raw), size + 2 * MiB), 'SIZE_MISMATCH');
    expect(sha(target.path)).toBe(hash);
    noTempFiles();

    // a shorter raw image keeps the target's bytes after it (partial last block merged)
    const part = pattern(3 * MiB + 5, 104);
    await importRaw(target.path, chunked(part), part.length);
    const model = Buffer.from(raw);
    part.copy(model, 0);
    const t2 = await Vhd.open(target.path, { readOnly: true });
    expect((await t2.read(0, size)).equals(model)).toBe(true);
    await t2.close();
  });

  it('raw export + raw import round trip through a differencing target', async () => {
    const a = await makeDisk(4 * MiB, [[0, pattern(4 * MiB, 111)]]);
    const child = await makeDisk(0, [], a.path);
    const src = await makeDisk(4 * MiB, [[MiB, pattern(10, 112)]]);
    const { stream, size } = await exportRaw(src.path);
    await importRaw(child.path, stream, size);
    const expected = await collect((await exportRaw(src.path)).stream);
    expect((await collect((await exportRaw(child.path)).stream)).equals(expected)).toBe(true);
    copyFileSync(child.path, join(dir, 'keep.vhd')); // the import left a valid file
    const v = await Vhd.open(join(dir, 'keep.vhd'), { readOnly: true });
    expect(v.parentUuid).toBe(a.uuid);
    await v.close();
  });
});
