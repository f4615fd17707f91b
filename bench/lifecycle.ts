// Section 7 (BENCH_ONLY=lifecycle): the VM lifecycle through the emulated xenopsd, time scale 0,
// against the emulator as a child process (--memory):
//   a. VM.start latency of one VM with one VDI+VBD and one VIF over BENCH_LIFECYCLE_CYCLES (default 50)
//      start / hard_shutdown cycles, seen from the client: call → answer, and call → the VM's
//      power_state Running seen by a watcher blocked in event.from (on its own connection);
//   b. lifecycle throughput: BENCH_LIFECYCLE_VMS (default 100) such VMs shared by
//      BENCH_LIFECYCLE_CLIENTS (default 16) concurrent clients, each cycling VM.start / VM.clean_shutdown
//      over its own VMs for BENCH_LIFECYCLE_SECONDS (default 10); operations per second and errors.
import { Pool } from 'undici';
import { spawnEmulator, stop, freePort, waitForLogin, jsonCall, now, median, pct, fmt, table, RpcError, type Child } from './lib.js';
import { MiB, PV_DRIVERS, vbdArgs, vdiArgs, vifArgs, vmArgs } from '../test/integration/helpers/records.js';

interface Rec { [k: string]: unknown }

const CYCLES = Number(process.env.BENCH_LIFECYCLE_CYCLES ?? 50);
const VMS = Number(process.env.BENCH_LIFECYCLE_VMS ?? 100);
const CLIENTS = Number(process.env.BENCH_LIFECYCLE_CLIENTS ?? 16);
const SECONDS = Number(process.env.BENCH_LIFECYCLE_SECONDS ?? 10);

const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

interface Ctx { base: string; session: string; sr: string; network: string }

async function newVm(c: Ctx, name: string, pool: Pool): Promise<string> {
  const call = async <T>(m: string, ...p: unknown[]) => (await jsonCall<T>(c.base, m, [c.session, ...p], pool)).value;
  const vm = await call<string>('VM.create', vmArgs(name, { other_config: PV_DRIVERS }));
  const vdi = await call<string>('VDI.create', vdiArgs(c.sr, 8 * MiB, `${name}-disk`));
  await call('VBD.create', vbdArgs(vm, vdi, '0'));
  await call('VIF.create', vifArgs(vm, c.network));
  return vm;
}

interface EventBatch { events: { class: string; operation: string; ref: string; snapshot?: Rec }[]; token: string }

/** a. start → answer and start → Running in event.from, over CYCLES cycles */
async function partLatency(c: Ctx): Promise<string> {
  const callPool = new Pool(c.base, { connections: 1 });
  const eventPool = new Pool(c.base, { connections: 1 });
  try {
    const vm = await newVm(c, 'latency', callPool);
    const answer: number[] = [];
    const running: number[] = [];
    const shutdown: number[] = [];
    let token = (await jsonCall<EventBatch>(c.base, 'event.from', [c.session, ['vm'], '', 0], eventPool)).value.token;
    for (let i = 0; i < CYCLES; i++) {
      // the watcher is blocked in event.from before the call is sent
      let t0 = 0;
      const seen = (async () => {
        for (;;) {
          const b = (await jsonCall<EventBatch>(c.base, 'event.from', [c.session, ['vm'], token, 30], eventPool)).value;
          token = b.token;
          if (b.events.some((e) => e.ref === vm && e.snapshot?.power_state === 'Running')) return now();
        }
      })();
      await new Promise((r) => setTimeout(r, 2));
      t0 = now();
      await jsonCall(c.base, 'VM.start', [c.session, vm, false, false], callPool);
      answer.push(now() - t0);
      running.push((await seen) - t0);
      const t1 = now();
      await jsonCall(c.base, 'VM.hard_shutdown', [c.session, vm], callPool);
      shutdown.push(now() - t1);
    }
    const row = (label: string, xs: number[]) => [label, fmt(median(xs), 2), fmt(pct(xs, 95), 2), fmt(Math.max(...xs), 2)];
    return table(
      `7a. VM.start latency, time scale 0 (one HVM VM, 1 VDI+VBD, 1 VIF; ${CYCLES} start / hard_shutdown cycles; ms from the client)`,
      [
        ['', 'median ms', 'p95 ms', 'max ms'],
        row('VM.start: call → answer', answer),
        row('VM.start: call → power_state Running in event.from', running),
        row('VM.hard_shutdown: call → answer', shutdown),
      ],
    );
  } finally {
    await callPool.close();
    await eventPool.close();
  }
}

