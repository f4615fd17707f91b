// Pool operations on a 3-host emulated pool, over JSON-RPC against a real server: VM.pool_migrate
// (the domain moves between the hosts' xenopsds with its disks), host evacuation, host reboot,
// VBD.insert / eject of CD drives, and 50 clients racing lifecycle operations on a few VMs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renameSync } from 'node:fs';
import type { RunningServer } from '../../server/app.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';
import { vdiPath } from '../../server/sm/index.js';
import { model } from '../../schema/index.js';
import { connectKeepAlive, faultOf, XapiFault, type Client, type KeepAliveClient } from './helpers/jsonrpc.js';
import { createSharedSr, startPool, xenbr0 } from './helpers/pool.js';
import { GiB, MiB, NO_DRIVERS, NULL, PV_DRIVERS, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'pool-ops-test';

let srv: RunningServer;
let x: Client;
let hosts: string[];
let shared: string;
let network: string;

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);

/** A VM (HVM with PV drivers unless told) with a disk on the shared SR and a NIC. */
async function newVm(name: string, extra: Record<string, unknown> = {}, sr = shared) {
  const vm: string = await x.call('VM.create', vmArgs(name, { other_config: PV_DRIVERS, ...extra }));
  const vdi: string = await x.call('VDI.create', vdiArgs(sr, 4 * MiB, `${name}-disk`));
  const vbd: string = await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  const vif: string = await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vdi, vbd, vif };
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 3, closeGrace: 0 }));
  hosts = srv.emu.hosts;
  network = await xenbr0(x);
  shared = await createSharedSr(x, srv, hosts[0]);
});

afterAll(async () => {
  await srv?.close();
});

