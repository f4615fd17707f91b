// With HA on, the operations that would take away the failover plan for the host failures the pool
// tolerates fail with HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN, where xapi checks it
// (message_forwarding.ml): VM.start_on / VM.start placing a VM, host.disable,
// host.evacuate; the same operations pass when they keep the plan, or with HA off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool } from './helpers/pool.js';
import { MiB, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'ha-plan-test';
const BREAKS = ['HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN'];

let srv: RunningServer;
let x: Client;
let shared: string;
let hosts: string[];
/** a VM size of which one fits on an empty host, two do not */
let size: number;

async function newVm(name: string, mem: number): Promise<string> {
  const vm: string = await x.call('VM.create', vmArgs(name, memory(mem)));
  const vdi: string = await x.call('VDI.create', vdiArgs(shared, 8 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  return vm;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, nbdPort: null }));
  hosts = srv.urls.map((u) => srv.emu.hostByAddress(new URL(u).hostname)!);
  shared = await createSharedSr(x, srv, hosts[0]);
  const free = Math.min(...(await Promise.all(hosts.map((h) => x.call('host.compute_free_memory', h)))));
  size = Math.floor((free * 0.6) / MiB) * MiB;
});

afterAll(async () => {
  await srv?.close();
});

describe('the failover plan guards the operations that would break it', () => {
  let guarded: string;
  let other: string;

  it('with HA off nothing is checked', async () => {
    other = await newVm('other', size);
    await x.call('VM.start_on', other, hosts[1], false, false);
    await x.call('host.disable', hosts[1]);
    await x.call('host.enable', hosts[1]);
    await x.call('VM.hard_shutdown', other);
  });

  it('a protected VM on one host: the other must keep room for it', async () => {
    await x.call('pool.enable_ha', [shared], {});
    guarded = await newVm('guarded', size);
    await x.call('VM.set_ha_restart_priority', guarded, 'restart');
    // starting it is placing a new protected VM: its host and the other hold one each
    await x.call('VM.start_on', guarded, hosts[0], false, false);
    await x.call('pool.set_ha_host_failures_to_tolerate', srv.emu.pool, 1);
    expect(await x.call('pool.get_ha_plan_exists_for', srv.emu.pool)).toBe(1);

    // the only host it could fail over to may not be disabled or evacuated
    expect(await faultOf(x.call('host.disable', hosts[1]))).toEqual(BREAKS);
    expect(await x.call('host.get_enabled', hosts[1])).toBe(true);
    expect(await faultOf(x.call('host.evacuate', hosts[1]))).toEqual(BREAKS);
    expect(await x.call('host.get_current_operations', hosts[1])).toEqual({});

    // an unprotected VM may not take that room: started there, or migrated there
    expect(await faultOf(x.call('VM.start_on', other, hosts[1], false, false))).toEqual(BREAKS);
    expect(await x.call('VM.get_power_state', other)).toBe('Halted');
    expect(await x.call('VM.get_current_operations', other)).toEqual({});
    // a small one leaves room enough, on either host
    const small = await newVm('small', Math.floor(size / 6 / MiB) * MiB);
    await x.call('VM.start_on', small, hosts[1], false, false);
    expect(await x.call('VM.get_resident_on', small)).toBe(hosts[1]);
    await x.call('VM.hard_shutdown', small);
  });

  it('a second protected VM that would leave no room for the first is refused', async () => {
    const second = await newVm('second', size);
    await x.call('VM.set_ha_restart_priority', second, 'restart');
    expect(await faultOf(x.call('VM.start_on', second, hosts[1], false, false))).toEqual(BREAKS);
    expect(await x.call('VM.get_record', second)).toMatchObject({ power_state: 'Halted', ha_always_run: false });
    expect(await x.call('pool.ha_failover_plan_exists', 1)).toBe(true);
    await x.call('VM.set_ha_restart_priority', second, '');
  });

  it('with overcommit allowed the same operations pass', async () => {
    await x.call('pool.set_ha_allow_overcommit', srv.emu.pool, true);
    await x.call('VM.start_on', other, hosts[1], false, false);
    expect(await x.call('VM.get_resident_on', other)).toBe(hosts[1]);
    await x.call('VM.hard_shutdown', other);
    await x.call('pool.set_ha_allow_overcommit', srv.emu.pool, false);
    await x.call('pool.disable_ha');
  });
});

