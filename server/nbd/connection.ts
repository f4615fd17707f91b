// One NBD client connection, as xapi-nbd serves it: the fixed newstyle handshake, then the
// transmission phase on one VDI opened read-only through the SR layer. The export name is the one
// VDI.get_nbd_info hands out, `/<vdi-uuid>?session_id=<ref>`, and the session in it is checked.
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Emulator } from '../emulator.js';
import { checkSession } from '../auth/access.js';
import { openVdi } from '../sm/sm.js';
import type { VdiIo } from '../sm/driver.js';
import { BLOCK_SIZE } from '../../storage/vhd/format.js';
import {
  BASE_ALLOCATION, CMD, CMD_FLAG_REQ_ONE, ERRNO, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO, MAX_OPTION, MAX_REQUEST,
  NBDMAGIC, OPT, REP, REPLY_FLAG_DONE, REPLY_MAGIC, REPLY_TYPE, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO,
  STRUCTURED_REPLY_MAGIC, TFLAG,
} from './protocol.js';

class Closed extends Error {}

/** bytes buffered from a client before reading from it pauses: a full request and then some */
const HIGH_WATER = MAX_REQUEST + 1024 * 1024;

/** Reads exact byte counts from a socket as they arrive. */
class Reader {
  private chunks: Buffer[] = [];
  private len = 0;
  private ended = false;
  private wake: (() => void) | null = null;
  private readonly onData = (c: Buffer) => {
    this.chunks.push(c);
    this.len += c.length;
    // a client that sends requests without reading the replies is not buffered without end
    if (this.len > HIGH_WATER) this.sock.pause();
    this.notify();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.notify();
  };
  constructor(private readonly sock: Socket) {
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
  }
  /** stops reading (the socket is handed to TLS); false if bytes came that were not read */
  detach(): boolean {
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    return this.len === 0;
  }
  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
  async read(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    while (this.len < n) {
      if (this.ended) throw new Closed();
      if (this.sock.isPaused()) this.sock.resume();
      await new Promise<void>((r) => (this.wake = r));
    }
    // take whole chunks up to n, splitting the last: no copy of what stays buffered
    let out: Buffer;
    if (this.chunks[0].length >= n) {
      out = this.chunks[0].subarray(0, n);
      this.chunks[0] = this.chunks[0].subarray(n);
      if (this.chunks[0].length === 0) this.chunks.shift();
    } else {
      const parts: Buffer[] = [];
      let need = n;
      while (need > 0) {
        const c = this.chunks[0];
        if (c.length <= need) {
          parts.push(c);
          this.chunks.shift();
          need -= c.length;
        } else {
          parts.push(c.subarray(0, need));
          this.chunks[0] = c.subarray(need);
          need = 0;
        }
      }
      out = Buffer.concat(parts, n);
    }
    this.len -= n;
    return out;
  }
}

/** The hosts this listener stands for; exports are served for SRs attached there only. */
export interface NbdHost {
  emu: Emulator;
  hosts: string[];
  tls(): Promise<{ key: string; cert: string }>;
}

/** xapi-nbd serves TLS only when a network has the `nbd` purpose; `insecure_nbd` is plain NBD. */
const tlsRequired = (emu: Emulator): boolean => {
  for (const [, row] of emu.db.table('network')) if ((row.rec.purpose as string[]).includes('nbd')) return true;
  return false;
};

type Export = { vdi: string; size: number } | { error: number; message: string };

const TRANSMISSION_FLAGS = TFLAG.HAS_FLAGS | TFLAG.READ_ONLY | TFLAG.CAN_MULTI_CONN;

/** The VDI an export name stands for, if the session in it is valid and the VDI is on an SR this
 * host has attached. */
