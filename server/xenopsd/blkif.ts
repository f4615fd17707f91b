// The PV block datapath: blkfront (the guest's driver) ⇄ a blkif shared ring ⇄ tapback/tapdisk
// (the backend, "vbd3"). The ring is a real xen/include/public/io/blkif.h ring in a 4 KiB page:
// a 64-byte sring header (req_prod, req_event, rsp_prod, rsp_event, padding) followed by 32 slots
// of 112 bytes, each holding a request (on x86_64: u8 operation, u8 nr_segments, u16 handle,
// 4 bytes of padding, u64 id, u64 sector_number, 11 × {u32 gref, u8 first_sect, u8 last_sect,
// 2 bytes of padding}) or, once served, a response (u64 id, u8 operation, i16 status). Data moves
// through "granted pages": 4 KiB pages of the guest's memory named by grant references; one
// segment moves at most 8 sectors of one page, one request at most 11 segments (44 KiB).
//
// The front keeps persistent grants (one page per segment of every slot, granted once), fills
// as many slots as are free and notifies; the back consumes every request pushed so far at
// once and merges runs of contiguous writes (or reads) into one Tapdisk.write (read), as
// tapdisk merges adjacent requests, so a sequential write costs one VHD write and one flush per
// ring-full (up to 1.4 MiB) rather than per request.
import type { Tapdisk } from './tapdisk.js';

export const BLKIF_OP_READ = 0;
export const BLKIF_OP_WRITE = 1;
export const BLKIF_OP_WRITE_BARRIER = 2;
export const BLKIF_OP_FLUSH_DISKCACHE = 3;
export const BLKIF_OP_RESERVED_1 = 4;
export const BLKIF_OP_DISCARD = 5;

export const BLKIF_RSP_OKAY = 0;
export const BLKIF_RSP_ERROR = -1;
export const BLKIF_RSP_EOPNOTSUPP = -2;

export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
export const PAGE_SIZE = 4096;
export const SECTOR_SIZE = 512;
export const SECTORS_PER_PAGE = PAGE_SIZE / SECTOR_SIZE;
/** bytes one request moves at most (11 segments of a full page) */
export const MAX_REQUEST_BYTES = BLKIF_MAX_SEGMENTS_PER_REQUEST * PAGE_SIZE;

/** struct blkif_sring's header: four u32 indexes and 48 bytes of padding */
export const SRING_HEADER_SIZE = 64;
/** sizeof(blkif_request_t) on x86_64 */
export const BLKIF_REQUEST_SIZE = 112;
/** sizeof(blkif_response_t) on x86_64 (u64 id, u8 operation, i16 status, padded to 8) */
export const BLKIF_RESPONSE_SIZE = 16;
/** offsets inside a request */
export const REQ = { operation: 0, nr_segments: 1, handle: 2, id: 8, sector_number: 16, seg: 24, seg_size: 8 } as const;
/** offsets inside a response */
export const RSP = { id: 0, operation: 8, status: 10 } as const;

/** __RING_SIZE: the slots that fit after the header, rounded down to a power of two. */
export function ringSize(pages = 1): number {
  const fit = Math.floor((pages * PAGE_SIZE - SRING_HEADER_SIZE) / BLKIF_REQUEST_SIZE);
  return 2 ** Math.floor(Math.log2(fit));
}

/** The first grant references are reserved by Xen (GNTTAB_NR_RESERVED_ENTRIES). */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;

/** The guest's granted pages: one Buffer of pages, gref n naming page n - 8. */
export class GrantTable {
  readonly pages: Buffer;
  private readonly free: number[] = [];
  constructor(readonly count: number) {
    this.pages = Buffer.alloc(count * PAGE_SIZE);
    for (let i = count - 1; i >= 0; i--) this.free.push(i + GNTTAB_NR_RESERVED_ENTRIES);
  }

  /** gnttab_grant_foreign_access */
  grant(): number {
    const g = this.free.pop();
    if (g === undefined) throw new Error('grant table full');
    return g;
  }

  /** gnttab_end_foreign_access */
  end(gref: number): void {
    this.free.push(gref);
  }

