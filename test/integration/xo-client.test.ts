// Xen Orchestra's own client (npm `xen-api`) against the emulator over real sockets, on both of its
// transports: connection and type discovery, the initial sync of every class, barrier(), Async calls
// settled through the task in the event stream, SESSION_INVALID recovery, and add/mod/del events
// reaching the object cache of another client. Nothing here waits on the wall clock: every wait is on
// a client event or promise (the vitest timeout is the only bound).
import { afterAll, afterEach, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { createClient, type Xapi, type XapiError, type XapiObject } from 'xen-api';
import { startServer, type RunningServer } from '../../server/app.js';
import { model } from '../../schema/index.js';

const PASSWORD = 'xo-client-test';

interface Traced {
  xapi: Xapi;
  /** every method the client sent, in order */
  calls: string[];
  /** the raw results of its event.from calls */
  fromResults: { events: { class: string; operation: string; ref: string }[]; valid_ref_counts: Record<string, unknown>; token: string }[];
  /** errors its event loop reported */
  loopErrors: unknown[];
  /** calls not answered yet */
  inFlight: Set<Promise<unknown>>;
}

/** A client whose RPCs are recorded (its private `_call` is wrapped, the transport is untouched). */
function traced(url: string, transport: 'json-rpc' | 'xml-rpc'): Traced {
  const xapi = createClient({ url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, transport, debounce: 0 });
  const t: Traced = { xapi, calls: [], fromResults: [], loopErrors: [], inFlight: new Set() };
  const x = xapi as unknown as { _call: (method: string, args?: unknown[], timeout?: number) => Promise<any> };
  const inner = x._call;
  x._call = function (this: unknown, method: string, args?: unknown[], timeout?: number) {
    t.calls.push(method);
    const p = inner.call(this, method, args, timeout);
    if (method === 'event.from') p.then((r) => t.fromResults.push(r), () => {});
    t.inFlight.add(p);
    const forget = () => t.inFlight.delete(p);
    p.then(forget, forget);
    return p;
  };
  xapi.on('eventFetchingError', (e: unknown) => t.loopErrors.push(e));
  return t;
}

type CollectionEvent = 'add' | 'update' | 'remove';

/** Records a client's object-cache events from now on; `until` resolves on the first (past or future)
 * event of a kind whose object map has an entry matching `pred`. */
function recorder(xapi: Xapi) {
  const seen: { kind: CollectionEvent; id: string; obj: XapiObject | undefined }[] = [];
  const waiters = new Set<() => void>();
  const on = (kind: CollectionEvent) => (items: Record<string, XapiObject>) => {
    for (const [id, obj] of Object.entries(items)) seen.push({ kind, id, obj: kind === 'remove' ? undefined : obj });
    for (const w of [...waiters]) w();
  };
  const handlers = { add: on('add'), update: on('update'), remove: on('remove') };
  for (const k of Object.keys(handlers) as CollectionEvent[]) xapi.objects.on(k, handlers[k]);
  return {
    seen,
    until(kind: CollectionEvent, pred: (id: string, obj: XapiObject | undefined) => boolean): Promise<XapiObject | undefined> {
      return new Promise((resolve) => {
        const check = () => {
          const hit = seen.find((e) => e.kind === kind && pred(e.id, e.obj));
          if (!hit) return false;
          waiters.delete(check as () => void);
          resolve(hit.obj);
          return true;
        };
        if (!check()) waiters.add(check as () => void);
      });
    },
    stop() {
      for (const k of Object.keys(handlers) as CollectionEvent[]) xapi.objects.removeListener(k, handlers[k]);
    },
  };
}

/** A raw JSON-RPC call on a fresh connection (not through any xen-api client). */
async function rawCall(url: string, method: string, params: unknown[]): Promise<{ result?: unknown; error?: { message: string; data: unknown[] } }> {
  const r = await fetch(new URL('jsonrpc', url), {
    method: 'POST',
    headers: { 'content-type': 'application/json', connection: 'close' },
    body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }),
  });
  return (await r.json()) as { result?: unknown; error?: { message: string; data: unknown[] } };
}

