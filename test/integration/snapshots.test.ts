// State snapshots through the control API, with real clients over real sockets (JSON-RPC, Python's
// XenAPI): a snapshot, then changes (VMs created, a VDI written through /import_raw_vdi, objects
// destroyed), then a restore gives back byte-identical VDIs and identical records, refs and uuids;
// connected clients' sessions end with SESSION_INVALID, their event.from waiters wake with it, and
// event tokens go forward; reset goes back to the start, again and again; running VMs keep running
// on their hosts with their tapdisks serving the restored bytes; file SRs elsewhere in the data
// directory come back, and nothing else of it is touched; snapshots survive a toolstack restart and
// a restart of the process, and a restore cut by a kill is finished by the next start; work in
// flight (a task, an import in a task of the client's own) holds a restore back, a GC waiting for
// its quiet period does not; bad names are refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../server/app.js';
import { controlClient, ControlApiError, type ControlClient } from '../../server/control/client.js';
import { connect, connectKeepAlive, faultOf, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, PV_DRIVERS, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'snapshots-test';

let srv: RunningServer;
let url: string;
let x: Client;
let ctl: ControlClient;
let local: string;

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

async function importRaw(vdi: string, data: Buffer, c: Client = x): Promise<void> {
  const r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw' })}`, url), { method: 'PUT', body: new Uint8Array(data) });
  expect(r.status).toBe(200);
  await r.arrayBuffer();
}

async function exportSha(vdi: string, c: Client = x): Promise<string> {
  const r = await fetch(new URL(`/export_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw' })}`, url));
  expect(r.status).toBe(200);
  return createHash('sha256').update(Buffer.from(await r.arrayBuffer())).digest('hex');
}

async function guestWrite(c: Client, vm: string, offset: number, data: Buffer): Promise<void> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: c.session, vm, device: '0', offset })}`, url), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  expect(r.status).toBe(200);
  await r.arrayBuffer();
}

async function guestRead(c: Client, vm: string, offset: number, length: number): Promise<Buffer> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: c.session, vm, device: '0', offset, length })}`, url));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

const pattern = (n: number, seed: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
};

/** Records of the classes a test looks at, by ref (allowed_operations aside: they are derived). */
const CLASSES = ['VM', 'VDI', 'VBD', 'VIF', 'SR', 'PBD', 'network', 'host', 'pool', 'VM_metrics', 'VM_guest_metrics', 'console'];
async function everything(c: Client): Promise<Record<string, Record<string, unknown>>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const cls of CLASSES) out[cls] = await c.call(`${cls}.get_all_records`);
  return out;
}

async function newVm(c: Client, name: string, size = 4 * MiB, extra: Record<string, unknown> = {}) {
  const vm: string = await c.call('VM.create', vmArgs(name, extra));
  const vdi: string = await c.call('VDI.create', vdiArgs(local, size, `${name}-disk`));
  await c.call('VBD.create', vbdArgs(vm, vdi, '0'));
  await c.call('VIF.create', vifArgs(vm, await xenbr0(c), '0'));
  return { vm, vdi };
}

const errorOf = async (p: Promise<unknown>): Promise<ControlApiError> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof ControlApiError) return e;
    throw e;
  }
  throw new Error('expected a control API error');
};

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { seed: 'snapshots' }));
  url = srv.urls[0];
  ctl = controlClient({ url, username: 'root', password: PASSWORD });
  local = await localStorage(x);
});

afterAll(async () => {
  await srv?.close();
});