  /** the byte offset of a granted page in `pages`, or -1 for a reference that names none */
  offsetOf(gref: number): number {
    const i = gref - GNTTAB_NR_RESERVED_ENTRIES;
    return Number.isInteger(i) && i >= 0 && i < this.count ? i * PAGE_SIZE : -1;
  }
}

/** A shared ring page (struct blkif_sring) with its header indexes. Indexes are free-running
 * u32 counters; a slot is index & (size - 1). */
export class SharedRing {
  readonly page: Buffer;
  constructor(readonly size = ringSize(1), pages = 1) {
    this.page = Buffer.alloc(pages * PAGE_SIZE);
  }
  get reqProd(): number { return this.page.readUInt32LE(0); }
  set reqProd(v: number) { this.page.writeUInt32LE(v >>> 0, 0); }
  get reqEvent(): number { return this.page.readUInt32LE(4); }
  set reqEvent(v: number) { this.page.writeUInt32LE(v >>> 0, 4); }
  get rspProd(): number { return this.page.readUInt32LE(8); }
  set rspProd(v: number) { this.page.writeUInt32LE(v >>> 0, 8); }
  get rspEvent(): number { return this.page.readUInt32LE(12); }
  set rspEvent(v: number) { this.page.writeUInt32LE(v >>> 0, 12); }
  /** the byte offset of the slot of a ring index */
  slot(index: number): number {
    return SRING_HEADER_SIZE + ((index >>> 0) & (this.size - 1)) * BLKIF_REQUEST_SIZE;
  }
  /** SHARED_RING_INIT: indexes at `start` (0 normally; tests start near 2^32 to see them wrap) */
  init(start = 0): void {
    this.page.fill(0, 0, SRING_HEADER_SIZE);
    this.reqProd = start;
    this.rspProd = start;
    this.reqEvent = start + 1;
    this.rspEvent = start + 1;
  }
}

export interface BlkifSegment { gref: number; first_sect: number; last_sect: number }
export interface BlkifRequest {
  operation: number; nr_segments: number; handle: number; id: number; sector_number: number; seg: BlkifSegment[];
}
export interface BlkifResponse { id: number; operation: number; status: number }

const u64 = (b: Buffer, off: number, v: number) => {
  b.writeUInt32LE(v % 0x100000000 >>> 0, off);
  b.writeUInt32LE(Math.floor(v / 0x100000000) >>> 0, off + 4);
};
const readU64 = (b: Buffer, off: number) => b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 0x100000000;

/** Writes a request struct at `off` (unused segments zeroed). */
export function encodeRequest(b: Buffer, off: number, r: BlkifRequest): void {
  b.fill(0, off, off + BLKIF_REQUEST_SIZE);
  b[off + REQ.operation] = r.operation;
  b[off + REQ.nr_segments] = r.nr_segments;
  b.writeUInt16LE(r.handle, off + REQ.handle);
  u64(b, off + REQ.id, r.id);
  u64(b, off + REQ.sector_number, r.sector_number);
  for (let i = 0; i < r.seg.length && i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
    const s = off + REQ.seg + i * REQ.seg_size;
    b.writeUInt32LE(r.seg[i].gref, s);
    b[s + 4] = r.seg[i].first_sect;
    b[s + 5] = r.seg[i].last_sect;
  }
}

export function decodeRequest(b: Buffer, off: number): BlkifRequest {
  const n = b[off + REQ.nr_segments];
  const seg: BlkifSegment[] = [];
  for (let i = 0; i < Math.min(n, BLKIF_MAX_SEGMENTS_PER_REQUEST); i++) {
    const s = off + REQ.seg + i * REQ.seg_size;
    seg.push({ gref: b.readUInt32LE(s), first_sect: b[s + 4], last_sect: b[s + 5] });
  }
  return {
    operation: b[off + REQ.operation], nr_segments: n, handle: b.readUInt16LE(off + REQ.handle),
    id: readU64(b, off + REQ.id), sector_number: readU64(b, off + REQ.sector_number), seg,
  };
}

