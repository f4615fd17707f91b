// The disks of an imported XVA (xapi's Stream_vdi.recv_all): after ova.xml, each disk's 1 MiB
// chunks <Ref:n>/<%08d>, in increasing order, each followed by its checksum member (<name>.xxhash,
// XXH64 as 16 hex digits, or the older <name>.checksum, SHA-1). A chunk left out reads as zeros
// (the new VDI is empty). Written through the SR layer at n × 1 MiB; nothing may reach past a disk's
// virtual_size, and every disk must be complete when the archive ends.
import { createHash } from 'node:crypto';
import xxhash from 'xxhash-wasm';
import type { Emulator } from '../emulator.js';
import { openVdi, type VdiIo } from '../sm/index.js';
import { CHUNK_SIZE, CHECKSUM_EXTENSION } from './stream-vdi.js';
import { importFailure, invalidXva, prematureEof, readMember, type XvaArchive } from './read-archive.js';
import type { DiskToReceive } from './import-objects.js';

/** Stream_vdi.checksum_extension_sha: the checksums of exports before XXH64 */
const SHA_EXTENSION = '.checksum';
const CHUNK_NAME = /^(Ref:\d+)\/(\d{8})$/;
/** a checksum member holds a few dozen hex digits at most */
const MAX_CHECKSUM = 128;

let hasher: ReturnType<typeof xxhash> | null = null;
const h64 = async () => (await (hasher ??= xxhash())).h64Raw;

const ZERO_CHUNK = Buffer.alloc(CHUNK_SIZE);
const isAllZeros = (b: Buffer) => b.equals(ZERO_CHUNK.subarray(0, b.length));

export interface ReceiveOptions {
  /** checksum failures are ignored (xapi's `force`) */
  force: boolean;
  /** told the bytes of all disks dealt with so far */
  progress: (done: number) => void;
  /** runs before each chunk (cancellation) */
  check: () => void;
}

interface Receiving {
  disk: DiskToReceive;
  /** the last chunk number seen (-1: none) */
  last: number;
  /** where the disk's data has reached */
  reached: number;
  io: VdiIo | null;
}

async function computedChecksum(ext: string, data: Buffer): Promise<string> {
  if (ext === CHECKSUM_EXTENSION) return (await h64())(data).toString(16).toUpperCase().padStart(16, '0');
  return createHash('sha1').update(data).digest('hex');
}

export async function receiveDisks(emu: Emulator, archive: XvaArchive, disks: DiskToReceive[], o: ReceiveOptions): Promise<void> {
  const byId = new Map<string, Receiving>(disks.map((d) => [d.id, { disk: d, last: -1, reached: 0, io: null }]));
  const finished = new Set<string>();
  let current: Receiving | null = null;
  let before = 0;
  const close = async (r: Receiving) => {
    const io = r.io;
    r.io = null;
    if (io) {
      await io.flush();
      await io.close();
    }
  };
  try {
    for (;;) {
      o.check();
      const m = await archive.next();
      if (m === null) break;
      const match = CHUNK_NAME.exec(m.name);
      const r = match ? byId.get(match[1]) : undefined;
      // Stream_vdi: "Expected VDI chunk prefixed ...": anything but the next chunk of a disk
      if (!match || !r || finished.has(r.disk.id)) throw invalidXva();
      if (current !== r) {
        // a disk's chunks come together: the one before is over, and must be whole
        if (current) {
          if (current.reached < current.disk.size) throw invalidXva();
          finished.add(current.disk.id);
          before += current.disk.size;
          await close(current);
        }
        current = r;
      }
      const n = Number(match[2]);
      const offset = n * CHUNK_SIZE;
      if (n <= r.last || m.size > CHUNK_SIZE || offset + m.size > r.disk.size) throw invalidXva();
      const data = await readMember(m, CHUNK_SIZE);
      const sum = await archive.next();
      if (sum === null) throw prematureEof();
      const ext = sum.name.slice(m.name.length);
      if (!sum.name.startsWith(m.name) || (ext !== CHECKSUM_EXTENSION && ext !== SHA_EXTENSION)) {
        throw importFailure(`Failure("Found unsupported checksum file: ${sum.name}")`);
      }
      const original = (await readMember(sum, MAX_CHECKSUM)).toString('latin1').trim();
      const recomputed = await computedChecksum(ext, data);
      if (original.toLowerCase() !== recomputed.toLowerCase() && !o.force) {
        throw importFailure(`Stream_vdi.Invalid_checksum("Block ${m.name} checksum failed: original = ${original}; recomputed = ${recomputed}")`);
      }
      // a new VDI reads as zeros: zeros need no write (Stream_vdi's vdi_skip_zeros)
      if (!isAllZeros(data)) {
        r.io ??= await openVdi(emu, r.disk.vdi, { readOnly: false });
        await r.io.write(offset, data);
      }
      r.last = n;
      r.reached = offset + data.length;
      o.progress(before + r.reached);
    }
    // the archive ended: every disk must have come whole (its last chunk is always sent)
    for (const r of byId.values()) if (r.reached < r.disk.size) throw prematureEof();
    for (const r of byId.values()) await close(r);
  } finally {
    for (const r of byId.values()) {
      try {
        await close(r);
      } catch {
        /* the failure that brought us here is the one reported */
      }
    }
  }
}
