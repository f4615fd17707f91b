// A storage migration cut by a kill of the emulator (VDI.pool_migrate of a running VM's disk, held
// in its copy with the clock frozen): the next start cleans up what the migration had made, as
// xapi's Storage_migrate.killall does at start — the destination VDI and the snapshot of the
// mirror's base (both marked sm_config base_mirror) are destroyed, the VM keeps its disk with every
// byte the guest wrote, and the SRs hold no stray file. Likewise a destination pool killed while
// it receives a VM from another pool: at its next start, the disks it had received are gone.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { startServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import { fileSrProblems, smReady } from '../../server/sm/index.js';
import { cutMigrationsRepaired } from '../../server/api/migrate-recovery.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { exited, scratch } from './helpers/cli.js';
import { MiB, PV_DRIVERS, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';
import { startPool, xenbr0 } from './helpers/pool.js';
import { faultOf } from './helpers/jsonrpc.js';

const PASSWORD = 'migrate-crash-test';
const { dir: dataDir, spawnCli } = scratch('migrate-crash');

const pattern = (n: number, seed: number) => {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * 7 + seed * 11 + (i >> 9)) & 0xff;
  return buf;
};

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

async function guestWrite(url: string, x: Client, vm: string, offset: number, data: Buffer): Promise<boolean> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset })}`, url), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  return r.status === 200 && JSON.parse(await r.text()).status === 'OKAY';
}

async function exportRaw(url: string, x: Client, vdi: string): Promise<Buffer> {
  const r = await fetch(new URL(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`, url));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

/** the VDIs marked as part of a storage migration */
async function marked(x: Client): Promise<string[]> {
  const all: Record<string, { sm_config: Record<string, string> }> = await x.call('VDI.get_all_records');
  return Object.entries(all).filter(([, r]) => 'base_mirror' in r.sm_config).map(([ref]) => ref);
}

async function managedVdis(x: Client): Promise<string[]> {
  const all: Record<string, { managed: boolean }> = await x.call('VDI.get_all_records');
  return Object.entries(all).filter(([, r]) => r.managed).map(([ref]) => ref).sort();
}