function resolveExport({ emu, hosts }: NbdHost, name: string): Export {
  let uuid: string;
  let session: string | null;
  try {
    const u = new URL(name.startsWith('/') ? name : `/${name}`, 'nbd://export');
    uuid = decodeURIComponent(u.pathname.slice(1));
    session = u.searchParams.get('session_id');
  } catch {
    return { error: REP.ERR_UNKNOWN, message: 'export name not understood' };
  }
  if (!session) return { error: REP.ERR_POLICY, message: 'the export name carries no session_id' };
  try {
    checkSession(emu, session);
  } catch {
    return { error: REP.ERR_POLICY, message: 'invalid session' };
  }
  const vdi = emu.db.refByUuid('VDI', uuid);
  const rec = vdi === undefined ? undefined : emu.db.get('VDI', vdi);
  if (vdi === undefined || !rec || rec.type === 'cbt_metadata') return { error: REP.ERR_UNKNOWN, message: `no such VDI: ${uuid}` };
  const attached = (emu.db.get('SR', String(rec.SR))?.PBDs as string[] | undefined ?? []).some((p) => {
    const pbd = emu.db.get('PBD', p);
    return pbd !== undefined && hosts.includes(String(pbd.host)) && pbd.currently_attached === true;
  });
  if (!attached) return { error: REP.ERR_UNKNOWN, message: `the SR of VDI ${uuid} is not attached on this host` };
  return { vdi, size: Number(rec.virtual_size) };
}

