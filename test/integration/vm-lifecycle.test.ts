// The VM lifecycle through the emulated xenopsd, over JSON-RPC against a real server: the power
// state matrix (every implemented operation from every reachable state), allowed_operations, the
// datapath of a started VM (tapdisk per attached VDI), hotplug, placement errors, concurrency,
// events seen by XO's client, time scale > 0 (waiting on events, never on timers) and the resync
// after a toolstack restart and after a restart of the whole host.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'xen-api';
import { startServer, type RunningServer } from '../../server/app.js';
import { openVdi, vdiPath } from '../../server/sm/index.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { GiB, MiB, NO_DRIVERS, NULL, PV_DRIVERS, memory, vbdArgs, vdiArgs, vifArgs, vmArgs as baseVmArgs } from './helpers/records.js';

const PASSWORD = 'vm-lifecycle-test';

let srv: RunningServer;
let x: Client;
let master: string;
let local: string;
let network: string;
const cleanup: (() => Promise<void> | void)[] = [];

/** The guests here: 1 GiB (512 MiB at least) and two VCPUs. */
const vmArgs = (name: string, extra: Record<string, unknown> = {}) =>
  baseVmArgs(name, { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 2, VCPUs_at_startup: 2, ...extra });

async function rec(cls: string, ref: string): Promise<any> {
  return x.call(`${cls}.get_record`, ref);
}

/** A VM (HVM unless told) with, optionally, one disk and one NIC. */
async function newVm(name: string, opts: { disk?: boolean; nic?: boolean; pv?: boolean; extra?: Record<string, unknown> } = {}) {
  const other_config = opts.pv ? PV_DRIVERS : NO_DRIVERS;
  const vm: string = await x.call('VM.create', vmArgs(name, { other_config, ...opts.extra }));
  let vdi: string | undefined;
  let vbd: string | undefined;
  let vif: string | undefined;
  if (opts.disk) {
    vdi = await x.call('VDI.create', vdiArgs(local, 8 * MiB, `${name}-disk`));
    vbd = await x.call('VBD.create', vbdArgs(vm, vdi!, '0'));
  }
  if (opts.nic) {
    vif = await x.call('VIF.create', vifArgs(vm, network));
  }
  return { vm, vdi, vbd, vif };
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  const pool = (await x.call('pool.get_all'))[0];
  master = (await rec('pool', pool)).master;
  local = await localStorage(x);
  network = await xenbr0(x);
});

afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
  await srv?.close();
});

// ───────────────────────────── power states ─────────────────────────────

type State = 'Halted' | 'Running' | 'Paused' | 'Suspended';

async function vmIn(state: State, pv = false): Promise<string> {
  const { vm } = await newVm(`matrix-${state}`, { disk: true, nic: true, pv });
  if (state === 'Running' || state === 'Paused') await x.call('VM.start', vm, false, false);
  if (state === 'Paused') await x.call('VM.pause', vm);
  if (state === 'Suspended') {
    await x.call('VM.start', vm, false, false);
    await x.call('VM.suspend', vm);
  }
  expect((await rec('VM', vm)).power_state).toBe(state);
  return vm;
}

const bad = (vm: string, expected: string, actual: State) => ['VM_BAD_POWER_STATE', vm, expected, actual.toLowerCase()];

/** op -> [allowed states (the lower-case list of the error), resulting state or 'gone'] */
const MATRIX: Record<string, { expected: string; from: Partial<Record<State, State | 'gone' | string[]>> }> = {
  start: { expected: 'halted', from: { Halted: 'Running' } },
  clean_shutdown: { expected: 'running', from: { Running: 'Halted' } },
  hard_shutdown: { expected: 'paused, suspended, running', from: { Running: 'Halted', Paused: 'Halted', Suspended: 'Halted' } },
  clean_reboot: { expected: 'running', from: { Running: 'Running' } },
  hard_reboot: { expected: 'paused, running', from: { Running: 'Running', Paused: 'Running' } },
  pause: { expected: 'running', from: { Running: 'Paused' } },
  unpause: { expected: 'paused', from: { Paused: 'Running' } },
  destroy: { expected: 'halted, suspended', from: { Halted: 'gone', Suspended: 'gone' } },
  shutdown: { expected: 'paused, suspended, running', from: { Running: 'Halted', Paused: 'Halted', Suspended: 'Halted' } },
  suspend: { expected: 'running', from: { Running: 'Suspended' } },
  resume: { expected: 'suspended', from: { Suspended: 'Running' } },
};