export function encodeResponse(b: Buffer, off: number, r: BlkifResponse): void {
  b.fill(0, off, off + BLKIF_RESPONSE_SIZE);
  u64(b, off + RSP.id, r.id);
  b[off + RSP.operation] = r.operation;
  b.writeInt16LE(r.status, off + RSP.status);
}

export function decodeResponse(b: Buffer, off: number): BlkifResponse {
  return { id: readU64(b, off + RSP.id), operation: b[off + RSP.operation], status: b.readInt16LE(off + RSP.status) };
}

/** The backend's counters of one ring (what introspection shows). */
export interface BlkifStats {
  requests: number;
  ops: { read: number; write: number; write_barrier: number; flush_diskcache: number; discard: number; other: number };
  responses: { okay: number; error: number; eopnotsupp: number };
  segments: number;
  bytes_read: number;
  bytes_written: number;
  /** backend wake-ups (each consumes every request pushed so far) */
  batches: number;
  /** Tapdisk calls made for merged runs of requests */
  tapdisk_ios: number;
}

const newStats = (): BlkifStats => ({
  requests: 0, ops: { read: 0, write: 0, write_barrier: 0, flush_diskcache: 0, discard: 0, other: 0 },
  responses: { okay: 0, error: 0, eopnotsupp: 0 }, segments: 0, bytes_read: 0, bytes_written: 0, batches: 0, tapdisk_ios: 0,
});

/** What the backend serves requests with: a Tapdisk, or anything with its I/O calls. */
export type BlkifDisk = Pick<Tapdisk, 'read' | 'write' | 'flush'> & { readonly readOnly: boolean; readonly virtualSize: number };

/** A request parsed by the backend and checked. */
interface Parsed {
  id: number;
  op: number;
  sector: number;
  /** sectors in the request (0 for flush) */
  sectors: number;
  /** a status decided while parsing (errors), or null if it is to be served */
  status: number | null;
  slotOff: number;
}

/**
 * tapback + tapdisk's td-blkif for one device: maps the ring and the grants, and on each event
 * consumes every pending request, serves runs of them through the Tapdisk and pushes responses.
 */
export class BlkifBackend {
  readonly stats = newStats();
  private reqCons: number;
  private rspProdPvt: number;
  private running = false;
  private again = false;
  private closed = false;
  /** a run of contiguous data gathered for one Tapdisk call (reused: avoids per-request allocations) */
  private readonly gather: Buffer;
  private readonly parsed: Parsed[] = [];

  constructor(
    readonly ring: SharedRing,
    readonly gnttab: GrantTable,
    private readonly disk: BlkifDisk,
    /** notify_remote_via_evtchn towards the front */
    private readonly notifyFront: () => void,
  ) {
    this.reqCons = ring.reqProd;
    this.rspProdPvt = ring.rspProd;
    this.gather = Buffer.allocUnsafe(ring.size * MAX_REQUEST_BYTES);
  }

