// HA on a pool of three hosts with a shared SR, through real clients (JSON-RPC, XO's xen-api) and
// the control API: pool.enable_ha and its checks and VDIs, the failover planner's numbers
// (ha_compute_*, set_ha_host_failures_to_tolerate, overcommit and its message), a member failing
// (host_down): fenced at once, its protected VMs restarted elsewhere by VM.order with each
// start_delay waited on the emulator clock, its best-effort VM where there is room, its unprotected
// one left Halted; a protected VM whose guest crashes comes back; the master failing: a survivor
// becomes master; disable_ha.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { connect, XapiFault, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, localStorage, startPool } from './helpers/pool.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'ha-test';

let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let xo: Xapi;
let shared: string;
let hosts: string[];

const errorOf = async (p: Promise<unknown>): Promise<string[]> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof XapiFault) return e.description;
    if (e && typeof e === 'object' && 'code' in e) return [String((e as { code: string }).code), ...((e as { params?: string[] }).params ?? [])];
    throw e;
  }
  throw new Error('no error');
};

const pool = () => x.call('pool.get_record', srv.emu.pool);

/** A restart closed the connections: a kept-alive one fails once. */
async function once<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if ((e as Error).message !== 'fetch failed') throw e;
    return f();
  }
}

async function newVm(name: string, mem: number, sr = shared): Promise<string> {
  const vm: string = await x.call('VM.create', vmArgs(name, memory(mem)));
  const vdi: string = await x.call('VDI.create', vdiArgs(sr, 8 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  return vm;
}

async function messages(name: string): Promise<{ obj_uuid: string; cls: string; priority: number; body: string }[]> {
  const all = Object.values(await x.call('message.get_all_records')) as { name: string; obj_uuid: string; cls: string; priority: number; body: string }[];
  return all.filter((m) => m.name === name);
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 3, closeGrace: 0, nbdPort: null }));
  hosts = srv.urls.map((u) => srv.emu.hostByAddress(new URL(u).hostname)!);
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  shared = await createSharedSr(x, srv, hosts[0]);
  xo = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, watchEvents: false });
  await xo.connect();
});

afterAll(async () => {
  await xo?.disconnect().catch(() => undefined);
  await srv?.close();
});

describe('pool.enable_ha', () => {
  it('checks the heartbeat SR, makes the statefile and the redo-log VDIs, records the configuration', async () => {
    expect(await errorOf(x.call('pool.disable_ha'))).toEqual(['HA_NOT_ENABLED']);
    // the local SR of the master: the other hosts have no PBD for it
    const local = await localStorage(x);
    expect(await errorOf(x.call('pool.enable_ha', [local], {}))).toEqual(['SR_HAS_NO_PBDS', local]);
    expect((await pool()).ha_enabled).toBe(false);

    await xo.call('pool.enable_ha', [shared], { timeout: '30' });
    const p = await pool();
    expect(p).toMatchObject({ ha_enabled: true, ha_configuration: { timeout: '30' }, ha_cluster_stack: 'xhad', ha_plan_exists_for: 0, ha_overcommitted: false });
    expect(p.ha_statefiles).toHaveLength(1);
    const statefile = await x.call('VDI.get_record', p.ha_statefiles[0]);
    expect(statefile).toMatchObject({ SR: shared, type: 'ha_statefile', name_label: 'Statefile for HA', sharable: true, virtual_size: 266240 });
    const redo = Object.values(await x.call('VDI.get_all_records')).filter((v: any) => v.type === 'redo_log') as any[];
    expect(redo).toEqual([expect.objectContaining({ SR: shared, name_label: 'Metadata for HA', virtual_size: 3988783104 })]);

    expect(await errorOf(x.call('pool.enable_ha', [shared], {}))).toEqual(['HA_IS_ENABLED']);
    expect(await errorOf(x.call('pool.designate_new_master', hosts[1]))).toEqual(['HA_IS_ENABLED']);
    // a member with HA armed refuses to take the master role by itself
    const member = connectTo(srv.urls[1]);
    const local1 = await member.raw('session.slave_local_login_with_password', 'root', PASSWORD);
    expect(await errorOf(member.raw('pool.emergency_transition_to_master', local1))).toEqual(['HA_IS_ENABLED']);
    // until it disarms its HA locally
    await member.raw('host.emergency_ha_disable', local1, true);
    expect(await errorOf(member.raw('pool.emergency_transition_to_master', local1))).toEqual(['HA_IS_ENABLED']);
  });
});

