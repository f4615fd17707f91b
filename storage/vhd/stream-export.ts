/**
 * Streams out of a VHD chain (for /export_raw_vdi):
 *  - exportRaw: the whole virtual disk, read through the chain; blocks that
 *    no file of the chain allocates are sent as zeros without touching disk.
 *  - exportVhd: the contents as one dynamic VHD (the chain flattened) holding
 *    only the allocated blocks, or with `base`, a differencing VHD holding
 *    only the blocks that differ from `base`.
 * Both resolve to { stream, size } so HTTP handlers can send Content-Length.
 * Destroy the stream to release the files if you stop reading early.
 */
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { VhdError } from './errors.js';
import {
  BLOCK_SIZE,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  FOOTER_SIZE,
  UNUSED,
  encodeFooter,
  newFooter,
  newHeader,
  setBit,
  vhdTime,
} from './format.js';
import { FULL_BITMAP, ZERO_BLOCK } from './io.js';
import { alignedBlockSector, blockEnd, buildMetadata } from './layout.js';
import { Vhd, zeroAbsent } from './vhd.js';

export interface ExportStream {
  stream: Readable;
  /** Exact number of bytes the stream will produce. */
  size: number;
  /** Data blocks carried (VHD exports) or blocks read from disk (raw). */
  blocks: number;
}

const HIGH_WATER_MARK = 4 * BLOCK_SIZE; // read ahead while the consumer sends

/** Wrap a generator that owns `files`: they are closed when it ends or when the stream is destroyed. */
function streamOf(gen: (started: () => void) => AsyncGenerator<Buffer>, files: Vhd[]): Readable {
  let started = false;
  const closeAll = async () => {
    for (const f of files) await f.close().catch(() => undefined);
  };
  async function* run(): AsyncGenerator<Buffer> {
    try {
      yield* gen(() => (started = true));
    } finally {
      await closeAll();
    }
  }
  const stream = Readable.from(run(), { objectMode: false, highWaterMark: HIGH_WATER_MARK });
  stream.once('close', () => {
    if (!started) void closeAll();
  });
  return stream;
}

/** The raw bytes of the virtual disk of `leafPath` (through its chain). */
export async function exportRaw(leafPath: string): Promise<ExportStream> {
  const leaf = await Vhd.open(leafPath, { readOnly: true });
  const chain = leaf.chain();
  const size = leaf.virtualSize;
  const count = leaf.blockCount;
  let readBlocks = 0;
  for (let b = 0; b < count; b++) if (chain.some((v) => v.hasBlock(b))) readBlocks++;
  const stream = streamOf(async function* (started) {
    started();
    for (let blk = 0; blk < count; blk++) {
      const len = Math.min(BLOCK_SIZE, size - blk * BLOCK_SIZE);
      if (!chain.some((v) => v.hasBlock(blk))) {
        yield ZERO_BLOCK.subarray(0, len);
        continue;
      }
      const buf = Buffer.allocUnsafe(len);
      await leaf.readInto(buf, 0, blk * BLOCK_SIZE, len);
      yield buf;
    }
  }, [leaf]);
  return { stream, size, blocks: readBlocks };
}

export interface ExportVhdOptions {
  /**
   * Path of a VHD to export relative to: an ancestor of the leaf (usually a
   * snapshot's base copy) or a file sharing an ancestor with it (a snapshot
   * leaf). Only blocks allocated above the common ancestor, on either side,
   * are sent, as full blocks of the leaf's contents, in a differencing VHD
   * whose parent uuid is the base's uuid.
   */
  base?: string;
  /** uuid of the exported disk (default: the leaf's). */
  uuid?: string;
}

/** A VHD stream of `leafPath`'s contents carrying only allocated blocks. */
export async function exportVhd(leafPath: string, opts: ExportVhdOptions = {}): Promise<ExportStream> {
  const leaf = await Vhd.open(leafPath, { readOnly: true });
  const files = [leaf];
  try {
    const chain = leaf.chain();
    let members: Vhd[] = chain;
    let base: Vhd | null = null;
    if (opts.base !== undefined) {
      base = await Vhd.open(opts.base, { readOnly: true });
      files.push(base);
      const baseChain = base.chain();
      const at = new Map(baseChain.map((v, i) => [v.uuid, i] as const));
      const li = chain.findIndex((v) => at.has(v.uuid));
      if (li < 0) throw new VhdError('BASE_NOT_IN_CHAIN', `${base.path} shares no ancestor with ${leaf.path}`, { path: leaf.path });
      members = [...chain.slice(0, li), ...baseChain.slice(0, at.get(chain[li].uuid)!)];
    }
    const size = leaf.virtualSize;
    const count = leaf.blockCount;
    const blocks: number[] = [];
    for (let b = 0; b < count; b++) if (members.some((v) => v.hasBlock(b))) blocks.push(b);

    const footer = newFooter({ size, uuid: opts.uuid ?? leaf.uuid, type: base ? DISK_DIFFERENCING : DISK_DYNAMIC });
    const header = newHeader({ size });
    if (base) {
      header.parentUuid = base.uuid;
      header.parentName = basename(base.path);
      header.parentTimestamp = vhdTime((await stat(base.path)).mtimeMs);
    }
    const metaEnd = buildMetadata(footer, header).metaEnd;
    const bat = new Uint32Array(header.maxTableEntries).fill(UNUSED);
    const batmap = Buffer.alloc(Math.ceil(header.maxTableEntries / 8));
    const full = new Set<number>();
    let eod = metaEnd;
    for (const b of blocks) {
      const s = alignedBlockSector(eod);
      bat[b] = s;
      eod = blockEnd(s);
      if (base || members.some((v) => v.knownFull(b))) {
        full.add(b);
        setBit(batmap, b);
      }
    }
    const meta = buildMetadata(footer, header, { bat, batmap });
    const size_ = eod + FOOTER_SIZE;
    const single = !base && chain.length === 1 && leaf.diskType !== 'fixed';

    const stream = streamOf(async function* (started) {
      started();
      yield meta.image;
      let pos = metaEnd;
      for (const b of blocks) {
        const start = bat[b] * 512;
        if (start > pos) yield ZERO_BLOCK.subarray(0, start - pos);
        let bitmap: Buffer;
        let data: Buffer;
        if (single) {
          const raw = (await leaf.readBlock(b))!;
          bitmap = raw.bitmap;
          data = raw.data;
          if (bitmap !== FULL_BITMAP) zeroAbsent(bitmap, data);
        } else {
          data = Buffer.alloc(BLOCK_SIZE);
          await leaf.readInto(data, 0, b * BLOCK_SIZE, Math.min(BLOCK_SIZE, size - b * BLOCK_SIZE));
          if (full.has(b)) bitmap = FULL_BITMAP;
          else {
            bitmap = Buffer.alloc(FULL_BITMAP.length);
            for (const v of members) {
              const m = await v.blockBitmap(b);
              if (!m) continue;
              for (let i = 0; i < bitmap.length; i++) bitmap[i] |= m[i];
            }
          }
        }
        yield bitmap;
        yield data;
        pos = blockEnd(bat[b]);
      }
      yield encodeFooter(footer);
    }, files);
    return { stream, size: size_, blocks: blocks.length };
  } catch (e) {
    for (const f of files) await f.close().catch(() => undefined);
    throw e;
  }
}
