/** Small I/O helpers: whole reads/writes on a FileHandle, shared zero buffers. */
import type { FileHandle } from 'node:fs/promises';
import { VhdError } from './errors.js';
import { BLOCK_SIZE, BITMAP_SIZE } from './format.js';

/** 2 MiB of zeros, shared: never write into it. */
export const ZERO_BLOCK: Buffer = Buffer.alloc(BLOCK_SIZE);
/** A bitmap with every sector present. */
export const FULL_BITMAP: Buffer = Buffer.alloc(BITMAP_SIZE, 0xff);

export function isZero(b: Uint8Array): boolean {
  let off = 0;
  while (off < b.length) {
    const n = Math.min(ZERO_BLOCK.length, b.length - off);
    if (Buffer.compare(b.subarray(off, off + n), ZERO_BLOCK.subarray(0, n)) !== 0) return false;
    off += n;
  }
  return true;
}

/** pread exactly `length` bytes or throw TRUNCATED. */
export async function readExact(fh: FileHandle, buf: Buffer, offset: number, length: number, position: number, path?: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, offset + done, length - done, position + done);
    if (bytesRead === 0) {
      throw new VhdError('TRUNCATED', `end of file at ${position + done} while reading ${length} bytes at ${position}`, { path });
    }
    done += bytesRead;
  }
}

export async function readAt(fh: FileHandle, position: number, length: number, path?: string): Promise<Buffer> {
  const b = Buffer.allocUnsafe(length);
  await readExact(fh, b, 0, length, position, path);
  return b;
}

/** pwrite all of `buffers` contiguously at `position` (one writev in the common case). */
export async function writeAll(fh: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let bufs = buffers.filter((b) => b.length > 0);
  let pos = position;
  while (bufs.length) {
    const { bytesWritten } = bufs.length === 1
      ? await fh.write(bufs[0], 0, bufs[0].length, pos)
      : await fh.writev(bufs, pos);
    pos += bytesWritten;
    let left = bytesWritten;
    while (left > 0 && bufs.length) {
      if (bufs[0].length <= left) {
        left -= bufs[0].length;
        bufs.shift();
      } else {
        bufs[0] = bufs[0].subarray(left);
        left = 0;
      }
    }
  }
}

/** A promise-chain mutex. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(() => fn());
    this.tail = p.catch(() => undefined);
    return p;
  }
}