describe('the power-state matrix', () => {
  for (const [op, { expected, from }] of Object.entries(MATRIX)) {
    for (const state of ['Halted', 'Running', 'Paused', 'Suspended'] as State[]) {
      const outcome = from[state];
      it(`${op} from ${state}: ${outcome ? `→ ${outcome}` : 'VM_BAD_POWER_STATE'}`, async () => {
        const vm = await vmIn(state);
        const args = op === 'start' || op === 'resume' ? [vm, false, false] : [vm];
        if (!outcome) {
          expect(await faultOf(x.call(`VM.${op}`, ...args))).toEqual(bad(vm, expected, state));
          expect((await rec('VM', vm)).power_state).toBe(state);
          return;
        }
        const domidBefore = (await rec('VM', vm)).domid;
        await x.call(`VM.${op}`, ...args);
        if (outcome === 'gone') {
          expect(await faultOf(rec('VM', vm))).toEqual(['HANDLE_INVALID', 'VM', vm]);
          return;
        }
        const r = await rec('VM', vm);
        expect(r.power_state).toBe(outcome);
        expect(r.current_operations).toEqual({});
        if (outcome === 'Halted' || outcome === 'Suspended') {
          expect(r.domid).toBe(-1);
          expect(r.resident_on).toBe(NULL);
          for (const b of r.VBDs) expect((await rec('VBD', b)).currently_attached).toBe(false);
          for (const v of r.VIFs) expect((await rec('VIF', v)).currently_attached).toBe(false);
        } else {
          expect(r.domid).toBeGreaterThan(0);
          expect(r.resident_on).toBe(master);
          for (const b of r.VBDs) expect((await rec('VBD', b)).currently_attached).toBe(true);
          for (const v of r.VIFs) expect((await rec('VIF', v)).currently_attached).toBe(true);
          // a reboot makes a new domain
          if (op.endsWith('reboot')) expect(r.domid).not.toBe(domidBefore);
        }
      });
    }
  }

  it('power_state_reset: Halted stays Halted, a Running VM whose domain exists is refused, Suspended → Halted', async () => {
    const h = await vmIn('Halted');
    await x.call('VM.power_state_reset', h);
    expect((await rec('VM', h)).power_state).toBe('Halted');
    const r = await vmIn('Running');
    expect(await faultOf(x.call('VM.power_state_reset', r))).toEqual(['DOMAIN_EXISTS', r]);
    const s = await vmIn('Suspended');
    await x.call('VM.power_state_reset', s);
    expect((await rec('VM', s)).power_state).toBe('Halted');
    // a Running VM without a domain (its host lost it) is reset
    srv.emu.db.update('VM', h, { power_state: 'Running', resident_on: master, domid: 99 });
    await x.call('VM.power_state_reset', h);
    expect((await rec('VM', h)).power_state).toBe('Halted');
    expect((await rec('VM', h)).domid).toBe(-1);
  });

  it('messages without semantics yet stay NOT_IMPLEMENTED (clone, snapshot ...: vm-snapshot.test.ts)', async () => {
    const vm = await vmIn('Halted');
    expect(await faultOf(x.call('VM.maximise_memory', vm, 4 * GiB, false))).toEqual(['NOT_IMPLEMENTED', 'VM.maximise_memory']);
    expect(await faultOf(x.call('VM.copy_bios_strings', vm, master))).toEqual(['NOT_IMPLEMENTED', 'VM.copy_bios_strings']);
  });

  it('suspend writes a suspend image to a new VDI of the suspend SR; resume reads it and destroys the VDI', async () => {
    const { vm, vbd } = await newVm('suspended', { disk: true, nic: true, pv: true });
    await x.call('VM.start', vm, false, false);
    expect((await rec('VM', vm)).allowed_operations).toContain('suspend');
    await x.call('VM.suspend', vm);
    const r = await rec('VM', vm);
    expect([r.power_state, r.resident_on, r.domid]).toEqual(['Suspended', NULL, -1]);
    expect((await rec('VBD', vbd!)).currently_attached).toBe(false);
    expect(r.allowed_operations).toEqual(expect.arrayContaining(['resume', 'resume_on', 'hard_shutdown', 'destroy']));
    const img = await rec('VDI', r.suspend_VDI);
    expect(img).toMatchObject({ name_label: 'Suspend image', type: 'suspend', SR: local, read_only: false });
    expect(img.virtual_size).toBeGreaterThanOrEqual(Math.floor(GiB * 1.2 * 1.05) + 100 * MiB);
    const io = await openVdi(srv.emu, r.suspend_VDI, { readOnly: true });
    try {
      expect(JSON.parse((await io.read(0, 512)).toString('utf8').replace(/\0+$/, '')).magic).toBe('xapi-emu suspend image');
    } finally {
      await io.close();
    }
    await x.call('VM.resume_on', vm, master, false, false);
    const after = await rec('VM', vm);
    expect([after.power_state, after.resident_on, after.suspend_VDI]).toEqual(['Running', master, NULL]);
    expect(await faultOf(rec('VDI', r.suspend_VDI))).toEqual(['HANDLE_INVALID', 'VDI', r.suspend_VDI]);
    expect((await rec('VBD', vbd!)).currently_attached).toBe(true);
    // hard_shutdown of a suspended VM destroys its image
    await x.call('VM.suspend', vm);
    const img2 = (await rec('VM', vm)).suspend_VDI;
    await x.call('VM.hard_shutdown', vm);
    expect(await faultOf(rec('VDI', img2))).toEqual(['HANDLE_INVALID', 'VDI', img2]);
    // a VM marked Suspended without an image is reset
    srv.emu.db.update('VM', vm, { power_state: 'Suspended' });
    expect(await faultOf(x.call('VM.resume', vm, false, false))).toEqual(['VM_HAS_NO_SUSPEND_VDI', 'VM', vm]);
    expect((await rec('VM', vm)).power_state).toBe('Halted');
  });
});

