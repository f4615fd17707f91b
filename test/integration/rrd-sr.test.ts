// The per-SR data sources rrdp-iostat puts on the host's RRD (<key>_<first 8 chars of the SR
// uuid>), following a guest's real disk writes through its tapdisk, and the figures xapi reports
// about itself (xapi_*), read through /rrd_updates and the host's data-source messages.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/index.js';
import type { Client } from './helpers/jsonrpc.js';
import { localStorage, startPool } from './helpers/pool.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'rrd-sr';
let srv: RunningServer;
let url: string;
let x: Client;
let host: string;
let hostUuid: string;

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

interface Updates {
  legend: string[];
  data: { t: number; values: number[] }[];
}

async function rrdUpdates(params: Record<string, string | number>): Promise<Updates> {
  const r = await fetch(new URL(`/rrd_updates?${q({ session_id: x.session, json: 'true', ...params })}`, url));
  expect(r.status).toBe(200);
  const j = await r.json();
  return { legend: j.meta.legend, data: j.data.map((d: any) => ({ t: +d.t, values: d.values.map(Number) })) };
}

const column = (u: Updates, entry: string) => {
  const i = u.legend.indexOf(entry);
  expect(i, `${entry} in the legend`).toBeGreaterThanOrEqual(0);
  return u.data.map((r) => r.values[i]);
};

const advance = (seconds: number) => controlClient({ url, session: x.session }).clock.advance({ seconds });

async function serverTime(): Promise<number> {
  const t: string = await x.call('host.get_servertime', host);
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d):(\d\d):(\d\d)Z$/.exec(t)!;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) / 1000;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { seed: 'rrd-sr' }));
  url = srv.urls[0];
  host = (await x.call('host.get_all'))[0];
  hostUuid = await x.call('host.get_uuid', host);
});

afterAll(async () => {
  await srv?.close();
});

describe("the SRs' I/O on the host's RRD", () => {
  let vm: string;
  let sr8: string;

  it('sums the writes of the SR tapdisks under <key>_<sr8>, bytes and requests', async () => {
    const local = await localStorage(x);
    sr8 = String(await x.call('SR.get_uuid', local)).slice(0, 8);
    vm = await x.call('VM.create', vmArgs('rrd-sr-vm', memory(1 * GiB, 512 * MiB)));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 16 * MiB, 'rrd-sr-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await x.call('VM.start', vm, false, false);
    await advance(20);
    const before = await serverTime();
    const idle = await rrdUpdates({ start: before - 10, host: 'true', cf: 'AVERAGE', interval: 5 });
    expect(Math.max(...column(idle, `AVERAGE:host:${hostUuid}:write_${sr8}`).filter((v) => !Number.isNaN(v)))).toBe(0);

    const data = Buffer.alloc(3 * MiB, 9);
    const w = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset: 0 })}`, url), {
      method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
    });
    expect(w.status).toBe(200);
    await advance(60);
    const u = await rrdUpdates({ start: before, host: 'true', cf: 'AVERAGE', interval: 5 });
    const known = (c: number[]) => c.filter((v) => !Number.isNaN(v));
    const bytes = known(column(u, `AVERAGE:host:${hostUuid}:write_${sr8}`)).reduce((a, v) => a + v * 5, 0);
    expect(bytes).toBeGreaterThan(data.length * 0.8);
    expect(bytes).toBeLessThan(data.length * 1.2);
    const mib = known(column(u, `AVERAGE:host:${hostUuid}:io_throughput_write_${sr8}`)).reduce((a, v) => a + v * 5, 0);
    expect(mib).toBeCloseTo(bytes / MiB, 3);
    expect(Math.max(...known(column(u, `AVERAGE:host:${hostUuid}:iops_write_${sr8}`)))).toBeGreaterThan(0);
    expect(Math.max(...known(column(u, `AVERAGE:host:${hostUuid}:read_${sr8}`)))).toBe(0);
    // the SR's figures are those of the VM's disk, its only tapdisk there
    const vmUuid: string = await x.call('VM.get_uuid', vm);
    const vbd = known((await rrdUpdates({ start: before, cf: 'AVERAGE', interval: 5, vm_uuid: vmUuid }).then((v) => column(v, `AVERAGE:vm:${vmUuid}:vbd_hda_write`))));
    // (each RRD spreads a rate over the span since its own last reading)
    expect(Math.abs(vbd.reduce((a, v) => a + v * 5, 0) / bytes - 1)).toBeLessThan(0.01);
  });

  it('lists them among the host data sources, with their units', async () => {
    const dss: { name_label: string; units: string; enabled: boolean }[] = await x.call('host.get_data_sources', host);
    const byName = new Map(dss.map((d) => [d.name_label, d]));
    for (const [k, units] of [['read', 'B/s'], ['write', 'B/s'], ['io_throughput_total', 'MiB/s'], ['iops_total', 'requests/s'], ['iowait', 's/s'], ['latency', 'μs'], ['inflight', 'requests']]) {
      expect(byName.get(`${k}_${sr8}`)?.units, `${k}_${sr8}`).toBe(units);
      expect(byName.get(`${k}_${sr8}`)?.enabled).toBe(true);
    }
    expect(Number(await x.call('host.query_data_source', host, `write_${sr8}`))).toBeGreaterThanOrEqual(0);
  });

  it("keeps the SR's history when its tapdisk goes away, and stops reporting it", async () => {
    const before = await serverTime();
    await x.call('VM.hard_shutdown', vm);
    await advance(30);
    const u = await rrdUpdates({ start: before - 30, host: 'true', cf: 'AVERAGE', interval: 5 });
    const writes = column(u, `AVERAGE:host:${hostUuid}:write_${sr8}`);
    // the rows from before the stop keep the writes measured; those after are unknown, never negative
    expect(u.data.filter((r, i) => r.t <= before && writes[i] > 0).length).toBeGreaterThan(0);
    expect(writes.every((v) => Number.isNaN(v) || v >= 0)).toBe(true);
    expect(Number.isNaN(writes[0])).toBe(true);
    const dss: { name_label: string; enabled: boolean }[] = await x.call('host.get_data_sources', host);
    const w = dss.find((d) => d.name_label === `write_${sr8}`)!;
    // archived but no longer reported
    expect(w.enabled).toBe(false);
  });
});

describe("xapi's own figures", () => {
  it('reports its heap and open file descriptors from the running process', async () => {
    await advance(10);
    const now = await serverTime();
    const u = await rrdUpdates({ start: now - 10, host: 'true', cf: 'AVERAGE', interval: 5 });
    const latest = (n: string) => column(u, `AVERAGE:host:${hostUuid}:${n}`)[0];
    const total = latest('xapi_memory_usage_kib');
    const live = latest('xapi_live_memory_kib');
    const free = latest('xapi_free_memory_kib');
    expect(live).toBeGreaterThan(1024);
    expect(total).toBeGreaterThanOrEqual(live);
    expect(Math.abs(total - live - free)).toBeLessThanOrEqual(1);
    expect(latest('xapi_allocation_kib')).toBeGreaterThanOrEqual(0);
    expect(latest('xapi_open_fds')).toBeGreaterThan(3);
    const dss: { name_label: string; units: string }[] = await x.call('host.get_data_sources', host);
    expect(dss.find((d) => d.name_label === 'xapi_open_fds')?.units).toBe('file descriptors');
    expect(dss.find((d) => d.name_label === 'xapi_allocation_kib')?.units).toBe('KiB');
  });
});