/** Raw calls on one host's address. */
function connectTo(url: string) {
  return {
    raw: async (method: string, ...params: unknown[]) => {
      const res = await fetch(new URL('/jsonrpc', url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ method, params, id: 1 }) });
      const j = (await res.json()) as { result?: unknown; error?: string[] | null };
      if (j.error) throw new XapiFault(j.error);
      return j.result;
    },
  };
}

describe('the failover plan', () => {
  let big: string[];

  it('counts the host failures the protected VMs survive (binpack of memory)', async () => {
    // no protected VM: any number of failures
    expect(await x.call('pool.ha_compute_max_host_failures_to_tolerate')).toBe(3);
    // one 10 GiB VM per host: after one failure it fits on a survivor, after two it does not
    big = [];
    for (const [i, h] of hosts.entries()) {
      const vm = await newVm(`big-${i}`, 10 * GiB);
      await x.call('VM.set_ha_restart_priority', vm, 'restart');
      await x.call('VM.start_on', vm, h, false, false);
      expect(await x.call('VM.get_ha_always_run', vm)).toBe(true);
      big.push(vm);
    }
    expect(await x.call('pool.ha_compute_max_host_failures_to_tolerate')).toBe(1);
    expect(await x.call('pool.ha_failover_plan_exists', 1)).toBe(true);
    expect(await x.call('pool.ha_failover_plan_exists', 2)).toBe(false);
    // out-of-range counts: no failures to plan for below 0, every host failing above the pool's size
    expect(await x.call('pool.ha_failover_plan_exists', -5)).toBe(await x.call('pool.ha_failover_plan_exists', 0));
    expect(await x.call('pool.ha_failover_plan_exists', 2 ** 40)).toBe(false);
    const hypothetical = (c: Record<string, string>) => x.call('pool.ha_compute_hypothetical_max_host_failures_to_tolerate', c);
    expect(await hypothetical({})).toBe(3);
    expect(await hypothetical({ [big[0]]: 'restart' })).toBe(2);
    expect(await hypothetical({ [big[0]]: 'restart', [big[1]]: 'best-effort' })).toBe(2);
    expect(await errorOf(hypothetical({ [big[0]]: 'always' }))).toEqual(['INVALID_VALUE', 'ha_restart_priority', 'always']);
  });

  it('ha_host_failures_to_tolerate: kept if a plan exists, else HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN', async () => {
    expect(await errorOf(x.call('pool.set_ha_host_failures_to_tolerate', srv.emu.pool, -1))).toEqual(['INVALID_VALUE', 'ha_host_failures_to_tolerate', '-1']);
    await x.call('pool.set_ha_host_failures_to_tolerate', srv.emu.pool, 1);
    expect(await pool()).toMatchObject({ ha_host_failures_to_tolerate: 1, ha_plan_exists_for: 1, ha_overcommitted: false });
    expect(await errorOf(x.call('pool.set_ha_host_failures_to_tolerate', srv.emu.pool, 2))).toEqual(['HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN']);
    expect((await pool()).ha_host_failures_to_tolerate).toBe(1);
  });

  it('ha_compute_vm_failover_plan: a host for each agile VM, an error code for the others', async () => {
    const plan = await x.call('pool.ha_compute_vm_failover_plan', [hosts[0]], [big[0]]);
    expect([hosts[1], hosts[2]]).toContain(plan[big[0]].host);
    // as xapi, a VM that fits somewhere gets a host even if it is not agile; one that fits nowhere
    // gets the reason: its agility error, else the memory
    const pinned = await newVm('on-local', 40 * GiB, await localStorage(x));
    const tooBig = await newVm('too-big', 40 * GiB);
    expect(await x.call('pool.ha_compute_vm_failover_plan', [hosts[0]], [pinned, tooBig])).toEqual({
      [pinned]: { error_code: 'HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED' },
      [tooBig]: { error_code: 'HOST_NOT_ENOUGH_FREE_MEMORY' },
    });
    const small = await newVm('small-on-local', 1 * GiB, await localStorage(x));
    expect([hosts[1], hosts[2]]).toContain((await x.call('pool.ha_compute_vm_failover_plan', [hosts[0]], [small]))[small].host);
    for (const vm of [pinned, tooBig, small]) await x.call('VM.destroy', vm);
  });

  it('a VM protected while it runs must keep the plan; overcommit is allowed when the pool says so, and reported', async () => {
    // a VM whose disk is on the master's local SR cannot move: protecting it would break the plan
    const pinned = await newVm('pinned', 1 * GiB, await localStorage(x));
    await x.call('VM.start_on', pinned, hosts[0], false, false);
    expect(await errorOf(x.call('VM.set_ha_restart_priority', pinned, 'restart'))).toEqual(['HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN']);
    expect(await x.call('VM.get_ha_always_run', pinned)).toBe(false);
    await x.call('VM.hard_shutdown', pinned);

    await x.call('pool.set_ha_allow_overcommit', srv.emu.pool, true);
    await x.call('pool.set_ha_host_failures_to_tolerate', srv.emu.pool, 2);
    expect(await pool()).toMatchObject({ ha_host_failures_to_tolerate: 2, ha_overcommitted: true, ha_plan_exists_for: 1 });
    const poolUuid = (await pool()).uuid;
    const poolName = (await pool()).name_label;
    expect(await messages('HA_POOL_OVERCOMMITTED')).toEqual([
      expect.objectContaining({ cls: 'Pool', obj_uuid: poolUuid, priority: 3, body: `The failover tolerance for pool '${poolName}' has dropped and the initially specified number of host failures to tolerate can no longer be guaranteed` }),
    ]);
    await x.call('pool.set_ha_allow_overcommit', srv.emu.pool, false);
    await x.call('pool.set_ha_host_failures_to_tolerate', srv.emu.pool, 1);
    expect(await pool()).toMatchObject({ ha_overcommitted: false, ha_plan_exists_for: 1 });
    // VM.set_ha_always_run (deprecated) is the restart priority
    await x.call('VM.set_ha_always_run', pinned, true);
    expect(await x.call('VM.get_ha_restart_priority', pinned)).toBe('restart');
    await x.call('VM.set_ha_always_run', pinned, false);
    expect(await x.call('VM.get_ha_restart_priority', pinned)).toBe('');
    await x.call('VM.destroy', pinned);
  });

  it('VM.set_order / set_start_delay / set_shutdown_delay take non-negative values', async () => {
    const vm = big[0];
    for (const field of ['order', 'start_delay', 'shutdown_delay']) {
      expect(await errorOf(x.call(`VM.set_${field}`, vm, -1))).toEqual(['INVALID_VALUE', `${field} must be non-negative`, '-1']);
      await x.call(`VM.set_${field}`, vm, 5);
      expect(await x.call(`VM.get_${field}`, vm)).toBe(5);
      await x.call(`VM.set_${field}`, vm, 0);
    }
  });
});

