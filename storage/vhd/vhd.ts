/**
 * One VHD file (fixed, dynamic or differencing), opened with its parent
 * chain for reads. Byte-granular read/write (unaligned allowed), block
 * allocation the blktap way, the hidden flag, and the block-level helpers
 * used by chain.ts, stream-export.ts and stream-import.ts.
 */
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { VhdError, asVhdError } from './errors.js';
import {
  BATMAP_HEADER_SIZE,
  BATMAP_VERSION,
  BITMAP_SIZE,
  BLOCK_SIZE,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  DISK_FIXED,
  FOOTER_SIZE,
  HEADER_SIZE,
  MAX_CHAIN_SIZE,
  SECTOR,
  SECTORS_PER_BLOCK,
  UNUSED,
  allSet,
  batBytes,
  batmapChecksumBytes,
  batmapHeaderOffset,
  byteSum,
  dateOfVhdTime,
  decodeBat,
  decodeBatmapHeader,
  decodeFooter,
  decodeHeader,
  encodeBat,
  encodeBatmapHeader,
  encodeFooter,
  encodeHeader,
  locatorSpace,
  newFooter,
  newHeader,
  roundVhdSize,
  runEnd,
  setBit,
  setBits,
  testBit,
  uuidToBytes,
  vhdTime,
  type BatmapHeader,
  type Footer,
  type Header,
} from './format.js';
import { FULL_BITMAP, Mutex, ZERO_BLOCK, isZero, readAt, readExact, writeAll } from './io.js';
import { alignedBlockSector, blockEnd, buildMetadata } from './layout.js';
import { buildLocators, canonicalPath, resolveParent, type LocatorData } from './locators.js';

export interface VhdOpenOptions {
  /** Open the file read-only (default false). Parents are always read-only. */
  readOnly?: boolean;
  /** Open the parent chain too (default true); needed to read a differencing disk. */
  parents?: boolean;
}

export interface VhdCreateOptions {
  /** Virtual size in bytes, rounded up to 2 MiB (SM rules). Defaults to the parent's size. */
  size?: number;
  /** The disk's uuid (SM: the VDI uuid). */
  uuid: string;
  /** Path of the parent VHD: creates a differencing disk. */
  parent?: string;
  /** Creation time (default now). */
  timestamp?: Date | number;
  /** Replace an existing file (default: fail with IO/EEXIST). */
  overwrite?: boolean;
}

export interface RawBlock {
  /** The sector bitmap (FULL_BITMAP for fixed disks). */
  bitmap: Buffer;
  /** 2 MiB of data. */
  data: Buffer;
}

const BITMAP_CACHE_MAX = 16384; // 8 MiB of bitmaps per open file

export class Vhd {
  /** Canonical absolute path. */
  readonly path: string;
  readonly readOnly: boolean;
  private fh: FileHandle | null;
  private footer!: Footer;
  private header: Header | null = null;
  /** BAT in sectors, one entry per BAT slot (maxTableEntries). */
  private bat: Uint32Array = new Uint32Array(0);
  private batmapHeader: BatmapHeader | null = null;
  /** The blktap batmap, only when present and valid (then kept up to date). */
  private batmap: Buffer | null = null;
  private batmapSum = 0;
  private batmapSumBytes = 0;
  private bitmaps = new Map<number, Buffer>();
  private fileSize = 0;
  /** End of data: where the trailing footer lives. */
  private eod = 0;
  private _parent: Vhd | null = null;
  private _parentPath: string | null = null;
  private mutex = new Mutex();
  private dirtyBat: [number, number] | null = null;
  private dirtyBatmap: [number, number] | null = null;
  private dirtyFooter = false;

  private constructor(path: string, fh: FileHandle, readOnly: boolean) {
    this.path = path;
    this.fh = fh;
    this.readOnly = readOnly;
  }

  /* ---------------------------------------------------------------- */
  /* opening and creating                                              */
  /* ---------------------------------------------------------------- */

  static async open(path: string, opts: VhdOpenOptions = {}): Promise<Vhd> {
    return Vhd.openAt(path, opts, 1);
  }

  private static async openAt(path: string, opts: VhdOpenOptions, depth: number): Promise<Vhd> {
    if (depth > MAX_CHAIN_SIZE) {
      throw new VhdError('CHAIN_TOO_LONG', `chain longer than ${MAX_CHAIN_SIZE}`, { path });
    }
    const abs = await canonicalPath(path);
    let fh: FileHandle;
    try {
      fh = await open(abs, opts.readOnly ? 'r' : 'r+');
    } catch (e) {
      throw asVhdError(e, abs);
    }
    const vhd = new Vhd(abs, fh, !!opts.readOnly);
    try {
      await vhd.load();
      if (vhd.isDifferencing) {
        vhd._parentPath = await resolveParent(abs, await vhd.readLocators(), vhd.header!.parentName);
        if (opts.parents !== false) {
          if (!vhd._parentPath) {
            throw new VhdError('PARENT_NOT_FOUND', `parent ${vhd.header!.parentName || vhd.parentUuid} not found`, { path: abs });
          }
          const parent = await Vhd.openAt(vhd._parentPath, { readOnly: true, parents: true }, depth + 1);
          vhd._parent = parent;
          if (vhd.parentUuid && parent.uuid !== vhd.parentUuid) {
            throw new VhdError('PARENT_MISMATCH', `parent ${parent.path} has uuid ${parent.uuid}, expected ${vhd.parentUuid}`, { path: abs });
          }
        }
      }
      return vhd;
    } catch (e) {
      await vhd.close().catch(() => undefined);
      throw asVhdError(e, abs);
    }
  }

