/**
 * On-disk structures of a VHD as blktap writes them (STACK.md §2.3): the
 * 512-byte footer, the 1024-byte dynamic header, the BAT, blktap's batmap
 * header, parent locators, checksums, CHS geometry and timestamps.
 * Everything here is pure (Buffer in, object out); file I/O lives in vhd.ts.
 */
import { VhdError } from './errors.js';

export const SECTOR = 512;
export const BLOCK_SIZE = 2 * 1024 * 1024; // blktap/SM block: 2 MiB
export const SECTORS_PER_BLOCK = BLOCK_SIZE / SECTOR; // 4096
export const BITMAP_SIZE = SECTORS_PER_BLOCK / 8; // 512 B: exactly one sector
export const BITMAP_SECTORS = 1;
export const FOOTER_SIZE = 512;
export const HEADER_SIZE = 1024;
export const HEADER_OFFSET = 512;
export const BAT_OFFSET = 1536; // footer copy + header
export const BATMAP_HEADER_SIZE = 512;
export const UNUSED = 0xffffffff;

/** SM's limits (vhdutil.py): sizes are rounded up to 2 MiB in [MIN, MAX]. */
export const MIN_VHD_SIZE = 2 * 1024 * 1024;
export const MAX_VHD_SIZE = 2040 * 1024 * 1024 * 1024;
/** SM's MAX_CHAIN_SIZE: files in a chain, the leaf included. */
export const MAX_CHAIN_SIZE = 30;

export const DISK_FIXED = 2;
export const DISK_DYNAMIC = 3;
export const DISK_DIFFERENCING = 4;
export type DiskType = typeof DISK_FIXED | typeof DISK_DYNAMIC | typeof DISK_DIFFERENCING;

export const FOOTER_COOKIE = 'conectix';
export const HEADER_COOKIE = 'cxsparse';
export const BATMAP_COOKIE = 'tdbatmap';
export const FEATURES_RESERVED = 2;
export const FORMAT_VERSION = 0x00010000;
export const HEADER_VERSION = 0x00010000;
export const CREATOR_APP = 'tap\0';
export const CREATOR_VERSION = 0x00010003; // blktap VHD_CURRENT_VERSION 1.3
export const BATMAP_VERSION = 0x00010002; // batmap 1.2
/** Seconds between 1970-01-01 and 2000-01-01 (the VHD epoch). */
export const VHD_EPOCH = 946684800;

export const PLAT_NONE = 0;
export const PLAT_WI2R = 0x57693272;
export const PLAT_WI2K = 0x5769326b;
export const PLAT_W2RU = 0x57327275; // 'W2ru' relative, UTF-16LE
export const PLAT_W2KU = 0x57326b75; // 'W2ku' absolute, UTF-16LE
export const PLAT_MAC = 0x4d616320;
export const PLAT_MACX = 0x4d616358; // 'MacX' file:// URL, UTF-8
const KNOWN_PLATFORMS = new Set([PLAT_NONE, PLAT_WI2R, PLAT_WI2K, PLAT_W2RU, PLAT_W2KU, PLAT_MAC, PLAT_MACX]);

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

/** Round a byte count up to whole sectors, never returning 0 sectors. */
export function paddedBytes(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / SECTOR)) * SECTOR;
}

/** One's complement of the byte sum of `buf`, skipping the 4-byte checksum field at `skip`. */
export function checksum(buf: Buffer, skip: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= skip && i < skip + 4) continue;
    sum += buf[i];
  }
  return ~sum >>> 0;
}

/** Byte sum of a region (used for the batmap checksum, maintained incrementally). */
export function byteSum(buf: Buffer, start = 0, end = buf.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += buf[i];
  return sum;
}

export function vhdTime(date: Date | number = Date.now()): number {
  const ms = typeof date === 'number' ? date : date.getTime();
  return Math.max(0, Math.floor(ms / 1000) - VHD_EPOCH) >>> 0;
}

