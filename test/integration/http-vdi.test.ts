// /import_raw_vdi and /export_raw_vdi over real sockets (WIRE.md §7, XO-CLIENT.md §1 "HTTP"): raw
// and VHD round trips, sparse VHD exports, snapshots and differential exports, Xen Orchestra's own
// getResource / putResource (its empty probe PUT and its 1 PiB Content-Length), failures that leave
// the VDI intact and fail the task with xapi's error, credentials and RBAC, the task named by
// task_id or made by the handler, and VHD files that qemu-img reads back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request, type IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import type { Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type Xapi } from 'xen-api';
import { startServer, type RunningServer } from '../../server/app.js';
import { vdiPath } from '../../server/sm/index.js';
import { GiB, MiB, vdiArgs } from './helpers/records.js';

const PASSWORD = 'http-vdi-test';
const PIB = '1125899906842624';

let srv: RunningServer;
let url: string;
let session: string;
let sr: string;
let scratch: string;

// ───────────────────────────── helpers ─────────────────────────────

async function rpcRaw(method: string, params: unknown[]): Promise<{ result?: any; error?: string[] }> {
  const r = await fetch(new URL('/jsonrpc', url), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }),
  });
  const body = await r.json();
  return 'result' in body ? { result: body.result } : { error: [body.error.message, ...(body.error.data ?? [])] };
}
async function rpc(method: string, ...params: unknown[]): Promise<any> {
  const r = await rpcRaw(method, params);
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}
const call = (method: string, ...params: unknown[]) => rpc(method, session, ...params);

async function newVdi(size: number, label = 'http-vdi', onSr = sr): Promise<string> {
  return call('VDI.create', vdiArgs(onSr, size, label));
}

/** Recognisable bytes: every 4 KiB page names its offset and the seed; `holes` pages stay zero. */
function pattern(size: number, seed: string, holes: (page: number) => boolean = () => false): Buffer {
  const b = Buffer.alloc(size);
  for (let off = 0; off < size; off += 4096) {
    if (!holes(off / 4096)) b.write(`${seed}@${off};`.repeat(8), off, Math.min(4096, size - off), 'latin1');
  }
  return b;
}