describe('a failed member', () => {
  it('is fenced at once; its protected VMs restart elsewhere by order, each start_delay waited on the clock', async () => {
    const victim = hosts[2];
    const vms: Record<string, string> = {};
    const specs: [string, string, number, number][] = [
      // name, priority, order, start_delay
      ['first', 'restart', 0, 0],
      ['second', 'restart', 1, 30],
      ['third', 'restart', 2, 0],
      ['spare', 'best-effort', 0, 0],
      ['plain', '', 0, 0],
    ];
    for (const [name, priority, order, delay] of specs) {
      const vm = await newVm(name, 1 * GiB);
      await x.call('VM.set_ha_restart_priority', vm, priority);
      await x.call('VM.set_order', vm, order);
      await x.call('VM.set_start_delay', vm, delay);
      await x.call('VM.start_on', vm, victim, false, false);
      vms[name] = vm;
    }
    const victimUuid = await x.call('host.get_uuid', victim);
    const victimName = await x.call('host.get_name_label', victim);

    await ctl.clock.set({ frozen: true });
    const rule = await ctl.faults.create({ match: { host: victim }, effect: { host_down: true } });
    try {
      // fenced: nothing of it is left running in the database
      for (const name of Object.keys(vms)) expect(await x.call('VM.get_resident_on', vms[name]), name).not.toBe(victim);
      expect(await x.call('VM.get_power_state', vms.plain)).toBe('Halted');
      expect(await messages('HA_HOST_FAILED')).toEqual([expect.objectContaining({ cls: 'Host', obj_uuid: victimUuid, body: `Server '${victimName}' has failed` })]);

      // the status shows the failover under way
      expect((await ctl.status.get({})).pool.ha).toMatchObject({ enabled: true, host_failures_to_tolerate: 1, restarts_pending: 1 });
      // time moves a second at a time: when did each come back?
      const t0 = (await ctl.clock.get({})).now_ms;
      const runningAt: Record<string, number> = {};
      const watched = ['first', 'second', 'third', 'spare'];
      for (let step = 0; step < 200 && watched.some((n) => runningAt[n] === undefined); step++) {
        const now = (await ctl.clock.advance({ seconds: 1 })).now_ms;
        for (let poll = 0; poll < 3; poll++) {
          for (const n of watched) {
            if (runningAt[n] === undefined && (await x.call('VM.get_power_state', vms[n])) === 'Running') runningAt[n] = (now - t0) / 1000;
          }
        }
      }
      expect(Object.keys(runningAt).sort()).toEqual([...watched].sort());
      expect(runningAt.first).toBeLessThanOrEqual(runningAt.second);
      // the order-2 VM waits for the order-1 VM's start_delay
      expect(runningAt.third - runningAt.second).toBeGreaterThanOrEqual(30);
      for (const n of watched) expect([hosts[0], hosts[1]]).toContain(await x.call('VM.get_resident_on', vms[n]));
      // the big protected VM that was there came back too; the unprotected one did not
      expect(await x.call('VM.get_power_state', vms.plain)).toBe('Halted');
      expect(await messages('HA_PROTECTED_VM_RESTART_FAILED')).toEqual([]);
    } finally {
      await ctl.clock.set({ frozen: false });
      await ctl.faults.delete({ id: rule.id });
    }
    expect(await x.call('host_metrics.get_live', await x.call('host.get_metrics', victim))).toBe(true);
    for (const n of Object.keys(vms)) await x.call('VM.hard_shutdown', vms[n]).catch(() => undefined);
  });

  it('a protected VM whose guest crashes is restarted; one shut down through the API is not', async () => {
    const vm = await newVm('crashy', 1 * GiB);
    await x.call('VM.set_ha_restart_priority', vm, 'restart');
    await x.call('VM.set_actions_after_crash', vm, 'destroy');
    await x.call('VM.start_on', vm, hosts[1], false, false);
    const domid = await x.call('VM.get_domid', vm);
    expect((await ctl.guests.crash({ vm })).action).toBe('destroy');
    let state = '';
    for (let i = 0; i < 200 && state !== 'Running'; i++) state = await x.call('VM.get_power_state', vm);
    expect(state).toBe('Running');
    expect(await x.call('VM.get_domid', vm)).not.toBe(domid);
    await x.call('VM.clean_shutdown', vm);
    for (let i = 0; i < 20; i++) expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    expect(await x.call('VM.get_ha_always_run', vm)).toBe(false);
  });
});

