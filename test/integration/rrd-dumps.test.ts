// The whole RRDs: /host_rrd's dump restored by Debian's rrdtool (`rrdtool restore`, then
// `rrdtool fetch`) gives the values /rrd_updates gave; /vm_rrd on the wrong host answers 302 to the
// VM's host; errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/index.js';
import type { Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { GiB, MiB, memory, vmArgs } from './helpers/records.js';

/** rrdtool holds data-source names of at most 19 characters; xcp-rrdd's own names can be longer
 * (xapi_memory_usage_kib), which rrdtool restore refuses in a real host's dump too: those data
 * sources are taken out of the dump, every other one kept as it is. */
function withoutLongNames(xml: string): string {
  const names = [...xml.matchAll(/<ds><name>([^<]*)<\/name>/g)].map((m) => m[1]);
  const drop = new Set(names.flatMap((n, i) => (n.length > 19 ? [i] : [])));
  if (drop.size === 0) return xml;
  let i = 0;
  const keepNth = (block: string) => (drop.has(i++ % names.length) ? '' : block);
  let out = xml.replace(/<ds><name>.*?<\/ds>/g, (b) => keepNth(b));
  i = 0;
  out = out.replace(/<ds><primary_value>.*?<\/ds>/g, (b) => keepNth(b));
  return out.replace(/<row>(.*?)<\/row>/g, (_, vs: string) => {
    i = 0;
    return `<row>${(vs.match(/<v>[^<]*<\/v>/g) ?? []).filter(() => !drop.has(i++)).join('')}</row>`;
  });
}

const PASSWORD = 'rrd-dumps';
let srv: RunningServer;
let url: string;
let x: Client;
let dir: string;

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
const get = (path: string, params: Record<string, string | number> = {}, base = url) =>
  fetch(new URL(`${path}?${q({ session_id: x.session, ...params })}`, base), { redirect: 'manual' });

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, seed: 'rrd-dumps' }));
  url = srv.urls[0];
  dir = mkdtempSync(join(tmpdir(), 'rrd-dumps-'));
});

