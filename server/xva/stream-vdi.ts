// A disk inside an XVA (xapi's stream_vdi.ml): 1 MiB chunks named <prefix>/<%08d>, each followed by
// a member <name>.xxhash holding the chunk's XXH64 as 16 upper-case hex digits. Chunks that hold no
// data are skipped, except the first and the last, which the format always carries (the importer
// learns the disk's end from them). For a VHD, the chunks kept are those of the blocks allocated
// somewhere in the chain, written as they are (xapi's default, vhd_legacy_blocks_format); for any
// other disk, the chunks that are not all zeros.
import xxhash from 'xxhash-wasm';
import type { VdiIo } from '../sm/index.js';
import { BLOCK_SIZE } from '../../storage/vhd/index.js';
import { tarHeader, tarPadding } from './tar.js';

export const CHUNK_SIZE = 1024 * 1024;
export const CHECKSUM_EXTENSION = '.xxhash';

let hasher: ReturnType<typeof xxhash> | null = null;
const h64 = async () => (await (hasher ??= xxhash())).h64Raw;

/** Where the archive's bytes go: resolves when the consumer can take more. */
export interface TarSink {
  write(chunk: Buffer): Promise<void>;
}

const ZERO_CHUNK = Buffer.alloc(CHUNK_SIZE);
const isAllZeros = (b: Buffer) => b.equals(ZERO_CHUNK.subarray(0, b.length));

/** The chunk numbers to send, in increasing order (null: every chunk, zero-checked). */
function allocatedChunks(io: VdiIo, size: number): number[] | null {
  if (io.hasData === undefined || size === 0) return null;
  const last = Math.floor((size - 1) / CHUNK_SIZE);
  const perBlock = BLOCK_SIZE / CHUNK_SIZE;
  const out = new Set<number>([0]);
  const blocks = Math.ceil(size / BLOCK_SIZE);
  for (let b = 0; b < blocks; b++) {
    if (!io.hasData(b)) continue;
    for (let c = b * perBlock; c < (b + 1) * perBlock && c <= last; c++) out.add(c);
  }
  out.add(last);
  return [...out].sort((a, b) => a - b);
}

/** Stream_vdi.write_block: the chunk, then its checksum file. */
async function writeChunk(sink: TarSink, name: string, data: Buffer): Promise<void> {
  const hash = (await h64())(data).toString(16).toUpperCase().padStart(16, '0');
  await sink.write(Buffer.concat([tarHeader(name, data.length), data, tarPadding(data.length)]));
  const sum = Buffer.from(hash, 'ascii');
  await sink.write(Buffer.concat([tarHeader(name + CHECKSUM_EXTENSION, sum.length), sum, tarPadding(sum.length)]));
}

/**
 * Stream_vdi.send_one: the disk's chunks under `prefix`. `progress` is told each position reached
 * (bytes of the disk dealt with); `check` runs before each chunk (cancellation).
 */
export async function sendVdi(io: VdiIo, prefix: string, size: number, sink: TarSink, progress: (done: number) => void, check: () => void): Promise<void> {
  const chunkName = (n: number) => `${prefix}/${String(n).padStart(8, '0')}`;
  const send = async (n: number, zeroCheck: boolean, last: number) => {
    check();
    const offset = n * CHUNK_SIZE;
    const len = Math.min(CHUNK_SIZE, size - offset);
    const data = await io.read(offset, len);
    if (!zeroCheck || n === 0 || n === last || !isAllZeros(data)) await writeChunk(sink, chunkName(n), data);
    progress(offset + len);
  };
  if (size <= 0) return;
  const last = Math.floor((size - 1) / CHUNK_SIZE);
  const chunks = allocatedChunks(io, size);
  if (chunks === null) for (let n = 0; n <= last; n++) await send(n, true, last);
  else for (const n of chunks) await send(n, false, last);
}
