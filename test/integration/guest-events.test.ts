// What happens inside a guest, driven through the control API (/xapi-emu/guests/...) and watched
// over JSON-RPC as a client sees it: a crash, a reboot or a shutdown from inside honour the VM's
// actions_after_crash / _reboot / _shutdown; the guest agent stopping leaves stale metrics
// (live false); an address change arrives through event.from; the load knob is kept.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { ControlApiError, controlClient, type ControlClient } from '../../server/control/client.js';
import { type Client, faultOf } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, NULL, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'guest-events';
let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let local: string;
let network: string;

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);

/** Waits, as a client does with event.from, until `check` holds. */
async function until<T>(what: string, check: () => Promise<T | undefined | null | false>, classes = ['vm', 'vm_guest_metrics']): Promise<T> {
  let token = '';
  for (let i = 0; i < 50; i++) {
    const v = await check();
    if (v) return v;
    token = (await x.call('event.from', classes, token, 5)).token;
  }
  throw new Error(`never: ${what}`);
}

/** A VM of the given guest profile (default: the pool's) with a disk and a NIC. */
async function newVm(name: string, other_config: Record<string, string> = {}, extra: Record<string, unknown> = {}) {
  const vm: string = await x.call('VM.create', vmArgs(name, { other_config, ...extra }));
  const vdi: string = await x.call('VDI.create', vdiArgs(local, 4 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  const vif: string = await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vif };
}

const addressOf = async (vm: string): Promise<string | undefined> => {
  const gm = (await rec('VM', vm)).guest_metrics;
  return gm === NULL ? undefined : (await rec('VM_guest_metrics', gm)).networks['0/ip'];
};

/** A running VM whose agent has reported its address. */
async function bootedVm(name: string, extra: Record<string, unknown> = {}) {
  const v = await newVm(name, {}, extra);
  await x.call('VM.start', v.vm, false, false);
  const ip = await until(`${name} has an address`, () => addressOf(v.vm));
  return { ...v, ip };
}

async function controlError(p: Promise<unknown>): Promise<{ status: number; code: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ControlApiError) return { status: e.status, code: e.code };
    throw e;
  }
  throw new Error('expected a control API error');
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { closeGrace: 0 }));
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  local = await localStorage(x);
  network = await xenbr0(x);
});

afterAll(async () => {
  await srv?.close();
});

describe('VM.set_actions_after_*', () => {
  it('set_actions_after_crash stores any on_crash_behaviour; others are refused by their enum', async () => {
    const { vm } = await newVm('actions');
    for (const v of ['destroy', 'coredump_and_destroy', 'restart', 'coredump_and_restart', 'preserve', 'rename_restart']) {
      await x.call('VM.set_actions_after_crash', vm, v);
      expect(await x.call('VM.get_actions_after_crash', vm)).toBe(v);
    }
    const bad = await faultOf(x.call('VM.set_actions_after_crash', vm, 'explode'));
    expect(bad[0]).not.toBe('NOT_IMPLEMENTED');
    expect(await x.call('VM.get_actions_after_crash', vm)).toBe('rename_restart');
    await x.call('VM.set_actions_after_reboot', vm, 'destroy');
    expect(await x.call('VM.get_actions_after_reboot', vm)).toBe('destroy');
    expect((await faultOf(x.call('VM.set_actions_after_shutdown', vm, 'preserve')))[0]).not.toBe('NOT_IMPLEMENTED');
    expect(await x.call('VM.get_actions_after_shutdown', vm)).toBe('destroy');
  });
});

