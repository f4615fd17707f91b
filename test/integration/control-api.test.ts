// The control API's plumbing, driven as a user drives it: startEmulator() in process, the typed
// client, plain HTTP for what the client hides (credentials, bad input, the OpenAPI document), and
// the clock: frozen time holds a VM start until it is advanced, and an advance runs the task and
// session GC as that much time passing would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmulator, controlClient, ControlApiError, contract, type EmulatorHandle } from '../../server/index.js';
import { connect, XapiFault, type Client } from './helpers/jsonrpc.js';
import { vmArgs } from './helpers/records.js';

let pool: EmulatorHandle;
let x: Client;
const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

beforeAll(async () => {
  pool = await startEmulator({ seed: 'control-api', users: [{ name: 'ro', password: 'ro-pw', role: 'read-only' }, { name: 'admin', password: 'admin-pw', role: 'pool-admin' }] });
  x = await connect(pool.url, pool.username, pool.password);
});
afterAll(async () => {
  await pool?.stop();
});

const faultOf = async (p: Promise<unknown>): Promise<ControlApiError> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof ControlApiError) return e;
    throw e;
  }
  throw new Error('expected a ControlApiError');
};

describe('startEmulator', () => {
  it('opens a pool on a free loopback port with working credentials', async () => {
    expect(pool.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(Number(new URL(pool.url).port)).toBeGreaterThan(0);
    expect(x.session).toMatch(/^OpaqueRef:/);
    expect(await x.call('pool.get_all')).toHaveLength(1);
  });

  it('stop() closes the listeners', async () => {
    const other = await startEmulator();
    const url = other.url;
    await other.stop();
    await expect(fetch(new URL('/jsonrpc', url), { method: 'POST', body: '{}' })).rejects.toThrow();
  });
});

describe('credentials', () => {
  it('asks for them with a Basic challenge', async () => {
    const res = await fetch(new URL('/xapi-emu/clock', pool.url));
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
    expect((await res.json()).error.code).toBe('SESSION_AUTHENTICATION_FAILED');
  });

  it('refuses a wrong password', async () => {
    const e = await faultOf(controlClient({ url: pool.url, username: 'root', password: 'nope' }).clock.get());
    expect([e.status, e.code]).toEqual([401, 'SESSION_AUTHENTICATION_FAILED']);
  });

  it('takes a pool-admin, refuses a read-only user with RBAC_PERMISSION_DENIED', async () => {
    expect((await controlClient({ url: pool.url, username: 'admin', password: 'admin-pw' }).clock.get()).scale).toBe(0);
    const e = await faultOf(controlClient({ url: pool.url, username: 'ro', password: 'ro-pw' }).clock.get());
    expect(e.status).toBe(403);
    expect(e.code).toBe('RBAC_PERMISSION_DENIED');
    expect(e.params[0]).toBe('http/xapi_emu_control');
  });

  it('takes a session_id, and refuses an invalid one', async () => {
    expect((await controlClient({ url: pool.url, session: x.session }).clock.get()).frozen).toBe(false);
    const ro = await connect(pool.url, 'ro', 'ro-pw');
    expect((await faultOf(controlClient({ url: pool.url, session: ro.session }).clock.get())).status).toBe(403);
    const bad = await faultOf(controlClient({ url: pool.url, session: 'OpaqueRef:nope' }).clock.get());
    expect([bad.status, bad.code, bad.params]).toEqual([401, 'SESSION_INVALID', ['OpaqueRef:nope']]);
  });
});

describe('input and errors', () => {
  const post = (path: string, body: string) =>
    fetch(new URL(path, pool.url), { method: 'POST', headers: { 'content-type': 'application/json', ...basic('root', pool.password) }, body });

  it('names the path of a bad key', async () => {
    const res = await post('/xapi-emu/clock/advance', JSON.stringify({ seconds: 'soon' }));
    expect(res.status).toBe(400);
    const { error } = await res.json();
    expect(error.code).toBe('INVALID_INPUT');
    expect(error.issues[0].path).toEqual(['seconds']);
  });

  it('refuses unknown keys, bad JSON and a body that is not an object', async () => {
    expect((await (await post('/xapi-emu/clock/advance', JSON.stringify({ seconds: 1, extra: 1 }))).json()).error.code).toBe('INVALID_INPUT');
    const badJson = await post('/xapi-emu/clock/advance', '{"seconds":');
    expect(badJson.status).toBe(400);
    expect((await post('/xapi-emu/clock/advance', '[1]')).status).toBe(400);
  });

  it('reads a JSON body sent with another content type, as curl -d sends it', async () => {
    const res = await fetch(new URL('/xapi-emu/clock/advance', pool.url), {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('root', pool.password) }, body: '{"seconds":0}',
    });
    expect(res.status).toBe(200);
    expect((await res.json()).scale).toBe(0);
  });

  it('answers 404 NOT_FOUND for an unknown route, as JSON', async () => {
    const res = await fetch(new URL('/xapi-emu/no/such/route', pool.url), { headers: basic('root', pool.password) });
    expect(res.status).toBe(404);
    expect((await res.json()).error.code).toBe('NOT_FOUND');
  });
});

