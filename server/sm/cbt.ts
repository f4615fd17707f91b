// Changed block tracking (SM's VDI.py CBT part and cbtutil): a VDI with CBT enabled has a log
// `<vdi-uuid>.cbtlog` next to its VHD, laid out as cbt-util lays it out: the uuids of the previous
// and next logs of its chain (parent, child), a consistency flag, the disk's virtual size, then one
// bit per 64 KiB block (block i is bit i%8, least significant first, of byte i/8) set when the block
// was written. A snapshot takes the leaf's log (the changes up to the snapshot) and the leaf starts a
// new empty one; VDI.list_changed_blocks ORs the logs after `from` up to `to`. A deleted snapshot's
// bits move into its child's log, so no change is ever lost from the chain.
// Every log is rewritten whole under a temporary name and renamed into place, except the marks
// written by I/O, which are set in place before the data they cover is written: a crash may leave a
// block marked that was not written (the log says "maybe changed"), never the other way round, so
// the log stays consistent and the flag is always set.
import { open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { SrCtx, VdiIo } from './driver.js';
import { SmError } from './driver.js';
import { isUuid, srFile } from './paths.js';
import { fsyncPath, renameDurably } from './durable.js';

export const CBT_BLOCK_SIZE = 64 * 1024;
/** parent uuid, child uuid, consistent (int32), padding, size (uint64) */
const HEADER_SIZE = 48;
const NULL_UUID = '00000000-0000-0000-0000-000000000000';

export const cbtLogName = (uuid: string) => `${uuid}.cbtlog`;
export const cbtLogPath = (ctx: SrCtx, uuid: string) => srFile(ctx.emu, ctx.uuid, cbtLogName(uuid));

export interface CbtLog {
  /** the log before this one in the chain (the previous snapshot), or null */
  parent: string | null;
  /** the log after this one (the next snapshot, or the leaf), or null */
  child: string | null;
  consistent: boolean;
  /** virtual size of the disk tracked */
  size: number;
  /** one bit per 64 KiB block, least significant bit first */
  bitmap: Buffer;
}

/** bytes of bitmap for a disk of `size` bytes */
export const bitmapBytes = (size: number) => Math.ceil(Math.ceil(size / CBT_BLOCK_SIZE) / 8);

// ---- SM's errors for CBT (XE_SR_ERRORCODES.xml) ----
const cbtError = (code: number, key: string, desc: string, opterr?: string) =>
  new SmError(key, code, opterr === undefined ? desc : `${desc} [opterr=${opterr}]`);
export const cbtActivateFailed = (opterr: string) => cbtError(457, 'CBTActivateFailed', 'Unable to activate changed block tracking.', opterr);
export const cbtMetadataInconsistent = (opterr: string) =>
  cbtError(459, 'CBTMetadataInconsistent', 'Changed block tracking log is in an inconsistent state.', opterr);
export const cbtChangedBlocksError = (opterr: string) =>
  cbtError(460, 'CBTChangedBlocksError', 'Failed to calculate changed blocks for given VDIs.', opterr);

// ---- the file format ----

function uuidBytes(u: string | null): Buffer {
  return Buffer.from((u ?? NULL_UUID).replace(/-/g, ''), 'hex');
}

function uuidOf(b: Buffer): string | null {
  const h = b.toString('hex');
  const u = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  return u === NULL_UUID ? null : u;
}

export function encodeLog(log: CbtLog): Buffer {
  const out = Buffer.alloc(HEADER_SIZE + bitmapBytes(log.size));
  uuidBytes(log.parent).copy(out, 0);
  uuidBytes(log.child).copy(out, 16);
  out.writeInt32LE(log.consistent ? 1 : 0, 32);
  out.writeBigUInt64LE(BigInt(log.size), 40);
  log.bitmap.copy(out, HEADER_SIZE, 0, Math.min(log.bitmap.length, out.length - HEADER_SIZE));
  return out;
}

export function decodeLog(buf: Buffer, what: string): CbtLog {
  if (buf.length < HEADER_SIZE) throw cbtMetadataInconsistent(`${what}: truncated header`);
  const size = buf.readBigUInt64LE(40);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw cbtMetadataInconsistent(`${what}: bad size`);
  const n = Number(size);
  const bitmap = buf.subarray(HEADER_SIZE);
  if (bitmap.length < bitmapBytes(n)) throw cbtMetadataInconsistent(`${what}: bitmap shorter than the size`);
  return {
    parent: uuidOf(buf.subarray(0, 16)),
    child: uuidOf(buf.subarray(16, 32)),
    consistent: buf.readInt32LE(32) !== 0,
    size: n,
    bitmap: Buffer.from(bitmap.subarray(0, bitmapBytes(n))),
  };
}

// ---- one writer per log ----

const queues = new Map<string, Promise<unknown>>();

/** Runs fn alone on the log at `path` (SM's "cbtlog" lock). */
function withLog<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(path) ?? Promise.resolve();
  const p = prev.then(fn, fn);
  const tail = p.catch(() => undefined);
  queues.set(path, tail);
  void tail.then(() => {
    if (queues.get(path) === tail) queues.delete(path);
  });
  return p;
}

