// Crash harness: a spawned emulator under mixed load (VM and VDI create/destroy/snapshot/clone,
// set_name_label, VDI imports) is SIGKILLed at random points and restarted on the same data
// directory. Every write whose answer arrived must be there after the restart (and every object
// whose destruction was answered must be gone); every few kills the emulator is stopped and the
// invariant checker runs on the data directory as stored, then on a fresh start of it.
//   npm run robust:crash -- [--kills 100] [--workers 4] [--max-load-ms 1500] [--check-every 1] [--seed 1]
import { startServer } from '../server/app.js';
import { smReady } from '../server/sm/sm.js';
import { checkInvariants, formatViolation } from '../server/check/invariants.js';
import { readStoredState } from '../server/check/command.js';
import { PASSWORD, rssMiB, spawnEmulator, stop, waitForLogin, type Child } from '../bench/lib.js';
import { Fault, Rng, Tally, isMain, localSr, loginAs, option, report, tempDataDir, vdiArgs, vmArgs, MiB, type Session } from './lib.js';

export interface CrashOptions { kills: number; workers: number; maxLoadMs: number; checkEvery: number; seed: number }
export interface CrashResult { kills: number; acked: number; lost: string[]; violations: string[]; internalErrors: number; text: string }

interface Expect { cls: 'VM' | 'VDI'; names: Set<string> }