  /**
   * Create a dynamic disk, or a differencing disk when `parent` is given, laid
   * out as blktap does; returns it opened read-write (with its chain).
   */
  static async create(path: string, opts: VhdCreateOptions): Promise<Vhd> {
    const abs = await canonicalPath(path);
    uuidToBytes(opts.uuid);
    const timestamp = vhdTime(opts.timestamp ?? Date.now());
    let size: number;
    let parentInfo: { uuid: string; path: string; mtime: number } | null = null;
    let parent: Vhd | null = null;
    try {
      if (opts.parent !== undefined) {
        parent = await Vhd.open(opts.parent, { readOnly: true });
        if (parent.chain().length + 1 > MAX_CHAIN_SIZE) {
          throw new VhdError('CHAIN_TOO_LONG', `a child of ${parent.path} would make a chain longer than ${MAX_CHAIN_SIZE}`, { path: abs });
        }
        size = opts.size === undefined ? parent.virtualSize : roundVhdSize(opts.size);
        if (size < parent.virtualSize) {
          throw new VhdError('SIZE_MISMATCH', `child size ${size} is smaller than the parent's ${parent.virtualSize}`, { path: abs });
        }
        const st = await stat(parent.path);
        parentInfo = { uuid: parent.uuid, path: parent.path, mtime: st.mtimeMs };
      } else {
        if (opts.size === undefined) throw new VhdError('INVALID_SIZE', 'size is required without a parent', { path: abs });
        size = roundVhdSize(opts.size);
      }
      const footer = newFooter({ size, uuid: opts.uuid, type: parentInfo ? DISK_DIFFERENCING : DISK_DYNAMIC, timestamp });
      const header = newHeader({ size });
      let locators: LocatorData[] = [];
      if (parentInfo) {
        header.parentUuid = parentInfo.uuid;
        header.parentTimestamp = vhdTime(parentInfo.mtime);
        header.parentName = basename(parentInfo.path);
        locators = buildLocators(abs, parentInfo.path);
      }
      const meta = buildMetadata(footer, header, { locators });
      let fh: FileHandle;
      try {
        fh = await open(abs, opts.overwrite ? 'w' : 'wx');
      } catch (e) {
        throw asVhdError(e, abs);
      }
      try {
        await writeAll(fh, [meta.image, encodeFooter(footer)], 0);
        await fh.sync();
      } catch (e) {
        await fh.close().catch(() => undefined);
        await unlink(abs).catch(() => undefined);
        throw asVhdError(e, abs);
      }
      await fh.close();
      if (!parent) return await Vhd.open(abs, { readOnly: false });
      // reuse the parent chain we already hold
      const child = await Vhd.open(abs, { readOnly: false, parents: false });
      if (child._parentPath !== parent.path) {
        await child.close();
        return await Vhd.open(abs, { readOnly: false });
      }
      child._parent = parent;
      parent = null;
      return child;
    } finally {
      await parent?.close();
    }
  }

