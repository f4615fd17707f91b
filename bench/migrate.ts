// Migration section of the benchmark (bench/run.ts, section "migrate"): live storage migration of a
// running VM's disk next to a plain copy of the same disk, in the same run. Prints numbers, asserts
// nothing (a failed call stops the section, as it would make the numbers meaningless).
//
// One 2-host emulator in this process (startServer, data directory under the bench's temporary
// directory, time scale 0: simulated transfer times cost nothing, the numbers are the emulator's
// own work), a BENCH_MIGRATE_MIB (default 256) MiB disk full of non-zero data on host 0's local SR,
// attached to a running VM. BENCH_MIGRATE_ROUNDS (default 2) times, best of each:
//   - VDI.copy into the same SR of a snapshot of the disk (a plain copy of the same bytes: read the
//     chain, write a new VHD; the disk itself, attached read-write, cannot be copied);
//   - VDI.pool_migrate of the disk to a shared file SR and back (the VM stays on host 0: mirror,
//     snapshot, copy of the snapshot, domain moved on the host, delta copied, old disk destroyed);
//   - VM.migrate_send to host 1 with the disk mapped to host 1's local SR, and back.
// Then a second emulator (another pool, in this process too): VM.migrate_send of the running VM to it
// and back, BENCH_MIGRATE_ROUNDS times (the disk over HTTP /import_raw_vdi, the VM through
// /import_metadata), best of each direction.
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../server/app.js';
import { openVdi } from '../server/sm/index.js';
import { jsonCall, login, table, fmt, now, PASSWORD } from './lib.js';

const MiB = 1024 * 1024;
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const SIZE_MIB = env('BENCH_MIGRATE_MIB', 256);
const ROUNDS = env('BENCH_MIGRATE_ROUNDS', 2);

const progress = (s: string) => process.stderr.write(`[bench] migrate: ${s}\n`);

