// Storage and live migration within a pool over JSON-RPC against a real 2-host server:
// host.migrate_receive's token, VM.assert_can_migrate's errors, VM.migrate_send with and without
// disks changing SR (live: the disks mirrored, the guest writing through its datapath during the
// copy), and VDI.pool_migrate of a running VM's disk under guest writes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';
import { controlClient } from '../../server/control/client.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, NULL, PV_DRIVERS, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'migrate-test';

let srv: RunningServer;
let x: Client;
let url: string;
let hosts: string[];
let shared: string;
let network: string;
/** each host's local SR */
let local: string[];

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);

async function newVm(name: string, sr: string, size = 16 * MiB) {
  const vm: string = await x.call('VM.create', vmArgs(name, { other_config: PV_DRIVERS }));
  const vdi: string = await x.call('VDI.create', vdiArgs(sr, size, `${name}-disk`));
  const vbd: string = await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  const vif: string = await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vdi, vbd, vif };
}

/** the VDIs of an SR a client sees (not the base copies SM's GC will coalesce) */
async function managedVdis(sr: string): Promise<string[]> {
  const out: string[] = [];
  // (a base copy the GC deletes meanwhile is not one)
  for (const v of (await x.call('SR.get_VDIs', sr)) as string[]) if (await x.call('VDI.get_managed', v).catch(() => false)) out.push(v);
  return out.sort();
}

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

/** a write through the guest's datapath: true when the guest got OKAY */
async function guestWrite(vm: string, offset: number, data: Buffer): Promise<boolean> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset })}`, url), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  const body = await r.text();
  return r.status === 200 && JSON.parse(body).status === 'OKAY';
}

async function guestRead(vm: string, offset: number, length: number): Promise<Buffer> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset, length })}`, url));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

/** a deterministic pattern of bytes */
const pattern = (n: number, seed: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
};

const tick = () => new Promise((r) => setImmediate(r));

/**
 * Runs an async task with the clock frozen, the guest writing while the clock moves in small
 * steps, until the task ends. Every write the guest saw succeed is applied to `shadow`. Returns the
 * task's record, the writes acknowledged, and those acknowledged while the disks were being copied.
 */
async function underGuestWrites(task: string, vm: string, shadow: Buffer, seed: number): Promise<{ rec: any; acked: number; duringCopy: number }> {
  const clock = srv.emu.clock;
  let acked = 0;
  let duringCopy = 0;
  try {
    for (let i = 0; i < 2000; i++) {
      const t = await rec('task', task);
      if (t.status !== 'pending') return { rec: t, acked, duringCopy };
      // a write of a few KiB somewhere on the disk, some at unaligned offsets
      const off = ((i * 2654435761 + seed * 40503) % (shadow.length - 8192)) & ~(i % 3 === 0 ? 0 : 511);
      const data = pattern(512 + ((i * 977) % 7000), seed + i);
      let settled = false;
      const w = guestWrite(vm, off, data).finally(() => (settled = true));
      // the write may wait for SM (a snapshot pauses the disk): simulated time moves meanwhile
      while (!settled) {
        clock.advance(0.0005);
        await tick();
      }
      if (await w) {
        data.copy(shadow, off);
        acked++;
        if (t.progress > 0 && t.progress < 0.9) duringCopy++;
      }
    }
    throw new Error('the task did not end');
  } finally {
    clock.unfreeze();
  }
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 }));
  url = srv.urls[0];
  hosts = srv.emu.hosts;
  network = await xenbr0(x);
  shared = await createSharedSr(x, srv, hosts[0]);
  local = [];
  for (const h of hosts) {
    const pbds: string[] = await x.call('host.get_PBDs', h);
    for (const p of pbds) {
      const sr: string = await x.call('PBD.get_SR', p);
      if ((await x.call('SR.get_name_label', sr)) === 'Local storage') local.push(sr);
    }
  }
  expect(local).toHaveLength(2);
});

afterAll(async () => {
  await srv?.close();
});

