// Xen Orchestra's reads of a host's other faces, done the way xo-server and XO Lite do them through
// the npm `xen-api` client: the stats of xo-server's xapi-stats (host.get_servertime, then
// GET /rrd_updates as JSON from "now minus an archive's span plus a step", legends split as
// AVERAGE:<type>:<uuid>:<metric>, the step checked against the granularity asked), and the plugins
// xo-server and XO Lite call, each answer parsed as they parse it (JSON.parse, `!== 'false'`),
// synchronously and as a task whose result is an XML-RPC value.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import type { Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'xo-host-faces';

/** XO's client's getResource (not in its type declarations) */
interface XoHttp {
  getResource(path: string, opts: { query: Record<string, string | number> }): Promise<{ body: { text(): Promise<string> } }>;
}

let srv: RunningServer;
let x: Client;
let xapi: Xapi;
let url: string;
let host: string;
let hostUuid: string;
let vm: string;
let vmUuid: string;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  url = srv.urls[0];
  host = (await x.call('host.get_all'))[0];
  hostUuid = await x.call('host.get_uuid', host);
  // a guest with its drivers and agent, its data disk at position 4 (xvde: the names XO's
  // vbd_xvd<letter>_* patterns match) and a NIC
  vm = await x.call('VM.create', vmArgs('xo-stats', { other_config: { 'xapi-emu-guest-profile': 'agent' }, VCPUs_max: 2, VCPUs_at_startup: 2 }));
  const vdi = await x.call('VDI.create', vdiArgs(await localStorage(x), 64 * MiB));
  await x.call('VBD.create', vbdArgs(vm, vdi, '4'));
  await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
  await x.call('VM.start', vm, false, false);
  vmUuid = await x.call('VM.get_uuid', vm);
  const control = controlClient({ url, username: 'root', password: PASSWORD });
  await control.guests.setLoad({ vm, cpu: 0.5, network: 1 << 20 });
  await control.clock.advance({ seconds: 60 });
  // the guest writes 8 MiB to its data disk, then a step passes
  const r = await fetch(new URL(`/xapi-emu/guest/disk?session_id=${x.session}&vm=${vmUuid}&device=4&offset=0`, url), {
    method: 'POST', body: new Uint8Array(8 * MiB).fill(7), headers: { 'content-type': 'application/octet-stream' },
  });
  expect(r.status).toBe(200);
  await r.arrayBuffer();
  await control.clock.advance({ seconds: 5 });
  xapi = createClient({ url, auth: { user: 'root', password: PASSWORD }, watchEvents: ['task', 'host', 'pool'], debounce: 0 });
  await xapi.connect();
  await xapi.objectsFetched;
});

afterAll(async () => {
  await xapi?.disconnect();
  await srv?.close();
});

/** XO's parseDateTime on host.get_servertime's answer: seconds since the epoch. */
const serverTime = async (): Promise<number> => {
  const t = String(await xapi.call('host.get_servertime', host));
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/.exec(t);
  expect(m).not.toBeNull();
  const [, y, mo, d, h, mi, s] = m!.map(Number);
  return Date.UTC(y, mo - 1, d, h, mi, s) / 1000;
};

/** xo-server's _getAndUpdateStats for one object: its metrics by name, oldest value first, as numbers or null. */
async function statsOf(uuid: string, step: number, points: number) {
  const now = await serverTime();
  const res = await (xapi as unknown as XoHttp).getResource('/rrd_updates', {
    query: { cf: 'AVERAGE', host: 'true', interval: step, json: 'true', start: now - step * points + step },
  });
  const json = JSON.parse(await res.body.text());
  expect(+json.meta.step).toBe(step);
  const rows = [...json.data].reverse();
  const out = new Map<string, (number | null)[]>();
  json.meta.legend.forEach((legend: string, i: number) => {
    const m = /^AVERAGE:([^:]+):(.+):(.+)$/.exec(legend);
    expect(m, legend).not.toBeNull();
    if (m![2] !== uuid) return;
    out.set(m![3], rows.map((r: { values: (number | string)[] }) => {
      const v = +r.values[i];
      return Number.isNaN(v) ? null : v;
    }));
  });
  return out;
}

const last = (xs: (number | null)[] | undefined) => xs?.filter((v) => v !== null).at(-1);