  private async load(): Promise<void> {
    const fh = this.fh!;
    const size = (await fh.stat()).size;
    this.fileSize = size;
    if (size < FOOTER_SIZE) throw new VhdError('TRUNCATED', `file too small for a VHD (${size} bytes)`, { path: this.path });
    let footerAtEof = true;
    try {
      this.footer = decodeFooter(await readAt(fh, size - FOOTER_SIZE, FOOTER_SIZE, this.path));
    } catch (e) {
      if (!(e instanceof VhdError)) throw e;
      // blktap falls back on the copy at offset 0 (a crash while allocating)
      let backup: Footer | null = null;
      try {
        backup = decodeFooter(await readAt(fh, 0, FOOTER_SIZE, this.path));
      } catch {
        /* no usable copy */
      }
      if (!backup || (backup.diskType !== DISK_DYNAMIC && backup.diskType !== DISK_DIFFERENCING)) throw e;
      this.footer = backup;
      footerAtEof = false;
    }
    const f = this.footer;
    if (f.diskType !== DISK_FIXED && f.diskType !== DISK_DYNAMIC && f.diskType !== DISK_DIFFERENCING) {
      throw new VhdError('UNSUPPORTED', `disk type ${f.diskType}`, { path: this.path });
    }
    if (f.creatorApp.startsWith('tap') && f.creatorVersion === 0x00000001) {
      throw new VhdError('UNSUPPORTED', 'blktap 0.1 VHD (little-endian bitmaps)', { path: this.path });
    }
    if (f.currentSize <= 0 || f.currentSize % SECTOR !== 0) {
      throw new VhdError('BAD_FOOTER', `bad current size ${f.currentSize}`, { path: this.path });
    }
    if (f.diskType === DISK_FIXED) {
      if (size < f.currentSize + FOOTER_SIZE) throw new VhdError('TRUNCATED', `fixed disk of ${f.currentSize} bytes in a ${size}-byte file`, { path: this.path });
      this.eod = f.currentSize;
      return;
    }
    if (f.dataOffset === null || f.dataOffset % SECTOR !== 0) throw new VhdError('BAD_FOOTER', 'bad data offset', { path: this.path });
    if (f.dataOffset + HEADER_SIZE > size) throw new VhdError('TRUNCATED', 'file ends before the dynamic header', { path: this.path });
    const h = decodeHeader(await readAt(fh, f.dataOffset, HEADER_SIZE, this.path));
    this.header = h;
    if (h.blockSize !== BLOCK_SIZE) throw new VhdError('UNSUPPORTED', `block size ${h.blockSize} (only 2 MiB)`, { path: this.path });
    if (h.maxTableEntries < this.blockCount) throw new VhdError('BAD_HEADER', `BAT of ${h.maxTableEntries} entries for ${this.blockCount} blocks`, { path: this.path });
    if (h.tableOffset % SECTOR !== 0) throw new VhdError('BAD_HEADER', 'unaligned BAT', { path: this.path });
    const batEnd = h.tableOffset + batBytes(h.maxTableEntries);
    if (batEnd > size) throw new VhdError('TRUNCATED', 'file ends inside the BAT', { path: this.path });
    this.bat = decodeBat(await readAt(fh, h.tableOffset, h.maxTableEntries * 4, this.path), h.maxTableEntries);
    let metaEnd = Math.max(f.dataOffset + HEADER_SIZE, batEnd);

    // blktap's batmap: trusted only when present, of the current version, and its checksum matches
    if (f.creatorApp.startsWith('tap') && f.creatorVersion >= 0x00010002) {
      const bhOff = batmapHeaderOffset(h);
      if (bhOff + BATMAP_HEADER_SIZE <= size) {
        const bh = decodeBatmapHeader(await readAt(fh, bhOff, BATMAP_HEADER_SIZE, this.path));
        if (bh) {
          this.batmapHeader = bh;
          metaEnd = Math.max(metaEnd, bhOff + BATMAP_HEADER_SIZE);
          const mapBytes = bh.sizeSectors * SECTOR;
          if (bh.offset + mapBytes <= size && bh.sizeSectors > 0 && bh.offset >= bhOff + BATMAP_HEADER_SIZE) {
            metaEnd = Math.max(metaEnd, bh.offset + mapBytes);
            const map = await readAt(fh, bh.offset, mapBytes, this.path);
            const csBytes = Math.min(batmapChecksumBytes(f.currentSize), mapBytes);
            const sum = byteSum(map, 0, csBytes);
            if (bh.version === BATMAP_VERSION && (~sum >>> 0) === bh.checksum) {
              this.batmap = map;
              this.batmapSum = sum;
              this.batmapSumBytes = csBytes;
            }
          }
        }
      }
    }
    for (const l of h.locators) {
      if (l.code === 0) continue;
      metaEnd = Math.max(metaEnd, l.dataOffset + locatorSpace(l));
    }

    // BAT entries must point at whole blocks inside the file, clear of the header and BAT
    const limit = footerAtEof ? size - FOOTER_SIZE : size;
    let eod = metaEnd;
    for (let i = 0; i < h.maxTableEntries; i++) {
      const e = this.bat[i];
      if (e === UNUSED) continue;
      const start = e * SECTOR;
      const end = blockEnd(e);
      if (start < f.dataOffset + HEADER_SIZE || (start < batEnd && end > h.tableOffset)) {
        throw new VhdError('BAD_BAT', `block ${i} at sector ${e} overlaps the metadata`, { path: this.path });
      }
      if (end > limit) {
        throw new VhdError('TRUNCATED', `block ${i} (bytes ${start}..${end}) lies beyond the end of the file (${size})`, { path: this.path });
      }
      if (end > eod) eod = end;
    }
    if (eod + (footerAtEof ? FOOTER_SIZE : 0) > size) throw new VhdError('TRUNCATED', 'file shorter than its metadata', { path: this.path });
    this.eod = eod;
  }

  private async readLocators(): Promise<LocatorData[]> {
    const out: LocatorData[] = [];
    for (const l of this.header!.locators) {
      if (l.code === 0 || l.dataLength === 0) continue;
      const space = locatorSpace(l);
      if (l.dataLength > Math.max(space, 65536) || l.dataOffset + l.dataLength > this.fileSize) continue;
      out.push({ code: l.code, data: await readAt(this.fh!, l.dataOffset, l.dataLength, this.path) });
    }
    return out;
  }