describe('host.migrate_receive', () => {
  it('answers the token: SM and xenops URLs of the host with a new session, the master URL, the host', async () => {
    const token: Record<string, string> = await x.call('host.migrate_receive', hosts[1], network, {});
    expect(Object.keys(token).sort()).toEqual(['SM', 'host', 'master', 'session_id', 'xenops']);
    expect(token.host).toBe(hosts[1]);
    const port = new URL(url).port;
    const pifs: string[] = await x.call('network.get_PIFs', network);
    let ip = '';
    for (const p of pifs) if ((await x.call('PIF.get_host', p)) === hosts[1]) ip = await x.call('PIF.get_IP', p);
    expect(ip).not.toBe('');
    expect(token.SM).toBe(`http://${ip}:${port}/services/SM?session_id=${token.session_id}`);
    expect(token.xenops).toBe(`http://${ip}:${port}/services/xenops?session_id=${token.session_id}`);
    const masterAddress: string = await x.call('host.get_address', hosts[0]);
    expect(token.master).toBe(`http://${masterAddress}:${port}`);
    // the session is a real one, of the caller's user, on the destination host
    const s = await rec('session', token.session_id);
    expect(s).toMatchObject({ this_host: hosts[1], is_local_superuser: true, auth_user_name: 'root' });
    expect(token.session_id).not.toBe(x.session);
  });

  it('refuses a network the host has no PIF on, and refs that name nothing', async () => {
    const lonely: string = await x.call('network.create', { name_label: 'no-pif', name_description: '', MTU: 1500, other_config: {}, bridge: '', managed: true, tags: [] });
    expect(await faultOf(x.call('host.migrate_receive', hosts[1], lonely, {}))).toEqual(['HOST_CANNOT_ATTACH_NETWORK', hosts[1], lonely]);
    expect((await faultOf(x.call('host.migrate_receive', 'OpaqueRef:nope', network, {})))[0]).toBe('HANDLE_INVALID');
  });
});

describe('VM.assert_can_migrate', () => {
  it("gives xapi's errors: unmapped disks, VIF map within a pool, unseen SRs, CBT, disabled host, bad tokens", async () => {
    const { vm, vdi, vif } = await newVm('acm', local[0]);
    const token = await x.call('host.migrate_receive', hosts[1], network, {});
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, token, true, {}, {}, {}))).toEqual(['VDI_NOT_IN_MAP', vdi]);
    // the disk staying on host 0's local SR: host 1 does not see it
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, token, true, { [vdi]: local[0] }, {}, {}))).toEqual(['VM_REQUIRES_SR', vm, local[0]]);
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, token, true, { [vdi]: local[1] }, { [vif]: network }, {}))).toEqual([
      'OPERATION_NOT_ALLOWED', 'VIF mapping is not allowed for intra-pool migration -all VIFs must be on the same network',
    ]);
    await x.call('VM.assert_can_migrate', vm, token, true, { [vdi]: local[1] }, {}, {});
    await x.call('VM.assert_can_migrate_sender', vm, token, true, { [vdi]: local[1] }, {}, {}, {});
    // a disk with changed block tracking cannot move (it can stay)
    await x.call('VDI.enable_cbt', vdi);
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, token, true, { [vdi]: local[1] }, {}, {}))).toEqual(['VDI_CBT_ENABLED', vdi]);
    await x.call('VDI.disable_cbt', vdi);
    await x.call('host.disable', hosts[1]);
    try {
      expect(await faultOf(x.call('VM.assert_can_migrate', vm, token, true, { [vdi]: local[1] }, {}, {}))).toEqual(['HOST_DISABLED', hosts[1]]);
    } finally {
      await x.call('host.enable', hosts[1]);
    }
    const { SM: _sm, ...partial } = token;
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, partial, true, { [vdi]: local[1] }, {}, {}))).toEqual(['INTERNAL_ERROR', 'Not_found']);
    // a host this pool does not know is another pool's: its master is asked, and knows no such host
    const foreign = { ...token, host: 'OpaqueRef:4b1c7e2a-0000-4000-8000-000000000001' };
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, foreign, true, { [vdi]: local[1] }, {}, {}))).toEqual(['HANDLE_INVALID', 'host', foreign.host]);
    await x.call('VM.destroy', vm);
    await x.call('VDI.destroy', vdi);
  });

  it('refuses an SR whose driver cannot mirror', async () => {
    const { vm, vdi } = await newVm('acm-iso', local[0]);
    const isoSr = Object.keys(await x.call('SR.get_all_records_where', 'field "type" = "iso"'))[0];
    expect(isoSr).toBeDefined();
    const token = await x.call('host.migrate_receive', hosts[0], network, {});
    const features: Record<string, number> = (Object.values(await x.call('SM.get_all_records_where', 'field "type" = "iso"')) as any[])[0].features;
    // an SR that mirrors out takes a mirror in
    const missing = ['VDI_SNAPSHOT', 'VDI_MIRROR_IN'].filter((f) => !(f in features) && !(f === 'VDI_MIRROR_IN' && 'VDI_MIRROR' in features));
    expect(missing.length).toBeGreaterThan(0);
    expect(await faultOf(x.call('VM.assert_can_migrate', vm, token, true, { [vdi]: isoSr }, {}, {}))).toEqual(['SR_DOES_NOT_SUPPORT_MIGRATION', isoSr, missing.join(';')]);
    await x.call('VM.destroy', vm);
    await x.call('VDI.destroy', vdi);
  });
});

