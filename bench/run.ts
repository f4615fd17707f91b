// Performance benchmark of the emulator. Usage:   npm run bench      (tsx bench/run.ts)
//
// Prints numbers and ratios, asserts nothing; takes about 3 minutes on 2 cores (plus about 2 for
// section 9). Every server runs
// in a child process (node bin/xapi-emu.js …, and bench/bare-server.ts for the Fastify baseline), so
// the load generator (autocannon, in this process) does not share their event loop. Sections:
//   1. VM.get_record req/s over XML-RPC and JSON-RPC (32 keep-alive connections) vs a bare Fastify route
//   2. VM.get_all_records latency and size with 10,000 VMs in a 64-host pool
//   3. event.from latency from a change to its delivery, with 100 waiting watchers
//   4. start-up time and RSS: 64 hosts + 10,000 VMs (SQLite data dir) vs a default 1-host --memory pool
//   5. storage (bench/storage.ts): VDI import/export over HTTP vs a plain file copy, sparse exports,
//      snapshot/clone times as a VHD chain grows
//   6. datapath (bench/datapath.ts): a guest's sequential write through blkfront → blkif ring →
//      tapdisk → VHD (and through qemu-dm's IDE) vs a plain sequential file write
//   8. state snapshots (bench/snapshots.ts): snapshot and restore of the default pool and of a
//      1,000-VM pool, and "restore + first call" per test
//   9. whole-VM exports and NBD (bench/xva.ts): GET /export (none, gzip, zstd) vs a plain copy and
//      tar + gzip/zstd of the same bytes, PUT /import vs tar -x, NBD reads (nbdcopy) vs /export_raw_vdi
// Environment knobs: BENCH_DURATION (s per autocannon run, default 7), BENCH_VMS (default 10000),
// BENCH_HOSTS (default 64), BENCH_ROUNDS (event rounds, default 20), BENCH_CALLS (get_all_records
// calls per protocol, default 20), BENCH_VDI_MIB, BENCH_STORAGE_ROUNDS and BENCH_CHAIN (see
// bench/storage.ts), BENCH_ONLY (comma-separated sections to run: rpc = 1, pool = 2 and 4,
// events = 3, storage = 5, datapath = 6, lifecycle = 7 (bench/lifecycle.ts), snapshots = 8, xva = 9, cli (bench/cli.ts: xe vm-list over 512 VMs), rrd (bench/rrd.ts: /rrd_updates of a 64-host, 1,000-VM pool), console (bench/console.ts: RFB frames/s), join (bench/join.ts: pool.join into a 1,000-VM pool), ha (bench/ha.ts: HA failover of 100 protected VMs), migrate (bench/migrate.ts: live storage migration MiB/s vs VDI.copy); default all); BENCH_DATAPATH_MIB, BENCH_DATAPATH_IO_KIB, BENCH_DATAPATH_ROUNDS (see bench/datapath.ts);
// BENCH_XVA_MIB (disk of section 9, default 256) and BENCH_XVA_ROUNDS (default 2).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon, { type Result } from 'autocannon';
import { Pool } from 'undici';
import {
  spawnEmulator, spawnBare, stop, stopAll, killAllSync, freePort, waitForLogin, login, jsonCall, post, xmlBody, jsonBody,
  xmlSuccess, rssMiB, cpuMs, pct, median, fmt, table, sleep, now, RpcError, type Child,
} from './lib.js';
import { populate, type Populated } from './populate.js';
import { sectionStorage } from './storage.js';
import { sectionDatapath } from './datapath.js';
import { sectionLifecycle } from './lifecycle.js';
import { sectionSnapshots } from './snapshots.js';
import { sectionXva } from './xva.js';
import { sectionCli } from './cli.js';
import { sectionRrd } from './rrd.js';
import { sectionConsole } from './console.js';
import { sectionJoin } from './join.js';
import { sectionHa } from './ha.js';
import { sectionMigrate } from './migrate.js';

const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const DURATION = env('BENCH_DURATION', 7);
const WARMUP = 2;
const CONNECTIONS = 32;
const VMS = env('BENCH_VMS', 10_000);
const HOSTS = env('BENCH_HOSTS', 64);
const ROUNDS = env('BENCH_ROUNDS', 20);
const CALLS = env('BENCH_CALLS', 20);
const WATCHERS = 100;
const SECTIONS = ['rpc', 'pool', 'events', 'storage', 'datapath', 'lifecycle', 'snapshots', 'xva', 'cli', 'rrd', 'console', 'join', 'ha', 'migrate'] as const;
const ONLY = process.env.BENCH_ONLY ? process.env.BENCH_ONLY.split(',').map((x) => x.trim()) : [...SECTIONS];
for (const x of ONLY) if (!(SECTIONS as readonly string[]).includes(x)) throw new Error(`BENCH_ONLY: unknown section "${x}" (${SECTIONS.join(', ')})`);
const want = (s: (typeof SECTIONS)[number]) => ONLY.includes(s);