describe('VM.pool_migrate', () => {
  it('moves a running VM to another host: new domid, resident_on, disks re-attached there, data intact', async () => {
    const { vm, vbd, vif } = await newVm('mig-1');
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const before = await rec('VM', vm);
    const uuid = before.uuid;
    expect(before.resident_on).toBe(hosts[0]);
    const src = xenopsOf(srv.emu, hosts[0]);
    const dst = xenopsOf(srv.emu, hosts[1]);
    await src.tapdisk(uuid, 'hda')!.write(4096, Buffer.from('written before the migration'));
    const freeBefore = [await x.call('host.compute_free_memory', hosts[0]), await x.call('host.compute_free_memory', hosts[1])];

    await x.call('VM.pool_migrate', vm, hosts[1], { live: 'true' });

    const after = await rec('VM', vm);
    expect(after).toMatchObject({ power_state: 'Running', resident_on: hosts[1], scheduled_to_be_resident_on: NULL, current_operations: {} });
    // a new domain on the destination (domids are per host)
    expect(after.domid).toBe(dst.stat(uuid).domid);
    expect(after.domid).toBeGreaterThan(0);
    expect(after.allowed_operations).toContain('pool_migrate');
    expect(src.list()).not.toContain(uuid);
    expect(src.has(uuid)).toBe(false);
    expect(src.tapdisk(uuid, 'hda')).toBeNull();
    expect(src.blktap.list().some((t) => t.vdi === (srv.emu.db.get('VDI', (srv.emu.db.get('VBD', vbd) as any).VDI) as any).uuid)).toBe(false);
    const t = dst.tapdisk(uuid, 'hda')!;
    expect(t).not.toBeNull();
    expect((await t.read(4096, 28)).toString()).toBe('written before the migration');
    expect(await rec('VBD', vbd)).toMatchObject({ currently_attached: true, device: 'hda' });
    expect((await rec('VIF', vif)).currently_attached).toBe(true);
    const needed = 256 * MiB;
    expect(await x.call('host.compute_free_memory', hosts[0])).toBe(freeBefore[0] + needed);
    expect(await x.call('host.compute_free_memory', hosts[1])).toBe(freeBefore[1] - needed);
    const resident = await x.call('host.get_resident_VMs', hosts[1]);
    expect(resident).toContain(vm);
    const msgs = Object.values(await x.call('message.get_all_records')) as any[];
    expect(msgs.some((m) => m.name === 'VM_MIGRATED' && m.obj_uuid === uuid && m.cls === 'VM')).toBe(true);

    // a localhost migration: a new domain on the same host
    await x.call('VM.pool_migrate', vm, hosts[1], {});
    const again = await rec('VM', vm);
    expect(again).toMatchObject({ power_state: 'Running', resident_on: hosts[1] });
    expect(again.domid).toBeGreaterThan(after.domid);
    expect((await dst.tapdisk(uuid, 'hda')!.read(4096, 28)).toString()).toBe('written before the migration');
    await x.call('VM.hard_shutdown', vm);
    expect((await rec('VBD', vbd)).currently_attached).toBe(false);
  });

  it('a hard shutdown during a migration wins: the domain is powered off wherever it went', async () => {
    for (let i = 0; i < 3; i++) {
      const { vm, vbd } = await newVm(`mig-vs-shutdown-${i}`);
      await x.call('VM.start_on', vm, hosts[0], false, false);
      const uuid = (await rec('VM', vm)).uuid;
      const [m, s] = await Promise.allSettled([x.call('VM.pool_migrate', vm, hosts[1], {}), x.call('VM.hard_shutdown', vm)]);
      expect(s.status).toBe('fulfilled');
      if (m.status === 'rejected') expect((m.reason as XapiFault).description[0]).toBe('VM_BAD_POWER_STATE');
      expect(await rec('VM', vm)).toMatchObject({ power_state: 'Halted', resident_on: NULL, domid: -1, current_operations: {} });
      expect((await rec('VBD', vbd)).currently_attached).toBe(false);
      for (const h of hosts) expect(xenopsOf(srv.emu, h).list()).not.toContain(uuid);
    }
  });

  it('a failure after the source domain is gone: VM_MIGRATE_FAILED, the VM halted', async () => {
    const { vm, vdi, vbd } = await newVm('mig-fail');
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const uuid = (await rec('VM', vm)).uuid;
    // the disk's file disappears under the running guest: the destination cannot attach it
    const path = vdiPath(srv.emu, vdi)!;
    renameSync(path, `${path}.away`);
    try {
      const e = await faultOf(x.call('VM.pool_migrate', vm, hosts[1], {}));
      expect(e.slice(0, 4)).toEqual(['VM_MIGRATE_FAILED', vm, hosts[0], hosts[1]]);
    } finally {
      renameSync(`${path}.away`, path);
    }
    expect(await rec('VM', vm)).toMatchObject({ power_state: 'Halted', resident_on: NULL, domid: -1, current_operations: {} });
    expect((await rec('VBD', vbd)).currently_attached).toBe(false);
    for (const h of hosts) expect(xenopsOf(srv.emu, h).list()).not.toContain(uuid);
    await x.call('VM.start', vm, false, false);
    expect((await rec('VM', vm)).power_state).toBe('Running');
    await x.call('VM.hard_shutdown', vm);
  });

  it('refuses what xapi refuses', async () => {
    const { vm } = await newVm('mig-err');
    expect(await faultOf(x.call('VM.pool_migrate', vm, hosts[1], {}))).toEqual(['VM_BAD_POWER_STATE', vm, 'running', 'halted']);
    expect((await faultOf(x.call('VM.pool_migrate', vm, 'OpaqueRef:nope', {})))[0]).toBe('HANDLE_INVALID');
    await x.call('VM.start_on', vm, hosts[0], false, false);
    await x.call('host.disable', hosts[2]);
    try {
      expect(await faultOf(x.call('VM.pool_migrate', vm, hosts[2], {}))).toEqual(['HOST_DISABLED', hosts[2]]);
    } finally {
      await x.call('host.enable', hosts[2]);
    }
    await x.call('VM.pause', vm);
    expect(await faultOf(x.call('VM.pool_migrate', vm, hosts[1], {}))).toEqual(['VM_BAD_POWER_STATE', vm, 'running', 'paused']);
    await x.call('VM.unpause', vm);
    // a disk on host 0's local SR: host 1 cannot see it
    const locals: string[] = await x.call('SR.get_by_name_label', 'Local storage');
    const localSr = locals.find((r) => srv.emu.db.get('PBD', (srv.emu.db.get('SR', r)!.PBDs as string[])[0])?.host === hosts[0])!;
    const { vm: vm2 } = await newVm('mig-local', {}, localSr);
    await x.call('VM.start_on', vm2, hosts[0], false, false);
    expect(await faultOf(x.call('VM.pool_migrate', vm2, hosts[1], {}))).toEqual(['VM_REQUIRES_SR', vm2, localSr]);
    // an HVM guest without PV drivers cannot be migrated
    const { vm: vm3 } = await newVm('mig-nodrivers', { other_config: NO_DRIVERS });
    await x.call('VM.start_on', vm3, hosts[0], false, false);
    expect(await faultOf(x.call('VM.pool_migrate', vm3, hosts[1], {}))).toEqual(['VM_LACKS_FEATURE', vm3]);
    // a VM bigger than the destination's free memory
    const { vm: big } = await newVm('mig-big', memory(20 * GiB));
    await x.call('VM.start_on', big, hosts[0], false, false);
    const { vm: big2 } = await newVm('mig-big2', memory(20 * GiB));
    await x.call('VM.start_on', big2, hosts[1], false, false);
    const e = await faultOf(x.call('VM.pool_migrate', big, hosts[1], {}));
    expect(e[0]).toBe('HOST_NOT_ENOUGH_FREE_MEMORY');
    expect(e[1]).toBe(String(20 * GiB));
    expect((await rec('VM', big))).toMatchObject({ power_state: 'Running', resident_on: hosts[0], current_operations: {} });
    for (const v of [vm, vm2, vm3, big, big2]) await x.call('VM.hard_shutdown', v);
  });
});