describe('a failed master', () => {
  it('hands its role to a survivor, which restarts the master\'s protected VMs', async () => {
    const [old, next] = hosts;
    const protectedOnMaster = await newVm('on-master', 1 * GiB);
    await x.call('VM.set_ha_restart_priority', protectedOnMaster, 'restart');
    await x.call('VM.start_on', protectedOnMaster, old, false, false);
    const rule = await ctl.faults.create({ match: { host: old }, effect: { host_down: true } });
    // the control API answers on every address
    const ctl1 = controlClient({ url: srv.urls[1], username: 'root', password: PASSWORD });
    try {
      const y = await connect(srv.urls[1], 'root', PASSWORD);
      expect(await y.call('pool.get_master', srv.emu.pool)).toBe(next);
      expect((await connectTo(srv.urls[2]).raw('session.login_with_password', 'root', PASSWORD).catch((e) => e.description))).toEqual(['HOST_IS_SLAVE', new URL(srv.urls[1]).hostname]);
      let state = '';
      for (let i = 0; i < 200 && state !== 'Running'; i++) state = await y.call('VM.get_power_state', protectedOnMaster);
      expect(state).toBe('Running');
      expect(await y.call('VM.get_resident_on', protectedOnMaster)).not.toBe(old);
      const nextUuid = await y.call('host.get_uuid', next);
      const transitions = (Object.values(await y.call('message.get_all_records')) as { name: string; obj_uuid: string }[]).filter((m) => m.name === 'POOL_MASTER_TRANSITION');
      expect(transitions.map((m) => m.obj_uuid)).toEqual([nextUuid]);
      x = y;
    } finally {
      await ctl1.faults.delete({ id: rule.id });
    }
    // back, as a member
    expect(await x.call('pool.is_slave', old)).toBe(true);
  });
});