// ───────────────────────────── checks ─────────────────────────────

describe('checks in xapi’s order', () => {
  it('templates refuse start with VM_IS_TEMPLATE', async () => {
    const [tpl] = await x.call('VM.get_all_where', 'field "is_a_template" = "true"');
    expect(await faultOf(x.call('VM.start', tpl, false, false))).toEqual(['VM_IS_TEMPLATE', tpl, 'start']);
    const ops = (await rec('VM', tpl)).allowed_operations;
    expect(ops).toEqual(expect.arrayContaining(['clone', 'copy', 'export', 'provision']));
    expect(ops).not.toContain('start');
    expect(ops).not.toContain('destroy'); // a default template
  });

  it('the control domain refuses', async () => {
    const [dom0] = await x.call('VM.get_all_where', 'field "is_control_domain" = "true"');
    expect(await faultOf(x.call('VM.start', dom0, false, false))).toEqual(bad(dom0, 'halted', 'Running'));
    expect(await faultOf(x.call('VM.clean_shutdown', dom0))).toEqual(['OPERATION_NOT_ALLOWED', 'This operation is not allowed on a control domain']);
    expect(await faultOf(x.call('VM.pause', dom0))).toEqual(['OPERATION_NOT_ALLOWED', 'This operation is not allowed on a control domain']);
    expect(await faultOf(x.call('VM.power_state_reset', dom0))).toEqual(['CANNOT_RESET_CONTROL_DOMAIN', dom0]);
    expect((await rec('VM', dom0)).allowed_operations).not.toContain('clean_shutdown');
  });

  it('blocked_operations come first: OPERATION_BLOCKED', async () => {
    const { vm } = await newVm('blocked');
    await x.call('VM.add_to_blocked_operations', vm, 'start', 'no way');
    expect((await rec('VM', vm)).allowed_operations).not.toContain('start');
    expect(await faultOf(x.call('VM.start', vm, false, false))).toEqual(['OPERATION_BLOCKED', vm, 'no way']);
    await x.call('VM.remove_from_blocked_operations', vm, 'start');
    expect((await rec('VM', vm)).allowed_operations).toContain('start');
  });

  it('allowed_operations follow the power state; VM_LACKS_FEATURE hides clean ops of an HVM guest without PV drivers', async () => {
    const { vm } = await newVm('allowed', { disk: true });
    let ops = (await rec('VM', vm)).allowed_operations;
    expect(ops).toEqual(expect.arrayContaining(['start', 'start_on', 'destroy', 'export', 'clone']));
    expect(ops).not.toContain('clean_shutdown');
    await x.call('VM.start', vm, false, false);
    ops = (await rec('VM', vm)).allowed_operations;
    expect(ops).toEqual(expect.arrayContaining(['hard_shutdown', 'hard_reboot', 'pause']));
    expect(ops).not.toContain('clean_shutdown');
    expect(ops).not.toContain('clean_reboot');
    expect(ops).not.toContain('start');
    expect((await rec('VM', vm)).guest_metrics).toBe(NULL);
    // not strict when the operation is asked for: Xen shuts the guest down without acknowledgement
    await x.call('VM.clean_shutdown', vm);
    expect((await rec('VM', vm)).power_state).toBe('Halted');

    const pv = (await newVm('allowed-pv', { disk: true, pv: true })).vm;
    await x.call('VM.start', pv, false, false);
    const r = await rec('VM', pv);
    expect(r.allowed_operations).toEqual(expect.arrayContaining(['clean_shutdown', 'clean_reboot', 'hard_shutdown']));
    const gm = await rec('VM_guest_metrics', r.guest_metrics);
    expect(gm.PV_drivers_detected).toBe(true);
    // Linux's drivers advertise poweroff and reboot (Windows' also feature-shutdown)
    expect(gm.other['feature-poweroff']).toBe('1');
  });

  it('placement: HOST_DISABLED, HOST_NOT_ENOUGH_FREE_MEMORY, VM_REQUIRES_SR, NO_HOSTS_AVAILABLE', async () => {
    const { vm, vdi } = await newVm('placement', { disk: true });
    await x.call('host.disable', master);
    expect(await faultOf(x.call('VM.start_on', vm, master, false, false))).toEqual(['HOST_DISABLED', master]);
    expect(await faultOf(x.call('VM.start', vm, false, false))).toEqual(['NO_HOSTS_AVAILABLE']);
    await x.call('host.enable', master);

    const free: number = Number(await x.call('host.compute_free_memory', master));
    const big = (await newVm('big', { extra: { memory_static_max: free + GiB, memory_dynamic_max: free + GiB } })).vm;
    expect(await faultOf(x.call('VM.start_on', big, master, false, false))).toEqual(['HOST_NOT_ENOUGH_FREE_MEMORY', String(free + GiB), String(free)]);
    expect(await faultOf(x.call('VM.start', big, false, false))).toEqual(['NO_HOSTS_AVAILABLE']);

    const pbd = (await rec('SR', local)).PBDs[0];
    srv.emu.db.update('PBD', pbd, { currently_attached: false });
    try {
      expect(await faultOf(x.call('VM.start_on', vm, master, false, false))).toEqual(['VM_REQUIRES_SR', vm, local]);
    } finally {
      srv.emu.db.update('PBD', pbd, { currently_attached: true });
    }
    expect((await rec('VDI', vdi!)).SR).toBe(local);
  });
});

