// An RFB server (RFB 3.3, 3.7 and 3.8, as qemu's VNC server speaks them) over a guest's text
// console. xapi has checked the session before the stream starts, so, as qemu behind xapi, it
// offers security type None. Raw encoding; any true-colour pixel format of 8, 16 or 32 bits (and
// a colour map at 8 bits); incremental update requests wait until the screen changes.
import { Framebuffer, HEIGHT, PALETTE, WIDTH, type Band } from './framebuffer.js';
import type { GuestTerminal } from './terminal.js';

/** What carries the byte stream (a WebSocket, or the socket of a CONNECT). */
export interface ConsolePipe {
  write(data: Buffer): void;
  close(): void;
}

interface PixelFormat {
  bpp: number;
  bigEndian: boolean;
  trueColour: boolean;
  redMax: number;
  greenMax: number;
  blueMax: number;
  redShift: number;
  greenShift: number;
  blueShift: number;
}

const DEFAULT_FORMAT: PixelFormat = {
  bpp: 32, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0,
};

const SECURITY_NONE = 1;
/** the longest cut text accepted from a client (it is dropped: the guest has no clipboard agent) */
const MAX_CUT_TEXT = 1 << 20;

interface Request {
  incremental: boolean;
  x: number;
  y: number;
  w: number;
  h: number;
}

type Phase = 'version' | 'security' | 'init' | 'normal' | 'closed';

/** Keysyms of the keys the login prompt understands (X11 keysymdef). */
function keyOf(keysym: number): string | null {
  if (keysym >= 0x20 && keysym <= 0x7e) return String.fromCharCode(keysym);
  if (keysym === 0xff0d || keysym === 0xff8d) return '\r';
  if (keysym === 0xff08) return '\b';
  if (keysym >= 0xffb0 && keysym <= 0xffb9) return String.fromCharCode(0x30 + keysym - 0xffb0);
  return null;
}