  /** the event channel fired by the front */
  kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.serve().finally(() => {
      this.running = false;
    });
  }

  close(): void {
    this.closed = true;
  }

  private async serve(): Promise<void> {
    do {
      this.again = false;
      // RING_FINAL_CHECK_FOR_REQUESTS: loop while the front pushed more meanwhile
      while (!this.closed && this.reqCons !== this.ring.reqProd) await this.batch();
      this.ring.reqEvent = this.reqCons + 1;
    } while (this.again && !this.closed);
  }

  private parse(off: number): Parsed {
    const p = this.ring.page;
    const op = p[off + REQ.operation];
    const n = p[off + REQ.nr_segments];
    const id = readU64(p, off + REQ.id);
    const sector = readU64(p, off + REQ.sector_number);
    const r: Parsed = { id, op, sector, sectors: 0, status: null, slotOff: off };
    this.stats.requests++;
    switch (op) {
      case BLKIF_OP_READ: this.stats.ops.read++; break;
      case BLKIF_OP_WRITE: this.stats.ops.write++; break;
      case BLKIF_OP_WRITE_BARRIER: this.stats.ops.write_barrier++; break;
      case BLKIF_OP_FLUSH_DISKCACHE: this.stats.ops.flush_diskcache++; break;
      case BLKIF_OP_DISCARD:
        // tapback advertises no feature-discard
        this.stats.ops.discard++;
        r.status = BLKIF_RSP_EOPNOTSUPP;
        return r;
      default:
        this.stats.ops.other++;
        r.status = BLKIF_RSP_EOPNOTSUPP;
        return r;
    }
    const data = op !== BLKIF_OP_FLUSH_DISKCACHE;
    if (n > BLKIF_MAX_SEGMENTS_PER_REQUEST || (data && op !== BLKIF_OP_WRITE_BARRIER && n === 0) || (!data && n !== 0)) {
      r.status = BLKIF_RSP_ERROR;
      return r;
    }
    if (this.disk.readOnly && op !== BLKIF_OP_READ && op !== BLKIF_OP_FLUSH_DISKCACHE) {
      r.status = BLKIF_RSP_ERROR;
      return r;
    }
    // segments must cover contiguous sectors: each but the last ends its page, each but the first
    // starts one (the front sends pages in order)
    let sectors = 0;
    for (let i = 0; i < n; i++) {
      const s = off + REQ.seg + i * REQ.seg_size;
      const first = p[s + 4];
      const last = p[s + 5];
      if (last >= SECTORS_PER_PAGE || first > last || this.gnttab.offsetOf(p.readUInt32LE(s)) < 0
        || (i > 0 && first !== 0) || (i < n - 1 && last !== SECTORS_PER_PAGE - 1)) {
        r.status = BLKIF_RSP_ERROR;
        return r;
      }
      sectors += last - first + 1;
    }
    this.stats.segments += n;
    if ((sector + sectors) * SECTOR_SIZE > this.disk.virtualSize) {
      r.status = BLKIF_RSP_ERROR;
      return r;
    }
    r.sectors = sectors;
    return r;
  }

  /** copies a request's segments into (write) or out of (read) `buf` at `at`; returns bytes */
  private copySegments(r: Parsed, buf: Buffer, at: number, toGuest: boolean): number {
    const p = this.ring.page;
    const n = p[r.slotOff + REQ.nr_segments];
    const pages = this.gnttab.pages;
    let pos = at;
    // segments whose bytes follow each other in the granted pages are copied at once
    let runFrom = -1;
    let runLen = 0;
    const flushRun = () => {
      if (runLen === 0) return;
      if (toGuest) buf.copy(pages, runFrom, pos, pos + runLen);
      else pages.copy(buf, pos, runFrom, runFrom + runLen);
      pos += runLen;
      runLen = 0;
    };
    for (let i = 0; i < n; i++) {
      const s = r.slotOff + REQ.seg + i * REQ.seg_size;
      const from = this.gnttab.offsetOf(p.readUInt32LE(s)) + p[s + 4] * SECTOR_SIZE;
      const len = (p[s + 5] - p[s + 4] + 1) * SECTOR_SIZE;
      if (runLen > 0 && runFrom + runLen === from) runLen += len;
      else {
        flushRun();
        runFrom = from;
        runLen = len;
      }
    }
    flushRun();
    return pos - at;
  }

  private respond(r: Parsed, status: number): void {
    const off = this.ring.slot(this.rspProdPvt);
    const p = this.ring.page;
    // the response overwrites the request's slot (it was consumed)
    u64(p, off + RSP.id, r.id);
    p[off + RSP.operation] = r.op;
    p[off + 9] = 0;
    p.writeInt16LE(status, off + RSP.status);
    p.fill(0, off + 12, off + BLKIF_RESPONSE_SIZE);
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
    if (status === BLKIF_RSP_OKAY) this.stats.responses.okay++;
    else if (status === BLKIF_RSP_EOPNOTSUPP) this.stats.responses.eopnotsupp++;
    else this.stats.responses.error++;
  }

  /** Consumes every request pushed so far and answers them. */
  private async batch(): Promise<void> {
    this.stats.batches++;
    const rp = this.ring.reqProd;
    // a front pushing more than the ring holds is broken: refuse the surplus
    if (((rp - this.rspProdPvt) >>> 0) > this.ring.size) {
      this.closed = true;
      return;
    }
    const list = this.parsed;
    list.length = 0;
    // requests are copied out of their slots (parsed) before responses may reuse the slots; data
    // is gathered before any response goes out, so a slot is never read after it was answered
    for (; this.reqCons !== rp; this.reqCons = (this.reqCons + 1) >>> 0) list.push(this.parse(this.ring.slot(this.reqCons)));
    const answers: number[] = new Array(list.length);
    let i = 0;
    while (i < list.length) {
      const r = list[i];
      if (r.status !== null) {
        answers[i++] = r.status;
        continue;
      }
      if (r.op === BLKIF_OP_FLUSH_DISKCACHE) {
        answers[i++] = await this.disk.flush().then(() => BLKIF_RSP_OKAY, () => BLKIF_RSP_ERROR);
        continue;
      }
      // a run: the same data op, contiguous on the disk (a barrier ends its run)
      let j = i + 1;
      let end = r.sector + r.sectors;
      if (r.op !== BLKIF_OP_WRITE_BARRIER) {
        while (j < list.length && list[j].status === null && list[j].op === r.op && list[j].sector === end) {
          end += list[j].sectors;
          j++;
        }
      }
      const offset = r.sector * SECTOR_SIZE;
      const bytes = (end - r.sector) * SECTOR_SIZE;
      let status = BLKIF_RSP_OKAY;
      this.stats.tapdisk_ios++;
      try {
        if (r.op === BLKIF_OP_READ) {
          const data = await this.disk.read(offset, bytes);
          let at = 0;
          for (let k = i; k < j; k++) at += this.copySegments(list[k], data, at, true);
          this.stats.bytes_read += bytes;
        } else {
          let at = 0;
          for (let k = i; k < j; k++) at += this.copySegments(list[k], this.gather, at, false);
          // a WRITE is acknowledged once in the image; FLUSH_DISKCACHE and WRITE_BARRIER make it durable
          if (bytes > 0) await this.disk.write(offset, this.gather.subarray(0, bytes), { sync: false });
          if (r.op === BLKIF_OP_WRITE_BARRIER) await this.disk.flush();
          this.stats.bytes_written += bytes;
        }
      } catch {
        status = BLKIF_RSP_ERROR;
      }
      for (; i < j; i++) answers[i] = status;
    }
    if (this.closed) return;
    for (let k = 0; k < list.length; k++) this.respond(list[k], answers[k]);
    // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
    const old = this.ring.rspProd;
    this.ring.rspProd = this.rspProdPvt;
    if (((this.rspProdPvt - this.ring.rspEvent) >>> 0) < ((this.rspProdPvt - old) >>> 0)) this.notifyFront();
  }
}

