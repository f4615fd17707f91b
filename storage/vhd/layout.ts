/**
 * The metadata region of a dynamic/differencing VHD as blktap lays it out:
 *   0     footer copy (512)
 *   512   dynamic header (1024)
 *   1536  BAT (4 B per block, sector padded)
 *   ...   batmap header (512), batmap (1 bit per block, sector padded)
 *   ...   parent locator data (differencing disks), each sector padded
 * followed by the data blocks and the trailing footer.
 */
import {
  BITMAP_SECTORS,
  BLOCK_SIZE,
  HEADER_OFFSET,
  SECTOR,
  UNUSED,
  batmapChecksumBytes,
  batmapHeaderOffset,
  byteSum,
  encodeBat,
  encodeBatmapHeader,
  encodeFooter,
  encodeHeader,
  emptyLocator,
  newBatmapHeader,
  paddedBytes,
  type BatmapHeader,
  type Footer,
  type Header,
} from './format.js';
import type { LocatorData } from './locators.js';

export interface Metadata {
  /** Bytes [0, metaEnd): footer copy, header, BAT, batmap header, batmap, locators. */
  image: Buffer;
  metaEnd: number;
  header: Header;
  batmapHeader: BatmapHeader;
}

/**
 * Build the metadata region for `footer`/`header` (the header's BAT position
 * and locator entries are recomputed). `bat` defaults to all unused, `batmap`
 * to all zeros.
 */
export function buildMetadata(
  footer: Footer,
  header: Header,
  opts: { bat?: Uint32Array; batmap?: Buffer; locators?: LocatorData[] } = {},
): Metadata {
  const h: Header = { ...header, locators: Array.from({ length: 8 }, emptyLocator) };
  const bh = newBatmapHeader(h);
  const mapBytes = bh.sizeSectors * SECTOR;
  const batmap = Buffer.alloc(mapBytes);
  if (opts.batmap) opts.batmap.copy(batmap, 0, 0, Math.min(mapBytes, opts.batmap.length));
  bh.checksum = ~byteSum(batmap, 0, Math.min(batmapChecksumBytes(footer.currentSize), mapBytes)) >>> 0;

  let off = bh.offset + mapBytes;
  const locs = opts.locators ?? [];
  locs.slice(0, 8).forEach((l, i) => {
    const space = paddedBytes(l.data.length);
    h.locators[i] = { code: l.code, dataSpace: space, dataLength: l.data.length, dataOffset: off };
    off += space;
  });
  const metaEnd = off;

  const image = Buffer.alloc(metaEnd);
  encodeFooter(footer).copy(image, 0);
  encodeHeader(h).copy(image, HEADER_OFFSET);
  const bat = opts.bat ?? new Uint32Array(h.maxTableEntries).fill(UNUSED);
  encodeBat(bat).copy(image, h.tableOffset);
  encodeBatmapHeader(bh).copy(image, batmapHeaderOffset(h));
  batmap.copy(image, bh.offset);
  locs.slice(0, 8).forEach((l, i) => l.data.copy(image, h.locators[i].dataOffset));
  return { image, metaEnd, header: h, batmapHeader: bh };
}

/**
 * blktap puts each new block at the end of data, with a gap so that the
 * block's data (after its one-sector bitmap) starts on a 4 KiB boundary.
 * Returns the block's first sector (its bitmap).
 */
export function alignedBlockSector(endOfData: number): number {
  const s = Math.ceil(endOfData / SECTOR);
  const gap = (8 - ((s + BITMAP_SECTORS) % 8)) % 8;
  return s + gap;
}

/** End of a block (bitmap + data) that starts at `sector`. */
export function blockEnd(sector: number): number {
  return (sector + BITMAP_SECTORS) * SECTOR + BLOCK_SIZE;
}