describe('snapshot, changes, restore', () => {
  it('gives back byte-identical VDIs and identical records, refs and uuids', async () => {
    const a = await newVm(x, 'keep-me');
    const bytes = pattern(4 * MiB, 7);
    await importRaw(a.vdi, bytes);
    const doomed = await newVm(x, 'destroy-me');
    const shaBefore = await exportSha(a.vdi);
    const before = await everything(x);

    const info = await ctl.snapshots.take({ name: 'base' });
    expect(info.name).toBe('base');
    expect(info.objects.VM).toBe(Object.keys(before.VM).length);
    expect(info.vms).toBe(2);

    // changes: new objects, rewritten bytes, destroyed objects, changed fields
    await newVm(x, 'added-after');
    await importRaw(a.vdi, pattern(4 * MiB, 99));
    expect(await exportSha(a.vdi)).not.toBe(shaBefore);
    await x.call('VM.set_name_label', a.vm, 'renamed');
    for (const vbd of await x.call('VM.get_VBDs', doomed.vm)) await x.call('VBD.destroy', vbd);
    await x.call('VDI.destroy', doomed.vdi);
    await x.call('VM.destroy', doomed.vm);

    const r = await ctl.snapshots.restore({ name: 'base' });
    expect(r.objects_changed).toBeGreaterThan(0);
    expect(r.files_copied).toBeGreaterThan(0);

    expect(await faultOf(x.call('VM.get_all'))).toEqual(['SESSION_INVALID', x.session]);
    const y = await connect(url, 'root', PASSWORD);
    expect(await exportSha(a.vdi, y)).toBe(shaBefore);
    const after = await everything(y);
    for (const cls of CLASSES) {
      expect(Object.keys(after[cls]).sort(), cls).toEqual(Object.keys(before[cls]).sort());
      for (const [ref, rec] of Object.entries(before[cls])) {
        const { allowed_operations: _a, current_operations: _c, ...want } = rec as Record<string, unknown>;
        const { allowed_operations: _b, current_operations: _d, ...got } = after[cls][ref] as Record<string, unknown>;
        expect(got, `${cls} ${ref}`).toEqual(want);
      }
    }
    // a second restore with nothing changed copies nothing and rewrites no object
    const again = await ctl.snapshots.restore({ name: 'base' });
    expect(again.files_copied).toBe(0);
    expect(again.files_removed).toBe(0);
    expect(again.objects_changed).toBe(0);
    x = await connect(url, 'root', PASSWORD);
    // a file a restore put back, written again at once: its next restore sees the change
    await importRaw(a.vdi, pattern(4 * MiB, 3));
    expect((await ctl.snapshots.restore({ name: 'base' })).files_copied).toBe(1);
    x = await connect(url, 'root', PASSWORD);
    expect(await exportSha(a.vdi)).toBe(shaBefore);
  });

  it('ends connected sessions with SESSION_INVALID, wakes event.from waiters, and event tokens go forward', async () => {
    await ctl.snapshots.take({ name: 'sessions', replace: true });
    const c = await connectKeepAlive(url, 'root', PASSWORD, 'waiter');
    try {
      const made = await newVm(x, 'gone-after-restore');
      const first = await c.call('event.from', ['vm'], '', 0);
      const token: string = first.token;
      // a waiter with nothing to report: it waits until the restore
      const waiting = faultOf(c.call('event.from', ['vm'], token, 30));
      await ctl.snapshots.restore({ name: 'sessions' });
      expect(await waiting).toEqual(['SESSION_INVALID', c.session]);
      expect(await faultOf(c.call('VM.get_all'))).toEqual(['SESSION_INVALID', c.session]);
      expect(await faultOf(x.call('VM.get_all'))).toEqual(['SESSION_INVALID', x.session]);

      // a new client's event.from from the old token sees the VM made after the snapshot go
      x = await connect(url, 'root', PASSWORD);
      const d = await x.call('event.from', ['vm'], token, 0);
      expect(Number(d.token.split(',')[0])).toBeGreaterThan(Number(token.split(',')[0]));
      expect(d.events.some((e: any) => e.ref === made.vm && e.operation === 'del')).toBe(true);
    } finally {
      c.close();
    }
  });

  it('is safe under a client writing all along: its calls succeed or end with SESSION_INVALID, and the state is the snapshot\'s', async () => {
    const { vm } = await newVm(x, 'busy');
    const otherConfig = await x.call('VM.get_other_config', vm);
    await ctl.snapshots.take({ name: 'busy', replace: true });
    const c = await connectKeepAlive(url, 'root', PASSWORD, 'busy');
    const errors: string[][] = [];
    let n = 0;
    const writer = (async () => {
      for (;;) {
        try {
          await c.call('VM.set_name_label', vm, `busy-${n++}`);
          await c.call('VM.add_to_other_config', vm, `k${n}`, 'v');
        } catch (e) {
          errors.push((e as { description?: string[] }).description ?? [String(e)]);
          return;
        }
      }
    })();
    try {
      // let some writes land first
      while (n < 20) await new Promise((r) => setImmediate(r));
      await ctl.snapshots.restore({ name: 'busy' });
      await writer;
    } finally {
      c.close();
    }
    expect(errors).toEqual([['SESSION_INVALID', c.session]]);
    x = await connect(url, 'root', PASSWORD);
    expect(await x.call('VM.get_name_label', vm)).toBe('busy');
    expect(await x.call('VM.get_other_config', vm)).toEqual(otherConfig);
  });

  it('reset goes back to the pool as it was at start', async () => {
    const at = await ctl.snapshots.list();
    expect(at.snapshots.map((s) => s.name)).toContain('base');
    await newVm(x, 'before-reset');
    const r = await ctl.snapshots.reset();
    expect(r.name).toBe('initial');
    x = await connect(url, 'root', PASSWORD);
    const vms = (await x.call('VM.get_all_records_where', 'field "is_a_template" = "false" and field "is_control_domain" = "false"')) as Record<string, any>;
    expect(Object.values(vms).map((v) => v.name_label)).toEqual([]);
    // user snapshots are untouched by a reset
    expect((await ctl.snapshots.list()).snapshots.map((s) => s.name)).toContain('base');
  });
});

