// Guest consoles as clients reach them: the WebSocket of XO and XO Lite (subprotocol binary) and
// the CONNECT of xe console / XenCenter, each session-checked; an RFB client reading the
// simulated screen (boot text, then a login prompt that echoes keys), a vt100 stream, Debian's
// vncsnapshot through a TCP relay, and GET /vncsnapshot. Time moves only by the control API.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect as tcpConnect, createServer, type Server, type Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { WebSocket } from 'ws';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import { glyph, CELL_HEIGHT, CELL_WIDTH, CURSOR_CHAR } from '../../server/console/font.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { vmArgs } from './helpers/records.js';

const PASSWORD = 'console-test';

let srv: RunningServer;
let x: Client;
let hosts: string[];
let base: string;
let control: ReturnType<typeof controlClient>;

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);
const consoleOf = async (vm: string, protocol: string) => {
  for (const c of (await rec('VM', vm)).consoles as string[]) {
    const r = await rec('console', c);
    if (r.protocol === protocol) return { ref: c, ...r };
  }
  throw new Error(`no ${protocol} console`);
};
const advance = (seconds: number) => control.clock.advance({ seconds });

// ───────── a minimal RFB client over any byte stream ─────────

class ByteReader {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;
  private forward: ((b: Buffer) => void) | null = null;
  /** From now on, hands every byte to `fn` (a relay) */
  pipeTo(fn: (b: Buffer) => void) {
    this.forward = fn;
    if (this.buf.length > 0) fn(this.buf);
    this.buf = Buffer.alloc(0);
  }
  push(b: Buffer) {
    if (this.forward) return this.forward(b);
    this.buf = Buffer.concat([this.buf, b]);
    this.waiter?.();
  }
  end() {
    this.closed = true;
    this.waiter?.();
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`stream closed with ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

interface Rfb {
  width: number;
  height: number;
  name: string;
  /** palette-free screen: 1 where a pixel is lit */
  lit: Uint8Array;
  update(incremental: boolean): Promise<{ y: number; h: number }>;
  key(keysym: number): void;
}

async function rfbHandshake(r: ByteReader, send: (b: Buffer) => void): Promise<Rfb> {
  expect((await r.read(12)).toString('latin1')).toBe('RFB 003.008\n');
  send(Buffer.from('RFB 003.008\n', 'latin1'));
  const n = (await r.read(1))[0];
  const types = [...(await r.read(n))];
  expect(types).toContain(1);
  send(Buffer.from([1]));
  expect((await r.read(4)).readUInt32BE(0)).toBe(0);
  send(Buffer.from([1]));
  const init = await r.read(24);
  const width = init.readUInt16BE(0);
  const height = init.readUInt16BE(2);
  const name = (await r.read(init.readUInt32BE(20))).toString('utf8');
  // 32 bpp, little-endian, true colour, red at bit 0 (noVNC's format)
  const pf = Buffer.alloc(20);
  pf[0] = 0;
  Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0]).copy(pf, 4);
  send(pf);
  const enc = Buffer.alloc(8);
  enc[0] = 2;
  enc.writeUInt16BE(1, 2);
  enc.writeInt32BE(0, 4);
  send(enc);
  const lit = new Uint8Array(width * height);
  return {
    width, height, name, lit,
    async update(incremental) {
      const req = Buffer.alloc(10);
      req[0] = 3;
      req[1] = incremental ? 1 : 0;
      req.writeUInt16BE(width, 6);
      req.writeUInt16BE(height, 8);
      send(req);
      const head = await r.read(4);
      expect(head[0]).toBe(0);
      let band = { y: height, h: 0 };
      for (let i = head.readUInt16BE(2); i > 0; i--) {
        const rh = await r.read(12);
        const [rx, ry, rw, rhh] = [rh.readUInt16BE(0), rh.readUInt16BE(2), rh.readUInt16BE(4), rh.readUInt16BE(6)];
        expect(rh.readInt32BE(8)).toBe(0);
        const px = await r.read(rw * rhh * 4);
        for (let yy = 0; yy < rhh; yy++)
          for (let xx = 0; xx < rw; xx++) lit[(ry + yy) * width + rx + xx] = px[(yy * rw + xx) * 4] > 64 ? 1 : 0;
        band = { y: Math.min(band.y, ry), h: Math.max(band.y + band.h, ry + rhh) - Math.min(band.y, ry) };
      }
      return band;
    },
    key(keysym) {
      for (const down of [1, 0]) {
        const k = Buffer.alloc(8);
        k[0] = 4;
        k[1] = down;
        k.writeUInt32BE(keysym, 4);
        send(k);
      }
    },
  };
}

/** Reads the screen back as text, matching each 9x16 cell against the font's glyphs. */
const GLYPHS = [...' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~'];
function screenText(lit: Uint8Array, width: number, height: number): string[] {
  const rows: string[] = [];
  for (let r = 0; r < height / CELL_HEIGHT; r++) {
    let line = '';
    for (let c = 0; c < width / CELL_WIDTH; c++) {
      const cell = new Uint8Array(CELL_WIDTH * CELL_HEIGHT);
      for (let y = 0; y < CELL_HEIGHT; y++)
        for (let xx = 0; xx < CELL_WIDTH; xx++) cell[y * CELL_WIDTH + xx] = lit[(r * CELL_HEIGHT + y) * width + c * CELL_WIDTH + xx];
      const ch = GLYPHS.find((g) => glyph(g).every((v, i) => v === cell[i])) ?? (glyph(CURSOR_CHAR).every((v, i) => v === cell[i]) ? '_' : undefined);
      line += ch ?? (cell.some((v) => v) ? '#' : ' ');
    }
    rows.push(line.trimEnd());
  }
  return rows;
}

const lastLine = (rows: string[]): string => rows.filter((l) => l !== '').at(-1) ?? '';

function wsConsole(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; r: ByteReader }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['binary'], { headers });
    const r = new ByteReader();
    ws.on('message', (d: Buffer) => r.push(d));
    ws.on('close', () => r.end());
    ws.once('open', () => resolve({ ws, r }));
    ws.once('unexpected-response', (_req: unknown, res: { statusCode: number }) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    ws.once('error', reject);
  });
}

/** CONNECT /console: the status line and headers, then the stream. */
function connectConsole(url: string, path: string): Promise<{ sock: Socket; r: ByteReader; status: number; head: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = tcpConnect(Number(u.port), u.hostname);
    let pre = Buffer.alloc(0);
    const r = new ByteReader();
    let done = false;
    sock.on('data', (b: Buffer) => {
      if (done) return r.push(b);
      pre = Buffer.concat([pre, b]);
      const i = pre.indexOf('\r\n\r\n');
      if (i < 0) return;
      done = true;
      const head = pre.subarray(0, i).toString('latin1');
      r.push(pre.subarray(i + 4));
      resolve({ sock, r, status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]), head });
    });
    sock.on('close', () => (done ? r.end() : reject(new Error('closed before the answer'))));
    sock.on('error', reject);
    sock.write(`CONNECT ${path} HTTP/1.0\r\n\r\n`);
  });
}

const wsUrl = (path: string) => base.replace(/^http/, 'ws') + path;

async function startVm(name: string, extra: Record<string, unknown> = {}, host = hosts[0]) {
  const vm: string = await x.call('VM.create', vmArgs(name, extra));
  // lifecycle operations take simulated time: they run with time flowing
  await control.clock.set({ frozen: false });
  await x.call('VM.start_on', vm, host, false, false);
  // the boot advances only when the test says so
  await control.clock.set({ frozen: true });
  return vm;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, users: [{ name: 'ro', password: 'ro-pw', role: 'read-only' }] }));
  hosts = srv.emu.hosts;
  base = srv.urls[0].replace(/\/$/, '');
  control = controlClient({ url: base, username: 'root', password: PASSWORD });
});

afterAll(async () => {
  await srv?.close();
});

describe('RFB over the WebSocket', () => {
  it('shows the firmware and boot text, then a login prompt that echoes keys', async () => {
    const vm = await startVm('web01', { reference_label: 'debian-12' });
    const c = await consoleOf(vm, 'rfb');
    const { ws, r } = await wsConsole(wsUrl(`/console?uuid=${c.uuid}`), { cookie: `session_id=${x.session}` });
    expect(ws.protocol).toBe('binary');
    const rfb = await rfbHandshake(r, (b) => ws.send(b));
    expect([rfb.width, rfb.height, rfb.name]).toEqual([720, 400, 'web01']);
    await rfb.update(false);
    let text = screenText(rfb.lit, rfb.width, rfb.height);
    expect(text[0]).toBe('SeaBIOS (version rel-1.16.3-Xen)');
    expect(text[1]).toBe(`Machine UUID ${(await rec('VM', vm)).uuid}`);
    expect(text.join('\n')).not.toContain('login:');

    // an incremental request is answered when the screen changes: the boot goes on
    const pending = rfb.update(true);
    await advance(60);
    const band = await pending;
    expect(band.h).toBeGreaterThan(0);
    text = screenText(rfb.lit, rfb.width, rfb.height);
    expect(text).toContain('Welcome to Debian GNU/Linux 12 (bookworm)!');
    expect(lastLine(text)).toMatch(/^web01 login: _$/);

    for (const ch of 'root') rfb.key(ch.charCodeAt(0));
    // keys arrive one by one: ask until the whole name shows
    for (let i = 0; i < 8 && !screenText(rfb.lit, rfb.width, rfb.height).some((l) => l.startsWith('web01 login: root')); i++) await rfb.update(true);
    text = screenText(rfb.lit, rfb.width, rfb.height);
    expect(text.find((l) => l.startsWith('web01 login: root'))).toBeDefined();
    rfb.key(0xff0d);
    await rfb.update(true);
    expect(lastLine(screenText(rfb.lit, rfb.width, rfb.height))).toMatch(/^Password: _$/);
    ws.close();
  });

  it('accepts XO Lite\'s session_id in the query and a VM ref; a halted VM ends the stream', async () => {
    const vm = await startVm('lite');
    const { ws, r } = await wsConsole(wsUrl(`/console?ref=${vm}&session_id=${x.session}`));
    const rfb = await rfbHandshake(r, (b) => ws.send(b));
    await rfb.update(false);
    expect(screenText(rfb.lit, rfb.width, rfb.height)[0]).toContain('SeaBIOS');
    await control.clock.set({ frozen: false });
    await x.call('VM.hard_shutdown', vm);
    await expect(r.read(1 << 20)).rejects.toThrow(/closed/);
  });

  it('refuses what xapi refuses', async () => {
    const vm = await startVm('guarded');
    const c = await consoleOf(vm, 'rfb');
    const status = (p: Promise<unknown>) => p.then(() => 0, (e: { status?: number }) => e.status);
    expect(await status(wsConsole(wsUrl(`/console?uuid=${c.uuid}`)))).toBe(401);
    const ro = await connect(base, 'ro', 'ro-pw');
    expect(await status(wsConsole(wsUrl(`/console?uuid=${c.uuid}&session_id=${ro.session}`)))).toBe(403);
    expect(await status(wsConsole(wsUrl(`/console?uuid=${c.uuid}&session_id=OpaqueRef:nope`)))).toBe(401);
    // no such console, a halted VM, a VM on another host: xapi's Console.Failure
    expect(await status(wsConsole(wsUrl(`/console?uuid=00000000-0000-0000-0000-000000000000&session_id=${x.session}`)))).toBe(500);
    expect(await status(wsConsole(wsUrl(`/console?session_id=${x.session}`)))).toBe(500);
    const halted: string = await x.call('VM.create', vmArgs('halted'));
    expect(await status(wsConsole(wsUrl(`/console?ref=${halted}&session_id=${x.session}`)))).toBe(500);
    const other = await startVm('elsewhere', {}, hosts[1]);
    expect(await status(wsConsole(wsUrl(`/console?ref=${other}&session_id=${x.session}`)))).toBe(500);
    const onMember = (await rec('console', (await consoleOf(other, 'rfb')).ref)).location as string;
    expect(onMember).toContain((await rec('host', hosts[1])).address);
    // a GET that is not an upgrade
    const plain = await fetch(`${base}/console?uuid=${c.uuid}&session_id=${x.session}`);
    expect(plain.status).toBe(501);
    // the tasks of all of these ended
    const tasks = Object.values(await x.call('task.get_all_records')) as { name_label: string; status: string }[];
    expect(tasks.filter((t) => t.name_label === 'Connection to VM console' && t.status === 'pending')).toEqual([]);
  });
});

describe('CONNECT /console', () => {
  it('streams a PV guest\'s vt100 console and echoes input', async () => {
    const vm = await startVm('pv01', { domain_type: 'pv', HVM_boot_policy: '', PV_bootloader: 'pygrub', reference_label: 'ubuntu-22.04' });
    const c = await consoleOf(vm, 'vt100');
    await advance(60);
    const { sock, r, status } = await connectConsole(base, `/console?uuid=${c.uuid}&session_id=${x.session}`);
    expect(status).toBe(200);
    let seen = '';
    while (!seen.endsWith('pv01 login: ')) seen += (await r.read(1)).toString('latin1');
    expect(seen).toContain('Ubuntu 22.04 LTS pv01 tty1');
    expect(seen).not.toContain('SeaBIOS');
    sock.write('admin\r');
    const echo = (await r.read('admin\r\nPassword: '.length)).toString('latin1');
    expect(echo).toBe('admin\r\nPassword: ');
    sock.write('secret\r');
    const answer = (await r.read('\r\n\r\nLogin incorrect\r\npv01 login: '.length)).toString('latin1');
    expect(answer).toBe('\r\n\r\nLogin incorrect\r\npv01 login: ');
    sock.destroy();
  });

  it('answers 401 without credentials and serves RFB to Basic credentials', async () => {
    const vm = await startVm('basic');
    const c = await consoleOf(vm, 'rfb');
    expect((await connectConsole(base, `/console?uuid=${c.uuid}`)).status).toBe(401);
    const u = new URL(base);
    const sock = tcpConnect(Number(u.port), u.hostname);
    const r = new ByteReader();
    sock.on('data', (b: Buffer) => r.push(b));
    sock.on('close', () => r.end());
    sock.write(`CONNECT /console?uuid=${c.uuid} HTTP/1.0\r\nAuthorization: Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}\r\n\r\n`);
    let head = '';
    while (!head.endsWith('\r\n\r\n')) head += (await r.read(1)).toString('latin1');
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    const rfb = await rfbHandshake(r, (b) => sock.write(b));
    await rfb.update(false);
    expect(screenText(rfb.lit, rfb.width, rfb.height)[0]).toContain('SeaBIOS');
    sock.destroy();
  });
});

describe('pool.limit_console_sessions', () => {
  it('refuses WebSockets, and a second CONNECT to the same VM, with 503', async () => {
    const vm = await startVm('limited');
    const c = await consoleOf(vm, 'rfb');
    const [pool] = await x.call('pool.get_all');
    await x.call('pool.set_limit_console_sessions', pool, true);
    try {
      const ws = await wsConsole(wsUrl(`/console?uuid=${c.uuid}&session_id=${x.session}`)).then(() => 0, (e: { status?: number }) => e.status);
      expect(ws).toBe(503);
      const first = await connectConsole(base, `/console?uuid=${c.uuid}&session_id=${x.session}`);
      expect(first.status).toBe(200);
      expect((await first.r.read(12)).toString('latin1')).toBe('RFB 003.008\n');
      const second = await connectConsole(base, `/console?uuid=${c.uuid}&session_id=${x.session}`);
      expect(second.status).toBe(503);
      first.sock.destroy();
      second.sock.destroy();
    } finally {
      await x.call('pool.set_limit_console_sessions', pool, false);
    }
  });
});

describe('snapshots of the screen', () => {
  it('GET /vncsnapshot answers a JPEG of the screen, as xapi does', async () => {
    const vm = await startVm('snap', { other_config: { 'xapi-emu-guest-profile': 'no-os' } });
    await advance(30);
    const res = await fetch(`${base}/vncsnapshot?uuid=${(await rec('VM', vm)).uuid}&session_id=${x.session}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="snapshot.*\.jpg"$/);
    const img = jpeg.decode(Buffer.from(await res.arrayBuffer()));
    expect([img.width, img.height]).toEqual([720, 400]);
    const litRows = (y0: number, y1: number) => {
      let n = 0;
      for (let y = y0; y < y1; y++) for (let xx = 0; xx < 720; xx++) if (img.data[(y * 720 + xx) * 4] > 100) n++;
      return n;
    };
    expect(litRows(0, 16)).toBeGreaterThan(50); // SeaBIOS
    expect(litRows(16 * 20, 400)).toBe(0); // nothing below "No bootable device."
    const halted: string = await x.call('VM.create', vmArgs('off'));
    expect((await fetch(`${base}/vncsnapshot?ref=${halted}&session_id=${x.session}`)).status).toBe(500);
  });

  it('Debian\'s vncsnapshot reads the screen through a TCP relay to CONNECT /console', async () => {
    const vm = await startVm('relay', { reference_label: 'debian-12' });
    await advance(60);
    const c = await consoleOf(vm, 'rfb');
    // a relay as a VNC viewer's proxy would be: TCP in, CONNECT /console out
    const relay: Server = createServer((client) => {
      void connectConsole(base, `/console?uuid=${c.uuid}&session_id=${x.session}`).then(({ sock, r }) => {
        r.pipeTo((b) => client.write(b));
        sock.on('close', () => client.end());
        client.on('data', (b) => sock.write(b));
        client.on('close', () => sock.destroy());
      });
    });
    await new Promise<void>((ok) => relay.listen(0, '127.0.0.1', ok));
    const port = (relay.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), 'vncsnapshot-'));
    try {
      const out = join(dir, 'screen.jpg');
      await new Promise<void>((ok, fail) =>
        execFile('vncsnapshot', ['-allowblank', '-encodings', 'raw', `127.0.0.1::${port}`, out], { timeout: 30_000 }, (err, _o, stderr) =>
          err ? fail(new Error(`${err.message}\n${stderr}`)) : ok(),
        ),
      );
      const img = jpeg.decode(readFileSync(out));
      expect([img.width, img.height]).toEqual([720, 400]);
      // the login prompt is on the last line of text
      const text = screenText(Uint8Array.from({ length: 720 * 400 }, (_, i) => (img.data[i * 4] > 100 ? 1 : 0)), 720, 400);
      expect(text.join('\n')).toMatch(/./);
      let lit = 0;
      for (let i = 0; i < 720 * 16; i++) if (img.data[i * 4] > 100) lit++;
      expect(lit).toBeGreaterThan(50);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      relay.close();
    }
  });
});