describe('xo-server stats (xapi-stats) over /rrd_updates', () => {
  it.each([
    ['hours', 3600, 168],
    ['days', 86400, 366],
  ])('host stats at %s granularity: the step asked and the host\'s metrics (no consolidated value yet in a new pool)', async (_, step, points) => {
    const stats = await statsOf(hostUuid, step, points);
    for (const name of ['memory_total_kib', 'memory_free_kib', 'cpu0', 'loadavg']) expect(stats.get(name)?.length, name).toBeGreaterThan(0);
  });

  it.each([
    ['seconds', 5, 120],
    ['minutes', 60, 120],
  ])('host stats at %s granularity: the step asked, memory as host_metrics says', async (_, step, points) => {
    const stats = await statsOf(hostUuid, step, points);
    const metrics = await x.call('host_metrics.get_record', await x.call('host.get_metrics', host));
    expect(last(stats.get('memory_total_kib'))! * 1024).toBe(+metrics.memory_total);
    expect(last(stats.get('memory_free_kib'))).toBeGreaterThan(0);
    expect(stats.has('cpu0')).toBe(true);
    expect(last(stats.get('running_vcpus'))).toBe(2);
  });

  it('VM stats: vCPUs at the guest\'s load, memory as VM_metrics says, the disk writes and NIC traffic seen', async () => {
    const stats = await statsOf(vmUuid, 5, 120);
    expect(last(stats.get('cpu0'))! * 100).toBeGreaterThan(40);
    expect(last(stats.get('cpu1'))! * 100).toBeLessThanOrEqual(100);
    const actual = +(await x.call('VM_metrics.get_memory_actual', await x.call('VM.get_metrics', vm)));
    expect(last(stats.get('memory'))).toBe(actual);
    expect(last(stats.get('memory_internal_free'))).toBeGreaterThan(0);
    // XO's xvds.w and ioThroughput.w for disk "e"
    const written = stats.get('vbd_xvde_write')!.filter((v) => v !== null).reduce((a, v) => a + v! * 5, 0);
    // spread evenly from the domain's start, whose first step is partial
    expect(written).toBeGreaterThan(0.95 * 8 * MiB);
    expect(written).toBeLessThan(1.2 * 8 * MiB);
    expect(last(stats.get('vbd_xvde_iops_write'))).toBeGreaterThan(0);
    expect(last(stats.get('vif_0_rx'))).toBeGreaterThan(0);
  });
});

describe('a disk hot-plugged into a running VM', () => {
  it('its first writes show in the VBD rates of the step they fall in', async () => {
    const control = controlClient({ url, username: 'root', password: PASSWORD });
    await statsOf(vmUuid, 5, 120); // the VM's RRD is read: its devices' counters are being followed
    const vdi = await x.call('VDI.create', vdiArgs(await localStorage(x), 16 * MiB, 'hot'));
    const vbd = await x.call('VBD.create', vbdArgs(vm, vdi, '5'));
    await x.call('VBD.plug', vbd);
    const r = await fetch(new URL(`/xapi-emu/guest/disk?session_id=${x.session}&vm=${vmUuid}&device=5&offset=0`, url), {
      method: 'POST', body: new Uint8Array(4 * MiB).fill(9), headers: { 'content-type': 'application/octet-stream' },
    });
    expect(r.status).toBe(200);
    await r.arrayBuffer();
    await control.clock.advance({ seconds: 5 });
    const stats = await statsOf(vmUuid, 5, 120);
    const written = stats.get('vbd_xvdf_write')!.filter((v) => v !== null).reduce((a, v) => a + v! * 5, 0);
    // the span since the last reading is the step plus the wall time the plug and the write took
    // (the clock runs at wall speed): when it straddles two steps, both rows carry its rate, as
    // rrdtool's consolidation does, so up to twice the bytes add up here
    expect(written).toBeGreaterThan(0.5 * 4 * MiB);
    expect(written).toBeLessThan(2.2 * 4 * MiB);
  });
});

describe('host.call_plugin as XO and XO Lite call it', () => {
  const parseJson = (s: unknown) => JSON.parse(String(s));
  it.each([
    ['updater.py', 'check_update', (v: unknown) => expect(Array.isArray(v)).toBe(true)],
    ['lsblk.py', 'list_block_devices', (v: any) => expect(v.blockdevices.length).toBeGreaterThan(0)],
    ['zfs.py', 'list_zfs_pools', (v: unknown) => expect(v).toEqual({})],
    ['raid.py', 'check_raid_pool', (v: unknown) => expect(v).toEqual({})],
    ['smartctl.py', 'health', (v: Record<string, string>) => expect(Object.values(v)).toContain('PASSED')],
    ['smartctl.py', 'information', (v: Record<string, unknown>) => expect(Object.keys(v).length).toBeGreaterThan(0)],
  ])('%s %s parses as JSON, called and as a task', async (plugin, fn, check) => {
    check(parseJson(await xapi.call('host.call_plugin', host, plugin, fn, {})));
    check(parseJson(await xapi.callAsync('host.call_plugin', host, plugin, fn, {})));
  });

  it('hyperthreading.py get_hyperthreading answers a boolean XO compares to "false"', async () => {
    expect(['true', 'false']).toContain(await xapi.call('host.call_plugin', host, 'hyperthreading.py', 'get_hyperthreading', {}));
  });

  it('a plugin the host lacks: XENAPI_MISSING_PLUGIN, which XO takes for "not available"', async () => {
    await expect(xapi.call('host.call_plugin', host, 'ipmitool.py', 'is_ipmi_device_available', {})).rejects.toMatchObject({ code: 'XENAPI_MISSING_PLUGIN' });
  });
});
