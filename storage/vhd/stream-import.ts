/**
 * Streams into an existing VHD file (for /import_raw_vdi):
 *  - importVhd: a VHD stream, parsed as it arrives (footer copy, header, BAT,
 *    then the blocks in file order, then the trailing footer). A dynamic VHD
 *    replaces the target's contents; a differencing VHD (an export relative
 *    to a base) overwrites only the blocks/sectors it carries.
 *  - importRaw: `length` raw bytes for offsets 0..length, all-zero blocks
 *    skipped.
 * Both validate everything and detect a short input before the target is
 * touched: see staging.ts (temporary file + rename).
 */
import { VhdError, asVhdError } from './errors.js';
import {
  BITMAP_SIZE,
  BLOCK_SIZE,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  FOOTER_SIZE,
  HEADER_SIZE,
  SECTORS_PER_BLOCK,
  UNUSED,
  allSet,
  batBytes,
  decodeBat,
  decodeFooter,
  decodeHeader,
  type Footer,
  type Header,
} from './format.js';
import { FULL_BITMAP } from './io.js';
import { Staging } from './staging.js';
import { Vhd } from './vhd.js';

export type ImportSource = AsyncIterable<unknown>;

export interface ImportResult {
  /** Blocks written into the new file (input blocks and kept target blocks). */
  blocks: number;
  /** Bytes consumed from the input. */
  bytes: number;
}

/** Largest BAT accepted from a stream (2 TiB of 2 MiB blocks, with room for blktap's preallocation). */
const MAX_INPUT_BAT_ENTRIES = 4 * 1024 * 1024;

/** Pull-based reader of exact byte counts from an async iterable of chunks. */
export class ByteSource {
  private it: AsyncIterator<unknown>;
  private chunks: Buffer[] = [];
  private head = 0;
  private avail = 0;
  private ended = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(input: ImportSource) {
    this.it = input[Symbol.asyncIterator]();
  }

  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    let r: IteratorResult<unknown>;
    try {
      r = await this.it.next();
    } catch (e) {
      this.ended = true;
      const code = (e as NodeJS.ErrnoException)?.code;
      const aborted = code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET' || (e as Error)?.message === 'aborted';
      throw new VhdError(aborted ? 'TRUNCATED' : 'BAD_INPUT', `input failed at byte ${this.position + this.avail}: ${(e as Error)?.message ?? e}`, { cause: e });
    }
    if (r.done) {
      this.ended = true;
      return false;
    }
    const v = r.value;
    const c = Buffer.isBuffer(v)
      ? v
      : v instanceof Uint8Array
        ? Buffer.from(v.buffer, v.byteOffset, v.byteLength)
        : typeof v === 'string'
          ? Buffer.from(v, 'latin1')
          : null;
    if (!c) throw new VhdError('BAD_INPUT', 'input chunks must be Buffers');
    if (c.length) {
      this.chunks.push(c);
      this.avail += c.length;
    }
    return true;
  }

  private async need(n: number, what: string): Promise<void> {
    while (this.avail < n) {
      if (!(await this.pull())) {
        throw new VhdError('TRUNCATED', `input ended at byte ${this.position + this.avail} while reading ${what} (${n} bytes at ${this.position})`);
      }
    }
  }

  /** Exactly n bytes (TRUNCATED if the input ends first). */
  async read(n: number, what: string): Promise<Buffer> {
    await this.need(n, what);
    if (n === 0) return Buffer.alloc(0);
    return this.take(n, null);
  }

  /**
   * Exactly n bytes, like read(), without allocating: the result is a view of
   * one input chunk when a chunk holds all n bytes, else of `scratch` (at
   * least n bytes, the caller's to reuse), into which they are copied. Either
   * way it is only valid until the caller reuses `scratch` (the next
   * readReusing with it): write it out before.
   */
  async readReusing(n: number, what: string, scratch: Buffer): Promise<Buffer> {
    if (scratch.length < n) throw new VhdError('INVALID_ARGUMENT', `scratch buffer of ${scratch.length} bytes for ${n}`);
    await this.need(n, what);
    if (n === 0) return scratch.subarray(0, 0);
    return this.take(n, scratch);
  }

  /** Consume n (> 0, available) bytes: a view of the first chunk, or a copy into `into` (or a new Buffer). */
  private take(n: number, into: Buffer | null): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
    } else {
      out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const c = this.chunks[0];
        const take = Math.min(c.length - this.head, n - got);
        c.copy(out, got, this.head, this.head + take);
        got += take;
        this.head += take;
        if (this.head === c.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
    }
    this.avail -= n;
    this.position += n;
    return out;
  }

  /** Discard n bytes. */
  async skip(n: number, what: string): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.avail === 0) await this.need(1, what);
      const c = this.chunks[0];
      const take = Math.min(c.length - this.head, left);
      this.head += take;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
      this.avail -= take;
      this.position += take;
      left -= take;
    }
  }

  /** Read to the end, returning how many bytes were left and the last `keep` of them. */
  async drain(keep: number): Promise<{ count: number; tail: Buffer }> {
    let count = 0;
    let tail: Buffer = Buffer.alloc(0);
    for (;;) {
      while (this.chunks.length) {
        const c = this.chunks.shift()!.subarray(this.head);
        this.head = 0;
        count += c.length;
        if (keep) tail = c.length >= keep ? c.subarray(c.length - keep) : Buffer.concat([tail, c]).subarray(-keep);
      }
      this.avail = 0;
      if (!(await this.pull())) break;
    }
    this.position += count;
    return { count, tail: Buffer.from(tail) };
  }

  /** Stop the input early (destroys a Readable). */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.it.return?.().catch(() => undefined);
  }
}