/** One guest I/O being cut into requests. */
interface Job {
  op: number;
  /** next sector to send */
  sector: number;
  /** the guest's buffer (written from / read into) and the next byte of it to send */
  buf: Buffer | null;
  pos: number;
  end: number;
  outstanding: number;
  status: number;
  resolve: (status: number) => void;
}

interface Shadow {
  job: Job;
  /** where a read's data goes in the job's buffer */
  pos: number;
  nseg: number;
}

/**
 * blkfront for one device: cuts guest I/O into requests of at most 11 segments of at most 8
 * sectors, keeps as many in flight as the ring has slots, and completes the guest's I/O when its
 * last response arrives. Each slot has its 11 pages granted once (persistent grants).
 */
export class Blkfront {
  private reqProdPvt: number;
  private rspCons: number;
  private readonly shadow: (Shadow | null)[];
  private readonly freeIds: number[] = [];
  private readonly grefs: number[];
  private readonly queue: Job[] = [];

  constructor(
    readonly ring: SharedRing,
    readonly gnttab: GrantTable,
    readonly handle: number,
    /** notify_remote_via_evtchn towards the backend */
    private readonly notifyBack: () => void,
  ) {
    this.reqProdPvt = ring.reqProd;
    this.rspCons = ring.rspProd;
    this.shadow = new Array(ring.size).fill(null);
    for (let i = ring.size - 1; i >= 0; i--) this.freeIds.push(i);
    this.grefs = [];
    for (let i = 0; i < ring.size * BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) this.grefs.push(gnttab.grant());
    // each slot's 11 pages must be consecutive grants (a fresh table hands them out in order)
    for (let i = 0; i < ring.size; i++) {
      const g0 = this.grefs[i * BLKIF_MAX_SEGMENTS_PER_REQUEST];
      for (let k = 1; k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++) {
        if (this.grefs[i * BLKIF_MAX_SEGMENTS_PER_REQUEST + k] !== g0 + k) throw new Error('blkfront: needs a grant table of its own');
      }
    }
  }

