// The compression of an exported archive (xapi's Compression_algorithms): gzip from node:zlib;
// zstd from node:zlib where Node has it (22.15 and later), else the `zstd` program fed through a
// pipe, as xapi itself runs it. Without either, zstd is refused before anything is sent.
import { spawn } from 'node:child_process';
import * as zlib from 'node:zlib';
import type { Readable, Writable } from 'node:stream';

export type Compression = 'gzip' | 'zstd';

export interface Compressor {
  /** where the archive is written */
  input: Writable;
  /** the compressed bytes */
  output: Readable;
  /** stops at once (the archive will not be finished) */
  abort(): void;
}

type ZstdFactory = () => zlib.Gzip;
const zlibZstd = (zlib as unknown as { createZstdCompress?: ZstdFactory }).createZstdCompress;

/** A compressor for `kind`, or null when this machine has no zstd. */
export async function compressor(kind: Compression): Promise<Compressor | null> {
  if (kind === 'gzip' || zlibZstd !== undefined) {
    const z = kind === 'gzip' ? zlib.createGzip() : zlibZstd!();
    return { input: z, output: z, abort: () => z.destroy() };
  }
  const child = spawn('zstd', ['-q', '-c'], { stdio: ['pipe', 'pipe', 'ignore'] });
  const started = await new Promise<boolean>((resolve) => {
    child.once('spawn', () => resolve(true));
    child.once('error', () => resolve(false));
  });
  if (!started) return null;
  child.stdin.on('error', () => undefined);
  return {
    input: child.stdin,
    output: child.stdout,
    abort: () => {
      child.stdin.destroy();
      child.stdout.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
