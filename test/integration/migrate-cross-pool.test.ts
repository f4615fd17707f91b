// Migration to another pool between two emulators in this process, with the calls xo-server's
// migrateVm makes through the `xen-api` package (host.migrate_receive on the destination, then
// VM.assert_can_migrate and VM.migrate_send as tasks on the source): a running VM's disk arrives
// byte for byte (what the guest wrote during the copy included), the VM runs there under the same
// uuid on its mapped network, the source has neither the VM nor its disks; its checks; and a fault
// on the destination midway leaves both pools as they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { xe } from './helpers/thin-cli.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, PV_DRIVERS, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'cross-pool-test';

let a: RunningServer;
let b: RunningServer;
let xa: Client;
let xb: Client;
let xo: Xapi;
let xoB: Xapi;

const pattern = (n: number, seed: number) => {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * 13 + seed * 5 + (i >> 10)) & 0xff;
  return buf;
};

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

async function guestWrite(srv: RunningServer, session: string, vm: string, offset: number, data: Buffer): Promise<boolean> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: session, vm, device: '0', offset })}`, srv.urls[0]), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  return r.status === 200 && JSON.parse(await r.text()).status === 'OKAY';
}

/** the whole disk through /export_raw_vdi */
async function exportRaw(srv: RunningServer, session: string, vdi: string): Promise<Buffer> {
  const r = await fetch(new URL(`/export_raw_vdi?${q({ session_id: session, vdi, format: 'raw' })}`, srv.urls[0]));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

async function newVm(name: string, size = 8 * MiB, extra: Record<string, unknown> = {}) {
  const sr = await localStorage(xa);
  const vm: string = await xa.call('VM.create', vmArgs(name, { other_config: PV_DRIVERS, ...extra }));
  const vdi: string = await xa.call('VDI.create', vdiArgs(sr, size, `${name}-disk`));
  await xa.call('VBD.create', vbdArgs(vm, vdi, '0'));
  const vif: string = await xa.call('VIF.create', vifArgs(vm, await xenbr0(xa)));
  return { vm, vdi, vif };
}

beforeAll(async () => {
  ({ srv: a, x: xa } = await startPool(PASSWORD, { closeGrace: 0 }));
  ({ srv: b, x: xb } = await startPool(PASSWORD, { closeGrace: 0 }));
  xo = createClient({ url: a.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, debounce: 0 });
  xoB = createClient({ url: b.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, debounce: 0 });
  await xo.connect();
  await xoB.connect();
});

afterAll(async () => {
  await xo?.disconnect();
  await xoB?.disconnect();
  await a?.close();
  await b?.close();
});

/** xo-server's _migrateVmWithStorageMotion: the token from the destination, then the calls on the source */
async function xoMigrate(vm: string, vdiMap: Record<string, string>, vifMap: Record<string, string>): Promise<void> {
  const host = b.emu.master;
  const network = await xenbr0(xb);
  const token = await xoB.call('host.migrate_receive', host, network, {});
  const params = [vm, token, true, vdiMap, vifMap, { force: 'false' }];
  await xo.callAsync('VM.assert_can_migrate', ...params);
  await xo.callAsync('VM.migrate_send', ...params);
}

describe('VM.migrate_send to another pool', () => {
  it('moves a running VM: same uuid, running there on the mapped network, disk byte-identical, nothing left at the source', async () => {
    const { vm, vdi, vif } = await newVm('xp-live');
    await xa.call('VM.start', vm, false, false);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    const mac: string = await xa.call('VIF.get_MAC', vif);
    expect(await guestWrite(a, xa.session, vm, 0, pattern(3 * MiB, 1))).toBe(true);
    const expected = await exportRaw(a, xa.session, vdi);
    const srB = await localStorage(xb);
    const netB = await xenbr0(xb);
    const vdisBefore: string[] = await xa.call('SR.get_VDIs', await localStorage(xa));

    await xoMigrate(vm, { [vdi]: srB }, { [vif]: netB });

    // the destination: the VM under its uuid, running, its disk in the mapped SR with the same bytes
    const there: string = await xb.call('VM.get_by_uuid', uuid);
    const rec = await xb.call('VM.get_record', there);
    expect(rec).toMatchObject({ power_state: 'Running', resident_on: b.emu.master, name_label: 'xp-live' });
    const vbds: string[] = rec.VBDs;
    expect(vbds).toHaveLength(1);
    const disk: string = await xb.call('VBD.get_VDI', vbds[0]);
    expect(await xb.call('VDI.get_SR', disk)).toBe(srB);
    // no longer part of a migration (receive_finalize)
    expect(await xb.call('VDI.get_sm_config', disk)).not.toHaveProperty('base_mirror');
    expect(await xb.call('VBD.get_currently_attached', vbds[0])).toBe(true);
    const vifs: string[] = rec.VIFs;
    expect(vifs).toHaveLength(1);
    expect(await xb.call('VIF.get_record', vifs[0])).toMatchObject({ network: netB, MAC: mac, currently_attached: true });
    // the source: no VM, no disk
    expect(await faultOf(xa.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
    expect((await faultOf(xa.call('VDI.get_uuid', vdi)))[0]).toBe('HANDLE_INVALID');
    // (a base copy of the migration's snapshot may wait for SM's GC: not a disk a client sees)
    const vdisAfter: string[] = await xa.call('SR.get_VDIs', await localStorage(xa));
    for (const v of vdisAfter) if (await xa.call('VDI.get_managed', v).catch(() => false)) expect(vdisBefore.includes(v) && v !== vdi).toBe(true);
    // the guest's bytes, read back there once the VM is down
    await xb.call('VM.hard_shutdown', there);
    expect((await exportRaw(b, xb.session, disk)).equals(expected)).toBe(true);
  });

  it('carries what the guest wrote while the disk was being copied', async () => {
    const { vm, vdi, vif } = await newVm('xp-writes');
    await xa.call('VM.start', vm, false, false);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    expect(await guestWrite(a, xa.session, vm, 0, pattern(2 * MiB, 2))).toBe(true);
    // the destination holds the VM's objects (the disk has gone over): the guest writes meanwhile
    const ctlB = controlClient({ url: b.urls[0], username: 'root', password: PASSWORD });
    const rule = await ctlB.faults.create({ match: { path: '/import_metadata' }, effect: { hang: true } });
    const late = pattern(64 * 1024, 3);
    let migration: Promise<void> | undefined;
    try {
      migration = xoMigrate(vm, { [vdi]: await localStorage(xb) }, { [vif]: await xenbr0(xb) });
      let held = false;
      for (let i = 0; i < 5000 && !held; i++) held = (await ctlB.faults.get({ id: rule.id })).hanging > 0;
      expect(held).toBe(true);
      expect(await guestWrite(a, xa.session, vm, 5 * MiB, late)).toBe(true);
    } finally {
      await ctlB.faults.delete({ id: rule.id });
    }
    await migration;
    const there: string = await xb.call('VM.get_by_uuid', uuid);
    const disk: string = await xb.call('VBD.get_VDI', (await xb.call('VM.get_VBDs', there))[0]);
    await xb.call('VM.hard_shutdown', there);
    const bytes = await exportRaw(b, xb.session, disk);
    expect(bytes.subarray(0, 2 * MiB).equals(pattern(2 * MiB, 2))).toBe(true);
    expect(bytes.subarray(5 * MiB, 5 * MiB + late.length).equals(late)).toBe(true);
  });

  it("gives xapi's errors: unmapped VIF, disabled host, copy of a running VM", async () => {
    const { vm, vdi, vif } = await newVm('xp-checks', 4 * MiB);
    await xa.call('VM.start', vm, false, false);
    const srB = await localStorage(xb);
    const token = await xb.call('host.migrate_receive', b.emu.master, await xenbr0(xb), {});
    expect(await faultOf(xa.call('VM.assert_can_migrate', vm, token, true, { [vdi]: srB }, {}, {}))).toEqual(['VIF_NOT_IN_MAP', vif]);
    const vifMap = { [vif]: await xenbr0(xb) };
    expect(await faultOf(xa.call('VM.assert_can_migrate', vm, token, true, { [vdi]: srB }, vifMap, { copy: 'true' }))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    await xb.call('host.disable', b.emu.master);
    try {
      expect(await faultOf(xa.call('VM.assert_can_migrate', vm, token, true, { [vdi]: srB }, vifMap, {}))).toEqual(['HOST_DISABLED', b.emu.master]);
    } finally {
      await xb.call('host.enable', b.emu.master);
    }
    await xa.call('VM.assert_can_migrate', vm, token, true, { [vdi]: srB }, vifMap, {});
    await xa.call('VM.hard_shutdown', vm);
  });

  it('a fault on the destination midway: the task fails with it, the VM still running complete at the source, nothing left there', async () => {
    const { vm, vdi, vif } = await newVm('xp-fault', 4 * MiB);
    await xa.call('VM.start', vm, false, false);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    expect(await guestWrite(a, xa.session, vm, 4096, pattern(MiB, 4))).toBe(true);
    const srB = await localStorage(xb);
    const vdisB = (await xb.call('SR.get_VDIs', srB)).sort();
    const vmsB = (await xb.call('VM.get_all')).sort();
    const ctlB = controlClient({ url: b.urls[0], username: 'root', password: PASSWORD });
    // the disk went over; the VM's objects fail to arrive
    await ctlB.faults.create({ match: { path: '/import_metadata' }, effect: { error: { code: 'SR_FULL', params: ['1', '2'] } } });
    try {
      const token = await xoB.call('host.migrate_receive', b.emu.master, await xenbr0(xb), {});
      const err = await xo.callAsync('VM.migrate_send', vm, token, true, { [vdi]: srB }, { [vif]: await xenbr0(xb) }, {}).then(() => null, (e: any) => e);
      expect(err?.code).toBe('SR_FULL');
    } finally {
      await ctlB.faults.clear();
    }
    expect(await xa.call('VM.get_record', vm)).toMatchObject({ power_state: 'Running', current_operations: {} });
    expect(await xa.call('VBD.get_VDI', (await xa.call('VM.get_VBDs', vm))[0])).toBe(vdi);
    expect(await guestWrite(a, xa.session, vm, 0, Buffer.from('still writable'))).toBe(true);
    expect((await xb.call('SR.get_VDIs', srB)).sort()).toEqual(vdisB);
    expect((await xb.call('VM.get_all')).sort()).toEqual(vmsB);
    expect(await faultOf(xb.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
    await xa.call('VM.hard_shutdown', vm);
    const bytes = await exportRaw(a, xa.session, vdi);
    expect(bytes.subarray(4096, 4096 + MiB).equals(pattern(MiB, 4))).toBe(true);
  });

  it("xe vm-migrate with remote-master: xapi's CLI steps (remote login, host, network, token), the VM there with its disk", async () => {
    const { vm, vdi, vif } = await newVm('xp-cli', 4 * MiB);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    const srB = await localStorage(xb);
    const srUuid: string = await xb.call('SR.get_uuid', srB);
    const netB = await xenbr0(xb);
    const port = new URL(b.urls[0]).port;
    const vdiUuid: string = await xa.call('VDI.get_uuid', vdi);
    const r = await xe(a.urls[0], [
      'vm-migrate', `uuid=${uuid}`, `remote-master=127.0.0.1:${port}`, 'remote-username=root', `remote-password=${PASSWORD}`,
      `vdi:${vdiUuid}=${srUuid}`, `vif:${await xa.call('VIF.get_uuid', vif)}=${await xb.call('network.get_uuid', netB)}`,
    ], { username: 'root', password: PASSWORD });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const hostLabel: string = await xb.call('host.get_name_label', b.emu.master);
    const netLabel: string = await xb.call('network.get_name_label', netB);
    expect(r.stdout).toBe([
      "Performing a storage live migration. Your VM's VDIs will be migrated with the VM.",
      `Will migrate to remote host: ${hostLabel}, using remote network: ${netLabel}. Here is the VDI mapping:`,
      `VDI ${vdiUuid} -> SR ${srUuid}`,
      '',
    ].join('\n'));
    const there: string = await xb.call('VM.get_by_uuid', uuid);
    expect(await xb.call('VM.get_power_state', there)).toBe('Halted');
    const disk: string = await xb.call('VBD.get_VDI', (await xb.call('VM.get_VBDs', there))[0]);
    expect(await xb.call('VDI.get_SR', disk)).toBe(srB);
    expect(await faultOf(xa.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
  });

  it("moves a running VM with snapshots, its disk alone in the map (as Xen Orchestra sends it): the snapshots there, their disks copies of theirs, snapshots of the VM's disk", async () => {
    const { vm, vdi, vif } = await newVm('xp-snaps', 4 * MiB);
    await xa.call('VM.start', vm, false, false);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    const snaps: { uuid: string; name: string; vdi: string; bytes: Buffer }[] = [];
    for (const [i, name] of ['before', 'after'].entries()) {
      expect(await guestWrite(a, xa.session, vm, i * MiB, pattern(MiB, 10 + i))).toBe(true);
      const s: string = await xa.call('VM.snapshot', vm, name);
      const sv: string = await xa.call('VBD.get_VDI', (await xa.call('VM.get_VBDs', s))[0]);
      snaps.push({ uuid: await xa.call('VM.get_uuid', s), name, vdi: sv, bytes: await exportRaw(a, xa.session, sv) });
    }
    expect(await guestWrite(a, xa.session, vm, 2 * MiB, pattern(MiB, 12))).toBe(true);
    const expected = await exportRaw(a, xa.session, vdi);
    const srB = await localStorage(xb);
    const netB = await xenbr0(xb);

    await xoMigrate(vm, { [vdi]: srB }, { [vif]: netB });

    const there: string = await xb.call('VM.get_by_uuid', uuid);
    expect(await xb.call('VM.get_power_state', there)).toBe('Running');
    const disk: string = await xb.call('VBD.get_VDI', (await xb.call('VM.get_VBDs', there))[0]);
    const thereSnaps: string[] = await xb.call('VM.get_snapshots', there);
    expect(thereSnaps).toHaveLength(2);
    for (const s of snaps) {
      const ref: string = await xb.call('VM.get_by_uuid', s.uuid);
      expect(thereSnaps).toContain(ref);
      expect(await xb.call('VM.get_record', ref)).toMatchObject({ is_a_snapshot: true, snapshot_of: there, name_label: s.name });
      const vifs: string[] = await xb.call('VM.get_VIFs', ref);
      expect(vifs).toHaveLength(1);
      expect(await xb.call('VIF.get_network', vifs[0])).toBe(netB);
      const sv: string = await xb.call('VBD.get_VDI', (await xb.call('VM.get_VBDs', ref))[0]);
      expect(await xb.call('VDI.get_record', sv)).toMatchObject({ is_a_snapshot: true, snapshot_of: disk, SR: srB });
      expect((await exportRaw(b, xb.session, sv)).equals(s.bytes)).toBe(true);
      // the source has neither the snapshot nor its disk
      expect(await faultOf(xa.call('VM.get_by_uuid', s.uuid))).toEqual(['UUID_INVALID', 'VM', s.uuid]);
      expect((await faultOf(xa.call('VDI.get_uuid', s.vdi)))[0]).toBe('HANDLE_INVALID');
    }
    expect(await faultOf(xa.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
    await xb.call('VM.hard_shutdown', there);
    expect((await exportRaw(b, xb.session, disk)).equals(expected)).toBe(true);
  });

  it('moves a suspended VM: its suspend image copied, the VM suspended there and resumable, nothing left at the source', async () => {
    // (a small memory: a small suspend image)
    const { vm, vdi, vif } = await newVm('xp-suspended', 4 * MiB, memory(64 * MiB));
    await xa.call('VM.start', vm, false, false);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    expect(await guestWrite(a, xa.session, vm, 0, pattern(2 * MiB, 20))).toBe(true);
    await xa.call('VM.suspend', vm);
    const image: string = await xa.call('VM.get_suspend_VDI', vm);
    const imageBytes = await exportRaw(a, xa.session, image);
    const expected = await exportRaw(a, xa.session, vdi);
    const srB = await localStorage(xb);

    await xoMigrate(vm, { [vdi]: srB }, { [vif]: await xenbr0(xb) });

    const there: string = await xb.call('VM.get_by_uuid', uuid);
    expect(await xb.call('VM.get_power_state', there)).toBe('Suspended');
    const imageThere: string = await xb.call('VM.get_suspend_VDI', there);
    expect((await exportRaw(b, xb.session, imageThere)).equals(imageBytes)).toBe(true);
    expect(await faultOf(xa.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
    expect((await faultOf(xa.call('VDI.get_uuid', image)))[0]).toBe('HANDLE_INVALID');
    expect(a.emu.hosts.some((h) => xenopsOf(a.emu, h).has(uuid))).toBe(false);
    await xb.call('VM.resume', there, false, false);
    expect(await xb.call('VM.get_power_state', there)).toBe('Running');
    expect(await guestWrite(b, xb.session, there, 3 * MiB, Buffer.from('resumed there'))).toBe(true);
    await xb.call('VM.hard_shutdown', there);
    const bytes = await exportRaw(b, xb.session, await xb.call('VBD.get_VDI', (await xb.call('VM.get_VBDs', there))[0]));
    expect(bytes.subarray(0, 2 * MiB).equals(expected.subarray(0, 2 * MiB))).toBe(true);
  });

  it('cancelled while the destination takes the VM: the task ends cancelled, the VM running complete at the source, nothing left there', async () => {
    const { vm, vdi, vif } = await newVm('xp-cancel', 4 * MiB);
    await xa.call('VM.start', vm, false, false);
    const uuid: string = await xa.call('VM.get_uuid', vm);
    expect(await guestWrite(a, xa.session, vm, 0, pattern(MiB, 30))).toBe(true);
    const srB = await localStorage(xb);
    const vdisB = (await xb.call('SR.get_VDIs', srB)).sort();
    const ctlB = controlClient({ url: b.urls[0], username: 'root', password: PASSWORD });
    const rule = await ctlB.faults.create({ match: { path: '/import_metadata' }, effect: { hang: true } });
    let task = '';
    try {
      const token = await xb.call('host.migrate_receive', b.emu.master, await xenbr0(xb), {});
      task = await xa.call('Async.VM.migrate_send', vm, token, true, { [vdi]: srB }, { [vif]: await xenbr0(xb) }, {});
      let held = false;
      for (let i = 0; i < 5000 && !held; i++) held = (await ctlB.faults.get({ id: rule.id })).hanging > 0;
      expect(held).toBe(true);
      await xa.call('task.cancel', task);
    } finally {
      await ctlB.faults.delete({ id: rule.id });
    }
    let t = await xa.call('task.get_record', task);
    for (let i = 0; i < 5000 && t.status === 'pending'; i++) t = await xa.call('task.get_record', task);
    expect(t).toMatchObject({ status: 'cancelled', error_info: ['TASK_CANCELLED', task] });
    expect(await xa.call('VM.get_record', vm)).toMatchObject({ power_state: 'Running', current_operations: {} });
    expect(await xa.call('VBD.get_VDI', (await xa.call('VM.get_VBDs', vm))[0])).toBe(vdi);
    expect(await guestWrite(a, xa.session, vm, 2 * MiB, Buffer.from('still mine'))).toBe(true);
    expect(await faultOf(xb.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
    expect((await xb.call('SR.get_VDIs', srB)).sort()).toEqual(vdisB);
    await xa.call('VM.hard_shutdown', vm);
    expect((await exportRaw(a, xa.session, vdi)).subarray(0, MiB).equals(pattern(MiB, 30))).toBe(true);
  });

  it("the token's storage URL (/services/SM): a session needed, its one call checked, other calls Unimplemented", async () => {
    const token = await xb.call('host.migrate_receive', b.emu.master, await xenbr0(xb), {});
    const post = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const sm = new URL(token.SM);
    sm.host = new URL(b.urls[0]).host;
    const noSession = new URL(sm);
    noSession.search = '';
    expect((await post(noSession.href, { method: 'SR.update_snapshot_info_dest', params: [{}], id: 1 })).status).toBe(401);
    expect(await (await post(sm.href, { method: 'VDI.destroy', params: [{}], id: 2 })).json()).toEqual({ error: ['Unimplemented', 'VDI.destroy'], id: 2 });
    expect(await (await post(sm.href, { method: 'SR.update_snapshot_info_dest', params: [{ sr: 'nope' }], id: 3 })).json()).toEqual({ error: ['Internal_error', 'bad arguments'], id: 3 });
    const srUuid: string = await xb.call('SR.get_uuid', await localStorage(xb));
    const args = { dbg: '', sr: srUuid, vdi: 'no-such-location', src_vdi: {}, snapshot_pairs: [] };
    expect(await (await post(sm.href, { method: 'SR.update_snapshot_info_dest', params: [args], id: 4 })).json()).toEqual({ error: ['Vdi_does_not_exist', 'no-such-location'], id: 4 });
    expect((await post(sm.href, 'not a call')).status).toBe(400);
  });
});