function inputFooter(b: Buffer): Footer {
  try {
    return decodeFooter(b);
  } catch (e) {
    throw new VhdError('BAD_INPUT', `input is not a VHD: ${(e as Error).message}`);
  }
}

function inputHeader(b: Buffer): Header {
  try {
    return decodeHeader(b);
  } catch (e) {
    throw new VhdError('BAD_INPUT', `input VHD header: ${(e as Error).message}`);
  }
}

async function withTarget<T>(targetPath: string, input: ImportSource, body: (target: Vhd, src: ByteSource, stage: Staging) => Promise<T>): Promise<T> {
  const target = await Vhd.open(targetPath, { readOnly: true });
  const src = new ByteSource(input);
  let stage: Staging | null = null;
  try {
    stage = await Staging.create(target);
    return await body(target, src, stage);
  } catch (e) {
    await stage?.abort();
    await src.close();
    throw asVhdError(e, target.path);
  } finally {
    await target.close();
  }
}

/**
 * Import a VHD stream (dynamic: replaces the contents; differencing: its
 * blocks overwrite) into the existing VHD at `targetPath`. The input's
 * virtual size must not exceed the target's.
 */
export async function importVhd(targetPath: string, input: ImportSource, opts: ImportOptions = {}): Promise<ImportResult> {
  return withTarget(targetPath, input, async (target, src, stage) => {
    const f = inputFooter(await src.read(FOOTER_SIZE, 'the footer copy'));
    if (f.diskType !== DISK_DYNAMIC && f.diskType !== DISK_DIFFERENCING) {
      throw new VhdError('BAD_INPUT', `input VHD of type ${f.diskType}: only dynamic and differencing streams are accepted`);
    }
    if (f.currentSize > target.virtualSize) {
      throw new VhdError('SIZE_MISMATCH', `input of ${f.currentSize} bytes larger than the target (${target.virtualSize})`);
    }
    if (f.dataOffset === null || f.dataOffset < FOOTER_SIZE) throw new VhdError('BAD_INPUT', 'bad header offset in the input footer');
    await src.skip(f.dataOffset - src.position, 'up to the header');
    const h = inputHeader(await src.read(HEADER_SIZE, 'the dynamic header'));
    if (h.blockSize !== BLOCK_SIZE) throw new VhdError('UNSUPPORTED', `input block size ${h.blockSize} (only 2 MiB)`);
    const inBlocks = Math.ceil(f.currentSize / BLOCK_SIZE);
    if (h.maxTableEntries < inBlocks || h.maxTableEntries > MAX_INPUT_BAT_ENTRIES) {
      throw new VhdError('BAD_INPUT', `input BAT of ${h.maxTableEntries} entries for ${inBlocks} blocks`);
    }
    if (h.tableOffset < src.position) throw new VhdError('BAD_INPUT', 'input BAT overlaps the header');
    await src.skip(h.tableOffset - src.position, 'up to the BAT');
    const bat = decodeBat(await src.read(batBytes(h.maxTableEntries), 'the BAT'), h.maxTableEntries);
    const entries: [number, number][] = [];
    for (let i = 0; i < bat.length; i++) {
      if (bat[i] === UNUSED) continue;
      if (i >= inBlocks) throw new VhdError('BAD_INPUT', `input block ${i} beyond the virtual size`);
      entries.push([bat[i] * 512, i]);
    }
    entries.sort((a, b) => a[0] - b[0]);
    let min = src.position;
    for (const [off, i] of entries) {
      if (off < min) throw new VhdError('BAD_INPUT', `input block ${i} at ${off} overlaps the metadata or another block`);
      min = off + BITMAP_SIZE + BLOCK_SIZE;
    }
    const replace = f.diskType === DISK_DYNAMIC;
    // a dynamic stream replaces the whole contents; a differencing one the sectors it carries
    if (replace) await opts.onChange?.(0, f.currentSize);
    // one buffer for every block that spans input chunks: each block is written
    // (awaited) before the next is read, and Staging keeps no reference to it
    const scratch = Buffer.allocUnsafeSlow(BITMAP_SIZE + BLOCK_SIZE);
    for (const [off, i] of entries) {
      await src.skip(off - src.position, `up to block ${i}`);
      let raw = await src.readReusing(BITMAP_SIZE + BLOCK_SIZE, `block ${i}`, scratch);
      if (raw.buffer !== scratch.buffer && !allSet(raw.subarray(0, BITMAP_SIZE), 0, SECTORS_PER_BLOCK)) {
        // absent sectors get zeroed: don't touch the caller's buffer
        raw.copy(scratch);
        raw = scratch;
      }
      const bitmap = raw.subarray(0, BITMAP_SIZE);
      const data = raw.subarray(BITMAP_SIZE);
      if (!replace && opts.onChange) await reportSectors(bitmap, i, opts.onChange);
      if (replace) await stage.putReplace(i, bitmap, data);
      else await stage.putOverlay(i, bitmap, data);
    }
    const { tail } = await src.drain(FOOTER_SIZE);
    if (tail.length < FOOTER_SIZE) throw new VhdError('TRUNCATED', 'input ends without its trailing footer');
    const f2 = inputFooter(tail);
    if (f2.uuid !== f.uuid || f2.currentSize !== f.currentSize || f2.diskType !== f.diskType) {
      throw new VhdError('BAD_INPUT', 'the trailing footer does not match the footer copy');
    }
    await stage.commit(replace ? f.currentSize : 0);
    return { blocks: stage.written, bytes: src.position };
  });
}