describe('file SRs elsewhere in the data directory', () => {
  it('a shared SR destroyed after the snapshot comes back with its disk; one made after goes; nothing else of the directory is touched', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-snap-'));
    const s = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
    try {
      const u = s.urls[0];
      let c = await connect(u, 'root', PASSWORD);
      const k = controlClient({ url: u, username: 'root', password: PASSWORD });
      const host: string = (await c.call('host.get_all'))[0];
      const shared: string = await createSharedSr(c, s, host);
      const vdi: string = await c.call('VDI.create', vdiArgs(shared, 2 * MiB, 'on shared'));
      const data = pattern(2 * MiB, 33);
      let r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw' })}`, u), { method: 'PUT', body: new Uint8Array(data) });
      expect(r.status).toBe(200);
      await r.arrayBuffer();
      writeFileSync(join(dir, 'notes.txt'), 'mine');
      mkdirSync(join(dir, 'mine'));
      writeFileSync(join(dir, 'mine', 'keep.txt'), 'mine too');
      await k.snapshots.take({ name: 'shared' });

      await c.call('VDI.destroy', vdi);
      for (const pbd of await c.call('SR.get_PBDs', shared)) await c.call('PBD.unplug', pbd);
      await c.call('SR.destroy', shared);
      const later: string = await c.call('SR.create', host, { location: join(dir, 'later-sr') }, 0, 'Later', '', 'file', 'user', true, {});
      await c.call('VDI.create', vdiArgs(later, 2 * MiB, 'on later'));
      expect(existsSync(join(dir, 'later-sr'))).toBe(true);

      await k.snapshots.restore({ name: 'shared' });
      c = await connect(u, 'root', PASSWORD);
      expect(await c.call('VDI.get_name_label', vdi)).toBe('on shared');
      r = await fetch(new URL(`/export_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw' })}`, u));
      expect(r.status).toBe(200);
      expect(Buffer.from(await r.arrayBuffer()).equals(data)).toBe(true);
      expect(await faultOf(c.call('SR.get_name_label', later))).toEqual(['HANDLE_INVALID', 'SR', later]);
      expect(existsSync(join(dir, 'later-sr'))).toBe(false);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('mine');
      expect(readFileSync(join(dir, 'mine', 'keep.txt'), 'utf8')).toBe('mine too');
      // and the SR works on: a new disk on it
      await c.call('VDI.create', vdiArgs(shared, 2 * MiB, 'after restore'));
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe('reset', () => {
  it('gives back the records at start, again and again, after a named restore and after a toolstack restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-snap-'));
    const s = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0, seed: 'reset' });
    try {
      let u = s.urls[0];
      let c = await connect(u, 'root', PASSWORD);
      let k = controlClient({ url: u, username: 'root', password: PASSWORD });
      const atStart = await everything(c);
      const messWith = async (i: number) => {
        const [tpl] = await c.call('VM.get_by_name_label', 'Debian Bookworm 12');
        await c.call('VM.set_name_label', tpl, `changed ${i}`);
        const net: string = await c.call('network.create', { name_label: `net ${i}`, name_description: '', MTU: 1500, other_config: {}, tags: [] });
        await c.call('network.add_to_other_config', net, 'k', 'v');
        const [pool] = await c.call('pool.get_all');
        await c.call('pool.set_name_label', pool, `pool ${i}`);
        const [host] = await c.call('host.get_all');
        await c.call('host.add_tags', host, `tag ${i}`);
      };
      const same = async () => {
        const now = await everything(c);
        for (const cls of CLASSES) {
          expect(Object.keys(now[cls]).sort(), cls).toEqual(Object.keys(atStart[cls]).sort());
          for (const [ref, rec] of Object.entries(atStart[cls])) {
            const { allowed_operations: _a, current_operations: _c, ...want } = rec as Record<string, unknown>;
            const { allowed_operations: _b, current_operations: _d, ...got } = now[cls][ref] as Record<string, unknown>;
            expect(got, `${cls} ${ref}`).toEqual(want);
          }
        }
      };
      for (let i = 0; i < 3; i++) {
        await messWith(i);
        await k.snapshots.reset();
        c = await connect(u, 'root', PASSWORD);
        await same();
      }
      // a named snapshot of a changed pool, restored, then reset
      await messWith(10);
      await k.snapshots.take({ name: 'changed' });
      await k.snapshots.reset();
      c = await connect(u, 'root', PASSWORD);
      await k.snapshots.restore({ name: 'changed' });
      c = await connect(u, 'root', PASSWORD);
      expect((await c.call('pool.get_all_records').then((r: Record<string, any>) => Object.values(r)[0])).name_label).toBe('pool 10');
      await k.snapshots.reset();
      c = await connect(u, 'root', PASSWORD);
      await same();
      // the API layer restarts on its database, opened anew: reset still goes back to the start
      await messWith(20);
      await s.toolstackRestart();
      u = s.urls[0];
      k = controlClient({ url: u, username: 'root', password: PASSWORD });
      await k.snapshots.reset().catch(() => k.snapshots.reset());
      c = await connect(u, 'root', PASSWORD);
      await same();
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** A CI script's per-test isolation with Python's XenAPI: log in, change the pool, reset through
 * the control API, find the old session invalid (the SDK logs in again) and the pool as at start. */
const PYTHON_RESET = `
import base64, json, sys, urllib.request, xmlrpc.client
from os_xenapi.client import XenAPI
url, pwd = sys.argv[1], sys.argv[2]
s = XenAPI.Session(url)
s.xenapi.login_with_password('root', pwd, '1.0', 'snapshots-test')
before = len(s.xenapi.network.get_all())
s.xenapi.network.create({'name_label': 'made by python', 'name_description': '', 'MTU': '1500', 'other_config': {}, 'tags': []})
made = len(s.xenapi.network.get_all())
auth = base64.b64encode(('root:' + pwd).encode()).decode()
req = urllib.request.Request(url.rstrip('/') + '/xapi-emu/reset', data=b'{}', method='POST',
                             headers={'content-type': 'application/json', 'authorization': 'Basic ' + auth})
reset = json.load(urllib.request.urlopen(req))
first = s._session
# XenAPI.Session logs in again by itself when a call answers SESSION_INVALID
s.xenapi.network.get_all()
raw = xmlrpc.client.ServerProxy(url).network.get_all(first)
s2 = XenAPI.Session(url)
s2.xenapi.login_with_password('root', pwd, '1.0', 'snapshots-test')
labels = [s2.xenapi.network.get_name_label(n) for n in s2.xenapi.network.get_all()]
print(json.dumps({'before': before, 'made': made, 'after': len(labels), 'left': 'made by python' in labels,
                  'reset': reset['name'], 'first': first, 'raw': raw, 'relogged': s._session != first}))
`;

describe('Python XenAPI', () => {
  it('resets between tests as a CI script does', async () => {
    const { srv: py } = await startPool(PASSWORD);
    try {
      const { stdout } = await promisify(execFile)('/usr/bin/python3', ['-c', PYTHON_RESET, py.urls[0], PASSWORD], {
        timeout: 20_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
      });
      const out = JSON.parse(stdout);
      expect(out.made).toBe(out.before + 1);
      expect(out.reset).toBe('initial');
      // the old session is gone (a plain XML-RPC call with it fails); the SDK's Session logged in again
      expect(out.raw).toEqual({ Status: 'Failure', ErrorDescription: ['SESSION_INVALID', out.first] });
      expect(out.relogged).toBe(true);
      expect(out.after).toBe(out.before);
      expect(out.left).toBe(false);
    } finally {
      await py.close();
    }
  });
});

describe('running domains', () => {
  it('a running VM keeps running across snapshot and restore, its tapdisk serving the restored bytes', async () => {
    const { vm, vdi } = await newVm(x, 'runner', 4 * MiB, { other_config: PV_DRIVERS });
    await x.call('VM.start', vm, false, false);
    const A = pattern(64 * 1024, 1);
    await guestWrite(x, vm, 0, A);
    const domid = await x.call('VM.get_domid', vm);
    await ctl.snapshots.take({ name: 'running', replace: true });
    expect((await ctl.snapshots.get({ name: 'running' })).domains).toBe(1);

    await guestWrite(x, vm, 0, pattern(64 * 1024, 2));
    await x.call('VM.hard_shutdown', vm);
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');

    const r = await ctl.snapshots.restore({ name: 'running' });
    expect(r.domains).toBe(1);
    x = await connect(url, 'root', PASSWORD);
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');
    expect(await x.call('VM.get_domid', vm)).toBe(domid);
    const vbd = (await x.call('VM.get_VBDs', vm))[0];
    expect(await x.call('VBD.get_currently_attached', vbd)).toBe(true);
    expect((await guestRead(x, vm, 0, A.length)).equals(A)).toBe(true);
    // and it goes on working: shut down, its disk has the restored bytes
    await x.call('VM.clean_shutdown', vm);
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
    expect(await exportSha(vdi)).toBe(createHash('sha256').update(Buffer.concat([A, Buffer.alloc(4 * MiB - A.length)])).digest('hex'));
  });
});

describe('running domains of a pool of hosts', () => {
  it('each host\'s domains come back on that host', async () => {
    const { srv: p2, x: c0 } = await startPool(PASSWORD, { hosts: 2 });
    try {
      const u = p2.urls[0];
      const k = controlClient({ url: u, username: 'root', password: PASSWORD });
      const member: string = (await c0.call('host.get_all')).find((h: string) => h !== p2.emu.master);
      const sr = await localStorage(c0);
      const vms: string[] = [];
      for (const [i, host] of [p2.emu.master, member].entries()) {
        const vm: string = await c0.call('VM.create', vmArgs(`on-host-${i}`));
        const vdi: string = await c0.call('VDI.create', vdiArgs(sr, 2 * MiB, `on-host-${i}`));
        // a disk on the master's local SR only attaches there: the member's VM is diskless
        if (host === p2.emu.master) await c0.call('VBD.create', vbdArgs(vm, vdi, '0'));
        await c0.call('VM.start_on', vm, host, false, false);
        vms.push(vm);
      }
      const domids = await Promise.all(vms.map((vm) => c0.call('VM.get_domid', vm)));
      await k.snapshots.take({ name: 'two-hosts' });
      for (const vm of vms) await c0.call('VM.hard_shutdown', vm);
      const r = await k.snapshots.restore({ name: 'two-hosts' });
      expect(r.domains).toBe(2);
      const c1 = await connect(u, 'root', PASSWORD);
      for (const [i, host] of [p2.emu.master, member].entries()) {
        expect(await c1.call('VM.get_power_state', vms[i])).toBe('Running');
        expect(await c1.call('VM.get_resident_on', vms[i])).toBe(host);
        expect(await c1.call('VM.get_domid', vms[i])).toBe(domids[i]);
      }
      // and they go on: shut down on their hosts
      for (const vm of vms) await c1.call('VM.clean_shutdown', vm);
      for (const vm of vms) expect(await c1.call('VM.get_power_state', vm)).toBe('Halted');
    } finally {
      await p2.close();
    }
  });
});

describe('work in flight', () => {
  it('a restore waits for a task under way and is refused (state untouched) when it does not end', async () => {
    await ctl.snapshots.take({ name: 'inflight', replace: true });
    const { vm } = await newVm(x, 'slow-start');
    await ctl.clock.set({ frozen: true });
    try {
      const task: string = await x.call('Async.VM.start', vm, false, false);
      const e = await errorOf(ctl.snapshots.restore({ name: 'inflight', wait: 0 }));
      expect(e.status).toBe(409);
      expect(e.code).toBe('BUSY');
      expect(e.params.some((p) => p.includes(task))).toBe(true);
      // nothing was restored: the session and the VM are still there
      expect(await x.call('VM.get_name_label', vm)).toBe('slow-start');
    } finally {
      await ctl.clock.set({ frozen: false });
    }
    await ctl.clock.advance({ seconds: 60 });
    await ctl.snapshots.restore({ name: 'inflight' });
    x = await connect(url, 'root', PASSWORD);
    expect(await faultOf(x.call('VM.get_name_label', vm))).toEqual(['HANDLE_INVALID', 'VM', vm]);
  }, 30_000);

  it('a storage GC waiting for its quiet period does not hold a restore back; it runs after, on the restored SR', async () => {
    await ctl.clock.set({ frozen: true });
    try {
      // a snapshot of a disk, then the disk destroyed: the SR's GC is kicked and waits on the clock
      const base: string = await x.call('VDI.create', vdiArgs(local, 2 * MiB, 'gc-parent'));
      await importRaw(base, pattern(2 * MiB, 21));
      const snap: string = await x.call('VDI.snapshot', base, {});
      await ctl.snapshots.take({ name: 'gc', replace: true });
      await x.call('VDI.destroy', snap);
      const r = await ctl.snapshots.restore({ name: 'gc', wait: 0 });
      expect(r.objects_changed).toBeGreaterThan(0);
    } finally {
      await ctl.clock.set({ frozen: false });
    }
    await ctl.clock.advance({ seconds: 600 });
    x = await connect(url, 'root', PASSWORD);
    const [base] = await x.call('VDI.get_by_name_label', 'gc-parent');
    expect(await exportSha(base)).toBe(createHash('sha256').update(pattern(2 * MiB, 21)).digest('hex'));
    expect((await x.call('VDI.get_snapshots', base)).length).toBe(1);
    await ctl.snapshots.restore({ name: 'gc' });
    x = await connect(url, 'root', PASSWORD);
  });

  it('an import streaming into a disk, in a task of the client\'s own, holds a restore back until it ends', async () => {
    const { vdi } = await newVm(x, 'importing', 2 * MiB);
    await ctl.snapshots.take({ name: 'import', replace: true });
    const task: string = await x.call('task.create', 'my import', '');
    const data = pattern(2 * MiB, 11);
    const req = request(new URL(`/import_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw', task_id: task })}`, url), {
      method: 'PUT', headers: { 'content-length': String(data.length) },
    });
    const answered = new Promise<number>((resolve, reject) => {
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
    req.write(data.subarray(0, 256 * 1024));
    // the handler is writing once the task shows progress
    while ((await x.call('task.get_progress', task)) === 0) await new Promise((r) => setImmediate(r));
    const e = await errorOf(ctl.snapshots.restore({ name: 'import', wait: 0 }));
    expect(e.status).toBe(409);
    expect(e.params.some((p) => p.includes(vdi))).toBe(true);
    req.end(data.subarray(256 * 1024));
    expect(await answered).toBe(200);
    expect(await exportSha(vdi)).toBe(createHash('sha256').update(data).digest('hex'));
    await ctl.snapshots.restore({ name: 'import' });
    x = await connect(url, 'root', PASSWORD);
    expect(await exportSha(vdi)).toBe(createHash('sha256').update(Buffer.alloc(2 * MiB)).digest('hex'));
  });
});

describe('names', () => {
  it('refuses bad names with 400, unknown ones with 404 and an existing one with 409', async () => {
    for (const name of ['../../etc', '..', '.initial', 'a/b', '', 'x'.repeat(65)]) {
      const e = await errorOf(ctl.snapshots.take({ name }));
      expect(e.status, name).toBe(400);
      expect(e.code).toBe('INVALID_INPUT');
    }
    const raw = await fetch(new URL('/xapi-emu/snapshots/..%2F..%2Fxapi.db/restore', url), {
      method: 'POST', headers: { authorization: `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}`, 'content-type': 'application/json' }, body: '{}',
    });
    expect(raw.status).toBe(400);
    for (const e of [await errorOf(ctl.snapshots.restore({ name: 'nope' })), await errorOf(ctl.snapshots.delete({ name: 'nope' })), await errorOf(ctl.snapshots.get({ name: 'nope' }))]) {
      expect(e.status).toBe(404);
      expect(e.code).toBe('NOT_FOUND');
    }
    await ctl.snapshots.take({ name: 'twice', replace: true });
    expect((await errorOf(ctl.snapshots.take({ name: 'twice' }))).status).toBe(409);
    await ctl.snapshots.delete({ name: 'twice' });
    expect((await ctl.snapshots.list()).snapshots.map((s) => s.name)).not.toContain('twice');
  });

  it('needs a pool-admin', async () => {
    const e = await errorOf(controlClient({ url, username: 'root', password: 'wrong' }).snapshots.list());
    expect(e.status).toBe(401);
  });
});

describe('persistence', () => {
  it('snapshots are listed after a toolstack restart and after a restart of the process, and restore there', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-snap-'));
    let s: RunningServer | undefined = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0, seed: 'persist' });
    try {
      let u = s.urls[0];
      let c = await connect(u, 'root', PASSWORD);
      let k = controlClient({ url: u, username: 'root', password: PASSWORD });
      const sr: string = (await c.call('SR.get_by_name_label', 'Local storage'))[0];
      const vdi: string = await c.call('VDI.create', vdiArgs(sr, 2 * MiB, 'kept'));
      const data = pattern(2 * MiB, 5);
      const r = await fetch(new URL(`/import_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw' })}`, u), { method: 'PUT', body: new Uint8Array(data) });
      expect(r.status).toBe(200);
      await r.arrayBuffer();
      await k.snapshots.take({ name: 'disk' });
      await c.call('VDI.destroy', vdi);

      await s.toolstackRestart();
      u = s.urls[0];
      k = controlClient({ url: u, username: 'root', password: PASSWORD });
      // (the first request may go out on a kept-alive connection the restart closed)
      const listed = await k.snapshots.list().catch(() => k.snapshots.list());
      expect(listed.snapshots.map((i) => i.name)).toEqual(['disk']);

      await s.close();
      s = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
      u = s.urls[0];
      k = controlClient({ url: u, username: 'root', password: PASSWORD });
      expect((await k.snapshots.list()).snapshots.map((i) => i.name)).toEqual(['disk']);
      await k.snapshots.restore({ name: 'disk' });
      c = await connect(u, 'root', PASSWORD);
      expect(await c.call('VDI.get_name_label', vdi)).toBe('kept');
      const e = await fetch(new URL(`/export_raw_vdi?${q({ session_id: c.session, vdi, format: 'raw' })}`, u));
      expect(e.status).toBe(200);
      expect(Buffer.from(await e.arrayBuffer()).equals(data)).toBe(true);
    } finally {
      await s?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('a restore cut by a kill is finished by the next start, and half-written snapshots are cleared', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-snap-'));
    let s: RunningServer | undefined = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
    try {
      let c = await connect(s.urls[0], 'root', PASSWORD);
      const k = controlClient({ url: s.urls[0], username: 'root', password: PASSWORD });
      const sr: string = (await c.call('SR.get_by_name_label', 'Local storage'))[0];
      await k.snapshots.take({ name: 'before' });
      const net: string = await c.call('network.create', { name_label: 'made after', name_description: '', MTU: 1500, other_config: {}, tags: [] });
      const vdi: string = await c.call('VDI.create', vdiArgs(sr, 1 * MiB, 'made after'));
      await s.close();
      // as a kill leaves it: the restore marked under way, a snapshot half written
      writeFileSync(join(dir, 'snapshots', '.restoring'), 'before');
      mkdirSync(join(dir, 'snapshots', '.tmp-cut'));
      s = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
      c = await connect(s.urls[0], 'root', PASSWORD);
      expect(await faultOf(c.call('network.get_name_label', net))).toEqual(['HANDLE_INVALID', 'network', net]);
      expect(await faultOf(c.call('VDI.get_name_label', vdi))).toEqual(['HANDLE_INVALID', 'VDI', vdi]);
      expect(existsSync(join(dir, 'snapshots', '.restoring'))).toBe(false);
      expect(existsSync(join(dir, 'snapshots', '.tmp-cut'))).toBe(false);
      expect(await c.call('SR.get_VDIs', sr)).toEqual([]);
    } finally {
      await s?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe('the contract', () => {
  it('is in the OpenAPI document', async () => {
    const r = await fetch(new URL('/xapi-emu/openapi.json', url), { headers: { authorization: `Basic ${Buffer.from(`root:${PASSWORD}`).toString('base64')}` } });
    expect(r.status).toBe(200);
    const doc = (await r.json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/xapi-emu/snapshots', '/xapi-emu/snapshots/{name}', '/xapi-emu/snapshots/{name}/restore', '/xapi-emu/reset']));
    expect(Object.keys(doc.paths['/xapi-emu/snapshots'])).toEqual(expect.arrayContaining(['get', 'post']));
  });
});
