// Reading an XVA as it arrives (xapi's Import.with_open_archive): the first bytes tell the
// compression (zstd's or gzip's magic number, else a plain tar), the tar members then come one at
// a time and are never held whole beyond their (bounded) size. Member names are only ever compared
// with the names the format allows: nothing is written where a name says.
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import tar from 'tar-stream';
import { XapiError } from '../dispatch/errors.js';

/** Xapi_globs.ova_xml_filename */
export const OVA_XML = 'ova.xml';
/** The largest ova.xml read (xapi reads it whole into memory; a VM's metadata is far smaller). */
export const MAX_OVA_XML = 32 * 1024 * 1024;

/** a member as tar-stream gives it */
type Entry = tar.ExtractEvents['entry'][1];

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);

/** Import.with_error_handling: what is not a Server_error becomes IMPORT_ERROR [Printexc of it]. */
export const importFailure = (exn: string) => new XapiError('IMPORT_ERROR', [`INTERNAL_ERROR: [ ${exn} ]`]);
/** Stream_vdi's Failure "Invalid XVA file": a member out of place. */
export const invalidXva = () => importFailure('Failure("Invalid XVA file")');
export const prematureEof = () => new XapiError('IMPORT_ERROR_PREMATURE_EOF', []);

export interface Member {
  name: string;
  size: number;
  /** the member's bytes; must be read (or skipped) before the next member */
  body: AsyncIterable<Buffer>;
}

export type ArchiveCompression = 'none' | 'gzip' | 'zstd';

/**
 * An XVA read from `input`: `ova` is the metadata (the first member, which must be ova.xml), then
 * `next()` gives each following regular file until the end of the archive (null). Anything but a
 * regular file (links, devices, directories) is refused. A stream that stops inside a member
 * fails with IMPORT_ERROR_PREMATURE_EOF.
 */
export class XvaArchive {
  compression: ArchiveCompression = 'none';
  private entries!: AsyncIterator<Entry>;
  private current: Entry | null = null;
  private extract = tar.extract();
  private stopDecompressor: () => void = () => undefined;

  private constructor(private readonly input: AsyncIterable<Buffer>) {}

  static async open(input: AsyncIterable<Buffer>): Promise<{ archive: XvaArchive; ova: string }> {
    const a = new XvaArchive(input);
    await a.start();
    const first = await a.nextEntry();
    if (first === null) throw prematureEof();
    if (first.name !== OVA_XML) {
      a.close();
      throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', [OVA_XML, first.name]);
    }
    if (first.size > MAX_OVA_XML) {
      a.close();
      throw importFailure(`Failure("ova.xml too large: ${first.size} bytes")`);
    }
    const ova = (await readMember(first, MAX_OVA_XML)).toString('utf8');
    return { archive: a, ova };
  }

  /** Peeks at the first bytes for a compression magic, then feeds the tar reader. */
  private async start(): Promise<void> {
    const it = this.input[Symbol.asyncIterator]();
    const head: Buffer[] = [];
    let len = 0;
    let done = false;
    while (len < ZSTD_MAGIC.length) {
      const r = await it.next();
      if (r.done) {
        done = true;
        break;
      }
      head.push(r.value);
      len += r.value.length;
    }
    const first = Buffer.concat(head);
    async function* rest(): AsyncGenerator<Buffer> {
      if (first.length) yield first;
      if (done) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    }
    let source: Readable = Readable.from(rest(), { objectMode: false });
    source.on('error', (e) => this.extract.destroy(e));
    if (first.subarray(0, 4).equals(ZSTD_MAGIC)) {
      this.compression = 'zstd';
      source = this.zstd(source);
    } else if (first.subarray(0, 2).equals(GZIP_MAGIC)) {
      this.compression = 'gzip';
      const z = zlib.createGunzip();
      source.pipe(z);
      z.on('error', (e) => this.extract.destroy(e));
      this.stopDecompressor = () => z.destroy();
      source = z;
    }
    source.pipe(this.extract);
    this.entries = this.extract[Symbol.asyncIterator]();
  }

  /** The zstd program through pipes (Node 20's zlib has no zstd), as xapi runs it. */
  private zstd(source: Readable): Readable {
    const child = spawn('zstd', ['-d', '-q', '-c'], { stdio: ['pipe', 'pipe', 'ignore'] });
    child.on('error', (e) => this.extract.destroy(e));
    child.stdin.on('error', () => undefined);
    source.pipe(child.stdin);
    this.stopDecompressor = () => {
      source.unpipe(child.stdin);
      child.stdin.destroy();
      child.stdout.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    return child.stdout;
  }

  private async nextEntry(): Promise<Member | null> {
    if (this.current) {
      // whatever is left of the previous member is skipped
      this.current.resume();
      this.current = null;
    }
    let r: IteratorResult<Entry>;
    try {
      r = await this.entries.next();
    } catch (e) {
      throw e instanceof XapiError ? e : prematureEof();
    }
    if (r.done) return null;
    const entry = r.value;
    this.current = entry;
    const h = entry.header;
    if (h.type !== 'file' && h.type !== 'contiguous-file') {
      this.close();
      throw invalidXva();
    }
    const body = (async function* () {
      try {
        for await (const c of entry) yield c as Buffer;
      } catch (e) {
        throw e instanceof XapiError ? e : prematureEof();
      }
    })();
    return { name: h.name, size: h.size ?? 0, body };
  }

  /** The next regular file after ova.xml, or null at the end of the archive. */
  next(): Promise<Member | null> {
    return this.nextEntry();
  }

  /** Stops reading (the rest of the input is dropped). */
  close(): void {
    this.stopDecompressor();
    this.extract.destroy();
  }
}

/** A member's bytes, whole (only for small members: ova.xml, checksums). */
export async function readMember(m: Member, max: number): Promise<Buffer> {
  if (m.size > max) throw invalidXva();
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of m.body) {
    n += c.length;
    if (n > max) throw invalidXva();
    parts.push(c);
  }
  if (n !== m.size) throw prematureEof();
  return Buffer.concat(parts);
}