describe('restarts held back, and a restart of the toolstack', () => {
  it('ha_prevent_restarts_for holds a restart back; the next toolstack\'s monitor makes it', async () => {
    const vm = await x.call('VM.create', vmArgs('held', memory(1 * GiB)));
    const vdi = await x.call('VDI.create', vdiArgs(shared, 8 * MiB, 'held-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await x.call('VM.set_ha_restart_priority', vm, 'restart');
    await x.call('VM.set_actions_after_crash', vm, 'destroy');
    await x.call('VM.start', vm, false, false);
    await x.call('pool.ha_prevent_restarts_for', 3600);
    await ctl.guests.crash({ vm });
    for (let i = 0; i < 50; i++) expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    expect(await x.call('VM.get_ha_always_run', vm)).toBe(true);
    await srv.toolstackRestart();
    x = await once(() => connect(srv.urls[1], 'root', PASSWORD));
    let state = '';
    for (let i = 0; i < 500 && state !== 'Running'; i++) state = await x.call('VM.get_power_state', vm);
    expect(state).toBe('Running');
    await x.call('VM.hard_shutdown', vm);
  });

  it('VM.start answers after the VM\'s start_delay, on the emulator clock', async () => {
    const vm = await x.call('VM.create', vmArgs('delayed', memory(1 * GiB)));
    await x.call('VM.set_start_delay', vm, 100);
    await once(() => ctl.clock.set({ frozen: true }));
    try {
      const task = await x.call('Async.VM.start', vm, false, false);
      let ps = '';
      for (let i = 0; i < 60 && ps !== 'Running'; i++) {
        await ctl.clock.advance({ seconds: 1 });
        ps = await x.call('VM.get_power_state', vm);
      }
      expect(ps).toBe('Running');
      expect(await x.call('task.get_status', task)).toBe('pending');
      await ctl.clock.advance({ seconds: 100 });
      let status = 'pending';
      for (let i = 0; i < 100 && status === 'pending'; i++) status = await x.call('task.get_status', task);
      expect(status).toBe('success');
    } finally {
      await ctl.clock.set({ frozen: false });
    }
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('pool.disable_ha', () => {
  it('turns HA off and keeps the HA VDIs for the next enable', async () => {
    const statefiles = (await pool()).ha_statefiles;
    await x.call('pool.disable_ha');
    expect(await pool()).toMatchObject({ ha_enabled: false, ha_plan_exists_for: 0 });
    expect(await x.call('VDI.get_type', statefiles[0])).toBe('ha_statefile');
    expect(await errorOf(x.call('pool.disable_ha'))).toEqual(['HA_NOT_ENABLED']);
    // host.emergency_ha_disable: soft is a no-op with HA off, else HA_NOT_ENABLED
    await x.call('host.emergency_ha_disable', true);
    expect(await errorOf(x.call('host.emergency_ha_disable', false))).toEqual(['HA_NOT_ENABLED']);
    // enabling again reuses them
    await x.call('pool.enable_ha', [shared], {});
    expect((await pool()).ha_statefiles).toEqual(statefiles);
    await x.call('pool.disable_ha');
  });
});

