// VM.clone / copy / snapshot / checkpoint / revert and VM.provision over JSON-RPC against a real
// server: a default template cloned, provisioned and booted; disk contents through snapshots and
// reverts (written in-process through SM, read back over /export_raw_vdi); a checkpoint of a running
// VM reverted to Suspended then resumed; the memory and VCPU setters' rules; and XO's client taking a
// VM through start → snapshot → reboot → shutdown with Async calls and events.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { openVdi } from '../../server/sm/index.js';
import { xenopsOf } from '../../server/api/xenops-sync.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { GiB, MiB, NULL, PV_DRIVERS, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'vm-snapshot-test';

let srv: RunningServer;
let x: Client;
let master: string;
let local: string;
let network: string;
let debian: string;

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);

/** What `xe vm-install` and XO do before VM.provision: the pool's default SR into the disk spec. */
async function useDefaultSr(vm: string): Promise<void> {
  const pool = (await x.call('pool.get_all'))[0];
  const sr = await x.call('SR.get_uuid', (await rec('pool', pool)).default_SR);
  const disks = String((await rec('VM', vm)).other_config.disks).replaceAll('sr=""', `sr="${sr}"`);
  await x.call('VM.remove_from_other_config', vm, 'disks');
  await x.call('VM.add_to_other_config', vm, 'disks', disks);
}