export function dateOfVhdTime(t: number): Date {
  return new Date((t + VHD_EPOCH) * 1000);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function uuidToBytes(uuid: string): Buffer {
  if (!UUID_RE.test(uuid)) throw new VhdError('INVALID_ARGUMENT', `not a uuid: ${JSON.stringify(uuid)}`);
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}

export function uuidFromBytes(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const NULL_UUID = '00000000-0000-0000-0000-000000000000';

/**
 * SM's validate_and_round_vhd_size: negative or above 2040 GiB is an error,
 * anything below 2 MiB becomes 2 MiB, the rest is rounded up to 2 MiB.
 */
export function roundVhdSize(size: number): number {
  if (typeof size !== 'number' || !Number.isFinite(size) || size < 0 || size > MAX_VHD_SIZE) {
    throw new VhdError('INVALID_SIZE', `VDI size must be between ${MIN_VHD_SIZE / 1048576} MB and ${MAX_VHD_SIZE / 1048576} MB, got ${size}`);
  }
  const s = Math.max(size, MIN_VHD_SIZE);
  return Math.ceil(s / BLOCK_SIZE) * BLOCK_SIZE;
}

/** CHS geometry by the algorithm of the VHD specification (appendix). */
export function chsGeometry(size: number): { cylinders: number; heads: number; sectorsPerTrack: number } {
  let total = Math.max(1, Math.ceil(size / SECTOR));
  const cap = 65535 * 16 * 255;
  if (total > cap) total = cap;
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cth + 1023) / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

function readU64(buf: Buffer, off: number, what: string, code: 'BAD_FOOTER' | 'BAD_HEADER'): number | null {
  const v = buf.readBigUInt64BE(off);
  if (v === 0xffffffffffffffffn) return null;
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new VhdError(code, `${what} out of range: ${v}`);
  return Number(v);
}

function writeU64(buf: Buffer, off: number, v: number | null): void {
  buf.writeBigUInt64BE(v === null ? 0xffffffffffffffffn : BigInt(v), off);
}

/* ------------------------------------------------------------------ */
/* footer                                                              */
/* ------------------------------------------------------------------ */

export interface Footer {
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header; null (all ones) for fixed disks. */
  dataOffset: number | null;
  timestamp: number;
  creatorApp: string;
  creatorVersion: number;
  creatorOs: number;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  uuid: string;
  savedState: number;
  /** blktap extension, byte 85. */
  hidden: number;
  /** The raw 512 bytes it was decoded from (reserved bytes are preserved on re-encode). */
  raw?: Buffer;
}

export function newFooter(opts: { size: number; uuid: string; type: DiskType; timestamp?: number }): Footer {
  const g = chsGeometry(opts.size);
  return {
    features: FEATURES_RESERVED,
    formatVersion: FORMAT_VERSION,
    dataOffset: opts.type === DISK_FIXED ? null : HEADER_OFFSET,
    timestamp: opts.timestamp ?? vhdTime(),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorOs: 0,
    originalSize: opts.size,
    currentSize: opts.size,
    ...g,
    diskType: opts.type,
    uuid: opts.uuid.toLowerCase(),
    savedState: 0,
    hidden: 0,
  };
}

export function encodeFooter(f: Footer): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  if (f.raw) f.raw.copy(b, 86, 86, FOOTER_SIZE);
  b.write(FOOTER_COOKIE, 0, 'latin1');
  b.writeUInt32BE(f.features >>> 0, 8);
  b.writeUInt32BE(f.formatVersion >>> 0, 12);
  writeU64(b, 16, f.dataOffset);
  b.writeUInt32BE(f.timestamp >>> 0, 24);
  b.write(f.creatorApp.padEnd(4, '\0').slice(0, 4), 28, 'latin1');
  b.writeUInt32BE(f.creatorVersion >>> 0, 32);
  b.writeUInt32BE(f.creatorOs >>> 0, 36);
  writeU64(b, 40, f.originalSize);
  writeU64(b, 48, f.currentSize);
  b.writeUInt16BE(f.cylinders & 0xffff, 56);
  b.writeUInt8(f.heads & 0xff, 58);
  b.writeUInt8(f.sectorsPerTrack & 0xff, 59);
  b.writeUInt32BE(f.diskType >>> 0, 60);
  uuidToBytes(f.uuid).copy(b, 68);
  b.writeUInt8(f.savedState & 0xff, 84);
  b.writeUInt8(f.hidden & 0xff, 85);
  b.writeUInt32BE(checksum(b, 64), 64);
  return b;
}

/** Decode and validate (cookie, checksum) a footer; throws BAD_FOOTER. */
export function decodeFooter(b: Buffer): Footer {
  if (b.length < FOOTER_SIZE) throw new VhdError('BAD_FOOTER', 'short footer');
  if (b.toString('latin1', 0, 8) !== FOOTER_COOKIE) throw new VhdError('BAD_FOOTER', 'bad footer cookie');
  const sum = b.readUInt32BE(64);
  if (checksum(b.subarray(0, FOOTER_SIZE), 64) !== sum) throw new VhdError('BAD_FOOTER', 'bad footer checksum');
  const currentSize = readU64(b, 48, 'current size', 'BAD_FOOTER');
  const originalSize = readU64(b, 40, 'original size', 'BAD_FOOTER');
  return {
    features: b.readUInt32BE(8),
    formatVersion: b.readUInt32BE(12),
    dataOffset: readU64(b, 16, 'data offset', 'BAD_FOOTER'),
    timestamp: b.readUInt32BE(24),
    creatorApp: b.toString('latin1', 28, 32),
    creatorVersion: b.readUInt32BE(32),
    creatorOs: b.readUInt32BE(36),
    originalSize: originalSize ?? 0,
    currentSize: currentSize ?? 0,
    cylinders: b.readUInt16BE(56),
    heads: b.readUInt8(58),
    sectorsPerTrack: b.readUInt8(59),
    diskType: b.readUInt32BE(60),
    uuid: uuidFromBytes(b.subarray(68, 84)),
    savedState: b.readUInt8(84),
    hidden: b.readUInt8(85),
    raw: Buffer.from(b.subarray(0, FOOTER_SIZE)),
  };
}

/* ------------------------------------------------------------------ */
/* dynamic header                                                      */
/* ------------------------------------------------------------------ */

export interface Locator {
  code: number;
  /** As stored: blktap writes bytes, the spec says sectors (below 512 = sectors). */
  dataSpace: number;
  dataLength: number;
  dataOffset: number;
}

export interface Header {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  /** null when the parent uuid field is all zeros (dynamic disk). */
  parentUuid: string | null;
  parentTimestamp: number;
  parentName: string;
  locators: Locator[];
  raw?: Buffer;
}

/** Bytes reserved by a locator (readers accept sectors below 512, else bytes). */
export function locatorSpace(l: Locator): number {
  if (l.dataSpace < 512) return l.dataSpace * SECTOR;
  if (l.dataSpace % SECTOR === 0) return l.dataSpace;
  return 0;
}

export function emptyLocator(): Locator {
  return { code: PLAT_NONE, dataSpace: 0, dataLength: 0, dataOffset: 0 };
}

export function newHeader(opts: { size: number; maxTableEntries?: number }): Header {
  return {
    tableOffset: BAT_OFFSET,
    headerVersion: HEADER_VERSION,
    maxTableEntries: opts.maxTableEntries ?? Math.ceil(opts.size / BLOCK_SIZE),
    blockSize: BLOCK_SIZE,
    parentUuid: null,
    parentTimestamp: 0,
    parentName: '',
    locators: Array.from({ length: 8 }, emptyLocator),
  };
}

/** UTF-16BE encoding of the parent's basename into the 512-byte field. */
export function encodeParentName(name: string): Buffer {
  const le = Buffer.from(name, 'utf16le');
  if (le.length > 512) throw new VhdError('NAME_TOO_LONG', `parent name too long: ${name}`);
  const out = Buffer.alloc(512);
  le.copy(out);
  out.subarray(0, le.length).swap16();
  return out;
}

export function decodeParentName(field: Buffer): string {
  let end = 0;
  while (end + 1 < field.length && (field[end] !== 0 || field[end + 1] !== 0)) end += 2;
  const be = Buffer.from(field.subarray(0, end));
  return be.swap16().toString('utf16le');
}

export function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  if (h.raw) h.raw.copy(b, 768, 768, HEADER_SIZE);
  b.write(HEADER_COOKIE, 0, 'latin1');
  writeU64(b, 8, null);
  writeU64(b, 16, h.tableOffset);
  b.writeUInt32BE(h.headerVersion >>> 0, 24);
  b.writeUInt32BE(h.maxTableEntries >>> 0, 28);
  b.writeUInt32BE(h.blockSize >>> 0, 32);
  if (h.parentUuid) uuidToBytes(h.parentUuid).copy(b, 40);
  b.writeUInt32BE(h.parentTimestamp >>> 0, 56);
  encodeParentName(h.parentName).copy(b, 64);
  for (let i = 0; i < 8; i++) {
    const l = h.locators[i] ?? emptyLocator();
    const o = 576 + i * 24;
    b.writeUInt32BE(l.code >>> 0, o);
    b.writeUInt32BE(l.dataSpace >>> 0, o + 4);
    b.writeUInt32BE(l.dataLength >>> 0, o + 8);
    b.writeUInt32BE(0, o + 12);
    writeU64(b, o + 16, l.dataOffset);
  }
  b.writeUInt32BE(checksum(b, 36), 36);
  return b;
}

