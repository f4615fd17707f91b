// Section join (BENCH_ONLY=join): pool.join of a fresh instance (a default 1-host pool, --memory,
// on its own loopback address) into a master holding BENCH_JOIN_VMS (default 1,000) VMs (a data
// directory populated as in section 4), both as child processes; each round ends with pool.eject,
// which makes the joiner a standalone pool again. Next to it, in the same run, the master's
// VM.get_all_records as a baseline of what a call on that pool costs. Medians (and p95) of
// BENCH_JOIN_RUNS (default 5) rounds.
import { join } from 'node:path';
import { Pool } from 'undici';
import { spawnEmulator, stop, freePort, waitForLogin, jsonCall, now, median, pct, fmt, table, PASSWORD } from './lib.js';
import { populate } from './populate.js';

const RUNS = Number(process.env.BENCH_JOIN_RUNS ?? 5);
const VMS = Number(process.env.BENCH_JOIN_VMS ?? 1000);

const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

export async function sectionJoin(dir: string): Promise<string> {
  progress(`join: populating a master with ${VMS} VMs`);
  const pop = populate(join(dir, 'join-master'), 1, VMS);
  const portA = await freePort();
  const master = spawnEmulator(['--data', pop.dataDir, '--port', String(portA), '--nbd-port', '0']);
  const base = `http://127.0.0.1:${portA}/`;
  const joinMs: number[] = [];
  const ejectMs: number[] = [];
  const allRecordsMs: number[] = [];
  try {
    const session = await waitForLogin(base, master);
    const pool = new Pool(base, { connections: 1 });
    try {
      for (let i = 0; i < RUNS; i++) {
        const t0 = now();
        await jsonCall(base, 'VM.get_all_records', [session], pool);
        allRecordsMs.push(now() - t0);
      }
      for (let i = 0; i < RUNS; i++) {
        progress(`join: round ${i + 1}/${RUNS}`);
        const address = `127.0.9.${10 + i}`;
        const portB = await freePort();
        const joiner = spawnEmulator(['--memory', '--host', address, '--port', String(portB), '--nbd-port', '0']);
        const bBase = `http://${address}:${portB}/`;
        try {
          const bSession = await waitForLogin(bBase, joiner);
          const host = (await jsonCall<string[]>(bBase, 'host.get_all', [bSession])).value[0];
          const t0 = now();
          await jsonCall(bBase, 'pool.join', [bSession, `127.0.0.1:${portA}`, 'root', PASSWORD]);
          joinMs.push(now() - t0);
          const t1 = now();
          await jsonCall(base, 'pool.eject', [session, host], pool);
          ejectMs.push(now() - t1);
        } finally {
          await stop(joiner);
        }
      }
    } finally {
      await pool.close();
    }
  } finally {
    await stop(master);
  }
  const row = (label: string, xs: number[]) => [label, fmt(median(xs)), fmt(pct(xs, 95))];
  return table(`join: a fresh instance into a pool of ${VMS} VMs (${RUNS} rounds, ms)`, [
    ['', 'median', 'p95'],
    row('pool.join (checks, hand-over, commit)', joinMs),
    row('pool.eject of the joined host', ejectMs),
    row('baseline: VM.get_all_records on the master', allRecordsMs),
  ]);
}
