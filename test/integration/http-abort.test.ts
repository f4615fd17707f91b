// HTTP handlers whose client goes away: /import_raw_vdi cut before or during its body (into a new
// "Imported VDI" with sr_id, or into a VDI, raw and VHD), /export_raw_vdi half-closed or dropped.
// Each time the task ends (failed with xapi's VDI_IO_ERROR), the VDI's locks are released (its
// VDI.destroy answers), and no staging file is left in the SR directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect as tcp, type Socket } from 'node:net';
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { startServer, type RunningServer } from '../../server/app.js';
import { vdiPath } from '../../server/sm/index.js';
import { isStagingName } from '../../storage/vhd/staging.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'http-abort-test';
const IO = ['VDI_IO_ERROR', 'Device I/O errors'];

let srv: RunningServer;
let url: URL;
let c: Client;
let sr: string;

beforeAll(async () => {
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0 });
  url = new URL(srv.urls[0]);
  c = await connect(srv.urls[0], 'root', PASSWORD);
  sr = await c.call('pool.get_default_SR', srv.emu.pool);
});
afterAll(async () => {
  await srv?.close();
});

const query = (q: Record<string, string | undefined>) =>
  Object.entries(q).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${encodeURIComponent(v!)}`).join('&');

/** Polls `f` until it returns a value (bounded: a condition never met fails the test, never hangs it). */
async function until<T>(what: string, f: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const v = await f();
    if (v !== undefined) return v;
    await new Promise((r) => setImmediate(r));
    if (i > 50) await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`still waiting: ${what}`);
}

/** A task's record once it has left `pending`. */
const finished = (task: string) =>
  until(`task ${task} pending`, async () => {
    const rec = await c.call('task.get_record', task);
    return rec.status === 'pending' ? undefined : rec;
  });

/** A raw connection that sends `head` (and `body`), then is cut (`how`) at the given moment. */
function rawRequest(head: string, opts: { body?: Buffer; how: 'destroy' | 'end'; when: 'at-once' | 'after-answer' }): Promise<string> {
  return new Promise((resolve) => {
    const sock: Socket = tcp({ host: url.hostname, port: Number(url.port) });
    let answer = '';
    const cut = () => (opts.how === 'destroy' ? sock.destroy() : sock.end());
    sock.on('error', () => undefined);
    sock.on('close', () => resolve(answer));
    sock.on('data', (d) => {
      const first = answer === '';
      answer += d.toString('latin1');
      if (first && opts.when === 'after-answer') {
        if (opts.body) sock.write(opts.body, cut);
        else cut();
      }
    });
    sock.on('connect', () => {
      sock.write(head);
      if (opts.when === 'at-once') cut();
    });
  });
}

const put = (q: Record<string, string | undefined>, length: number) =>
  `PUT /import_raw_vdi?${query({ session_id: c.session, ...q })} HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\n\r\n`;

async function newVdi(size: number): Promise<string> {
  return c.call('VDI.create', vdiArgs(sr, size, 'abort'));
}

const stagingFiles = (vdi: string) => readdirSync(dirname(vdiPath(srv.emu, vdi)!)).filter(isStagingName);

/** The VDI is free again: VDI.destroy answers (at once: it would wait for a held lock). */
async function destroyAnswers(vdi: string): Promise<void> {
  const done = c.call('VDI.destroy', vdi).then(() => 'destroyed');
  const r = await Promise.race([done, until('VDI.destroy to answer', async () => undefined).catch(() => 'stuck')]);
  expect(r).toBe('destroyed');
}

describe('/import_raw_vdi whose client goes away', () => {
  const cases = [
    { name: 'before the answer', when: 'at-once', how: 'destroy' },
    { name: 'half-closed before the body', when: 'at-once', how: 'end' },
    { name: 'after the answer, before the body', when: 'after-answer', how: 'destroy' },
  ] as const;

  for (const k of cases) {
    it(`sr_id, ${k.name}: the task fails, the new "Imported VDI" is free`, async () => {
      const before = new Set(Object.keys(await c.call('VDI.get_all_records_where', 'field "name__label" = "Imported VDI"')));
      const task = await c.call('task.create', 'abort', '');
      await rawRequest(put({ sr_id: sr, task_id: task }, 4 * MiB), k);
      const rec = await finished(task);
      expect(rec.status).toBe('failure');
      expect(rec.error_info).toEqual(IO);
      const made = Object.keys(await c.call('VDI.get_all_records_where', 'field "name__label" = "Imported VDI"')).filter((v) => !before.has(v));
      expect(made).toHaveLength(1);
      expect(stagingFiles(made[0])).toEqual([]);
      await destroyAnswers(made[0]);
    });
  }

  for (const format of ['raw', 'vhd'] as const) {
    for (const k of cases) {
      it(`vdi=, ${format}, ${k.name}: the task fails, the VDI is free, no staging file`, async () => {
        const vdi = await newVdi(4 * MiB);
        const task = await c.call('task.create', 'abort', '');
        await rawRequest(put({ vdi, format, task_id: task }, 4 * MiB), k);
        const rec = await finished(task);
        expect(rec.status).toBe('failure');
        expect(rec.error_info).toEqual(IO);
        expect(stagingFiles(vdi)).toEqual([]);
        await destroyAnswers(vdi);
      });
    }
  }

  it('mid-body (a handler task of its own): no task is left pending, no staging file', async () => {
    const vdi = await newVdi(8 * MiB);
    const answer = await rawRequest(put({ vdi }, 8 * MiB), { body: Buffer.alloc(3 * MiB + 17, 7), how: 'destroy', when: 'after-answer' });
    const task = /task-id: (\S+)/i.exec(answer)?.[1];
    expect(task).toMatch(/^OpaqueRef:/);
    await until('the handler task to go', async () => ((await c.call('task.get_all')) as string[]).includes(task!) ? undefined : true);
    expect(stagingFiles(vdi)).toEqual([]);
    await destroyAnswers(vdi);
  });
});

describe('/export_raw_vdi whose client goes away', () => {
  const get = (q: Record<string, string | undefined>) =>
    `GET /export_raw_vdi?${query({ session_id: c.session, ...q })} HTTP/1.1\r\nHost: x\r\n\r\n`;

  /** A VDI whose export is larger than the sockets' buffers in either format (data in every block). */
  async function fullVdi(): Promise<string> {
    const vdi = await newVdi(32 * MiB);
    const r = await fetch(new URL(`/import_raw_vdi?${query({ session_id: c.session, vdi })}`, url), { method: 'PUT', body: Buffer.alloc(32 * MiB, 0x5a) });
    expect(r.status).toBe(200);
    await r.arrayBuffer();
    return vdi;
  }

  for (const format of ['raw', 'vhd'] as const) {
    it(`${format}, dropped right after the request: the task fails, the VDI is free`, async () => {
      const vdi = await fullVdi();
      const task = await c.call('task.create', 'abort', '');
      await rawRequest(get({ vdi, format, task_id: task }), { how: 'destroy', when: 'at-once' });
      const rec = await finished(task);
      expect(rec.status).toBe('failure');
      expect(rec.error_info).toEqual(IO);
      await destroyAnswers(vdi);
    });

    it(`${format}, dropped after the first bytes: the task fails, the VDI is free`, async () => {
      const vdi = await fullVdi();
      const task = await c.call('task.create', 'abort', '');
      await rawRequest(get({ vdi, format, task_id: task }), { how: 'destroy', when: 'after-answer' });
      const rec = await finished(task);
      expect(rec.status).toBe('failure');
      expect(rec.error_info).toEqual(IO);
      await destroyAnswers(vdi);
    });

    it(`${format}, half-closed right after the request: the whole answer still comes, as from xapi`, async () => {
      const vdi = await newVdi(64 * MiB);
      const task = await c.call('task.create', 'abort', '');
      const answer = await rawRequest(get({ vdi, format, task_id: task }), { how: 'end', when: 'at-once' });
      const rec = await finished(task);
      expect(rec.status).toBe('success');
      const [head, ...rest] = answer.split('\r\n\r\n');
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
      expect(length).toBeGreaterThan(0);
      expect(Buffer.byteLength(rest.join('\r\n\r\n'), 'latin1')).toBe(length);
      await destroyAnswers(vdi);
    });
  }
});

describe("the guest's disk I/O whose client goes away", () => {
  async function runningVm(): Promise<string> {
    const vm: string = await c.call('VM.create', vmArgs('abort-guest', memory(GiB, 512 * MiB)));
    const vdi = await newVdi(16 * MiB);
    await c.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await c.call('VM.start', vm, false, false);
    return vm;
  }

  for (const k of [
    { name: 'before the body', body: undefined },
    { name: 'mid-body', body: Buffer.alloc(MiB, 3) },
  ] as const) {
    it(`a write cut ${k.name}: the task fails and the VM shuts down`, async () => {
      const vm = await runningVm();
      const task = await c.call('task.create', 'abort', '');
      const head = `POST /xapi-emu/guest/disk?${query({ session_id: c.session, vm, device: '0', offset: '0', task_id: task })} HTTP/1.1\r\nHost: x\r\nContent-Length: ${4 * MiB}\r\n\r\n`;
      await rawRequest(k.body ? head + k.body.toString('latin1') : head, { how: 'destroy', when: 'at-once' });
      const rec = await finished(task);
      expect(rec.status).toBe('failure');
      expect(rec.error_info).toEqual(['INTERNAL_ERROR', 'the request body was cut short']);
      await c.call('VM.hard_shutdown', vm);
      expect(await c.call('VM.get_power_state', vm)).toBe('Halted');
    });
  }
});
