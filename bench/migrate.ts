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
// A migration to another pool is not implemented (VM.migrate_send answers NOT_IMPLEMENTED): the
// section says so instead of a number.
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
    const vm = await call<string>('VM.create', {
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
    await call('VM.start_on', vm, hosts[0], false, false);
    const vbd = (await call<string[]>('VM.get_VBDs', vm))[0];
    const disk = () => call<string>('VBD.get_VDI', vbd);

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
    const mbs = (ms: number) => fmt(SIZE_MIB / (ms / 1000), 0);
    const rows: (string | number)[][] = [
      ['operation', 'MiB', 'ms (best)', 'MiB/s', 'vs copy'],
      ['VDI.copy of its snapshot into the same SR (plain copy)', SIZE_MIB, fmt(copy, 0), mbs(copy), '1.00'],
      ['VDI.pool_migrate of the running VM\'s disk to a shared SR', SIZE_MIB, fmt(poolMigrate, 0), mbs(poolMigrate), fmt(copy / poolMigrate, 2)],
      ['VM.migrate_send to host 1, disk to its local SR', SIZE_MIB, fmt(migrateSend, 0), mbs(migrateSend), fmt(copy / migrateSend, 2)],
      ['VM.migrate_send to another pool', SIZE_MIB, '-', 'not implemented', '-'],
    ];
    return table(`migrate: live storage migration of a running VM's ${SIZE_MIB} MiB disk (best of ${ROUNDS}, time scale 0)`, rows);
  } finally {
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