export class RfbServer {
  private phase: Phase = 'version';
  private minor = 8;
  private buf: Buffer = Buffer.alloc(0);
  private format: PixelFormat = DEFAULT_FORMAT;
  private encoded: Buffer[] = [];
  private readonly fb = new Framebuffer();
  private dirty: Band | null = null;
  private pending: Request | null = null;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly pipe: ConsolePipe,
    private readonly terminal: GuestTerminal,
    /** brings the terminal up to the emulator's clock */
    private readonly sync: () => void,
    private readonly name: string,
  ) {
    this.encodePalette();
    this.unsubscribe = terminal.subscribe(() => this.changed());
    pipe.write(Buffer.from('RFB 003.008\n', 'latin1'));
  }

  /** Bytes from the client. */
  receive(data: Buffer): void {
    if (this.phase === 'closed') return;
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    try {
      while ((this.phase as Phase) !== 'closed' && this.step());
    } catch {
      this.close();
    }
  }

  close(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.unsubscribe();
    this.pipe.close();
  }

  /** Handles one message if it is complete; false when more bytes are needed. */
  private step(): boolean {
    const b = this.buf;
    switch (this.phase) {
      case 'version': {
        if (b.length < 12) return false;
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(b.subarray(0, 12).toString('latin1'));
        if (!m || Number(m[1]) !== 3) return this.fail();
        const minor = Number(m[2]);
        // 3.3 and 3.7 as asked; anything newer gets 3.8 (Apple's 3.889 included), older 3.3
        this.minor = minor >= 8 ? 8 : minor === 7 ? 7 : 3;
        this.consume(12);
        if (this.minor === 3) {
          this.pipe.write(u32(SECURITY_NONE));
          this.phase = 'init';
        } else {
          this.pipe.write(Buffer.from([1, SECURITY_NONE]));
          this.phase = 'security';
        }
        return true;
      }
      case 'security': {
        if (b.length < 1) return false;
        const chosen = b[0];
        this.consume(1);
        if (chosen !== SECURITY_NONE) {
          if (this.minor === 8) {
            const reason = Buffer.from('security type not offered', 'latin1');
            this.pipe.write(Buffer.concat([u32(1), u32(reason.length), reason]));
          }
          return this.fail();
        }
        if (this.minor === 8) this.pipe.write(u32(0));
        this.phase = 'init';
        return true;
      }
      case 'init': {
        if (b.length < 1) return false;
        this.consume(1);
        this.pipe.write(this.serverInit());
        this.phase = 'normal';
        return true;
      }
      case 'normal':
        return this.message();
      default:
        return false;
    }
  }

  private message(): boolean {
    const b = this.buf;
    if (b.length < 1) return false;
    switch (b[0]) {
      case 0: // SetPixelFormat
        if (b.length < 20) return false;
        this.setPixelFormat(b.subarray(4, 20));
        this.consume(20);
        return true;
      case 2: { // SetEncodings: Raw is always understood; the others asked for are not used
        if (b.length < 4) return false;
        const n = b.readUInt16BE(2);
        if (b.length < 4 + 4 * n) return false;
        this.consume(4 + 4 * n);
        return true;
      }
      case 3: { // FramebufferUpdateRequest
        if (b.length < 10) return false;
        const req: Request = { incremental: b[1] !== 0, x: b.readUInt16BE(2), y: b.readUInt16BE(4), w: b.readUInt16BE(6), h: b.readUInt16BE(8) };
        this.consume(10);
        this.request(req);
        return true;
      }
      case 4: { // KeyEvent
        if (b.length < 8) return false;
        const down = b[1] !== 0;
        const key = keyOf(b.readUInt32BE(4));
        this.consume(8);
        if (down && key !== null) {
          this.sync();
          this.terminal.key(key);
        }
        return true;
      }
      case 5: // PointerEvent: a text console has no pointer
        if (b.length < 6) return false;
        this.consume(6);
        return true;
      case 6: { // ClientCutText
        if (b.length < 8) return false;
        const len = b.readUInt32BE(4);
        if (len > MAX_CUT_TEXT) return this.fail();
        if (b.length < 8 + len) return false;
        this.consume(8 + len);
        return true;
      }
      default:
        // a message this server never offered: its length is unknown, the stream is lost
        return this.fail();
    }
  }

  private request(req: Request): void {
    this.sync();
    this.mark(this.fb.draw(this.terminal.screen()));
    if (!req.incremental) {
      this.send(req);
      return;
    }
    this.pending = req;
    this.flushPending();
  }

  /** The terminal changed: an incremental request waiting for it is answered. */
  private changed(): void {
    if (this.phase !== 'normal' || !this.pending) return;
    this.mark(this.fb.draw(this.terminal.screen()));
    this.flushPending();
  }

  private flushPending(): void {
    const req = this.pending;
    if (!req || !this.dirty) return;
    const y0 = Math.max(req.y, this.dirty.y0);
    const y1 = Math.min(req.y + req.h, this.dirty.y1);
    if (y0 >= y1 || req.w === 0) return;
    this.pending = null;
    this.send({ ...req, y: y0, h: y1 - y0 });
  }

  private mark(band: Band | null): void {
    if (!band) return;
    this.dirty = this.dirty ? { y0: Math.min(this.dirty.y0, band.y0), y1: Math.max(this.dirty.y1, band.y1) } : band;
  }

  /** A FramebufferUpdate of one Raw rectangle (clipped to the screen). */
  private send(req: Request): void {
    const x = Math.min(req.x, WIDTH);
    const y = Math.min(req.y, HEIGHT);
    const w = Math.min(req.w, WIDTH - x);
    const h = Math.min(req.h, HEIGHT - y);
    if (this.dirty && y <= this.dirty.y0 && y + h >= this.dirty.y1 && x === 0 && w === WIDTH) this.dirty = null;
    const bytes = this.format.bpp / 8;
    // the pixels start at byte 16 of their own buffer: 32-bit pixels are written as words
    const out = Buffer.from(new ArrayBuffer(16 + w * h * bytes));
    out[0] = 0;
    out[1] = 0;
    out.writeUInt16BE(1, 2);
    out.writeUInt16BE(x, 4);
    out.writeUInt16BE(y, 6);
    out.writeUInt16BE(w, 8);
    out.writeUInt16BE(h, 10);
    out.writeInt32BE(0, 12); // Raw
    const px = this.fb.pixels;
    const enc = this.encoded;
    let o = 16;
    if (bytes === 4) {
      // each palette entry's bytes, as a word in this machine's byte order
      const words = Uint32Array.from(enc.map((e) => new Uint32Array(new Uint8Array(e).buffer)[0]));
      const dst = new Uint32Array(out.buffer, 16, w * h);
      let d = 0;
      for (let row = y; row < y + h; row++) {
        const base = row * WIDTH + x;
        for (let i = 0; i < w; i++) dst[d++] = words[px[base + i]];
      }
    } else {
      for (let row = y; row < y + h; row++) {
        const base = row * WIDTH + x;
        for (let i = 0; i < w; i++, o += bytes) enc[px[base + i]].copy(out, o);
      }
    }
    this.pipe.write(out);
  }

  private serverInit(): Buffer {
    const name = Buffer.from(this.name, 'utf8');
    const out = Buffer.alloc(24 + name.length);
    out.writeUInt16BE(WIDTH, 0);
    out.writeUInt16BE(HEIGHT, 2);
    writeFormat(out, 4, DEFAULT_FORMAT);
    out.writeUInt32BE(name.length, 20);
    name.copy(out, 24);
    return out;
  }

  private setPixelFormat(p: Buffer): void {
    const bpp = p[0];
    if (bpp !== 8 && bpp !== 16 && bpp !== 32) throw new Error(`unsupported bits-per-pixel ${bpp}`);
    this.format = {
      bpp, bigEndian: p[2] !== 0, trueColour: p[3] !== 0,
      redMax: p.readUInt16BE(4), greenMax: p.readUInt16BE(6), blueMax: p.readUInt16BE(8),
      redShift: p[10], greenShift: p[11], blueShift: p[12],
    };
    this.encodePalette();
    if (!this.format.trueColour) this.pipe.write(colourMap());
  }

  private encodePalette(): void {
    const f = this.format;
    const bytes = f.bpp / 8;
    this.encoded = PALETTE.map(([r, g, b], i) => {
      const v = f.trueColour
        ? ((scale(r, f.redMax) << f.redShift) | (scale(g, f.greenMax) << f.greenShift) | (scale(b, f.blueMax) << f.blueShift)) >>> 0
        : i;
      const out = Buffer.alloc(bytes);
      if (bytes === 1) out[0] = v & 0xff;
      else if (bytes === 2) f.bigEndian ? out.writeUInt16BE(v & 0xffff) : out.writeUInt16LE(v & 0xffff);
      else f.bigEndian ? out.writeUInt32BE(v) : out.writeUInt32LE(v);
      return out;
    });
  }

  private consume(n: number): void {
    this.buf = this.buf.subarray(n);
  }

  private fail(): boolean {
    this.close();
    return false;
  }
}