/** Decode and validate (cookie, checksum, fixed fields) a dynamic header; throws BAD_HEADER. */
export function decodeHeader(b: Buffer): Header {
  if (b.length < HEADER_SIZE) throw new VhdError('BAD_HEADER', 'short header');
  if (b.toString('latin1', 0, 8) !== HEADER_COOKIE) throw new VhdError('BAD_HEADER', 'bad header cookie');
  if (checksum(b.subarray(0, HEADER_SIZE), 36) !== b.readUInt32BE(36)) throw new VhdError('BAD_HEADER', 'bad header checksum');
  const tableOffset = readU64(b, 16, 'table offset', 'BAD_HEADER');
  if (tableOffset === null) throw new VhdError('BAD_HEADER', 'no BAT offset');
  const blockSize = b.readUInt32BE(32);
  if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0) throw new VhdError('BAD_HEADER', `bad block size ${blockSize}`);
  const locators: Locator[] = [];
  for (let i = 0; i < 8; i++) {
    const o = 576 + i * 24;
    const code = b.readUInt32BE(o);
    if (!KNOWN_PLATFORMS.has(code)) throw new VhdError('BAD_HEADER', `bad parent locator code 0x${code.toString(16)}`);
    locators.push({
      code,
      dataSpace: b.readUInt32BE(o + 4),
      dataLength: b.readUInt32BE(o + 8),
      dataOffset: readU64(b, o + 16, 'locator offset', 'BAD_HEADER') ?? 0,
    });
  }
  const pu = uuidFromBytes(b.subarray(40, 56));
  return {
    tableOffset,
    headerVersion: b.readUInt32BE(24),
    maxTableEntries: b.readUInt32BE(28),
    blockSize,
    parentUuid: pu === NULL_UUID ? null : pu,
    parentTimestamp: b.readUInt32BE(56),
    parentName: decodeParentName(b.subarray(64, 576)),
    locators,
    raw: Buffer.from(b.subarray(0, HEADER_SIZE)),
  };
}