/** Runs one connection to its end; never rejects. */
export async function serveConnection(raw: Socket, h: NbdHost): Promise<void> {
  let sock: Socket = raw;
  let reader = new Reader(sock);
  let io: VdiIo | null = null;
  const write = (...bufs: Buffer[]): Promise<void> =>
    new Promise((resolve, reject) => {
      if (sock.destroyed) return reject(new Closed());
      sock.cork();
      for (const [i, b] of bufs.entries()) sock.write(b, i === bufs.length - 1 ? (e) => (e ? reject(new Closed()) : resolve()) : undefined);
      sock.uncork();
    });
  try {
    // ---- handshake ----
    const greeting = Buffer.alloc(18);
    NBDMAGIC.copy(greeting, 0);
    IHAVEOPT.copy(greeting, 8);
    greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    await write(greeting);
    const clientFlags = (await reader.read(4)).readUInt32BE(0);
    if (!(clientFlags & FLAG_FIXED_NEWSTYLE)) return;
    const noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0;
    let structured = false;
    let allocationContext = false;
    const mustTls = tlsRequired(h.emu);

    const reply = (opt: number, type: number, data: Buffer = Buffer.alloc(0)) => {
      const b = Buffer.alloc(20 + data.length);
      b.writeBigUInt64BE(REPLY_MAGIC, 0);
      b.writeUInt32BE(opt, 8);
      b.writeUInt32BE(type >>> 0, 12);
      b.writeUInt32BE(data.length, 16);
      data.copy(b, 20);
      return write(b);
    };
    const replyError = (opt: number, type: number, message: string) => reply(opt, type, Buffer.from(message));

    for (;;) {
      const head = await reader.read(16);
      if (!head.subarray(0, 8).equals(IHAVEOPT)) return;
      const opt = head.readUInt32BE(8);
      const len = head.readUInt32BE(12);
      if (len > MAX_OPTION) return; // nothing legitimate is that long
      const data = await reader.read(len);

      if (opt === OPT.STARTTLS) {
        if (sock instanceof TLSSocket) await replyError(opt, REP.ERR_INVALID, 'TLS is already on');
        else if (len) await replyError(opt, REP.ERR_INVALID, 'STARTTLS takes no data');
        else {
          const creds = await h.tls();
          await reply(opt, REP.ACK);
          if (!reader.detach()) return; // bytes sent before the TLS handshake: a confused or hostile client
          const secure = new TLSSocket(sock, { isServer: true, key: creds.key, cert: creds.cert });
          secure.on('error', () => undefined);
          sock = secure;
          reader = new Reader(secure);
        }
        continue;
      }
      if (mustTls && !(sock instanceof TLSSocket) && opt !== OPT.ABORT) {
        // EXPORT_NAME has no error reply: the connection ends
        if (opt === OPT.EXPORT_NAME) return;
        await replyError(opt, REP.ERR_TLS_REQD, 'TLS is required');
        continue;
      }

      if (opt === OPT.EXPORT_NAME) {
        const ex = resolveExport(h, data.toString('utf8'));
        if ('error' in ex) return; // this option has no error reply: the connection ends
        io = await openVdi(h.emu, ex.vdi, { readOnly: true }).catch(() => null);
        if (!io) return;
        const b = Buffer.alloc(noZeroes ? 10 : 134);
        b.writeBigUInt64BE(BigInt(io.virtualSize), 0);
        b.writeUInt16BE(TRANSMISSION_FLAGS, 8);
        await write(b);
        break;
      }
      if (opt === OPT.ABORT) {
        await reply(opt, REP.ACK).catch(() => undefined);
        return;
      }
      if (opt === OPT.LIST) {
        // every export needs a session in its name: there is nothing to list without one
        await (len ? replyError(opt, REP.ERR_INVALID, 'LIST takes no data') : reply(opt, REP.ACK));
        continue;
      }
      if (opt === OPT.STRUCTURED_REPLY) {
        if (len) await replyError(opt, REP.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
        else {
          structured = true;
          await reply(opt, REP.ACK);
        }
        continue;
      }
      if (opt === OPT.LIST_META_CONTEXT || opt === OPT.SET_META_CONTEXT) {
        const queries = parseMetaQueries(data);
        if (!queries) {
          await replyError(opt, REP.ERR_INVALID, 'malformed meta context request');
          continue;
        }
        if (opt === OPT.SET_META_CONTEXT && !structured) {
          await replyError(opt, REP.ERR_INVALID, 'structured replies first');
          continue;
        }
        const ex = resolveExport(h, queries.name);
        if ('error' in ex) {
          await replyError(opt, ex.error, ex.message);
          continue;
        }
        const wanted = queries.list.length === 0 ? opt === OPT.LIST_META_CONTEXT : queries.list.some((q) => q === BASE_ALLOCATION || q === 'base:');
        if (opt === OPT.SET_META_CONTEXT) allocationContext = wanted;
        if (wanted) {
          const name = Buffer.from(BASE_ALLOCATION);
          const b = Buffer.alloc(4 + name.length);
          b.writeUInt32BE(opt === OPT.SET_META_CONTEXT ? 1 : 0, 0);
          name.copy(b, 4);
          await reply(opt, REP.META_CONTEXT, b);
        }
        await reply(opt, REP.ACK);
        continue;
      }
      if (opt === OPT.INFO || opt === OPT.GO) {
        const req = parseInfoRequest(data);
        if (!req) {
          await replyError(opt, REP.ERR_INVALID, 'malformed request');
          continue;
        }
        const ex = resolveExport(h, req.name);
        if ('error' in ex) {
          await replyError(opt, ex.error, ex.message);
          continue;
        }
        let size = ex.size;
        if (opt === OPT.GO) {
          try {
            io = await openVdi(h.emu, ex.vdi, { readOnly: true });
          } catch (e) {
            // the SR went away, the disk cannot be read ...: the client may try another export
            await replyError(opt, REP.ERR_UNKNOWN, (e as Error).message);
            continue;
          }
          size = io.virtualSize;
        }
        const info = Buffer.alloc(12);
        info.writeUInt16BE(INFO.EXPORT, 0);
        info.writeBigUInt64BE(BigInt(size), 2);
        info.writeUInt16BE(TRANSMISSION_FLAGS, 10);
        await reply(opt, REP.INFO, info);
        if (req.infos.includes(INFO.BLOCK_SIZE)) {
          const bs = Buffer.alloc(14);
          bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
          bs.writeUInt32BE(1, 2);
          bs.writeUInt32BE(4096, 6);
          bs.writeUInt32BE(MAX_REQUEST, 10);
          await reply(opt, REP.INFO, bs);
        }
        await reply(opt, REP.ACK);
        if (opt === OPT.GO) break;
        continue;
      }
      await replyError(opt, REP.ERR_UNSUP, 'option not supported');
    }

    // ---- transmission ----
    await transmission(io!, reader, write, structured, allocationContext);
  } catch (e) {
    if (!(e instanceof Closed)) console.error(`xapi-emu: nbd: ${(e as Error).message}`);
  } finally {
    sock.destroy();
    raw.destroy();
    await io?.close().catch(() => undefined);
  }
}

function parseInfoRequest(d: Buffer): { name: string; infos: number[] } | null {
  if (d.length < 6) return null;
  const n = d.readUInt32BE(0);
  if (4 + n + 2 > d.length) return null;
  const count = d.readUInt16BE(4 + n);
  if (4 + n + 2 + count * 2 !== d.length) return null;
  const infos = Array.from({ length: count }, (_, i) => d.readUInt16BE(6 + n + 2 * i));
  return { name: d.subarray(4, 4 + n).toString('utf8'), infos };
}

function parseMetaQueries(d: Buffer): { name: string; list: string[] } | null {
  if (d.length < 8) return null;
  const n = d.readUInt32BE(0);
  if (4 + n + 4 > d.length) return null;
  const count = d.readUInt32BE(4 + n);
  let at = 8 + n;
  const list: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > d.length) return null;
    const l = d.readUInt32BE(at);
    if (at + 4 + l > d.length) return null;
    list.push(d.subarray(at + 4, at + 4 + l).toString('utf8'));
    at += 4 + l;
  }
  return at === d.length ? { name: d.subarray(4, 4 + n).toString('utf8'), list } : null;
}