const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);
/** the temporary directory (data dir, response bodies), removed at the end or on a signal */
let tmp: string | undefined;

interface Rec { [k: string]: unknown }

interface Started { child: Child; base: string; session: string; spawnToLogin: number; spawnToBanner: number }

async function startEmulator(args: string[]): Promise<Started> {
  const port = await freePort();
  const t0 = now();
  const child = spawnEmulator([...args, '--port', String(port)]);
  const base = `http://127.0.0.1:${port}/`;
  const session = await waitForLogin(base, child);
  const spawnToLogin = now() - t0;
  for (let i = 0; child.readyAt === undefined && i < 3000; i++) await sleep(10);
  return { child, base, session, spawnToLogin, spawnToBanner: (child.readyAt ?? NaN) - t0 };
}

// ───────────────────────────── 1. VM.get_record throughput ─────────────────────────────

interface Load { url: string; body: string; contentType: string }

async function cannon(load: Load, duration: number): Promise<Result> {
  return autocannon({
    url: load.url,
    method: 'POST',
    headers: { 'content-type': load.contentType },
    body: load.body,
    connections: CONNECTIONS,
    pipelining: 1,
    duration,
  });
}

async function sectionThroughput(tmp: string): Promise<string> {
  // (tmp: where the emulator's responses are written for the bare server)
  progress('1: starting the emulator (--memory)');
  const emu = await startEmulator(['--memory']);
  const { base, session } = emu;
  const vms = (await jsonCall<Record<string, Rec>>(base, 'VM.get_all_records', [session])).value;
  const [dom0, dom0rec] = Object.entries(vms).find(([, r]) => r.is_control_domain === true)!;

  const xmlReq = xmlBody('VM.get_record', [session, dom0]);
  const jsonReq = jsonBody('VM.get_record', [session, dom0]);
  // Honesty check, outside the timed runs: both answer Success with dom0's record.
  const xr = await post(base, '/', xmlReq, 'text/xml');
  if (!xmlSuccess(xr.text) || !xr.text.includes(`<value>${dom0rec.uuid as string}</value>`)) {
    throw new Error(`XML-RPC VM.get_record is not a Success with dom0's record: ${xr.text.slice(0, 300)}`);
  }
  const jr = await post(base, '/jsonrpc', jsonReq, 'application/json');
  const jparsed = JSON.parse(jr.text) as { result?: Rec; error?: unknown };
  if (jparsed.error !== undefined || jparsed.result?.uuid !== dom0rec.uuid) {
    throw new Error(`JSON-RPC VM.get_record is not a success with dom0's record: ${jr.text.slice(0, 300)}`);
  }
  const xmlFile = join(tmp, 'get_record.xml');
  const jsonFile = join(tmp, 'get_record.json');
  writeFileSync(xmlFile, xr.text);
  writeFileSync(jsonFile, jr.text);

  progress('1: starting the bare Fastify server');
  const bare = await spawnBare(xmlFile, jsonFile);
  const bx = await post(bare.url, '/', xmlReq, 'text/xml');
  const bj = await post(bare.url, '/jsonrpc', jsonReq, 'application/json');
  if (bx.text !== xr.text || bj.text !== jr.text) throw new Error('the bare server does not answer the same bodies');

  const rows: (string | number)[][] = [['target', 'req/s', 'p50 ms', 'p99 ms', 'MB/s', 'errors', 'server CPU µs/req', 'ratio emu/bare (req/s)', 'by CPU/req']];
  for (const [proto, path, body, ct, size] of [
    ['XML-RPC', '', xmlReq, 'text/xml', xr.bytes],
    ['JSON-RPC', 'jsonrpc', jsonReq, 'application/json', jr.bytes],
  ] as const) {
    const res = {} as Record<'emu' | 'bare', { r: Result; cpu: number }>;
    for (const [who, url, pid] of [['emu', base + path, emu.child.pid], ['bare', bare.url + path, bare.child.pid]] as const) {
      progress(`1: ${proto} ${who}: warm-up ${WARMUP} s, then ${DURATION} s × ${CONNECTIONS} connections`);
      await cannon({ url, body, contentType: ct }, WARMUP);
      const c0 = cpuMs(pid);
      const r = await cannon({ url, body, contentType: ct }, DURATION);
      res[who] = { r, cpu: ((cpuMs(pid) - c0) * 1000) / r.requests.total };
    }
    const ratio = res.emu.r.requests.average / res.bare.r.requests.average;
    const cpuRatio = res.bare.cpu / res.emu.cpu;
    for (const who of ['emu', 'bare'] as const) {
      const { r, cpu } = res[who];
      const bad = r.errors + r.timeouts + r.non2xx;
      rows.push([
        `${proto} ${who === 'emu' ? 'emulator' : 'bare Fastify'} (${fmt(size / 1024)} KiB)`,
        fmt(r.requests.average, 0), fmt(r.latency.p50, 0), fmt(r.latency.p99, 0),
        fmt(r.throughput.average / 1e6, 1), String(bad), fmt(cpu, 1),
        who === 'emu' ? `${fmt(ratio, 2)} ${ratio >= 0.5 ? '(≥ 0.5 ok)' : '(BELOW 0.5)'}` : '',
        who === 'emu' ? fmt(cpuRatio, 2) : '',
      ]);
    }
  }
  await stop(emu.child);
  await stop(bare.child);
  return table(
    `1. VM.get_record (dom0) throughput: ${CONNECTIONS} keep-alive connections, ${DURATION} s each (after ${WARMUP} s warm-up); target ratio ≥ 0.5\n` +
      `   (server CPU µs/req: user+system CPU time of the server process during the run / requests; "by CPU/req" = bare µs/req ÷\n` +
      `   emulator µs/req, the ratio a server-bound run would give: the load generator shares the 2 cores with the server)`,
    rows,
  );
}