  /** requests in flight */
  get inFlight(): number {
    return (this.reqProdPvt - this.rspCons) >>> 0;
  }

  private submit(op: number, sector: number, buf: Buffer | null, bytes = buf?.length ?? 0): Promise<number> {
    return new Promise<number>((resolve) => {
      this.queue.push({ op, sector, buf, pos: 0, end: bytes, outstanding: 0, status: BLKIF_RSP_OKAY, resolve });
      this.fill();
    });
  }

  /** Writes whole sectors; resolves with the worst status of its requests. */
  write(sector: number, data: Buffer): Promise<number> {
    if (data.length % SECTOR_SIZE) return Promise.reject(new Error('blkfront: not a whole number of sectors'));
    return this.submit(BLKIF_OP_WRITE, sector, data);
  }

  read(sector: number, into: Buffer): Promise<number> {
    if (into.length % SECTOR_SIZE) return Promise.reject(new Error('blkfront: not a whole number of sectors'));
    return this.submit(BLKIF_OP_READ, sector, into);
  }

  /** BLKIF_OP_FLUSH_DISKCACHE (no segments) */
  flush(): Promise<number> {
    return this.submit(BLKIF_OP_FLUSH_DISKCACHE, 0, null);
  }

  /** BLKIF_OP_DISCARD of `sectors` sectors (struct blkif_request_discard: nr_sectors at the
   * offset of the first segment) */
  discard(sector: number, sectors: number): Promise<number> {
    return this.submit(BLKIF_OP_DISCARD, sector, null, sectors * SECTOR_SIZE);
  }

  /** Puts requests on the ring while there are slots, then notifies the back if it asked. */
  private fill(): void {
    const p = this.ring.page;
    let pushed = false;
    while (this.queue.length && this.freeIds.length) {
      const job = this.queue[0];
      const id = this.freeIds.pop()!;
      const off = this.ring.slot(this.reqProdPvt);
      p.fill(0, off, off + BLKIF_REQUEST_SIZE);
      p[off + REQ.operation] = job.op;
      p.writeUInt16LE(this.handle, off + REQ.handle);
      u64(p, off + REQ.id, id);
      u64(p, off + REQ.sector_number, job.sector);
      const start = job.pos;
      let nseg = 0;
      if (job.op === BLKIF_OP_DISCARD) {
        // nr_sectors (u64) where the segments begin
        u64(p, off + REQ.seg, (job.end - job.pos) / SECTOR_SIZE);
        job.pos = job.end;
      } else if (job.buf) {
        const first = this.grefs[id * BLKIF_MAX_SEGMENTS_PER_REQUEST];
        const bytes = Math.min(MAX_REQUEST_BYTES, job.end - job.pos);
        // the slot's pages are consecutive (granted together): one copy for the request
        if (job.op !== BLKIF_OP_READ) job.buf.copy(this.gnttab.pages, this.gnttab.offsetOf(first), job.pos, job.pos + bytes);
        while (nseg < BLKIF_MAX_SEGMENTS_PER_REQUEST && job.pos < job.end) {
          const len = Math.min(PAGE_SIZE, job.end - job.pos);
          const gref = first + nseg;
          const s = off + REQ.seg + nseg * REQ.seg_size;
          p.writeUInt32LE(gref, s);
          p[s + 4] = 0;
          p[s + 5] = len / SECTOR_SIZE - 1;
          job.pos += len;
          nseg++;
        }
        p[off + REQ.nr_segments] = nseg;
        job.sector += (job.pos - start) / SECTOR_SIZE;
      }
      this.shadow[id] = { job, pos: start, nseg };
      job.outstanding++;
      this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
      if (job.pos >= job.end) this.queue.shift();
      pushed = true;
    }
    if (!pushed) return;
    // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY
    const old = this.ring.reqProd;
    this.ring.reqProd = this.reqProdPvt;
    if (((this.reqProdPvt - this.ring.reqEvent) >>> 0) < ((this.reqProdPvt - old) >>> 0)) this.notifyBack();
  }

