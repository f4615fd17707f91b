// host.destroy, host.power_on and pool.sync_database on a pool of two hosts in one process, with a
// host failed through the control API or shut down by host.shutdown.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { vmArgs } from './helpers/records.js';

const PASSWORD = 'join-hosts-test';
let srv: RunningServer;
let x: Client;
let ctl: ControlClient;

beforeAll(async () => {
  srv = await startServer({ host: '127.0.8.1', hosts: 3, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, memory: true });
  x = await connect(srv.urls[0], 'root', PASSWORD);
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
});

afterAll(async () => {
  await srv?.close();
});

const live = async (h: string) => x.call('host_metrics.get_live', await x.call('host.get_metrics', h));

describe('host.power_on', () => {
  it('is refused for a live host, fails as the plugin does without a mode, boots a shut-down host', async () => {
    const member = srv.emu.hosts[1];
    expect(await faultOf(x.call('host.power_on', member))).toEqual(['HOST_IS_LIVE', member]);
    await x.call('host.disable', member);
    await x.call('host.shutdown', member);
    expect(await live(member)).toBe(false);
    expect(await x.call('host.get_allowed_operations', member)).toContain('power_on');
    expect(await faultOf(x.call('host.power_on', member))).toEqual(['XENAPI_PLUGIN_FAILURE', 'main', 'HOST_POWER_ON_NOT_CONFIGURED', '']);
    await x.call('host.set_power_on_mode', member, 'IPMI', {});
    expect(await faultOf(x.call('host.power_on', member))).toEqual(['XENAPI_PLUGIN_FAILURE', 'main', 'KeyError', "'power_on_ip'"]);
    await x.call('host.set_power_on_mode', member, 'wake-on-lan', {});
    await x.call('host.power_on', member);
    expect(await live(member)).toBe(true);
    expect(await x.call('host.get_enabled', member)).toBe(true);
  });

  it('leaves a host failed through the control API down, as the plugin gives up waiting', async () => {
    const member = srv.emu.hosts[1];
    const rule = await ctl.faults.create({ match: { host: member }, effect: { host_down: true } });
    try {
      await x.call('host.set_power_on_mode', member, 'wake-on-lan', {});
      expect(await faultOf(x.call('host.power_on', member))).toEqual(['INTERNAL_ERROR', 'The host failed to power on.']);
      expect(await live(member)).toBe(false);
    } finally {
      await ctl.faults.delete({ id: rule.id });
    }
    expect(await live(member)).toBe(true);
  });
});

describe('host.destroy', () => {
  it("refuses a live host, then one with resident VMs, then forgets a dead host's record", async () => {
    const member = srv.emu.hosts[2];
    const address = await x.call('host.get_address', member);
    expect(await faultOf(x.call('host.destroy', member))).toEqual(['HOST_IS_LIVE', member]);
    expect(await faultOf(x.call('host.destroy', srv.emu.master))).toEqual(['HOST_IS_LIVE', srv.emu.master]);
    const vm: string = await x.call('VM.create', vmArgs('on-member'));
    await x.call('VM.start_on', vm, member, false, false);
    await ctl.faults.create({ match: { host: member }, effect: { host_down: true } });
    expect(await faultOf(x.call('host.destroy', member))).toEqual(['HOST_HAS_RESIDENT_VMS', member]);
    await x.call('host.declare_dead', member);
    const pifsBefore = (await x.call('PIF.get_all')).length;
    await x.call('host.destroy', member);
    expect(await x.call('host.get_all')).not.toContain(member);
    expect((await faultOf(x.call('host.get_record', member)))[0]).toBe('HANDLE_INVALID');
    expect((await x.call('PIF.get_all')).length).toBe(pifsBefore - 1);
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    const pool = (await x.call('pool.get_all'))[0];
    expect((await x.call('pool.get_cpu_info', pool)).cpu_count).toBe('16');
    // its local storage stays, detached
    const detached = (await x.call('SR.get_all_records_where', 'field "type" = "ext"')) as Record<string, any>;
    expect(Object.values(detached).filter((s) => s.PBDs.length === 0)).toHaveLength(1);
    expect(address).toBe('127.0.8.3');
  });
});

describe('pool.sync_database', () => {
  it('answers once the database is on disk', async () => {
    expect(await x.call('pool.sync_database')).toBeFalsy();
    const task = await x.call('Async.pool.sync_database');
    let status = 'pending';
    for (let i = 0; i < 1000 && status === 'pending'; i++) status = await x.call('task.get_status', task);
    expect(status).toBe('success');
  });
});