describe('OpenAPI document', () => {
  it('describes every route of the contract', async () => {
    const res = await fetch(new URL('/xapi-emu/openapi.json', pool.url), { headers: basic('root', pool.password) });
    expect(res.status).toBe(200);
    const doc = await res.json();
    expect(doc.openapi).toBe('3.1.0');
    const ops: string[] = [];
    for (const methods of Object.values(doc.paths) as Record<string, { operationId: string }>[]) for (const o of Object.values(methods)) ops.push(o.operationId);
    const expected = Object.entries(contract).flatMap(([area, routes]) => Object.keys(routes).map((op) => `${area}.${op}`));
    expect(ops.sort()).toEqual(expected.sort());
    expect(doc.paths['/xapi-emu/clock/advance'].post.requestBody.content['application/json'].schema.required).toEqual(['seconds']);
  });

  it('needs credentials too', async () => {
    expect((await fetch(new URL('/xapi-emu/openapi.json', pool.url))).status).toBe(401);
  });
});

describe('clock', () => {
  it('a frozen clock holds simulated work until it is advanced past it', async () => {
    const vm = await x.call('VM.create', vmArgs('frozen-start', { other_config: { 'xapi-emu-guest-profile': 'no-os' } }));
    await pool.control.clock.set({ frozen: true });
    try {
      const task = await x.call('Async.VM.start', vm, false, false);
      // the start waits on simulated time: nothing moves while the clock stands still
      let c = await pool.control.clock.get();
      for (let i = 0; i < 50 && c.sleeping === 0; i++) c = await pool.control.clock.get();
      expect(c.sleeping).toBeGreaterThan(0);
      expect(await x.call('task.get_status', task)).toBe('pending');
      expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
      const before = c.now_ms;
      const after = await pool.control.clock.advance({ seconds: 120 });
      expect(after.now_ms - before).toBe(120_000);
      let status = await x.call('task.get_status', task);
      for (let i = 0; i < 200 && status === 'pending'; i++) {
        await pool.control.clock.advance({ seconds: 10 });
        status = await x.call('task.get_status', task);
      }
      expect(status).toBe('success');
      expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    } finally {
      await pool.control.clock.set({ frozen: false });
    }
    await x.call('VM.hard_shutdown', vm);
  });

  it('sets the time scale, and refuses a negative one', async () => {
    expect((await pool.control.clock.set({ scale: 0.5 })).scale).toBe(0.5);
    expect((await pool.control.clock.set({ scale: 0 })).scale).toBe(0);
    expect((await faultOf(pool.control.clock.set({ scale: -1 }))).status).toBe(400);
  });

  it('an advance runs the GC: a day later idle sessions and stale tasks are gone', async () => {
    const s = await connect(pool.url, 'root', pool.password);
    const task = await s.call('task.create', 'left pending', '');
    const before = (await pool.control.clock.get()).now_ms;
    await pool.control.clock.advance({ seconds: 86_400 * 2 });
    expect((await pool.control.clock.get()).now_ms - before).toBeGreaterThanOrEqual(86_400 * 2 * 1000);
    await expect(s.call('task.get_status', task)).rejects.toSatisfy((e: XapiFault) => e.description[0] === 'SESSION_INVALID');
    x = await connect(pool.url, 'root', pool.password);
    await expect(x.call('task.get_status', task)).rejects.toSatisfy((e: XapiFault) => e.description[0] === 'HANDLE_INVALID');
  });
});
