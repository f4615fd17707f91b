// The tar framing of an XVA: POSIX ustar headers, each member's data padded to 512 bytes, two
// zero blocks at the end (what xapi's Tar_helpers write). Members are written one at a time, so
// a disk is streamed block by block and never held whole.
const BLOCK = 512;
const ZEROS = Buffer.alloc(BLOCK * 2);

function octal(buf: Buffer, offset: number, width: number, value: number): void {
  // width-1 octal digits then NUL, as GNU and POSIX tar both read
  buf.write(value.toString(8).padStart(width - 1, '0'), offset, width - 1, 'ascii');
  buf[offset + width - 1] = 0;
}

/** The 512-byte header of a regular file (Tar.Header.make's defaults: mode 0400, uid/gid 0). */
export function tarHeader(name: string, size: number, mtime = 0): Buffer {
  const h = Buffer.alloc(BLOCK);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar member name too long: ${name}`);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, 0o400);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, mtime);
  h.fill(0x20, 148, 156); // the checksum is computed with its own field as spaces
  h[156] = 0x30; // '0': a regular file
  h.write('ustar\u000000', 257, 8, 'binary');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i];
  h.write(sum.toString(8).padStart(6, '0') + '\u0000 ', 148, 8, 'binary');
  return h;
}

/** The zeros that pad a member of `size` bytes to a whole number of blocks. */
export function tarPadding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? ZEROS.subarray(0, 0) : ZEROS.subarray(0, BLOCK - rest);
}

/** The end of the archive. */
export const tarEnd = (): Buffer => ZEROS;
