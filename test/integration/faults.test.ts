// Fault rules of the control API, seen by real clients over real sockets: XAPI errors (XO's
// xen-api, Python's XenAPI), Async calls whose task fails, nth / times / seeded probability,
// latency on the emulator's clock, hangs released, dropped connections, HTTP statuses and
// truncated exports, a VDI's datapath going bad (the guest's blkif, /export_raw_vdi and
// /import_raw_vdi), a member failing or cut off from the master and coming back, an SR whose
// backend fails, a toolstack restart, and bad rules answered with the path of the bad key.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { createClient, type Xapi, type XapiError } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { controlClient, ControlApiError, type ControlClient } from '../../server/control/client.js';
import { connect, XapiFault, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, localStorage, startPool } from './helpers/pool.js';
import { GiB, MiB, NULL, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'faults-test';
const PYTHON = '/usr/bin/python3';

let srv: RunningServer;
let url: string;
let x: Client;
let ctl: ControlClient;
let xo: Xapi;
let local: string;
let member: string;
let shared: string;

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

/** Polls (each turn is a call over a socket) until `f` gives a value. */
async function until<T>(what: string, f: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = await f();
    if (v !== undefined) return v;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`still waiting: ${what}`);
}

const finished = (task: string) =>
  until(`task ${task}`, async () => {
    const rec = await x.call('task.get_record', task);
    return rec.status === 'pending' ? undefined : rec;
  });

/** The XAPI error of a call, or null if it succeeded. */
async function errorOf(p: Promise<unknown>): Promise<string[] | null> {
  try {
    await p;
    return null;
  } catch (e) {
    if (e instanceof XapiFault) return e.description;
    throw e;
  }
}

/** A JSON-RPC call on a connection of its own, through node:http: its answer, or the socket error. */
function rawCall(base: string, method: string, params: unknown[]): Promise<{ body?: any; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ method, params, id: 1 });
    const req = request(new URL('/jsonrpc', base), { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ body: JSON.parse(Buffer.concat(chunks).toString()) }));
      res.on('error', (error) => resolve({ error }));
    });
    req.on('error', (error) => resolve({ error }));
    req.end(body);
  });
}

/** A GET on a connection of its own: the status, the bytes that came, and whether the body was cut. */
function rawGet(path: string): Promise<{ status: number; bytes: Buffer; cut: boolean; length: number; task: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), (res) => {
      const chunks: Buffer[] = [];
      let cut = false;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('aborted', () => (cut = true));
      res.on('error', () => (cut = true));
      res.on('close', () =>
        resolve({ status: res.statusCode!, bytes: Buffer.concat(chunks), cut: cut || !res.complete, length: Number(res.headers['content-length'] ?? -1), task: String(res.headers['task-id'] ?? '') }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

async function newVm(name: string, disk = 8 * MiB, sr = local) {
  const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 1, VCPUs_at_startup: 1 }));
  const vdi: string = await x.call('VDI.create', vdiArgs(sr, disk, `${name}-disk`));
  const vbd: string = await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  return { vm, vdi, vbd };
}

const pattern = (n: number, seed: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
};

async function importRaw(vdi: string, data: Buffer, task: string): Promise<number> {
  const r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw', task_id: task })}`, url), {
    method: 'PUT', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  await r.arrayBuffer();
  return r.status;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 }));
  url = srv.urls[0];
  ctl = controlClient({ url, username: 'root', password: PASSWORD });
  xo = createClient({ url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, transport: 'json-rpc', debounce: 0 });
  await xo.connect();
  local = await localStorage(x);
  const hosts: string[] = await x.call('host.get_all');
  member = hosts.find((h) => h !== srv.emu.master)!;
  shared = await createSharedSr(x, srv, srv.emu.master);
});

afterEach(async () => {
  await ctl.faults.clear();
  await ctl.clock.set({ frozen: false });
});

afterAll(async () => {
  await xo?.disconnect().catch(() => undefined);
  await srv?.close();
});