describe('a storage migration cut by a kill', () => {
  it('is cleaned up at the next start: no destination VDI, no base snapshot, the VM on its disk with its bytes', async () => {
    const data = dataDir();
    const cli = await spawnCli(PASSWORD, ['--data', data]);
    const x = await connect(cli.url, 'root', PASSWORD);
    const host: string = (await x.call('host.get_all'))[0];
    const local: string = (await x.call('SR.get_by_name_label', 'Local storage'))[0];
    const other: string = await x.call('SR.create', host, { location: join(data, 'other-sr') }, 0, 'Other', '', 'file', 'user', true, {});
    const vm: string = await x.call('VM.create', vmArgs('cut-migration', { other_config: PV_DRIVERS }));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 8 * MiB, 'cut-disk'));
    const vbd: string = await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await x.call('VM.start', vm, false, false);
    const written = pattern(2 * MiB, 1);
    expect(await guestWrite(cli.url, x, vm, MiB, written)).toBe(true);
    const vdisBefore = await managedVdis(x);

    // the copy waits on simulated time, which stands still
    const ctl = controlClient({ url: cli.url, username: 'root', password: PASSWORD });
    await ctl.clock.set({ frozen: true });
    await x.call('Async.VDI.pool_migrate', vdi, other, {});
    let cut: string[] = [];
    for (let i = 0; i < 5000 && cut.length < 2; i++) cut = await marked(x);
    // the destination VDI on the other SR, the mirror's base snapshot next to the disk
    expect(cut).toHaveLength(2);
    expect((await Promise.all(cut.map((v) => x.call('VDI.get_SR', v)))).sort()).toEqual([local, other].sort());
    cli.child.kill('SIGKILL');
    await exited(cli.child);

    const srv = await startServer({ port: 0, dataDir: data, password: PASSWORD, authFailDelay: 0, closeGrace: 0 });
    try {
      await smReady(srv.emu);
      await cutMigrationsRepaired(srv.emu);
      const y = await connect(srv.urls[0], 'root', PASSWORD);
      expect(await marked(y)).toEqual([]);
      // (the base copy the snapshot left in the disk's chain waits for SM's GC: not a disk a client sees)
      expect(await managedVdis(y)).toEqual(vdisBefore);
      expect(await y.call('VBD.get_VDI', vbd)).toBe(vdi);
      expect(await y.call('VM.get_current_operations', vm)).toEqual({});
      if ((await y.call('VM.get_power_state', vm)) !== 'Halted') await y.call('VM.hard_shutdown', vm);
      const bytes = await exportRaw(srv.urls[0], y, vdi);
      expect(bytes.subarray(MiB, 3 * MiB).equals(written)).toBe(true);
      const problems: string[] = [];
      for (const sr of [local, other]) problems.push(...(await fileSrProblems(srv.emu, sr)));
      expect(problems).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});

describe('a destination pool killed during a cross-pool migration', () => {
  it('answers the source CANNOT_CONTACT_HOST, the VM still running there; at its next start the disks it received are gone', async () => {
    const { srv: a, x: xa } = await startPool(PASSWORD, { closeGrace: 0 });
    try {
      const data = dataDir();
      const cli = await spawnCli(PASSWORD, ['--data', data]);
      const xb = await connect(cli.url, 'root', PASSWORD);
      const srA: string = (await xa.call('SR.get_by_name_label', 'Local storage'))[0];
      const srB: string = (await xb.call('SR.get_by_name_label', 'Local storage'))[0];
      const vm: string = await xa.call('VM.create', vmArgs('cut-cross-pool', { other_config: PV_DRIVERS }));
      const vdi: string = await xa.call('VDI.create', vdiArgs(srA, 4 * MiB, 'cut-cross-disk'));
      await xa.call('VBD.create', vbdArgs(vm, vdi, '0'));
      const vif: string = await xa.call('VIF.create', vifArgs(vm, await xenbr0(xa)));
      await xa.call('VM.start', vm, false, false);
      const uuid: string = await xa.call('VM.get_uuid', vm);
      const vdisB = await managedVdis(xb);
      // the disk has gone over; the VM's objects are held at the door
      const ctlB = controlClient({ url: cli.url, username: 'root', password: PASSWORD });
      const rule = await ctlB.faults.create({ match: { path: '/import_metadata' }, effect: { hang: true } });
      const netB = await xenbr0(xb);
      const token = await xb.call('host.migrate_receive', (await xb.call('host.get_all'))[0], netB, {});
      const migration = faultOf(xa.call('VM.migrate_send', vm, token, true, { [vdi]: srB }, { [vif]: netB }, {}));
      let held = false;
      for (let i = 0; i < 5000 && !held; i++) held = (await ctlB.faults.get({ id: rule.id })).hanging > 0;
      expect(held).toBe(true);
      expect(await marked(xb)).toHaveLength(1);
      cli.child.kill('SIGKILL');
      await exited(cli.child);
      expect(await migration).toEqual(['CANNOT_CONTACT_HOST', '127.0.0.1']);
      expect(await xa.call('VM.get_record', vm)).toMatchObject({ power_state: 'Running', current_operations: {} });
      expect(await xa.call('VBD.get_VDI', (await xa.call('VM.get_VBDs', vm))[0])).toBe(vdi);
      expect(await marked(xa)).toEqual([]);

      const srv = await startServer({ port: 0, dataDir: data, password: PASSWORD, authFailDelay: 0, closeGrace: 0 });
      try {
        await smReady(srv.emu);
        await cutMigrationsRepaired(srv.emu);
        const y = await connect(srv.urls[0], 'root', PASSWORD);
        expect(await marked(y)).toEqual([]);
        expect(await managedVdis(y)).toEqual(vdisB);
        expect(await faultOf(y.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
        expect(await fileSrProblems(srv.emu, srB)).toEqual([]);
      } finally {
        await srv.close();
      }
      await xa.call('VM.hard_shutdown', vm);
    } finally {
      await a.close();
    }
  });
});
