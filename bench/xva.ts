// Whole-VM section of the benchmark (bench/run.ts, section 9): XVA export and import over HTTP and
// NBD reads, each next to a baseline measured in the same run on the same disk. Prints numbers and
// ratios, asserts nothing (a transfer cut short or a failed task stops the section: its numbers
// would mean nothing).
//
// One emulator child (node bin/xapi-emu.js --data <tmp>/…, NBD on a free port) holding a halted VM
// with one disk of BENCH_XVA_MIB (default 256) MiB written through PUT /import_raw_vdi: each MiB is
// half random bytes, half a repeated line of text, so that gzip and zstd have something to do
// without the data being trivial (all-zero blocks would be skipped by the export). Parts:
//   a. GET /export?use_compression=false|gzip|zstd into a file by curl (then fsync'ed), next to
//      fs.copyFile of the disk's raw bytes (+ fsync) and to `tar -cf - raw | gzip` / `| zstd` into a
//      file (+ fsync) at the levels the export uses (gzip: zlib's default 6; zstd: the program's
//      default 3). MiB/s are of the disk's bytes, whatever the archive's size. fs.copyFile copies in
//      the kernel (copy_file_range), so a stream copy through user space + fsync is shown too, and
//      the export read by curl to /dev/null: the server's rate without the client's file.
//   b. PUT /import?sr_id=… of each archive, timed until its task (task_id) leaves `pending`, next to
//      `gzip -dc | tar -xf -` (`zstd -dc`, plain `tar -xf`) of the same archive (+ sync). Where the
//      emulator has no PUT /import (404), "n/a".
//   c. NBD read of the disk with libnbd's nbdcopy to null: (insecure_nbd network purpose, then nbd
//      with TLS, the host certificate from VDI.get_nbd_info given as the CA), next to
//      GET /export_raw_vdi?format=raw read by curl to /dev/null: two C clients, bytes discarded.
// Each timed step comes after a `sync`; BENCH_XVA_ROUNDS (default 2) rounds, best run of each shown.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { copyFile, open } from 'node:fs/promises';
import { request } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { spawnEmulator, freePort, waitForLogin, jsonCall, stop, table, fmt, now, sleep, type Child } from './lib.js';
import { vbdArgs, vdiArgs, vmArgs } from '../test/integration/helpers/records.js';

const MiB = 1024 * 1024;
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const XVA_MIB = env('BENCH_XVA_MIB', 256);
const ROUNDS = env('BENCH_XVA_ROUNDS', 2);

let started = 0;
const progress = (s: string) => process.stderr.write(`[bench] 9: ${s}${started ? ` (at ${fmt((now() - started) / 1000, 1)} s)` : ''}\n`);

interface Rec { [k: string]: unknown }
interface Ctx { base: string; session: string; sr: string; net: string; dir: string }

const q = (o: Record<string, string>) => Object.entries(o).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
const call = async <T = unknown>(c: Ctx, method: string, ...params: unknown[]) => (await jsonCall<T>(c.base, method, [c.session, ...params])).value;

// ───────────────────────────── timing helpers ─────────────────────────────

interface Run { ms: number; bytes: number }

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Every dirty page written out before a timed step, so that it does not pay for the one before. */
async function settle(): Promise<void> {
  execFileSync('sync');
  await sleep(100);
}

/** A shell pipeline (fixed programs, paths of our own temporary directory); rejects on failure. */
function sh(script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', `set -e; ${script}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${script}: exit ${code}: ${err.slice(0, 300)}`))));
  });
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

async function newTask(c: Ctx, label: string): Promise<string> {
  return call<string>(c, 'task.create', label, '');
}

/** Waits until `task` leaves pending; its record, then the task destroyed. */
async function finished(c: Ctx, task: string): Promise<Rec> {
  let rec: Rec = {};
  for (;;) {
    rec = await call<Rec>(c, 'task.get_record', task);
    if (rec.status !== 'pending') break;
    await sleep(5);
  }
  await call(c, 'task.destroy', task);
  return rec;
}

/** GET `url` into `file` with curl (a C client, as `tar` is), fsync'ed; throws unless a 200 whose
 * task succeeded. */