export async function sectionMigrate(tmp: string): Promise<string> {
  const dir = join(tmp, 'migrate');
  mkdirSync(dir, { recursive: true });
  let srv: RunningServer | undefined;
  let other: RunningServer | undefined;
  try {
    srv = await startServer({ port: 0, dataDir: join(dir, 'data'), hosts: 2, password: PASSWORD, authFailDelay: 0, closeGrace: 0, nbdPort: null });
    const base = srv.urls[0];
    const session = await login(base);
    const call = async <T>(method: string, ...params: unknown[]): Promise<T> => (await jsonCall<T>(base, method, [session, ...params])).value;
    const hosts = srv.emu.hosts;
    const local: string[] = [];
    for (const h of hosts) {
      for (const p of await call<string[]>('host.get_PBDs', h)) {
        const sr = await call<string>('PBD.get_SR', p);
        if ((await call<string>('SR.get_name_label', sr)) === 'Local storage') local.push(sr);
      }
    }
    const shared = await call<string>('SR.create', hosts[0], { location: join(srv.emu.storageDir, 'bench-shared') }, 0, 'Shared', '', 'file', 'user', true, {});
    const network = (await call<string[]>('network.get_all_where', 'field "bridge" = "xenbr0"'))[0];
    const size = SIZE_MIB * MiB;

    progress(`filling a ${SIZE_MIB} MiB disk`);
    const vdi = await call<string>('VDI.create', {
      name_label: 'bench-disk', name_description: '', SR: local[0], virtual_size: size, type: 'user', sharable: false, read_only: false,
      other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
    });
    const io = await openVdi(srv.emu, vdi, { readOnly: false });
    const chunk = randomBytes(2 * MiB);
    for (let off = 0; off < size; off += chunk.length) await io.write(off, chunk);
    await io.flush();
    await io.close();
    let vm = await call<string>('VM.create', {
      name_label: 'bench-vm', name_description: '', user_version: 1, is_a_template: false, affinity: 'OpaqueRef:NULL',
      memory_static_max: 256 * MiB, memory_dynamic_max: 256 * MiB, memory_dynamic_min: 256 * MiB, memory_static_min: 256 * MiB,
      VCPUs_params: {}, VCPUs_max: 1, VCPUs_at_startup: 1, actions_after_shutdown: 'destroy', actions_after_reboot: 'restart',
      actions_after_crash: 'restart', PV_bootloader: '', PV_kernel: '', PV_ramdisk: '', PV_args: '', PV_bootloader_args: '',
      PV_legacy_args: '', HVM_boot_policy: 'BIOS order', HVM_boot_params: { order: 'dc' }, HVM_shadow_multiplier: 1, platform: {},
      PCI_bus: '', other_config: { 'xapi-emu-pv-drivers': 'true' }, recommendations: '',
    });
    await call('VBD.create', {
      VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', unpluggable: true, empty: false,
      other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {},
    });
    await call('VIF.create', {
      device: '0', network, VM: vm, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {},
    });
    await call('VM.start_on', vm, hosts[0], false, false);
    const disk = async () => {
      for (const b of await call<string[]>('VM.get_VBDs', vm)) if ((await call<string>('VBD.get_type', b)) === 'Disk') return call<string>('VBD.get_VDI', b);
      throw new Error('the VM has no disk');
    };

    let copy = Infinity;
    let poolMigrate = Infinity;
    let migrateSend = Infinity;
    const timed = async (fn: () => Promise<unknown>) => {
      const t0 = now();
      await fn();
      return now() - t0;
    };
    for (let r = 0; r < ROUNDS; r++) {
      progress(`round ${r + 1}/${ROUNDS}`);
      const current = await disk();
      const sr = await call<string>('VDI.get_SR', current);
      // the disk is attached read-write: its snapshot (the same bytes) is what VDI.copy may read
      const snap = await call<string>('VDI.snapshot', current, {});
      let copied = '';
      copy = Math.min(copy, await timed(async () => (copied = await call<string>('VDI.copy', snap, sr, 'OpaqueRef:NULL', 'OpaqueRef:NULL'))));
      await call('VDI.destroy', copied);
      await call('VDI.destroy', snap);
      // to the shared SR and back, the VM staying on host 0
      poolMigrate = Math.min(poolMigrate, await timed(() => call('VDI.pool_migrate', current, shared, {})));
      await call('VDI.pool_migrate', await disk(), local[0], {});
      // to host 1 with its disk on host 1's local SR, and back
      const there = await call<Record<string, string>>('host.migrate_receive', hosts[1], network, {});
      migrateSend = Math.min(migrateSend, await timed(async () => call('VM.migrate_send', vm, there, true, { [await disk()]: local[1] }, {}, {})));
      const back = await call<Record<string, string>>('host.migrate_receive', hosts[0], network, {});
      await call('VM.migrate_send', vm, back, true, { [await disk()]: local[0] }, {}, {});
    }
    // another pool
    progress('cross-pool');
    other = await startServer({ port: 0, dataDir: join(dir, 'other'), password: PASSWORD, authFailDelay: 0, closeGrace: 0, nbdPort: null });
    const otherBase = other.urls[0];
    const otherSession = await login(otherBase);
    const callOther = async <T>(method: string, ...params: unknown[]): Promise<T> => (await jsonCall<T>(otherBase, method, [otherSession, ...params])).value;
    const otherSr = (await callOther<string[]>('SR.get_by_name_label', 'Local storage'))[0];
    const otherNet = (await callOther<string[]>('network.get_all_where', 'field "bridge" = "xenbr0"'))[0];
    const uuid = await call<string>('VM.get_uuid', vm);
    let out = Infinity;
    let back = Infinity;
    for (let r = 0; r < ROUNDS; r++) {
      progress(`cross-pool round ${r + 1}/${ROUNDS}`);
      const vif = (await call<string[]>('VM.get_VIFs', vm))[0];
      const tokenB = await callOther<Record<string, string>>('host.migrate_receive', other.emu.master, otherNet, {});
      out = Math.min(out, await timed(async () => call('VM.migrate_send', vm, tokenB, true, { [await disk()]: otherSr }, vif ? { [vif]: otherNet } : {}, {})));
      const vmB = await callOther<string>('VM.get_by_uuid', uuid);
      const diskB = await callOther<string>('VBD.get_VDI', (await callOther<string[]>('VM.get_VBDs', vmB))[0]);
      const vifB = (await callOther<string[]>('VM.get_VIFs', vmB))[0];
      const tokenA = await call<Record<string, string>>('host.migrate_receive', hosts[0], network, {});
      back = Math.min(back, await timed(() => callOther('VM.migrate_send', vmB, tokenA, true, { [diskB]: local[0] }, vifB ? { [vifB]: network } : {}, {})));
      vm = await call<string>('VM.get_by_uuid', uuid);
    }
    const mbs = (ms: number) => fmt(SIZE_MIB / (ms / 1000), 0);
    const rows: (string | number)[][] = [
      ['operation', 'MiB', 'ms (best)', 'MiB/s', 'vs copy'],
      ['VDI.copy of its snapshot into the same SR (plain copy)', SIZE_MIB, fmt(copy, 0), mbs(copy), '1.00'],
      ['VDI.pool_migrate of the running VM\'s disk to a shared SR', SIZE_MIB, fmt(poolMigrate, 0), mbs(poolMigrate), fmt(copy / poolMigrate, 2)],
      ['VM.migrate_send to host 1, disk to its local SR', SIZE_MIB, fmt(migrateSend, 0), mbs(migrateSend), fmt(copy / migrateSend, 2)],
      ['VM.migrate_send to another pool (HTTP, same machine)', SIZE_MIB, fmt(out, 0), mbs(out), fmt(copy / out, 2)],
      ['VM.migrate_send back from that pool', SIZE_MIB, fmt(back, 0), mbs(back), fmt(copy / back, 2)],
    ];
    return table(`migrate: live storage migration of a running VM's ${SIZE_MIB} MiB disk (best of ${ROUNDS}, time scale 0)`, rows);
  } finally {
    await other?.close();
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
