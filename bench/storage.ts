// Storage section of the benchmark (bench/run.ts, section 5): VDI transfers over HTTP, sparse
// exports, and snapshot/clone times as a VHD chain grows. Prints numbers and ratios, asserts
// nothing (a failed import, a transfer cut short or wrong bytes stop the bench, as they would make
// the numbers meaningless; an export whose bytes all came but whose task failed is only reported).
//
// One emulator child (node bin/xapi-emu.js --data <tmp>/…) with a --config file that sets
// sr_gc_auto = 0, so that the storage GC never coalesces or deletes anything between two steps
// (with time scale 0 its 300 simulated-second pause is instant). Every file (the emulator's SR, the
// client's source and exported files, the plain copies) is in the same temporary directory, on the
// same disk. Parts:
//   a. import (PUT /import_raw_vdi) and export (GET /export_raw_vdi) of a BENCH_VDI_MIB (default
//      512) MiB VDI full of non-zero data, raw and VHD; the client streams the body from a file and
//      writes what it receives to a file, and every transfer ends with the bytes fsync'ed at the
//      receiver (the emulator's import commits with an fsync). Each transfer comes right after a
//      plain stream copy of the same file + fsync on the same disk, BENCH_STORAGE_ROUNDS (default 2)
//      times; best of each against the best plain copy (the disk and CPUs may be shared: the best
//      run is the least disturbed one). For reference: fs.copyFile + fsync once, and the same PUT and
//      GET against a bare node:http server child (body → file + fsync; file → body), which tells the
//      cost of HTTP on loopback with two processes on the same CPUs from the emulator's own.
//   b. a 100 GiB VDI holding 10 MiB (5 blocks spread over the disk): VHD import and export (size and
//      time); raw export on a 4 GiB VDI holding the same 10 MiB instead (100 GiB of zeros over HTTP
//      would take minutes), its body counted and discarded.
//   c. VDI.snapshot, then VDI.clone of the new snapshot, repeated BENCH_CHAIN (default 30) times on
//      one VDI: each snapshot makes the VDI's chain one longer; SM refuses past 30
//      (SR_BACKEND_FAILURE_109), which is reported as it happens.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { copyFile, open } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Vhd } from '../storage/vhd/index.js';
import { spawnEmulator, freePort, waitForLogin, jsonCall, stop, table, fmt, now, sleep, RpcError, type Child } from './lib.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const VDI_MIB = env('BENCH_VDI_MIB', 512);
const ROUNDS = env('BENCH_STORAGE_ROUNDS', 2);
const CHAIN_STEPS = env('BENCH_CHAIN', 30);
/** non-zero data: one random buffer, repeated */
const PATTERN = 4 * MiB;

let started = 0;
const progress = (s: string) => process.stderr.write(`[bench] ${s}${started ? ` (at ${fmt((now() - started) / 1000, 1)} s)` : ''}\n`);

interface Rec { [k: string]: unknown }

interface Ctx { base: string; session: string; sr: string; dir: string }

// ───────────────────────────── HTTP transfers ─────────────────────────────

const q = (o: Record<string, string>) => Object.entries(o).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');

interface Transfer {
  ms: number;
  bytes: number;
  /** an export whose every byte arrived but whose task failed */
  taskError?: string;
}

/** The task given to a transfer, once the answer ended: undefined if it succeeded, else its error. */
async function taskError(c: Ctx, task: string): Promise<string | undefined> {
  let rec: Rec = {};
  for (let i = 0; i < 500; i++) {
    rec = (await jsonCall<Rec>(c.base, 'task.get_record', [c.session, task])).value;
    if (rec.status !== 'pending') break;
    await sleep(10);
  }
  await jsonCall(c.base, 'task.destroy', [c.session, task]);
  return rec.status === 'success' ? undefined : `${String(rec.status)} ${JSON.stringify(rec.error_info)}`;
}

const newTask = async (c: Ctx, label: string) => (await jsonCall<string>(c.base, 'task.create', [c.session, label, ''])).value;

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** PUT `file` (streamed) to `url`; resolves when the answer ends (the emulator has committed an
 * import by then: its 200 comes first, the end of the answer last). */
