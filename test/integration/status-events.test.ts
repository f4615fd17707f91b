// The status page's data over real sockets: GET /xapi-emu/events (server-sent events read with a
// plain node:http client) reports changes of the database and of the clock, coalesced, with
// heartbeats, and ends when its reader goes or the server closes (at once, even on a member's
// address); GET /xapi-emu/status (through the typed control client) summarises hosts, VMs, SRs
// with their VDI chains, the datapath, and the latest events and tasks.
import { request, type IncomingMessage } from 'node:http';
import { connect as connectSocket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { controlClient, ControlApiError, type ControlClient } from '../../server/control/client.js';
import { openEventStreams } from '../../server/control/status/events.js';
import type { Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'status-events-test';
const basic = (user: string, pwd: string) => `Basic ${Buffer.from(`${user}:${pwd}`).toString('base64')}`;
const ROOT = basic('root', PASSWORD);

interface SseEvent { event: string; data: any }

/** An event stream read with node:http: events as they come, and how the stream ended. */
interface Sse {
  res: IncomingMessage;
  events: SseEvent[];
  /** the first event (already received or to come) after index `from` that matches */
  next(pred: (e: SseEvent) => boolean, from?: number): Promise<SseEvent>;
  /** resolves 'end' on a clean end of the body, 'error' on a cut */
  ended: Promise<'end' | 'error'>;
  close(): void;
}

function openSse(url: string, path: string, authorization?: string): Promise<Sse> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { headers: authorization ? { authorization, accept: 'text/event-stream' } : {} });
    req.on('error', reject);
    req.on('response', (res) => {
      const events: SseEvent[] = [];
      const waiters = new Set<() => void>();
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length) events.push({ event, data: JSON.parse(data.join('\n')) });
        }
        for (const w of [...waiters]) w();
      });
      const ended = new Promise<'end' | 'error'>((done) => {
        res.on('end', () => done('end'));
        res.on('error', () => done('error'));
        res.on('aborted', () => done('error'));
      });
      resolve({
        res,
        events,
        ended,
        close: () => req.destroy(),
        next: (pred, from = 0) =>
          new Promise((found, failed) => {
            const check = () => {
              const hit = events.slice(from).find(pred);
              if (hit) {
                waiters.delete(check);
                found(hit);
              }
            };
            check();
            if (!events.slice(from).some(pred)) waiters.add(check);
            void ended.then(() => {
              check();
              if (waiters.has(check)) failed(new Error(`the stream ended without the awaited event (${JSON.stringify(events)})`));
            });
          }),
      });
    });
    req.end();
  });
}

let srv: RunningServer;
let url: string;
let x: Client;
let control: ControlClient;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { users: [{ name: 'ro', password: 'r', role: 'read-only' }] }));
  url = srv.urls[0];
  control = controlClient({ url, username: 'root', password: PASSWORD });
});

afterAll(async () => {
  await srv?.close();
});

// every stream a test opened is let go of once its reader has gone
afterEach(async () => {
  await vi.waitFor(() => expect(openEventStreams(srv.emu)).toBe(0));
});

