// Bench section rrd: GET /rrd_updates on a 64-host, 1,000-VM pool (bench/populate.ts) whose VMs
// are started, next to VM.get_all_records on the same pool: the first read of the host's metrics
// (the RRDs made), reads after 10 minutes and after a day of the emulator's clock (the catch-up of
// every running VM's RRD on the host), and the steady read.
// Environment: BENCH_RRD_HOSTS (default 64), BENCH_RRD_VMS (default 1000), BENCH_RRD_ROUNDS (20).
import { join } from 'node:path';
import { Pool } from 'undici';
import { populate } from './populate.js';
import { PASSWORD, login, spawnEmulator, stop, freePort, waitForLogin, jsonCall, now, median, pct, fmt, table } from './lib.js';

const HOSTS = Number(process.env.BENCH_RRD_HOSTS ?? 64);
const VMS = Number(process.env.BENCH_RRD_VMS ?? 1000);
const ROUNDS = Number(process.env.BENCH_RRD_ROUNDS ?? 20);
const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

interface Rec { [k: string]: unknown }

// HTTP Basic credentials (a session per request, as xapi makes one): a seeded pool's session refs
// are not relied on across the populate and the spawned process
const AUTH = { authorization: `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}` };

async function timedGet(url: string): Promise<{ ms: number; bytes: number }> {
  const t0 = now();
  const r = await fetch(url, { headers: AUTH });
  const body = await r.arrayBuffer();
  if (r.status !== 200) throw new Error(`GET ${url}: ${r.status}`);
  return { ms: now() - t0, bytes: body.byteLength };
}

export async function sectionRrd(dir: string): Promise<string> {
  const dataDir = join(dir, `rrd-${HOSTS}x${VMS}`);
  progress(`rrd: populating ${HOSTS} hosts and ${VMS} VMs`);
  populate(dataDir, HOSTS, VMS);
  const port = await freePort();
  const child = spawnEmulator(['--data', dataDir, '--port', String(port)]);
  const base = `http://127.0.0.1:${port}/`;
  try {
    const session = await waitForLogin(base, child);
    const pool = new Pool(base, { connections: 16 });
    const call = async <T>(m: string, ...p: unknown[]) => (await jsonCall<T>(base, m, [session, ...p], pool)).value;
    const clock = async (seconds: number) => {
      const r = await fetch(new URL('/xapi-emu/clock/advance', base), {
        method: 'POST', headers: { 'content-type': 'application/json', ...AUTH }, body: JSON.stringify({ seconds }),
      });
      const text = await r.text();
      if (r.status !== 200) throw new Error(`clock advance: ${r.status} ${text}`);
    };

    // every guest VM running, spread over the hosts by the placement
    const vms = Object.entries(await call<Record<string, Rec>>('VM.get_all_records'))
      .filter(([, r]) => !r.is_a_template && !r.is_control_domain && !r.is_a_snapshot);
    progress(`rrd: starting ${vms.length} VMs`);
    const t0 = now();
    let started = 0;
    const queue = vms.filter(([, r]) => r.power_state === 'Halted').map(([ref]) => ref);
    started += vms.length - queue.length;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let vm = queue.shift(); vm !== undefined; vm = queue.shift()) {
        try {
          await call('VM.start', vm, false, true);
          started++;
        } catch {
          // a VM that cannot start (no room) stays halted
        }
      }
    }));
    const startMs = now() - t0;
    const master = await call<string>('pool.get_master', (await call<string[]>('pool.get_all'))[0]);
    const onMaster = (await call<string[]>('VM.get_all_where', `field "resident_on" = "${master}"`)).length;

    const url = (start: number) => new URL(`/rrd_updates?start=${start}&cf=AVERAGE&host=true&interval=5&json=true`, base).toString();
    const first = await timedGet(url(-600));
    await clock(600);
    const after10 = await timedGet(url(-600));
    await clock(86400);
    const afterDay = await timedGet(url(-600));
    const steady: number[] = [];
    let bytes = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const r = await timedGet(url(-600));
      steady.push(r.ms);
      bytes = r.bytes;
    }
    const fresh = await login(base);
    const allRecords: number[] = [];
    for (let i = 0; i < Math.max(3, Math.floor(ROUNDS / 4)); i++) {
      const t = now();
      await jsonCall(base, 'VM.get_all_records', [fresh], pool);
      allRecords.push(now() - t);
    }
    await pool.close();
    return table(`rrd: /rrd_updates?host=true on the master, ${HOSTS} hosts, ${vms.length} VMs (${started} running, ${onMaster} on the master; started in ${fmt(startMs / 1000, 1)} s)`, [
      ['request', 'ms', 'notes'],
      ['/rrd_updates, first read', fmt(first.ms), 'host and VM RRDs made'],
      ['/rrd_updates after 10 min of clock', fmt(after10.ms), '120 steps caught up per RRD'],
      ['/rrd_updates after 1 day of clock', fmt(afterDay.ms), '17,280 steps caught up per RRD'],
      ['/rrd_updates steady, median', fmt(median(steady)), `p95 ${fmt(pct(steady, 95))} ms, ${fmt(bytes / 1024)} KiB`],
      ['VM.get_all_records, median', fmt(median(allRecords)), `${vms.length} VMs`],
    ]);
  } finally {
    await stop(child);
  }
}