// ───────────────────────────── the datapath ─────────────────────────────

describe('a started VM', () => {
  it('made with VM.create, VDI.create and VBD.create: starts, its disk is served by a tapdisk, shuts down', async () => {
    const { emu } = srv;
    const { vm, vdi, vbd, vif } = await newVm('datapath', { disk: true, nic: true });
    const freeBefore = (await rec('host_metrics', (await rec('host', master)).metrics)).memory_free;
    await x.call('VM.start', vm, false, false);
    const r = await rec('VM', vm);
    expect(r.power_state).toBe('Running');
    expect(r.resident_on).toBe(master);
    const m = await rec('VM_metrics', r.metrics);
    expect(m.VCPUs_number).toBe(2);
    expect(m.memory_actual).toBe(1 * GiB);
    expect(m.hvm).toBe(true);
    expect(m.current_domain_type).toBe('hvm');
    expect(m.start_time).not.toBe('19700101T00:00:00Z');
    const freeAfter = (await rec('host_metrics', (await rec('host', master)).metrics)).memory_free;
    expect(freeBefore - freeAfter).toBe(1 * GiB);
    expect(Number(await x.call('host.compute_free_memory', master))).toBe(freeAfter);

    const b = await rec('VBD', vbd!);
    expect(b.currently_attached).toBe(true);
    expect(b.device).toBe('hda');
    expect(b.allowed_operations).not.toContain('plug');
    expect((await rec('VIF', vif!)).currently_attached).toBe(true);
    // VDIs in use refuse what they refuse while attached
    expect(await faultOf(x.call('VDI.destroy', vdi))).toEqual(['VDI_IN_USE', vdi, 'destroy']);

    const x0 = xenopsOf(emu, master);
    const uuid = r.uuid as string;
    const vdiUuid = (await rec('VDI', vdi!)).uuid;
    const t = x0.tapdisk(uuid, 'hda')!;
    expect(t).not.toBeNull();
    expect(t.info()).toMatchObject({ state: 0, args: `vhd:${vdiPath(emu, vdi!)}`, device: `/dev/xen/blktap-2/tapdev${t.minor}`, vdi: vdiUuid, readOnly: false });
    expect(x0.blktap.tapCtlList()).toContain(`pid=${t.pid} minor=${t.minor} state=0 args=vhd:`);
    const data = Buffer.alloc(64 * 1024, 0x5a);
    await t.write(1 * MiB, data);
    expect((await t.read(1 * MiB, data.length)).equals(data)).toBe(true);
    // a snapshot of the attached VDI renames its file: the tapdisk follows it
    await x.call('VDI.snapshot', vdi, {});
    const data2 = Buffer.alloc(4096, 0xa5);
    await t.write(3 * MiB, data2);
    expect((await t.read(1 * MiB, data.length)).equals(data)).toBe(true);

    await x.call('VM.clean_shutdown', vm);
    expect((await rec('VBD', vbd!)).currently_attached).toBe(false);
    expect(x0.tapdisk(uuid, 'hda')).toBeNull();
    expect(x0.blktap.list().some((d) => d.vdi === vdiUuid)).toBe(false);
    expect((await rec('host_metrics', (await rec('host', master)).metrics)).memory_free).toBe(freeBefore);
    // the data is in the VDI
    const io = await openVdi(emu, vdi!, { readOnly: true });
    try {
      expect((await io.read(1 * MiB, data.length)).equals(data)).toBe(true);
      expect((await io.read(3 * MiB, data2.length)).equals(data2)).toBe(true);
    } finally {
      await io.close();
    }
  });

  it('start paused, then unpause; an empty CD drive of an HVM guest is attached as hdd', async () => {
    const { vm } = await newVm('paused-start', { disk: true });
    const cd: string = await x.call('VBD.create', vbdArgs(vm, NULL, '3', { type: 'CD', mode: 'RO', empty: true, bootable: false }));
    await x.call('VM.start', vm, true, false);
    expect((await rec('VM', vm)).power_state).toBe('Paused');
    const c = await rec('VBD', cd);
    expect([c.currently_attached, c.device]).toEqual([true, 'hdd']);
    expect(xenopsOf(srv.emu, master).tapdisk((await rec('VM', vm)).uuid, 'hdd')).toBeNull(); // no media, no tapdisk
    await x.call('VM.unpause', vm);
    expect((await rec('VM', vm)).power_state).toBe('Running');
    await x.call('VM.hard_shutdown', vm);
    expect((await rec('VBD', cd)).currently_attached).toBe(false);
  });

  it('VM.destroy removes its VBDs, VIFs and metrics, not its disks', async () => {
    const { vm, vdi, vbd, vif } = await newVm('destroyed', { disk: true, nic: true });
    const metrics = (await rec('VM', vm)).metrics;
    await x.call('VM.destroy', vm);
    for (const [cls, ref] of [['VM', vm], ['VBD', vbd], ['VIF', vif], ['VM_metrics', metrics]]) {
      expect(await faultOf(rec(cls!, ref!))).toEqual(['HANDLE_INVALID', cls, ref]);
    }
    expect((await rec('VDI', vdi!)).VBDs).toEqual([]);
  });

  it('VBD and VIF hotplug: PV drivers needed, DEVICE_ALREADY_ATTACHED / DETACHED', async () => {
    const { vm } = await newVm('hotplug', { disk: true, nic: true, pv: true });
    const vdi2: string = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'hot'));
    const vbd2: string = await x.call('VBD.create', vbdArgs(vm, vdi2, 'autodetect'));
    expect((await rec('VBD', vbd2)).userdevice).toBe('1');
    expect(await faultOf(x.call('VBD.create', vbdArgs(vm, vdi2, '1')))).toEqual(['DEVICE_ALREADY_EXISTS', '1']);
    expect(await faultOf(x.call('VBD.plug', vbd2))).toEqual(['VM_BAD_POWER_STATE', vm, 'running', 'halted']);
    await x.call('VM.start', vm, false, false);
    const b = await rec('VBD', vbd2);
    expect(b.currently_attached).toBe(true); // plugged at start
    expect(await faultOf(x.call('VBD.plug', vbd2))).toEqual(['DEVICE_ALREADY_ATTACHED', vbd2]);
    await x.call('VBD.unplug', vbd2);
    expect((await rec('VBD', vbd2)).currently_attached).toBe(false);
    expect(xenopsOf(srv.emu, master).tapdisk((await rec('VM', vm)).uuid, 'hdb')).toBeNull();
    expect(await faultOf(x.call('VBD.unplug', vbd2))).toEqual(['DEVICE_ALREADY_DETACHED', vbd2]);
    await x.call('VBD.plug', vbd2);
    expect((await rec('VBD', vbd2)).currently_attached).toBe(true);
    expect(await faultOf(x.call('VBD.destroy', vbd2))).toEqual(['OPERATION_NOT_ALLOWED', `VBD '${b.uuid}' still attached to '${(await rec('VM', vm)).uuid}'`]);
    const vif = (await rec('VM', vm)).VIFs[0];
    await x.call('VIF.unplug', vif);
    expect((await rec('VIF', vif)).currently_attached).toBe(false);
    expect(await faultOf(x.call('VIF.unplug', vif))).toEqual(['DEVICE_ALREADY_DETACHED', vif]);
    await x.call('VIF.plug', vif);
    expect(await faultOf(x.call('VIF.plug', vif))).toEqual(['DEVICE_ALREADY_ATTACHED', vif]);

    // an HVM guest without PV drivers: no hotplug
    const { vm: bare, vbd: bareVbd, vif: bareVif } = await newVm('hotplug-bare', { disk: true, nic: true });
    await x.call('VM.start', bare, false, false);
    expect(await faultOf(x.call('VBD.unplug', bareVbd))).toEqual(['VM_MISSING_PV_DRIVERS', bare]);
    expect(await faultOf(x.call('VIF.unplug', bareVif))).toEqual(['VM_MISSING_PV_DRIVERS', bare]);
  });
});

