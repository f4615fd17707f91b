// Section 9 (BENCH_ONLY=console): RFB frames per second over the console WebSocket (GET /console,
// subprotocol binary, as XO and XO Lite use it), against the emulator as a child process: one
// client asking for full-frame (non-incremental) updates of the 720x400 screen back to back at
// 32 bpp, then BENCH_CONSOLE_CLIENTS (default 8) such clients at once on as many VMs; and the
// latency of GET /vncsnapshot (a JPEG of the screen). BENCH_CONSOLE_SECONDS (default 5) each.
import { Pool } from 'undici';
import { WebSocket } from 'ws';
import { spawnEmulator, stop, freePort, waitForLogin, jsonCall, now, median, pct, fmt, table, type Child } from './lib.js';
import { vmArgs } from '../test/integration/helpers/records.js';

const SECONDS = Number(process.env.BENCH_CONSOLE_SECONDS ?? 5);
const CLIENTS = Number(process.env.BENCH_CONSOLE_CLIENTS ?? 8);
const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

/** An RFB client that asks for full frames until `until`; returns the frames received. */
async function fullFrames(url: string, until: number): Promise<{ frames: number; bytes: number }> {
  const ws = new WebSocket(url, ['binary']);
  let buf: Buffer = Buffer.alloc(0);
  let want = 0;
  let wake: (() => void) | null = null;
  ws.on('message', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    if (buf.length >= want) wake?.();
  });
  const read = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      want = n;
      await new Promise<void>((r) => (wake = r));
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  await new Promise<void>((ok, fail) => {
    ws.once('open', () => ok());
    ws.once('error', fail);
  });
  await read(12);
  ws.send(Buffer.from('RFB 003.008\n'));
  const n = (await read(1))[0];
  await read(n);
  ws.send(Buffer.from([1]));
  await read(4);
  ws.send(Buffer.from([1]));
  const init = await read(24);
  const [w, h] = [init.readUInt16BE(0), init.readUInt16BE(2)];
  await read(init.readUInt32BE(20));
  const req = Buffer.alloc(10);
  req[0] = 3;
  req.writeUInt16BE(w, 6);
  req.writeUInt16BE(h, 8);
  let frames = 0;
  let bytes = 0;
  while (now() < until) {
    ws.send(req);
    const head = await read(4);
    for (let i = head.readUInt16BE(2); i > 0; i--) {
      const r = await read(12);
      const size = r.readUInt16BE(4) * r.readUInt16BE(6) * 4;
      await read(size);
      bytes += 16 + size;
    }
    frames++;
  }
  ws.close();
  return { frames, bytes };
}

export async function sectionConsole(): Promise<string> {
  const t0 = now();
  const port = await freePort();
  const child: Child = spawnEmulator(['--memory', '--time-scale', '0', '--port', String(port)]);
  try {
    const base = `http://127.0.0.1:${port}/`;
    const session = await waitForLogin(base, child);
    const pool = new Pool(base, { connections: 1 });
    const call = async <T>(m: string, ...p: unknown[]) => (await jsonCall<T>(base, m, [session, ...p], pool)).value;
    const [host] = await call<string[]>('host.get_all');
    const vms: string[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const vm = await call<string>('VM.create', vmArgs(`bench-console-${i}`, { reference_label: 'debian-12' }));
      await call('VM.start_on', vm, host, false, false);
      vms.push(vm);
    }
    const url = (vm: string) => `ws://127.0.0.1:${port}/console?ref=${vm}&session_id=${session}`;
    const rows: (string | number)[][] = [['clients', 'frames/s (total)', 'frames/s per client', 'MB/s']];
    for (const clients of [1, CLIENTS]) {
      progress(`console: ${clients} RFB client(s), full frames for ${SECONDS} s`);
      const start = now();
      const results = await Promise.all(vms.slice(0, clients).map((vm) => fullFrames(url(vm), start + SECONDS * 1000)));
      const secs = (now() - start) / 1000;
      const frames = results.reduce((a, r) => a + r.frames, 0);
      const bytes = results.reduce((a, r) => a + r.bytes, 0);
      rows.push([String(clients), frames / secs, frames / secs / clients, bytes / secs / 1e6]);
    }
    progress('console: GET /vncsnapshot');
    const snaps: number[] = [];
    const end = now() + SECONDS * 1000;
    while (now() < end) {
      const t = now();
      const r = await pool.request({ path: `/vncsnapshot?ref=${vms[0]}&session_id=${session}`, method: 'GET' });
      await r.body.arrayBuffer();
      if (r.statusCode !== 200) throw new Error(`/vncsnapshot: HTTP ${r.statusCode}`);
      snaps.push(now() - t);
    }
    await pool.close();
    const out = table(`9. Consoles: RFB over the WebSocket, 720x400 at 32 bpp, full-frame requests (${fmt((now() - t0) / 1000, 1)} s)`, rows);
    const snapRows = [['GET /vncsnapshot', 'median ms', 'p95 ms', 'n'], ['720x400 JPEG', median(snaps), pct(snaps, 95), String(snaps.length)]];
    return `${out}\n${table('9b. Screen snapshots', snapRows)}`;
  } finally {
    await stop(child);
  }
}
