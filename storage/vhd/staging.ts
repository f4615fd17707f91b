/**
 * Safe replacement of a VHD file's contents (used by the imports).
 *
 * Imports never write into the target. They build a new file next to it,
 * `.<name>.import-<12 hex digits>.tmp`, with the target's identity (footer: uuid,
 * sizes, hidden flag, timestamps; header: parent uuid/timestamp/name and
 * locators), put the incoming blocks into it as they stream in, and only once
 * the whole input has been read and validated copy over the target's own
 * blocks that the input does not replace, write BAT/batmap/footer, fsync, and
 * rename() it over the target (then fsync the directory). Any failure before
 * the rename (bad or short input, I/O error, crash) leaves the target as it
 * was; abort() removes the temporary file, on every failure path. After a
 * crash it is left as a dot-file that SM's `*.vhd` scans ignore and that
 * isStagingName() recognises, for removal at start-up.
 *
 * Consequences: the target's inode changes, so a process holding the old
 * file open (an attached tapdisk) keeps seeing the old contents, and other
 * hard links to the target keep the old contents; callers import into
 * detached VDIs. Free space needed: the new data plus the target's blocks
 * that are kept.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { VhdError, asVhdError } from './errors.js';
import {
  BAT_OFFSET,
  BLOCK_SIZE,
  FOOTER_SIZE,
  HEADER_OFFSET,
  SECTOR,
  SECTORS_PER_BLOCK,
  UNUSED,
  allSet,
  batmapChecksumBytes,
  batmapHeaderOffset,
  byteSum,
  encodeBat,
  encodeBatmapHeader,
  encodeFooter,
  runEnd,
  setBit,
  testBit,
  type BatmapHeader,
  type Footer,
  type Header,
} from './format.js';
import { FULL_BITMAP, ZERO_BLOCK, isZero, writeAll } from './io.js';
import { alignedBlockSector, blockEnd, buildMetadata } from './layout.js';
import { Vhd, zeroAbsent } from './vhd.js';

/** Staging files are `.<target file name>.import-<12 hex digits>.tmp`, next to their target. */
export const STAGING_SUFFIX = '.tmp';
const STAGING_NAME = /^\..+\.import-[0-9a-f]{12}\.tmp$/;
/** Whether a directory entry is a staging file (leftovers of a killed process: safe to remove). */
export const isStagingName = (name: string): boolean => STAGING_NAME.test(name);
const stagingName = (target: string): string => `.${target}.import-${randomBytes(6).toString('hex')}${STAGING_SUFFIX}`;

export class Staging {
  readonly tmpPath: string;
  private fh: FileHandle | null;
  private readonly footer: Footer;
  private readonly header: Header;
  private readonly batmapHeader: BatmapHeader;
  private readonly bat: Uint32Array;
  private readonly batmap: Buffer;
  private eod: number;
  private staged = new Set<number>();
  /** Blocks written into the new file. */
  written = 0;

  private constructor(readonly target: Vhd, tmpPath: string, fh: FileHandle, footer: Footer, header: Header, bh: BatmapHeader, metaEnd: number) {
    this.tmpPath = tmpPath;
    this.fh = fh;
    this.footer = footer;
    this.header = header;
    this.batmapHeader = bh;
    this.bat = new Uint32Array(header.maxTableEntries).fill(UNUSED);
    this.batmap = Buffer.alloc(bh.sizeSectors * 512);
    this.eod = metaEnd;
  }

  /** Start a replacement of `target` (opened read-only, with its parents). */
  static async create(target: Vhd): Promise<Staging> {
    if (target.diskType === 'fixed') throw new VhdError('UNSUPPORTED', 'import into a fixed VHD', { path: target.path });
    const id = target.identity();
    const footer: Footer = { ...id.footer, dataOffset: HEADER_OFFSET };
    const header: Header = { ...id.header!, tableOffset: BAT_OFFSET };
    const meta = buildMetadata(footer, header, { locators: await target.locatorData() });
    const tmpPath = join(dirname(target.path), stagingName(basename(target.path)));
    let fh: FileHandle;
    try {
      fh = await open(tmpPath, 'wx');
    } catch (e) {
      throw asVhdError(e, tmpPath);
    }
    const st = new Staging(target, tmpPath, fh, footer, meta.header, meta.batmapHeader, meta.metaEnd);
    try {
      await writeAll(fh, [meta.image], 0);
    } catch (e) {
      await st.abort();
      throw asVhdError(e, tmpPath);
    }
    return st;
  }

  private get handle(): FileHandle {
    if (!this.fh) throw new VhdError('CLOSED', 'staging file closed', { path: this.tmpPath });
    return this.fh;
  }