  /** the event channel fired by the back: reap responses, complete jobs, refill */
  interrupt(): void {
    const p = this.ring.page;
    do {
      const rp = this.ring.rspProd;
      for (; this.rspCons !== rp; this.rspCons = (this.rspCons + 1) >>> 0) {
        const off = this.ring.slot(this.rspCons);
        const id = readU64(p, off + RSP.id);
        const status = p.readInt16LE(off + RSP.status);
        const sh = this.shadow[id];
        if (!sh) continue; // a response to nothing: ignore, as blkfront warns and drops it
        this.shadow[id] = null;
        this.freeIds.push(id);
        const job = sh.job;
        if (status === BLKIF_RSP_OKAY && job.op === BLKIF_OP_READ && job.buf) {
          const from = this.gnttab.offsetOf(this.grefs[id * BLKIF_MAX_SEGMENTS_PER_REQUEST]);
          const len = Math.min(sh.nseg * PAGE_SIZE, job.end - sh.pos);
          this.gnttab.pages.copy(job.buf, sh.pos, from, from + len);
        }
        if (status !== BLKIF_RSP_OKAY && job.status === BLKIF_RSP_OKAY) job.status = status;
        job.outstanding--;
        if (job.outstanding === 0 && job.pos >= job.end) job.resolve(job.status);
      }
      // RING_FINAL_CHECK_FOR_RESPONSES
      this.ring.rspEvent = this.rspCons + 1;
    } while (this.rspCons !== this.ring.rspProd);
    this.fill();
  }

  /** the device goes away: grants end, jobs still queued fail */
  close(): void {
    for (const g of this.grefs.splice(0)) this.gnttab.end(g);
    for (const j of this.queue.splice(0)) j.resolve(BLKIF_RSP_ERROR);
    for (let i = 0; i < this.shadow.length; i++) {
      const sh = this.shadow[i];
      if (sh) {
        this.shadow[i] = null;
        sh.job.resolve(BLKIF_RSP_ERROR);
      }
    }
  }
}

/** A connected PV disk: front, ring, grants, back, event channel (a deferred call each way). */
export class BlkifDevice {
  readonly ring: SharedRing;
  readonly gnttab: GrantTable;
  readonly front: Blkfront;
  readonly back: BlkifBackend;
  /** the event channel port of the ring, as in xenstore's event-channel key (for show) */
  constructor(readonly devid: number, readonly dev: string, disk: BlkifDisk, opts: { start?: number } = {}) {
    this.ring = new SharedRing(ringSize(1));
    this.ring.init(opts.start ?? 0);
    this.gnttab = new GrantTable(this.ring.size * BLKIF_MAX_SEGMENTS_PER_REQUEST);
    // event channels are asynchronous: the other end runs later, never inside the notifier
    this.back = new BlkifBackend(this.ring, this.gnttab, disk, () => setImmediate(() => this.front.interrupt()));
    this.front = new Blkfront(this.ring, this.gnttab, devid & 0xffff, () => queueMicrotask(() => this.back.kick()));
  }

  close(): void {
    this.back.close();
    this.front.close();
  }

  info(): { devid: number; dev: string; slots: number; ring_pages: number; in_flight: number; req_prod: number; rsp_prod: number } & BlkifStats {
    return {
      devid: this.devid, dev: this.dev, slots: this.ring.size, ring_pages: 1, in_flight: this.front.inFlight,
      req_prod: this.ring.reqProd, rsp_prod: this.ring.rspProd, ...structuredClone(this.back.stats),
    };
  }
}