/* ------------------------------------------------------------------ */
/* BAT                                                                 */
/* ------------------------------------------------------------------ */

export function batBytes(entries: number): number {
  return paddedBytes(entries * 4);
}

export function encodeBat(bat: Uint32Array, from = 0, to = bat.length): Buffer {
  const b = Buffer.alloc((to - from) * 4);
  for (let i = from; i < to; i++) b.writeUInt32BE(bat[i], (i - from) * 4);
  return b;
}

export function decodeBat(b: Buffer, entries: number): Uint32Array {
  const bat = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) bat[i] = b.readUInt32BE(i * 4);
  return bat;
}

/* ------------------------------------------------------------------ */
/* blktap batmap                                                       */
/* ------------------------------------------------------------------ */

export interface BatmapHeader {
  /** Byte offset of the map. */
  offset: number;
  /** Size of the map in sectors. */
  sizeSectors: number;
  version: number;
  checksum: number;
  marker: number;
  raw?: Buffer;
}

/** Where blktap puts the batmap header: right after the sector-padded BAT. */
export function batmapHeaderOffset(h: Pick<Header, 'tableOffset' | 'maxTableEntries'>): number {
  return h.tableOffset + batBytes(h.maxTableEntries);
}

export function newBatmapHeader(h: Pick<Header, 'tableOffset' | 'maxTableEntries'>): BatmapHeader {
  return {
    offset: batmapHeaderOffset(h) + BATMAP_HEADER_SIZE,
    sizeSectors: Math.max(1, Math.ceil(Math.ceil(h.maxTableEntries / 8) / SECTOR)),
    version: BATMAP_VERSION,
    checksum: 0,
    marker: 0,
  };
}

/**
 * The number of map bytes blktap's checksum covers: the sector-padded
 * (current_size >> 24) bytes, which depends on the virtual size rather than
 * on the BAT size.
 */
export function batmapChecksumBytes(currentSize: number): number {
  return paddedBytes(Math.floor(currentSize / 2 ** 24));
}

