// The data-source messages of host, VM and SR with xcp-rrdd's answers and errors, and the RRDs
// kept across restarts: host.backup_rrds writes them under the data directory, a new process on
// that directory reads them back; a toolstack restart keeps them (xcp-rrdd outlives xapi).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/index.js';
import { connect, XapiFault, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { GiB, MiB, memory, vmArgs } from './helpers/records.js';

const PASSWORD = 'rrd-ds';
let srv: RunningServer;
let x: Client;
let host: string;

async function fault(p: Promise<unknown>): Promise<{ code: string; params: string[] }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof XapiFault) return { code: e.description[0], params: e.description.slice(1) };
    throw e;
  }
  throw new Error('the call succeeded');
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { seed: 'rrd-ds' }));
  host = (await x.call('host.get_all'))[0];
  await controlClient({ url: srv.urls[0], session: x.session }).clock.advance({ seconds: 60 });
});

afterAll(async () => {
  await srv?.close();
});

describe('host data sources', () => {
  it('lists what xcp-rrdd reports, with units and ranges, and reads the latest average', async () => {
    const dss: any[] = await x.call('host.get_data_sources', host);
    const cpu0 = dss.find((d) => d.name_label === 'cpu0');
    expect(cpu0).toMatchObject({ enabled: true, standard: true, units: '(fraction)', min: 0, max: 1 });
    const mem = dss.find((d) => d.name_label === 'memory_total_kib');
    expect(mem).toMatchObject({ enabled: true, units: 'KiB' });
    const total = Number(await x.call('host_metrics.get_memory_total', await x.call('host.get_metrics', host)));
    expect(await x.call('host.query_data_source', host, 'memory_total_kib')).toBe(total / 1024);
  });

  it('fails with Datasource_missing for a name it does not report', async () => {
    for (const call of ['host.record_data_source', 'host.query_data_source']) {
      const e = await fault(x.call(call, host, 'no_such_source'));
      expect(e.code).toBe('INTERNAL_ERROR');
      expect(e.params[0]).toContain('Datasource_missing');
      expect(e.params[0]).toContain('no_such_source');
    }
    expect((await fault(x.call('host.get_data_sources', 'OpaqueRef:nope'))).code).toBe('HANDLE_INVALID');
  });

  it('forgets the archives of a source, which starts again empty', async () => {
    await x.call('host.forget_data_source_archives', host, 'loadavg');
    const u = await fetch(new URL(`/rrd_updates?session_id=${x.session}&start=-300&host=true&json=`, srv.urls[0]));
    const j = await u.json();
    const col = j.meta.legend.findIndex((l: string) => l.endsWith(':loadavg'));
    expect(col).toBeGreaterThanOrEqual(0);
    // its rows before now are unknown
    expect(j.data.slice(1).every((r: any) => r.values[col] === 'NaN')).toBe(true);
    await x.call('host.record_data_source', host, 'loadavg');
  });
});

describe('VM and SR data sources', () => {
  it("a running VM's sources; a halted VM has none", async () => {
    const vm: string = await x.call('VM.create', vmArgs('rrd-ds-vm', { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 1, VCPUs_at_startup: 1 }));
    expect(await x.call('VM.get_data_sources', vm)).toEqual([]);
    expect((await fault(x.call('VM.query_data_source', vm, 'memory'))).params[0]).toContain('Datasource_missing');
    await x.call('VM.start', vm, false, false);
    const names = ((await x.call('VM.get_data_sources', vm)) as any[]).map((d) => d.name_label);
    expect(names).toEqual(expect.arrayContaining(['cpu0', 'memory', 'memory_target']));
    await controlClient({ url: srv.urls[0], session: x.session }).clock.advance({ seconds: 10 });
    const actual = Number(await x.call('VM_metrics.get_memory_actual', await x.call('VM.get_metrics', vm)));
    expect(await x.call('VM.query_data_source', vm, 'memory')).toBe(actual);
  });

  it('an SR reports no source here', async () => {
    const sr: string = (await x.call('SR.get_all'))[0];
    expect(await x.call('SR.get_data_sources', sr)).toEqual([]);
    expect((await fault(x.call('SR.query_data_source', sr, 'io_throughput_read'))).params[0]).toContain('Datasource_missing');
  });
});