// ───────────────────────────── 2. VM.get_all_records with 10,000 VMs ─────────────────────────────

async function sectionAllRecords(base: string, session: string, pop: Populated): Promise<string> {
  const rows: (string | number)[][] = [['protocol', 'VMs', 'size MB', 'server ms p50', 'p95', 'total ms p50', 'p95', 'min', 'max']];
  const agent = new Pool(base, { connections: 1 });
  try {
    for (const proto of ['XML-RPC', 'JSON-RPC'] as const) {
      const xml = proto === 'XML-RPC';
      const body = xml ? xmlBody('VM.get_all_records', [session]) : jsonBody('VM.get_all_records', [session]);
      const call = () => post(base, xml ? '/' : '/jsonrpc', body, xml ? 'text/xml' : 'application/json', agent);
      progress(`2: ${proto} VM.get_all_records × ${CALLS}`);
      // verification (and warm-up), outside the measured calls
      const first = await call();
      let count: number;
      if (xml) {
        if (!xmlSuccess(first.text)) throw new Error(`XML-RPC get_all_records failed: ${first.text.slice(0, 300)}`);
        count = first.text.match(/<member><name>OpaqueRef:[^<]*<\/name><value><struct>/g)?.length ?? 0;
      } else {
        const r = JSON.parse(first.text) as { result?: Record<string, unknown>; error?: unknown };
        if (r.error !== undefined) throw new Error(`JSON-RPC get_all_records failed: ${first.text.slice(0, 300)}`);
        count = Object.keys(r.result!).length;
      }
      const ttfb: number[] = [];
      const total: number[] = [];
      let bytes = 0;
      for (let i = 0; i < CALLS; i++) {
        const r = await call();
        ttfb.push(r.ttfb);
        total.push(r.total);
        bytes = r.bytes;
      }
      rows.push([
        proto, String(count), fmt(bytes / 1e6, 1), fmt(median(ttfb), 0), fmt(pct(ttfb, 95), 0),
        fmt(median(total), 0), fmt(pct(total, 95), 0), fmt(Math.min(...total), 0), fmt(Math.max(...total), 0),
      ]);
    }
  } finally {
    await agent.close();
  }
  return table(
    `2. VM.get_all_records, ${pop.hosts} hosts + ${pop.vms.toLocaleString('en-US')} VMs (${pop.running} running), ${CALLS} sequential calls per protocol\n` +
      `   (server ms = until the response headers, i.e. the whole body built; total = until the last byte)`,
    rows,
  );
}

// ───────────────────────────── 3. event.from latency ─────────────────────────────

interface EventFrom { events: { class: string; operation: string; ref: string; snapshot?: Rec }[]; token: string }