  /** Put block `blk` (bitmap + 2 MiB) into the new file; a second put of the same block overwrites it. */
  async put(blk: number, bitmap: Buffer, data: Buffer): Promise<void> {
    if (blk < 0 || blk >= this.bat.length) throw new VhdError('BAD_INPUT', `block ${blk} outside the target's BAT`, { path: this.target.path });
    if (data.length !== BLOCK_SIZE) throw new VhdError('INVALID_ARGUMENT', 'blocks are 2 MiB');
    const full = bitmap === FULL_BITMAP || allSet(bitmap, 0, SECTORS_PER_BLOCK);
    if (this.bat[blk] !== UNUSED) {
      await writeAll(this.handle, [bitmap, data], this.bat[blk] * 512);
    } else {
      const start = this.eod;
      const s = alignedBlockSector(start);
      await writeAll(this.handle, [ZERO_BLOCK.subarray(0, s * 512 - start), bitmap, data], start);
      this.bat[blk] = s;
      this.eod = blockEnd(s);
      this.written++;
    }
    if (full) setBit(this.batmap, blk);
    this.staged.add(blk);
  }

  /**
   * A block of a "replace" input (dynamic VHD, raw): the block becomes exactly
   * this data; sectors absent from `bitmap` read as zeros.
   */
  async putReplace(blk: number, bitmap: Buffer, data: Buffer): Promise<void> {
    const full = bitmap === FULL_BITMAP || allSet(bitmap, 0, SECTORS_PER_BLOCK);
    if (!full) zeroAbsent(bitmap, data);
    const below = this.target.ancestorsHaveBlock(blk);
    if (!below && isZero(data)) {
      this.staged.add(blk); // reads as zeros without a block
      return;
    }
    await this.put(blk, full || below ? FULL_BITMAP : Buffer.from(bitmap), data);
  }

  /** A block of an "overlay" input (differencing VHD): present sectors overwrite, absent ones keep the target's. */
  async putOverlay(blk: number, bitmap: Buffer, data: Buffer): Promise<void> {
    const full = bitmap === FULL_BITMAP || allSet(bitmap, 0, SECTORS_PER_BLOCK);
    if (full) return this.put(blk, FULL_BITMAP, data);
    const own = this.target.hasBlock(blk) ? await this.target.readBlock(blk) : null;
    if (!own) {
      zeroAbsent(bitmap, data);
      return this.put(blk, Buffer.from(bitmap), data);
    }
    const merged = Buffer.from(own.data);
    const mergedMap = Buffer.from(own.bitmap);
    for (let i = 0; i < mergedMap.length; i++) mergedMap[i] |= bitmap[i];
    for (let s = 0; s < SECTORS_PER_BLOCK; ) {
      const r = runEnd(bitmap, s, SECTORS_PER_BLOCK);
      if (testBit(bitmap, s)) data.copy(merged, s * SECTOR, s * SECTOR, r * SECTOR);
      s = r;
    }
    return this.put(blk, mergedMap, merged);
  }

  /**
   * Finish: blocks not staged are either dropped (inside `replacedBytes`: the
   * input replaced them, masked with zeros when a parent has data there) or
   * copied from the target. Then metadata, fsync, rename over the target.
   */
  async commit(replacedBytes: number): Promise<void> {
    const t = this.target;
    const count = Math.min(t.blockCount, this.bat.length);
    for (let blk = 0; blk < count; blk++) {
      if (this.staged.has(blk)) continue;
      if (blk * BLOCK_SIZE < replacedBytes) {
        if (t.ancestorsHaveBlock(blk)) await this.put(blk, FULL_BITMAP, ZERO_BLOCK);
        continue;
      }
      const own = await t.readBlock(blk);
      if (own) await this.put(blk, own.bitmap, own.data);
    }
    const fh = this.handle;
    // BAT, batmap, footers
    const batBuf = encodeBat(this.bat);
    await writeAll(fh, [batBuf], this.header.tableOffset);
    const bh = this.batmapHeader;
    bh.checksum = ~byteSum(this.batmap, 0, Math.min(batmapChecksumBytes(this.footer.currentSize), this.batmap.length)) >>> 0;
    await writeAll(fh, [this.batmap], bh.offset);
    await writeAll(fh, [encodeBatmapHeader(bh)], batmapHeaderOffset(this.header));
    const footer = encodeFooter(this.footer);
    await writeAll(fh, [footer], 0);
    await writeAll(fh, [footer], this.eod);
    await fh.truncate(this.eod + FOOTER_SIZE);
    await fh.sync();
    this.fh = null;
    await fh.close();
    await rename(this.tmpPath, t.path);
    try {
      const dir = await open(dirname(t.path), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch {
      /* best effort */
    }
  }

  /** Drop the temporary file. Idempotent. */
  async abort(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
    await unlink(this.tmpPath).catch(() => undefined);
  }
}
