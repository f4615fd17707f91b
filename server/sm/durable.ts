// Durable file operations for SR contents: what survives a SIGKILL (or a power cut) is either the
// old state or the new one. A file is written under a temporary name, fsynced, renamed into place,
// and its directory fsynced so that the rename itself is on disk.
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/** fsync of a file or directory (a directory opened read-only is enough on Linux). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** rename(2) then fsync of the directory holding `to`. */
export async function renameDurably(from: string, to: string): Promise<void> {
  await rename(from, to);
  await fsyncPath(dirname(to));
}

/** Removes a file (if present) and makes the removal durable. */
export async function unlinkDurably(path: string): Promise<void> {
  await rm(path, { force: true });
  await fsyncPath(dirname(path));
}
