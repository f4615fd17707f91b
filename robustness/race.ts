// Race harness: N clients for D seconds run conflicting lifecycle operations on a few VMs
// (start, shutdown, suspend, resume, snapshot, checkpoint, revert, copy, clone, destroy, VBD
// create/destroy/plug/unplug), then the invariant checker runs on the quiet pool.
//   npm run robust:race -- [--clients 32] [--seconds 60] [--calls N] [--vms 4] [--seed 1] [--timeout 30000]
// With --calls the run also ends once that many calls were made: the same work on a fast or a
// loaded machine.
import { startServer } from '../server/app.js';
import { smReady } from '../server/sm/sm.js';
import { checkInvariants, formatViolation } from '../server/check/invariants.js';
import { Fault, Hang, Rng, Tally, isMain, localSr, loginAs, option, report, selfRssMiB, tempDataDir, vbdArgs, vdiArgs, vmArgs, MiB, NULL, type Session } from './lib.js';

export interface RaceOptions { clients: number; seconds: number; calls?: number; vms: number; seed: number; timeoutMs: number }
export interface RaceResult { calls: number; hangs: number; internalErrors: number; violations: string[]; tally: Tally; text: string }

const PASSWORD = 'race-pass';

export async function runRace(o: RaceOptions): Promise<RaceResult> {
  const data = tempDataDir('race');
  const server = await startServer({ port: 0, dataDir: data.dir, password: PASSWORD, authFailDelay: 0, seed: `race-${o.seed}` });
  const rssBefore = selfRssMiB();
  try {
    await smReady(server.emu);
    const base = server.urls[0];
    const admin = await loginAs(base, 'root', PASSWORD, o.timeoutMs);
    const sr = await localSr(admin);
    const vms: string[] = [];
    for (let i = 0; i < o.vms; i++) {
      const vm: string = await admin.call('VM.create', vmArgs(`race-${i}`));
      const vdi: string = await admin.call('VDI.create', vdiArgs(sr, 8 * MiB, `race-${i}-disk`));
      await admin.call('VBD.create', vbdArgs(vm, vdi, '0'));
      vms.push(vm);
    }
    const tally = new Tally();
    let calls = 0;
    let hangs = 0;
    const began = Date.now();
    const end = began + o.seconds * 1000;
    const client = async (id: number): Promise<void> => {
      const rng = new Rng(o.seed * 1000 + id);
      const s: Session = await loginAs(base, 'root', PASSWORD, o.timeoutMs);
      const call = async (method: string, ...params: unknown[]): Promise<any> => {
        calls++;
        try {
          const r = await s.call(method, ...params);
          tally.ok++;
          return r;
        } catch (e) {
          if (e instanceof Hang) hangs++;
          tally.fault(e);
          if (!(e instanceof Fault)) throw e;
          return undefined;
        }
      };
      let all: string[] = vms;
      for (let round = 0; Date.now() < end && calls < (o.calls ?? Infinity); round++) {
        // the VMs of the game: the originals and whatever copies and clones are alive; kept few
        if (round % 4 === 0) all = (await call('VM.get_all_where', 'field "is_a_template" = "false" and field "is_control_domain" = "false" and field "is_a_snapshot" = "false"')) ?? vms;
        const vm = rng.pick(all.length ? all : vms);
        const crowded = all.length > o.vms * 3;
        const op = rng.weighted<string>([
          [6, 'start'], [4, 'hard_shutdown'], [2, 'clean_shutdown'], [3, 'suspend'], [3, 'resume'], [2, 'pause'], [2, 'unpause'],
          [3, 'snapshot'], [3, 'checkpoint'], [3, 'revert'], [crowded ? 0 : 1, 'copy'], [crowded ? 0 : 2, 'clone'],
          [crowded ? 8 : 1, 'destroy'], [3, 'vbd_create'], [2, 'vbd_destroy'], [2, 'vbd_plug'], [2, 'vbd_unplug'], [2, 'set_name_label'],
        ]);
        switch (op) {
          case 'start': await call('VM.start', vm, false, true); break;
          case 'hard_shutdown': await call('VM.hard_shutdown', vm); break;
          case 'clean_shutdown': await call('VM.clean_shutdown', vm); break;
          case 'suspend': await call('VM.suspend', vm); break;
          case 'resume': await call('VM.resume', vm, false, true); break;
          case 'pause': await call('VM.pause', vm); break;
          case 'unpause': await call('VM.unpause', vm); break;
          case 'snapshot': await call('VM.snapshot', vm, `snap-${id}`); break;
          case 'checkpoint': await call('VM.checkpoint', vm, `ckpt-${id}`); break;
          case 'revert': {
            const snaps: string[] = (await call('VM.get_snapshots', vm)) ?? [];
            if (snaps.length) await call('VM.revert', rng.pick(snaps));
            if (snaps.length > 3) await call('VM.destroy', snaps[0]);
            break;
          }
          case 'copy': await call('VM.copy', vm, `copy-${id}`, sr); break;
          case 'clone': await call('VM.clone', vm, `clone-${id}`); break;
          case 'destroy': {
            if (vms.includes(vm)) await call('VM.hard_shutdown', vm);
            else {
              await call('VM.hard_shutdown', vm);
              for (const snap of ((await call('VM.get_snapshots', vm)) ?? []) as string[]) await call('VM.destroy', snap);
              await call('VM.destroy', vm);
            }
            break;
          }
          case 'vbd_create': {
            const vdi = await call('VDI.create', vdiArgs(sr, 4 * MiB, `race-extra-${id}`));
            if (vdi && !(await call('VBD.create', vbdArgs(vm, vdi, rng.pick(['1', '2', '3', 'autodetect']))))) await call('VDI.destroy', vdi);
            break;
          }
          case 'vbd_destroy':
          case 'vbd_plug':
          case 'vbd_unplug': {
            const vbds: string[] = (await call('VM.get_VBDs', vm)) ?? [];
            const extra = [];
            for (const b of vbds) if ((await call('VBD.get_userdevice', b)) !== '0') extra.push(b);
            if (!extra.length) break;
            const vbd = rng.pick(extra);
            if (op === 'vbd_plug') await call('VBD.plug', vbd);
            else if (op === 'vbd_unplug') await call('VBD.unplug', vbd);
            else {
              const vdi = await call('VBD.get_VDI', vbd);
              await call('VBD.unplug', vbd);
              if ((await call('VBD.destroy', vbd)) !== undefined && vdi && vdi !== NULL) await call('VDI.destroy', vdi);
            }
            break;
          }
          case 'set_name_label': await call('VM.set_name_label', vm, `race-${id}-${calls}`); break;
        }
      }
    };
    const results = await Promise.allSettled(Array.from({ length: o.clients }, (_, i) => client(i)));
    const elapsed = (Date.now() - began) / 1000;
    const crashed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    // a call its client gave up on may still run: let the pool go quiet (a task still pending
    // after the bound is a task left behind, and the checker reports it)
    const quietBy = Date.now() + o.timeoutMs;
    const busy = () => [...server.emu.db.table('task').values()].some((t) => t.rec.status === 'pending');
    while (busy() && Date.now() < quietBy) await new Promise((r) => setTimeout(r, 50));
    const violations = (await checkInvariants(server.emu)).map(formatViolation);
    const figures = {
      clients: o.clients, 'seconds (bound)': o.seconds, VMs: o.vms, seed: o.seed, calls, 'load seconds': elapsed, 'calls/s': calls / elapsed, hangs,
      INTERNAL_ERROR: tally.internalCount, 'clients stopped by a transport error': crashed.length, violations: violations.length,
      'RSS before (MiB)': rssBefore, 'RSS after (MiB)': selfRssMiB(),
    };
    const text = report('race', figures, [...tally.lines(), ...crashed.slice(0, 5).map((c) => `  client error: ${c}`), ...violations.map((v) => `  violation: ${v}`)]);
    return { calls, hangs: hangs + crashed.length, internalErrors: tally.internalCount, violations, tally, text };
  } finally {
    await server.close();
    data.remove();
  }
}

export const raceFailed = (r: RaceResult): boolean => r.hangs > 0 || r.internalErrors > 0 || r.violations.length > 0;

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const r = await runRace({
    clients: option(argv, 'clients', 32), seconds: option(argv, 'seconds', 60), calls: option(argv, 'calls', Infinity), vms: option(argv, 'vms', 4),
    seed: option(argv, 'seed', 1), timeoutMs: option(argv, 'timeout', 30_000),
  });
  console.log(r.text);
  return raceFailed(r) ? 1 : 0;
}

if (isMain(import.meta.url)) process.exit(await main());
