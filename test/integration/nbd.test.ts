// NBD: network purposes (network.add_purpose / remove_purpose and their checks), VDI.get_nbd_info
// on an insecure_nbd network, and the NBD server read by independent clients (libnbd's nbdinfo and
// nbdcopy, qemu-img), bytes compared with what /import_raw_vdi wrote and /export_raw_vdi gives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect, createServer as netCreateServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { startServer } from '../../server/app.js';
import type { RunningServer } from '../../server/app.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, vdiArgs } from './helpers/records.js';

const run = promisify(execFile);
const PASSWORD = 'nbd-test';
const SIZE = 16 * MiB;
const BLOCK = 2 * MiB;

let srv: RunningServer;
let x: Client;
let net: string;
let vdi: string;
let vdiUuid: string;
let scratch: string;
let written: Buffer;

/** 2 MiB blocks 1, 2 and 5 stay zero (never written, so unallocated in the VHD); the rest hold a pattern. */
const HOLES = new Set([1, 2, 5]);
function pattern(): Buffer {
  const b = Buffer.alloc(SIZE);
  for (let off = 0; off < SIZE; off += 4096) {
    if (!HOLES.has(Math.floor(off / BLOCK))) b.write(`nbd@${off};`.repeat(300), off, 4096, 'latin1');
  }
  return b;
}


/** An nbd:// URI for an export name as get_nbd_info gives it. */
const uriOf = (info: { address: string; port: number; exportname: string }) =>
  `nbd://${info.address}:${info.port}/${encodeURIComponent(info.exportname)}`;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  scratch = mkdtempSync(join(tmpdir(), 'xapi-emu-nbd-'));
  net = await xenbr0(x);
  vdi = await x.call('VDI.create', vdiArgs(await localStorage(x), SIZE, 'nbd'));
  vdiUuid = await x.call('VDI.get_uuid', vdi);
  written = pattern();
  // /import_raw_vdi skips all-zero blocks: the holes stay unallocated in the VHD
  const r = await fetch(new URL(`/import_raw_vdi?session_id=${x.session}&vdi=${vdi}&format=raw`, srv.urls[0]), { method: "PUT", body: new Uint8Array(written) });
  expect(r.status).toBe(200);
});