describe('a crash honours actions_after_crash', () => {
  it('restart: a new domain, whose guest boots and reports again', async () => {
    const { vm, ip } = await bootedVm('crash-restart');
    await x.call('VM.set_actions_after_crash', vm, 'restart');
    const before = await rec('VM', vm);
    expect(await ctl.guests.crash({ vm })).toEqual({ vm, action: 'restart' });
    const after = await rec('VM', vm);
    expect(after.power_state).toBe('Running');
    expect(after.domid).not.toBe(before.domid);
    // xapi keeps the record across the domain's restart; the new boot's agent reports the same lease
    expect(after.guest_metrics).toBe(before.guest_metrics);
    await until('agent after restart', async () => (await ctl.guests.get({ vm })).agent === 'running');
    expect(await addressOf(vm)).toBe(ip);
  });

  it('destroy and coredump_and_destroy: the VM halts', async () => {
    for (const action of ['destroy', 'coredump_and_destroy']) {
      const { vm } = await bootedVm(`crash-${action}`);
      await x.call('VM.set_actions_after_crash', vm, action);
      expect((await ctl.guests.crash({ vm })).action).toBe(action);
      const r = await rec('VM', vm);
      expect(r).toMatchObject({ power_state: 'Halted', domid: -1, resident_on: NULL });
      expect(r.allowed_operations).toContain('start');
    }
  });

  it('preserve: the crashed domain stays, paused', async () => {
    const { vm } = await bootedVm('crash-preserve');
    await x.call('VM.set_actions_after_crash', vm, 'preserve');
    const domid = (await rec('VM', vm)).domid;
    await ctl.guests.crash({ vm });
    expect(await rec('VM', vm)).toMatchObject({ power_state: 'Paused', domid });
    await x.call('VM.hard_shutdown', vm);
  });

  it('a halted VM cannot crash', async () => {
    const { vm } = await newVm('crash-halted');
    expect(await controlError(ctl.guests.crash({ vm }))).toEqual({ status: 400, code: 'VM_BAD_POWER_STATE' });
  });
});

describe('reboot and shutdown from inside', () => {
  it('a reboot with actions_after_reboot=restart makes a new domain; =destroy halts', async () => {
    const { vm } = await bootedVm('reboot-inside');
    const domid = (await rec('VM', vm)).domid;
    expect(await ctl.guests.reboot({ vm })).toEqual({ vm, action: 'restart' });
    const r = await rec('VM', vm);
    expect(r.power_state).toBe('Running');
    expect(r.domid).not.toBe(domid);
    await until('agent after reboot', () => addressOf(vm));
    await x.call('VM.set_actions_after_reboot', vm, 'destroy');
    expect((await ctl.guests.reboot({ vm })).action).toBe('destroy');
    expect((await rec('VM', vm)).power_state).toBe('Halted');
  });

  it('a shutdown with actions_after_shutdown=destroy halts; =restart boots again', async () => {
    const { vm } = await bootedVm('shutdown-inside');
    expect((await ctl.guests.shutdown({ vm })).action).toBe('destroy');
    expect((await rec('VM', vm)).power_state).toBe('Halted');
    await x.call('VM.set_actions_after_shutdown', vm, 'restart');
    await x.call('VM.start', vm, false, false);
    const domid = (await rec('VM', vm)).domid;
    expect((await ctl.guests.shutdown({ vm })).action).toBe('restart');
    expect(await rec('VM', vm)).toMatchObject({ power_state: 'Running' });
    expect((await rec('VM', vm)).domid).not.toBe(domid);
    await x.call('VM.hard_shutdown', vm);
  });

  it('a VM without an OS cannot shut itself down, but its firmware can crash', async () => {
    const { vm } = await newVm('no-os', { 'xapi-emu-guest-profile': 'no-os' });
    await x.call('VM.start', vm, false, false);
    expect(await controlError(ctl.guests.shutdown({ vm }))).toEqual({ status: 409, code: 'NO_OS' });
    expect(await controlError(ctl.guests.reboot({ vm }))).toEqual({ status: 409, code: 'NO_OS' });
    await x.call('VM.set_actions_after_crash', vm, 'destroy');
    await ctl.guests.crash({ vm });
    expect((await rec('VM', vm)).power_state).toBe('Halted');
  });
});