// ───────────────────────────── concurrency and events ─────────────────────────────

async function taskDone(task: string): Promise<any> {
  // event.from on the task until it is no longer pending
  let token = '';
  for (;;) {
    const r = await x.call('task.get_record', task);
    if (r.status !== 'pending') return r;
    const ev = await x.call('event.from', [`task/${task}`], token, 5);
    token = ev.token;
  }
}

describe('concurrency', () => {
  it('two starts of one VM: the second waits for the first, then fails VM_BAD_POWER_STATE', async () => {
    const { vm } = await newVm('twice', { disk: true });
    const [t1, t2] = await Promise.all([x.call('Async.VM.start', vm, false, false), x.call('Async.VM.start', vm, false, false)]);
    const [r1, r2] = [await taskDone(t1), await taskDone(t2)];
    const outcomes = [r1, r2].map((r) => r.status).sort();
    expect(outcomes).toEqual(['failure', 'success']);
    const failed = r1.status === 'failure' ? r1 : r2;
    expect(failed.error_info).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    expect((await rec('VM', vm)).power_state).toBe('Running');
  });

  it('operations on different VMs run in parallel', async () => {
    const vms = await Promise.all([0, 1, 2, 3].map((i) => newVm(`par-${i}`, { disk: true })));
    const tasks = await Promise.all(vms.map(({ vm }) => x.call('Async.VM.start', vm, false, false)));
    for (const t of tasks) expect((await taskDone(t)).status).toBe('success');
    const domids = await Promise.all(vms.map(async ({ vm }) => (await rec('VM', vm)).domid));
    expect(new Set(domids).size).toBe(4);
    await Promise.all(vms.map(({ vm }) => x.call('VM.hard_shutdown', vm)));
  });
});

