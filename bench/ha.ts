// Section ha (BENCH_ONLY=ha): HA failover of BENCH_HA_VMS (default 100) protected VMs in a pool of
// 4 hosts with a shared SR, the emulator in a child process (--time-scale 0):
//   baseline: the wall time of starting those VMs with VM.start_on (16 concurrent clients);
//   a. the host holding most of them fails (control API host_down): wall time from the fault to the
//      last protected VM running again elsewhere;
//   b. the same with the clock frozen and moved a second at a time: the simulated failover time
//      (emulator clock from the fault to the last VM running: boots, by VM.order group).
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { Pool } from 'undici';
import { controlClient } from '../server/control/client.js';
import { spawnEmulator, stop, freePort, waitForLogin, jsonCall, now, fmt, table, PASSWORD, type Child } from './lib.js';
import { MiB, memory, vbdArgs, vdiArgs, vmArgs } from '../test/integration/helpers/records.js';

const VMS = Number(process.env.BENCH_HA_VMS ?? 100);
const HOSTS = 4;
const ORDERS = 5;

const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

interface Rec { [k: string]: unknown }

export async function sectionHa(dir: string): Promise<string> {
  const dataDir = join(dir, 'ha');
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  progress(`ha: starting a pool of ${HOSTS} hosts`);
  const child: Child = spawnEmulator(['--data', dataDir, '--hosts', String(HOSTS), '--time-scale', '0', '--port', String(port)]);
  const addr = (i: number) => `http://127.0.0.${i + 1}:${port}/`;
  try {
    let base = addr(0);
    let session = await waitForLogin(base, child);
    let pool = new Pool(base, { connections: 16 });
    const call = async <T>(m: string, ...p: unknown[]) => (await jsonCall<T>(base, m, [session, ...p], pool)).value;
    const ctl = controlClient({ url: base, username: 'root', password: PASSWORD });
    const hostRecs = await call<Record<string, Rec>>('host.get_all_records');
    const hostOf = new Map(Object.entries(hostRecs).map(([ref, r]) => [String(r.address), ref]));
    const hosts = Array.from({ length: HOSTS }, (_, i) => hostOf.get(`127.0.0.${i + 1}`)!);
    const sr = await call<string>('SR.create', hosts[0], { location: join(dataDir, 'shared-sr') }, 0, 'Shared', '', 'file', 'user', true, {});

    progress(`ha: ${VMS} protected VMs`);
    const vms: string[] = [];
    for (let i = 0; i < VMS; i++) {
      const vm = await call<string>('VM.create', vmArgs(`ha-${i}`, memory(256 * MiB)));
      const vdi = await call<string>('VDI.create', vdiArgs(sr, 8 * MiB, `ha-${i}-disk`));
      await call('VBD.create', vbdArgs(vm, vdi, '0'));
      await call('VM.set_ha_restart_priority', vm, 'restart');
      await call('VM.set_order', vm, i % ORDERS);
      vms.push(vm);
    }
    // most of them on host 1 (a member), the rest spread
    const placement = vms.map((_, i) => (i < VMS * 0.4 ? hosts[1] : hosts[[0, 2, 3][i % 3]]));
    progress('ha: baseline, VM.start_on of every VM');
    let t0 = now();
    const queue = vms.map((vm, i) => [vm, placement[i]] as const);
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let it = queue.shift(); it !== undefined; it = queue.shift()) await call('VM.start_on', it[0], it[1], false, false);
    }));
    const baseline = now() - t0;
    await call('pool.enable_ha', [sr], {});

    // a failed master hands its role (and ends the sessions): log in again where the master is now
    const reconnect = async () => {
      for (let i = 0; i < HOSTS; i++) {
        const r = await jsonCall<string>(addr(i), 'session.login_with_password', ['root', PASSWORD, '1.0', 'bench']).catch(() => null);
        if (!r) continue;
        await pool.close();
        base = addr(i);
        session = r.value;
        pool = new Pool(base, { connections: 16 });
        return;
      }
    };
    const running = async (): Promise<number> => {
      try {
        const recs = await call<Record<string, Rec>>('VM.get_all_records_where', 'field "power_state" = "Running" and field "is_control_domain" = "false"');
        return Object.keys(recs).length;
      } catch {
        await reconnect();
        return 0;
      }
    };
    const mostLoaded = async () => {
      const count = new Map<string, number>();
      for (const vm of vms) {
        const h = await call<string>('VM.get_resident_on', vm);
        count.set(h, (count.get(h) ?? 0) + 1);
      }
      return [...count].sort((a, b) => b[1] - a[1])[0];
    };
    await running();

    // a. wall time, the clock running at scale 0
    let [victim, moved] = await mostLoaded();
    progress(`ha: a. host_down on the host running ${moved} of them`);
    t0 = now();
    let rule = await ctl.faults.create({ match: { host: victim }, effect: { host_down: true } });
    let seen = await running();
    for (let i = 0; i < 100_000 && seen < VMS; i++) seen = await running();
    const wallA = now() - t0;
    const movedA = moved;
    await ctl.faults.delete({ id: rule.id });

    // b. simulated time: frozen, moved a second at a time
    [victim, moved] = await mostLoaded();
    progress(`ha: b. host_down on the host running ${moved} of them, clock frozen`);
    await ctl.clock.set({ frozen: true });
    const c0 = (await ctl.clock.get({})).now_ms;
    t0 = now();
    rule = await ctl.faults.create({ match: { host: victim }, effect: { host_down: true } });
    seen = await running();
    let steps = 0;
    for (; steps < 3600 && seen < VMS; steps++) {
      await ctl.clock.advance({ seconds: 1 });
      seen = await running();
    }
    const simulatedB = ((await ctl.clock.get({})).now_ms - c0) / 1000;
    const wallB = now() - t0;
    await ctl.clock.set({ frozen: false });
    await ctl.faults.delete({ id: rule.id });
    await pool.close();

    return [
      `ha. HA failover of ${VMS} protected VMs (${HOSTS} hosts, shared SR, VM.order in ${ORDERS} groups, --time-scale 0)`,
      table('', [
        ['', 'VMs', 'wall ms', 'simulated s'],
        ['baseline: VM.start_on of all of them (16 clients)', String(VMS), fmt(baseline, 0), '-'],
        ['a. host_down → all running again (clock at scale 0)', String(movedA), fmt(wallA, 0), '0'],
        [`b. host_down → all running again (clock frozen, ${steps} steps of 1 s)`, String(moved), fmt(wallB, 0), fmt(simulatedB, 0)],
      ]),
    ].join('\n');
  } finally {
    await stop(child);
  }
}