afterAll(async () => {
  await srv?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('network purposes', () => {
  it('add_purpose adds once, refuses nbd beside insecure_nbd (NETWORK_INCOMPATIBLE_PURPOSES), remove_purpose removes', async () => {
    const other = await x.call('network.create', { name_label: 'nbd-tls', name_description: '', MTU: 1500, other_config: {}, tags: [] });
    expect(await x.call('network.get_purpose', net)).toEqual([]);
    await x.call('network.add_purpose', net, 'insecure_nbd');
    await x.call('network.add_purpose', net, 'insecure_nbd');
    expect(await x.call('network.get_purpose', net)).toEqual(['insecure_nbd']);
    expect(await faultOf(x.call('network.add_purpose', other, 'nbd'))).toEqual(['NETWORK_INCOMPATIBLE_PURPOSES', 'nbd', 'insecure_nbd']);
    expect(await faultOf(x.call('network.add_purpose', net, 'nbd'))).toEqual(['NETWORK_INCOMPATIBLE_PURPOSES', 'nbd', 'insecure_nbd']);
    await x.call('network.remove_purpose', net, 'insecure_nbd');
    await x.call('network.remove_purpose', net, 'insecure_nbd');
    expect(await x.call('network.get_purpose', net)).toEqual([]);
    // with TLS wanted instead, the other way round
    await x.call('network.add_purpose', other, 'nbd');
    expect(await faultOf(x.call('network.add_purpose', net, 'insecure_nbd'))).toEqual(['NETWORK_INCOMPATIBLE_PURPOSES', 'insecure_nbd', 'nbd']);
    await x.call('network.remove_purpose', other, 'nbd');
    await x.call('network.destroy', other);
  });
});

describe('VDI.get_nbd_info', () => {
  it('is [] while no network has an NBD purpose', async () => {
    expect(await x.call('VDI.get_nbd_info', vdi)).toEqual([]);
  });

  it('gives the address of each PIF on an insecure_nbd network, the NBD port and the export name with the session', async () => {
    await x.call('network.add_purpose', net, 'insecure_nbd');
    try {
      const infos = await x.call('VDI.get_nbd_info', vdi);
      const pifs: string[] = await x.call('network.get_PIFs', net);
      const ips: string[] = await Promise.all(pifs.map((p) => x.call('PIF.get_IP', p)));
      expect(infos.map((i: { address: string }) => i.address).sort()).toEqual(ips.sort());
      for (const i of infos) {
        expect(i.exportname).toBe(`/${vdiUuid}?session_id=${x.session}`);
        expect(i.port).toBeGreaterThan(0);
        expect(typeof i.cert).toBe('string');
        expect(i.subject).toBeTruthy();
      }
    } finally {
      await x.call('network.remove_purpose', net, 'insecure_nbd');
    }
  });

  it('with an nbd network: the host certificate, whose DNS name is the subject; the server wants TLS and serves it', async () => {
    await x.call('network.add_purpose', net, 'nbd');
    try {
      const [info] = await x.call('VDI.get_nbd_info', vdi);
      expect(info.cert).toMatch(/^-----BEGIN CERTIFICATE-----\n[^]*\n-----END CERTIFICATE-----\n?$/);
      const names = (new X509Certificate(info.cert).subjectAltName ?? '').split(', ');
      expect(names).toContain(`DNS:${info.subject}`);
      const certs = join(scratch, 'pki');
      mkdirSync(certs, { recursive: true });
      writeFileSync(join(certs, 'ca-cert.pem'), info.cert);
      // plain NBD is refused (TLS required), TLS checked against the certificate works
      await expect(run('nbdinfo', [uriOf(info)])).rejects.toThrow();
      const secure = `nbds://${info.address}:${info.port}/${encodeURIComponent(info.exportname)}?tls-certificates=${certs}`;
      const { stdout } = await run('nbdinfo', ['--size', secure]);
      expect(Number(stdout)).toBe(SIZE);
      const copy = join(scratch, 'tls.raw');
      await run('nbdcopy', [secure, copy]);
      expect(readFileSync(copy).equals(written)).toBe(true);
    } finally {
      await x.call('network.remove_purpose', net, 'nbd');
    }
  });
});

/** Exact byte counts from a socket as they arrive; `closed` once the peer has ended. */
function byteReader(sock: Socket) {
  let got = Buffer.alloc(0);
  let wake: (() => void) | null = null;
  let ended = false;
  const onData = (c: Buffer) => { got = Buffer.concat([got, c]); wake?.(); };
  const onClose = () => { ended = true; wake?.(); };
  sock.on('data', onData);
  sock.on('close', onClose);
  return {
    async take(n: number): Promise<Buffer> {
      while (got.length < n) {
        if (ended) throw new Error('closed');
        await new Promise<void>((r) => (wake = r));
      }
      const out = got.subarray(0, n);
      got = got.subarray(n);
      return out;
    },
    closed: () => new Promise<void>((r) => (ended ? r() : sock.once('close', () => r()))),
    detach(): number {
      sock.off('data', onData);
      sock.off('close', onClose);
      return got.length;
    },
  };
}

// Xen Orchestra's NBD reader (@vates/nbd-client, under XO's delta backups with NBD) speaks an older
// dialect than libnbd: the client flags without NO_ZEROES, STARTTLS without checking the
// certificate, NBD_OPT_EXPORT_NAME (so the 124 zero bytes after the export's size and flags), then
// simple replies to several reads in flight, and NBD_CMD_DISC at the end.
describe("Xen Orchestra's NBD client dialect", () => {
  it('STARTTLS, EXPORT_NAME with the zero padding, pipelined reads matching the disk, DISC ends the connection', async () => {
    await x.call('network.add_purpose', net, 'nbd');
    try {
      const [info] = await x.call('VDI.get_nbd_info', vdi);
      const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
      const option = (opt: number, data: Buffer) => Buffer.concat([Buffer.from('IHAVEOPT'), u32(opt), u32(data.length), data]);
      const plain = netConnect({ host: info.address, port: info.port });
      const r0 = byteReader(plain);
      const greeting = await r0.take(18);
      expect(greeting.subarray(0, 16).toString()).toBe('NBDMAGICIHAVEOPT');
      expect(greeting.readUInt16BE(16) & 1).toBe(1); // fixed newstyle
      plain.write(u32(1)); // NBD_FLAG_C_FIXED_NEWSTYLE only
      plain.write(option(5, Buffer.alloc(0))); // NBD_OPT_STARTTLS
      const ack = await r0.take(20);
      expect([ack.readBigUInt64BE(0), ack.readUInt32BE(8), ack.readUInt32BE(12), ack.readUInt32BE(16)]).toEqual([0x3e889045565a9n, 5, 1, 0]);
      expect(r0.detach()).toBe(0);
      const sock = tlsConnect({ socket: plain, rejectUnauthorized: false });
      await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
      const r = byteReader(sock);
      sock.write(option(1, Buffer.from(info.exportname))); // NBD_OPT_EXPORT_NAME
      const answer = await r.take(8 + 2 + 124);
      expect(Number(answer.readBigUInt64BE(0))).toBe(SIZE);
      expect(answer.readUInt16BE(8) & 3).toBe(3); // HAS_FLAGS | READ_ONLY
      expect(answer.subarray(10).every((b) => b === 0)).toBe(true);

      // four 2 MiB reads in flight at once (holes and data alike), answered by handle
      const reads = [0, 1, 4, 7].map((block, i) => ({ handle: BigInt(100 + i), offset: block * BLOCK }));
      for (const { handle, offset } of reads) {
        const q = Buffer.alloc(28);
        q.writeUInt32BE(0x25609513, 0);
        q.writeUInt16BE(0, 6); // NBD_CMD_READ
        q.writeBigUInt64BE(handle, 8);
        q.writeBigUInt64BE(BigInt(offset), 16);
        q.writeUInt32BE(BLOCK, 24);
        sock.write(q);
      }
      const byHandle = new Map<bigint, Buffer>();
      for (let i = 0; i < reads.length; i++) {
        const head = await r.take(16);
        expect([head.readUInt32BE(0), head.readUInt32BE(4)]).toEqual([0x67446698, 0]);
        byHandle.set(head.readBigUInt64BE(8), Buffer.from(await r.take(BLOCK)));
      }
      for (const { handle, offset } of reads) expect(byHandle.get(handle)?.equals(written.subarray(offset, offset + BLOCK))).toBe(true);

      const disc = Buffer.alloc(28);
      disc.writeUInt32BE(0x25609513, 0);
      disc.writeUInt16BE(2, 6); // NBD_CMD_DISC
      sock.write(disc);
      await r.closed();
    } finally {
      await x.call('network.remove_purpose', net, 'nbd');
    }
  });
});

describe('the NBD server', () => {
  let info: { address: string; port: number; exportname: string };
  let uri: string;
  beforeAll(async () => {
    await x.call('network.add_purpose', net, 'insecure_nbd');
    [info] = await x.call('VDI.get_nbd_info', vdi);
    uri = uriOf(info);
  });
  afterAll(async () => {
    await x.call('network.remove_purpose', net, 'insecure_nbd');
  });

  it('nbdinfo: the export size, read-only', async () => {
    const { stdout } = await run('nbdinfo', ['--json', uri]);
    const j = JSON.parse(stdout);
    expect(j.protocol).toBe('newstyle-fixed');
    expect(j.exports[0]['export-size']).toBe(SIZE);
    expect(j.exports[0]['is_read_only']).toBe(true);
  });

  it('nbdinfo --map: base:allocation holes where the VHD allocates no block', async () => {
    const { stdout } = await run('nbdinfo', ['--map', '--json', uri]);
    const map: { offset: number; length: number; type: number }[] = JSON.parse(stdout);
    const holes = new Set<number>();
    let end = 0;
    for (const e of map) {
      expect(e.offset).toBe(end);
      end += e.length;
      for (let b = e.offset / BLOCK; b < (e.offset + e.length) / BLOCK; b++) if (e.type === 3) holes.add(b);
      expect([0, 3]).toContain(e.type);
    }
    expect(end).toBe(SIZE);
    expect([...holes].sort()).toEqual([...HOLES].sort());
  });

  it('nbdcopy and qemu-img convert read what /import_raw_vdi wrote, as /export_raw_vdi gives it', async () => {
    const viaNbdcopy = join(scratch, 'nbdcopy.raw');
    await run('nbdcopy', [uri, viaNbdcopy]);
    expect(readFileSync(viaNbdcopy).equals(written)).toBe(true);

    const viaQemu = join(scratch, 'qemu.raw');
    const spec = { driver: 'nbd', server: { type: 'inet', host: info.address, port: String(info.port) }, export: info.exportname };
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `json:${JSON.stringify({ file: spec })}`, viaQemu]);
    expect(readFileSync(viaQemu).equals(written)).toBe(true);

    const r = await fetch(new URL(`/export_raw_vdi?session_id=${x.session}&vdi=${vdi}&format=raw`, srv.urls[0]));
    expect(Buffer.from(await r.arrayBuffer()).equals(readFileSync(viaNbdcopy))).toBe(true);
  });

  it('qemu-io: a read across data and unallocated blocks (structured reply: data and hole chunks), holes read as zeros', async () => {
    const spec = { driver: 'nbd', server: { type: 'inet', host: info.address, port: String(info.port) }, export: info.exportname };
    const img = `json:${JSON.stringify({ driver: 'raw', file: spec })}`;
    const io = (cmd: string) => run('qemu-io', ['-r', '-c', cmd, img]).then(({ stdout }) => stdout);
    // blocks 0..7 in one request: data, two holes, data, data, a hole, data, data
    expect(await io(`read 0 ${SIZE}`)).toMatch(/read 16777216\/16777216 bytes/);
    expect(await io(`read -P 0 ${BLOCK} ${2 * BLOCK}`)).toMatch(/read 4194304\/4194304 bytes/);
    // a data block is not zeros: the pattern check fails there
    const mismatch = await io(`read -P 0 ${BLOCK - 4096} 8192`).then(() => '', (e: { stdout: string }) => e.stdout);
    expect(mismatch).toMatch(/Pattern verification failed/);
    // and what a mixed read gives is the disk's bytes
    const out = join(scratch, 'qemu-io.raw');
    await run('qemu-io', ['-r', '-c', `read -v ${3 * BLOCK - 4096} 8192`, img]).then(({ stdout }) => {
      const hex = stdout.split('\n').filter((l) => /^[0-9a-f]{8}:/.test(l)).map((l) => l.slice(10, 10 + 16 * 3).replace(/ /g, '')).join('');
      writeFileSync(out, Buffer.from(hex, 'hex'));
    });
    expect(readFileSync(out).equals(written.subarray(3 * BLOCK - 4096, 3 * BLOCK + 4096))).toBe(true);
  });

  it('refuses an export whose session is not valid, or a VDI that does not exist', async () => {
    const badSession = uriOf({ ...info, exportname: `/${vdiUuid}?session_id=OpaqueRef:00000000-0000-0000-0000-000000000000` });
    await expect(run('nbdinfo', [badSession])).rejects.toThrow();
    const noSession = uriOf({ ...info, exportname: `/${vdiUuid}` });
    await expect(run('nbdinfo', [noSession])).rejects.toThrow();
    const noVdi = uriOf({ ...info, exportname: `/00000000-0000-0000-0000-000000000000?session_id=${x.session}` });
    await expect(run('nbdinfo', [noVdi])).rejects.toThrow();
  });

  it('nbdinfo --list: the server answers LIST (no export is listed without a session)', async () => {
    const { stdout } = await run('nbdinfo', ['--list', '--json', `nbd://${info.address}:${info.port}/`]);
    expect(JSON.parse(stdout).exports).toEqual([]);
  });

  it('a write is refused (read-only) and the disk keeps its bytes', async () => {
    const src = join(scratch, 'zeros.raw');
    await run('truncate', ['-s', String(SIZE), src]);
    await expect(run('nbdcopy', ['--allocated', src, uri])).rejects.toThrow();
    const out = join(scratch, 'after.raw');
    await run('nbdcopy', [uri, out]);
    expect(readFileSync(out).equals(written)).toBe(true);
  });

  it('a raw client: a read past the end gets EINVAL, a write EPERM, an oversized option or a bad request magic ends the connection', async () => {
    const sock = netConnect({ host: info.address, port: info.port });
    let got = Buffer.alloc(0);
    let wake: (() => void) | null = null;
    let closed = false;
    sock.on('data', (c: Buffer) => { got = Buffer.concat([got, c]); wake?.(); });
    sock.on('close', () => { closed = true; wake?.(); });
    const take = async (n: number) => {
      while (got.length < n) {
        if (closed) throw new Error('closed');
        await new Promise<void>((r) => (wake = r));
      }
      const out = got.subarray(0, n);
      got = got.subarray(n);
      return out;
    };
    const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
    const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
    const request = (type: number, offset: number, length: number) => {
      const b = Buffer.alloc(28);
      b.writeUInt32BE(0x25609513, 0);
      b.writeUInt16BE(type, 6);
      b.writeBigUInt64BE(7n, 8);
      b.writeBigUInt64BE(BigInt(offset), 16);
      b.writeUInt32BE(length, 24);
      return b;
    };
    expect((await take(18)).subarray(0, 16).toString()).toBe('NBDMAGICIHAVEOPT');
    const name = Buffer.from(info.exportname);
    const go = Buffer.concat([u32(name.length), name, u16(0)]);
    sock.write(Buffer.concat([u32(3), Buffer.from('IHAVEOPT'), u32(7), u32(go.length), go]));
    // NBD_REP_INFO (export), then NBD_REP_ACK
    const info1 = await take(20);
    expect(info1.readUInt32BE(12)).toBe(3);
    const export1 = await take(info1.readUInt32BE(16));
    expect(Number(export1.readBigUInt64BE(2))).toBe(SIZE);
    expect((await take(20)).readUInt32BE(12)).toBe(1);

    sock.write(request(0, SIZE - 512, 1024));
    const past = await take(16);
    expect([past.readUInt32BE(0), past.readUInt32BE(4)]).toEqual([0x67446698, 22]);
    sock.write(Buffer.concat([request(1, 0, 512), Buffer.alloc(512, 1)]));
    const write = await take(16);
    expect(write.readUInt32BE(4)).toBe(1);
    sock.write(request(0, 0, 4096));
    const read = await take(16);
    expect(read.readUInt32BE(4)).toBe(0);
    expect((await take(4096)).equals(written.subarray(0, 4096))).toBe(true);
    sock.write(Buffer.alloc(28, 0xee));
    await expect(take(1)).rejects.toThrow('closed');

    // an option announcing more than any name or query needs is not waited for
    const other = netConnect({ host: info.address, port: info.port });
    const end = new Promise<void>((r) => other.on('close', () => r()));
    other.on('data', () => undefined);
    other.write(Buffer.concat([u32(3), Buffer.from('IHAVEOPT'), u32(7), u32(0x7fffffff)]));
    await end;
  });

  it('a client that cuts the handshake or sends garbage is dropped; the server keeps serving', async () => {
    for (const bytes of [Buffer.alloc(0), Buffer.from('garbage that is not NBD at all........')]) {
      await new Promise<void>((resolve) => {
        const s = netConnect({ host: info.address, port: info.port }, () => s.end(bytes));
        s.on('data', () => undefined);
        s.on('close', () => resolve());
        s.on('error', () => resolve());
      });
    }
    const { stdout } = await run('nbdinfo', ['--size', uri]);
    expect(Number(stdout)).toBe(SIZE);
  });
});