describe('events and time', () => {
  it('XO’s xen-api client sees the power_state changes', async () => {
    const { vm } = await newVm('xo-watched', { disk: true });
    const xo = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, debounce: 0 });
    await xo.connect();
    try {
      const seen: string[] = [];
      const until = (state: string) =>
        new Promise<void>((resolve) => {
          const check = () => {
            const o = Object.values(xo.objects.all).find((v: any) => v.$ref === vm) as any;
            if (o && seen[seen.length - 1] !== o.power_state) seen.push(o.power_state);
            if (o?.power_state === state) {
              xo.objects.removeListener('update', check);
              xo.objects.removeListener('add', check);
              resolve();
            }
          };
          xo.objects.on('update', check);
          xo.objects.on('add', check);
          check();
        });
      await until('Halted');
      await xo.call('VM.start', vm, false, false);
      await until('Running');
      await xo.call('VM.hard_shutdown', vm);
      await until('Halted');
      expect(seen).toEqual(['Halted', 'Running', 'Halted']);
    } finally {
      await xo.disconnect();
    }
  });

  it('at time scale > 0 an operation takes time: current_operations and progress show it', async () => {
    const slow = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, timeScale: 0.2 });
    cleanup.push(() => slow.close());
    const c = await connect(slow.urls[0], 'root', PASSWORD);
    const vm: string = await c.call('VM.create', vmArgs('slow'));
    const lsr = (await c.call('SR.get_by_name_label', 'Local storage'))[0];
    const vdi = await c.call('VDI.create', vdiArgs(lsr, 4 * MiB));
    await c.call('VBD.create', vbdArgs(vm, vdi, '0'));
    // a start takes about 3 simulated seconds here: 0.6 s of wall time, observed through events
    let token: string = (await c.call('event.from', ['vm', 'task'], '', 0)).token;
    const task: string = await c.call('Async.VM.start', vm, false, false);
    let sawOp = false;
    let sawProgress = false;
    for (;;) {
      const ev = await c.call('event.from', ['vm', 'task'], token, 5);
      token = ev.token;
      for (const e of ev.events) {
        if (e.class === 'vm' && e.ref === vm && Object.values(e.snapshot.current_operations).includes('start')) {
          sawOp = true;
          expect(e.snapshot.allowed_operations).not.toContain('start');
        }
        if (e.class === 'task' && e.ref === task && e.snapshot.progress > 0 && e.snapshot.progress < 1) sawProgress = true;
      }
      const t = await c.call('task.get_record', task);
      if (t.status !== 'pending') {
        expect(t.status).toBe('success');
        break;
      }
    }
    expect(sawOp).toBe(true);
    expect(sawProgress).toBe(true);
    expect((await c.call('VM.get_record', vm)).power_state).toBe('Running');
  });
});