describe('GET /xapi-emu/events', () => {
  it('needs a pool-admin: 401 with the Basic challenge, 403 for another role, 400 for a bad parameter', async () => {
    const none = await fetch(new URL('/xapi-emu/events', url));
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic /);
    expect((await none.json()).error.code).toBe('SESSION_AUTHENTICATION_FAILED');
    const wrong = await fetch(new URL('/xapi-emu/events', url), { headers: { authorization: basic('root', 'nope') } });
    expect(wrong.status).toBe(401);
    await wrong.body?.cancel();
    const ro = await fetch(new URL('/xapi-emu/events', url), { headers: { authorization: basic('ro', 'r') } });
    expect(ro.status).toBe(403);
    expect((await ro.json()).error.code).toBe('RBAC_PERMISSION_DENIED');
    for (const q of ['heartbeat=0', 'heartbeat=x', 'throttle=-1', 'throttle=']) {
      const bad = await fetch(new URL(`/xapi-emu/events?${q}`, url), { headers: { authorization: ROOT } });
      expect(bad.status, q).toBe(400);
      expect((await bad.json()).error.code).toBe('INVALID_INPUT');
    }
    expect(openEventStreams(srv.emu)).toBe(0);
  });

  it('takes a session instead of Basic credentials', async () => {
    const sse = await openSse(url, `/xapi-emu/events?session_id=${encodeURIComponent(x.session)}`);
    try {
      expect(sse.res.statusCode).toBe(200);
      expect((await sse.next((e) => e.event === 'hello')).data.generation).toBeGreaterThan(0);
    } finally {
      sse.close();
    }
    const bySession = controlClient({ url, session: x.session });
    expect((await bySession.status.get({ events: 1, tasks: 1 })).hosts.length).toBe(1);
  });

  it('says hello with the generation, then reports the classes a client writes', async () => {
    const sse = await openSse(url, '/xapi-emu/events', ROOT);
    try {
      expect(sse.res.statusCode).toBe(200);
      expect(sse.res.headers['content-type']).toMatch(/^text\/event-stream/);
      const hello = await sse.next((e) => e.event === 'hello');
      expect(hello.data.generation).toBe(srv.emu.db.generation);
      expect(openEventStreams(srv.emu)).toBe(1);
      const vm: string = await x.call('VM.create', vmArgs('sse-vm', memory(256 * MiB)));
      const change = await sse.next((e) => e.event === 'change' && (e.data.changed.VM ?? 0) > 0);
      expect(change.data.generation).toBeGreaterThan(hello.data.generation);
      const from = sse.events.length;
      await x.call('VM.destroy', vm);
      const gone = await sse.next((e) => e.event === 'change' && (e.data.deleted.VM ?? 0) > 0, from);
      expect(gone.data.generation).toBeGreaterThan(change.data.generation);
    } finally {
      sse.close();
    }
  });

  it('coalesces a burst of writes into a few events, the last at the final generation', async () => {
    const sse = await openSse(url, '/xapi-emu/events', ROOT);
    try {
      await sse.next((e) => e.event === 'hello');
      const vm: string = await x.call('VM.create', vmArgs('sse-burst', memory(256 * MiB)));
      const writes = 60;
      for (let i = 0; i < writes; i++) await x.call('VM.set_name_description', vm, `write ${i}`);
      const last = srv.emu.db.generation;
      await sse.next((e) => e.event === 'change' && e.data.generation >= last);
      const changes = sse.events.filter((e) => e.event === 'change');
      // at most one event per 100 ms window: far fewer than the writes
      expect(changes.length).toBeLessThan(writes / 2);
      expect(changes.reduce((n, e) => n + (e.data.changed.VM ?? 0), 0)).toBeGreaterThanOrEqual(changes.length);
      await x.call('VM.destroy', vm);
    } finally {
      sse.close();
    }
  });

  it('reports the clock moving, and sends heartbeats', async () => {
    const sse = await openSse(url, '/xapi-emu/events?heartbeat=0.05&throttle=0', ROOT);
    try {
      await sse.next((e) => e.event === 'hello');
      await control.clock.advance({ seconds: 5 });
      const moved = await sse.next((e) => e.event === 'change' && e.data.clock === true);
      expect(moved.data.generation).toBeGreaterThan(0);
      const beat = await sse.next((e) => e.event === 'heartbeat');
      expect(beat.data.generation).toBe(srv.emu.db.generation);
    } finally {
      sse.close();
    }
  });

  it('lets go of the database when its reader goes', async () => {
    const sse = await openSse(url, '/xapi-emu/events', ROOT);
    await sse.next((e) => e.event === 'hello');
    expect(openEventStreams(srv.emu)).toBe(1);
    sse.close();
    await vi.waitFor(() => expect(openEventStreams(srv.emu)).toBe(0));
    // and writes after it went reach nobody (nothing is written on a closed response)
    const vm: string = await x.call('VM.create', vmArgs('sse-after', memory(256 * MiB)));
    await x.call('VM.destroy', vm);
    expect(openEventStreams(srv.emu)).toBe(0);
  });

  it('lets go of a reader that half-closed its connection right after its request', async () => {
    const sock = connectSocket(Number(new URL(url).port), new URL(url).hostname);
    await new Promise((r) => sock.once('connect', r));
    let answer = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (answer += d));
    sock.end(`GET /xapi-emu/events HTTP/1.1\r\nHost: x\r\nAuthorization: ${ROOT}\r\n\r\n`);
    await new Promise((r) => sock.once('close', r));
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    await vi.waitFor(() => expect(openEventStreams(srv.emu)).toBe(0));
  });

  it('ends cleanly when the server closes, without waiting for the close grace, on every listener', async () => {
    // a grace far longer than the test's timeout: a close that waited on the streams would time out
    const { srv: other } = await startPool(PASSWORD, { hosts: 2, closeGrace: 600 });
    expect(other.urls.length).toBe(2);
    const streams = await Promise.all(other.urls.map((u) => openSse(u, '/xapi-emu/events', ROOT)));
    await Promise.all(streams.map((s) => s.next((e) => e.event === 'hello')));
    expect(openEventStreams(other.emu)).toBe(2);
    await other.close();
    expect(await Promise.all(streams.map((s) => s.ended))).toEqual(['end', 'end']);
    expect(openEventStreams(other.emu)).toBe(0);
  });
});