/** base:allocation extents of [offset, end): 2 MiB blocks that no file of the VHD chain holds
 * read as zeros and are holes; the rest is data. */
function extents(io: VdiIo, offset: number, end: number, one: boolean): Buffer {
  const out: number[] = [];
  let at = offset;
  while (at < end) {
    const block = Math.floor(at / BLOCK_SIZE);
    const stop = Math.min(end, (block + 1) * BLOCK_SIZE);
    const state = io.hasData && !io.hasData(block) ? STATE_HOLE | STATE_ZERO : 0;
    const last = out.length - 2;
    // a descriptor's length is 32 bits: long runs split before they overflow it
    if (last >= 0 && out[last + 1] === state && out[last] + (stop - at) <= 0xfff00000) out[last] += stop - at;
    else {
      if (one && out.length) break;
      out.push(stop - at, state);
    }
    at = stop;
  }
  const b = Buffer.alloc(4 + out.length * 4);
  b.writeUInt32BE(1, 0); // the context id given at SET_META_CONTEXT
  out.forEach((v, i) => b.writeUInt32BE(v, 4 + i * 4));
  return b;
}

/** A structured read: unallocated 2 MiB blocks go as holes (no bytes on the wire), the rest as data. */
async function structuredRead(
  io: VdiIo,
  cookie: Buffer,
  offset: number,
  length: number,
  chunk: (cookie: Buffer, type: number, payload: Buffer, done?: boolean, data?: Buffer) => Promise<void>,
): Promise<void> {
  const pieces: { at: number; len: number; hole: boolean }[] = [];
  for (let at = offset, end = offset + length; at < end; ) {
    const block = Math.floor(at / BLOCK_SIZE);
    const stop = Math.min(end, (block + 1) * BLOCK_SIZE);
    const hole = io.hasData ? !io.hasData(block) : false;
    const last = pieces[pieces.length - 1];
    if (last && last.hole === hole) last.len += stop - at;
    else pieces.push({ at, len: stop - at, hole });
    at = stop;
  }
  if (pieces.length === 0) return chunk(cookie, REPLY_TYPE.NONE, Buffer.alloc(0));
  for (const [i, p] of pieces.entries()) {
    const done = i === pieces.length - 1;
    const head = Buffer.alloc(p.hole ? 12 : 8);
    head.writeBigUInt64BE(BigInt(p.at), 0);
    if (p.hole) {
      head.writeUInt32BE(p.len, 8);
      await chunk(cookie, REPLY_TYPE.OFFSET_HOLE, head, done);
    } else {
      await chunk(cookie, REPLY_TYPE.OFFSET_DATA, head, done, await io.read(p.at, p.len));
    }
  }
}