describe('a pool of two hosts', () => {
  let srv2: RunningServer;
  let c: Client;
  afterAll(async () => {
    await srv2?.close();
  });

  it("each host serves the disks of the SRs it has attached, on its own address; a toolstack restart keeps the port", async () => {
    ({ srv: srv2, x: c } = await startPool(PASSWORD, { hosts: 2 }));
    const member = srv2.emu.hosts[1];
    const pbds: string[] = await c.call('PBD.get_all_where', `field "host" = "${member}"`);
    const srs: string[] = await Promise.all(pbds.map((p) => c.call('PBD.get_SR', p)));
    const types: string[] = await Promise.all(srs.map((s) => c.call('SR.get_type', s)));
    const memberSr = srs[types.findIndex((t) => t === 'ext' || t === 'file')];
    const disk = await c.call('VDI.create', vdiArgs(memberSr, 4 * MiB, 'member disk'));
    const bytes = Buffer.alloc(4 * MiB, 0x5a);
    // the master redirects to the host that has the SR
    const put = (u: URL | string) => fetch(u, { method: 'PUT', body: new Uint8Array(bytes), redirect: 'manual' });
    const probe = await fetch(new URL(`/import_raw_vdi?session_id=${c.session}&vdi=${disk}&format=raw`, srv2.urls[0]), { method: 'PUT', body: '', redirect: 'manual' });
    expect(probe.status).toBe(302);
    const r = await put(probe.headers.get('location')!);
    expect(r.status).toBe(200);
    await c.call('network.add_purpose', await xenbr0(c), 'insecure_nbd');

    const infos = await c.call('VDI.get_nbd_info', disk);
    expect(infos.map((i: { address: string }) => i.address)).toEqual([await c.call('host.get_address', member)]);
    const out = join(scratch, 'member.raw');
    await run('nbdcopy', [uriOf(infos[0]), out]);
    expect(readFileSync(out).equals(bytes)).toBe(true);
    // the master has not attached that SR: its server has no such export
    const master = await c.call('host.get_address', srv2.emu.master);
    await expect(run('nbdinfo', [uriOf({ ...infos[0], address: master })])).rejects.toThrow();

    await srv2.toolstackRestart();
    // the restart closed the connections (a pooled one fails once) and ended the sessions
    const c2 = await startPoolClient(srv2).catch(() => startPoolClient(srv2));
    const [again] = await c2.call('VDI.get_nbd_info', disk);
    expect(again.port).toBe(infos[0].port);
    const { stdout } = await run('nbdinfo', ['--size', uriOf(again)]);
    expect(Number(stdout)).toBe(4 * MiB);
  });
});