async function newVm(name: string): Promise<{ vm: string; vdi: string; vif: string }> {
  const vm: string = await x.call('VM.create', vmArgs(name, {
    ...memory(1 * GiB, 512 * MiB), VCPUs_max: 2, VCPUs_at_startup: 2, other_config: PV_DRIVERS,
  }));
  const vdi: string = await x.call('VDI.create', vdiArgs(local, 8 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  const vif: string = await x.call('VIF.create', vifArgs(vm, network));
  return { vm, vdi, vif };
}

/** Writes bytes at an offset of a VDI through the SM layer (the VM halted). */
async function writeVdi(vdi: string, offset: number, data: Buffer): Promise<void> {
  const io = await openVdi(srv.emu, vdi, { readOnly: false });
  try {
    await io.write(offset, data);
    await io.flush();
  } finally {
    await io.close();
  }
}

/** The running guest writes to its disk (through qemu-dm or blkif, as the datapath is at the time). */
async function guestWrite(vm: string, offset: number, data: Buffer): Promise<void> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?session_id=${x.session}&vm=${vm}&device=0&offset=${offset}`, srv.urls[0]), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  expect(r.status).toBe(200);
  const f = await fetch(new URL(`/xapi-emu/guest/disk?session_id=${x.session}&vm=${vm}&device=0&op=flush`, srv.urls[0]), { method: 'POST' });
  expect(f.status).toBe(200);
}

/** The first bytes of a VDI, read over /export_raw_vdi. */
async function exportHead(vdi: string, n: number): Promise<Buffer> {
  const r = await fetch(new URL(`/export_raw_vdi?session_id=${x.session}&vdi=${vdi}&format=raw`, srv.urls[0]));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer()).subarray(0, n);
}

/** The VDI of a VM's disk in userdevice `dev`. */
async function diskOf(vm: string, dev = '0'): Promise<string> {
  for (const b of (await rec('VM', vm)).VBDs) {
    const v = await rec('VBD', b);
    if (v.userdevice === dev) return v.VDI;
  }
  throw new Error(`no disk ${dev}`);
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  const pool = (await x.call('pool.get_all'))[0];
  master = (await rec('pool', pool)).master;
  local = await localStorage(x);
  network = await xenbr0(x);
  debian = (await x.call('VM.get_by_name_label', 'Debian Bookworm 12'))[0];
});

afterAll(async () => {
  await srv?.close();
});

describe('templates: clone, provision, boot', () => {
  it('a clone of a default template is a template; provision makes its disks and a VM that boots', async () => {
    const t = await x.call('VM.clone', debian, 'my debian');
    const tr = await rec('VM', t);
    expect(tr.is_a_template).toBe(true);
    expect(tr.is_default_template).toBe(false);
    expect(tr.other_config.default_template).toBeUndefined();
    expect(tr.other_config.base_template_name).toBe('Debian Bookworm 12');
    expect(tr.other_config.mac_seed).not.toBe((await rec('VM', debian)).other_config.mac_seed);
    expect(tr.other_config.disks).toContain('<provision>');
    expect(tr.parent).toBe(NULL);
    expect(tr.VBDs).toEqual([]);
    // a template cannot start
    expect(await faultOf(x.call('VM.start', t, false, false))).toEqual(['VM_IS_TEMPLATE', t, 'start']);

    await useDefaultSr(t);
    await x.call('VM.provision', t);
    const vr = await rec('VM', t);
    expect(vr.is_a_template).toBe(false);
    expect(vr.other_config.disks).toBeUndefined();
    expect(vr.VBDs).toHaveLength(1);
    const vbd = await rec('VBD', vr.VBDs[0]);
    expect(vbd).toMatchObject({ userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', unpluggable: false, other_config: { owner: '' } });
    const vdi = await rec('VDI', vbd.VDI);
    const pool = (await x.call('pool.get_all'))[0];
    expect(vdi).toMatchObject({ name_label: '0', name_description: 'Created by template provisioner', virtual_size: 10 * GiB, type: 'system' });
    expect(vdi.SR).toBe((await rec('pool', pool)).default_SR);
    // it is not a template any more
    expect(await faultOf(x.call('VM.provision', t))).toEqual(['ONLY_PROVISION_TEMPLATE']);

    await x.call('VM.start', t, false, false);
    expect((await rec('VM', t)).power_state).toBe('Running');
    expect((await rec('VBD', vr.VBDs[0])).currently_attached).toBe(true);
    expect(xenopsOf(srv.emu, master).tapdisk(vr.uuid, 'hda')).not.toBeNull();
    await x.call('VM.hard_shutdown', t);
  });

  it('sr="" in a provision spec is no SR, as in xapi (clients write the uuid first)', async () => {
    const t = await x.call('VM.clone', debian, 'empty sr');
    expect(await faultOf(x.call('VM.provision', t))).toEqual(['UUID_INVALID', 'sr', '']);
    // xapi clears is_a_template before it reads the spec, and does not set it back
    expect((await rec('VM', t)).is_a_template).toBe(false);
  });

  it('a provision spec naming an unknown SR fails and leaves no disk behind', async () => {
    const t = await x.call('VM.clone', debian, 'bad sr');
    await x.call('VM.add_to_other_config', t, 'x', 'y');
    await x.call('VM.remove_from_other_config', t, 'disks');
    await x.call('VM.add_to_other_config', t, 'disks', '<provision><disk device="0" size="1048576" sr="nope" bootable="true" type="system"/></provision>');
    const vdis = (await x.call('VDI.get_all')).length;
    expect(await faultOf(x.call('VM.provision', t))).toEqual(['UUID_INVALID', 'sr', 'nope']);
    expect((await x.call('VDI.get_all')).length).toBe(vdis);
  });

  it('make_into_template: halted only; a template loses its metrics', async () => {
    const { vm } = await newVm('to-template');
    await x.call('VM.start', vm, false, false);
    expect(await faultOf(x.call('VM.set_is_a_template', vm, true))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    await x.call('VM.hard_shutdown', vm);
    await x.call('VM.set_is_a_template', vm, true);
    const r = await rec('VM', vm);
    expect(r.is_a_template).toBe(true);
    expect(r.metrics).toBe(NULL);
    expect(r.allowed_operations).not.toContain('start');
    expect(await faultOf(x.call('VM.set_is_a_template', vm, true))).toEqual(['VM_IS_TEMPLATE', vm, 'make_into_template']);
  });
});

describe('clone, copy, snapshot and revert of a halted VM', () => {
  it('snapshot keeps the disk as it was; clone gets new MACs; revert brings the bytes back', async () => {
    const { vm, vdi, vif } = await newVm('halted');
    const A = Buffer.from('AAAA-snapshot-time');
    const B = Buffer.from('BBBB-after-the-snap');
    await writeVdi(vdi, 0, A);

    const snap = await x.call('VM.snapshot', vm, 'snap1', []);
    const s = await rec('VM', snap);
    expect(s).toMatchObject({ is_a_snapshot: true, is_a_template: true, snapshot_of: vm, power_state: 'Halted', name_label: 'snap1' });
    expect(s.snapshot_info).toEqual({ 'disk-snapshot-type': 'crash_consistent', 'power-state-at-snapshot': 'Halted' });
    expect(s.snapshot_time).not.toBe('19700101T00:00:00Z');
    const v = await rec('VM', vm);
    expect(v.snapshots).toEqual([snap]);
    expect(v.parent).toBe(snap);
    expect(s.children).toEqual([vm]);
    const alerts = Object.values(await x.call('message.get_all_records')) as any[];
    expect(alerts.find((m) => m.name === 'VM_SNAPSHOTTED' && m.obj_uuid === v.uuid)).toMatchObject({
      cls: 'VM', priority: 5, body: `VM 'halted' (uuid: ${v.uuid}) snapshotted, snapshot name: snap1`,
    });
    const snapVdi = await diskOf(snap);
    expect(await rec('VDI', snapVdi)).toMatchObject({ is_a_snapshot: true, snapshot_of: vdi });
    expect((await rec('VDI', vdi)).snapshots).toEqual([snapVdi]);
    // a snapshot keeps the MAC
    expect((await rec('VIF', (s.VIFs as string[])[0])).MAC).toBe((await rec('VIF', vif)).MAC);
    // a snapshot cannot start, but can be cloned
    expect(await faultOf(x.call('VM.start', snap, false, false))).toEqual(['VM_IS_SNAPSHOT', snap, 'start']);
    expect(s.allowed_operations).toEqual(expect.arrayContaining(['revert', 'clone', 'copy', 'destroy']));

    await writeVdi(vdi, 0, B);
    const clone = await x.call('VM.clone', vm, 'clone1');
    const c = await rec('VM', clone);
    expect(c).toMatchObject({ is_a_snapshot: false, is_a_template: false, snapshot_of: NULL, parent: NULL, power_state: 'Halted' });
    expect((await rec('VIF', c.VIFs[0])).MAC).not.toBe((await rec('VIF', vif)).MAC);
    const cloneVdi = await diskOf(clone);
    expect(cloneVdi).not.toBe(vdi);
    expect(await exportHead(cloneVdi, B.length)).toEqual(B);

    // copy to the same SR (NULL): a full, independent disk
    const copy = await x.call('VM.copy', vm, 'copy1', NULL);
    const copyVdi = await diskOf(copy);
    expect((await rec('VDI', copyVdi)).SR).toBe(local);
    expect(await exportHead(copyVdi, B.length)).toEqual(B);

    // revert: the VM's disk is replaced by a clone of the snapshot's
    await x.call('VM.revert', snap);
    const after = await rec('VM', vm);
    expect(after.power_state).toBe('Halted');
    expect(after.name_label).toBe('halted');
    expect(after.parent).toBe(snap);
    const reverted = await diskOf(vm);
    expect(reverted).not.toBe(vdi);
    expect(await x.call('VDI.get_all')).not.toContain(vdi);
    expect(await exportHead(reverted, A.length)).toEqual(A);
    // the snapshot's disk is now a snapshot of the new disk
    expect((await rec('VDI', snapVdi)).snapshot_of).toBe(reverted);
    // the VIFs are the snapshot's (same MAC)
    expect((await rec('VIF', after.VIFs[0])).MAC).toBe((await rec('VIF', s.VIFs[0])).MAC);
    // only snapshots revert
    expect(await faultOf(x.call('VM.revert', vm))).toEqual(['ONLY_REVERT_SNAPSHOT']);
  });

  it('a running VM cannot be cloned or copied; a snapshot is not a VM', async () => {
    const { vm } = await newVm('running-clone');
    await x.call('VM.start', vm, false, false);
    expect(await faultOf(x.call('VM.clone', vm, 'c'))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    expect(await faultOf(x.call('VM.copy', vm, 'c', NULL))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    expect(await faultOf(x.call('VM.revert', vm))).toEqual(['ONLY_REVERT_SNAPSHOT']);
    await x.call('VM.hard_shutdown', vm);
  });
});

describe('running VMs: live snapshot, checkpoint and revert', () => {
  it('a live snapshot is halted; a checkpoint carries the memory image and the VM keeps running', async () => {
    const { vm, vdi } = await newVm('live');
    const A = Buffer.from('state-at-checkpoint');
    await writeVdi(vdi, 4096, A);
    await x.call('VM.start', vm, false, false);

    const snap = await x.call('VM.snapshot', vm, 'live-snap', []);
    const s = await rec('VM', snap);
    expect(s.power_state).toBe('Halted');
    expect(s.snapshot_info['power-state-at-snapshot']).toBe('Running');
    expect(s.suspend_VDI).toBe(NULL);
    expect((await rec('VM', vm)).power_state).toBe('Running');

    const cp = await x.call('VM.checkpoint', vm, 'cp');
    const c = await rec('VM', cp);
    expect(c).toMatchObject({ is_a_snapshot: true, power_state: 'Suspended', snapshot_of: vm });
    expect(c.snapshot_info['power-state-at-snapshot']).toBe('Running');
    const image = await rec('VDI', c.suspend_VDI);
    expect(image.type).toBe('suspend');
    const v = await rec('VM', vm);
    expect(v.power_state).toBe('Running');
    expect(v.suspend_VDI).toBe(NULL);
    expect(v.snapshots.sort()).toEqual([snap, cp].sort());
    expect(v.parent).toBe(cp);
    expect((await rec('VM', cp)).parent).toBe(snap);

    // the guest writes after the checkpoint: the checkpoint's disk keeps the old bytes
    const B = Buffer.from('written-after-the-cp');
    await guestWrite(vm, 4096, B);
    // revert to the checkpoint while running: shut down, disks and memory image cloned → Suspended
    await x.call('VM.revert', cp);
    const r = await rec('VM', vm);
    expect(r.power_state).toBe('Suspended');
    expect(r.suspend_VDI).not.toBe(NULL);
    expect(r.suspend_VDI).not.toBe(c.suspend_VDI);
    expect(await exportHead(await diskOf(vm), 4096 + A.length).then((b) => b.subarray(4096))).toEqual(A);
    await x.call('VM.resume', vm, false, false);
    expect((await rec('VM', vm)).power_state).toBe('Running');
    await guestWrite(vm, 4096, B);
    // the checkpoint keeps its image
    expect((await rec('VM', cp)).suspend_VDI).toBe(c.suspend_VDI);

    // revert to the halted snapshot: the running VM is shut down and stays Halted
    await x.call('VM.revert', snap);
    expect((await rec('VM', vm)).power_state).toBe('Halted');
    expect(await exportHead(await diskOf(vm), 4096 + A.length).then((b) => b.subarray(4096))).toEqual(A);
    expect((await rec('VM', vm)).parent).toBe(snap);

    // a clone of a checkpoint is halted (its image is not kept)
    const fromCp = await x.call('VM.clone', cp, 'from-cp');
    expect(await rec('VM', fromCp)).toMatchObject({ power_state: 'Halted', suspend_VDI: NULL, is_a_snapshot: false });
  });

  it('checkpoint of a halted VM is refused', async () => {
    const { vm } = await newVm('cp-halted');
    expect(await faultOf(x.call('VM.checkpoint', vm, 'x'))).toEqual(['VM_BAD_POWER_STATE', vm, 'paused, suspended, running', 'halted']);
  });
});

describe('memory and VCPUs', () => {
  it('enforces the constraints and the power states of each setter', async () => {
    const { vm } = await newVm('mem');
    expect(await faultOf(x.call('VM.set_memory_limits', vm, 1 * GiB, 512 * MiB, 512 * MiB, 512 * MiB))).toEqual(['MEMORY_CONSTRAINT_VIOLATION_ORDER']);
    expect(await faultOf(x.call('VM.set_memory_dynamic_range', vm, 768 * MiB, 2 * GiB))).toEqual(['MEMORY_CONSTRAINT_VIOLATION_ORDER']);
    await x.call('VM.set_memory_limits', vm, 256 * MiB, 2 * GiB, 1 * GiB, 2 * GiB);
    expect(await rec('VM', vm)).toMatchObject({ memory_static_min: 256 * MiB, memory_dynamic_min: 1 * GiB, memory_target: 1 * GiB, memory_dynamic_max: 2 * GiB, memory_static_max: 2 * GiB });
    await x.call('VM.set_memory', vm, 1 * GiB);
    expect(await rec('VM', vm)).toMatchObject({ memory_static_min: 256 * MiB, memory_dynamic_min: 1 * GiB, memory_dynamic_max: 1 * GiB, memory_static_max: 1 * GiB });
    await x.call('VM.set_memory_static_max', vm, 2 * GiB);
    await x.call('VM.set_memory_dynamic_max', vm, 2 * GiB);
    expect(await x.call('VM.get_memory_dynamic_max', vm)).toBe(2 * GiB);

    await x.call('VM.set_VCPUs_at_startup', vm, 1);
    expect(await faultOf(x.call('VM.set_VCPUs_at_startup', vm, 3))).toEqual(['INVALID_VALUE', 'VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max', '3']);
    expect(await faultOf(x.call('VM.set_VCPUs_max', vm, 0))).toEqual(['INVALID_VALUE', 'VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max', '0']);
    await x.call('VM.set_VCPUs_max', vm, 4);

    await x.call('VM.start', vm, false, false);
    expect(await faultOf(x.call('VM.set_memory_static_range', vm, 256 * MiB, 4 * GiB))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    expect(await faultOf(x.call('VM.set_memory_limits', vm, 256 * MiB, 4 * GiB, 1 * GiB, 1 * GiB))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    expect(await faultOf(x.call('VM.set_VCPUs_max', vm, 8))).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    await x.call('VM.set_memory_dynamic_range', vm, 1 * GiB, 1536 * MiB);
    expect((await rec('VM', vm)).memory_dynamic_max).toBe(1536 * MiB);
    await x.call('VM.set_VCPUs_number_live', vm, 3);
    expect((await rec('VM', vm)).VCPUs_at_startup).toBe(3);
    expect(await faultOf(x.call('VM.set_VCPUs_number_live', vm, 5))).toEqual(['INVALID_VALUE', 'VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max', '5']);
    await x.call('VM.hard_shutdown', vm);
    expect(await faultOf(x.call('VM.set_VCPUs_number_live', vm, 2))).toEqual(['VM_BAD_POWER_STATE', vm, 'running', 'halted']);
  });

  it('allowed devices leave out the used ones; query_services needs a system domain', async () => {
    const { vm } = await newVm('devices');
    const vbds: string[] = await x.call('VM.get_allowed_VBD_devices', vm);
    expect(vbds[0]).toBe('1');
    expect(vbds).toHaveLength(254);
    expect(await x.call('VM.get_allowed_VIF_devices', vm)).toEqual(Array.from({ length: 15 }, (_, i) => String(i + 1)));
    expect(await faultOf(x.call('VM.query_services', vm))).toEqual(['NOT_SYSTEM_DOMAIN', vm]);
  });
});

describe("XO's client: start → snapshot → reboot → shutdown", () => {
  let xapi: Xapi;

  beforeAll(async () => {
    xapi = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, debounce: 0 });
    await xapi.connect();
  });

  afterAll(async () => {
    await xapi?.disconnect();
  });

  it('runs a VM through its life with Async calls settled by task events', async () => {
    const t = await xapi.callAsync<string>('VM.clone', debian, 'xo vm');
    await xapi.call('VM.add_to_other_config', t, 'xapi-emu-pv-drivers', 'true');
    await useDefaultSr(t);
    await xapi.callAsync('VM.provision', t);
    await xapi.callAsync('VM.start', t, false, false);
    expect((await xapi.barrier(t))?.power_state).toBe('Running');

    const snap = await xapi.callAsync<string>('VM.snapshot', t, 'xo snap', []);
    expect(await xapi.barrier(snap)).toMatchObject({ is_a_snapshot: true, snapshot_of: t });
    expect((await xapi.barrier(t))?.snapshots).toContain(snap);

    await xapi.callAsync('VM.clean_reboot', t);
    expect((await xapi.barrier(t))?.power_state).toBe('Running');
    await xapi.callAsync('VM.clean_shutdown', t);
    expect((await xapi.barrier(t))?.power_state).toBe('Halted');
    // the tasks were destroyed by callAsync; none is left pending
    const pending = Object.values(xapi.objects.all).filter((o: any) => o.$type === 'task' && o.status === 'pending');
    expect(pending).toEqual([]);
  });
});