describe('a pool of two hosts', () => {
  it('start_on places the domain on that host; domids are per host; each host has its own free memory', async () => {
    const pool2 = await startServer({ port: 0, memory: true, hosts: 2, password: PASSWORD, authFailDelay: 0 });
    cleanup.push(() => pool2.close());
    const c = await connect(pool2.urls[0], 'root', PASSWORD);
    const [h0, h1] = pool2.emu.hosts;
    const mk = (name: string): Promise<string> => c.call('VM.create', vmArgs(name));
    const a = await mk('on-h0');
    const b = await mk('on-h1');
    const free0 = Number(await c.call('host.compute_free_memory', h1));
    await c.call('VM.start_on', a, h0, false, false);
    await c.call('VM.start_on', b, h1, false, false);
    const ra = await c.call('VM.get_record', a);
    const rb = await c.call('VM.get_record', b);
    expect([ra.resident_on, rb.resident_on]).toEqual([h0, h1]);
    expect([ra.domid, rb.domid]).toEqual([1, 1]);
    expect(Number(await c.call('host.compute_free_memory', h1))).toBe(free0 - 1 * GiB);
    expect(Number(await c.call('host.compute_free_memory', h0))).toBe(free0 - 1 * GiB);
    // start (no host given) prefers the affinity host
    const d: string = await c.call('VM.create', vmArgs('affine', { affinity: h1 }));
    await c.call('VM.start', d, false, false);
    expect((await c.call('VM.get_record', d)).resident_on).toBe(h1);
    expect((await c.call('VM.get_record', d)).domid).toBe(2);
    await c.call('VM.hard_shutdown', b);
    expect((await c.call('VM.get_record', b)).resident_on).toBe(NULL);
  });
});