async function getTo(c: Ctx, path: string, params: Record<string, string>, file: string): Promise<Run> {
  const task = await newTask(c, `bench GET ${path}`);
  const url = new URL(`${path}?${q({ ...params, session_id: c.session, task_id: task })}`, c.base);
  const t0 = now();
  await timedCmd('curl', ['-sSf', '-o', file, url.href], 0);
  await fsyncFile(file);
  const ms = now() - t0;
  const bytes = statSync(file).size;
  const rec = await finished(c, task);
  if (rec.status !== 'success') throw new Error(`GET ${path}: task ${String(rec.status)} ${JSON.stringify(rec.error_info)}`);
  return { ms, bytes };
}

/** PUT `file` to `url`; the status code and body once the answer ended (404: no such handler). */
function putFile(url: URL, file: string): Promise<{ status: number; body: string }> {
  const size = statSync(file).size;
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'PUT', agent: false, headers: { 'content-length': String(size), 'content-type': 'application/octet-stream' } });
    let answer: { status: number; body: string } | undefined;
    let sent = false;
    const done = () => answer && (sent || answer.status !== 200) && resolve(answer);
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        answer = { status: res.statusCode!, body };
        if (answer.status !== 200) req.destroy();
        done();
      });
      res.on('error', reject);
    });
    req.on('error', (e) => (answer ? done() : reject(e)));
    pipeline(createReadStream(file), req).then(
      () => {
        sent = true;
        done();
      },
      (e: unknown) => (answer ? done() : reject(e)),
    );
  });
}

// ───────────────────────────── the VM and its disk ─────────────────────────────