async function transmission(io: VdiIo, reader: Reader, write: (...b: Buffer[]) => Promise<void>, structured: boolean, allocation: boolean): Promise<void> {
  const size = io.virtualSize;
  const simple = (cookie: Buffer, error: number, data?: Buffer) => {
    const b = Buffer.alloc(16);
    b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    b.writeUInt32BE(error, 4);
    cookie.copy(b, 8);
    return data ? write(b, data) : write(b);
  };
  const chunk = (cookie: Buffer, type: number, payload: Buffer, done = true, data?: Buffer) => {
    const b = Buffer.alloc(20);
    b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    b.writeUInt16BE(done ? REPLY_FLAG_DONE : 0, 4);
    b.writeUInt16BE(type, 6);
    cookie.copy(b, 8);
    b.writeUInt32BE(payload.length + (data?.length ?? 0), 16);
    return data ? write(b, payload, data) : write(b, payload);
  };
  const fail = (cookie: Buffer, errno: number, message = '') => {
    if (!structured) return simple(cookie, errno);
    const m = Buffer.from(message);
    const p = Buffer.alloc(6 + m.length);
    p.writeUInt32BE(errno, 0);
    p.writeUInt16BE(m.length, 4);
    m.copy(p, 6);
    return chunk(cookie, REPLY_TYPE.ERROR, p);
  };

  for (;;) {
    const req = await reader.read(28);
    if (req.readUInt32BE(0) !== REQUEST_MAGIC) return;
    const flags = req.readUInt16BE(4);
    const type = req.readUInt16BE(6);
    const cookie = Buffer.from(req.subarray(8, 16));
    const offset = Number(req.readBigUInt64BE(16));
    const length = req.readUInt32BE(24);
    const inRange = offset <= size && length <= size - offset;

    switch (type) {
      case CMD.DISC:
        return;
      case CMD.READ: {
        if (length > MAX_REQUEST) await fail(cookie, ERRNO.EOVERFLOW, 'request too large');
        else if (!inRange) await fail(cookie, ERRNO.EINVAL, 'beyond the end of the disk');
        else {
          try {
            if (!structured) await simple(cookie, 0, await io.read(offset, length));
            else await structuredRead(io, cookie, offset, length, chunk);
          } catch (e) {
            if (e instanceof Closed) throw e;
            await fail(cookie, ERRNO.EIO, (e as Error).message);
          }
        }
        break;
      }
      case CMD.WRITE:
        // the payload follows the request: consume it before refusing
        if (length > MAX_REQUEST) return;
        await reader.read(length);
        await fail(cookie, ERRNO.EPERM, 'read-only export');
        break;
      case CMD.TRIM:
      case CMD.WRITE_ZEROES:
        await fail(cookie, ERRNO.EPERM, 'read-only export');
        break;
      case CMD.FLUSH:
      case CMD.CACHE:
        await (inRange ? (structured ? chunk(cookie, REPLY_TYPE.NONE, Buffer.alloc(0)) : simple(cookie, 0)) : fail(cookie, ERRNO.EINVAL));
        break;
      case CMD.BLOCK_STATUS:
        if (!structured || !allocation) await fail(cookie, ERRNO.EINVAL, 'no meta context negotiated');
        else if (!inRange || length === 0) await fail(cookie, ERRNO.EINVAL, 'beyond the end of the disk');
        else await chunk(cookie, REPLY_TYPE.BLOCK_STATUS, extents(io, offset, offset + length, (flags & CMD_FLAG_REQ_ONE) !== 0));
        break;
      default:
        await fail(cookie, ERRNO.EINVAL, 'unknown command');
    }
  }
}