const query = (q: Record<string, string | undefined>) =>
  Object.entries(q).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${encodeURIComponent(v!)}`).join('&');

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** the connection failed after the answer's headers (or before any) */
  error?: Error;
}

/**
 * A raw HTTP request on its own connection. `declare` sets Content-Length (default: the body's
 * length); `cut` sends only that many bytes of the body, after the answer's headers came, then
 * destroys the socket (a client going away, or XO ending its 1 PiB upload).
 */
function http(method: string, path: string, opts: { body?: Buffer; declare?: number | string; cut?: number; chunked?: boolean; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ...opts.headers };
    const body = opts.body ?? Buffer.alloc(0);
    if (!opts.chunked) headers['content-length'] = String(opts.declare ?? body.length);
    const req = request(new URL(path, url), { method, agent: false, headers });
    let answer: Answer | undefined;
    const done = (error?: Error) => {
      if (answer) {
        if (error && !answer.error) answer.error = error;
        resolve(answer);
      } else resolve({ status: 0, headers: {}, body: Buffer.alloc(0), error });
    };
    req.on('response', (res) => {
      answer = { status: res.statusCode!, headers: res.headers, body: Buffer.alloc(0) };
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        answer!.body = Buffer.concat(parts);
        done();
      });
      res.on('error', (e) => done(e));
      res.on('aborted', () => done(new Error('aborted')));
      if (opts.cut !== undefined) {
        req.write(body.subarray(0, opts.cut), () => setImmediate(() => req.destroy()));
      }
    });
    req.on('error', (e) => done(e));
    req.on('close', () => done());
    if (opts.chunked) {
      req.write(body);
      req.end();
    } else if (opts.cut === undefined) req.end(body);
    else req.flushHeaders();
  });
}

async function exportBytes(vdi: string, format: 'raw' | 'vhd' = 'raw', extra: Record<string, string> = {}): Promise<Buffer> {
  const r = await fetch(new URL(`/export_raw_vdi?${query({ session_id: session, vdi, format, ...extra })}`, url));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

async function importBytes(vdi: string, body: Buffer, format: 'raw' | 'vhd' = 'raw', task?: string): Promise<Answer> {
  return http('PUT', `/import_raw_vdi?${query({ session_id: session, vdi, format, task_id: task })}`, { body });
}

async function taskRecord(task: string): Promise<Record<string, any>> {
  for (let i = 0; i < 500; i++) {
    const rec = await call('task.get_record', task);
    if (rec.status !== 'pending') return rec;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`task ${task} still pending`);
}
/** Waits until a task is destroyed (a handler's own task, once the handler returned). */
async function gone(task: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await rpcRaw('task.get_record', [session, task])).error?.[0] === 'HANDLE_INVALID') return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`task ${task} still there`);
}
const newTask = (label = 'http-vdi') => call('task.create', label, '');

/** qemu-img's reading of a VHD file, as raw bytes. */
function qemuRaw(vhdFile: string): Buffer {
  const out = join(scratch, `qemu-${Math.random().toString(36).slice(2)}.raw`);
  execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhdFile, out]);
  const b = readFileSync(out);
  rmSync(out);
  return b;
}

/** What XO's client does for HTTP: getResource / putResource (npm xen-api 4.7.6). */
interface XoHttp {
  getResource(path: string, opts: { query: Record<string, string> }): Promise<{ statusCode: number; headers: IncomingHttpHeaders; body: Readable & { arrayBuffer(): Promise<ArrayBuffer> }; task?: Promise<unknown> }>;
  putResource(body: Readable | Buffer, path: string, opts: { query: Record<string, string> }): Promise<unknown>;
}

// ───────────────────────────── setup ─────────────────────────────

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'http-vdi-'));
  srv = await startServer({
    port: 0, memory: true, password: PASSWORD, authFailDelay: 0, hosts: 2, closeGrace: 0,
    users: [{ name: 'ro', password: 'ro', role: 'read-only' }],
  });
  url = srv.urls[0];
  session = await rpc('session.login_with_password', 'root', PASSWORD, '1.0', 'http-vdi-test');
  sr = await call('pool.get_default_SR', srv.emu.pool);
});

afterAll(async () => {
  await srv?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

// ───────────────────────────── round trips ─────────────────────────────

describe('raw and VHD round trips', () => {
  it('imports raw bytes and exports them back as raw and as a VHD that qemu-img reads', async () => {
    const size = 12 * MiB;
    const vdi = await newVdi(size);
    const data = pattern(5 * MiB + 1536, 'raw1', (p) => p % 97 === 3);
    const r = await importBytes(vdi, data);
    expect(r.status).toBe(200);
    expect(r.headers['task-id']).toMatch(/^OpaqueRef:/);
    expect(r.headers['content-type']).toBe('application/octet-stream');

    const expected = Buffer.concat([data, Buffer.alloc(size - data.length)]);
    const raw = await exportBytes(vdi);
    expect(raw.equals(expected)).toBe(true);

    const vhd = await exportBytes(vdi, 'vhd');
    // 3 allocated 2 MiB blocks plus metadata
    expect(vhd.length).toBeLessThan(7 * MiB);
    const f = join(scratch, 'rt.vhd');
    writeFileSync(f, vhd);
    expect(qemuRaw(f).equals(expected)).toBe(true);
    // and the VDI's own file
    expect(qemuRaw(vdiPath(srv.emu, vdi)!).equals(expected)).toBe(true);

    // the VHD stream into another VDI gives the same disk
    const copy = await newVdi(size);
    expect((await importBytes(copy, vhd, 'vhd')).status).toBe(200);
    expect((await exportBytes(copy)).equals(expected)).toBe(true);
    expect(qemuRaw(vdiPath(srv.emu, copy)!).equals(expected)).toBe(true);
  });

  it('answers export headers as xapi: task-id, content types, content-disposition, length', async () => {
    const vdi = await newVdi(4 * MiB);
    const uuid = await call('VDI.get_uuid', vdi);
    for (const [format, type] of [['raw', 'application/octet-stream'], ['vhd', 'application/vhd'], ['VHD', 'application/vhd']] as const) {
      // by uuid, and with XO's trailing slash
      const r = await fetch(new URL(`/export_raw_vdi/?${query({ session_id: session, vdi: uuid, format })}`, url));
      const body = Buffer.from(await r.arrayBuffer());
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe(type);
      expect(r.headers.get('content-disposition')).toBe(`attachment; filename="${uuid}.${format.toLowerCase()}"`);
      expect(Number(r.headers.get('content-length'))).toBe(body.length);
      expect(r.headers.get('task-id')).toMatch(/^OpaqueRef:/);
      // the handler's own task is gone once it returned
      await gone(r.headers.get('task-id')!);
    }
  });

  it('imports a VHD made by qemu-img', async () => {
    const size = 8 * MiB;
    const data = pattern(size, 'qemu', (p) => p >= 600 && p < 1200);
    const rawFile = join(scratch, 'q.raw');
    const vhdFile = join(scratch, 'q.vhd');
    writeFileSync(rawFile, data);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', rawFile, vhdFile]);
    const vdi = await newVdi(size);
    expect((await importBytes(vdi, readFileSync(vhdFile), 'vhd')).status).toBe(200);
    expect((await exportBytes(vdi)).equals(data)).toBe(true);
  });

  it('exports a large sparse VDI as a VHD of about its data', async () => {
    const vdi = await newVdi(100 * GiB, 'sparse');
    const data = pattern(10 * MiB, 'sparse');
    expect((await importBytes(vdi, data)).status).toBe(200);
    const r = await fetch(new URL(`/export_raw_vdi?${query({ session_id: session, vdi, format: 'vhd' })}`, url));
    expect(Number(r.headers.get('content-length'))).toBeLessThan(11 * MiB);
    const vhd = Buffer.from(await r.arrayBuffer());
    expect(vhd.length).toBeLessThan(11 * MiB);
    // back into a small disk: the data is there
    const small = await newVdi(100 * GiB, 'sparse-copy');
    expect((await importBytes(small, vhd, 'vhd')).status).toBe(200);
    const back = await fetch(new URL(`/export_raw_vdi?${query({ session_id: session, vdi: small, format: 'vhd' })}`, url));
    expect(Buffer.from(await back.arrayBuffer()).length).toBe(vhd.length);
  });
});

// ───────────────────────────── snapshots ─────────────────────────────

describe('snapshots and differential exports', () => {
  it('exports a snapshot and its leaf apart, and base= gives a delta that rebuilds the leaf', async () => {
    const size = 16 * MiB;
    const vdi = await newVdi(size, 'leaf');
    const first = pattern(size, 'first', (p) => p % 5 === 0);
    expect((await importBytes(vdi, first)).status).toBe(200);
    const snap = await call('VDI.snapshot', vdi, {});

    // overwrite 3 MiB in the middle of the leaf
    const second = pattern(3 * MiB, 'second');
    const leafBytes = Buffer.from(first);
    second.copy(leafBytes, 6 * MiB);
    expect((await importBytes(vdi, leafBytes.subarray(0, 9 * MiB))).status).toBe(200);

    expect((await exportBytes(snap)).equals(first)).toBe(true);
    expect((await exportBytes(vdi)).equals(leafBytes)).toBe(true);

    // the delta carries the blocks written since the snapshot only (a raw import writes every
    // block from offset 0 to its length: 5 of the 8)
    const full = await exportBytes(vdi, 'vhd');
    const delta = await exportBytes(vdi, 'vhd', { base: snap });
    expect(full.length).toBeGreaterThan(16 * MiB);
    expect(delta.length).toBeGreaterThan(5 * 2 * MiB);
    expect(delta.length).toBeLessThan(5 * 2 * MiB + 64 * 1024);

    // a copy of the snapshot plus the delta is the leaf
    const copy = await newVdi(size, 'rebuilt');
    expect((await importBytes(copy, await exportBytes(snap, 'vhd'), 'vhd')).status).toBe(200);
    expect((await exportBytes(copy)).equals(first)).toBe(true);
    expect((await importBytes(copy, delta, 'vhd')).status).toBe(200);
    expect((await exportBytes(copy)).equals(leafBytes)).toBe(true);
  });
});

// ───────────────────────────── tasks ─────────────────────────────

describe('tasks', () => {
  it('completes the task_id given with the VDI ref as an XML-RPC value, and keeps it', async () => {
    const vdi = await newVdi(4 * MiB);
    const task = await newTask();
    const r = await importBytes(vdi, pattern(MiB, 'task'), 'raw', task);
    expect(r.status).toBe(200);
    expect(r.headers['task-id']).toBe(task);
    const rec = await taskRecord(task);
    expect(rec.status).toBe('success');
    expect(rec.result).toBe(`<value>${vdi}</value>`);
    expect(rec.progress).toBe(1);

    const t2 = await newTask();
    const e = await fetch(new URL(`/export_raw_vdi?${query({ session_id: session, vdi, task_id: t2 })}`, url));
    await e.arrayBuffer();
    const rec2 = await taskRecord(t2);
    expect(rec2.status).toBe('success');
    expect(rec2.result).toBe('');
  });

  it('creates an "Imported VDI" of Content-Length bytes for a raw body with sr_id and no vdi', async () => {
    const data = pattern(4 * MiB, 'imported');
    const task = await newTask();
    const r = await http('PUT', `/import_raw_vdi?${query({ session_id: session, sr_id: sr, task_id: task })}`, { body: data });
    expect(r.status).toBe(200);
    const rec = await taskRecord(task);
    expect(rec.status).toBe('success');
    const vdi = /^<value>(OpaqueRef:[^<]+)<\/value>$/.exec(rec.result)![1];
    const v = await call('VDI.get_record', vdi);
    expect(v.name_label).toBe('Imported VDI');
    expect(v.SR).toBe(sr);
    expect(Number(v.virtual_size)).toBe(data.length);
    expect((await exportBytes(vdi)).equals(data)).toBe(true);

    // a VHD needs its VDI (xapi: "not yet supported")
    const t2 = await newTask();
    const v2 = await http('PUT', `/import_raw_vdi?${query({ session_id: session, sr_id: sr, format: 'vhd', task_id: t2 })}`, { body: data });
    expect(v2.status).toBe(400);
    expect((await taskRecord(t2)).error_info).toEqual(['INTERNAL_ERROR', 'Importing a VHD directly into an SR not yet supported']);
    // neither vdi nor SR
    const t3 = await newTask();
    expect((await http('PUT', `/import_raw_vdi?${query({ session_id: session, task_id: t3 })}`, { body: data })).status).toBe(400);
    expect((await taskRecord(t3)).error_info).toEqual(['VDI_MISSING']);
  });

  it('takes session_id and task_id from cookies too', async () => {
    const vdi = await newVdi(4 * MiB);
    const task = await newTask();
    const r = await http('PUT', `/import_raw_vdi?vdi=${vdi}`, { body: pattern(MiB, 'cookie'), headers: { cookie: `session_id=${session}; task_id=${task}` } });
    expect(r.status).toBe(200);
    expect((await taskRecord(task)).status).toBe('success');
  });

  it('accepts HTTP Basic credentials with a session that ends with the request', async () => {
    const vdi = await newVdi(4 * MiB);
    const before = srv.emu.db.count('session');
    const auth = `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}`;
    const data = pattern(2 * MiB, 'basic');
    const r = await http('PUT', `/import_raw_vdi?vdi=${vdi}`, { body: data, headers: { authorization: auth } });
    expect(r.status).toBe(200);
    expect((await exportBytes(vdi)).subarray(0, data.length).equals(data)).toBe(true);
    expect(srv.emu.db.count('session')).toBe(before);
    const bad = await http('GET', `/export_raw_vdi?vdi=${vdi}`, { headers: { authorization: `Basic ${Buffer.from('root:wrong').toString('base64')}` } });
    expect(bad.status).toBe(401);
  });

  it('fails the task with INTERNAL_ERROR and 404 for an unknown format; tar and qcow2 are not implemented', async () => {
    const vdi = await newVdi(4 * MiB);
    for (const method of ['GET', 'PUT'] as const) {
      const path = method === 'GET' ? '/export_raw_vdi' : '/import_raw_vdi';
      const task = await newTask();
      const r = await http(method, `${path}?${query({ session_id: session, vdi, format: 'xyz', task_id: task })}`);
      expect(r.status).toBe(404);
      expect((await taskRecord(task)).error_info).toEqual(['INTERNAL_ERROR', 'Unknown format xyz']);

      const t2 = await newTask();
      const q = await http(method, `${path}?${query({ session_id: session, vdi, format: 'qcow2', task_id: t2 })}`);
      expect(q.status).toBe(500);
      expect((await taskRecord(t2)).error_info[0]).toBe('NOT_IMPLEMENTED');
    }
  });
});

// ───────────────────────────── failures ─────────────────────────────

describe('failed uploads leave the VDI intact', () => {
  let vdi: string;
  let contents: Buffer;
  const size = 8 * MiB;

  beforeAll(async () => {
    vdi = await newVdi(size, 'intact');
    contents = pattern(size, 'intact', (p) => p % 3 === 0);
    expect((await importBytes(vdi, contents)).status).toBe(200);
  });

  async function expectFailure(task: string, error: string[]): Promise<void> {
    const rec = await taskRecord(task);
    expect(rec.status).toBe('failure');
    expect(rec.error_info).toEqual(error);
    expect((await exportBytes(vdi)).equals(contents)).toBe(true);
  }
  const IO = ['VDI_IO_ERROR', 'Device I/O errors'];

  it('a corrupt VHD', async () => {
    const other = await newVdi(size);
    await importBytes(other, pattern(size, 'corrupt'));
    const vhd = Buffer.from(await exportBytes(other, 'vhd'));
    vhd.write('garbage!', 512); // the dynamic header's cookie
    const task = await newTask();
    const r = await importBytes(vdi, vhd, 'vhd', task);
    expect(r.status).toBe(200); // as xapi: the answer goes out before the body is read
    await expectFailure(task, IO);

    const vhd2 = Buffer.from(await exportBytes(other, 'vhd'));
    vhd2.fill(0xff, vhd2.length - 512); // the trailing footer
    const t2 = await newTask();
    await importBytes(vdi, vhd2, 'vhd', t2);
    await expectFailure(t2, IO);
  });

  it('a truncated VHD and a truncated raw upload (the client goes away)', async () => {
    const vhd = await exportBytes(vdi, 'vhd');
    const task = await newTask();
    await http('PUT', `/import_raw_vdi?${query({ session_id: session, vdi, format: 'vhd', task_id: task })}`, { body: vhd, cut: vhd.length >> 1 });
    await expectFailure(task, IO);

    const t2 = await newTask();
    await http('PUT', `/import_raw_vdi?${query({ session_id: session, vdi, task_id: t2 })}`, { body: pattern(size, 'cut'), cut: 3 * MiB + 5 });
    await expectFailure(t2, IO);
  });

  it('a raw upload larger than the VDI', async () => {
    const task = await newTask();
    await importBytes(vdi, pattern(size + 4096, 'big'), 'raw', task);
    await expectFailure(task, IO);
  });

  it('an empty PUT, as XO probes (no task_id, Content-Length 0)', async () => {
    const r = await http('PUT', `/import_raw_vdi/?${query({ session_id: session, vdi, format: 'raw' })}`);
    expect(r.status).toBe(200);
    const task = r.headers['task-id'] as string;
    expect(task).toMatch(/^OpaqueRef:/);
    expect((await exportBytes(vdi)).equals(contents)).toBe(true);
    // the handler's own task does not outlive it
    await gone(task);
    // the same with a task: vhd-tool refuses a zero size
    const t2 = await newTask();
    await http('PUT', `/import_raw_vdi/?${query({ session_id: session, vdi, format: 'raw', task_id: t2 })}`);
    await expectFailure(t2, IO);
  });

  it('task.cancel stops an upload: TASK_CANCELLED', async () => {
    const task = await newTask();
    const body = pattern(size, 'cancelled');
    const req = request(new URL(`/import_raw_vdi?${query({ session_id: session, vdi, task_id: task })}`, url), {
      method: 'PUT', agent: false, headers: { 'content-length': String(size) },
    });
    req.on('error', () => undefined);
    const answered = new Promise<number>((resolve) => req.on('response', (res) => {
      res.on('error', () => undefined).resume();
      resolve(res.statusCode!);
    }));
    req.flushHeaders();
    expect(await answered).toBe(200);
    req.write(body.subarray(0, MiB));
    while (Number((await call('task.get_progress', task))) === 0) await new Promise((r) => setTimeout(r, 5));
    await call('task.cancel', task);
    const rec = await taskRecord(task);
    req.destroy();
    expect(rec.status).toBe('cancelled');
    expect(rec.error_info).toEqual(['TASK_CANCELLED', task]);
    expect((await exportBytes(vdi)).equals(contents)).toBe(true);
  });

  it('refuses chunked transfer encoding', async () => {
    const task = await newTask();
    const r = await http('PUT', `/import_raw_vdi?${query({ session_id: session, vdi, task_id: task })}`, { body: pattern(MiB, 'chunked'), chunked: true });
    expect(r.status).toBe(404);
    await expectFailure(task, ['INTERNAL_ERROR', 'Cannot handle encoding: chunked']);
  });

  it('a VDI busy in another operation', async () => {
    const other = await newTask();
    const ops = srv.emu.db.get('VDI', vdi)!.current_operations as Record<string, string>;
    srv.emu.db.update('VDI', vdi, { current_operations: { ...ops, [other]: 'resize' } });
    const task = await newTask();
    try {
      const r = await importBytes(vdi, pattern(MiB, 'busy'), 'raw', task);
      expect(r.status).toBe(500);
      // the dom0 VBD plug refuses a read-only attach as well
      expect((await http('GET', `/export_raw_vdi?${query({ session_id: session, vdi })}`)).status).toBe(500);
    } finally {
      srv.emu.db.update('VDI', vdi, { current_operations: ops });
    }
    await expectFailure(task, ['OTHER_OPERATION_IN_PROGRESS', 'VDI', vdi, 'resize', other]);
  });

  it('no session: 401; a read-only user: 403 with the task failed', async () => {
    const r = await http('PUT', `/import_raw_vdi?vdi=${vdi}`, { body: pattern(MiB, 'anon') });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Basic realm="put_import_raw_vdi"');
    const bad = await http('GET', `/export_raw_vdi?${query({ session_id: 'OpaqueRef:nope', vdi })}`);
    expect(bad.status).toBe(401);

    const ro = await rpc('session.login_with_password', 'ro', 'ro', '1.0', 'http-vdi-test');
    const task = await rpc('task.create', ro, 'ro upload', '');
    const f = await http('PUT', `/import_raw_vdi?${query({ session_id: ro, vdi, task_id: task })}`, { body: pattern(MiB, 'ro') });
    expect(f.status).toBe(403);
    await expectFailure(task, [
      'RBAC_PERMISSION_DENIED', 'http/put_import_raw_vdi',
      'No permission in user session. (Roles with this permission: pool-admin, pool-operator, vm-power-admin, vm-admin)',
    ]);
    expect((await http('GET', `/export_raw_vdi?${query({ session_id: ro, vdi })}`)).status).toBe(403);
  });
});

// ───────────────────────────── XO's client ─────────────────────────────

describe("Xen Orchestra's getResource / putResource", () => {
  let xapi: Xapi;
  let xo: XoHttp;
  /** the emulator's side of every connection */
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    for (const server of srv.servers) server.on('connection', (so: Socket) => sockets.add(so.on('close', () => sockets.delete(so))));
    xapi = createClient({ url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, transport: 'json-rpc', debounce: 0 });
    await xapi.connect();
    await xapi.objectsFetched;
    xo = xapi as unknown as XoHttp;
  });
  afterAll(async () => {
    await xapi?.disconnect();
  });

  const withLength = (b: Buffer) => Object.assign(Readable.from([b.subarray(0, b.length >> 1), b.subarray(b.length >> 1)]), { length: b.length });
  /**
   * A stream of unknown length: XO declares 1 PiB and cuts the connection once its request is
   * finished. XO checks `req.finished` (end() called), not that the bytes left: a body that is
   * all handed to the socket before the answer's headers come back loses its tail in Node's
   * buffers (against xapi too). So the second half waits until the emulator has read the first.
   */
  const noLength = (b: Buffer) =>
    Readable.from(
      (async function* () {
        const half = b.length >> 1;
        for (let o = 0; o < half; o += 256 * 1024) yield b.subarray(o, Math.min(half, o + 256 * 1024));
        while (![...sockets].some((so) => so.bytesRead > half)) await new Promise((r) => setTimeout(r, 5));
        yield b.subarray(half);
      })(),
    );

  it('round trips raw and VHD streams of known length', async () => {
    const size = 6 * MiB;
    const data = pattern(size, 'xo-known', (p) => p % 7 === 1);
    const vdi = await newVdi(size);
    const ref = await xo.putResource(withLength(data), '/import_raw_vdi/', { query: { format: 'raw', vdi } });
    expect(ref).toBe(vdi);

    const res = await xo.getResource('/export_raw_vdi/', { query: { format: 'vhd', vdi } });
    expect(res.statusCode).toBe(200);
    const vhd = Buffer.from(await res.body.arrayBuffer());
    await res.task;

    const copy = await newVdi(size);
    expect(await xo.putResource(withLength(vhd), '/import_raw_vdi/', { query: { format: 'vhd', vdi: copy } })).toBe(copy);
    const raw = await xo.getResource('/export_raw_vdi/', { query: { format: 'raw', vdi: copy } });
    expect(Buffer.from(await raw.body.arrayBuffer()).equals(data)).toBe(true);
  });

  it('imports streams of unknown length (1 PiB Content-Length, connection cut after the data)', async () => {
    const size = 6 * MiB;
    const data = pattern(size, 'xo-unknown');
    const vdi = await newVdi(size);
    const warn = console.warn;
    console.warn = () => undefined; // XO warns about the missing length and the ignored VDI_IO_ERROR
    try {
      // raw: the whole disk is in; xapi fails the task at the cut and XO ignores the VDI_IO_ERROR
      await xo.putResource(noLength(data), '/import_raw_vdi/', { query: { format: 'raw', vdi } });
      expect((await exportBytes(vdi)).equals(data)).toBe(true);

      // vhd: the stream ends with its footer, the import is complete
      const other = pattern(size, 'xo-unknown-vhd', (p) => p < 700);
      const src = await newVdi(size);
      await importBytes(src, other);
      const vhd = await exportBytes(src, 'vhd');
      expect(await xo.putResource(noLength(vhd), '/import_raw_vdi/', { query: { format: 'vhd', vdi } })).toBe(vdi);
      expect((await exportBytes(vdi)).equals(other)).toBe(true);
    } finally {
      console.warn = warn;
    }
  });

  it('a raw body declared as 1 PiB and cut before the whole disk fails and keeps the VDI', async () => {
    const size = 4 * MiB;
    const vdi = await newVdi(size);
    const before = pattern(size, 'keep');
    await importBytes(vdi, before);
    const task = await newTask();
    await http('PUT', `/import_raw_vdi?${query({ session_id: session, vdi, task_id: task })}`, { body: pattern(size, 'lost'), declare: PIB, cut: size - 4096 });
    expect((await taskRecord(task)).error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
    expect((await exportBytes(vdi)).equals(before)).toBe(true);
  });

  it('follows the 302 to the host that sees the SR', async () => {
    const member = srv.emu.hosts[1];
    const memberSr = [...srv.emu.db.table('PBD').values()]
      .map((p) => p.rec)
      .find((p) => p.host === member && srv.emu.db.get('SR', p.SR as string)?.type === 'ext')!.SR as string;
    const vdi = await newVdi(4 * MiB, 'on-member', memberSr);
    const data = pattern(4 * MiB, 'member');

    const direct = await http('GET', `/export_raw_vdi?${query({ session_id: session, vdi })}`);
    expect(direct.status).toBe(302);
    expect(direct.headers.location).toBe(`${srv.urls[1].replace(/\/$/, '')}/export_raw_vdi?${query({ session_id: session, vdi })}`);

    expect(await xo.putResource(withLength(data), '/import_raw_vdi/', { query: { format: 'raw', vdi } })).toBe(vdi);
    const res = await xo.getResource('/export_raw_vdi/', { query: { format: 'raw', vdi } });
    expect(Buffer.from(await res.body.arrayBuffer()).equals(data)).toBe(true);
  });
});

// ───────────────────────────── SR state ─────────────────────────────

describe('an SR no host sees', () => {
  it('answers NO_HOSTS_AVAILABLE (400 on import) while the PBD is unplugged', async () => {
    const vdi = await newVdi(4 * MiB, 'unplugged');
    const pbd = (await call('SR.get_PBDs', sr))[0];
    await call('PBD.unplug', pbd);
    try {
      const task = await newTask();
      const r = await importBytes(vdi, pattern(MiB, 'x'), 'raw', task);
      expect(r.status).toBe(400);
      expect((await taskRecord(task)).error_info).toEqual(['NO_HOSTS_AVAILABLE']);
      const e = await http('GET', `/export_raw_vdi?${query({ session_id: session, vdi })}`);
      expect(e.status).toBe(500);
    } finally {
      await call('PBD.plug', pbd);
    }
  });
});
