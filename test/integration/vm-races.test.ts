// The VM lifecycle under concurrency, over JSON-RPC against a real server: conflicting calls on the
// same VM (checkpoint against hard_shutdown / revert / start, snapshot / checkpoint / copy against
// VBD.destroy, VBD.create against revert) started a varying number of event-loop turns apart, then
// many clients racing seeded random operations on a few VMs. After each, the pool must be
// consistent: no INTERNAL_ERROR, only the schema's error codes, no Suspended VM without its image,
// unique device numbers, both sides of the VM/VBD/VDI relations in agreement, the power states
// those of xenopsd's domains, and no operation left marked.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';
import { model } from '../../schema/index.js';
import { connectKeepAlive, XapiFault, type Client, type KeepAliveClient } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, NULL, PV_DRIVERS, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'vm-races-test';
const KNOWN = new Set(Object.keys(model.errors));

let srv: RunningServer;
let x: Client;
let local: string;
let network: string;

/** Lets the calls already sent run until `pred` holds of the pool's state (the server shares the
 * test's process; at time scale 0 simulated work takes event-loop turns, not time), so that the next
 * call is sent at a chosen point of the ones running. */
async function until(what: string, pred: () => boolean): Promise<void> {
  for (let i = 0; i < 100_000; i++) {
    if (pred()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never: ${what}`);
}

const db = () => srv.emu.db;

/** The outcome of a call: its result, or its XenAPI error code (anything else fails the test). */
async function outcome(p: Promise<unknown>): Promise<{ ok: true; value: unknown } | { ok: false; error: string[] }> {
  try {
    return { ok: true, value: await p };
  } catch (e) {
    if (!(e instanceof XapiFault)) throw e;
    return { ok: false, error: e.description };
  }
}

function expectXapiError(o: Awaited<ReturnType<typeof outcome>>): void {
  if (o.ok) return;
  expect(o.error[0], JSON.stringify(o.error)).not.toBe('INTERNAL_ERROR');
  // SM's own codes are numbered, as xapi passes them on
  expect(KNOWN.has(o.error[0]) || /^SR_BACKEND_FAILURE_\d+$/.test(o.error[0]), `unknown error ${JSON.stringify(o.error)}`).toBe(true);
}

const newVdi = (name: string): Promise<string> => x.call('VDI.create', vdiArgs(local, 2 * MiB, name));

/** A halted HVM guest with PV drivers, `disks` disks on local storage and a NIC. */
async function newVm(name: string, disks = 1): Promise<{ vm: string; vbds: string[] }> {
  const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(64 * MiB), other_config: PV_DRIVERS }));
  const vbds: string[] = [];
  for (let i = 0; i < disks; i++) vbds.push(await x.call('VBD.create', vbdArgs(vm, await newVdi(`${name}-disk${i}`), String(i))));
  await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vbds };
}

/** Every inconsistency of the pool's VMs, VBDs and VDIs, as readable strings. */
function violations(): string[] {
  const { emu } = srv;
  const { db } = emu;
  const out: string[] = [];
  for (const [vm, row] of db.table('VM')) {
    const r = row.rec;
    if (r.is_control_domain === true) continue;
    const name = `VM ${vm} (${String(r.name_label)})`;
    if (Object.keys(r.current_operations as object).length) out.push(`${name}: current_operations ${JSON.stringify(r.current_operations)}`);
    if (r.power_state === 'Suspended' && !db.has('VDI', String(r.suspend_VDI))) out.push(`${name}: Suspended without suspend_VDI`);
    if (r.power_state !== 'Suspended' && r.suspend_VDI !== NULL) out.push(`${name}: ${String(r.power_state)} with suspend_VDI`);
    // xapi rebases the children of a destroyed VM onto its parent: VM.parent never dangles (its
    // default, as the datamodel's, is "")
    if (r.parent !== NULL && r.parent !== '' && !db.has('VM', String(r.parent))) out.push(`${name}: parent ${String(r.parent)} destroyed`);
    const devices = new Map<string, string>();
    for (const b of r.VBDs as string[]) {
      const vbd = db.get('VBD', b);
      if (!vbd) {
        out.push(`${name}: VBDs lists destroyed ${b}`);
        continue;
      }
      if (vbd.VM !== vm) out.push(`${name}: VBD ${b} belongs to ${String(vbd.VM)}`);
      const u = String(vbd.userdevice);
      if (devices.has(u)) out.push(`${name}: userdevice ${u} taken by ${devices.get(u)} and ${b}`);
      devices.set(u, b);
    }
    const vifDevices = new Set<string>();
    for (const v of r.VIFs as string[]) {
      const vif = db.get('VIF', v);
      if (!vif) out.push(`${name}: VIFs lists destroyed ${v}`);
      else if (vif.VM !== vm) out.push(`${name}: VIF ${v} belongs to ${String(vif.VM)}`);
      else if (vifDevices.has(String(vif.device))) out.push(`${name}: VIF device ${String(vif.device)} taken twice`);
      else vifDevices.add(String(vif.device));
    }
    if (r.power_state === 'Halted' || r.power_state === 'Suspended') {
      for (const d of [...(r.VBDs as string[]).map((b) => ['VBD', b]), ...(r.VIFs as string[]).map((v) => ['VIF', v])]) {
        if (db.get(d[0], d[1])?.currently_attached === true) out.push(`${name}: ${String(r.power_state)} with ${d[0]} ${d[1]} attached`);
      }
    }
    const uuid = String(r.uuid);
    const where = emu.hosts.filter((h) => xenopsOf(emu, h).list().includes(uuid));
    if (r.power_state === 'Running' || r.power_state === 'Paused') {
      if (where.length !== 1 || where[0] !== r.resident_on) out.push(`${name}: ${String(r.power_state)} but domains on ${JSON.stringify(where)}`);
      else if (xenopsOf(emu, where[0]).stat(uuid).power_state !== r.power_state) out.push(`${name}: xenopsd says ${xenopsOf(emu, where[0]).stat(uuid).power_state}`);
    } else if (where.length) out.push(`${name}: ${String(r.power_state)} with a domain on ${JSON.stringify(where)}`);
  }
  for (const [vbd, row] of db.table('VBD')) {
    const r = row.rec;
    const vm = db.get('VM', String(r.VM));
    if (!vm) out.push(`VBD ${vbd}: VM ${String(r.VM)} destroyed`);
    else if (!(vm.VBDs as string[]).includes(vbd)) out.push(`VBD ${vbd}: not in VM.VBDs`);
    if (r.current_operations && Object.keys(r.current_operations as object).length) out.push(`VBD ${vbd}: current_operations ${JSON.stringify(r.current_operations)}`);
    if (r.empty === true) continue;
    const vdi = db.get('VDI', String(r.VDI));
    if (!vdi) out.push(`VBD ${vbd}: VDI ${String(r.VDI)} destroyed`);
    else if (!(vdi.VBDs as string[]).includes(vbd)) out.push(`VBD ${vbd}: not in VDI.VBDs`);
  }
  for (const [vif, row] of db.table('VIF')) {
    const vm = db.get('VM', String(row.rec.VM));
    if (!vm) out.push(`VIF ${vif}: VM ${String(row.rec.VM)} destroyed`);
    else if (!(vm.VIFs as string[]).includes(vif)) out.push(`VIF ${vif}: not in VM.VIFs`);
    if (Object.keys(row.rec.current_operations as object).length) out.push(`VIF ${vif}: current_operations ${JSON.stringify(row.rec.current_operations)}`);
  }
  for (const [vdi, row] of db.table('VDI')) {
    for (const b of row.rec.VBDs as string[]) if (!db.has('VBD', b)) out.push(`VDI ${vdi}: VBDs lists destroyed ${b}`);
    if (Object.keys(row.rec.current_operations as object).length) out.push(`VDI ${vdi}: current_operations ${JSON.stringify(row.rec.current_operations)}`);
  }
  return out;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 }));
  local = await localStorage(x);
  network = await xenbr0(x);
});

afterAll(async () => {
  await srv?.close();
});

describe('checkpoint racing power operations', () => {
  let vdis = 0;
  const gates: Record<string, (vm: string) => boolean> = {
    // the VM is suspended, its disks being copied
    suspended: (vm) => db().get('VM', vm)!.power_state === 'Suspended',
    // and one of its disks copied (the memory image is next)
    'a disk copied': (vm) => db().get('VM', vm)!.power_state === 'Suspended' && db().table('VDI').size > vdis + 2,
  };
  for (const [gate, reached] of Object.entries(gates)) {
    it(`hard_shutdown once ${gate}: the shutdown wins, the checkpoint is whole or fails, never Suspended without its image`, async () => {
      const { vm } = await newVm(`cp-hs-${gate}`);
      await x.call('VM.start', vm, false, false);
      const parent = await x.call('VM.get_parent', vm);
      vdis = db().table('VDI').size;
      const cp = outcome(x.call('VM.checkpoint', vm, 'cp'));
      await until(gate, () => reached(vm));
      const hs = await outcome(x.call('VM.hard_shutdown', vm));
      const c = await cp;
      expect(hs).toEqual({ ok: true, value: '' });
      expectXapiError(c);
      if (c.ok) {
        const r: any = await x.call('VM.get_record', c.value);
        expect(r.power_state).toBe('Suspended');
        expect(await x.call('VDI.get_type', r.suspend_VDI)).toBe('suspend');
        expect(await x.call('VM.get_parent', vm)).toBe(c.value);
      } else {
        expect(c.error.slice(0, 2)).toEqual(['VM_BAD_POWER_STATE', vm]);
        // the half-made checkpoint is gone and the VM keeps its parent
        expect(await x.call('VM.get_parent', vm)).toBe(parent);
        expect(await x.call('VM.get_snapshots', vm)).toEqual([]);
      }
      expect(await x.call('VM.get_power_state', vm)).toBe('Halted');
      expect(violations()).toEqual([]);
      // and it starts again
      await x.call('VM.start', vm, false, false);
      await x.call('VM.hard_shutdown', vm);
    });
  }

  it('revert of a checkpoint, then checkpoint and start: they wait for the revert, which leaves the VM Suspended', async () => {
    const { vm } = await newVm('cp-revert');
    await x.call('VM.start', vm, false, false);
    const snap: string = await x.call('VM.checkpoint', vm, 'base');
    const rv = outcome(x.call('VM.revert', snap));
    // the revert has shut the VM down and is replacing its disks
    await until('VM halted by the revert', () => db().get('VM', vm)!.power_state === 'Halted');
    const [cp, st] = await Promise.all([outcome(x.call('VM.checkpoint', vm, 'cp')), outcome(x.call('VM.start', vm, false, false))]);
    expect(await rv).toEqual({ ok: true, value: '' });
    // the checkpoint finds the VM halted (xapi checks the power state before the operations in
    // progress); the start waits for the revert, then finds the VM suspended
    expect(cp.ok ? 'ok' : cp.error[0]).toBe('VM_BAD_POWER_STATE');
    expect(st.ok ? 'ok' : st.error.slice(0, 4)).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'suspended']);
    expect(await x.call('VM.get_power_state', vm)).toBe('Suspended');
    expect(violations()).toEqual([]);
    await x.call('VM.resume', vm, false, false);
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('disk operations racing VBD.destroy', () => {
  for (const op of ['snapshot', 'checkpoint', 'copy'] as const) {
    it(`${op} against VBD.destroy once a disk is copied: OTHER_OPERATION_IN_PROGRESS, a whole ${op}`, async () => {
      const { vm, vbds } = await newVm(`${op}-vbd`, 3);
      if (op === 'checkpoint') {
        // a checkpoint needs the VM live; VBD.destroy needs the VBDs unplugged
        await x.call('VM.start', vm, false, false);
        await until('PV drivers', () => db().get('VM_guest_metrics', String(db().get('VM', vm)!.guest_metrics))?.PV_drivers_detected === true);
        for (const b of [vbds[0], vbds[2]]) await x.call('VBD.unplug', b);
      }
      const parent = await x.call('VM.get_parent', vm);
      const args = op === 'snapshot' ? [vm, 'snap', []] : op === 'copy' ? [vm, 'copy', local] : [vm, 'cp'];
      const vdis = db().table('VDI').size + (op === 'checkpoint' ? 1 : 0);
      const copy = outcome(x.call(`VM.${op}`, ...args));
      await until('a disk copied', () => db().table('VDI').size > vdis);
      const destroyed = await Promise.all([outcome(x.call('VBD.destroy', vbds[0])), outcome(x.call('VBD.destroy', vbds[2]))]);
      const c = await copy;
      for (const d of destroyed) expect(d.ok ? 'ok' : d.error.slice(0, 3)).toEqual(['OTHER_OPERATION_IN_PROGRESS', 'VM', vm]);
      expectXapiError(c);
      if (!c.ok) throw new Error(JSON.stringify(c.error));
      const made: any = await x.call('VM.get_record', c.value);
      expect(made.VBDs).toHaveLength(3);
      expect(await x.call('VM.get_parent', vm)).toBe(op === 'copy' ? parent : c.value);
      expect(violations()).toEqual([]);
      // once it is done (the checkpoint's resume plugged the disks back), the VBD goes
      if (op === 'checkpoint') await x.call('VM.hard_shutdown', vm);
      await x.call('VBD.destroy', vbds[0]);
    });
  }
});

describe('VBD.create racing revert', () => {
  it('refused while the revert replaces the devices: no device number taken twice', async () => {
    const { vm } = await newVm('create-revert', 2);
    const snap: string = await x.call('VM.snapshot', vm, 'base', []);
    const spare = [await newVdi('spare-0'), await newVdi('spare-1'), await newVdi('spare-2')];
    const rv = outcome(x.call('VM.revert', snap));
    await until('the VM\'s VBDs removed by the revert', () => (db().get('VM', vm)!.VBDs as string[]).length === 0);
    const created = await Promise.all(spare.map((s) => outcome(x.call('VBD.create', vbdArgs(vm, s, 'autodetect')))));
    const fixed = await outcome(x.call('VBD.create', vbdArgs(vm, spare[0], '0')));
    expect(await rv).toEqual({ ok: true, value: '' });
    for (const r of [...created, fixed]) {
      expect(r.ok ? 'ok' : r.error).toEqual(['OTHER_OPERATION_IN_PROGRESS', 'VM', vm, 'reverting', expect.stringMatching(/^OpaqueRef:/)]);
    }
    expect(violations()).toEqual([]);
    // afterwards: autodetect takes the next free number, a taken one (under any name) is refused
    const vbd: string = await x.call('VBD.create', vbdArgs(vm, spare[0], 'autodetect'));
    expect(await x.call('VBD.get_userdevice', vbd)).toBe('2');
    for (const name of ['1', 'xvdb', 'hdb']) {
      expect(await outcome(x.call('VBD.create', vbdArgs(vm, spare[1], name)))).toEqual({ ok: false, error: ['DEVICE_ALREADY_EXISTS', name] });
    }
  });
});

describe('references left by destroyed objects', () => {
  it('VM.destroy rebases the children onto the parent; snapshot_of of snapshots is left as xapi leaves it', async () => {
    const { vm } = await newVm('parents');
    const s1: string = await x.call('VM.snapshot', vm, 's1', []);
    const s2: string = await x.call('VM.snapshot', vm, 's2', []);
    expect(await x.call('VM.get_parent', vm)).toBe(s2);
    expect(await x.call('VM.get_parent', s2)).toBe(s1);
    await x.call('VM.destroy', s2);
    expect(await x.call('VM.get_parent', vm)).toBe(s1);
    const s1Disk = await x.call('VBD.get_VDI', (await x.call('VM.get_VBDs', s1))[0]);
    const vmDisk = await x.call('VBD.get_VDI', (await x.call('VM.get_VBDs', vm))[0]);
    expect(await x.call('VDI.get_snapshot_of', s1Disk)).toBe(vmDisk);
    // the VM goes with its disk: its snapshot keeps pointing at both (xapi's orphaned snapshots)
    for (const b of await x.call('VM.get_VBDs', vm)) await x.call('VBD.destroy', b);
    await x.call('VDI.destroy', vmDisk);
    await x.call('VM.destroy', vm);
    expect(await x.call('VM.get_snapshot_of', s1)).toBe(vm);
    expect(await x.call('VDI.get_snapshot_of', s1Disk)).toBe(vmDisk);
    expect(violations()).toEqual([]);
  });
});

const ROUNDS_TIMEOUT = Number(process.env.RACE_ROUNDS ?? 0) * 10_000;

describe('32 clients racing conflicting operations on a few VMs', () => {
  it('ends consistent, with only XenAPI errors', async () => {
    const N_VMS = 4;
    const N_CLIENTS = 32;
    // RACE_SEED / RACE_ROUNDS run other (or longer) sequences; the default is the same every run
    const ROUNDS = Number(process.env.RACE_ROUNDS ?? 5);
    const vms: string[] = [];
    for (let i = 0; i < N_VMS; i++) vms.push((await newVm(`race-${i}`)).vm);
    const spares: string[] = [];
    for (let i = 0; i < 8; i++) spares.push(await newVdi(`race-spare-${i}`));
    // each client on its own keep-alive connection
    const clients: KeepAliveClient[] = [];
    for (let i = 0; i < N_CLIENTS; i++) clients.push(await connectKeepAlive(srv.urls[0], 'root', PASSWORD, `racer-${i}`));
    // mulberry32: the same sequence of choices on every run
    let seed = Number(process.env.RACE_SEED ?? 20261203);
    const rnd = (n: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    };
    const pick = <T>(xs: T[]): T | undefined => (xs.length ? xs[rnd(xs.length)] : undefined);
    const OPS = [
      'start', 'hard_shutdown', 'clean_shutdown', 'suspend', 'resume', 'checkpoint', 'checkpoint', 'snapshot', 'snapshot', 'revert', 'revert',
      'copy', 'clone', 'destroy_snapshot', 'hard_reboot', 'pool_migrate', 'VBD.create', 'VBD.create', 'VBD.destroy', 'VBD.plug', 'VBD.unplug', 'VIF.create', 'VIF.destroy',
    ];
    const counts = new Map<string, number>();
    const made: string[] = [];
    await Promise.all(clients.map(async (c) => {
      for (let k = 0; k < ROUNDS; k++) {
        const vm = vms[rnd(N_VMS)];
        const op = OPS[rnd(OPS.length)];
        const choice = rnd(1000);
        const o = await outcome((async () => {
          const r: any = await c.call('VM.get_record', vm);
          const one = <T>(xs: T[]) => xs.length ? xs[choice % xs.length] : undefined;
          switch (op) {
            case 'start': return c.call('VM.start', vm, false, false);
            case 'resume': return c.call('VM.resume', vm, false, false);
            case 'pool_migrate': return c.call('VM.pool_migrate', vm, srv.emu.hosts[choice % 2], { live: 'true' });
            case 'copy': return c.call('VM.copy', vm, 'race-copy', local).then((v) => made.push(v as string));
            case 'clone': return c.call('VM.clone', vm, 'race-clone').then((v) => made.push(v as string));
            case 'snapshot': return c.call('VM.snapshot', vm, 'race-snap', []);
            case 'checkpoint': return c.call('VM.checkpoint', vm, 'race-cp');
            case 'revert': return r.snapshots.length ? c.call('VM.revert', one(r.snapshots)) : undefined;
            case 'destroy_snapshot': {
              const s = one(r.snapshots);
              if (!s) return undefined;
              // a snapshot's disks go with it, as XO deletes them
              const disks: string[] = [];
              for (const b of (await c.call('VM.get_VBDs', s)) as string[]) disks.push(String(await c.call('VBD.get_VDI', b)));
              await c.call('VM.destroy', s);
              for (const d of disks) await c.call('VDI.destroy', d).catch(() => undefined);
              return undefined;
            }
            case 'VBD.create': return c.call('VBD.create', vbdArgs(vm, spares[choice % spares.length], choice % 2 ? 'autodetect' : String(choice % 4)));
            case 'VBD.destroy': return r.VBDs.length ? c.call('VBD.destroy', one(r.VBDs)) : undefined;
            case 'VBD.plug': return r.VBDs.length ? c.call('VBD.plug', one(r.VBDs)) : undefined;
            case 'VBD.unplug': return r.VBDs.length ? c.call('VBD.unplug', one(r.VBDs)) : undefined;
            case 'VIF.create': return c.call('VIF.create', vifArgs(vm, network, String(choice % 3)));
            case 'VIF.destroy': return r.VIFs.length ? c.call('VIF.destroy', one(r.VIFs)) : undefined;
            default: return c.call(`VM.${op}`, vm);
          }
        })());
        expectXapiError(o);
        const key = o.ok ? `${op}: ok` : `${op}: ${o.error[0]}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }));
    if (process.env.RACE_DEBUG) console.log(JSON.stringify([...counts].sort()));
    const ok = [...counts].filter(([k]) => k.endsWith(': ok')).map(([k]) => k.split(':')[0]);
    // the race did things, not only refuse them
    expect(new Set(ok).size, JSON.stringify([...counts])).toBeGreaterThanOrEqual(6);
    expect(violations()).toEqual([]);
    for (const c of clients) await c.call('session.logout').catch(() => undefined);
    for (const c of clients) c.close();
  }, 60_000 + ROUNDS_TIMEOUT);
});