describe('VM.migrate_send within the pool', () => {
  it('moves a running VM on a shared SR to another host: same disks, VM_MIGRATED, task progress', async () => {
    const { vm, vdi, vbd, vif } = await newVm('ms-shared', shared);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const uuid: string = await x.call('VM.get_uuid', vm);
    await xenopsOf(srv.emu, hosts[0]).tapdisk(uuid, 'hda')!.write(8192, Buffer.from('before the move'));
    const token = await x.call('host.migrate_receive', hosts[1], network, {});
    const task: string = await x.call('Async.VM.migrate_send', vm, token, true, { [vdi]: shared }, {}, {});
    const t = await waitTask(task);
    expect(t.status).toBe('success');
    expect(t.progress).toBe(1);
    expect(t.result).toContain(vm);
    const after = await rec('VM', vm);
    expect(after).toMatchObject({ power_state: 'Running', resident_on: hosts[1], current_operations: {}, scheduled_to_be_resident_on: NULL });
    expect(after.allowed_operations).toContain('migrate_send');
    expect(await x.call('VBD.get_VDI', vbd)).toBe(vdi);
    expect(await rec('VBD', vbd)).toMatchObject({ currently_attached: true });
    expect(await x.call('VIF.get_currently_attached', vif)).toBe(true);
    expect(xenopsOf(srv.emu, hosts[0]).has(uuid)).toBe(false);
    expect((await xenopsOf(srv.emu, hosts[1]).tapdisk(uuid, 'hda')!.read(8192, 15)).toString()).toBe('before the move');
    const msgs = Object.values(await x.call('message.get_all_records')) as any[];
    const m = msgs.find((x) => x.name === 'VM_MIGRATED' && x.obj_uuid === uuid);
    expect(m?.body).toMatch(/migrated from host '.*' \(uuid: .*\) to host '.*' \(uuid: .*\)$/);
    await x.call('VM.hard_shutdown', vm);
  });

  it('moves a running VM and its disk to the other host\'s local SR while the guest writes: every write survives', async () => {
    const { vm, vdi, vbd } = await newVm('ms-sxm', local[0]);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const uuid: string = await x.call('VM.get_uuid', vm);
    const oldUuid: string = await x.call('VDI.get_uuid', vdi);
    const shadow = Buffer.alloc(16 * MiB);
    // data in every 2 MiB block, so that the copy takes several clock steps
    for (let b = 0; b < 8; b++) {
      const data = pattern(64 * 1024, 100 + b);
      expect(await guestWrite(vm, b * 2 * MiB + 4096, data)).toBe(true);
      data.copy(shadow, b * 2 * MiB + 4096);
    }
    const token = await x.call('host.migrate_receive', hosts[1], network, {});
    srv.emu.clock.freeze();
    const task: string = await x.call('Async.VM.migrate_send', vm, token, true, { [vdi]: local[1] }, {}, {});
    const { rec: t, acked, duringCopy } = await underGuestWrites(task, vm, shadow, 1);
    expect(t.status).toBe('success');
    expect(acked).toBeGreaterThan(3);
    expect(duringCopy).toBeGreaterThan(0);
    const after = await rec('VM', vm);
    expect(after).toMatchObject({ power_state: 'Running', resident_on: hosts[1] });
    // the VBD is on a new VDI in the destination SR; the old one is gone
    const moved: string = await x.call('VBD.get_VDI', vbd);
    expect(moved).not.toBe(vdi);
    expect(await x.call('VDI.get_SR', moved)).toBe(local[1]);
    expect(await faultOf(x.call('VDI.get_uuid', vdi))).toEqual(['HANDLE_INVALID', 'VDI', vdi]);
    const srVdis: string[] = await x.call('SR.get_VDIs', local[0]);
    for (const v of srVdis) expect(await x.call('VDI.get_uuid', v)).not.toBe(oldUuid);
    // no snapshot of the mirror is left behind
    const left = (Object.values(await x.call('VDI.get_all_records')) as any[]).filter((v) => v.sm_config?.base_mirror);
    expect(left).toEqual([]);
    // the tapdisk on host 1 serves the new VDI, and the guest reads back every acknowledged write
    const tap = xenopsOf(srv.emu, hosts[1]).tapdisk(uuid, 'hda')!;
    expect(tap.vdi).toBe(await x.call('VDI.get_uuid', moved));
    expect((await guestRead(vm, 0, 16 * MiB)).equals(shadow)).toBe(true);
    await x.call('VM.hard_shutdown', vm);
  });

  it('moves a halted VM\'s disk and its snapshot\'s disk to another SR', async () => {
    const { vm, vdi, vbd } = await newVm('ms-halted', local[0], 4 * MiB);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    expect(await guestWrite(vm, 1024, Buffer.from('kept by the snapshot'))).toBe(true);
    await x.call('VM.hard_shutdown', vm);
    const snap: string = await x.call('VM.snapshot', vm, 'snap');
    const snapVbd: string = (await x.call('VM.get_VBDs', snap))[0];
    const snapVdi: string = await x.call('VBD.get_VDI', snapVbd);
    const token = await x.call('host.migrate_receive', hosts[0], network, {});
    const res: string = await x.call('VM.migrate_send', vm, token, false, { [vdi]: shared }, {}, {});
    expect(res).toBe(vm);
    const moved: string = await x.call('VBD.get_VDI', vbd);
    expect(await x.call('VDI.get_SR', moved)).toBe(shared);
    const snapMoved: string = await x.call('VBD.get_VDI', snapVbd);
    expect(snapMoved).not.toBe(snapVdi);
    expect(await rec('VDI', snapMoved)).toMatchObject({ SR: shared, is_a_snapshot: true, snapshot_of: moved });
    expect((await faultOf(x.call('VDI.get_uuid', snapVdi)))[0]).toBe('HANDLE_INVALID');
    // the snapshot's data came along
    await x.call('VM.start_on', vm, hosts[1], false, false);
    expect((await guestRead(vm, 1024, 20)).toString()).toBe('kept by the snapshot');
    await x.call('VM.hard_shutdown', vm);
    expect(await x.call('VM.get_allowed_operations', vm)).toContain('migrate_send');
  });

  it('refuses copy mode within a pool, and a disk on on_boot=reset', async () => {
    const { vm, vdi } = await newVm('ms-copy', local[0], 4 * MiB);
    const token = await x.call('host.migrate_receive', hosts[1], network, {});
    expect((await faultOf(x.call('VM.migrate_send', vm, token, false, { [vdi]: local[1] }, {}, { copy: 'true' })))[0]).toBe('OPERATION_NOT_ALLOWED');
    await x.call('VDI.set_on_boot', vdi, 'reset');
    expect(await faultOf(x.call('VM.migrate_send', vm, token, false, { [vdi]: local[1] }, {}, {}))).toEqual(['VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', vdi]);
    expect(await x.call('VM.get_current_operations', vm)).toEqual({});
  });
});

