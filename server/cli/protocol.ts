// The thin-CLI protocol (xapi-cli-protocol): after the HTTP request, both sides exchange a
// handshake, then framed messages. Every integer is int32 little-endian, a string is its length
// then its bytes, a list its count then its items; a message is its payload's length then the
// payload (a tag, then the body). A Blob Chunk header is followed by that many raw bytes, outside
// the framing.

export const PROTOCOL_PREFIX = 'XenSource thin CLI protocol';
export const PROTOCOL_MAJOR = 0;
export const PROTOCOL_MINOR = 2;
/** prefix + major + minor */
export const HANDSHAKE_LENGTH = PROTOCOL_PREFIX.length + 8;

export type Command =
  | { t: 'Print'; text: string }
  | { t: 'Debug'; text: string }
  | { t: 'Load'; filename: string }
  | { t: 'HttpGet'; filename: string; path: string }
  | { t: 'HttpPut'; filename: string; path: string }
  | { t: 'HttpConnect'; path: string }
  | { t: 'Prompt' }
  | { t: 'Exit'; code: number }
  | { t: 'Error'; code: string; params: string[] }
  | { t: 'PrintStderr'; text: string };

export type Response = 'OK' | 'Wait' | 'Failed';
export type BlobHeader = { t: 'Chunk'; length: number } | { t: 'End' };

export type Message =
  | { kind: 'Command'; command: Command }
  | { kind: 'Response'; response: Response }
  | { kind: 'Blob'; blob: BlobHeader };

const TAG = { Command: 9, Response: 10, Blob: 11 } as const;
const COMMAND_TAG = { Print: 0, Load: 1, Prompt: 3, Exit: 4, HttpGet: 12, HttpPut: 13, Error: 14, Debug: 15, PrintStderr: 16, HttpConnect: 17 } as const;
const RESPONSE_TAG = { OK: 5, Failed: 6, Wait: 18 } as const;
const BLOB_TAG = { Chunk: 7, End: 8 } as const;

export class ProtocolError extends Error {}

// ───────────────────────── encoding ─────────────────────────