  /** @internal Raw locator data (for copying a header into a new file). */
  locatorData(): Promise<LocatorData[]> {
    return this.isDynamicLike ? this.readLocators() : Promise.resolve([]);
  }

  /* ---------------------------------------------------------------- */
  /* properties                                                        */
  /* ---------------------------------------------------------------- */

  get uuid(): string {
    return this.footer.uuid;
  }
  get virtualSize(): number {
    return this.footer.currentSize;
  }
  get diskType(): 'fixed' | 'dynamic' | 'differencing' {
    return this.footer.diskType === DISK_FIXED ? 'fixed' : this.footer.diskType === DISK_DYNAMIC ? 'dynamic' : 'differencing';
  }
  get isDifferencing(): boolean {
    return this.footer.diskType === DISK_DIFFERENCING;
  }
  private get isDynamicLike(): boolean {
    return this.footer.diskType !== DISK_FIXED;
  }
  get hidden(): boolean {
    return this.footer.hidden !== 0;
  }
  get parentUuid(): string | null {
    return this.isDifferencing ? this.header!.parentUuid : null;
  }
  get parentName(): string | null {
    return this.isDifferencing ? this.header!.parentName : null;
  }
  get parentTimestamp(): Date | null {
    return this.isDifferencing ? dateOfVhdTime(this.header!.parentTimestamp) : null;
  }
  /** Resolved (canonical) parent path, or null (no parent, or not found). */
  get parentPath(): string | null {
    return this._parentPath;
  }
  /** The opened parent (null unless opened with parents). */
  get parent(): Vhd | null {
    return this._parent;
  }
  get creationTime(): Date {
    return dateOfVhdTime(this.footer.timestamp);
  }
  get blockSize(): number {
    return BLOCK_SIZE;
  }
  /** Number of 2 MiB blocks covering the virtual size. */
  get blockCount(): number {
    return Math.ceil(this.footer.currentSize / BLOCK_SIZE);
  }
  /** This file and its opened ancestors, leaf first. */
  chain(): Vhd[] {
    const out: Vhd[] = [];
    for (let v: Vhd | null = this; v; v = v._parent) out.push(v);
    return out;
  }

  /** Bytes used by the file: end of data plus the footer (vhd-util query -s). */
  physicalSize(): number {
    return this.isDynamicLike ? this.eod + FOOTER_SIZE : this.fileSize;
  }

  /** Indices of the blocks allocated in this file (not its parents). */
  allocatedBlocks(): number[] {
    if (!this.isDynamicLike) return Array.from({ length: this.blockCount }, (_, i) => i);
    const out: number[] = [];
    const n = Math.min(this.bat.length, this.blockCount);
    for (let i = 0; i < n; i++) if (this.bat[i] !== UNUSED) out.push(i);
    return out;
  }

  hasBlock(index: number): boolean {
    if (!this.isDynamicLike) return index >= 0 && index < this.blockCount;
    return index >= 0 && index < this.bat.length && this.bat[index] !== UNUSED;
  }

  /** True when block `index` is allocated here and known (batmap, fixed disk) to hold every sector. */
  knownFull(index: number): boolean {
    if (!this.isDynamicLike) return this.hasBlock(index);
    return this.hasBlock(index) && this.isFull(index);
  }

  /** True when some ancestor (not this file) has block `index` allocated. */
  ancestorsHaveBlock(index: number): boolean {
    if (!this.isDifferencing) return false;
    if (!this._parent) throw new VhdError('PARENT_NOT_OPEN', 'opened without its parents', { path: this.path });
    for (let v: Vhd | null = this._parent; v; v = v._parent) {
      if (index * BLOCK_SIZE >= v.virtualSize) continue;
      if (v.hasBlock(index)) return true;
    }
    return false;
  }

  private get handle(): FileHandle {
    if (!this.fh) throw new VhdError('CLOSED', 'VHD is closed', { path: this.path });
    return this.fh;
  }

