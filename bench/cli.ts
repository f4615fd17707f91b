// Section "cli": `xe vm-list` (our client, as a process, as a user runs it) over a 512-VM pool, next
// to a JSON-RPC VM.get_all_records of the same pool, and the client's own start-up (`xe -version`,
// no connection). BENCH_CLI_VMS (default 512), BENCH_CLI_ROUNDS (default 5); BENCH_XE names another
// xe binary (e.g. xapi's own, built from its sources) to time on the same commands.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, jsonCall, median, fmt, now, PASSWORD, spawnEmulator, stop, table, waitForLogin } from './lib.js';
import { populate } from './populate.js';

const XE = fileURLToPath(new URL('../bin/xe.js', import.meta.url));
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const VMS = env('BENCH_CLI_VMS', 512);
const ROUNDS = env('BENCH_CLI_ROUNDS', 5);
/** xapi's own `xe vm-list` over 512 VMs, as measured on a real host */
const REAL_XAPI_S = 0.45;

const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

/** Wall time of one run of `cmd args` to its exit, with its stdout's size. */
function timed(cmd: string, args: string[]): Promise<{ ms: number; bytes: number; code: number }> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let bytes = 0;
    p.stdout.on('data', (b: Buffer) => (bytes += b.length));
    p.on('error', reject);
    p.on('close', (code) => resolve({ ms: now() - t0, bytes, code: code ?? -1 }));
  });
}

async function rounds(cmd: string, args: string[]): Promise<{ ms: number; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const r = await timed(cmd, args);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}`);
    ms.push(r.ms);
    bytes = r.bytes;
  }
  return { ms: median(ms), bytes };
}

export async function sectionCli(tmp: string): Promise<string> {
  const dataDir = join(tmp, `cli-${VMS}`);
  progress(`cli: populating ${dataDir} with ${VMS} VMs`);
  populate(dataDir, 1, VMS);
  const port = await freePort();
  const child = spawnEmulator(['--data', dataDir, '--port', String(port)]);
  const base = `http://127.0.0.1:${port}/`;
  try {
    const session = await waitForLogin(base, child);
    const creds = ['-s', '127.0.0.1', '-p', String(port), '-u', 'root', '-pw', PASSWORD];
    progress('cli: timing xe vm-list');
    // (one run first: the client's sources are compiled once, as after an install)
    await timed(process.execPath, [XE, ...creds, 'vm-list', '--minimal']);
    const list = await rounds(process.execPath, [XE, ...creds, 'vm-list']);
    const minimal = await rounds(process.execPath, [XE, ...creds, 'vm-list', '--minimal']);
    const version = await rounds(process.execPath, [XE, '-version']);
    const rpc: number[] = [];
    let rpcBytes = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const t0 = now();
      const r = await jsonCall<Record<string, unknown>>(base, 'VM.get_all_records', [session]);
      rpc.push(now() - t0);
      rpcBytes = JSON.stringify(r.value).length;
    }
    const rows: (string | number)[][] = [
      ['what', 'median ms', 'output KiB'],
      ['xe vm-list (ours, a process)', fmt(list.ms), fmt(list.bytes / 1024, 1)],
      ['xe vm-list --minimal (ours)', fmt(minimal.ms), fmt(minimal.bytes / 1024, 1)],
      ['xe -version (ours: start-up only)', fmt(version.ms), '-'],
      ['JSON-RPC VM.get_all_records', fmt(median(rpc)), fmt(rpcBytes / 1024, 1)],
    ];
    const other = process.env.BENCH_XE;
    if (other) {
      const o = await rounds(other, [...creds, 'vm-list']);
      rows.push([`xe vm-list (${other})`, fmt(o.ms), fmt(o.bytes / 1024, 1)]);
    }
    return [
      table(`CLI: ${VMS} VMs on 1 host (--data), median of ${ROUNDS} runs`, rows),
      `  reference: xapi's own xe vm-list over 512 VMs on a real host takes about ${REAL_XAPI_S} s`,
    ].join('\n');
  } finally {
    await stop(child);
  }
}