describe('host evacuation, reboot and allowed_operations', () => {
  it('evacuate migrates every resident VM away; get_vms_which_prevent_evacuation names the blockers', async () => {
    const a = await newVm('evac-a');
    const b = await newVm('evac-b');
    await x.call('VM.start_on', a.vm, hosts[2], false, false);
    await x.call('VM.start_on', b.vm, hosts[2], false, false);
    expect(await x.call('host.get_vms_which_prevent_evacuation', hosts[2])).toEqual({});
    const h = await rec('host', hosts[2]);
    expect(h.allowed_operations).toEqual(expect.arrayContaining(['evacuate', 'vm_start', 'vm_migrate', 'provision']));
    expect(h.allowed_operations).not.toContain('reboot');
    expect(await faultOf(x.call('host.reboot', hosts[2]))).toEqual(['HOST_NOT_DISABLED']);

    // a paused VM blocks; so does a VM no other host can see the disks of
    await x.call('VM.pause', b.vm);
    const blockers = await x.call('host.get_vms_which_prevent_evacuation', hosts[2]);
    expect(blockers).toEqual({ [b.vm]: ['VM_BAD_POWER_STATE', b.vm, 'running', 'paused'] });
    expect((await faultOf(x.call('host.assert_can_evacuate', hosts[2])))[0]).toBe('CANNOT_EVACUATE_HOST');
    expect(await faultOf(x.call('host.evacuate', hosts[2], NULL, 0))).toEqual(['VM_BAD_POWER_STATE', b.vm, 'running', 'paused']);
    await x.call('VM.unpause', b.vm);

    // no other enabled host: NO_HOSTS_AVAILABLE for each VM
    await x.call('host.disable', hosts[0]);
    await x.call('host.disable', hosts[1]);
    try {
      expect(await x.call('host.get_vms_which_prevent_evacuation', hosts[2])).toEqual({ [a.vm]: ['NO_HOSTS_AVAILABLE', a.vm], [b.vm]: ['NO_HOSTS_AVAILABLE', b.vm] });
    } finally {
      await x.call('host.enable', hosts[0]);
      await x.call('host.enable', hosts[1]);
    }

    await x.call('host.disable', hosts[2]);
    await x.call('host.evacuate', hosts[2], NULL, 0);
    for (const v of [a, b]) {
      const r = await rec('VM', v.vm);
      expect(r.power_state).toBe('Running');
      expect([hosts[0], hosts[1]]).toContain(r.resident_on);
      expect((await rec('VBD', v.vbd)).currently_attached).toBe(true);
    }
    expect(xenopsOf(srv.emu, hosts[2]).list()).toEqual([]);
    expect((await rec('host', hosts[2])).current_operations).toEqual({});

    // reboot of the (empty, disabled) host: down, then up and enabled again
    expect((await rec('host', hosts[2])).allowed_operations).toContain('reboot');
    await x.call('host.reboot', hosts[2]);
    const after = await rec('host', hosts[2]);
    expect(after).toMatchObject({ enabled: true, current_operations: {} });
    expect((await rec('host_metrics', after.metrics)).live).toBe(true);
    for (const v of [a, b]) await x.call('VM.hard_shutdown', v.vm);
  });

  it('a reboot powers off the VMs still running on the host', async () => {
    const v = await newVm('reboot-victim');
    await x.call('VM.start_on', v.vm, hosts[1], false, false);
    await x.call('host.disable', hosts[1]);
    await x.call('host.reboot', hosts[1]);
    expect(await rec('VM', v.vm)).toMatchObject({ power_state: 'Halted', resident_on: NULL, domid: -1 });
    expect((await rec('VBD', v.vbd)).currently_attached).toBe(false);
    expect(xenopsOf(srv.emu, hosts[1]).list()).toEqual([]);
    expect((await rec('host', hosts[1])).enabled).toBe(true);
  });
});