  /* ---------------------------------------------------------------- */
  /* reads                                                             */
  /* ---------------------------------------------------------------- */

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new VhdError('INVALID_ARGUMENT', `bad range ${offset}+${length}`, { path: this.path });
    }
    if (offset + length > this.virtualSize) {
      throw new VhdError('OUT_OF_RANGE', `range ${offset}+${length} beyond the virtual size ${this.virtualSize}`, { path: this.path });
    }
  }

  /** Read `length` bytes at `offset` of the virtual disk, through the chain. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const buf = Buffer.alloc(length);
    await this.readInto(buf, 0, offset, length);
    return buf;
  }

  /** @internal Fill buf[bufOff, bufOff+length) with the disk's bytes at `offset` (range already checked). */
  async readInto(buf: Buffer, bufOff: number, offset: number, length: number): Promise<void> {
    const fh = this.handle;
    if (!this.isDynamicLike) {
      await readExact(fh, buf, bufOff, length, offset, this.path);
      return;
    }
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const blk = Math.floor(pos / BLOCK_SIZE);
      const inBlk = pos - blk * BLOCK_SIZE;
      const n = Math.min(end - pos, BLOCK_SIZE - inBlk);
      const o = bufOff + (pos - offset);
      const e = blk < this.bat.length ? this.bat[blk] : UNUSED;
      if (e === UNUSED) {
        await this.readBelow(buf, o, pos, n);
      } else {
        const dataPos = (e + 1) * SECTOR;
        const s0 = Math.floor(inBlk / SECTOR);
        const s1 = Math.ceil((inBlk + n) / SECTOR);
        const bitmap = this.isFull(blk) ? null : await this.bitmap(blk);
        if (!bitmap || allSet(bitmap, s0, s1)) {
          await readExact(fh, buf, o, n, dataPos + inBlk, this.path);
        } else {
          // runs of present / absent sectors, clipped to the byte range
          const runs: [boolean, number, number][] = [];
          for (let s = s0; s < s1; ) {
            const r = runEnd(bitmap, s, s1);
            const a = Math.max(s * SECTOR, inBlk);
            const b = Math.min(r * SECTOR, inBlk + n);
            const present = testBit(bitmap, s);
            runs.push([present, a, b]);
            s = r;
          }
          const presentRuns = runs.filter((r) => r[0]).length;
          if (presentRuns > 8) {
            // one large read, then patch the absent runs
            await readExact(fh, buf, o, n, dataPos + inBlk, this.path);
            for (const [present, a, b] of runs) if (!present) await this.readBelow(buf, o + (a - inBlk), blk * BLOCK_SIZE + a, b - a);
          } else {
            for (const [present, a, b] of runs) {
              if (present) await readExact(fh, buf, o + (a - inBlk), b - a, dataPos + a, this.path);
              else await this.readBelow(buf, o + (a - inBlk), blk * BLOCK_SIZE + a, b - a);
            }
          }
        }
      }
      pos += n;
    }
  }

  /** What lies under this file at [pos, pos+n): the parent's bytes, or zeros. */
  private async readBelow(buf: Buffer, o: number, pos: number, n: number): Promise<void> {
    if (this.isDifferencing) {
      const p = this._parent;
      if (!p) throw new VhdError('PARENT_NOT_OPEN', 'differencing disk opened without its parents', { path: this.path });
      const m = Math.max(0, Math.min(n, p.virtualSize - pos));
      if (m > 0) await p.readInto(buf, o, pos, m);
      if (m < n) buf.fill(0, o + m, o + n);
    } else {
      buf.fill(0, o, o + n);
    }
  }

  private isFull(blk: number): boolean {
    return this.batmap !== null && blk < this.batmap.length * 8 && testBit(this.batmap, blk);
  }

  /** @internal The sector bitmap of an allocated block (cached; do not modify). */
  async bitmap(blk: number): Promise<Buffer> {
    const cached = this.bitmaps.get(blk);
    if (cached) return cached;
    const e = this.bat[blk];
    if (e === UNUSED) throw new VhdError('INVALID_ARGUMENT', `block ${blk} not allocated`, { path: this.path });
    const b = await readAt(this.handle, e * SECTOR, BITMAP_SIZE, this.path);
    this.cacheBitmap(blk, b);
    return b;
  }

  private cacheBitmap(blk: number, b: Buffer): void {
    if (this.bitmaps.size >= BITMAP_CACHE_MAX && !this.bitmaps.has(blk)) {
      const first = this.bitmaps.keys().next().value;
      if (first !== undefined) this.bitmaps.delete(first);
    }
    this.bitmaps.set(blk, b);
  }

  /** @internal Bitmap of block `blk`, FULL_BITMAP when known full, null when unallocated. */
  async blockBitmap(blk: number): Promise<Buffer | null> {
    if (!this.isDynamicLike) return this.hasBlock(blk) ? FULL_BITMAP : null;
    if (!this.hasBlock(blk)) return null;
    if (this.isFull(blk)) return FULL_BITMAP;
    return this.bitmap(blk);
  }

  /**
   * @internal This file's own copy of block `blk` (bitmap + 2 MiB data) in one
   * read, or null when unallocated. Data of absent sectors is whatever the file holds.
   */
  async readBlock(blk: number): Promise<RawBlock | null> {
    const fh = this.handle;
    if (!this.isDynamicLike) {
      if (!this.hasBlock(blk)) return null;
      const data = Buffer.alloc(BLOCK_SIZE);
      const n = Math.min(BLOCK_SIZE, this.virtualSize - blk * BLOCK_SIZE);
      await readExact(fh, data, 0, n, blk * BLOCK_SIZE, this.path);
      return { bitmap: FULL_BITMAP, data };
    }
    if (!this.hasBlock(blk)) return null;
    const raw = await readAt(fh, this.bat[blk] * SECTOR, BITMAP_SIZE + BLOCK_SIZE, this.path);
    const bitmap = this.isFull(blk) ? FULL_BITMAP : Buffer.from(raw.subarray(0, BITMAP_SIZE));
    if (bitmap !== FULL_BITMAP) this.cacheBitmap(blk, bitmap);
    return { bitmap, data: raw.subarray(BITMAP_SIZE) };
  }

  /* ---------------------------------------------------------------- */
  /* writes                                                            */
  /* ---------------------------------------------------------------- */

  private checkWritable(): void {
    if (!this.fh) throw new VhdError('CLOSED', 'VHD is closed', { path: this.path });
    if (this.readOnly) throw new VhdError('READ_ONLY', 'opened read-only', { path: this.path });
  }

  /**
   * Write `data` at byte `offset` of the virtual disk. Unaligned writes are
   * completed to whole sectors with the current contents (read through the
   * chain). New blocks are allocated at the end of data; an all-zero write to
   * an unallocated block of a dynamic disk allocates nothing.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const input = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.checkRange(offset, input.length);
    this.checkWritable();
    if (input.length === 0) return;
    await this.mutex.run(async () => {
      if (!this.isDynamicLike) {
        await writeAll(this.handle, [input], offset);
        return;
      }
      let off = offset;
      let buf = input;
      const a0 = Math.floor(offset / SECTOR) * SECTOR;
      const a1 = Math.ceil((offset + input.length) / SECTOR) * SECTOR;
      if (a0 !== offset || a1 !== offset + input.length) {
        const tmp = Buffer.alloc(a1 - a0);
        await this.readInto(tmp, 0, a0, SECTOR);
        if (a1 - a0 > SECTOR) await this.readInto(tmp, a1 - a0 - SECTOR, a1 - SECTOR, SECTOR);
        input.copy(tmp, offset - a0);
        off = a0;
        buf = tmp;
      }
      try {
        let pos = off;
        const end = off + buf.length;
        while (pos < end) {
          const blk = Math.floor(pos / BLOCK_SIZE);
          const inBlk = pos - blk * BLOCK_SIZE;
          const n = Math.min(end - pos, BLOCK_SIZE - inBlk);
          await this.writeInBlock(blk, inBlk, buf.subarray(pos - off, pos - off + n));
          pos += n;
        }
      } finally {
        await this.flushMetadata();
      }
    });
  }

  /** Sector-aligned write inside one block. Caller holds the mutex and flushes metadata. */
  private async writeInBlock(blk: number, inBlk: number, chunk: Buffer): Promise<void> {
    const s0 = inBlk / SECTOR;
    const s1 = s0 + chunk.length / SECTOR;
    if (this.bat[blk] === UNUSED) {
      if (!this.isDifferencing && isZero(chunk)) return;
      const bitmap = Buffer.alloc(BITMAP_SIZE);
      setBits(bitmap, s0, s1);
      await this.appendBlock(blk, bitmap, [
        ZERO_BLOCK.subarray(0, inBlk),
        chunk,
        ZERO_BLOCK.subarray(0, BLOCK_SIZE - inBlk - chunk.length),
      ]);
      return;
    }
    const base = this.bat[blk] * SECTOR;
    await writeAll(this.handle, [chunk], base + SECTOR + inBlk);
    await this.markSectors(blk, s0, s1);
  }

  /** Set bitmap bits [s0, s1) of an allocated block, writing the bitmap (and batmap) if they change. */
  private async markSectors(blk: number, s0: number, s1: number): Promise<void> {
    if (this.isFull(blk)) return;
    const current = await this.bitmap(blk);
    if (allSet(current, s0, s1)) return;
    const bitmap = Buffer.from(current);
    setBits(bitmap, s0, s1);
    await writeAll(this.handle, [bitmap], this.bat[blk] * SECTOR);
    this.cacheBitmap(blk, bitmap);
    if (allSet(bitmap, 0, SECTORS_PER_BLOCK)) this.markFull(blk);
  }

  /**
   * Allocate block `blk` at the end of data, writing alignment gap, bitmap and
   * data (pieces totalling 2 MiB) in one writev over the old trailing footer.
   * The footer and BAT are written later by flushMetadata().
   */
  private async appendBlock(blk: number, bitmap: Buffer, pieces: Buffer[]): Promise<void> {
    const start = this.eod;
    const sector = alignedBlockSector(start);
    if (sector >= UNUSED) throw new VhdError('UNSUPPORTED', 'file too large for 32-bit sector offsets', { path: this.path });
    await writeAll(this.handle, [ZERO_BLOCK.subarray(0, sector * SECTOR - start), bitmap, ...pieces], start);
    this.bat[blk] = sector;
    this.eod = blockEnd(sector);
    this.fileSize = Math.max(this.fileSize, this.eod);
    this.cacheBitmap(blk, bitmap);
    this.dirtyBat = this.dirtyBat ? [Math.min(this.dirtyBat[0], blk), Math.max(this.dirtyBat[1], blk)] : [blk, blk];
    this.dirtyFooter = true;
    if (bitmap === FULL_BITMAP || allSet(bitmap, 0, SECTORS_PER_BLOCK)) this.markFull(blk);
  }

  private markFull(blk: number): void {
    const map = this.batmap;
    if (!map || blk >= map.length * 8 || testBit(map, blk)) return;
    const i = blk >> 3;
    const old = map[i];
    setBit(map, blk);
    if (i < this.batmapSumBytes) this.batmapSum += map[i] - old;
    this.dirtyBatmap = this.dirtyBatmap ? [Math.min(this.dirtyBatmap[0], i), Math.max(this.dirtyBatmap[1], i)] : [i, i];
  }

  /**
   * Write what allocations changed: first the footer at the new end of data
   * (data is already on disk), then the BAT entries, then the batmap.
   */
  private async flushMetadata(): Promise<void> {
    const fh = this.handle;
    if (this.dirtyFooter) {
      await writeAll(fh, [encodeFooter(this.footer)], this.eod);
      if (this.fileSize > this.eod + FOOTER_SIZE) await fh.truncate(this.eod + FOOTER_SIZE);
      this.fileSize = this.eod + FOOTER_SIZE;
      this.dirtyFooter = false;
    }
    if (this.dirtyBat) {
      const h = this.header!;
      const [lo, hi] = this.dirtyBat;
      const b0 = Math.floor((lo * 4) / SECTOR) * SECTOR;
      const b1 = Math.min(Math.ceil(((hi + 1) * 4) / SECTOR) * SECTOR, batBytes(h.maxTableEntries));
      const region = Buffer.alloc(b1 - b0);
      const e0 = b0 / 4;
      const e1 = Math.min(b1 / 4, this.bat.length);
      encodeBat(this.bat, e0, e1).copy(region, 0);
      await writeAll(fh, [region], h.tableOffset + b0);
      this.dirtyBat = null;
    }
    if (this.dirtyBatmap && this.batmap && this.batmapHeader) {
      const [lo, hi] = this.dirtyBatmap;
      const b0 = Math.floor(lo / SECTOR) * SECTOR;
      const b1 = Math.min(Math.ceil((hi + 1) / SECTOR) * SECTOR, this.batmap.length);
      await writeAll(fh, [this.batmap.subarray(b0, b1)], this.batmapHeader.offset + b0);
      this.batmapHeader.checksum = ~this.batmapSum >>> 0;
      await writeAll(fh, [encodeBatmapHeader(this.batmapHeader)], batmapHeaderOffset(this.header!));
      this.dirtyBatmap = null;
    }
  }

  /**
   * @internal Merge a block from a child into this file (coalesce): sectors set
   * in `bitmap` take the child's data, the others keep this file's contents.
   * Metadata is written by commit().
   */
  async mergeBlock(blk: number, bitmap: Buffer, data: Buffer): Promise<void> {
    this.checkWritable();
    await this.mutex.run(async () => {
      const full = bitmap === FULL_BITMAP || allSet(bitmap, 0, SECTORS_PER_BLOCK);
      const limit = Math.min(BLOCK_SIZE, this.virtualSize - blk * BLOCK_SIZE);
      if (limit <= 0) return;
      if (!this.isDynamicLike) {
        if (full) {
          await writeAll(this.handle, [data.subarray(0, limit)], blk * BLOCK_SIZE);
          return;
        }
        for (let s = 0; s < SECTORS_PER_BLOCK; ) {
          const r = runEnd(bitmap, s, SECTORS_PER_BLOCK);
          const a = s * SECTOR;
          const b = Math.min(r * SECTOR, limit);
          if (testBit(bitmap, s) && b > a) await writeAll(this.handle, [data.subarray(a, b)], blk * BLOCK_SIZE + a);
          s = r;
        }
        return;
      }
      if (this.bat[blk] === UNUSED) {
        if (full) {
          await this.appendBlock(blk, FULL_BITMAP, [data]);
        } else {
          const clean = Buffer.from(data);
          zeroAbsent(bitmap, clean);
          await this.appendBlock(blk, Buffer.from(bitmap), [clean]);
        }
        return;
      }
      const base = this.bat[blk] * SECTOR;
      if (full) {
        await writeAll(this.handle, [data], base + SECTOR);
        if (!this.isFull(blk)) {
          await writeAll(this.handle, [FULL_BITMAP], base);
          this.cacheBitmap(blk, FULL_BITMAP);
          this.markFull(blk);
        }
        return;
      }
      // partial: patch the present runs into our copy, then one write
      const mine = await readAt(this.handle, base + SECTOR, BLOCK_SIZE, this.path);
      for (let s = 0; s < SECTORS_PER_BLOCK; ) {
        const r = runEnd(bitmap, s, SECTORS_PER_BLOCK);
        if (testBit(bitmap, s)) data.copy(mine, s * SECTOR, s * SECTOR, r * SECTOR);
        s = r;
      }
      await writeAll(this.handle, [mine], base + SECTOR);
      if (!this.isFull(blk)) {
        const merged = Buffer.from(await this.bitmap(blk));
        for (let i = 0; i < BITMAP_SIZE; i++) merged[i] |= bitmap[i];
        await writeAll(this.handle, [merged], base);
        this.cacheBitmap(blk, merged);
        if (allSet(merged, 0, SECTORS_PER_BLOCK)) this.markFull(blk);
      }
    });
  }

  /** @internal Write pending footer/BAT/batmap updates. */
  commit(): Promise<void> {
    return this.mutex.run(() => this.flushMetadata());
  }

  /** Set or clear blktap's hidden flag (footer byte 85), in both footer copies. */
  async setHidden(hidden: boolean): Promise<void> {
    this.checkWritable();
    await this.mutex.run(async () => {
      this.footer = { ...this.footer, hidden: hidden ? 1 : 0 };
      await this.writeFooters();
    });
  }

  private async writeFooters(): Promise<void> {
    const buf = encodeFooter(this.footer);
    this.footer.raw = buf;
    if (this.isDynamicLike) {
      await writeAll(this.handle, [buf], this.eod);
      if (this.fileSize > this.eod + FOOTER_SIZE) await this.handle.truncate(this.eod + FOOTER_SIZE);
      this.fileSize = this.eod + FOOTER_SIZE;
      await writeAll(this.handle, [buf], 0);
    } else {
      await writeAll(this.handle, [buf], this.fileSize - FOOTER_SIZE);
    }
    this.dirtyFooter = false;
  }

  /**
   * @internal Point this differencing disk at a new parent: header parent
   * uuid/timestamp/name and the MACX/W2KU/W2RU locators (rewritten in place
   * when they fit, else appended at the end of data).
   */
  async reparent(parentPath: string, parentUuid: string, parentMtimeMs: number): Promise<void> {
    this.checkWritable();
    if (!this.isDifferencing) throw new VhdError('NOT_DIFFERENCING', 'not a differencing disk', { path: this.path });
    await this.mutex.run(async () => {
      const h: Header = { ...this.header!, locators: this.header!.locators.map((l) => ({ ...l })) };
      h.parentUuid = parentUuid;
      h.parentTimestamp = vhdTime(parentMtimeMs);
      h.parentName = basename(parentPath);
      encodeHeader(h); // validates the name length before anything is written
      for (const loc of buildLocators(this.path, parentPath)) {
        let slot = h.locators.findIndex((l) => l.code === loc.code);
        if (slot < 0) slot = h.locators.findIndex((l) => l.code === 0);
        if (slot < 0) continue;
        const cur = h.locators[slot];
        const fits = cur.code === loc.code && locatorSpace(cur) >= loc.data.length && cur.dataOffset > 0;
        if (fits) {
          const space = locatorSpace(cur);
          const padded = Buffer.alloc(space);
          loc.data.copy(padded);
          await writeAll(this.handle, [padded], cur.dataOffset);
          h.locators[slot] = { ...cur, dataLength: loc.data.length };
        } else {
          const space = Math.ceil(Math.max(1, loc.data.length) / SECTOR) * SECTOR;
          const at = Math.ceil(this.eod / SECTOR) * SECTOR;
          const padded = Buffer.alloc(space);
          loc.data.copy(padded);
          await writeAll(this.handle, [padded], at);
          this.eod = at + space;
          this.fileSize = Math.max(this.fileSize, this.eod);
          this.dirtyFooter = true;
          h.locators[slot] = { code: loc.code, dataSpace: space, dataLength: loc.data.length, dataOffset: at };
        }
      }
      if (this.dirtyFooter) await this.flushMetadata(); // footer at the new end before the header points past it
      const buf = encodeHeader(h);
      await writeAll(this.handle, [buf], this.footer.dataOffset!);
      this.header = { ...h, raw: buf };
      this._parentPath = parentPath;
      if (this._parent) {
        await this._parent.close();
        this._parent = null;
      }
    });
  }

  /** fsync the file. */
  async flush(): Promise<void> {
    await this.mutex.run(async () => {
      await this.flushMetadata();
      await this.handle.sync();
    });
  }

  /** Close this file and the parents it opened. Idempotent. */
  async close(): Promise<void> {
    const fh = this.fh;
    if (fh) {
      try {
        await this.mutex.run(async () => {
          if (!this.readOnly) await this.flushMetadata();
        });
      } finally {
        this.fh = null;
        await fh.close();
      }
    }
    const p = this._parent;
    this._parent = null;
    if (p) await p.close();
  }

  /** @internal Footer and header (copies) for building another file with the same identity. */
  identity(): { footer: Footer; header: Header | null } {
    return {
      footer: { ...this.footer },
      header: this.header ? { ...this.header, locators: this.header.locators.map((l) => ({ ...l })) } : null,
    };
  }
}

/** Zero the data of the sectors whose bit is clear. */
export function zeroAbsent(bitmap: Buffer, data: Buffer): void {
  for (let s = 0; s < SECTORS_PER_BLOCK; ) {
    const r = runEnd(bitmap, s, SECTORS_PER_BLOCK);
    if (!testBit(bitmap, s)) data.fill(0, s * SECTOR, Math.min(r * SECTOR, data.length));
    s = r;
  }
}