describe('host.backup_rrds and restarts', () => {
  it('a new process on the data directory reads the backed-up RRDs; a toolstack restart keeps them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrd-backup-'));
    try {
      const opts = { memory: false, dataDir: dir, seed: 'rrd-backup', closeGrace: 0 } as const;
      let { srv: s, x: c } = await startPool(PASSWORD, opts);
      const h: string = (await c.call('host.get_all'))[0];
      const control = () => controlClient({ url: s.urls[0], session: c.session });
      const read = async () => (await (await fetch(new URL(`/rrd_updates?session_id=${c.session}&start=-3000&interval=60&host=true&cf=AVERAGE&json=`, s.urls[0]))).json());
      await read();
      await control().clock.advance({ seconds: 3600 });
      const before = await read();
      const cpu = (j: any) => new Map<number, string>(j.data.map((r: any) => [Number(r.t), r.values[j.meta.legend.findIndex((l: string) => l.endsWith(':cpu0'))]]));
      const was = cpu(before);
      expect(before.meta.step).toBe('60');
      // an hour of one-minute rows, known: more than a fresh RRD would hold
      const known = (m: Map<number, string>) => [...m.values()].filter((v) => v !== 'NaN').length;
      expect(known(was)).toBeGreaterThan(40);

      // a toolstack restart: xcp-rrdd goes on
      await s.toolstackRestart();
      c = await connect(s.urls[0], 'root', PASSWORD);
      const afterRestart = cpu(await read());
      let same = 0;
      for (const [t, v] of was) if (afterRestart.has(t) && v !== 'NaN') expect(afterRestart.get(t)).toBe(v), same++;
      expect(same).toBeGreaterThan(40);

      // a backup, then the process ends and starts again on the same directory
      await c.call('host.backup_rrds', h, 0);
      const clockNow = (await control().clock.get()).now;
      await s.close();
      ({ srv: s, x: c } = await startPool(PASSWORD, opts));
      await control().clock.advance({ seconds: Math.max(0, (Date.parse(String(clockNow)) - Date.now()) / 1000) });
      const restored = cpu(await read());
      same = 0;
      for (const [t, v] of was) if (restored.has(t) && v !== 'NaN') expect(restored.get(t)).toBe(v), same++;
      expect(same).toBeGreaterThan(40);
      expect(known(restored)).toBeGreaterThan(40);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('RRD backups of their own', () => {
  it("are taken an hour after xcp-rrdd starts, then every day of the emulator's clock, with the RRDs up to date", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrd-periodic-'));
    try {
      const { srv: s, x: c } = await startPool(PASSWORD, { memory: false, dataDir: dir, seed: 'rrd-periodic', closeGrace: 0 });
      try {
        const control = controlClient({ url: s.urls[0], session: c.session });
        const hostUuid: string = await c.call('host.get_uuid', (await c.call('host.get_all'))[0]);
        const file = join(dir, 'rrds', `${hostUuid}.gz`);
        const lastUpdate = () => JSON.parse(gunzipSync(readFileSync(file)).toString('utf8')).lastUpdated as number;
        const r = await fetch(new URL(`/rrd_updates?session_id=${c.session}&start=-60&host=true`, s.urls[0]));
        expect(r.status).toBe(200);
        await control.clock.advance({ seconds: 1800 });
        expect(existsSync(file)).toBe(false);
        await control.clock.advance({ seconds: 1801 });
        expect(existsSync(file)).toBe(true);
        const first = lastUpdate();
        const now = () => control.clock.get().then((g) => Date.parse(String(g.now)) / 1000);
        expect((await now()) - first).toBeLessThan(5);
        // nothing more until a day has gone by, read or not
        await control.clock.advance({ seconds: 86400 - 600 });
        expect(lastUpdate()).toBe(first);
        await control.clock.advance({ seconds: 600 });
        expect(lastUpdate() - first).toBeGreaterThanOrEqual(86400 - 5);
        expect((await now()) - lastUpdate()).toBeLessThan(5);
      } finally {
        await s.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('are taken when the process stops cleanly, and read back by the next one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrd-stop-'));
    try {
      const opts = { memory: false, dataDir: dir, seed: 'rrd-stop', closeGrace: 0 } as const;
      let { srv: s, x: c } = await startPool(PASSWORD, opts);
      const hostUuid: string = await c.call('host.get_uuid', (await c.call('host.get_all'))[0]);
      // the last 5 minutes: well inside the 5-second archive (10 minutes), whatever the sub-step
      // offset of the clock, so both reads are served from it
      const read = async () => (await (await fetch(new URL(`/rrd_updates?session_id=${c.session}&start=-300&interval=5&host=true&cf=AVERAGE&json=`, s.urls[0]))).json());
      await read();
      await controlClient({ url: s.urls[0], session: c.session }).clock.advance({ seconds: 600 });
      const before = await read();
      const clockNow = (await controlClient({ url: s.urls[0], session: c.session }).clock.get()).now;
      expect(existsSync(join(dir, 'rrds', `${hostUuid}.gz`))).toBe(false);
      await s.close();
      expect(existsSync(join(dir, 'rrds', `${hostUuid}.gz`))).toBe(true);
      ({ srv: s, x: c } = await startPool(PASSWORD, opts));
      try {
        await controlClient({ url: s.urls[0], session: c.session }).clock.advance({ seconds: Math.max(0, (Date.parse(String(clockNow)) - Date.now()) / 1000) });
        const after = await read();
        const col = (j: any) => new Map<number, string>(j.data.map((row: any) => [Number(row.t), row.values[j.meta.legend.findIndex((l: string) => l.endsWith(':cpu0'))]]));
        const was = col(before);
        const now = col(after);
        let same = 0;
        for (const [t, v] of was) if (now.has(t) && v !== 'NaN') expect(now.get(t)).toBe(v), same++;
        expect(same).toBeGreaterThan(50);
      } finally {
        await s.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
