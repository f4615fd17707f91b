// The blkif ring (xen/include/public/io/blkif.h): struct layouts and sizes, the ring's slot count
// and index wrap-around, blkfront's segment limits, and the backend's answers (FLUSH, DISCARD →
// EOPNOTSUPP, malformed requests → ERROR) against an in-memory disk.
import { describe, expect, it } from 'vitest';
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_REQUEST_SIZE,
  BLKIF_RESPONSE_SIZE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkifBackend, BlkifDevice, GrantTable, MAX_REQUEST_BYTES,
  SRING_HEADER_SIZE, SharedRing, decodeRequest, decodeResponse, encodeRequest, encodeResponse, ringSize, type BlkifDisk,
} from '../../server/xenopsd/blkif.js';

const MiB1 = 1024 * 1024;

/** a disk in memory that records the Tapdisk calls it gets */
function memDisk(size: number, readOnly = false) {
  const data = Buffer.alloc(size);
  const calls: string[] = [];
  const disk: BlkifDisk = {
    readOnly, virtualSize: size,
    async read(offset, length) {
      calls.push(`read ${offset} ${length}`);
      return Buffer.from(data.subarray(offset, offset + length));
    },
    async write(offset, d) {
      calls.push(`write ${offset} ${d.length}`);
      data.set(d, offset);
    },
    async flush() {
      calls.push('flush');
    },
  };
  return { data, calls, disk };
}

describe('blkif layouts', () => {
  it('sizes on x86_64: request 112 B, response 16 B, header 64 B, 32 slots in one page', () => {
    expect(BLKIF_REQUEST_SIZE).toBe(112);
    expect(BLKIF_RESPONSE_SIZE).toBe(16);
    expect(SRING_HEADER_SIZE).toBe(64);
    expect(ringSize(1)).toBe(32);
    expect(ringSize(8)).toBe(256);
    expect(SRING_HEADER_SIZE + 32 * BLKIF_REQUEST_SIZE).toBeLessThanOrEqual(4096);
    expect(BLKIF_MAX_SEGMENTS_PER_REQUEST).toBe(11);
    expect(MAX_REQUEST_BYTES).toBe(44 * 1024);
  });

  it('request and response fields at blkif.h offsets', () => {
    const b = Buffer.alloc(BLKIF_REQUEST_SIZE);
    const req = {
      operation: BLKIF_OP_WRITE, nr_segments: 11, handle: 51712, id: 0x123456789a, sector_number: 2 ** 40 + 7,
      seg: Array.from({ length: 11 }, (_, i) => ({ gref: 1000 + i, first_sect: 0, last_sect: 7 })),
    };
    encodeRequest(b, 0, req);
    expect(b[0]).toBe(1);
    expect(b[1]).toBe(11);
    expect(b.readUInt16LE(2)).toBe(51712);
    expect(b.readBigUInt64LE(8)).toBe(0x123456789an);
    expect(b.readBigUInt64LE(16)).toBe(2n ** 40n + 7n);
    expect(b.readUInt32LE(24 + 10 * 8)).toBe(1010);
    expect(b[24 + 10 * 8 + 5]).toBe(7);
    expect(decodeRequest(b, 0)).toEqual(req);
    const r = Buffer.alloc(BLKIF_RESPONSE_SIZE);
    encodeResponse(r, 0, { id: 9, operation: BLKIF_OP_DISCARD, status: BLKIF_RSP_EOPNOTSUPP });
    expect(r.readBigUInt64LE(0)).toBe(9n);
    expect(r[8]).toBe(5);
    expect(r.readInt16LE(10)).toBe(-2);
    expect(decodeResponse(r, 0)).toEqual({ id: 9, operation: 5, status: -2 });
  });
});