export async function logExists(ctx: SrCtx, uuid: string | null): Promise<boolean> {
  if (!uuid) return false;
  return Boolean(await stat(cbtLogPath(ctx, uuid)).catch(() => null));
}

export async function readLog(ctx: SrCtx, uuid: string): Promise<CbtLog | null> {
  let buf: Buffer;
  try {
    buf = await readFile(cbtLogPath(ctx, uuid));
  } catch {
    return null;
  }
  return decodeLog(buf, cbtLogName(uuid));
}

/** Writes a log whole: temporary file, fsync, rename over the old one. */
async function writeLog(ctx: SrCtx, uuid: string, log: CbtLog): Promise<void> {
  const path = cbtLogPath(ctx, uuid);
  await withLog(path, async () => {
    const tmp = `${path}.tmp`;
    await writeFile(tmp, encodeLog(log));
    await fsyncPath(tmp);
    await renameDurably(tmp, path);
  });
}

async function removeLog(ctx: SrCtx, uuid: string): Promise<void> {
  const path = cbtLogPath(ctx, uuid);
  await withLog(path, async () => {
    await rm(path, { force: true });
    await fsyncPath(ctx.path);
  });
}

async function setChild(ctx: SrCtx, uuid: string | null, child: string | null): Promise<void> {
  if (!uuid) return;
  const log = await readLog(ctx, uuid);
  if (log) await writeLog(ctx, uuid, { ...log, child });
}

// ---- SM's operations (called under the SR lock, the VDI paused) ----

/** configure_blocktracking(enable): a new empty log for the disk's virtual size. */
export async function cbtEnable(ctx: SrCtx, uuid: string, size: number): Promise<void> {
  if (await logExists(ctx, uuid)) return;
  try {
    await writeLog(ctx, uuid, { parent: null, child: null, consistent: true, size, bitmap: Buffer.alloc(bitmapBytes(size)) });
  } catch (e) {
    await rm(cbtLogPath(ctx, uuid), { force: true }).catch(() => undefined);
    throw cbtActivateFailed(e instanceof Error ? e.message : String(e));
  }
}

/** configure_blocktracking(disable): the leaf's log goes, and its parent has no child any more. */
export async function cbtDisable(ctx: SrCtx, uuid: string): Promise<void> {
  const log = await readLog(ctx, uuid).catch(() => null);
  await removeLog(ctx, uuid);
  if (log?.parent) await setChild(ctx, log.parent, null);
}

/**
 * _cbt_snapshot: the snapshot `snap` takes the leaf's log as it is, the leaf starts an empty one.
 * Steps ordered so that a crash between any two leaves every change reachable: the snapshot's log
 * first (a copy), then the previous log points at it, then the leaf's log is replaced.
 */
export async function cbtSnapshot(ctx: SrCtx, leaf: string, snap: string): Promise<boolean> {
  const log = await readLog(ctx, leaf);
  if (!log) return false;
  await writeLog(ctx, snap, { ...log, child: leaf, consistent: true });
  await setChild(ctx, log.parent, snap);
  await writeLog(ctx, leaf, { parent: snap, child: log.child, consistent: true, size: log.size, bitmap: Buffer.alloc(bitmapBytes(log.size)) });
  return true;
}

/** Undoes cbtSnapshot wherever it stopped: the leaf's log gets the snapshot's bits back. */
export async function cbtUndoSnapshot(ctx: SrCtx, leaf: string, snap: string): Promise<void> {
  const s = await readLog(ctx, snap).catch(() => null);
  if (!s) return;
  const l = await readLog(ctx, leaf).catch(() => null);
  if (l && l.parent === snap) await writeLog(ctx, leaf, { ...l, parent: s.parent, bitmap: orBitmaps(s.bitmap, l.bitmap) });
  await setChild(ctx, s.parent, leaf);
  await removeLog(ctx, snap);
}

/**
 * VDI.delete of a disk with a log: its child's log gets its bits and its parent, its parent's log
 * the child, and the log goes. With data_only (VDI.data_destroy) the log stays.
 */
export async function cbtDelete(ctx: SrCtx, uuid: string): Promise<void> {
  const log = await readLog(ctx, uuid).catch(() => null);
  if (!log) return;
  const child = log.child ? await readLog(ctx, log.child).catch(() => null) : null;
  if (child) await writeLog(ctx, log.child!, { ...child, parent: log.parent, bitmap: orBitmaps(child.bitmap, log.bitmap) });
  await setChild(ctx, log.parent, log.child && child ? log.child : null);
  await removeLog(ctx, uuid);
}

/** resize_cbt: the log follows the disk's new size. */
export async function cbtResize(ctx: SrCtx, uuid: string, size: number): Promise<void> {
  const log = await readLog(ctx, uuid).catch(() => null);
  if (!log || log.size === size) return;
  await writeLog(ctx, uuid, { ...log, size, bitmap: Buffer.concat([log.bitmap, Buffer.alloc(Math.max(0, bitmapBytes(size) - log.bitmap.length))]) });
}