describe('the guest agent', () => {
  it('stopped: the metrics stay, live false, and start reports again', async () => {
    const { vm } = await bootedVm('agent-stop');
    const gm = (await rec('VM', vm)).guest_metrics;
    const before = await rec('VM_guest_metrics', gm);
    expect(before.live).toBe(true);
    expect((await ctl.guests.agent({ vm, running: false })).agent).toBe('stopped');
    const stale = await rec('VM_guest_metrics', gm);
    expect(stale.live).toBe(false);
    expect(stale.networks).toEqual(before.networks);
    expect(stale.last_updated).toBe(before.last_updated);
    // a stopped agent reports no address change
    expect(await controlError(ctl.guests.ip({ vm }))).toEqual({ status: 409, code: 'GUEST_AGENT_STOPPED' });
    const st = await ctl.guests.agent({ vm, running: true });
    expect(st.agent).toBe('running');
    expect((await rec('VM_guest_metrics', gm)).live).toBe(true);
  });

  it('an address change reaches event.from subscribers, and a given address is kept', async () => {
    const { vm, ip } = await bootedVm('ip-change');
    const gm = (await rec('VM', vm)).guest_metrics;
    const { token } = await x.call('event.from', ['vm_guest_metrics'], '', 0);
    const changed = await ctl.guests.ip({ vm });
    expect(changed.address).not.toBe(ip);
    const ev = await x.call('event.from', ['vm_guest_metrics'], token, 5);
    const mod = ev.events.find((e: any) => e.ref === gm && e.operation === 'mod');
    expect(mod.snapshot.networks['0/ip']).toBe(changed.address);
    expect(mod.snapshot.networks['0/ipv4/0']).toBe(changed.address);
    expect((await ctl.guests.ip({ vm, vif: '0', address: '10.0.200.7' })).address).toBe('10.0.200.7');
    expect(await addressOf(vm)).toBe('10.0.200.7');
    // another VM on the network cannot take it
    const other = await bootedVm('ip-other');
    expect(await controlError(ctl.guests.ip({ vm: other.vm, address: '10.0.200.7' }))).toEqual({ status: 409, code: 'ADDRESS_IN_USE' });
    expect(await controlError(ctl.guests.ip({ vm: other.vm, address: '10.0.300.7' }))).toEqual({ status: 409, code: 'INVALID_ADDRESS' });
    expect(await controlError(ctl.guests.ip({ vm: other.vm, vif: '5' }))).toEqual({ status: 409, code: 'NO_SUCH_NIC' });
  });

  it('the load knob is kept and read back', async () => {
    const { vm } = await newVm('load');
    expect(await ctl.guests.getLoad({ vm })).toEqual({ cpu: 0, disk: 0, network: 0 });
    expect(await ctl.guests.setLoad({ vm, cpu: 0.75, network: 1e6 })).toEqual({ cpu: 0.75, disk: 0, network: 1e6 });
    expect(await ctl.guests.setLoad({ vm, disk: 5e6 })).toEqual({ cpu: 0.75, disk: 5e6, network: 1e6 });
    expect((await ctl.guests.get({ vm })).load).toEqual({ cpu: 0.75, disk: 5e6, network: 1e6 });
    expect((await controlError(ctl.guests.setLoad({ vm, cpu: 2 }))).code).toBe('INVALID_INPUT');
    expect(await controlError(ctl.guests.get({ vm: 'OpaqueRef:nope' }))).toEqual({ status: 404, code: 'HANDLE_INVALID' });
  });

  it('a VM may be named by its name label when no other VM has it', async () => {
    const { vm } = await newVm('named-once');
    expect((await ctl.guests.get({ vm: 'named-once' })).vm).toBe(vm);
    await newVm('named-twice');
    await newVm('named-twice');
    expect(await controlError(ctl.guests.get({ vm: 'named-twice' }))).toEqual({ status: 409, code: 'AMBIGUOUS_NAME' });
    expect(await controlError(ctl.guests.get({ vm: 'named-never' }))).toEqual({ status: 404, code: 'UUID_INVALID' });
  });
});