const startPoolClient = (s: RunningServer) => connect(s.urls[0], 'root', PASSWORD);

describe('the NBD port', () => {
  it('with a fixed API port and 10809 taken, the server still starts and serves NBD on a free port; an explicit nbdPort that is taken fails the start', async () => {
    const { createServer } = await import('node:net');
    // hold 10809 (or find it held already): a server started with a fixed port must still start
    const holder = createServer();
    await new Promise<void>((resolve) => {
      holder.once('error', () => resolve());
      holder.listen({ host: '127.0.0.1', port: 10809 }, () => resolve());
    });
    try {
      const fixed = await startServer({ port: await freePort(), memory: true, password: PASSWORD, authFailDelay: 0 });
      try {
        const c2 = await connect(fixed.urls[0], 'root', PASSWORD);
        await c2.call('network.add_purpose', await xenbr0(c2), 'insecure_nbd');
        const d = await c2.call('VDI.create', vdiArgs(await localStorage(c2), 2 * MiB, 'port'));
        const [i] = await c2.call('VDI.get_nbd_info', d);
        expect(i.port).not.toBe(10809);
        const { stdout } = await run('nbdinfo', ['--size', uriOf(i)]);
        expect(Number(stdout)).toBe(2 * MiB);
      } finally {
        await fixed.close();
      }
      // asked for explicitly, a taken port is an error
      await expect(startServer({ port: 0, nbdPort: 10809, memory: true, password: PASSWORD })).rejects.toThrow(/EADDRINUSE/);
    } finally {
      holder.close();
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = netCreateServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