async function sectionEvents(): Promise<string> {
  progress(`3: starting the emulator (--memory), ${WATCHERS} watcher sessions`);
  const emu = await startEmulator(['--memory']);
  const { base, session: admin } = emu;
  const watchPool = new Pool(base, { connections: WATCHERS + 4 });
  const writer = new Pool(base, { connections: 1 });
  try {
    const sessions = await Promise.all(Array.from({ length: WATCHERS }, () => login(base, writer)));
    const all = (await jsonCall<Record<string, Rec>>(base, 'VM.get_all_records', [admin], writer)).value;
    const [vm] = Object.entries(all).find(([, r]) => r.is_a_template === true)!;
    let token = (await jsonCall<EventFrom>(base, 'event.from', [admin, ['vm'], '', 0.0], writer)).value.token;

    const deliveries: number[] = [];
    const firsts: number[] = [];
    const lasts: number[] = [];
    const writes: number[] = [];
    let early = 0;
    const warm = 2;
    for (let round = -warm; round < ROUNDS; round++) {
      const label = `bench-event-${round}`;
      let t0 = Infinity;
      const calls = sessions.map(async (s) => {
        const r = await jsonCall<EventFrom>(base, 'event.from', [s, ['vm'], token, 30.0], watchPool);
        const hit = r.value.events.find((e) => e.ref === vm && e.operation === 'mod');
        if (!hit || hit.snapshot?.name_label !== label) throw new Error(`event.from: unexpected result ${r.text.slice(0, 300)}`);
        return { end: r.end, token: r.value.token };
      });
      await sleep(250); // let every event.from reach the server and block
      t0 = now();
      const w = jsonCall(base, 'VM.set_name_label', [admin, vm, label], writer);
      const got = await Promise.all(calls);
      const wr = await w;
      const tokens = new Set(got.map((g) => g.token));
      if (tokens.size !== 1) throw new Error(`event.from: watchers got different tokens: ${[...tokens].join(' ')}`);
      token = got[0].token;
      if (round < 0) continue;
      const lat = got.map((g) => g.end - t0);
      early += lat.filter((x) => x < 0).length;
      deliveries.push(...lat);
      firsts.push(Math.min(...lat));
      lasts.push(Math.max(...lat));
      writes.push(wr.total);
    }
    const rows: (string | number)[][] = [
      ['measure', 'n', 'min ms', 'median ms', 'p99 ms', 'max ms'],
      ['change → each watcher', String(deliveries.length), ...[0, 50, 99, 100].map((p) => fmt(pct(deliveries, p), 2))],
      ['change → first watcher (per round)', String(firsts.length), ...[0, 50, 99, 100].map((p) => fmt(pct(firsts, p), 2))],
      ['change → last watcher (per round)', String(lasts.length), ...[0, 50, 99, 100].map((p) => fmt(pct(lasts, p), 2))],
      ['VM.set_name_label call itself', String(writes.length), ...[0, 50, 99, 100].map((p) => fmt(pct(writes, p), 2))],
    ];
    return table(
      `3. event.from(['vm'], token, 30.0) latency: ${WATCHERS} sessions blocked on keep-alive connections, VM.set_name_label on a template, ${ROUNDS} rounds` +
        (early ? `\n   WARNING: ${early} watchers answered before the change was sent` : ''),
      rows,
    );
  } finally {
    await watchPool.close();
    await writer.close();
    await stop(emu.child);
  }
}

// ───────────────────────────── 4. start-up time and memory ─────────────────────────────

interface Startup {
  label: string;
  spawnToLogin: number;
  spawnToBanner: number;
  rssStart: number;
  rssAfter: number;
  allMs: number;
  allMB: number;
  classes: number;
  removed: string[];
  objects: number;
  failed: string[];
}

/** get_all_records of every class (JSON-RPC), then the child's RSS. */
async function startupFigures(label: string, emu: Started): Promise<Startup> {
  const rssStart = rssMiB(emu.child.pid);
  const methods = (await jsonCall<string[]>(emu.base, 'system.listMethods', [])).value.filter((m) => m.endsWith('.get_all_records'));
  const failed: string[] = [];
  const removed: string[] = [];
  let bytes = 0;
  let objects = 0;
  const t0 = now();
  for (const m of methods) {
    try {
      const r = await jsonCall<Record<string, unknown>>(emu.base, m, [emu.session]);
      bytes += r.bytes;
      objects += Object.keys(r.value).length;
    } catch (e) {
      // classes removed from the API answer MESSAGE_REMOVED, as xapi does
      if (e instanceof RpcError && JSON.stringify(e.description).includes('MESSAGE_REMOVED')) removed.push(m.split('.')[0]);
      else failed.push(`${m}: ${(e as Error).message}`);
    }
  }
  const allMs = now() - t0;
  return { label, spawnToLogin: emu.spawnToLogin, spawnToBanner: emu.spawnToBanner, rssStart, rssAfter: rssMiB(emu.child.pid), allMs, allMB: bytes / 1e6, classes: methods.length - removed.length, removed, objects, failed };
}