describe('Python XenAPI (XML-RPC)', () => {
  // the calls of a storage migration script: migrate_receive, assert_can_migrate, migrate_send
  const SCRIPT = `
import json, sys
sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')
import XenAPI
url, password, vm, vdi, sr, host, network = sys.argv[1:]
s = XenAPI.Session(url)
s.xenapi.login_with_password('root', password, '2.21', 'migrate-test')
try:
    token = s.xenapi.host.migrate_receive(host, network, {})
    try:
        s.xenapi.VM.assert_can_migrate(vm, token, True, {}, {}, {})
        unmapped = None
    except XenAPI.Failure as f:
        unmapped = f.details
    s.xenapi.VM.assert_can_migrate(vm, token, True, {vdi: sr}, {}, {})
    result = s.xenapi.VM.migrate_send(vm, token, True, {vdi: sr}, {}, {})
    print(json.dumps({'token': sorted(token.keys()), 'unmapped': unmapped, 'result': result}))
finally:
    s.xenapi.session.logout()
`;

  it('moves a running VM and its disk to the other host', async () => {
    const { vm, vdi, vbd } = await newVm('py-sxm', local[0], 4 * MiB);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    expect(await guestWrite(vm, 512, Buffer.from('from python'))).toBe(true);
    const { stdout } = await promisify(execFile)('/usr/bin/python3', ['-c', SCRIPT, url, PASSWORD, vm, vdi, local[1], hosts[1], network], {
      timeout: 60_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
    });
    const out = JSON.parse(stdout);
    expect(out).toEqual({ token: ['SM', 'host', 'master', 'session_id', 'xenops'], unmapped: ['VDI_NOT_IN_MAP', vdi], result: vm });
    expect(await x.call('VM.get_resident_on', vm)).toBe(hosts[1]);
    expect(await x.call('VDI.get_SR', await x.call('VBD.get_VDI', vbd))).toBe(local[1]);
    expect((await guestRead(vm, 512, 11)).toString()).toBe('from python');
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('a migration failing midway', () => {
  it('a datapath fault during the copy: MIRROR_FAILED, the VM still running on its complete disk, nothing left on the destination', async () => {
    const ctl = controlClient({ url, username: 'root', password: PASSWORD });
    const { vm, vdi, vbd } = await newVm('ms-fault', local[0]);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const uuid: string = await x.call('VM.get_uuid', vm);
    const data = pattern(6 * MiB, 9);
    expect(await guestWrite(vm, 0, data)).toBe(true);
    const destBefore = await managedVdis(local[1]);
    const srcBefore = await managedVdis(local[0]);
    const token = await x.call('host.migrate_receive', hosts[1], network, {});
    // the disk's datapath fails after 3 MiB more: midway through the copy
    const rule = await ctl.faults.create({ match: { vdi: await x.call('VDI.get_uuid', vdi) }, effect: { io_error_after: 3 * MiB } });
    try {
      const task: string = await x.call('Async.VM.migrate_send', vm, token, true, { [vdi]: local[1] }, {}, {});
      const t = await waitTask(task);
      expect(t.status).toBe('failure');
      expect(t.error_info).toEqual(['MIRROR_FAILED', vdi]);
    } finally {
      await ctl.faults.delete({ id: rule.id });
    }
    const after = await rec('VM', vm);
    expect(after).toMatchObject({ power_state: 'Running', resident_on: hosts[0], current_operations: {}, scheduled_to_be_resident_on: NULL });
    expect(await x.call('VBD.get_VDI', vbd)).toBe(vdi);
    expect(await managedVdis(local[1])).toEqual(destBefore);
    expect(await managedVdis(local[0])).toEqual(srcBefore);
    const tap = xenopsOf(srv.emu, hosts[0]).tapdisk(uuid, 'hda')!;
    expect(tap.mirror).toBeNull();
    expect((await guestRead(vm, 0, data.length)).equals(data)).toBe(true);
    // the same migration goes through once the fault is gone
    await x.call('VM.migrate_send', vm, token, true, { [vdi]: local[1] }, {}, {});
    expect(await x.call('VM.get_resident_on', vm)).toBe(hosts[1]);
    expect((await guestRead(vm, 0, data.length)).equals(data)).toBe(true);
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('VDI.pool_migrate', () => {
  it('moves an attached disk of a running VM to another SR under guest writes, the VM staying on its host', async () => {
    const { vm, vdi, vbd } = await newVm('pm-live', local[0]);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const uuid: string = await x.call('VM.get_uuid', vm);
    const domid = await x.call('VM.get_domid', vm);
    const shadow = Buffer.alloc(16 * MiB);
    for (let b = 0; b < 8; b++) {
      const data = pattern(32 * 1024, 200 + b);
      expect(await guestWrite(vm, b * 2 * MiB, data)).toBe(true);
      data.copy(shadow, b * 2 * MiB);
    }
    srv.emu.clock.freeze();
    const task: string = await x.call('Async.VDI.pool_migrate', vdi, shared, {});
    const { rec: t, acked, duringCopy } = await underGuestWrites(task, vm, shadow, 2);
    expect(t.status).toBe('success');
    expect(acked).toBeGreaterThan(3);
    expect(duringCopy).toBeGreaterThan(0);
    const moved: string = await x.call('VBD.get_VDI', vbd);
    expect(t.result).toContain(moved);
    expect(await x.call('VDI.get_SR', moved)).toBe(shared);
    // no longer part of a migration (receive_finalize)
    expect(await x.call('VDI.get_sm_config', moved)).not.toHaveProperty('base_mirror');
    expect((await faultOf(x.call('VDI.get_SR', vdi)))[0]).toBe('HANDLE_INVALID');
    const after = await rec('VM', vm);
    expect(after).toMatchObject({ power_state: 'Running', resident_on: hosts[0], current_operations: {} });
    expect(after.domid).not.toBe(domid);
    expect(xenopsOf(srv.emu, hosts[0]).tapdisk(uuid, 'hda')!.vdi).toBe(await x.call('VDI.get_uuid', moved));
    expect((await guestRead(vm, 0, 16 * MiB)).equals(shadow)).toBe(true);
    await x.call('VM.hard_shutdown', vm);
  });

  it("gives xapi's errors: no VM, CBT, cbt_metadata", async () => {
    const lone: string = await x.call('VDI.create', vdiArgs(local[0], MiB, 'lone'));
    expect(await faultOf(x.call('VDI.pool_migrate', lone, shared, {}))).toEqual(['VDI_NEEDS_VM_FOR_MIGRATE', lone]);
    const { vdi } = await newVm('pm-cbt', local[0], 4 * MiB);
    await x.call('VDI.enable_cbt', vdi);
    expect(await faultOf(x.call('VDI.pool_migrate', vdi, shared, {}))).toEqual(['VDI_CBT_ENABLED', vdi]);
  });
});

async function waitTask(task: string): Promise<any> {
  let token = '';
  for (;;) {
    const t = await rec('task', task);
    if (t.status !== 'pending') return t;
    token = (await x.call('event.from', [`task/${task}`], token, 5)).token;
  }
}

describe('a migration cancelled', () => {
  it('VDI.pool_migrate cancelled during the copy: the task ends cancelled, the VM running on its disk, nothing left on the destination', async () => {
    const { vm, vdi, vbd } = await newVm('pm-cancel', local[0]);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const data = pattern(2 * MiB, 60);
    expect(await guestWrite(vm, MiB, data)).toBe(true);
    const before = await managedVdis(shared);
    const clock = srv.emu.clock;
    clock.freeze();
    let task = '';
    try {
      task = await x.call('Async.VDI.pool_migrate', vdi, shared, {});
      // the copy has begun: the destination VDI is there
      let copying = false;
      for (let i = 0; i < 5000 && !copying; i++) copying = (await managedVdis(shared)).length > before.length;
      expect(copying).toBe(true);
      expect(await x.call('task.get_allowed_operations', task)).toContain('cancel');
      await x.call('task.cancel', task);
    } finally {
      clock.unfreeze();
    }
    let t = await rec('task', task);
    for (let i = 0; i < 5000 && t.status === 'pending'; i++) t = await rec('task', task);
    expect(t).toMatchObject({ status: 'cancelled', error_info: ['TASK_CANCELLED', task] });
    expect(await rec('VM', vm)).toMatchObject({ power_state: 'Running', resident_on: hosts[0], current_operations: {} });
    expect(await x.call('VBD.get_VDI', vbd)).toBe(vdi);
    expect(await managedVdis(shared)).toEqual(before);
    expect((await guestRead(vm, MiB, 2 * MiB)).equals(data)).toBe(true);
    await x.call('VM.hard_shutdown', vm);
  });
});