function orBitmaps(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(Math.max(a.length, b.length));
  a.copy(out);
  for (let i = 0; i < b.length; i++) out[i] |= b[i];
  return out;
}

/** Bits in the order xapi hands them out (bitarray's: block i is bit 7 - i%8 of byte i/8). */
function msbFirst(b: Buffer): Buffer {
  const out = Buffer.alloc(b.length);
  for (let i = 0; i < b.length; i++) {
    let v = b[i];
    let r = 0;
    for (let k = 0; k < 8; k++) {
      r = (r << 1) | (v & 1);
      v >>= 1;
    }
    out[i] = r;
  }
  return out;
}

/**
 * VDI.list_changed_blocks: from the log after `from`'s, child by child up to `to`'s, the OR of
 * their bitmaps (grown with the disk), base64 encoded. `from` and `to` are VDI uuids.
 */
export async function cbtListChangedBlocks(ctx: SrCtx, from: string, to: string): Promise<string> {
  if (from === to) throw cbtChangedBlocksError('Source and target VDI are same');
  if ((await logExists(ctx, from)) && (await logExists(ctx, to))) {
    let cur = from;
    let merged: Buffer | null = null;
    let size = 0;
    const seen = new Set([from]);
    for (;;) {
      const next = (await readLog(ctx, cur))!.child;
      if (!next || seen.has(next)) break;
      const log = await readLog(ctx, next);
      if (!log) break;
      seen.add(next);
      cur = next;
      if (merged) {
        if (log.size < size) throw cbtMetadataInconsistent('Inconsistent bitmaps');
        size = log.size;
        merged = orBitmaps(merged, log.bitmap);
      } else {
        merged = log.bitmap;
        size = log.size;
      }
      if (cur === to) return msbFirst(merged).toString('base64');
    }
  }
  throw cbtChangedBlocksError('Source and target VDI are unrelated');
}

// ---- marking writes ----

/**
 * Sets the bits of the 64 KiB blocks that [offset, offset+length) touches in the log of `uuid`,
 * if it has one. Returns whether a log was marked.
 */
export async function cbtMark(ctx: SrCtx, uuid: string, offset: number, length: number): Promise<boolean> {
  if (length <= 0) return false;
  const path = cbtLogPath(ctx, uuid);
  return withLog(path, async () => {
    let fh;
    try {
      fh = await open(path, 'r+');
    } catch {
      return false;
    }
    try {
      const head = Buffer.alloc(HEADER_SIZE);
      await fh.read(head, 0, HEADER_SIZE, 0);
      const size = Number(head.readBigUInt64LE(40));
      const first = Math.floor(offset / CBT_BLOCK_SIZE);
      const last = Math.min(Math.floor((offset + length - 1) / CBT_BLOCK_SIZE), Math.ceil(size / CBT_BLOCK_SIZE) - 1);
      if (last < first) return true;
      const b0 = first >> 3;
      const bytes = Buffer.alloc((last >> 3) - b0 + 1);
      await fh.read(bytes, 0, bytes.length, HEADER_SIZE + b0);
      for (let i = first; i <= last; i++) bytes[(i >> 3) - b0] |= 1 << (i & 7);
      await fh.write(bytes, 0, bytes.length, HEADER_SIZE + b0);
      return true;
    } finally {
      await fh.close();
    }
  });
}

/** fsync of a log after marks (a flush of the disk makes its marks durable too). */
export async function cbtSync(ctx: SrCtx, uuid: string): Promise<void> {
  const path = cbtLogPath(ctx, uuid);
  await withLog(path, () => fsyncPath(path).catch(() => undefined));
}

/** Whether the VDI (by uuid) has CBT enabled: its record says so (one lookup, no file touched). */
function cbtEnabled(ctx: SrCtx, vdiUuid: string): boolean {
  const ref = ctx.emu.db.refByUuid('VDI', vdiUuid);
  return ref !== undefined && ctx.emu.db.get('VDI', ref)?.cbt_enabled === true;
}

/**
 * Makes the writes of a disk opened read-write mark its log (tapdisk's CBT: the log is passed to
 * tapdisk when SM activates the VDI). The mark is set before the data is written; a flush of the
 * disk makes the marks since the last flush durable too.
 */
export function trackWrites(ctx: SrCtx, vdiUuid: string, location: string, io: VdiIo): void {
  const write = io.write.bind(io);
  const flush = io.flush.bind(io);
  let dirty = false;
  io.write = async (offset, data) => {
    if (cbtEnabled(ctx, vdiUuid) && (await cbtMark(ctx, location, offset, data.length))) dirty = true;
    return write(offset, data);
  };
  io.flush = async () => {
    if (dirty) {
      dirty = false;
      await cbtSync(ctx, location);
    }
    return flush();
  };
}

/** The uuids of the SR's CBT logs. */
export async function cbtLogUuids(ctx: SrCtx): Promise<Set<string>> {
  const out = new Set<string>();
  for (const name of await readdir(ctx.path).catch(() => [] as string[])) {
    const m = /^(.+)\.cbtlog$/.exec(name);
    if (m && isUuid(m[1])) out.add(m[1]);
  }
  return out;
}