/** b. CLIENTS concurrent clients cycling start / clean_shutdown over VMS VMs for SECONDS */
async function partThroughput(c: Ctx): Promise<string> {
  const setup = new Pool(c.base, { connections: 8 });
  const vms: string[] = [];
  for (let i = 0; i < VMS; i += 8) {
    vms.push(...(await Promise.all(Array.from({ length: Math.min(8, VMS - i) }, (_, j) => newVm(c, `tp-${i + j}`, setup)))));
  }
  await setup.close();
  progress(`7b: ${VMS} VMs created; ${CLIENTS} clients for ${SECONDS} s`);
  const counts = { start: 0, clean_shutdown: 0 };
  const lat = { start: [] as number[], clean_shutdown: [] as number[] };
  const errors = new Map<string, number>();
  const end = now() + SECONDS * 1000;
  const t0 = now();
  await Promise.all(Array.from({ length: CLIENTS }, async (_, k) => {
    const pool = new Pool(c.base, { connections: 1 });
    const mine = vms.filter((_, i) => i % CLIENTS === k);
    try {
      for (let n = 0; now() < end; n++) {
        const vm = mine[n % mine.length];
        for (const op of ['start', 'clean_shutdown'] as const) {
          const s = now();
          try {
            await jsonCall(c.base, `VM.${op}`, op === 'start' ? [c.session, vm, false, false] : [c.session, vm], pool);
            counts[op]++;
            lat[op].push(now() - s);
          } catch (e) {
            const key = e instanceof RpcError ? `${op}: ${JSON.stringify(e.description).slice(0, 80)}` : `${op}: ${(e as Error).message}`;
            errors.set(key, (errors.get(key) ?? 0) + 1);
          }
        }
      }
    } finally {
      await pool.close();
    }
  }));
  const secs = (now() - t0) / 1000;
  const total = counts.start + counts.clean_shutdown;
  const errs = [...errors.values()].reduce((a, b) => a + b, 0);
  return [
    table(
      `7b. Lifecycle throughput, time scale 0: ${VMS} VMs (1 VDI+VBD, 1 VIF each), ${CLIENTS} concurrent clients (one connection each) ` +
        `cycling VM.start / VM.clean_shutdown for ${fmt(secs, 1)} s`,
      [
        ['operation', 'ok', 'ops/s', 'median ms', 'p95 ms'],
        ['VM.start', String(counts.start), fmt(counts.start / secs, 1), fmt(median(lat.start), 2), fmt(pct(lat.start, 95), 2)],
        ['VM.clean_shutdown', String(counts.clean_shutdown), fmt(counts.clean_shutdown / secs, 1), fmt(median(lat.clean_shutdown), 2), fmt(pct(lat.clean_shutdown, 95), 2)],
        ['all', String(total), fmt(total / secs, 1), '', ''],
      ],
    ),
    `    errors: ${errs}${errs ? ` (${[...errors].map(([k, v]) => `${v}× ${k}`).join('; ')})` : ''}`,
  ].join('\n');
}

/** Section 7: its own emulator (--memory, --time-scale 0); returns the report. */
export async function sectionLifecycle(): Promise<string> {
  progress('7: starting the emulator (--memory, --time-scale 0)');
  const port = await freePort();
  const child: Child = spawnEmulator(['--memory', '--time-scale', '0', '--port', String(port)]);
  try {
    const base = `http://127.0.0.1:${port}/`;
    const session = await waitForLogin(base, child);
    const srs = (await jsonCall<string[]>(base, 'SR.get_by_name_label', [session, 'Local storage'])).value;
    const nets = (await jsonCall<string[]>(base, 'network.get_all_where', [session, 'field "bridge" = "xenbr0"'])).value;
    const c: Ctx = { base, session, sr: srs[0], network: nets[0] };
    const t0 = now();
    progress(`7a: ${CYCLES} start / hard_shutdown cycles`);
    const a = await partLatency(c);
    const b = await partThroughput(c);
    return [`7. VM lifecycle (emulator with --memory --time-scale 0; ${fmt((now() - t0) / 1000, 1)} s)`, a, b].join('\n\n');
  } finally {
    await stop(child);
  }
}