/** The disk's bytes: per MiB, 512 KiB of fresh random bytes then 512 KiB of a repeated text line. */
async function writeSource(file: string, size: number): Promise<void> {
  const text = Buffer.alloc(MiB / 2);
  text.write('xapi-emu bench: a line of text as a guest file system holds many, log or source; '.repeat(7000), 'latin1');
  const fh = await open(file, 'w');
  try {
    for (let off = 0; off < size; off += MiB) {
      await fh.write(randomBytes(MiB / 2), 0, MiB / 2, off);
      await fh.write(text, 0, MiB / 2, off + MiB / 2);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function makeVm(c: Ctx, raw: string, size: number): Promise<{ vm: string; vdi: string }> {
  const vm = await call<string>(c, 'VM.create', vmArgs('bench-xva'));
  const vdi = await call<string>(c, 'VDI.create', vdiArgs(c.sr, size, 'bench-xva disk'));
  await call(c, 'VBD.create', vbdArgs(vm, vdi, '0'));
  const task = await newTask(c, 'bench import_raw_vdi');
  const r = await putFile(new URL(`/import_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw', task_id: task })}`, c.base), raw);
  if (r.status !== 200) throw new Error(`PUT /import_raw_vdi: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  const rec = await finished(c, task);
  if (rec.status !== 'success') throw new Error(`PUT /import_raw_vdi: task ${String(rec.status)} ${JSON.stringify(rec.error_info)}`);
  return { vm, vdi };
}

/** The VM refs of an import task's result (an XML-RPC array of refs, as xapi gives it). */
const refsOf = (result: unknown) => String(result ?? '').match(/OpaqueRef:[0-9a-fA-F-]+/g) ?? [];

/** An imported VM and its disks, gone (so that the SR does not fill up). */
async function destroyVm(c: Ctx, vm: string): Promise<void> {
  const vbds = await call<string[]>(c, 'VM.get_VBDs', vm);
  for (const vbd of vbds) {
    const rec = await call<Rec>(c, 'VBD.get_record', vbd);
    if (rec.type !== 'CD' && rec.VDI !== 'OpaqueRef:NULL') await call(c, 'VDI.destroy', rec.VDI);
  }
  await call(c, 'VM.destroy', vm);
}

// ───────────────────────────── the parts ─────────────────────────────

type Comp = 'none' | 'gzip' | 'zstd';
const COMPS: Comp[] = ['none', 'gzip', 'zstd'];
const EXT: Record<Comp, string> = { none: 'xva', gzip: 'xva.gz', zstd: 'xva.zst' };
/** the compressor programs at the export's levels (server/xva/compression.ts) */
const PROGRAM: Record<Exclude<Comp, 'none'>, string> = { gzip: 'gzip -6 -c', zstd: 'zstd -3 -q -c' };
const UNPROGRAM: Record<Exclude<Comp, 'none'>, string> = { gzip: 'gzip -dc', zstd: 'zstd -dc -q' };

const mibs = (r: Run | undefined, size: number) => (r ? size / MiB / (r.ms / 1000) : NaN);
const best = (rs: Run[]) => (rs.length ? rs.reduce((a, b) => (b.ms < a.ms ? b : a)) : undefined);
const ratio = (x: number, target?: number) =>
  Number.isFinite(x) ? `${fmt(x, 2)}${target === undefined ? '' : x >= target ? ` (≥ ${target} ok)` : ` (BELOW ${target})`}` : 'n/a';

interface Results {
  copy: Run[];
  stream: Run[];
  expNull: Run[];
  tar: Run[];
  tarZ: Record<Exclude<Comp, 'none'>, Run[]>;
  exp: Record<Comp, Run[]>;
  imp: Record<Comp, Run[]>;
  untar: Record<Comp, Run[]>;
  importAbsent?: string;
  importNote?: string;
  nbd: Run[];
  nbdTls: Run[];
  nbdTlsNote?: string;
  http: Run[];
}

async function partExport(c: Ctx, vm: string, raw: string, size: number, round: number, out: Results): Promise<void> {
  const work = join(c.dir, 'out');
  mkdirSync(work, { recursive: true });
  const step = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    progress(`round ${round}/${ROUNDS}: ${what}`);
    await settle();
    return f();
  };
  out.copy.push(await step('fs.copyFile of the raw disk', async () => {
    const t0 = now();
    await copyFile(raw, join(work, 'copy.raw'));
    await fsyncFile(join(work, 'copy.raw'));
    return { ms: now() - t0, bytes: size };
  }));
  rmSync(join(work, 'copy.raw'));
  // the same bytes through user space, as the export's receiver writes them
  out.stream.push(await step('stream copy of the raw disk', async () => {
    const t0 = now();
    await pipeline(createReadStream(raw), createWriteStream(join(work, 'stream.raw')));
    await fsyncFile(join(work, 'stream.raw'));
    return { ms: now() - t0, bytes: size };
  }));
  rmSync(join(work, 'stream.raw'));
  const tarTo = async (pipe: string, file: string): Promise<Run> => {
    const t0 = now();
    await sh(`tar -cf - -C ${quote(dirname(raw))} ${quote(basename(raw))}${pipe} > ${quote(file)}`);
    await fsyncFile(file);
    return { ms: now() - t0, bytes: statSync(file).size };
  };
  out.tar.push(await step('tar of the raw disk', () => tarTo('', join(work, 'raw.tar'))));
  rmSync(join(work, 'raw.tar'));
  for (const z of ['gzip', 'zstd'] as const) {
    out.tarZ[z].push(await step(`tar | ${z}`, () => tarTo(` | ${PROGRAM[z]}`, join(work, `raw.tar.${z}`))));
    rmSync(join(work, `raw.tar.${z}`));
  }
  for (const z of COMPS) {
    const file = join(work, `export.${EXT[z]}`);
    out.exp[z].push(await step(`GET /export use_compression=${z === 'none' ? 'false' : z}`, () =>
      getTo(c, '/export', { ref: vm, use_compression: z === 'none' ? 'false' : z }, file)));
  }
  // the server alone: the archive read by curl and discarded, no file written
  out.expNull.push(await step('GET /export use_compression=false (curl to /dev/null)', async () => {
    const task = await newTask(c, 'bench GET /export');
    const url = new URL(`/export?${q({ ref: vm, use_compression: 'false', session_id: c.session, task_id: task })}`, c.base);
    const r = await timedCmd('curl', ['-sSf', '-o', '/dev/null', url.href], size);
    const rec = await finished(c, task);
    if (rec.status !== 'success') throw new Error(`GET /export: task ${String(rec.status)} ${JSON.stringify(rec.error_info)}`);
    return r;
  }));
}

/** Imports each archive of the export part; stops at the first 404 (no PUT /import here). */
async function partImport(c: Ctx, round: number, out: Results): Promise<void> {
  const work = join(c.dir, 'out');
  // Whether the handler exists, asked without a session and a body (no side effect): an absent
  // route answers 404, a present one refuses the request otherwise. (A 404 to a large body would
  // come while the body is still being sent, and reach the client as EPIPE rather than as a 404.)
  if (out.importAbsent === undefined && (await fetch(new URL('/import', c.base), { method: 'PUT', body: '' })).status === 404) {
    out.importAbsent = 'n/a (PUT /import absent)';
  }
  for (const z of COMPS) {
    if (out.importAbsent) break;
    const file = join(work, `export.${EXT[z]}`);
    progress(`round ${round}/${ROUNDS}: PUT /import of the ${z} archive`);
    await settle();
    const task = await newTask(c, 'bench import');
    const t0 = now();
    const r = await putFile(new URL(`/import?${q({ session_id: c.session, sr_id: c.sr, task_id: task })}`, c.base), file);
    if (r.status === 404) {
      await call(c, 'task.destroy', task);
      out.importAbsent = 'n/a (PUT /import absent)';
      break;
    }
    const rec = await finished(c, task);
    const ms = now() - t0;
    if (r.status !== 200 || rec.status !== 'success') {
      throw new Error(`PUT /import (${z}): HTTP ${r.status}, task ${String(rec.status)} ${JSON.stringify(rec.error_info)} ${r.body.slice(0, 200)}`);
    }
    out.imp[z].push({ ms, bytes: statSync(file).size });
    const vms = refsOf(rec.result);
    if (vms.length === 0) out.importNote = `the import task's result holds no VM ref: ${String(rec.result).slice(0, 100)}`;
    for (const v of vms) await destroyVm(c, v);
  }
  for (const z of COMPS) {
    const file = join(work, `export.${EXT[z]}`);
    const into = join(work, `untar-${z}`);
    mkdirSync(into);
    progress(`round ${round}/${ROUNDS}: ${z === 'none' ? '' : `${UNPROGRAM[z]} | `}tar -xf of the ${z} archive`);
    await settle();
    const t0 = now();
    await sh(`${z === 'none' ? `tar -xf ${quote(file)}` : `${UNPROGRAM[z]} ${quote(file)} | tar -xf -`} -C ${quote(into)}; sync -f ${quote(into)}`);
    out.untar[z].push({ ms: now() - t0, bytes: statSync(file).size });
    rmSync(into, { recursive: true, force: true });
  }
  rmSync(work, { recursive: true, force: true });
}

interface NbdInfo { address: string; port: number; exportname: string; cert: string; subject: string }

const nbdUri = (i: NbdInfo, tls: boolean, certs?: string) =>
  `${tls ? 'nbds' : 'nbd'}://${i.address.includes(':') ? `[${i.address}]` : i.address}:${i.port}/${encodeURIComponent(i.exportname)}` +
  (certs ? `?tls-certificates=${encodeURIComponent(certs)}` : '');

async function timedCmd(cmd: string, args: string[], size: number): Promise<Run> {
  const t0 = now();
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd}: exit ${code}: ${err.slice(0, 300)}`))));
  });
  return { ms: now() - t0, bytes: size };
}

async function partNbd(c: Ctx, vdi: string, size: number, round: number, out: Results): Promise<void> {
  // HTTP: curl to /dev/null, the VDI's raw bytes; curl's exit status says whether every byte came
  const task = await newTask(c, 'bench export_raw_vdi');
  progress(`round ${round}/${ROUNDS}: GET /export_raw_vdi format=raw (curl)`);
  await settle();
  const url = new URL(`/export_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw', task_id: task })}`, c.base);
  out.http.push(await timedCmd('curl', ['-sSf', '-o', '/dev/null', url.href], size));
  const rec = await finished(c, task);
  if (rec.status !== 'success') throw new Error(`GET /export_raw_vdi: task ${String(rec.status)} ${JSON.stringify(rec.error_info)}`);

  await call(c, 'network.add_purpose', c.net, 'insecure_nbd');
  try {
    const [info] = await call<NbdInfo[]>(c, 'VDI.get_nbd_info', vdi);
    if (!info) throw new Error('VDI.get_nbd_info: [] with an insecure_nbd network');
    progress(`round ${round}/${ROUNDS}: nbdcopy (insecure_nbd) to null:`);
    await settle();
    out.nbd.push(await timedCmd('nbdcopy', [nbdUri(info, false), 'null:'], size));
  } finally {
    await call(c, 'network.remove_purpose', c.net, 'insecure_nbd');
  }

  await call(c, 'network.add_purpose', c.net, 'nbd');
  try {
    const [info] = await call<NbdInfo[]>(c, 'VDI.get_nbd_info', vdi);
    if (!info) throw new Error('VDI.get_nbd_info: [] with an nbd network');
    // gnutls, through libnbd, reads the CA from <dir>/ca-cert.pem: the host certificate itself
    const certs = join(c.dir, 'pki');
    mkdirSync(certs, { recursive: true });
    writeFileSync(join(certs, 'ca-cert.pem'), info.cert);
    progress(`round ${round}/${ROUNDS}: nbdcopy (nbd, TLS) to null:`);
    await settle();
    try {
      out.nbdTls.push(await timedCmd('nbdcopy', [nbdUri(info, true, certs), 'null:'], size));
    } catch (e) {
      out.nbdTlsNote = `TLS NBD skipped: ${(e as Error).message}`;
    }
  } finally {
    await call(c, 'network.remove_purpose', c.net, 'nbd');
  }
}

// ───────────────────────────── the report ─────────────────────────────

function report(r: Results, size: number, rawMs: number): string {
  const each = (rs: Run[]) => rs.map((x) => fmt(mibs(x, size), 0)).join(' ');
  const line = (what: string, rs: Run[], ...rest: string[]) => {
    const b = best(rs);
    return [what, b ? fmt(b.ms / 1000, 2) : 'n/a', b ? fmt(mibs(b, size), 0) : 'n/a', b ? fmt(b.bytes / MiB, 1) : '', ...rest, each(rs)];
  };
  const ref = mibs(best(r.copy), size);
  const sref = mibs(best(r.stream), size);
  const tarRef: Record<Comp, number> = { none: mibs(best(r.tar), size), gzip: mibs(best(r.tarZ.gzip), size), zstd: mibs(best(r.tarZ.zstd), size) };
  const exp = table(
    `9a. GET /export of a halted VM with one ${XVA_MIB} MiB disk (half random, half text), into a file + fsync\n` +
      `    (MiB/s of the disk's ${XVA_MIB} MiB; "out MiB" is what was written; target: export without compression ≥ 0.5 of the plain copy)`,
    [
      ['transfer', 'best s', 'best MiB/s', 'out MiB', 'ratio to plain copy', 'to stream copy', 'to tar (+ same compressor)', 'MiB/s of each run'],
      line('fs.copyFile of the raw disk + fsync', r.copy, '1.00', ratio(ref / sref), ''),
      line('stream copy (node streams) + fsync', r.stream, ratio(sref / ref), '1.00', ''),
      line('tar -cf of the raw disk + fsync', r.tar, ratio(tarRef.none / ref), ratio(tarRef.none / sref), '1.00'),
      line('tar | gzip -6 + fsync', r.tarZ.gzip, ratio(tarRef.gzip / ref), ratio(tarRef.gzip / sref), '1.00'),
      line('tar | zstd -3 + fsync', r.tarZ.zstd, ratio(tarRef.zstd / ref), ratio(tarRef.zstd / sref), '1.00'),
      ...COMPS.map((z) => {
        const x = mibs(best(r.exp[z]), size);
        return line(`GET /export use_compression=${z === 'none' ? 'false' : z}`, r.exp[z], ratio(x / ref, z === 'none' ? 0.5 : undefined), ratio(x / sref), ratio(x / tarRef[z]));
      }),
      line('GET /export use_compression=false, curl to /dev/null', r.expNull, ratio(mibs(best(r.expNull), size) / ref), ratio(mibs(best(r.expNull), size) / sref), ''),
    ],
  );
  const untarRef: Record<Comp, number> = { none: mibs(best(r.untar.none), size), gzip: mibs(best(r.untar.gzip), size), zstd: mibs(best(r.untar.zstd), size) };
  const imp = table(
    `9b. PUT /import?sr_id= of each archive, until its task is done (the VM then destroyed, outside the timing), next to\n` +
      `    unpacking the same archive with tar (+ the compressor) and sync (MiB/s of the disk's ${XVA_MIB} MiB; "in MiB" = archive size)`,
    [
      ['transfer', 'best s', 'best MiB/s', 'in MiB', 'ratio to tar -x (+ same decompressor)', 'MiB/s of each run'],
      ...COMPS.map((z) => line(`${z === 'none' ? '' : `${UNPROGRAM[z]} | `}tar -xf + sync (${z})`, r.untar[z], '1.00')),
      ...COMPS.map((z) =>
        r.importAbsent
          ? [`PUT /import (${z})`, r.importAbsent, '', '', '', '']
          : line(`PUT /import (${z})`, r.imp[z], ratio(mibs(best(r.imp[z]), size) / untarRef[z]))),
    ],
  );
  const http = mibs(best(r.http), size);
  const nbd = table(
    `9c. Reading the ${XVA_MIB} MiB disk, bytes discarded: nbdcopy (libnbd, up to 4 connections) to null: from VDI.get_nbd_info's\n` +
      `    export, next to curl of GET /export_raw_vdi?format=raw to /dev/null (target: NBD ≥ the HTTP export)`,
    [
      ['reader', 'best s', 'best MiB/s', 'MiB', 'ratio to HTTP', 'MiB/s of each run'],
      line('curl GET /export_raw_vdi format=raw', r.http, '1.00'),
      line('nbdcopy nbd:// (insecure_nbd)', r.nbd, ratio(mibs(best(r.nbd), size) / http, 1)),
      r.nbdTlsNote && r.nbdTls.length === 0
        ? ['nbdcopy nbds:// (nbd, TLS)', 'n/a', '', '', '', '']
        : line('nbdcopy nbds:// (nbd, TLS)', r.nbdTls, ratio(mibs(best(r.nbdTls), size) / http)),
    ],
  );
  const notes = [
    `    (disk written through PUT /import_raw_vdi in ${fmt(rawMs / 1000, 2)} s)`,
    ...(r.importNote ? [`    note: ${r.importNote}`] : []),
    ...(r.nbdTlsNote ? [`    note: ${r.nbdTlsNote}`] : []),
  ];
  return [exp, imp, nbd, ...notes].join('\n\n');
}

// ───────────────────────────── the section ─────────────────────────────

async function startEmulator(dir: string): Promise<{ child: Child; ctx: Ctx }> {
  const port = await freePort();
  // NBD on a free port: the default one may be another emulator's on this machine
  const child = spawnEmulator(['--data', join(dir, 'data'), '--port', String(port), '--nbd-port', String(await freePort())]);
  const base = `http://127.0.0.1:${port}/`;
  const session = await waitForLogin(base, child);
  const c0 = { base, session, sr: '', net: '', dir };
  const pools = await call<Record<string, Rec>>(c0, 'pool.get_all_records');
  const master = String(Object.values(pools)[0].master);
  const srs = await call<Record<string, Rec>>(c0, 'SR.get_all_records');
  const pbds = await call<Record<string, Rec>>(c0, 'PBD.get_all_records');
  const local = Object.entries(srs).find(([, r]) => r.name_label === 'Local storage' && (r.PBDs as string[]).some((p) => pbds[p]?.host === master));
  if (!local) throw new Error('no "Local storage" SR on the master');
  const [net] = await call<string[]>(c0, 'network.get_all_where', 'field "bridge" = "xenbr0"');
  if (!net) throw new Error('no xenbr0 network');
  return { child, ctx: { ...c0, sr: local[0], net } };
}

/** Section 9: runs its own emulator on `<tmp>/xva`; returns the report. */
export async function sectionXva(tmp: string): Promise<string> {
  const dir = join(tmp, 'xva');
  mkdirSync(dir, { recursive: true });
  started = now();
  progress('starting the emulator (--data)');
  const { child, ctx } = await startEmulator(dir);
  const t0 = now();
  const size = XVA_MIB * MiB;
  const raw = join(dir, 'disk.raw');
  try {
    progress(`writing the ${XVA_MIB} MiB disk and importing it (PUT /import_raw_vdi)`);
    await writeSource(raw, size);
    await settle();
    const tr = now();
    const { vm, vdi } = await makeVm(ctx, raw, size);
    const rawMs = now() - tr;
    const r: Results = {
      copy: [], stream: [], expNull: [], tar: [], tarZ: { gzip: [], zstd: [] }, exp: { none: [], gzip: [], zstd: [] }, imp: { none: [], gzip: [], zstd: [] },
      untar: { none: [], gzip: [], zstd: [] }, nbd: [], nbdTls: [], http: [],
    };
    for (let round = 1; round <= ROUNDS; round++) {
      await partExport(ctx, vm, raw, size, round, r);
      await partImport(ctx, round, r);
      await partNbd(ctx, vdi, size, round, r);
    }
    return [`9. Whole-VM exports and NBD (emulator with --data on the same disk as the client's files; ${ROUNDS} rounds, ${fmt((now() - t0) / 1000, 1)} s)`, report(r, size, rawMs)].join('\n');
  } finally {
    await stop(child);
    rmSync(dir, { recursive: true, force: true });
  }
}