describe('VBD.insert / eject', () => {
  it('changes the medium of a CD drive, running or halted', async () => {
    const srs = (await x.call('SR.get_all_records')) as Record<string, any>;
    const tools = Object.keys(srs).find((r) => srs[r].is_tools_sr)!;
    let iso: string = (await rec('SR', tools)).VDIs[0];
    if (!iso) {
      iso = await x.call('VDI.create', vdiArgs(shared, 2 * MiB, 'cd'));
    }
    const { vm, vbd: disk } = await newVm('cd-vm');
    const cd: string = await x.call('VBD.create', vbdArgs(vm, NULL, '3', { type: 'CD', mode: 'RO', empty: true, bootable: false }));
    expect(await faultOf(x.call('VBD.eject', cd))).toEqual(['VBD_IS_EMPTY', cd]);
    expect(await faultOf(x.call('VBD.insert', disk, iso))).toEqual(['VBD_NOT_REMOVABLE_MEDIA', disk]);
    expect(await faultOf(x.call('VBD.eject', disk))).toEqual(['VBD_NOT_REMOVABLE_MEDIA', disk]);
    // halted: the database only
    await x.call('VBD.insert', cd, iso);
    expect(await rec('VBD', cd)).toMatchObject({ empty: false, VDI: iso });
    expect(await faultOf(x.call('VBD.insert', cd, iso))).toEqual(['VBD_NOT_EMPTY', cd]);
    await x.call('VBD.eject', cd);
    expect(await rec('VBD', cd)).toMatchObject({ empty: true, VDI: NULL });

    // running HVM guest: qemu's drive hdd gets the disk (a read-only tapdisk) and loses it
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const uuid = (await rec('VM', vm)).uuid;
    const xs = xenopsOf(srv.emu, hosts[0]);
    expect(await rec('VBD', cd)).toMatchObject({ currently_attached: true, device: 'hdd', empty: true });
    await x.call('VBD.insert', cd, iso);
    expect(await rec('VBD', cd)).toMatchObject({ currently_attached: true, empty: false, VDI: iso, current_operations: {} });
    expect(xs.tapdisk(uuid, 'hdd')?.readOnly).toBe(true);
    expect((await rec('VBD', cd)).allowed_operations).toContain('eject');
    await x.call('VBD.eject', cd);
    expect(await rec('VBD', cd)).toMatchObject({ currently_attached: true, empty: true, VDI: NULL });
    expect(xs.tapdisk(uuid, 'hdd')).toBeNull();
    expect((await rec('VBD', cd)).allowed_operations).toContain('insert');
    await x.call('VM.suspend', vm);
    expect(await faultOf(x.call('VBD.insert', cd, iso))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted, running', 'suspended']);
    await x.call('VM.hard_shutdown', vm);
  });
});

// ───────────────────────── 50 clients racing ─────────────────────────

describe('50 concurrent clients racing lifecycle operations', () => {
  it('ends consistent, with only XenAPI errors', async () => {
    const N_VMS = 5;
    const vms: { vm: string; vbd: string; vif: string }[] = [];
    for (let i = 0; i < N_VMS; i++) vms.push(await newVm(`race-${i}`));
    // 50 sessions, each on its own keep-alive connection
    const clients: KeepAliveClient[] = [];
    for (let i = 0; i < 50; i++) clients.push(await connectKeepAlive(srv.urls[0], 'root', PASSWORD, `racer-${i}`));
    const args = (op: string, vm: string, i: number): unknown[] => {
      const h = hosts[i % hosts.length];
      switch (op) {
        case 'start': return [vm, false, false];
        case 'start_on': return [vm, h, false, false];
        case 'resume': return [vm, false, false];
        case 'pool_migrate': return [vm, h, { live: 'true' }];
        default: return [vm];
      }
    };
    const known = new Set(Object.keys(model.errors));
    const failures = new Map<string, number>();
    let successes = 0;
    const succeeded = new Set<string>();
    // a deterministic pseudo-random sequence
    let seed = 12345;
    const rnd = (n: number) => {
      // mulberry32
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    };
    // each client picks a VM, reads its power state and asks for an operation valid in it: the
    // clients that read the same state race each other
    const byState: Record<string, string[]> = {
      Halted: ['start', 'start_on'],
      Running: ['clean_shutdown', 'hard_shutdown', 'clean_reboot', 'hard_reboot', 'pause', 'suspend', 'pool_migrate', 'pool_migrate'],
      Paused: ['unpause', 'hard_shutdown', 'hard_reboot'],
      Suspended: ['resume', 'hard_shutdown'],
    };
    await Promise.all(clients.map(async (c, i) => {
      for (let k = 0; k < 6; k++) {
        const vm = vms[rnd(N_VMS)].vm;
        const ps = String(await c.call('VM.get_power_state', vm));
        const op = byState[ps][rnd(byState[ps].length)];
        try {
          const a = args(op, vm, i + rnd(3));
          if (process.env.RACE_DEBUG) console.log('begin', i, op, vm.slice(-6), String(a[1]).slice(-6));
          await c.call(`VM.${op}`, ...a);
          if (process.env.RACE_DEBUG) console.log('ok', i, op, vm.slice(-6));
          successes++;
          succeeded.add(op);
        } catch (e) {
          if (!(e instanceof XapiFault)) throw e;
          const code = e.description[0];
          expect(code, JSON.stringify(e.description)).not.toBe('INTERNAL_ERROR');
          expect(known.has(code), `unknown error ${code}`).toBe(true);
          failures.set(code, (failures.get(code) ?? 0) + 1);
          if (process.env.RACE_DEBUG) console.log('fail', i, op, vm.slice(-6), ps, JSON.stringify(e.description.slice(0, 1).concat(e.description.slice(2))));
        }
      }
    }));
    expect(successes).toBeGreaterThan(0);
    if (process.env.RACE_DEBUG) console.log('race', successes, [...succeeded], JSON.stringify([...failures]));
    // let the updates settle
    await new Promise((r) => setTimeout(r, 50));

    const { emu } = srv;
    for (const { vm, vbd, vif } of vms) {
      const r = emu.db.get('VM', vm)!;
      const uuid = String(r.uuid);
      expect(r.current_operations).toEqual({});
      expect(r.scheduled_to_be_resident_on).toBe(NULL);
      const where = hosts.filter((h) => xenopsOf(emu, h).list().includes(uuid));
      expect(where.length).toBeLessThanOrEqual(1);
      if (r.power_state === 'Running' || r.power_state === 'Paused') {
        expect(where).toEqual([r.resident_on]);
        const s = xenopsOf(emu, String(r.resident_on)).stat(uuid);
        expect(s.power_state).toBe(r.power_state);
        expect(s.domid).toBe(r.domid);
        expect(emu.db.get('VBD', vbd)!.currently_attached).toBe(true);
        expect(emu.db.get('VIF', vif)!.currently_attached).toBe(true);
      } else {
        expect(where, `${vm} ${r.power_state}`).toEqual([]);
        expect(r.resident_on).toBe(NULL);
        expect(r.domid).toBe(-1);
        expect(emu.db.get('VBD', vbd)!.currently_attached).toBe(false);
        expect(emu.db.get('VIF', vif)!.currently_attached).toBe(false);
        if (r.power_state === 'Suspended') expect(emu.db.has('VDI', String(r.suspend_VDI))).toBe(true);
      }
      expect(emu.db.get('VBD', vbd)!.current_operations).toEqual({});
      // allowed_operations recomputed: what a fresh computation gives
      const ops1 = [...(r.allowed_operations as string[])].sort();
      const { vmCheck } = await import('../../server/api/VM.js');
      const fresh = ops1.filter((op) => vmCheck(emu, vm, r, op, true) === null);
      expect(fresh).toEqual(ops1);
      const expectOps: Record<string, string> = { Halted: 'start', Running: 'clean_shutdown', Paused: 'unpause', Suspended: 'resume' };
      expect(ops1).toContain(expectOps[String(r.power_state)]);
    }
    for (const h of hosts) {
      const hr = emu.db.get('host', h)!;
      expect(hr.current_operations).toEqual({});
    }
    for (const c of clients) await c.call('session.logout').catch(() => undefined);
    for (const c of clients) c.close();
    for (const { vm } of vms) await x.call('VM.hard_shutdown', vm).catch(() => undefined);
  }, 30_000);
});

describe('host.shutdown', () => {
  it('needs a disabled host, powers its VMs off and leaves it down', async () => {
    const v = await newVm('shutdown-victim');
    await x.call('VM.start_on', v.vm, hosts[2], false, false);
    expect(await faultOf(x.call('host.shutdown', hosts[2]))).toEqual(['HOST_NOT_DISABLED']);
    await x.call('host.disable', hosts[2]);
    await x.call('host.shutdown', hosts[2]);
    const h = await rec('host', hosts[2]);
    expect(h).toMatchObject({ enabled: false, current_operations: {} });
    expect((await rec('host_metrics', h.metrics)).live).toBe(false);
    expect(await rec('VM', v.vm)).toMatchObject({ power_state: 'Halted', resident_on: NULL });
    expect(await faultOf(x.call('host.enable', hosts[2]))).toEqual(['HOST_OFFLINE', hosts[2]]);
    // a host that is down is no evacuation target, and starts nothing (assert_can_boot_here checks
    // liveness before enabled)
    expect(await faultOf(x.call('VM.start_on', v.vm, hosts[2], false, false))).toEqual(['HOST_NOT_LIVE']);
    await x.call('VM.start_on', v.vm, hosts[1], false, false);
    await x.call('host.disable', hosts[1]);
    try {
      const plan = await x.call('host.get_vms_which_prevent_evacuation', hosts[1]);
      expect(plan).toEqual({});
      await x.call('host.evacuate', hosts[1], NULL, 0);
      expect((await rec('VM', v.vm)).resident_on).toBe(hosts[0]);
    } finally {
      await x.call('host.enable', hosts[1]);
    }
    await x.call('VM.hard_shutdown', v.vm);
  });
});