export function encodeBatmapHeader(m: BatmapHeader): Buffer {
  const b = Buffer.alloc(BATMAP_HEADER_SIZE);
  if (m.raw) m.raw.copy(b, 29, 29, BATMAP_HEADER_SIZE); // keyhash and reserved
  b.write(BATMAP_COOKIE, 0, 'latin1');
  writeU64(b, 8, m.offset);
  b.writeUInt32BE(m.sizeSectors >>> 0, 16);
  b.writeUInt32BE(m.version >>> 0, 20);
  b.writeUInt32BE(m.checksum >>> 0, 24);
  b.writeUInt8(m.marker & 0xff, 28);
  return b;
}

/** Returns null when there is no batmap (cookie absent); does not check the map checksum. */
export function decodeBatmapHeader(b: Buffer): BatmapHeader | null {
  if (b.length < BATMAP_HEADER_SIZE || b.toString('latin1', 0, 8) !== BATMAP_COOKIE) return null;
  const offset = b.readBigUInt64BE(8);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return {
    offset: Number(offset),
    sizeSectors: b.readUInt32BE(16),
    version: b.readUInt32BE(20),
    checksum: b.readUInt32BE(24),
    marker: b.readUInt8(28),
    raw: Buffer.from(b.subarray(0, BATMAP_HEADER_SIZE)),
  };
}

/* ------------------------------------------------------------------ */
/* bitmaps (MSB first: sector 0 is bit 0x80 of byte 0)                 */
/* ------------------------------------------------------------------ */

export function testBit(map: Uint8Array, n: number): boolean {
  return (map[n >> 3] & (0x80 >> (n & 7))) !== 0;
}

export function setBit(map: Uint8Array, n: number): void {
  map[n >> 3] |= 0x80 >> (n & 7);
}

/** Set bits [from, to). */
export function setBits(map: Uint8Array, from: number, to: number): void {
  let n = from;
  while (n < to && n & 7) setBit(map, n++);
  while (n + 8 <= to) {
    map[n >> 3] = 0xff;
    n += 8;
  }
  while (n < to) setBit(map, n++);
}

/** True when bits [from, to) are all set. */
export function allSet(map: Uint8Array, from: number, to: number): boolean {
  let n = from;
  while (n < to && n & 7) if (!testBit(map, n++)) return false;
  while (n + 8 <= to) {
    if (map[n >> 3] !== 0xff) return false;
    n += 8;
  }
  while (n < to) if (!testBit(map, n++)) return false;
  return true;
}

/** End (exclusive) of the run of bits equal to bit `n`, searching up to `limit`. */
export function runEnd(map: Uint8Array, n: number, limit: number): number {
  const v = testBit(map, n);
  const full = v ? 0xff : 0x00;
  let i = n + 1;
  while (i < limit && i & 7) {
    if (testBit(map, i) !== v) return i;
    i++;
  }
  while (i + 8 <= limit && map[i >> 3] === full) i += 8;
  while (i < limit) {
    if (testBit(map, i) !== v) return i;
    i++;
  }
  return limit;
}

/* ------------------------------------------------------------------ */
/* parent locators                                                     */
/* ------------------------------------------------------------------ */

/** Encode a locator's data as blktap does (MACX: UTF-8 URL, W2*U: UTF-16LE with backslashes). */
export function encodeLocatorData(code: number, location: string): Buffer {
  switch (code) {
    case PLAT_MACX:
      return Buffer.from(`file://${location}`, 'utf8');
    case PLAT_W2RU: {
      const rel = location.startsWith('./') ? location.slice(2) : location;
      const s = location.startsWith('/') ? location : `.\\${rel}`;
      return Buffer.from(s.replace(/\//g, '\\'), 'utf16le');
    }
    case PLAT_W2KU:
      return Buffer.from(location.replace(/\//g, '\\'), 'utf16le');
    default:
      throw new VhdError('INVALID_ARGUMENT', `cannot encode locator 0x${code.toString(16)}`);
  }
}

/** Decode a locator's data to a POSIX path (relative or absolute), or null if unusable. */
export function decodeLocatorData(code: number, data: Buffer): string | null {
  let s: string;
  switch (code) {
    case PLAT_MACX: {
      s = data.toString('utf8').replace(/\0+$/, '');
      if (!s.startsWith('file://')) return null;
      s = s.slice('file://'.length); // blktap writes the path as is, without %-escapes
      break;
    }
    case PLAT_W2KU:
    case PLAT_W2RU: {
      const even = data.subarray(0, data.length & ~1);
      s = even.toString('utf16le').replace(/\0+$/, '').replace(/\\/g, '/');
      if (/^[cC]:/.test(s)) s = s.slice(2);
      break;
    }
    default:
      return null;
  }
  return s.length ? s : null;
}
