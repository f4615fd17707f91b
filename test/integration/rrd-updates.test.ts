// The simulated xcp-rrdd through GET /rrd_updates, read as Xen Orchestra reads it
// (xo-server's xapi-stats: `?cf=AVERAGE&host=true&interval=<s>&json=true&start=<ts>`, every number
// a string), and as rrdtool's xport in XML; values that follow a guest's real
// disk writes through the datapath as the clock is advanced; host.get_servertime.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/index.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'rrd-test';
let srv: RunningServer;
let url: string;
let x: Client;
let hostUuid: string;

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

interface Xport {
  meta: { start: number; step: number; end: number; rows: number; columns: number; legend: string[] };
  data: { t: number; values: number[] }[];
}

async function rrdUpdates(params: Record<string, string | number>, json: boolean): Promise<Xport> {
  const r = await fetch(new URL(`/rrd_updates?${q({ session_id: x.session, ...params, ...(json ? { json: 'true' } : {}) })}`, url));
  expect(r.status).toBe(200);
  const text = await r.text();
  if (json) {
    expect(r.headers.get('content-type')).toBe('application/json');
    const j = JSON.parse(text);
    // xapi writes every number of the JSON as a string
    expect(typeof j.meta.end).toBe('string');
    return {
      meta: { start: +j.meta.start, step: +j.meta.step, end: +j.meta.end, rows: +j.meta.rows, columns: +j.meta.columns, legend: j.meta.legend },
      data: j.data.map((d: any) => ({ t: +d.t, values: d.values.map(Number) })),
    };
  }
  expect(r.headers.get('content-type')).toBe('text/xml');
  return parseXport(text);
}

/** rrdtool's xport read element by element, as rrdtool's own readers do */
function parseXport(xml: string): Xport {
  expect(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<xport><meta>')).toBe(true);
  const one = (tag: string) => Number(new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml)![1]);
  const meta = { start: one('start'), step: one('step'), end: one('end'), rows: one('rows'), columns: one('columns'),
    legend: [...xml.matchAll(/<entry>([^<]*)<\/entry>/g)].map((m) => m[1]) };
  const data = [...xml.matchAll(/<row><t>(\d+)<\/t>((?:<v>[^<]*<\/v>)*)<\/row>/g)].map((m) => ({
    t: Number(m[1]), values: [...m[2].matchAll(/<v>([^<]*)<\/v>/g)].map((v) => Number(v[1])),
  }));
  return { meta, data };
}

const column = (u: Xport, entry: string) => {
  const i = u.meta.legend.indexOf(entry);
  expect(i, `${entry} in the legend`).toBeGreaterThanOrEqual(0);
  return u.data.map((r) => r.values[i]);
};

async function advance(seconds: number) {
  await controlClient({ url, session: x.session }).clock.advance({ seconds });
}

async function serverTime(): Promise<number> {
  const host: string = (await x.call('host.get_all'))[0];
  const t: string = await x.call('host.get_servertime', host);
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d):(\d\d):(\d\d)Z$/.exec(t)!;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) / 1000;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { seed: 'rrd-updates' }));
  url = srv.urls[0];
  hostUuid = await x.call('host.get_uuid', (await x.call('host.get_all'))[0]);
});

afterAll(async () => {
  await srv?.close();
});

