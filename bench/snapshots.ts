// Section 8 (BENCH_ONLY=snapshots): state snapshots through the control API, against the emulator
// as a child process, for the default pool (--memory) and for a pool of BENCH_SNAPSHOT_VMS
// (default 1,000) VMs (a data directory populated as in section 4):
//   - taking a snapshot (client round trip);
//   - restoring it when nothing changed, and after a test-sized change (a VM with a disk and a NIC
//     created, a VM renamed), as the server measures it and as the client sees it;
//   - reset (to the initial snapshot, a copy-on-write image of the database) after such a change;
//   - "restore + first call": the restore, then a fresh client's session.login_with_password and
//     VM.get_all (on a new connection), which is what each test of a suite pays for isolation.
// Medians (and p95) of BENCH_SNAPSHOT_RUNS (default 30) runs each.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { spawnEmulator, stop, freePort, waitForLogin, jsonCall, login, now, median, pct, fmt, table, PASSWORD, type Child } from './lib.js';
import { populate } from './populate.js';
import { controlClient, type ControlClient } from '../server/control/client.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from '../test/integration/helpers/records.js';

const RUNS = Number(process.env.BENCH_SNAPSHOT_RUNS ?? 30);
const BIG = Number(process.env.BENCH_SNAPSHOT_VMS ?? 1000);

const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

interface Target { base: string; ctl: ControlClient }

/** A test's worth of changes: a VM with a disk and a NIC, and a rename. */
async function change(t: Target, i: number): Promise<void> {
  const pool = new Pool(t.base, { connections: 1 });
  try {
    const session = await login(t.base, pool);
    const call = async <T>(m: string, ...p: unknown[]) => (await jsonCall<T>(t.base, m, [session, ...p], pool)).value;
    const sr = (await call<string[]>('SR.get_by_name_label', 'Local storage'))[0];
    const net = (await call<string[]>('network.get_all_where', 'field "bridge" = "xenbr0"'))[0];
    const vm = await call<string>('VM.create', vmArgs(`bench-snap-${i}`));
    const vdi = await call<string>('VDI.create', vdiArgs(sr, 8 * MiB, `bench-snap-${i}`));
    await call('VBD.create', vbdArgs(vm, vdi, '0'));
    await call('VIF.create', vifArgs(vm, net));
    const [any] = await call<string[]>('VM.get_by_name_label', 'bench-vm-00001');
    if (any) await call('VM.set_name_label', any, `renamed-${i}`);
  } finally {
    await pool.close();
  }
}

async function measure(label: string, t: Target): Promise<(string | number)[][]> {
  const take: number[] = [];
  for (let i = 0; i < Math.min(RUNS, 10); i++) {
    const t0 = now();
    await t.ctl.snapshots.take({ name: 'bench', replace: true });
    take.push(now() - t0);
  }
  const info = await t.ctl.snapshots.get({ name: 'bench' });
  const sameServer: number[] = [];
  const sameClient: number[] = [];
  const changedServer: number[] = [];
  const changedClient: number[] = [];
  const firstCall: number[] = [];
  const callAlone: number[] = [];
  const resetServer: number[] = [];
  const resetClient: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    let t0 = now();
    const r = await t.ctl.snapshots.restore({ name: 'bench' });
    sameClient.push(now() - t0);
    sameServer.push(r.ms);
    await change(t, i);
    t0 = now();
    const c = await t.ctl.snapshots.restore({ name: 'bench' });
    changedClient.push(now() - t0);
    changedServer.push(c.ms);
    await change(t, i);
    t0 = now();
    const z = await t.ctl.snapshots.reset();
    resetClient.push(now() - t0);
    resetServer.push(z.ms);
    await t.ctl.snapshots.restore({ name: 'bench' });
    await change(t, i);
    // restore, then what the next test does first: log in and list VMs on a new connection
    const pool = new Pool(t.base, { connections: 1 });
    try {
      t0 = now();
      await t.ctl.snapshots.restore({ name: 'bench' });
      const session = await login(t.base, pool);
      await jsonCall(t.base, 'VM.get_all', [session], pool);
      firstCall.push(now() - t0);
    } finally {
      await pool.close();
    }
    // the baseline: the same first calls on a new connection, without a restore before them
    const alone = new Pool(t.base, { connections: 1 });
    try {
      t0 = now();
      const session = await login(t.base, alone);
      await jsonCall(t.base, 'VM.get_all', [session], alone);
      callAlone.push(now() - t0);
    } finally {
      await alone.close();
    }
  }
  const row = (what: string, xs: number[]) => [`${label}: ${what}`, String(xs.length), fmt(median(xs), 2), fmt(pct(xs, 95), 2)];
  return [
    [`${label}: snapshot size`, '', `${fmt(info.size / MiB, 2)} MiB`, `${Object.values(info.objects).reduce((a, b) => a + b, 0)} objects`],
    row('take a snapshot (client)', take),
    row('restore, nothing changed (server)', sameServer),
    row('restore, nothing changed (client)', sameClient),
    row('restore after a test\'s changes (server)', changedServer),
    row('restore after a test\'s changes (client)', changedClient),
    row('reset (to the start) after a test\'s changes (server)', resetServer),
    row('reset (to the start) after a test\'s changes (client)', resetClient),
    row('restore + login + VM.get_all (client)', firstCall),
    row('baseline: login + VM.get_all alone (client)', callAlone),
    [`${label}: per-test restore overhead (median difference)`, '', fmt(median(firstCall) - median(callAlone), 2), `x${fmt(median(firstCall) / median(callAlone), 2)} of the baseline`],
  ];
}

async function withEmulator<T>(args: string[], fn: (t: Target) => Promise<T>): Promise<T> {
  const port = await freePort();
  const child: Child = spawnEmulator([...args, '--time-scale', '0', '--port', String(port)]);
  try {
    const base = `http://127.0.0.1:${port}/`;
    await waitForLogin(base, child);
    return await fn({ base, ctl: controlClient({ url: base, username: 'root', password: PASSWORD }) });
  } finally {
    await stop(child);
  }
}

/** Section 8; returns the report. */
export async function sectionSnapshots(): Promise<string> {
  const t0 = now();
  progress('8: state snapshots of the default pool (--memory)');
  const rows: (string | number)[][] = [['measure', 'runs', 'median ms', 'p95 ms']];
  rows.push(...(await withEmulator(['--memory'], (t) => measure('default pool', t))));
  const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-bench-snap-'));
  try {
    progress(`8: populating a pool of ${BIG} VMs`);
    populate(dir, 1, BIG);
    progress(`8: state snapshots of the ${BIG}-VM pool (data directory)`);
    rows.push(...(await withEmulator(['--data', dir], (t) => measure(`${BIG}-VM pool`, t))));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return table(`8. State snapshots through the control API (time scale 0; ${fmt((now() - t0) / 1000, 1)} s)`, rows);
}
