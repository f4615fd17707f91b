// Where SR contents live on the emulator's disk. Every SR has its "mount point"
// <storage>/sr/<sr-uuid>/ (SM's /var/run/sr-mount/<sr-uuid>); a VDI of a VHD-based SR is
// <vdi-uuid>.vhd in it. Paths are only ever built from validated uuids and file names, and checked
// to stay inside the storage directory, so no API value can make the emulator touch other files.
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Emulator } from '../emulator.js';

/** What the paths need of an emulator: its storage directory (the offline checker has no more). */
export type StorageRoot = Pick<Emulator, 'storageDir'>;
import { XapiError } from '../dispatch/errors.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID.test(s);

export function assertUuid(s: string, what = 'uuid'): string {
  if (!isUuid(s)) throw new XapiError('INTERNAL_ERROR', [`invalid ${what}: ${JSON.stringify(s)}`]);
  return s;
}

/** A plain file name: no directory part, not "." or "..", no NUL. */
export function isPlainName(s: string): boolean {
  return s.length > 0 && s.length <= 255 && s !== '.' && s !== '..' && !/[/\\\0]/.test(s);
}

/** The storage root: the data directory, or the temporary one of a --memory emulator. */
export const storageRoot = (emu: StorageRoot): string => emu.storageDir;

/** Directory holding every SR mount point. */
export const srBase = (emu: StorageRoot): string => join(emu.storageDir, 'sr');

/** The mount point of an SR. */
export function srPath(emu: StorageRoot, srUuid: string): string {
  return inside(emu, join(srBase(emu), assertUuid(srUuid, 'SR uuid')));
}

/** A file of an SR (a validated plain name). */
export function srFile(emu: StorageRoot, srUuid: string, name: string): string {
  if (!isPlainName(name)) throw new XapiError('INTERNAL_ERROR', [`invalid file name: ${JSON.stringify(name)}`]);
  return inside(emu, join(srPath(emu, srUuid), name));
}

/** `p` if it lies inside the storage root, else an error. */
export function inside(emu: StorageRoot, p: string): string {
  const abs = resolve(p);
  if (!isInside(emu.storageDir, abs)) throw new XapiError('INTERNAL_ERROR', [`path outside the storage directory: ${p}`]);
  return abs;
}

export function isInside(root: string, p: string): boolean {
  const rel = relative(resolve(root), resolve(p));
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Whether a directory an API value names (a file SR's or ISO SR's location) may hold SR contents:
 * strictly inside the storage root, neither the SR mount points' directory nor inside or above it,
 * so it can hold neither the database nor another SR.
 */
export function isUsableLocation(emu: StorageRoot, p: string): boolean {
  const abs = resolve(p);
  const base = srBase(emu);
  return isInside(emu.storageDir, abs) && abs !== resolve(emu.storageDir) && !isInside(base, abs) && !isInside(abs, base);
}