class Writer {
  private parts: Buffer[] = [];
  int(n: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(n | 0);
    this.parts.push(b);
    return this;
  }
  string(s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.int(b.length);
    this.parts.push(b);
    return this;
  }
  list(xs: string[]): this {
    this.int(xs.length);
    for (const x of xs) this.string(x);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function payload(m: Message): Buffer {
  const w = new Writer();
  switch (m.kind) {
    case 'Command': {
      const c = m.command;
      w.int(TAG.Command).int(COMMAND_TAG[c.t]);
      switch (c.t) {
        case 'Print': case 'Debug': case 'PrintStderr': w.string(c.text); break;
        case 'Load': w.string(c.filename); break;
        case 'HttpGet': case 'HttpPut': w.string(c.filename).string(c.path); break;
        case 'HttpConnect': w.string(c.path); break;
        case 'Prompt': break;
        case 'Exit': w.int(c.code); break;
        case 'Error': w.string(c.code).list(c.params); break;
      }
      break;
    }
    case 'Response':
      w.int(TAG.Response).int(RESPONSE_TAG[m.response]);
      break;
    case 'Blob':
      w.int(TAG.Blob).int(BLOB_TAG[m.blob.t]);
      if (m.blob.t === 'Chunk') w.int(m.blob.length);
      break;
  }
  return w.done();
}

/** A message with its length in front, as it goes on the wire. */
export function encodeMessage(m: Message): Buffer {
  const p = payload(m);
  const head = Buffer.alloc(4);
  head.writeInt32LE(p.length);
  return Buffer.concat([head, p]);
}

export const encodeCommand = (command: Command): Buffer => encodeMessage({ kind: 'Command', command });

export function encodeHandshake(major = PROTOCOL_MAJOR, minor = PROTOCOL_MINOR): Buffer {
  const b = Buffer.alloc(HANDSHAKE_LENGTH);
  b.write(PROTOCOL_PREFIX, 0, 'latin1');
  b.writeInt32LE(major, PROTOCOL_PREFIX.length);
  b.writeInt32LE(minor, PROTOCOL_PREFIX.length + 4);
  return b;
}

// ───────────────────────── decoding ─────────────────────────

class Reader {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  int(): number {
    if (this.at + 4 > this.b.length) throw new ProtocolError('truncated message');
    const n = this.b.readInt32LE(this.at);
    this.at += 4;
    return n;
  }
  string(): string {
    const n = this.int();
    if (n < 0 || this.at + n > this.b.length) throw new ProtocolError('truncated string');
    const s = this.b.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
  list(): string[] {
    const n = this.int();
    if (n < 0) throw new ProtocolError('negative list length');
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.string());
    return out;
  }
}

const byValue = <T extends Record<string, number>>(o: T) => new Map(Object.entries(o).map(([k, v]) => [v, k as keyof T]));
const commandByTag = byValue(COMMAND_TAG);
const responseByTag = byValue(RESPONSE_TAG);

/** The payload of one message (without its length). */
export function decodePayload(b: Buffer): Message {
  const r = new Reader(b);
  const tag = r.int();
  if (tag === TAG.Command) {
    const t = commandByTag.get(r.int());
    switch (t) {
      case 'Print': case 'Debug': case 'PrintStderr': return { kind: 'Command', command: { t, text: r.string() } };
      case 'Load': return { kind: 'Command', command: { t, filename: r.string() } };
      case 'HttpGet': case 'HttpPut': return { kind: 'Command', command: { t, filename: r.string(), path: r.string() } };
      case 'HttpConnect': return { kind: 'Command', command: { t, path: r.string() } };
      case 'Prompt': return { kind: 'Command', command: { t } };
      case 'Exit': return { kind: 'Command', command: { t, code: r.int() } };
      case 'Error': return { kind: 'Command', command: { t, code: r.string(), params: r.list() } };
      default: throw new ProtocolError('unknown command tag');
    }
  }
  if (tag === TAG.Response) {
    const t = responseByTag.get(r.int());
    if (!t) throw new ProtocolError('unknown response tag');
    return { kind: 'Response', response: t };
  }
  if (tag === TAG.Blob) {
    const t = r.int();
    if (t === BLOB_TAG.Chunk) return { kind: 'Blob', blob: { t: 'Chunk', length: r.int() } };
    if (t === BLOB_TAG.End) return { kind: 'Blob', blob: { t: 'End' } };
    throw new ProtocolError('unknown blob tag');
  }
  throw new ProtocolError(`unknown message tag ${tag}`);
}

export type Decoded =
  | { t: 'handshake'; major: number; minor: number }
  | { t: 'message'; message: Message }
  /** raw bytes that follow a Blob Chunk header */
  | { t: 'data'; data: Buffer };

/** Largest message accepted: commands carry text, never bulk data (that goes in chunks). */
const MAX_MESSAGE = 64 * 1024 * 1024;

/**
 * An incremental decoder: push bytes as they arrive, take what is complete. It expects the
 * handshake first (unless told otherwise), then messages; after a Blob Chunk header the next
 * `length` bytes come out as raw data.
 */
export class Decoder {
  private buf: Buffer = Buffer.alloc(0);
  private needHandshake: boolean;
  private raw = 0;

  constructor(opts: { handshake?: boolean } = {}) {
    this.needHandshake = opts.handshake ?? true;
  }

  push(chunk: Buffer): Decoded[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Decoded[] = [];
    for (;;) {
      if (this.raw > 0) {
        if (this.buf.length === 0) break;
        const n = Math.min(this.raw, this.buf.length);
        out.push({ t: 'data', data: this.buf.subarray(0, n) });
        this.buf = this.buf.subarray(n);
        this.raw -= n;
        continue;
      }
      if (this.needHandshake) {
        const have = Math.min(this.buf.length, PROTOCOL_PREFIX.length);
        if (this.buf.toString('latin1', 0, have) !== PROTOCOL_PREFIX.slice(0, have)) throw new ProtocolError('not a thin CLI server');
        if (this.buf.length < HANDSHAKE_LENGTH) break;
        out.push({ t: 'handshake', major: this.buf.readInt32LE(PROTOCOL_PREFIX.length), minor: this.buf.readInt32LE(PROTOCOL_PREFIX.length + 4) });
        this.buf = this.buf.subarray(HANDSHAKE_LENGTH);
        this.needHandshake = false;
        continue;
      }
      if (this.buf.length < 4) break;
      const n = this.buf.readInt32LE(0);
      if (n < 4 || n > MAX_MESSAGE) throw new ProtocolError(`bad message length ${n}`);
      if (this.buf.length < 4 + n) break;
      const message = decodePayload(this.buf.subarray(4, 4 + n));
      this.buf = this.buf.subarray(4 + n);
      out.push({ t: 'message', message });
      if (message.kind === 'Blob' && message.blob.t === 'Chunk') {
        if (message.blob.length < 0) throw new ProtocolError('negative chunk length');
        this.raw = message.blob.length;
      }
    }
    return out;
  }

  /** bytes received and not yet decoded */
  get pending(): number {
    return this.buf.length;
  }
}