export interface ImportOptions {
  /** told of each range of the virtual disk the import will write, before it is written (64 KiB
   * granularity for a differencing stream): for changed block tracking */
  onChange?: (offset: number, length: number) => Promise<void>;
}

/** The 64 KiB runs of block `index` whose sectors the bitmap carries (128 sectors, 16 bitmap bytes
 * each), adjacent runs reported as one range. */
async function reportSectors(bitmap: Buffer, index: number, onChange: (offset: number, length: number) => Promise<void>): Promise<void> {
  const RUN = 64 * 1024;
  const bytesPerRun = RUN / 512 / 8;
  let start = -1;
  for (let r = 0; r <= BLOCK_SIZE / RUN; r++) {
    let any = false;
    if (r < BLOCK_SIZE / RUN) for (let k = r * bytesPerRun; k < (r + 1) * bytesPerRun && !any; k++) any = bitmap[k] !== 0;
    if (any && start < 0) start = r;
    if (!any && start >= 0) {
      await onChange(index * BLOCK_SIZE + start * RUN, (r - start) * RUN);
      start = -1;
    }
  }
}

/**
 * Import `length` raw bytes (virtual offsets 0..length) into the existing VHD
 * at `targetPath`; the target's contents beyond `length` are kept. The input
 * must hold exactly `length` bytes.
 */
export async function importRaw(targetPath: string, input: ImportSource, length: number): Promise<ImportResult> {
  return withTarget(targetPath, input, async (target, src, stage) => {
    if (!Number.isSafeInteger(length) || length < 0) throw new VhdError('INVALID_ARGUMENT', `bad length ${length}`);
    if (length > target.virtualSize) throw new VhdError('SIZE_MISMATCH', `${length} bytes do not fit in ${target.virtualSize}`);
    const count = Math.ceil(length / BLOCK_SIZE);
    // reused for every block that spans input chunks: each is written (awaited) before the next read
    const scratch = Buffer.allocUnsafeSlow(Math.min(BLOCK_SIZE, length));
    for (let blk = 0; blk < count; blk++) {
      const n = Math.min(BLOCK_SIZE, length - blk * BLOCK_SIZE);
      const chunk = await src.readReusing(n, `block ${blk}`, scratch);
      let data: Buffer;
      if (n < BLOCK_SIZE) {
        // last partial block: the rest keeps the target's current contents
        data = Buffer.alloc(BLOCK_SIZE);
        const visible = Math.min(BLOCK_SIZE, target.virtualSize - blk * BLOCK_SIZE);
        await target.readInto(data, 0, blk * BLOCK_SIZE, visible);
        chunk.copy(data, 0);
      } else {
        data = chunk;
      }
      await stage.putReplace(blk, FULL_BITMAP, data);
    }
    const extra = await src.drain(0);
    if (extra.count > 0) throw new VhdError('BAD_INPUT', `input longer than the declared ${length} bytes`);
    await stage.commit(length);
    return { blocks: stage.written, bytes: src.position };
  });
}