describe('blkfront ⇄ ring ⇄ backend', () => {
  it('cuts I/O into requests of at most 11 segments of at most 8 sectors, merged by the backend', async () => {
    const m = memDisk(4 * 1024 * 1024);
    const dev = new BlkifDevice(51712, 'xvda', m.disk);
    const data = Buffer.alloc(1024 * 1024 + 3 * 512);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    expect(await dev.front.write(8, data)).toBe(BLKIF_RSP_OKAY);
    expect(m.data.subarray(4096, 4096 + data.length).equals(data)).toBe(true);
    const st = dev.info();
    // 1 MiB + 1.5 KiB in 44 KiB requests
    expect(st.ops.write).toBe(Math.ceil(data.length / MAX_REQUEST_BYTES));
    expect(st.segments).toBe(Math.ceil(data.length / 4096));
    expect(st.bytes_written).toBe(data.length);
    // contiguous requests are served by few tapdisk writes (at most one per ring-full)
    expect(st.tapdisk_ios).toBeLessThanOrEqual(Math.ceil(st.ops.write / 32) + 1);
    const back = Buffer.alloc(data.length);
    expect(await dev.front.read(8, back)).toBe(BLKIF_RSP_OKAY);
    expect(back.equals(data)).toBe(true);
    expect(dev.info().bytes_read).toBe(data.length);
    expect(dev.info().in_flight).toBe(0);
  });

  it('more requests than the 32 slots: the ring wraps, and so do its u32 indexes', async () => {
    const m = memDisk(8 * 1024 * 1024);
    // indexes start just below 2^32 and wrap during the transfer
    const dev = new BlkifDevice(51712, 'xvda', m.disk, { start: 0xffffffff - 40 });
    const data = Buffer.alloc(100 * MAX_REQUEST_BYTES, 0x5a);
    expect(await dev.front.write(0, data)).toBe(BLKIF_RSP_OKAY);
    const st = dev.info();
    expect(st.slots).toBe(32);
    expect(st.requests).toBe(100);
    expect(st.req_prod).toBe((0xffffffff - 40 + 100) >>> 0);
    expect(st.rsp_prod).toBe(st.req_prod);
    expect(m.data.subarray(0, data.length).equals(data)).toBe(true);
    // the front never had more than 32 in flight: each backend batch saw at most 32
    expect(st.batches).toBeGreaterThanOrEqual(Math.ceil(100 / 32));
  });

  it('never more than 32 requests in flight, whatever the guest queues', async () => {
    const m = memDisk(8 * 1024 * 1024);
    let maxInFlight = 0;
    const slow: BlkifDisk = {
      ...m.disk,
      write: async (o, d) => {
        maxInFlight = Math.max(maxInFlight, dev.front.inFlight);
        await new Promise((r) => setTimeout(r, 1));
        return m.disk.write(o, d);
      },
    };
    const dev = new BlkifDevice(51712, 'xvda', slow);
    const writes = Array.from({ length: 8 }, (_, i) => dev.front.write(i * 2048, Buffer.alloc(MiB1, i + 1)));
    expect(await Promise.all(writes)).toEqual(Array(8).fill(BLKIF_RSP_OKAY));
    expect(maxInFlight).toBe(32);
    for (let i = 0; i < 8; i++) expect(m.data[i * MiB1 + 5]).toBe(i + 1);
  });

  it('FLUSH flushes; DISCARD answers EOPNOTSUPP (tapback advertises no discard)', async () => {
    const m = memDisk(1024 * 1024);
    const dev = new BlkifDevice(51712, 'xvda', m.disk);
    expect(await dev.front.flush()).toBe(BLKIF_RSP_OKAY);
    expect(m.calls).toEqual(['flush']);
    expect(await dev.front.discard(0, 8)).toBe(BLKIF_RSP_EOPNOTSUPP);
    const st = dev.info();
    expect(st.ops.flush_diskcache).toBe(1);
    expect(st.ops.discard).toBe(1);
    expect(st.responses).toEqual({ okay: 1, error: 0, eopnotsupp: 1 });
  });

  it('bad requests get ERROR: beyond the disk, read-only writes, bad segments, unknown grants; unknown ops EOPNOTSUPP', async () => {
    const m = memDisk(64 * 1024);
    const dev = new BlkifDevice(51712, 'xvda', m.disk);
    expect(await dev.front.write(127, Buffer.alloc(1024))).toBe(BLKIF_RSP_ERROR);
    const ro = new BlkifDevice(51712, 'xvda', memDisk(64 * 1024, true).disk);
    expect(await ro.front.write(0, Buffer.alloc(512))).toBe(BLKIF_RSP_ERROR);
    expect(await ro.front.read(0, Buffer.alloc(512))).toBe(BLKIF_RSP_OKAY);

    // hand-made requests straight on a ring
    const ring = new SharedRing();
    ring.init();
    const g = new GrantTable(16);
    const responses: number[] = [];
    const back = new BlkifBackend(ring, g, m.disk, () => undefined);
    const push = (r: Parameters<typeof encodeRequest>[2]) => {
      encodeRequest(ring.page, ring.slot(ring.reqProd), r);
      ring.reqProd = ring.reqProd + 1;
    };
    const seg = (gref: number, first: number, last: number) => ({ gref, first_sect: first, last_sect: last });
    push({ operation: BLKIF_OP_WRITE, nr_segments: 1, handle: 0, id: 1, sector_number: 0, seg: [seg(8, 0, 8)] }); // last_sect 8
    push({ operation: BLKIF_OP_WRITE, nr_segments: 1, handle: 0, id: 2, sector_number: 0, seg: [seg(8, 4, 2)] }); // first > last
    push({ operation: BLKIF_OP_WRITE, nr_segments: 1, handle: 0, id: 3, sector_number: 0, seg: [seg(99999, 0, 7)] }); // no such grant
    push({ operation: BLKIF_OP_WRITE, nr_segments: 0, handle: 0, id: 4, sector_number: 0, seg: [] }); // no data
    push({ operation: BLKIF_OP_READ, nr_segments: 12, handle: 0, id: 5, sector_number: 0, seg: [] }); // > 11 segments
    push({ operation: 4, nr_segments: 0, handle: 0, id: 6, sector_number: 0, seg: [] }); // RESERVED_1
    push({ operation: BLKIF_OP_FLUSH_DISKCACHE, nr_segments: 0, handle: 0, id: 7, sector_number: 0, seg: [] });
    push({ operation: BLKIF_OP_READ, nr_segments: 1, handle: 0, id: 8, sector_number: 0, seg: [seg(8, 0, 7)] });
    back.kick();
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 8; i++) {
      const r = decodeResponse(ring.page, ring.slot(i));
      expect(r.id).toBe(i + 1);
      responses.push(r.status);
    }
    expect(ring.rspProd).toBe(8);
    expect(responses).toEqual([-1, -1, -1, -1, -1, -2, 0, 0]);
  });
});