const networkRecord = (name: string) => ({
  name_label: name, name_description: 'made by xo-client.test', MTU: 1500, other_config: {}, bridge: '', managed: true, tags: [],
});

const XAPI_DATE = /^\d{8}T\d\d:\d\d:\d\dZ$/;

describe.each(['json-rpc', 'xml-rpc'] as const)('xen-api client over %s', (transport) => {
  let srv: RunningServer;
  let url: string;
  let a: Traced; // the client under test
  let b: Traced; // a second client (another XO, another admin)
  let warn: MockInstance<typeof console.warn>;

  beforeAll(async () => {
    warn = vi.spyOn(console, 'warn');
    srv = await startServer({ port: 0, memory: true, password: PASSWORD, seed: `xo-${transport}`, authFailDelay: 0, hosts: 2, closeGrace: 0 });
    url = srv.urls[0];
    a = traced(url, transport);
    b = traced(url, transport);
    await Promise.all([a.xapi.connect(), b.xapi.connect()]);
    await Promise.all([a.xapi.objectsFetched, b.xapi.objectsFetched]);
  });

  afterAll(async () => {
    // disconnect() logs out, which ends the pending event.from with SESSION_INVALID; the loop then
    // waits for a reconnection that never comes. Closing the server before that would reset the
    // long poll and make the client warn (in the next describe block).
    for (const c of [a, b]) {
      if (!c) continue;
      await c.xapi.disconnect();
      await Promise.allSettled([...c.inFlight]);
    }
    await srv?.close();
    warn?.mockRestore();
  });

  afterEach(() => {
    // the client logs (and otherwise swallows) failed fetches and event-loop errors
    expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([]);
    expect(a.loopErrors).toEqual([]);
    expect(b.loopErrors).toEqual([]);
  });

  it('logs in with two params, reads the pool, discovers the types and fetches every class', async () => {
    const { xapi, calls } = a;
    expect(xapi.status).toBe('connected');
    expect(xapi.sessionId).toMatch(/^OpaqueRef:[0-9a-f-]{36}$/);
    expect(calls.slice(0, 4)).toEqual(['session.login_with_password', 'pool.get_all_records', 'system.listMethods', 'event.inject']);
    expect(xapi.pool.$ref).toBe(srv.emu.pool);

    // one <T>.get_all_records per class XAPI lists, i.e. every class with that message in the schema
    const fetched = calls.slice(4).filter((m) => m.endsWith('.get_all_records')).map((m) => m.slice(0, m.indexOf('.')));
    const listed = model.classes.filter((c) => c.messages.some((m) => m.name === 'get_all_records')).map((c) => c.name);
    expect([...fetched].sort()).toEqual([...listed].sort());
    for (const t of ['pool', 'host', 'host_metrics', 'host_cpu', 'VM', 'VM_metrics', 'SR', 'PBD', 'network', 'PIF', 'SM', 'console', 'role']) {
      expect(fetched, t).toContain(t);
    }

    // the cache holds exactly the server's rows of every fetched class
    const byType = xapi.objects.indexes.type;
    for (const t of listed) {
      const rows = model.classes.find((c) => c.name === t)!.in_database ? srv.emu.db.count(t) : 0;
      expect(Object.keys(byType[t] ?? {}).length, t).toBe(rows);
    }
    for (const t of ['pool', 'host', 'VM', 'SR', 'PBD', 'network', 'PIF', 'SM']) expect(Object.keys(byType[t] ?? {}).length, t).toBeGreaterThan(0);
    expect(Object.keys(byType.host).length).toBe(2);
  });

  it('caches complete records with working links and the wire types of its transport', () => {
    const { xapi } = a;
    // every record of a class carries every field (XO builds one JS class per type from the first record)
    for (const obj of Object.values(xapi.objects.all)) {
      const cls = model.classes.find((c) => c.name === obj.$type)!;
      for (const f of cls.fields) {
        if (f.ty.k === 'option') continue;
        expect(obj[f.name], `${obj.$type}.${f.name}`).not.toBeUndefined();
      }
    }

    const master = xapi.pool.$master as XapiObject;
    expect(master.$type).toBe('host');
    expect(master.$ref).toBe(srv.emu.master);
    expect(master.name_label).toBe(srv.emu.db.get('host', srv.emu.master)!.name_label);
    expect(master.$metrics.live).toBe(true);

    const vms = Object.values(xapi.objects.indexes.type.VM);
    const dom0 = vms.find((v) => v.is_control_domain && v.resident_on === srv.emu.master)!;
    expect(dom0.power_state).toBe('Running');
    expect(dom0.$resident_on).toBe(master);
    expect(dom0.$metrics.$type).toBe('VM_metrics');
    const templates = vms.filter((v) => v.is_a_template);
    expect(templates.length).toBeGreaterThan(10);
    for (const t of templates) expect(t.power_state).toBe('Halted');
    expect(typeof dom0.other_config).toBe('object');
    expect(Array.isArray(dom0.VBDs)).toBe(true);
    expect(typeof dom0.is_a_template).toBe('boolean');
    expect(typeof dom0.HVM_shadow_multiplier).toBe('number');

    // ints are numbers over JSON-RPC and strings over XML-RPC; datetimes are strings / Dates
    const mem = dom0.memory_static_max;
    const lastUpdated = master.$metrics.last_updated;
    if (transport === 'json-rpc') {
      expect(typeof mem).toBe('number');
      expect(lastUpdated).toMatch(XAPI_DATE);
    } else {
      expect(typeof mem).toBe('string');
      expect(mem).toMatch(/^\d+$/);
      expect(lastUpdated).toBeInstanceOf(Date);
      expect(Number.isNaN(+lastUpdated)).toBe(false);
    }
    expect(+mem).toBe(Number(srv.emu.db.get('VM', dom0.$ref)!.memory_static_max));
  });

  it('barrier() sees the pool event of its own marker, after earlier writes', async () => {
    const { xapi } = a;
    const label = `pool-${transport}`;
    await xapi.call('pool.set_name_label', xapi.pool.$ref, label);
    const before = xapi.pool;
    await xapi.barrier();
    expect(xapi.pool).not.toBe(before);
    expect(xapi.pool.name_label).toBe(label);
    // barrier(ref) returns the up-to-date cached object
    const host = await xapi.barrier(srv.emu.master);
    expect(host?.$ref).toBe(srv.emu.master);
    // the barrier keys are written to the server's pool and removed again
    await xapi.barrier();
    expect(a.calls.filter((m) => m === 'pool.add_to_other_config').length).toBe(3);
  });

  it('callAsync settles through the task: the XML-RPC fragment result is parsed', async () => {
    const { xapi } = a;
    const tasksSeen = recorder(xapi);
    const name = `async-net-${transport}`;
    const ref = await xapi.callAsync<string>('network.create', networkRecord(name));
    expect(ref).toMatch(/^OpaqueRef:[0-9a-f-]{36}$/);
    expect(a.calls).toContain('Async.network.create');
    expect(srv.emu.db.get('network', ref)?.name_label).toBe(name);
    // the task went through the cache, and callAsync destroys it afterwards
    const task = tasksSeen.seen.find((e) => e.kind === 'add' && e.obj?.$type === 'task')!.obj!;
    expect(task.name_label).toBe('Async.network.create');
    await tasksSeen.until('remove', (id) => id === task.$id);
    expect(srv.emu.db.has('task', task.$ref)).toBe(false);

    // a void result
    expect(await xapi.callAsync('network.destroy', ref)).toBe('');
    expect(srv.emu.db.has('network', ref)).toBe(false);
    tasksSeen.stop();
  });

  it('a failing async call rejects with the XapiError of the failed task', async () => {
    const { xapi } = a;
    const task = await xapi.call<string>('task.create', 'holder', '');
    await xapi.call('task.add_to_other_config', task, 'k', 'v1');
    const err = (await xapi.callAsync('task.add_to_other_config', task, 'k', 'v2').then(
      () => expect.fail('the async call succeeded'),
      (e: XapiError) => e,
    )) as XapiError;
    expect(err.code).toBe('MAP_DUPLICATE_KEY');
    expect(err.params).toEqual(['task', 'other_config', task, 'k']);
    // settled from the task record (status failure, error_info), not from the RPC answer
    expect(err.task?.status).toBe('failure');
    expect(err.task?.name_label).toBe('Async.task.add_to_other_config');
    expect(err.task?.error_info).toEqual(['MAP_DUPLICATE_KEY', 'task', 'other_config', task, 'k']);
    await xapi.call('task.destroy', task);

    // an error raised before any task exists comes back from the RPC itself
    const bad = 'OpaqueRef:00000000-0000-0000-0000-00000000dead';
    const err2 = (await xapi.callAsync('network.destroy', bad).catch((e: XapiError) => e)) as XapiError;
    expect(err2.code).toBe('HANDLE_INVALID');
    expect(err2.params).toEqual(['network', bad]);
    const err3 = (await xapi.callAsync('VM.start').catch((e: XapiError) => e)) as XapiError;
    expect(err3.code).toBe('MESSAGE_PARAMETER_COUNT_MISMATCH');
    expect(err3.params).toEqual(['VM.start', '3', '0']);
    const err4 = (await xapi.call('VM.get_record', bad).catch((e: XapiError) => e)) as XapiError;
    expect(err4.code).toBe('HANDLE_INVALID');
    expect(err4.params).toEqual(['VM', bad]);
  });

  it('add, mod and del made by another client reach the object cache', async () => {
    const rec = recorder(a.xapi);
    const name = `evt-net-${transport}`;
    const ref = await b.xapi.call<string>('network.create', networkRecord(name));
    const added = (await rec.until('add', (_id, o) => o?.$ref === ref))!;
    expect(added.$type).toBe('network');
    expect(added.name_label).toBe(name);
    expect(added.$id).toBe(srv.emu.db.get('network', ref)!.uuid);
    expect(a.xapi.getObjectByRef(ref)).toBe(added);

    await b.xapi.call('network.set_name_label', ref, `${name}-renamed`);
    const updated = (await rec.until('update', (_id, o) => o?.$ref === ref && o.name_label === `${name}-renamed`))!;
    expect(a.xapi.getObjectByRef(ref)).toBe(updated);
    await b.xapi.call('network.add_to_other_config', ref, 'k', 'v');
    await rec.until('update', (_id, o) => o?.$ref === ref && o.other_config.k === 'v');

    await b.xapi.call('network.destroy', ref);
    await rec.until('remove', (id) => id === added.$id);
    expect(a.xapi.getObjectByRef(ref, null)).toBeNull();
    rec.stop();

    // the event records themselves: lower-case classes, a del without snapshot
    const mine = a.fromResults.flatMap((r) => r.events).filter((e) => e.ref === ref);
    expect(mine.map((e) => `${e.class}:${e.operation}`)).toEqual(expect.arrayContaining(['network:add', 'network:mod', 'network:del']));
    expect(mine.find((e) => e.operation === 'del')).not.toHaveProperty('snapshot');
  });

  it('valid_ref_counts.task matches the cached tasks: no task refetch loop', async () => {
    const { xapi } = a;
    const refetches = () => a.calls.filter((m) => m === 'task.get_all_records').length;
    const before = refetches();
    const fromsBefore = a.fromResults.length;

    const task = await b.xapi.call<string>('task.create', 'long-running', 'held by the other client');
    const rec = recorder(xapi);
    const cached = (await rec.until('add', (_id, o) => o?.$ref === task))!;
    expect(cached.status).toBe('pending');
    for (let i = 0; i < 3; i++) await xapi.barrier();
    // a pending task is only marked for destruction: its owner finishes it first
    await b.xapi.call('task.set_status', task, 'success');
    await b.xapi.call('task.destroy', task);
    await rec.until('remove', (id) => id === cached.$id);
    await xapi.barrier();
    rec.stop();

    const froms = a.fromResults.slice(fromsBefore);
    expect(froms.length).toBeGreaterThanOrEqual(4);
    for (const r of froms) {
      // an int32: a number over both transports (<i4> in XML-RPC), compared with !== by the client
      expect(typeof r.valid_ref_counts.task).toBe('number');
      expect(typeof r.valid_ref_counts.vm).toBe('number');
      expect(typeof r.token).toBe('string');
    }
    expect(refetches()).toBe(before);
    expect(Object.keys(xapi.objects.indexes.type.task ?? {}).length).toBe(srv.emu.db.count('task'));
  });

  it('SESSION_INVALID on a call: the client logs in again and retries it', async () => {
    // without an event loop, so that the call itself meets the invalid session
    const xapi = createClient({ url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, transport, watchEvents: false });
    try {
      await xapi.connect();
      const old = xapi.sessionId;
      expect(await rawCall(url, 'session.logout', [old])).toEqual({ jsonrpc: '2.0', result: '', id: 1 });
      expect((await rawCall(url, 'pool.get_all', [old])).error).toMatchObject({ message: 'SESSION_INVALID', data: [old] });
      const renewed = new Promise<string>((resolve) => xapi.once('sessionId', resolve));
      expect(await xapi.call('pool.get_all')).toEqual([srv.emu.pool]);
      expect(await renewed).not.toBe(old);
      expect(xapi.sessionId).not.toBe(old);
      expect(srv.emu.db.has('session', xapi.sessionId)).toBe(true);
      expect(xapi.status).toBe('connected');
    } finally {
      await xapi.disconnect();
    }
  });

  it('SESSION_INVALID in event.from: the event loop logs in again, refetches and keeps watching', async () => {
    const { xapi } = a;
    const old = xapi.sessionId;
    const logins = () => a.calls.filter((m) => m === 'session.login_with_password').length;
    const loginsBefore = logins();
    const renewed = new Promise<string>((resolve) => xapi.once('sessionId', resolve));

    // another connection logs the client's session out: its pending event.from is woken with SESSION_INVALID
    expect(await rawCall(url, 'session.logout', [old])).toEqual({ jsonrpc: '2.0', result: '', id: 1 });
    const sid = await renewed;
    expect(sid).not.toBe(old);
    expect(logins()).toBe(loginsBefore + 1);
    // the loop restarts from event.inject with a full refetch
    await xapi.objectsFetched;
    const since = a.calls.slice(a.calls.lastIndexOf('session.login_with_password'));
    expect(since).toContain('event.inject');
    expect(since).toContain('VM.get_all_records');
    expect(xapi.status).toBe('connected');
    expect(xapi.sessionId).toBe(sid);

    // calls and events work on the new session
    const pool = await xapi.call<{ uuid: string }>('pool.get_record', srv.emu.pool);
    expect(pool.uuid).toBe(srv.emu.db.get('pool', srv.emu.pool)!.uuid);
    const rec = recorder(xapi);
    const ref = await b.xapi.call<string>('network.create', networkRecord(`after-relogin-${transport}`));
    await rec.until('add', (_id, o) => o?.$ref === ref);
    await xapi.barrier();
    await b.xapi.call('network.destroy', ref);
    await rec.until('remove', () => !xapi.getObjectByRef(ref, null));
    rec.stop();
    expect(a.calls.slice(a.calls.lastIndexOf('session.login_with_password'))).toContain('event.from');
  });
});