const scale = (v: number, max: number): number => Math.round((v * max) / 255);

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

function writeFormat(out: Buffer, at: number, f: PixelFormat): void {
  out[at] = f.bpp;
  out[at + 1] = f.bpp === 32 ? 24 : f.bpp;
  out[at + 2] = f.bigEndian ? 1 : 0;
  out[at + 3] = f.trueColour ? 1 : 0;
  out.writeUInt16BE(f.redMax, at + 4);
  out.writeUInt16BE(f.greenMax, at + 6);
  out.writeUInt16BE(f.blueMax, at + 8);
  out[at + 10] = f.redShift;
  out[at + 11] = f.greenShift;
  out[at + 12] = f.blueShift;
}

/** SetColourMapEntries for the palette (a client in colour-map mode). */
function colourMap(): Buffer {
  const out = Buffer.alloc(6 + 6 * PALETTE.length);
  out[0] = 1;
  out.writeUInt16BE(0, 2);
  out.writeUInt16BE(PALETTE.length, 4);
  PALETTE.forEach(([r, g, b], i) => {
    out.writeUInt16BE(r * 257, 6 + i * 6);
    out.writeUInt16BE(g * 257, 8 + i * 6);
    out.writeUInt16BE(b * 257, 10 + i * 6);
  });
  return out;
}