describe('API method rules', () => {
  it('fails the next N calls with the exact XAPI error (xen-api), then lets calls through; hits count', async () => {
    const { vm } = await newVm('err');
    const rule = await ctl.faults.create({
      match: { method: 'VM.start' },
      fire: { times: 1 },
      effect: { error: { code: 'SR_BACKEND_FAILURE_44', params: ['', 'There is insufficient space', ''] } },
    });
    expect(rule.id).toMatch(/\S/);
    const e = (await xo.call('VM.start', vm, false, false).then(() => null, (err: XapiError) => err))!;
    expect(e).not.toBeNull();
    expect(e.code).toBe('SR_BACKEND_FAILURE_44');
    expect(e.params).toEqual(['', 'There is insufficient space', '']);
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    await xo.call('VM.start', vm, false, false);
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    expect((await ctl.faults.get({ id: rule.id })).hits).toEqual({ total: 2, fired: 1 });
    expect((await ctl.faults.list()).rules.map((r) => r.id)).toEqual([rule.id]);
    await x.call('VM.hard_shutdown', vm);
  });

  it('an Async call gets its task, and the task fails with the error (xen-api callAsync)', async () => {
    const { vm } = await newVm('async');
    await ctl.faults.create({ match: { method: 'VM.start' }, effect: { error: { code: 'HOST_OFFLINE', params: [member] } } });
    const e = (await xo.callAsync('VM.start', vm, false, false).then(() => null, (err: XapiError) => err))!;
    expect(e.code).toBe('HOST_OFFLINE');
    expect(e.params).toEqual([member]);
    // the same over JSON-RPC: a task ref, then a failed task
    const task: string = await x.call('Async.VM.start', vm, false, false);
    expect(task).toMatch(/^OpaqueRef:/);
    const rec = await finished(task);
    expect(rec.status).toBe('failure');
    expect(rec.error_info).toEqual(['HOST_OFFLINE', member]);
    // a rule written for the Async name matches only Async calls
    await ctl.faults.clear();
    await ctl.faults.create({ match: { method: 'Async.VM.clone' }, effect: { error: { code: 'VM_BAD_POWER_STATE', params: [vm, 'halted', 'running'] } } });
    const clone: string = await x.call('VM.clone', vm, 'sync-clone');
    expect(clone).toMatch(/^OpaqueRef:/);
    expect((await finished(await x.call('Async.VM.clone', vm, 'async-clone'))).error_info).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
  });

  it('Python XenAPI sees the error as XenAPI.Failure with its details', async () => {
    await ctl.faults.create({ match: { method: 'host.get_all' }, effect: { error: { code: 'HOST_IS_SLAVE', params: ['10.0.0.1'] } } });
    const script = [
      'import sys, json',
      "sys.path.insert(0, '/usr/lib/python3/dist-packages/os_xenapi/client')",
      'import XenAPI',
      's = XenAPI.Session(sys.argv[1])',
      "s.xenapi.login_with_password('root', sys.argv[2], '1.0', 'faults-test')",
      'try:',
      '    s.xenapi.host.get_all()',
      "    print(json.dumps({'ok': True}))",
      'except XenAPI.Failure as e:',
      "    print(json.dumps({'details': e.details}))",
      's.xenapi.session.logout()',
    ].join('\n');
    const { stdout } = await promisify(execFile)(PYTHON, ['-c', script, url, PASSWORD], { timeout: 20_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
    expect(JSON.parse(stdout)).toEqual({ details: ['HOST_IS_SLAVE', '10.0.0.1'] });
  });

  it('matches calls by an argument: ref, uuid or name_label', async () => {
    const a = await newVm('victim');
    const b = await newVm('bystander');
    const uuid: string = await x.call('VM.get_uuid', a.vm);
    const fail = { error: { code: 'VM_IS_PROTECTED', params: [] } };
    for (const args of [{ ref: a.vm }, { uuid }, { name_label: 'victim' }]) {
      await ctl.faults.clear();
      const r = await ctl.faults.create({ match: { method: 'VM.get_*', args }, effect: fail });
      expect(await errorOf(x.call('VM.get_name_label', a.vm))).toEqual(['VM_IS_PROTECTED']);
      expect(await x.call('VM.get_name_label', b.vm)).toBe('bystander');
      expect((await ctl.faults.get({ id: r.id })).hits).toEqual({ total: 1, fired: 1 });
    }
  });

  it('nth fires once, on the Nth match only', async () => {
    const { vm } = await newVm('nth');
    await ctl.faults.create({ match: { method: 'VM.get_name_label' }, fire: { nth: 3 }, effect: { error: { code: 'INTERNAL_ERROR', params: ['third'] } } });
    const seen: (string[] | null)[] = [];
    for (let i = 0; i < 5; i++) seen.push(await errorOf(x.call('VM.get_name_label', vm)));
    expect(seen).toEqual([null, null, ['INTERNAL_ERROR', 'third'], null, null]);
  });

  it('a seeded probability fires on the same matches every time; another seed on others', async () => {
    const { vm } = await newVm('prob');
    const run = async (seed: string) => {
      await ctl.faults.clear();
      const r = await ctl.faults.create({ match: { method: 'VM.get_name_label' }, fire: { probability: 0.5, seed }, effect: { error: { code: 'INTERNAL_ERROR', params: [] } } });
      const pattern: boolean[] = [];
      for (let i = 0; i < 32; i++) pattern.push((await errorOf(x.call('VM.get_name_label', vm))) !== null);
      const hits = (await ctl.faults.get({ id: r.id })).hits;
      expect(hits).toEqual({ total: 32, fired: pattern.filter(Boolean).length });
      return pattern;
    };
    const a = await run('alpha');
    expect(await run('alpha')).toEqual(a);
    expect(a.some((f) => f) && a.some((f) => !f)).toBe(true);
    expect(await run('beta')).not.toEqual(a);
  });

  it('latency follows the clock: with time frozen the call waits until time is advanced', async () => {
    const { vm } = await newVm('slow');
    await ctl.clock.set({ frozen: true });
    await ctl.faults.create({ match: { method: 'VM.get_name_label' }, effect: { latency: 30 } });
    const asleep = (await ctl.clock.get()).sleeping;
    let done = false;
    const p = x.call('VM.get_name_label', vm).then((v) => ((done = true), v));
    await until('the call to sleep', async () => ((await ctl.clock.get()).sleeping > asleep ? true : undefined));
    expect(done).toBe(false);
    await ctl.clock.advance({ seconds: 29 });
    expect(done).toBe(false);
    await ctl.clock.advance({ seconds: 1 });
    expect(await p).toBe('slow');
  });

  it('a hang holds calls until released (later calls pass), or until the rule is removed', async () => {
    const { vm } = await newVm('hang');
    const r = await ctl.faults.create({ match: { method: 'VM.get_name_label' }, effect: { hang: true } });
    let done = false;
    const p = x.call('VM.get_name_label', vm).then((v) => ((done = true), v));
    await until('the call to hang', async () => ((await ctl.faults.get({ id: r.id })).hanging === 1 ? true : undefined));
    expect(done).toBe(false);
    const released = await ctl.faults.release({ id: r.id });
    expect(released.released).toBe(true);
    expect(await p).toBe('hang');
    expect(await x.call('VM.get_name_label', vm)).toBe('hang');
    expect((await ctl.faults.get({ id: r.id })).hits).toEqual({ total: 2, fired: 1 });

    const r2 = await ctl.faults.create({ match: { method: 'VM.get_name_label' }, effect: { hang: true } });
    const p2 = x.call('VM.get_name_label', vm);
    await until('the call to hang', async () => ((await ctl.faults.get({ id: r2.id })).hanging === 1 ? true : undefined));
    await ctl.faults.delete({ id: r2.id });
    expect(await p2).toBe('hang');
    await expect(ctl.faults.get({ id: r2.id })).rejects.toMatchObject({ status: 404, code: 'NOT_FOUND' });
  });

  it('drop cuts the connection without an answer (a reset for the client)', async () => {
    const r = await ctl.faults.create({ match: { method: 'pool.get_all' }, fire: { times: 1 }, effect: { drop: true } });
    const got = await rawCall(url, 'pool.get_all', [x.session]);
    expect(got.body).toBeUndefined();
    expect(got.error?.code).toBe('ECONNRESET');
    // xen-api's client sees a transport error, not an XAPI one
    await ctl.faults.create({ match: { method: 'pool.get_all' }, fire: { times: 1 }, effect: { drop: true } });
    const e = (await xo.call('pool.get_all').then(() => null, (err: XapiError) => err))!;
    expect(e).not.toBeNull();
    // (undici's: the other side closed the socket)
    expect(e.code).toBe('UND_ERR_SOCKET');
    expect((await rawCall(url, 'pool.get_all', [x.session])).body.result).toEqual([srv.emu.pool]);
    // (it saw the xen-api call and the last one too, without firing again)
    expect((await ctl.faults.get({ id: r.id })).hits).toEqual({ total: 3, fired: 1 });
  });
});

describe('HTTP handler rules', () => {
  it('answers a status and fails the task the client gave', async () => {
    const { vdi } = await newVm('http500', 2 * MiB);
    await ctl.faults.create({ match: { path: '/export_raw_vdi*', http_method: 'GET' }, fire: { times: 1 }, effect: { status: 500, error: { code: 'VDI_IO_ERROR', params: ['Device I/O errors'] } } });
    const task: string = await x.call('task.create', 'export', '');
    const r = await rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw', task_id: task })}`);
    expect(r.status).toBe(500);
    expect((await finished(task)).error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
    // the next export is whole
    const ok = await rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`);
    expect(ok.status).toBe(200);
    expect(ok.bytes.length).toBe(2 * MiB);
  });

  it('truncates a response after N bytes: the export is cut and its task fails with VDI_IO_ERROR', async () => {
    const { vdi } = await newVm('trunc', 4 * MiB);
    const data = pattern(4 * MiB, 7);
    const put: string = await x.call('task.create', 'import', '');
    expect(await importRaw(vdi, data, put)).toBe(200);
    expect((await finished(put)).status).toBe('success');
    await ctl.faults.create({ match: { path: '/export_raw_vdi' }, effect: { truncate_after: 100_000 } });
    const task: string = await x.call('task.create', 'export', '');
    const r = await rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw', task_id: task })}`);
    expect(r.status).toBe(200);
    expect(r.length).toBe(4 * MiB);
    expect(r.cut).toBe(true);
    expect(r.bytes.length).toBe(100_000);
    expect(r.bytes.equals(data.subarray(0, 100_000))).toBe(true);
    expect((await finished(task)).error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
  });

  it('drop and hang on a handler', async () => {
    const { vdi } = await newVm('httpdrop', 2 * MiB);
    await ctl.faults.create({ match: { path: '/export_raw_vdi' }, fire: { times: 1 }, effect: { drop: true } });
    await expect(rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`)).rejects.toMatchObject({ code: 'ECONNRESET' });
    const h = await ctl.faults.create({ match: { path: '/export_raw_vdi' }, effect: { hang: true } });
    const p = rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`);
    await until('the export to hang', async () => ((await ctl.faults.get({ id: h.id })).hanging === 1 ? true : undefined));
    await ctl.faults.release({ id: h.id });
    expect((await p).bytes.length).toBe(2 * MiB);
  });
});

describe('datapath rules', () => {
  it("the guest's blkif sees ERROR once the VDI has moved N bytes", async () => {
    const { vm, vdi } = await newVm('dp', 16 * MiB);
    const uuid: string = await x.call('VM.get_uuid', vm);
    await x.call('VM.start', vm, false, false);
    const pv = await fetch(new URL(`/xapi-emu/guest/pv-drivers?${q({ session_id: x.session, vm: uuid })}`, url), { method: 'POST' });
    expect(pv.status).toBe(200);
    const write = async (offset: number, n: number) => {
      const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset })}`, url), {
        method: 'POST', body: new Uint8Array(pattern(n, offset & 0xff)), headers: { 'content-type': 'application/octet-stream' },
      });
      return { status: r.status, body: r.status === 200 ? ((await r.json()) as any) : await r.text() };
    };
    const rule = await ctl.faults.create({ match: { vdi }, effect: { io_error_after: 256 * 1024 } });
    const ok = await write(0, 128 * 1024);
    expect(ok.body).toMatchObject({ path: 'blkif', status: 'OKAY' });
    const bad = await write(MiB, 512 * 1024);
    expect(bad.status).toBe(500);
    expect(bad.body).toContain('blkif write of hda: ERROR');
    const st = (await (await fetch(new URL(`/xapi-emu/introspect?${q({ session_id: x.session })}`, url))).json()) as any;
    const ring = st.rings.find((r: any) => r.vm === uuid);
    expect(ring.responses.error).toBeGreaterThan(0);
    const after = await ctl.faults.get({ id: rule.id });
    expect(after.bytes_left).toBe(0);
    expect(after.hits.fired).toBeGreaterThan(0);
    // the rule gone, the disk works again
    await ctl.faults.delete({ id: rule.id });
    expect((await write(2 * MiB, 64 * 1024)).body).toMatchObject({ status: 'OKAY' });
    await x.call('VM.hard_shutdown', vm);
  });

  it('/export_raw_vdi and /import_raw_vdi of the VDI fail with VDI_IO_ERROR; the VDI keeps its data', async () => {
    const { vdi } = await newVm('dpexp', 4 * MiB);
    const data = pattern(4 * MiB, 3);
    const put: string = await x.call('task.create', 'import', '');
    expect(await importRaw(vdi, data, put)).toBe(200);
    await finished(put);
    await ctl.faults.create({ match: { vdi }, effect: { io_error_after: MiB } });
    const task: string = await x.call('task.create', 'export', '');
    const r = await rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw', task_id: task })}`);
    expect(r.status).toBe(200);
    expect(r.cut).toBe(true);
    expect(r.bytes.length).toBeLessThanOrEqual(MiB);
    expect((await finished(task)).error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
    // the disk has gone bad: an import fails too, and what was there stays
    const imp: string = await x.call('task.create', 'import', '');
    await importRaw(vdi, pattern(4 * MiB, 9), imp);
    expect((await finished(imp)).error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
    await ctl.faults.clear();
    const back = await rawGet(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`);
    expect(back.bytes.equals(data)).toBe(true);
  });
});

describe('host rules', () => {
  const live = async (h: string) => x.call('host_metrics.get_live', await x.call('host.get_metrics', h));

  it('a member fails: offline, its domains gone, HOST_OFFLINE for calls forwarded to it, nothing on its address; declare_dead resets its VMs; it comes back', async () => {
    const { vm } = await newVm('on-member', 8 * MiB, shared);
    const uuid: string = await x.call('VM.get_uuid', vm);
    await x.call('VM.start_on', vm, member, false, false);
    const domains = async () => {
      const st = (await (await fetch(new URL(`/xapi-emu/introspect?${q({ session_id: x.session, host: member })}`, url))).json()) as any;
      return st.domains.map((d: any) => d.vm);
    };
    expect(await domains()).toContain(uuid);

    expect(await errorOf(x.call('host.declare_dead', member))).toEqual(['HOST_IS_LIVE', member]);
    const rule = await ctl.faults.create({ match: { host: member }, effect: { host_down: true } });
    expect(await live(member)).toBe(false);
    expect(await domains()).not.toContain(uuid);
    // as xapi with HA off, the database still has the VM running there
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    expect(await x.call('VM.get_resident_on', vm)).toBe(member);
    expect(await errorOf(x.call('VM.clean_shutdown', vm))).toEqual(['HOST_OFFLINE', member]);
    expect(await errorOf(x.call('host.disable', member))).toEqual(['HOST_OFFLINE', member]);
    expect(await errorOf(x.call('host.enable', member))).toEqual(['HOST_OFFLINE', member]);
    // Xapi_vm_helpers.assert_can_boot_here: a host that is not live starts nothing
    const other = await newVm('elsewhere', 8 * MiB, shared);
    expect(await errorOf(x.call('VM.start_on', other.vm, member, false, false))).toEqual(['HOST_NOT_LIVE']);
    await x.call('VM.set_affinity', other.vm, member);
    await x.call('VM.start', other.vm, false, false);
    expect(await x.call('VM.get_resident_on', other.vm)).toBe(srv.emu.master);
    await x.call('VM.hard_shutdown', other.vm);
    // its own address answers nothing
    const there = await rawCall(srv.urls[1], 'session.login_with_password', ['root', PASSWORD, '1.0', 'x']);
    expect(there.error?.code).toBe('ECONNRESET');

    // what met the failure: the shutdown, disable and enable are forwarded, the call on its address
    expect((await ctl.faults.get({ id: rule.id })).hits).toEqual({ total: 3, fired: 3 });
    await x.call('host.declare_dead', member);
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    expect(await x.call('VM.get_resident_on', vm)).toBe(NULL);
    expect(await x.call('host.get_enabled', member)).toBe(false);

    await ctl.faults.delete({ id: rule.id });
    expect(await live(member)).toBe(true);
    expect(await x.call('host.get_enabled', member)).toBe(true);
    await x.call('VM.start_on', vm, member, false, false);
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    await x.call('VM.hard_shutdown', vm);
  });

  it('a failed member that comes back without declare_dead: its VMs without domains are Halted', async () => {
    const { vm } = await newVm('back', 8 * MiB, shared);
    await x.call('VM.start_on', vm, member, false, false);
    const rule = await ctl.faults.create({ match: { host: member }, effect: { host_down: true } });
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    await ctl.faults.delete({ id: rule.id });
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    expect(await live(member)).toBe(true);
  });

  it('a member cut off from the master: HOST_STILL_BOOTING on its address, HOST_OFFLINE from the master; its VMs keep running', async () => {
    const { vm } = await newVm('isolated', 8 * MiB, shared);
    await x.call('VM.start_on', vm, member, false, false);
    const before = await rawCall(srv.urls[1], 'pool.get_all', [x.session]);
    expect(before.body.error).not.toEqual(['HOST_STILL_BOOTING']);
    const rule = await ctl.faults.create({ match: { host: member }, effect: { host_isolated: true } });
    expect((await rawCall(srv.urls[1], 'pool.get_all', [x.session])).body.error).toEqual(['HOST_STILL_BOOTING']);
    expect((await rawCall(srv.urls[1], 'session.login_with_password', ['root', PASSWORD, '1.0', 'x'])).body.error).toEqual(['HOST_STILL_BOOTING']);
    expect(await live(member)).toBe(false);
    expect(await errorOf(x.call('VM.pause', vm))).toEqual(['HOST_OFFLINE', member]);
    // the master cannot reach the host: a power-state reset goes through (the domain runs on)
    await x.call('VM.power_state_reset', vm);
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    await ctl.faults.delete({ id: rule.id });
    expect(await live(member)).toBe(true);
    expect((await rawCall(srv.urls[1], 'pool.get_all', [x.session])).body).toEqual(before.body);
    // back in touch, the host's xenopsd reports the domain: Running there again
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    expect(await x.call('VM.get_resident_on', vm)).toBe(member);
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('SR rules', () => {
  it('SR, VDI and PBD operations on the SR fail as SM fails: SR_BACKEND_FAILURE_<code>', async () => {
    const { vm } = await newVm('sr-vm');
    const rule = await ctl.faults.create({ match: { sr: local }, effect: { sr_backend_failure: {} } });
    const sm = ['SR_BACKEND_FAILURE_47', '', 'The SR is not available', ''];
    expect(await errorOf(x.call('VDI.create', vdiArgs(local, 4 * MiB, 'no-room')))).toEqual(sm);
    expect(await errorOf(x.call('SR.scan', local))).toEqual(sm);
    const pbd = (await x.call('SR.get_PBDs', local))[0];
    expect(await errorOf(x.call('PBD.plug', pbd))).toEqual(sm);
    expect(await errorOf(x.call('VM.start', vm, false, false))).toEqual(sm);
    // reads answer from the database
    expect(await x.call('SR.get_name_label', local)).toBe('Local storage');
    expect((await ctl.faults.get({ id: rule.id })).hits.fired).toBe(4);
    await ctl.faults.delete({ id: rule.id });
    await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'room'));

    await ctl.faults.create({ match: { sr: await x.call('SR.get_uuid', local) }, effect: { sr_backend_failure: { code: 44, reason: 'There is insufficient space' } } });
    expect(await errorOf(x.call('VDI.create', vdiArgs(local, 4 * MiB, 'no-room')))).toEqual(['SR_BACKEND_FAILURE_44', '', 'There is insufficient space', '']);
  });
});

describe('toolstack restart', () => {
  it('a call answered, then the toolstack restarts; the pool answers again', async () => {
    // (a client watching events would see its connection go)
    await xo.disconnect();
    const r = await ctl.faults.create({ match: { method: 'pool.get_all' }, fire: { times: 1 }, effect: { toolstack_restart: true } });
    expect(await x.call('pool.get_all')).toEqual([srv.emu.pool]);
    // the restart drops the sessions (they are not persistent): the old one ends SESSION_INVALID
    const after = await until('the restart', async () => {
      const r = await rawCall(url, 'pool.get_all', [x.session]).catch(() => undefined);
      return r?.body?.error?.[0] === 'SESSION_INVALID' ? r.body.error : undefined;
    });
    expect(after).toEqual(['SESSION_INVALID', x.session]);
    x = await connect(url, 'root', PASSWORD);
    expect(await x.call('pool.get_all')).toEqual([srv.emu.pool]);
    expect((await ctl.faults.get({ id: r.id })).hits.fired).toBe(1);
  });
});

describe('rules and the control API', () => {
  const bad = async (input: unknown) => {
    const e = await ctl.faults.create(input as never).then(() => null, (err: ControlApiError) => err);
    expect(e).toBeInstanceOf(ControlApiError);
    expect(e!.status).toBe(400);
    expect(e!.code).toBe('INVALID_INPUT');
    return e!.body!.error.issues!.map((i) => i.path.join('.'));
  };

  it('bad rules get 400 with the path of the bad key', async () => {
    expect(await bad({ match: {}, effect: { drop: true } })).toEqual(['match']);
    expect(await bad({ match: { method: 'VM.start' }, effect: { status: 500 } })).toEqual(['effect.status']);
    expect(await bad({ match: { method: 'VM.start' }, fire: { times: 0 }, effect: { drop: true } })).toEqual(['fire.times']);
    expect(await bad({ match: { method: 'VM.start' }, effect: { error: { code: 'X', params: [1] } } })).toEqual(['effect.error.params.0']);
    expect(await bad({ match: { method: 'VM.start', colour: 'red' }, effect: { drop: true } })).toEqual(['match']);
    expect(await bad({ match: { method: 'VM.start' }, effect: { drop: true, hang: true } })).toEqual(['effect.drop']);
    expect(await bad({ match: { vdi: 'OpaqueRef:nothing' }, effect: { io_error_after: 0 } })).toEqual(['match.vdi']);
    expect(await bad({ match: { host: srv.emu.master }, effect: { host_isolated: true } })).toEqual(['match.host']);
    expect(await bad({ match: { sr: local }, fire: { times: 1 }, effect: { sr_backend_failure: {} } })).toEqual(['fire']);
    expect((await ctl.faults.list()).rules).toEqual([]);
  });

  it('release of a rule that does not hang, unknown ids; clear removes every rule and calls pass again', async () => {
    const r = await ctl.faults.create({ match: { method: 'pool.get_all' }, effect: { error: { code: 'INTERNAL_ERROR', params: [] } } });
    await expect(ctl.faults.release({ id: r.id })).rejects.toMatchObject({ status: 400 });
    await expect(ctl.faults.delete({ id: 'fault-none' })).rejects.toMatchObject({ status: 404 });
    await ctl.faults.create({ match: { path: '/export_raw_vdi' }, effect: { status: 503 } });
    expect(await errorOf(x.call('pool.get_all'))).toEqual(['INTERNAL_ERROR']);
    expect(await ctl.faults.clear()).toEqual({ removed: 2 });
    expect((await ctl.faults.list()).rules).toEqual([]);
    expect(await x.call('pool.get_all')).toEqual([srv.emu.pool]);
  });

  it('the OpenAPI document describes the faults routes', async () => {
    const r = await fetch(new URL('/xapi-emu/openapi.json', url), { headers: { authorization: `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}` } });
    const doc = (await r.json()) as any;
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/xapi-emu/faults', '/xapi-emu/faults/{id}', '/xapi-emu/faults/{id}/release']));
  });
});