function startupTable(rows: Startup[], pop: Populated): string {
  const t = table(
    `4. Start-up and memory (spawn → first successful session.login_with_password, polled every 10 ms; banner = every\n` +
      `   listener open; RSS from /proc/<pid>/status right after the login, and after get_all_records of every class)\n` +
      `   data dir populated in-process in ${fmt(pop.ms / 1000, 1)} s, xapi.db ${fmt(pop.dbMiB, 1)} MiB`,
    [
      ['pool', 'spawn→login ms', 'spawn→banner ms', 'RSS after start MiB', 'get_all_records ×classes', 'objects', 'MB', 'ms', 'RSS after MiB'],
      ...rows.map((r) => [
        r.label, fmt(r.spawnToLogin, 0), fmt(r.spawnToBanner, 0), fmt(r.rssStart, 1), String(r.classes), String(r.objects), fmt(r.allMB, 1), fmt(r.allMs, 0), fmt(r.rssAfter, 1),
      ]),
    ],
  );
  const notes = [`   (every class's get_all_records over JSON-RPC; ${rows[0].removed.join(', ')} answer MESSAGE_REMOVED as in xapi)`];
  const fails = rows.flatMap((r) => r.failed.map((f) => `   ${r.label}: ${f}`));
  return [t, ...notes, ...(fails.length ? ['   failed calls:', ...fails] : [])].join('\n');
}

// ───────────────────────────── main ─────────────────────────────

async function main(): Promise<void> {
  const dir = (tmp = mkdtempSync(join(tmpdir(), 'xapi-emu-bench-')));
  const t0 = now();
  const print = (s: string) => console.log(`\n${s}`);
  console.log(`xapi-emu bench: node ${process.version}, ${(await import('node:os')).cpus().length} CPUs`);
  try {
    if (want('rpc') || want('pool')) {
      // a spawn first, so that tsx's transform cache is warm for the timed start-ups
      progress('warming the tsx cache');
      await stop((await startEmulator(['--memory'])).child);
    }

    if (want('rpc')) print(await sectionThroughput(dir));

    let bigStartup: Startup | undefined;
    let pop: Populated | undefined;
    if (want('pool')) {
      const dataDir = join(dir, 'pool-64x10k');
      progress(`2/4: populating ${dataDir} with ${HOSTS} hosts and ${VMS} VMs`);
      pop = populate(dataDir, HOSTS, VMS);
      progress(`2/4: populated in ${fmt(pop.ms / 1000, 1)} s; starting the CLI on it`);
      const big = await startEmulator(['--data', dataDir]);
      bigStartup = await startupFigures(`${HOSTS} hosts, ${VMS.toLocaleString('en-US')} VMs (--data)`, big);
      print(await sectionAllRecords(big.base, big.session, pop));
      await stop(big.child);
    }

    if (want('events')) print(await sectionEvents());

    if (want('pool')) {
      progress('4: default 1-host pool (--memory)');
      const small = await startEmulator(['--memory']);
      const smallStartup = await startupFigures('default 1 host (--memory)', small);
      await stop(small.child);
      print(startupTable([bigStartup!, smallStartup], pop!));
    }

    if (want('storage')) print(await sectionStorage(dir));
    if (want('datapath')) print(await sectionDatapath(dir));
    if (want('lifecycle')) print(await sectionLifecycle());
    if (want('snapshots')) print(await sectionSnapshots());
    if (want('xva')) print(await sectionXva(dir));
    if (want('cli')) print(await sectionCli(dir));
    if (want('rrd')) print(await sectionRrd(dir));
    if (want('console')) print(await sectionConsole());
    if (want('join')) print(await sectionJoin(dir));
    if (want('ha')) print(await sectionHa(dir));
    if (want('migrate')) print(await sectionMigrate(dir));
    console.log(`\ntotal ${fmt((now() - t0) / 1000, 1)} s`);
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAllSync();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
}
try {
  await main();
} catch (e) {
  console.error(`bench failed: ${(e as Error).stack ?? e}`);
  killAllSync();
  process.exitCode = 1;
}