describe('GET /rrd_updates', () => {
  let vm: string;
  let vmUuid: string;

  it('gives the host and its running VMs, named as xcp-rrdd names them, newest row first', async () => {
    const local = await localStorage(x);
    vm = await x.call('VM.create', vmArgs('rrd-vm', { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 2, VCPUs_at_startup: 2 }));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 16 * MiB, 'rrd-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
    await x.call('VM.start', vm, false, false);
    vmUuid = await x.call('VM.get_uuid', vm);
    await advance(30);

    const now = await serverTime();
    const u = await rrdUpdates({ cf: 'AVERAGE', host: 'true', interval: 5, start: now - 590 }, true);
    expect(u.meta.step).toBe(5);
    expect(u.meta.columns).toBe(u.meta.legend.length);
    expect(u.meta.rows).toBe(u.data.length);
    expect(u.meta.end % 5).toBe(0);
    expect(now - u.meta.end).toBeLessThan(10);
    for (const e of ['cpu0', 'cpu_avg', 'memory_total_kib', 'memory_free_kib', 'loadavg']) expect(u.meta.legend).toContain(`AVERAGE:host:${hostUuid}:${e}`);
    for (const e of ['cpu0', 'cpu1', 'memory', 'memory_target', 'vbd_hda_read', 'vbd_hda_write', 'vbd_hda_iops_write']) expect(u.meta.legend).toContain(`AVERAGE:vm:${vmUuid}:${e}`);
    // rows newest first, one step apart
    for (let i = 1; i < u.data.length; i++) expect(u.data[i - 1].t - u.data[i].t).toBe(5);
    expect(u.data[0].t).toBe(u.meta.end);
    // an idle guest: its vCPUs busy a little, never more than the whole
    const cpu = column(u, `AVERAGE:vm:${vmUuid}:cpu0`).slice(0, 5);
    for (const v of cpu) expect(v).toBeGreaterThanOrEqual(0), expect(v).toBeLessThan(0.05);
    // memory from the domain
    const mem = column(u, `AVERAGE:vm:${vmUuid}:memory`)[0];
    expect(mem).toBe(Number(await x.call('VM_metrics.get_memory_actual', await x.call('VM.get_metrics', vm))));
    const total = column(u, `AVERAGE:host:${hostUuid}:memory_total_kib`)[0];
    expect(total * 1024).toBe(Number(await x.call('host_metrics.get_memory_total', await x.call('host.get_metrics', (await x.call('host.get_all'))[0]))));
  });

  it("follows the guest's disk writes through the datapath (XML, as rrdtool's xport)", async () => {
    await advance(10);
    const before = await serverTime();
    await rrdUpdates({ start: before - 10, host: 'true' }, false);
    const data = Buffer.alloc(2 * MiB, 7);
    const w = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset: 0 })}`, url), {
      method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
    });
    expect(w.status).toBe(200);
    await advance(60);
    const u = await rrdUpdates({ start: before, cf: 'AVERAGE', interval: 5, vm_uuid: vmUuid }, false);
    expect(u.meta.legend.every((e) => e.startsWith(`AVERAGE:vm:${vmUuid}:`))).toBe(true);
    const writes = column(u, `AVERAGE:vm:${vmUuid}:vbd_hda_write`);
    expect(Math.max(...writes)).toBeGreaterThan(0);
    // bytes per second over the steps since the write add up to the bytes written
    const bytes = writes.filter((v) => !Number.isNaN(v)).reduce((a, v) => a + v * 5, 0);
    expect(bytes).toBeGreaterThan(data.length * 0.8);
    expect(bytes).toBeLessThan(data.length * 1.2);
    const reads = column(u, `AVERAGE:vm:${vmUuid}:vbd_hda_read`);
    expect(Math.max(...reads)).toBe(0);
  });

  it('follows the load set through the control API', async () => {
    await controlClient({ url, session: x.session }).guests.setLoad({ vm, cpu: 0.5, disk: 0, network: 1_000_000 });
    const t = await serverTime();
    await advance(60);
    const u = await rrdUpdates({ start: t + 5, cf: 'AVERAGE', interval: 5, host: 'true' }, true);
    const cpu = column(u, `AVERAGE:vm:${vmUuid}:cpu1`);
    for (const v of cpu) expect(v).toBeGreaterThan(0.45), expect(v).toBeLessThanOrEqual(0.5);
    const rx = column(u, `AVERAGE:vm:${vmUuid}:vif_0_rx`);
    for (const v of rx) expect(v).toBeGreaterThan(400_000), expect(v).toBeLessThan(600_000);
    // the host carries its guests' traffic on its management interface
    const pif = column(u, `AVERAGE:host:${hostUuid}:pif_eth0_tx`);
    for (const v of pif) expect(v).toBeGreaterThan(400_000);
  });

  it('picks the archive for the span asked, with MIN and MAX beside AVERAGE', async () => {
    const now = await serverTime();
    const u = await rrdUpdates({ start: now - 3600, interval: 60, host: 'true' }, true);
    expect(u.meta.step).toBe(60);
    expect(u.meta.legend).toContain(`MIN:host:${hostUuid}:cpu0`);
    expect(u.meta.legend).toContain(`MAX:host:${hostUuid}:cpu0`);
    // a negative start counts back from the latest update
    const rel = await rrdUpdates({ start: -60, cf: 'MAX', host: 'true' }, false);
    expect(rel.meta.step).toBe(60);
    expect(rel.meta.legend.every((e) => e.startsWith('MAX:'))).toBe(true);
    expect(rel.meta.end - rel.data[rel.data.length - 1].t).toBeLessThanOrEqual(60);
  });

  it('answers 400 without start, 401 without a session', async () => {
    expect((await fetch(new URL(`/rrd_updates?${q({ session_id: x.session, host: 'true' })}`, url))).status).toBe(400);
    expect((await fetch(new URL(`/rrd_updates?${q({ start: 0, host: 'true' })}`, url))).status).toBe(401);
  });
});

describe('host.get_servertime, get_server_localtime', () => {
  it("give the emulator's clock", async () => {
    const host: string = (await x.call('host.get_all'))[0];
    const before = await serverTime();
    await advance(3600);
    const after = await serverTime();
    expect(after - before).toBeGreaterThanOrEqual(3600);
    expect(after - before).toBeLessThan(3700);
    expect(await x.call('host.get_server_localtime', host)).toMatch(/^\d{8}T\d\d:\d\d:\d\d$/);
  });
});
