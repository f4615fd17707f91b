/**
 * The one error type of the VHD library. Every failure that comes from the
 * contents of a file or a stream (bad cookie, bad checksum, truncation, a
 * broken chain...) is a VhdError with a stable `code`; callers map codes to
 * XAPI/SM errors. Plain I/O errors (ENOENT, ENOSPC...) are wrapped as IO with
 * the errno code kept in `errno`.
 */
export type VhdErrorCode =
  | 'INVALID_SIZE' // requested virtual size outside [2 MiB, 2040 GiB]
  | 'INVALID_ARGUMENT' // bad uuid, negative offset, bad option
  | 'BAD_FOOTER' // no valid footer (cookie/checksum/fields)
  | 'BAD_HEADER' // dynamic header invalid (cookie/checksum/fields)
  | 'BAD_BAT' // BAT entry pointing outside the file or into metadata
  | 'TRUNCATED' // file or stream shorter than its metadata says
  | 'UNSUPPORTED' // valid VHD we do not handle (block size != 2 MiB, old tap 0.1...)
  | 'OUT_OF_RANGE' // I/O beyond the virtual size
  | 'READ_ONLY' // write on a read-only handle
  | 'CLOSED' // use after close()
  | 'NOT_DIFFERENCING' // parent operation on a disk without parent
  | 'PARENT_NOT_FOUND' // no parent locator resolves to a readable file
  | 'PARENT_MISMATCH' // the parent's uuid differs from the header's parent uuid
  | 'PARENT_NOT_OPEN' // chain read on a handle opened with parents:false
  | 'CHAIN_TOO_LONG' // more than MAX_CHAIN_SIZE files in a chain
  | 'SIZE_MISMATCH' // child smaller than parent, import larger than target...
  | 'NAME_TOO_LONG' // parent name does not fit in the 512-byte unicode field
  | 'BASE_NOT_IN_CHAIN' // differential export base unrelated to the leaf
  | 'BAD_INPUT' // corrupt import stream
  | 'IO';

export class VhdError extends Error {
  readonly code: VhdErrorCode;
  readonly path?: string;
  readonly errno?: string;
  constructor(code: VhdErrorCode, message: string, opts: { path?: string; errno?: string; cause?: unknown } = {}) {
    super(opts.path ? `${code}: ${message} (${opts.path})` : `${code}: ${message}`, { cause: opts.cause });
    this.name = 'VhdError';
    this.code = code;
    this.path = opts.path;
    this.errno = opts.errno;
  }
}

/** Re-throw anything that is not already a VhdError as VhdError('IO'). */
export function asVhdError(e: unknown, path?: string): VhdError {
  if (e instanceof VhdError) return e;
  const err = e as NodeJS.ErrnoException;
  return new VhdError('IO', err?.message ?? String(e), { path, errno: err?.code, cause: e });
}