async function putFile(url: URL, file: string): Promise<Transfer> {
  const size = statSync(file).size;
  const t0 = now();
  await new Promise<void>((resolve, reject) => {
    const req = request(url, { method: 'PUT', agent: false, headers: { 'content-length': String(size), 'content-type': 'application/octet-stream' } });
    let sent = false;
    let answered = false;
    const done = () => sent && answered && resolve();
    req.on('response', (res) => {
      if (res.statusCode !== 200) reject(new Error(`PUT ${url.pathname}: HTTP ${res.statusCode}`));
      res.resume();
      res.on('end', () => {
        answered = true;
        done();
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    pipeline(createReadStream(file), req).then(() => {
      sent = true;
      done();
    }, reject);
  });
  return { ms: now() - t0, bytes: size };
}

/** GET `url` into `file` (then fsync'ed), or counted and discarded without a file. */
async function getTo(url: URL, file?: string): Promise<Transfer> {
  const t0 = now();
  const { bytes, length } = await new Promise<{ bytes: number; length: number }>((resolve, reject) => {
    const req = request(url, { method: 'GET', agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      if (res.statusCode !== 200) return reject(new Error(`GET ${url.pathname}: HTTP ${res.statusCode}`));
      const length = Number(res.headers['content-length']);
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      const sink = file ? pipeline(res, createWriteStream(file)) : new Promise<void>((r, j) => (res.on('end', r), res.on('error', j), res.resume()));
      sink.then(() => resolve({ bytes, length }), reject);
    });
    req.end();
  });
  if (file) await fsyncFile(file);
  const ms = now() - t0;
  if (bytes !== length) throw new Error(`GET ${url.pathname}: ${bytes} bytes of a Content-Length of ${length}`);
  return { ms, bytes };
}

/** PUT /import_raw_vdi of `file` into `vdi`, in a task of ours that must succeed. */
async function importFile(c: Ctx, vdi: string, format: 'raw' | 'vhd', file: string): Promise<Transfer> {
  const task = await newTask(c, `bench import ${format}`);
  const t = await putFile(new URL(`/import_raw_vdi?${q({ session_id: c.session, vdi, format, task_id: task })}`, c.base), file);
  const err = await taskError(c, task);
  if (err) throw new Error(`import ${format}: task ${err}`);
  return t;
}

/** GET /export_raw_vdi of `vdi` (see getTo), in a task of ours. */
async function exportTo(c: Ctx, vdi: string, format: 'raw' | 'vhd', file?: string): Promise<Transfer> {
  const task = await newTask(c, `bench export ${format}`);
  const t = await getTo(new URL(`/export_raw_vdi?${q({ session_id: c.session, vdi, format, task_id: task })}`, c.base), file);
  // Every byte came: a failed task is then the server's doing (reported in the tables, not fatal)
  return { ...t, taskError: await taskError(c, task) };
}

// ───────────────────────────── a bare node:http server (the HTTP reference) ─────────────────────────────

/** PUT: the body into a file, fsync'ed, then the answer; GET: a file, with its Content-Length. Exits
 * when the bench's end of its stdin closes (the bench died). */
const BARE_HTTP = `
import { createServer } from 'node:http';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
const [putFile, getFile] = process.argv.slice(2);
const srv = createServer(async (req, res) => {
  try {
    if (req.method === 'PUT') {
      await pipeline(req, createWriteStream(putFile));
      const fh = await open(putFile, 'r+');
      await fh.sync();
      await fh.close();
      res.writeHead(200, { connection: 'close', 'content-length': 0 }).end();
    } else {
      res.writeHead(200, { connection: 'close', 'content-length': statSync(getFile).size });
      await pipeline(createReadStream(getFile), res);
    }
  } catch (e) {
    res.destroy();
  }
});
srv.listen(0, '127.0.0.1', () => console.log('LISTENING http://127.0.0.1:' + srv.address().port + '/'));
process.stdin.on('end', () => process.exit(0)).resume();
`;

async function spawnBareHttp(dir: string, putFile: string, getFile: string): Promise<{ child: Child; url: string }> {
  const script = join(dir, 'bare-http.mjs');
  writeFileSync(script, BARE_HTTP);
  const proc = spawn(process.execPath, [script, putFile, getFile], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const child: Child = { proc, pid: proc.pid!, output: () => out };
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /LISTENING (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`bare HTTP server exited (${code}): ${out}`)));
  });
  return { child, url };
}

async function newVdi(c: Ctx, label: string, size: number): Promise<string> {
  const rec = {
    name_label: label, name_description: 'xapi-emu bench', SR: c.sr, virtual_size: size, type: 'user', sharable: false,
    read_only: false, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
  };
  return (await jsonCall<string>(c.base, 'VDI.create', [c.session, rec])).value;
}

// ───────────────────────────── plain copies (the baseline) ─────────────────────────────

async function streamCopy(src: string, dst: string): Promise<Transfer> {
  const t0 = now();
  await pipeline(createReadStream(src), createWriteStream(dst));
  await fsyncFile(dst);
  return { ms: now() - t0, bytes: statSync(dst).size };
}

async function fileCopy(src: string, dst: string): Promise<Transfer> {
  const t0 = now();
  await copyFile(src, dst);
  await fsyncFile(dst);
  return { ms: now() - t0, bytes: statSync(dst).size };
}

/** Before a timed transfer: every dirty page written out (and the trims of deleted files done), so
 * that a measure does not pay for the writes of the one before. */
async function settle(): Promise<void> {
  execFileSync('sync');
  await sleep(100);
}

/** `size` bytes of one random 4 MiB buffer repeated, written and fsync'ed. */
async function writeSource(file: string, size: number, pattern: Buffer): Promise<void> {
  const fh = await open(file, 'w');
  try {
    for (let off = 0; off < size; off += pattern.length) await fh.write(pattern, 0, Math.min(pattern.length, size - off), off);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The exported raw bytes are the source's: a few samples (first, middle and last 4 MiB). */
async function sameSamples(a: string, b: string, size: number): Promise<boolean> {
  const [fa, fb] = [await open(a, 'r'), await open(b, 'r')];
  try {
    for (const off of [0, Math.floor(size / 2 / PATTERN) * PATTERN, size - PATTERN]) {
      const x = Buffer.alloc(PATTERN);
      const y = Buffer.alloc(PATTERN);
      await fa.read(x, 0, PATTERN, off);
      await fb.read(y, 0, PATTERN, off);
      if (!x.equals(y)) return false;
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

const mibs = (t: Transfer) => t.bytes / MiB / (t.ms / 1000);
/** "task failed" notes of exports (every byte arrived, then the task failed) */
const taskNote = (t: Transfer) => (t.taskError ? `TASK FAILED after every byte arrived: ${t.taskError}` : '');

// ───────────────────────────── a. throughput ─────────────────────────────

type Kind = 'import raw' | 'export raw' | 'export vhd' | 'import vhd' | 'bare PUT' | 'bare GET';
const KINDS: Kind[] = ['import raw', 'export raw', 'export vhd', 'import vhd', 'bare PUT', 'bare GET'];

async function partThroughput(c: Ctx): Promise<string> {
  const size = VDI_MIB * MiB;
  const work = join(c.dir, 'client');
  const src = join(c.dir, 'source.raw');
  progress(`5a: writing a ${VDI_MIB} MiB source file`);
  await writeSource(src, size, randomBytes(PATTERN));
  const bare = await spawnBareHttp(c.dir, join(work, 'bare-put.raw'), src);

  const plain: Transfer[] = [];
  const runs = new Map<Kind, Transfer[]>(KINDS.map((k) => [k, []]));
  let cf: Transfer | undefined;
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      mkdirSync(work, { recursive: true });
      /** a plain copy (for `withPlain`), then the transfer, each after a `sync` */
      const step = async (kind: Kind, f: () => Promise<Transfer>, withPlain = true) => {
        progress(`5a: round ${round}/${ROUNDS}: ${withPlain ? 'plain stream copy, then ' : ''}${kind}`);
        if (withPlain) {
          await settle();
          plain.push(await streamCopy(src, join(work, `copy-${kind.replace(' ', '-')}.raw`)));
        }
        await settle();
        runs.get(kind)!.push(await f());
      };
      const vdiRaw = await newVdi(c, 'bench raw import', size);
      await step('import raw', () => importFile(c, vdiRaw, 'raw', src));
      await step('bare PUT', () => putFile(new URL(bare.url), src), false);
      const rawOut = join(work, 'export.raw');
      await step('export raw', () => exportTo(c, vdiRaw, 'raw', rawOut));
      if (round === 1 && !(await sameSamples(src, rawOut, size))) throw new Error('export raw: not the bytes imported');
      await step('bare GET', () => getTo(new URL(bare.url), join(work, 'bare-get.raw')), false);
      const vhdOut = join(work, 'export.vhd');
      await step('export vhd', () => exportTo(c, vdiRaw, 'vhd', vhdOut));
      const vdiVhd = await newVdi(c, 'bench vhd import', size);
      await step('import vhd', () => importFile(c, vdiVhd, 'vhd', vhdOut));
      if (round === 1) {
        await settle();
        cf = await fileCopy(src, join(work, 'copyfile.raw'));
      }
      // deleted between rounds, then settled: ext4 mounted with `discard` trims freed blocks, which
      // would slow the writes that follow
      rmSync(work, { recursive: true, force: true });
      for (const v of [vdiRaw, vdiVhd]) await jsonCall(c.base, 'VDI.destroy', [c.session, v]);
    }
  } finally {
    await stop(bare.child);
    rmSync(src, { force: true });
  }
  await settle();

  const best = (ts: Transfer[]) => ts.reduce((a, b) => (mibs(b) > mibs(a) ? b : a));
  const med = (ts: Transfer[]) => [...ts].sort((a, b) => mibs(a) - mibs(b))[Math.floor((ts.length - 1) / 2)];
  const ref = mibs(best(plain));
  const each = (ts: Transfer[]) => ts.map((t) => fmt(mibs(t), 0)).join(' ');
  const ratio = (x: number) => `${fmt(x, 2)} ${x >= 0.5 ? '(≥ 0.5 ok)' : '(BELOW 0.5)'}`;
  const rows: (string | number)[][] = [
    ['transfer', 'MiB', 'best s', 'best MiB/s', 'ratio to plain', 'to bare HTTP', 'MiB/s of each run', 'note'],
    [`plain stream copy + fsync (×${plain.length})`, fmt(size / MiB, 0), fmt(best(plain).ms / 1000, 2), fmt(ref, 0), '1.00', '', each(plain), `median ${fmt(mibs(med(plain)), 0)} MiB/s`],
    ['fs.copyFile + fsync', fmt(size / MiB, 0), fmt(cf!.ms / 1000, 2), fmt(mibs(cf!), 0), fmt(mibs(cf!) / ref, 2), '', each([cf!]), 'copy_file_range: no user-space copy'],
  ];
  const notes: Record<Kind, string> = {
    'bare PUT': 'node:http server: body → file, fsync',
    'bare GET': 'node:http server: file → HTTP → file, fsync',
    'import raw': 'file → HTTP → staged file, fsync, rename',
    'export raw': 'VHD → HTTP → file, fsync',
    'export vhd': 'VHD → HTTP → file, fsync',
    'import vhd': 'the exported VHD, into a new VDI',
  };
  for (const k of ['bare PUT', 'bare GET', ...KINDS.slice(0, 4)] as Kind[]) {
    const ts = runs.get(k)!;
    const b = best(ts);
    const [verb, format] = k.split(' ');
    const label = verb === 'bare' ? `bare node:http ${format}` : `${verb === 'import' ? 'PUT /import_raw_vdi' : 'GET /export_raw_vdi'} format=${format}`;
    const bareRef = verb === 'bare' ? undefined : mibs(best(runs.get(verb === 'import' ? 'bare PUT' : 'bare GET')!));
    rows.push([
      label, fmt(b.bytes / MiB, 0), fmt(b.ms / 1000, 2), fmt(mibs(b), 0), verb === 'bare' ? fmt(mibs(b) / ref, 2) : ratio(mibs(b) / ref),
      bareRef === undefined ? '' : fmt(mibs(b) / bareRef, 2), each(ts), [notes[k], ...ts.map(taskNote)].filter(Boolean).join('; '),
    ]);
  }
  return table(
    `5a. VDI transfers over HTTP (one connection each, node:http client in the bench process), ${VDI_MIB} MiB of non-zero data (a random\n` +
      `    4 MiB buffer repeated); every transfer ends with the bytes fsync'ed at the receiver; ${ROUNDS} round(s), each emulator transfer\n` +
      '    right after a plain stream copy of the same file (`sync` before each); ratio = best MiB/s ÷ best plain stream copy MiB/s\n' +
      '    (target ≥ 0.5); "to bare HTTP": ÷ the same transfer with a bare node:http server child (the cost of HTTP on loopback and a\n' +
      '    second process sharing the CPUs, without the emulator)',
    rows,
  );
}

// ───────────────────────────── b. sparse disks ─────────────────────────────

/** A local dynamic VHD of `size` with 5 × 2 MiB of random data spread over the disk (10 MiB). */
async function sparseVhd(file: string, size: number): Promise<void> {
  const v = await Vhd.create(file, { size, uuid: randomUUID() });
  try {
    const chunk = 2 * MiB;
    for (let i = 0; i < 5; i++) {
      const off = Math.floor(((size - chunk) * i) / 4 / chunk) * chunk;
      await v.write(off, randomBytes(chunk));
    }
    await v.flush();
  } finally {
    await v.close();
  }
}

async function partSparse(c: Ctx): Promise<string> {
  const work = join(c.dir, 'client');
  mkdirSync(work, { recursive: true });
  const rows: (string | number)[][] = [['disk', 'transfer', 'body MiB', 's', 'note']];
  for (const [label, size, raw] of [['100 GiB, 10 MiB written', 100 * GiB, false], ['4 GiB, 10 MiB written', 4 * GiB, true]] as const) {
    progress(`5b: ${label}`);
    const local = join(work, 'sparse.vhd');
    await sparseVhd(local, size);
    const vdi = await newVdi(c, `bench sparse ${label}`, size);
    await settle();
    const imp = await importFile(c, vdi, 'vhd', local);
    rmSync(local);
    rows.push([label, 'PUT format=vhd', fmt(imp.bytes / MiB, 1), fmt(imp.ms / 1000, 3), 'a local VHD built with storage/vhd']);
    const out = join(work, 'sparse-export.vhd');
    const exp = await exportTo(c, vdi, 'vhd', out);
    rmSync(out);
    rows.push([label, 'GET format=vhd', fmt(exp.bytes / MiB, 1), fmt(exp.ms / 1000, 3), ['to a file, fsync', taskNote(exp)].filter(Boolean).join('; ')]);
    if (raw) {
      const r = await exportTo(c, vdi, 'raw');
      rows.push([label, 'GET format=raw', fmt(r.bytes / MiB, 1), fmt(r.ms / 1000, 3), [`counted and discarded: ${fmt(mibs(r), 0)} MiB/s`, taskNote(r)].filter(Boolean).join('; ')]);
    }
    await jsonCall(c.base, 'VDI.destroy', [c.session, vdi]);
  }
  return table(
    '5b. Sparse disks: 10 MiB in 5 blocks spread over the disk; raw export measured on the 4 GiB disk only (100 GiB of zeros\n' +
      '    over HTTP would take minutes)',
    rows,
  );
}

// ───────────────────────────── c. snapshot / clone chain ─────────────────────────────

/** A JSON-RPC error's code and first non-empty parameter. */
function errorCode(e: unknown): string {
  if (!(e instanceof RpcError)) return String((e as Error)?.message ?? e);
  const d = e.description as { message?: string; data?: unknown[] };
  const param = (d.data ?? []).find((x) => x !== '');
  return [d.message ?? JSON.stringify(d), param === undefined ? '' : JSON.stringify(param)].join(' ').trim();
}

async function timed<T>(f: () => Promise<T>): Promise<{ ms: number; value?: T; error?: string }> {
  const t0 = now();
  try {
    const value = await f();
    return { ms: now() - t0, value };
  } catch (e) {
    return { ms: now() - t0, error: errorCode(e) };
  }
}

async function partChain(c: Ctx): Promise<string> {
  const work = join(c.dir, 'client');
  mkdirSync(work, { recursive: true });
  const size = 512 * MiB;
  const dataMiB = 64;
  progress(`5c: a 512 MiB VDI with ${dataMiB} MiB, then ${CHAIN_STEPS} × (VDI.snapshot, VDI.clone of the snapshot)`);
  const vdi = await newVdi(c, 'bench chain', size);
  const src = join(work, 'chain.raw');
  await writeSource(src, dataMiB * MiB, randomBytes(PATTERN));
  await importFile(c, vdi, 'raw', src);
  rmSync(src);
  await settle();
  const rawBefore = await exportTo(c, vdi, 'raw');

  interface Step { i: number; snap: { ms: number; error?: string }; clone?: { ms: number; error?: string } }
  const steps: Step[] = [];
  for (let i = 1; i <= CHAIN_STEPS; i++) {
    const snap = await timed(() => jsonCall<string>(c.base, 'VDI.snapshot', [c.session, vdi, {}]).then((r) => r.value));
    const step: Step = { i, snap };
    if (snap.value) step.clone = await timed(() => jsonCall<string>(c.base, 'VDI.clone', [c.session, snap.value!, {}]).then((r) => r.value));
    steps.push(step);
  }
  const rawAfter = await exportTo(c, vdi, 'raw');
  const depth = steps.filter((s) => !s.snap.error).length + 1;

  const show = new Set([1, 2, 5, 10, 15, 20, 25, 28, 29, 30, CHAIN_STEPS]);
  const rows: (string | number)[][] = [['step', 'VDI chain after', 'snapshot ms', 'clone of it ms', 'error']];
  for (const s of steps) {
    if (!show.has(s.i) && !s.snap.error && !s.clone?.error) continue;
    rows.push([
      String(s.i), s.snap.error ? '(refused)' : String(s.i + 1), fmt(s.snap.ms, 1), s.clone ? fmt(s.clone.ms, 1) : '',
      [s.snap.error && `snapshot: ${s.snap.error}`, s.clone?.error && `clone: ${s.clone.error}`].filter(Boolean).join('; '),
    ]);
  }
  const ok = (xs: { ms: number; error?: string }[]) => xs.filter((x) => !x.error).map((x) => x.ms);
  const snaps = ok(steps.map((s) => s.snap));
  const clones = ok(steps.flatMap((s) => (s.clone ? [s.clone] : [])));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const stats = (xs: number[]) => (xs.length ? `${fmt(Math.min(...xs), 1)} / ${fmt([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)], 1)} / ${fmt(Math.max(...xs), 1)} ms` : 'none');
  const t = table(
    `5c. VDI.snapshot of one 512 MiB VDI (${dataMiB} MiB written), then VDI.clone of the new snapshot, ${CHAIN_STEPS} times (JSON-RPC,\n` +
      '    sequential; sr_gc_auto = 0, so nothing is coalesced between steps: every snapshot adds a base copy under the VDI)',
    rows,
  );
  return [
    t,
    `    snapshots: ${snaps.length} ok, min / median / max ${stats(snaps)}, total ${fmt(sum(snaps) / 1000, 2)} s`,
    `    clones:    ${clones.length} ok, min / median / max ${stats(clones)}, total ${fmt(sum(clones) / 1000, 2)} s`,
    `    GET format=raw of the 512 MiB VDI (discarded): chain of 1: ${fmt(rawBefore.ms, 0)} ms (${fmt(mibs(rawBefore), 0)} MiB/s); ` +
      `chain of ${depth}: ${fmt(rawAfter.ms, 0)} ms (${fmt(mibs(rawAfter), 0)} MiB/s)`,
    ...[rawBefore, rawAfter].filter((t) => t.taskError).map((t) => `    GET format=raw, chain of ${t === rawBefore ? 1 : depth}: ${taskNote(t)}`),
  ].join('\n');
}

// ───────────────────────────── the section ─────────────────────────────

async function startEmulator(dir: string): Promise<{ child: Child; ctx: Ctx }> {
  const conf = join(dir, 'xapi.conf');
  writeFileSync(conf, '# bench: no storage GC between snapshot steps\nsr_gc_auto = 0\n');
  const port = await freePort();
  const child = spawnEmulator(['--data', join(dir, 'data'), '--config', conf, '--port', String(port)]);
  const base = `http://127.0.0.1:${port}/`;
  const session = await waitForLogin(base, child);
  const pools = (await jsonCall<Record<string, Rec>>(base, 'pool.get_all_records', [session])).value;
  const master = String(Object.values(pools)[0].master);
  const srs = (await jsonCall<Record<string, Rec>>(base, 'SR.get_all_records', [session])).value;
  const pbds = (await jsonCall<Record<string, Rec>>(base, 'PBD.get_all_records', [session])).value;
  const local = Object.entries(srs).find(
    ([, r]) => r.name_label === 'Local storage' && (r.PBDs as string[]).some((p) => pbds[p]?.host === master),
  );
  if (!local) throw new Error('no "Local storage" SR on the master');
  return { child, ctx: { base, session, sr: local[0], dir } };
}

/** Section 5: runs its own emulator on `<tmp>/storage`; returns the report. */
export async function sectionStorage(tmp: string): Promise<string> {
  const dir = join(tmp, 'storage');
  mkdirSync(dir, { recursive: true });
  started = now();
  progress('5: starting the emulator (--data, sr_gc_auto = 0)');
  const { child, ctx } = await startEmulator(dir);
  const t0 = now();
  try {
    const a = await partThroughput(ctx);
    const b = await partSparse(ctx);
    const c = await partChain(ctx);
    return [
      `5. Storage (emulator with --data on the same disk as the client's files, --config sr_gc_auto = 0; ${fmt((now() - t0) / 1000, 1)} s)`,
      a, b, c,
    ].join('\n\n');
  } finally {
    await stop(child);
    rmSync(dir, { recursive: true, force: true });
  }
}