describe('tapdisk', () => {
  it('a paused tapdisk holds its requests until unpaused (tap-ctl pause/unpause)', async () => {
    const { vm } = await newVm('tap-pause', { disk: true });
    await x.call('VM.start', vm, false, false);
    const t = xenopsOf(srv.emu, master).tapdisk((await rec('VM', vm)).uuid, 'hda')!;
    t.pause();
    expect(t.info().state).toBe(0x20);
    expect(xenopsOf(srv.emu, master).blktap.tapCtlList()).toContain(`minor=${t.minor} state=0x20 `);
    let done = false;
    const w = t.write(0, Buffer.alloc(512, 1)).then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    t.unpause();
    await w;
    expect((await t.read(0, 512))[0]).toBe(1);
    await x.call('VM.hard_shutdown', vm);
  });
});

// ───────────────────────────── restarts ─────────────────────────────

/** A login after a restart (a kept-alive connection of before may be cut once). */
async function reconnect(url: string): Promise<Client> {
  for (let i = 0; ; i++) {
    try {
      return await connect(url, 'root', PASSWORD);
    } catch (e) {
      if (i >= 3 || !(e instanceof TypeError)) throw e;
    }
  }
}

describe('crash consistency', () => {
  it('domains survive a toolstack restart; a restart of the host resets Running VMs to Halted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-vm-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    let s = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
    try {
      let c = await connect(s.urls[0], 'root', PASSWORD);
      const vm: string = await c.call('VM.create', vmArgs('survivor'));
      const lsr = (await c.call('SR.get_by_name_label', 'Local storage'))[0];
      const vdi = await c.call('VDI.create', vdiArgs(lsr, 4 * MiB));
      const vbd: string = await c.call('VBD.create', vbdArgs(vm, vdi, '0'));
      await c.call('VM.start', vm, false, false);
      const domid = (await c.call('VM.get_record', vm)).domid;

      await s.toolstackRestart();
      c = await reconnect(s.urls[0]);
      let r = await c.call('VM.get_record', vm);
      expect(r.power_state).toBe('Running');
      expect(r.domid).toBe(domid);
      expect((await c.call('VBD.get_record', vbd)).currently_attached).toBe(true);
      // the new API layer drives the surviving domain
      await c.call('VM.hard_reboot', vm);
      expect((await c.call('VM.get_record', vm)).domid).toBeGreaterThan(domid);

      // a second VM suspended before the host goes down
      const sus: string = await c.call('VM.create', vmArgs('suspended-across'));
      await c.call('VM.start', sus, false, false);
      await c.call('VM.suspend', sus);

      await s.close();
      s = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
      c = await connect(s.urls[0], 'root', PASSWORD);
      expect((await c.call('VM.get_record', sus)).power_state).toBe('Suspended');
      await c.call('VM.resume', sus, false, false);
      expect((await c.call('VM.get_record', sus)).power_state).toBe('Running');
      r = await c.call('VM.get_record', vm);
      expect(r.power_state).toBe('Halted');
      expect(r.domid).toBe(-1);
      expect(r.resident_on).toBe(NULL);
      expect(r.allowed_operations).toContain('start');
      expect((await c.call('VBD.get_record', vbd)).currently_attached).toBe(false);
      await c.call('VM.start', vm, false, false);
      expect((await c.call('VM.get_record', vm)).power_state).toBe('Running');
    } finally {
      await s.close();
    }
  });
});