afterAll(async () => {
  await srv?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('GET /host_rrd', () => {
  it('restores with rrdtool, whose fetch gives the values /rrd_updates gave', async () => {
    const control = controlClient({ url, session: x.session });
    await control.clock.advance({ seconds: 300 });
    // time stands still between the two reads
    await control.clock.set({ frozen: true });
    try {
      const now = Math.floor(Date.parse(String((await control.clock.get()).now)) / 1000);
      const ur = await get('/rrd_updates', { start: now - 300, cf: 'AVERAGE', interval: 5, host: 'true', json: '' });
      expect(ur.status).toBe(200);
      const updates = await ur.json();
      const r = await get('/host_rrd');
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/xml');
      const xml = await r.text();
      expect(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<rrd><version>0003</version><step>5</step>')).toBe(true);

      writeFileSync(join(dir, 'host.xml'), withoutLongNames(xml));
      execFileSync('rrdtool', ['restore', '-f', join(dir, 'host.xml'), join(dir, 'host.rrd')]);
      const first = Number(updates.data[updates.data.length - 1].t);
      const last = Number(updates.meta.end);
      const out = execFileSync('rrdtool', ['fetch', join(dir, 'host.rrd'), 'AVERAGE', '-r', '5', '-s', String(first - 5), '-e', String(last)], { encoding: 'utf8' });
      const lines = out.trim().split('\n');
      const names = lines[0].trim().split(/\s+/);
      const fetched = new Map<number, number[]>();
      for (const l of lines.slice(1)) {
        const m = /^(\d+):\s+(.*)$/.exec(l.trim());
        if (m) fetched.set(Number(m[1]), m[2].trim().split(/\s+/).map(Number));
      }
      const hostUuid: string = await x.call('host.get_uuid', (await x.call('pool.get_master', (await x.call('pool.get_all'))[0])));
      let compared = 0;
      for (const name of ['cpu0', 'cpu_avg', 'memory_total_kib', 'memory_free_kib', 'loadavg']) {
        const col = updates.meta.legend.indexOf(`AVERAGE:host:${hostUuid}:${name}`);
        const fcol = names.indexOf(name);
        expect(col).toBeGreaterThanOrEqual(0);
        expect(fcol).toBeGreaterThanOrEqual(0);
        for (const row of updates.data) {
          const want = Number(row.values[col]);
          const got = fetched.get(Number(row.t))?.[fcol];
          expect(got, `${name} at ${row.t}`).toBeDefined();
          expect(got!).toBeCloseTo(want, 6);
          compared++;
        }
      }
      expect(compared).toBeGreaterThan(5 * 50);
    } finally {
      await control.clock.set({ frozen: false });
    }
  });

  it('gives JSON when asked', async () => {
    const r = await get('/host_rrd', { json: 'true' });
    expect(r.headers.get('content-type')).toBe('application/json');
    const j = await r.json();
    expect(j.step).toBe('5');
    expect(j.rra.map((a: any) => `${a.cf}/${a.pdp_per_row}`)).toEqual([
      'AVERAGE/1', 'AVERAGE/12', 'MIN/12', 'MAX/12', 'AVERAGE/720', 'MIN/720', 'MAX/720', 'AVERAGE/17280', 'MIN/17280', 'MAX/17280',
    ]);
    expect(j.rra[0].database.length).toBe(120);
    expect(j.rra[0].database[0].length).toBe(j.ds.length);
  });
});

describe('GET /vm_rrd, /sr_rrd', () => {
  it("serves a VM's RRD on its host, redirects from another host", async () => {
    const hosts: string[] = await x.call('host.get_all');
    const master: string = await x.call('pool.get_master', (await x.call('pool.get_all'))[0]);
    const other = hosts.find((h) => h !== master)!;
    const vm: string = await x.call('VM.create', vmArgs('rrd-dump-vm', { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 1, VCPUs_at_startup: 1 }));
    await x.call('VM.start_on', vm, other, false, false);
    const uuid: string = await x.call('VM.get_uuid', vm);
    const r = await get('/vm_rrd', { uuid });
    expect(r.status).toBe(302);
    const location = new URL(r.headers.get('location')!);
    expect(location.hostname).toBe(await x.call('host.get_address', other));
    expect(location.searchParams.get('uuid')).toBe(uuid);
    // on the VM's own host
    const here = await get('/vm_rrd', { uuid }, srv.urls[1]);
    expect(here.status).toBe(200);
    const xml = await here.text();
    expect(xml).toContain('<ds><name>cpu0</name><type>DERIVE</type><minimal_heartbeat>300</minimal_heartbeat><min>0.0</min><max>1</max>');
    expect(xml).toContain('<name>memory</name><type>GAUGE</type>');
    // get_vm_rrds and get_host_rrds: the same dumps under xapi's other names
    const also = await get('/vm_rrds', { uuid }, srv.urls[1]);
    expect(also.status).toBe(200);
    expect(await also.text()).toContain('<ds><name>cpu0</name><type>DERIVE</type>');
    expect((await get('/vm_rrds', { uuid })).status).toBe(302);
    expect((await get('/vm_rrds')).status).toBe(400);
    const hostDump = await get('/host_rrds', { json: 'true' });
    expect(hostDump.status).toBe(200);
    expect((await hostDump.json()).ds.some((d: { name: string }) => d.name === 'memory_total_kib')).toBe(true);
  });

  it('answers 400 without uuid, 404 for what has no RRD, 401 without a session', async () => {
    expect((await get('/vm_rrd')).status).toBe(400);
    expect((await get('/sr_rrd')).status).toBe(400);
    expect((await get('/vm_rrd', { uuid: '00000000-0000-0000-0000-000000000000' })).status).toBe(404);
    const sr: string = (await x.call('SR.get_all'))[0];
    expect((await get('/sr_rrd', { uuid: await x.call('SR.get_uuid', sr) })).status).toBe(404);
    expect((await fetch(new URL('/host_rrd', url))).status).toBe(401);
  });
});

describe('PUT /rrd', () => {
  const put = (params: Record<string, string | number>, body: string, base = url) =>
    fetch(new URL(`/rrd?${q({ session_id: x.session, ...params })}`, base), { method: 'PUT', body, headers: { 'content-type': 'text/xml' }, redirect: 'manual' });

  it("replaces a VM's RRD with the one pushed, which reads back as it was sent", async () => {
    const master: string = await x.call('pool.get_master', (await x.call('pool.get_all'))[0]);
    const vm: string = await x.call('VM.create', vmArgs('rrd-put-vm', { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 1, VCPUs_at_startup: 1 }));
    await x.call('VM.start_on', vm, master, false, false);
    const uuid: string = await x.call('VM.get_uuid', vm);
    const control = controlClient({ url, session: x.session });
    await control.clock.set({ frozen: true });
    try {
      // a whole RRD, here the host's, pushed as the VM's (a migration pushes the source host's copy)
      const pushed = await (await get('/host_rrd')).text();
      const r = await put({ uuid }, pushed);
      expect(r.status).toBe(200);
      await r.arrayBuffer();
      const back = await (await get('/vm_rrd', { uuid })).text();
      expect(back).toContain('<ds><name>memory_total_kib</name><type>GAUGE</type>');
      // what was pushed reads back row for row (the VM's own sources join it as new columns)
      const n = [...pushed.matchAll(/<ds><name>/g)].length;
      const rows = (xml: string) => [...xml.matchAll(/<row>(.*?)<\/row>/g)].map((m) => [...m[1].matchAll(/<v>([^<]*)<\/v>/g)].slice(0, n).map((v) => v[1]));
      expect(rows(back).length).toBeGreaterThan(100);
      expect(rows(back)).toEqual(rows(pushed));

      // a body that is no RRD: its task fails, the RRD is kept as it was
      const task: string = await x.call('task.create', 'put rrd', '');
      const bad = await put({ uuid, task_id: task }, '<rrd><version>0003</version><step>5</step>');
      await bad.arrayBuffer().catch(() => undefined);
      expect(await x.call('task.get_status', task)).toBe('failure');
      expect((await x.call('task.get_error_info', task))[0]).toBe('INTERNAL_ERROR');
      expect(await (await get('/vm_rrd', { uuid })).text()).toBe(back);
    } finally {
      await control.clock.set({ frozen: false });
    }
  });

  it('archives on the master (a member redirects there), and answers 400/404 as xapi', async () => {
    const hostUuid: string = await x.call('host.get_uuid', await x.call('pool.get_master', (await x.call('pool.get_all'))[0]));
    const dump = await (await get('/host_rrd')).text();
    expect((await put({}, dump)).status).toBe(400);
    expect((await put({ uuid: '00000000-0000-0000-0000-000000000000' }, dump)).status).toBe(404);
    // a host's RRD can only be archived
    expect((await put({ uuid: hostUuid }, dump)).status).toBe(400);
    const member = await put({ uuid: hostUuid, archive: 'true' }, dump, srv.urls[1]);
    expect(member.status).toBe(302);
    expect(new URL(member.headers.get('location')!).hostname).toBe(new URL(url).hostname);
    const r = await put({ uuid: hostUuid, archive: 'true' }, dump);
    expect(r.status).toBe(200);
    await r.arrayBuffer();
  });
});