describe('the page', () => {
  it('takes credentials for the page, not for its script and style sheet; /xapi-emu redirects to it', async () => {
    const page = await fetch(new URL('/xapi-emu/', url));
    expect(page.status).toBe(401);
    expect(page.headers.get('www-authenticate')).toMatch(/^Basic /);
    await page.body?.cancel();
    const ok = await fetch(new URL('/xapi-emu/', url), { headers: { authorization: ROOT } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toMatch(/^text\/html/);
    expect(ok.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await ok.text();
    for (const [asset, type] of [['page/status.js', 'text/javascript'], ['page/status.css', 'text/css']]) {
      expect(html).toContain(`"${asset}"`);
      const r = await fetch(new URL(`/xapi-emu/${asset}`, url));
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toContain(type);
      expect((await r.text()).length).toBeGreaterThan(100);
    }
    const redirect = await fetch(new URL('/xapi-emu?session_id=x', url), { redirect: 'manual' });
    expect(redirect.status).toBe(302);
    expect(redirect.headers.get('location')).toBe('/xapi-emu/?session_id=x');
  });
});

describe('GET /xapi-emu/status', () => {
  it('needs a pool-admin and validates its input', async () => {
    const ro = controlClient({ url, username: 'ro', password: 'r' });
    await expect(ro.status.get()).rejects.toMatchObject({ status: 403, code: 'RBAC_PERMISSION_DENIED' });
    const err = await control.status.get({ events: -1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlApiError);
    expect(err).toMatchObject({ status: 400, code: 'INVALID_INPUT' });
  });

  it('summarises hosts, VMs with power state and profile, SRs with VDI chains, datapath, events and tasks', async () => {
    const local = await localStorage(x);
    const net = await xenbr0(x);
    const vm: string = await x.call('VM.create', vmArgs('summary-vm', { ...memory(1 * GiB, 512 * MiB), other_config: { 'xapi-emu-guest-profile': 'no-drivers' } }));
    const vdi: string = await x.call('VDI.create', vdiArgs(local, 16 * MiB, 'summary-disk'));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await x.call('VIF.create', vifArgs(vm, net));
    const snap: string = await x.call('VDI.snapshot', vdi, {});
    const task: string = await x.call('Async.VM.start', vm, false, false);
    await vi.waitFor(async () => expect(await x.call('task.get_status', task)).not.toBe('pending'));
    expect(await x.call('task.get_status', task)).toBe('success');

    const s = await control.status.get({ events: 50, tasks: 5 });
    expect(s.generation).toBeGreaterThan(0);
    const [master] = s.hosts;
    expect(master).toMatchObject({ master: true, live: true, enabled: true, uuid: await x.call('host.get_uuid', srv.emu.master) });
    expect(master.resident_vms).toBeGreaterThanOrEqual(1);
    const v = s.vms.find((r) => r.ref === vm)!;
    expect(v).toMatchObject({ name_label: 'summary-vm', power_state: 'Running', resident_on: master.uuid, guest_profile: 'no-drivers' });
    expect(v.domid).toBeGreaterThan(0);
    // templates are counted, not listed
    const templates = await x.call('VM.get_all_records_where', 'field "is_a_template" = "true" and field "is_a_snapshot" = "false"');
    expect(s.counts.templates).toBe(Object.keys(templates).length);
    expect(s.vms.some((r) => r.ref in templates)).toBe(false);

    const sr = s.srs.find((r) => r.ref === local)!;
    const vdiUuid: string = await x.call('VDI.get_uuid', vdi);
    const snapUuid: string = await x.call('VDI.get_uuid', snap);
    const disk = sr.vdis.find((d) => d.uuid === vdiUuid)!;
    const snapshot = sr.vdis.find((d) => d.uuid === snapUuid)!;
    expect(snapshot).toMatchObject({ is_a_snapshot: true, snapshot_of: vdiUuid });
    expect(disk.attached_to).toEqual(['summary-vm']);
    // the chain as sm_config:vhd-parent says, whatever base copy the snapshot made
    const smConfig = async (ref: string) => (await x.call('VDI.get_sm_config', ref)) as Record<string, string>;
    expect(disk.parent).toBe((await smConfig(vdi))['vhd-parent'] ?? null);
    expect(snapshot.parent).toBe((await smConfig(snap))['vhd-parent'] ?? null);

    const dp = s.datapath.find((d) => d.host === master.uuid)!;
    expect(dp.tapdisks.some((t) => t.vdi === vdiUuid)).toBe(true);
    expect(dp.qemu_dm.length).toBeGreaterThanOrEqual(1);

    expect(s.tasks[0]).toMatchObject({ ref: task, status: 'success', progress: 1 });
    expect(s.tasks.length).toBeLessThanOrEqual(5);
    expect(s.events.length).toBe(50);
    expect(s.events[0].id).toBe(s.generation);
    expect(s.events.some((e) => e.class === 'VM' && e.ref === vm)).toBe(true);
    expect([...s.events].sort((a, b) => b.id - a.id)).toEqual(s.events);
    expect(s.routes).toContain('/clock');
    expect(s.routes).toContain('/status');

    await x.call('VM.hard_shutdown', vm);
    const after = await control.status.get({ events: 0, tasks: 0 });
    expect(after.vms.find((r) => r.ref === vm)!.power_state).toBe('Halted');
    expect(after.events).toEqual([]);
    expect(after.tasks).toEqual([]);
  });
});