export async function runCrash(o: CrashOptions): Promise<CrashResult> {
  const data = tempDataDir('crash');
  const rng = new Rng(o.seed);
  const tally = new Tally();
  const present = new Map<string, Expect>(); // uuid -> what must be there
  const absent = new Map<string, 'VM' | 'VDI'>(); // uuid -> destroyed, must stay gone
  const lost: string[] = [];
  const violations: string[] = [];
  const seen = new Set<string>(); // a violation that persists is reported once, at the check that found it
  const violation = (label: string, v: string) => {
    if (!seen.has(v)) violations.push(`${label}: ${v}`);
    seen.add(v);
  };
  let acked = 0;
  let kills = 0;
  let rssFirst = NaN;
  let rssLast = NaN;
  let child: Child | null = null;

  const boot = async (): Promise<{ child: Child; base: string }> => {
    const c = spawnEmulator(['--port', '0', '--data', data.dir, '--seed', `crash-${o.seed}`]);
    const url = await new Promise<string>((resolve, reject) => {
      const t = setInterval(() => {
        const m = /XAPI\s+(http:\/\/\S+)/.exec(c.output());
        if (m) {
          clearInterval(t);
          resolve(m[1]);
        } else if (c.proc.exitCode !== null) {
          clearInterval(t);
          reject(new Error(`the emulator exited:\n${c.output()}`));
        }
      }, 20);
    });
    await waitForLogin(url, c);
    return { child: c, base: url };
  };

  /** What a restart must show: acknowledged objects with an acknowledged name, destroyed ones gone. */
  const verify = async (s: Session): Promise<void> => {
    for (const [uuid, e] of present) {
      try {
        const ref = await s.call(`${e.cls}.get_by_uuid`, uuid);
        const name = await s.call(`${e.cls}.get_name_label`, ref);
        if (!e.names.has(name)) lost.push(`${e.cls} ${uuid}: name_label "${name}", acknowledged ${[...e.names].map((n) => `"${n}"`).join(' or ')}`);
      } catch (err) {
        lost.push(`${e.cls} ${uuid}: ${err instanceof Fault ? err.description.join(' ') : (err as Error).message}`);
        present.delete(uuid);
      }
    }
    for (const [uuid, cls] of absent) {
      try {
        await s.call(`${cls}.get_by_uuid`, uuid);
        lost.push(`${cls} ${uuid}: destroyed (acknowledged) but present after restart`);
      } catch (err) {
        if (!(err instanceof Fault && err.code === 'UUID_INVALID')) throw err;
      }
    }
  };

  /** After a kill: a start in this process (no spawn: the child only exists to be killed) repairs
   * and verifies the directory, and stops cleanly; then the directory is checked as stored and as
   * a fresh start sees it. */
  const checkAfterKill = async (label: string): Promise<void> => {
    const again = await startServer({ port: 0, dataDir: data.dir, password: PASSWORD, authFailDelay: 0 });
    try {
      await smReady(again.emu);
      await verify(await loginAs(again.urls[0], 'root', PASSWORD));
    } finally {
      await again.close();
    }
    const stored = await checkInvariants(readStoredState(data.dir), { live: false });
    for (const v of stored) violation(`${label}, as stored`, formatViolation(v));
    const server = await startServer({ port: 0, dataDir: data.dir, password: PASSWORD, authFailDelay: 0 });
    try {
      await smReady(server.emu);
      for (const v of await checkInvariants(server.emu)) violation(`${label}, after start`, formatViolation(v));
    } finally {
      await server.close();
    }
  };

  try {
    for (let cycle = 0; cycle < o.kills; cycle++) {
      const up = await boot();
      child = up.child;
      const admin = await loginAs(up.base, 'root', PASSWORD);
      await verify(admin);
      if (Number.isNaN(rssFirst)) rssFirst = rssMiB(child.pid);
      const sr = await localSr(admin);
      let killed = false;
      const worker = async (w: number): Promise<void> => {
        const wr = new Rng(o.seed * 7919 + cycle * 131 + w);
        const mine = (cls: 'VM' | 'VDI') => [...present].filter(([, e]) => e.cls === cls).map(([u]) => u).filter((u) => u.charCodeAt(0) % o.workers === w);
        let n = 0;
        while (!killed) {
          const op = wr.weighted<string>([[3, 'vm_create'], [3, 'vdi_create'], [4, 'rename'], [2, 'vm_destroy'], [2, 'vdi_destroy'], [2, 'snapshot'], [1, 'clone'], [2, 'import']]);
          const name = `c${cycle}-w${w}-${n++}`;
          // an operation cut by the kill may or may not have happened: its object is forgotten
          const uncertain = (uuid: string) => {
            present.delete(uuid);
            absent.delete(uuid);
          };
          try {
            if (op === 'vm_create' || op === 'vdi_create') {
              const cls = op === 'vm_create' ? 'VM' : 'VDI';
              const ref = await admin.call(`${cls}.create`, cls === 'VM' ? vmArgs(name) : vdiArgs(sr, 2 * MiB, name));
              const uuid = await admin.call(`${cls}.get_uuid`, ref);
              // the uuid arrives in a second answer: a kill between the two loses track, not the object
              present.set(uuid, { cls, names: new Set([name]) });
              acked++;
            } else if (op === 'rename' || op === 'vm_destroy' || op === 'vdi_destroy') {
              const cls = op === 'vdi_destroy' ? 'VDI' : op === 'vm_destroy' ? 'VM' : wr.pick(['VM', 'VDI'] as const);
              const pool = mine(cls);
              if (!pool.length) continue;
              const uuid = wr.pick(pool);
              const e = present.get(uuid)!;
              const ref = await admin.call(`${cls}.get_by_uuid`, uuid);
              if (op === 'rename') {
                e.names.add(name); // until answered, either name may be there
                await admin.call(`${cls}.set_name_label`, ref, name);
                e.names = new Set([name]);
              } else {
                uncertain(uuid);
                await admin.call(`${cls}.destroy`, ref);
                absent.set(uuid, cls);
              }
              acked++;
            } else if (op === 'snapshot' || op === 'clone') {
              const pool = mine('VM');
              if (!pool.length) continue;
              const ref = await admin.call('VM.get_by_uuid', wr.pick(pool));
              const copy = await admin.call(op === 'snapshot' ? 'VM.snapshot' : 'VM.clone', ref, name);
              const uuid = await admin.call('VM.get_uuid', copy);
              if (op === 'clone') present.set(uuid, { cls: 'VM', names: new Set([name]) });
              acked++;
            } else {
              const pool = mine('VDI');
              if (!pool.length) continue;
              const uuid = wr.pick(pool);
              const ref = await admin.call('VDI.get_by_uuid', uuid);
              const body = Buffer.alloc(64 * 1024, wr.int(256));
              const r = await fetch(new URL(`/import_raw_vdi?session_id=${admin.session}&vdi=${ref}&format=raw`, up.base), {
                method: 'PUT', body: body as unknown as BodyInit, signal: AbortSignal.timeout(30_000),
              });
              await r.text();
              if (r.status === 200) acked++;
              else tally.add(`HTTP ${r.status}`);
            }
            tally.ok++;
          } catch (err) {
            if (killed) return;
            tally.fault(err);
          }
        }
      };
      const load = Promise.all(Array.from({ length: o.workers }, (_, w) => worker(w)));
      await new Promise((r) => setTimeout(r, rng.between(20, Math.max(20, o.maxLoadMs))));
      rssLast = rssMiB(child.pid);
      killed = true;
      child.proc.kill('SIGKILL');
      await new Promise((r) => child!.proc.once('exit', r));
      kills++;
      await load;
      if ((cycle + 1) % Math.max(1, o.checkEvery) === 0 || cycle === o.kills - 1) {
        await checkAfterKill(`after kill ${kills}`);
      }
    }
  } finally {
    if (child) await stop(child, 100);
    data.remove();
  }
  const figures = {
    kills, workers: o.workers, seed: o.seed, 'acknowledged writes': acked, 'objects tracked': present.size + absent.size,
    'lost acknowledged writes': lost.length, 'invariant violations': violations.length, INTERNAL_ERROR: tally.internalCount,
    'emulator RSS first cycle (MiB)': rssFirst, 'emulator RSS last cycle (MiB)': rssLast,
  };
  const text = report('crash', figures, [...tally.lines(), ...lost.slice(0, 20).map((l) => `  lost: ${l}`), ...violations.slice(0, 40).map((v) => `  violation: ${v}`)]);
  return { kills, acked, lost, violations, internalErrors: tally.internalCount, text };
}

export const crashFailed = (r: CrashResult): boolean => r.lost.length > 0 || r.violations.length > 0;

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const r = await runCrash({
    kills: option(argv, 'kills', 100), workers: option(argv, 'workers', 4), maxLoadMs: option(argv, 'max-load-ms', 1500),
    checkEvery: option(argv, 'check-every', 1), seed: option(argv, 'seed', 1),
  });
  console.log(r.text);
  return crashFailed(r) ? 1 : 0;
}

if (isMain(import.meta.url)) process.exit(await main());
