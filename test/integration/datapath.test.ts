// The simulated datapath over real sockets: a started HVM guest writes through qemu-dm's emulated
// IDE (the introspection shows qemu-dm's counters moving), loads its PV drivers (VM_guest_metrics
// appears, the disk moves to blkfront/blkif), writes through the ring (ring counters move,
// qemu-dm's do not), FLUSH and DISCARD answers, errors (halted VM, bad parameters, sessions,
// roles), and after a shutdown the bytes read back through /export_raw_vdi.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { localStorage, startPool } from './helpers/pool.js';
import { GiB, MiB, NULL, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'datapath-test';

let srv: RunningServer;
let url: string;
let x: Client;
let local: string;

async function newVm(name: string, extra: Record<string, unknown> = {}) {
  const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(1 * GiB, 512 * MiB), VCPUs_max: 2, VCPUs_at_startup: 2, ...extra }));
  const vdi: string = await x.call('VDI.create', vdiArgs(local, 16 * MiB, `${name}-disk`));
  const vbd: string = await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  return { vm, vdi, vbd };
}

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

async function guestWrite(vm: string, device: string, offset: number, data: Buffer, session = x.session) {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: session, vm, device, offset })}`, url), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  return { status: r.status, body: r.status === 200 ? ((await r.json()) as any) : await r.text() };
}

async function guestOp(vm: string, params: Record<string, string | number>) {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', ...params })}`, url), { method: 'POST' });
  return { status: r.status, body: r.status === 200 ? ((await r.json()) as any) : await r.text() };
}

async function guestRead(vm: string, device: string, offset: number, length: number) {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device, offset, length })}`, url));
  expect(r.status).toBe(200);
  return { path: r.headers.get('x-xapi-emu-datapath'), data: Buffer.from(await r.arrayBuffer()) };
}

async function introspect(session = x.session): Promise<any> {
  const r = await fetch(new URL(`/xapi-emu/introspect?${q({ session_id: session })}`, url));
  expect(r.status).toBe(200);
  return r.json();
}

const pattern = (n: number, seed: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
};

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { users: [{ name: 'ro', password: 'r', role: 'read-only' }] }));
  url = srv.urls[0];
  local = await localStorage(x);
});

afterAll(async () => {
  await srv?.close();
});

describe('guest disk I/O: qemu-dm, then blkif after PV drivers', () => {
  it('writes through the emulated IDE disk, then through the blkif ring, and the VDI holds both', async () => {
    const { vm, vdi, vbd } = await newVm('dp-hvm');
    const uuid: string = await x.call('VM.get_uuid', vm);
    const vdiUuid: string = await x.call('VDI.get_uuid', vdi);
    await x.call('VM.start', vm, false, false);
    expect(await x.call('VBD.get_device', vbd)).toBe('hda');
    expect(await x.call('VM.get_guest_metrics', vm)).toBe(NULL);

    // the tapdisk, qemu-dm's args and the live path before PV drivers
    let st = await introspect();
    const tap = st.tapdisks.find((t: any) => t.vdi === vdiUuid);
    expect(tap).toMatchObject({ state: 0 });
    expect(tap.args).toMatch(/^vhd:.*\.vhd$/);
    expect(st.tap_ctl_list).toContain(`pid=${tap.pid} minor=${tap.minor} state=0 args=${tap.args}`);
    const domid = Number(await x.call('VM.get_domid', vm));
    const qemu = st.qemu_dm.find((d: any) => d.vm === uuid);
    expect(qemu.domid).toBe(domid);
    expect(qemu.args).toContain(`-xen-domid ${domid} -m size=1024 -boot order=cd`);
    const sr: string = await x.call('SR.get_uuid', local);
    expect(qemu.args).toContain(`-drive file=/dev/sm/backend/${sr}/${vdiUuid},if=none,id=ide0-hd0`);
    expect(qemu.args).toContain('-device ide-hd,drive=ide0-hd0,bus=ide.0,unit=0');
    expect(st.domains.find((d: any) => d.vm === uuid).devices).toEqual([{ dev: 'hda', path: 'qemu-dm', tapdisk: { pid: tap.pid, minor: tap.minor } }]);
    expect(st.rings.filter((r: any) => r.vm === uuid)).toEqual([]);

    // emulated path: 300 KiB at 1 MiB + an unaligned small write
    const a = pattern(300 * 1024, 1);
    let w = await guestWrite(vm, '0', MiB, a);
    expect(w.status).toBe(200);
    expect(w.body).toMatchObject({ path: 'qemu-dm', device: 'hda', bytes: a.length, status: 'OKAY' });
    w = await guestWrite(vm, 'hda', 100, Buffer.from('hello, emulated IDE'));
    expect(w.body.path).toBe('qemu-dm');
    st = await introspect();
    let qd = st.qemu_dm.find((d: any) => d.vm === uuid).disks[0];
    expect(qd).toMatchObject({ dev: 'hda', id: 'ide0-hd0', unplugged: false });
    expect(qd.bytes_written).toBe(a.length + 512);
    expect(qd.writes).toBe(Math.ceil(a.length / (256 * 512)) + 1);
    const qemuWritten = qd.bytes_written;
    expect((await guestRead(vm, '0', MiB, a.length)).data.equals(a)).toBe(true);

    // PV drivers load: guest metrics, disks unplugged from qemu-dm, a ring per disk
    const r = await fetch(new URL(`/xapi-emu/guest/pv-drivers?${q({ session_id: x.session, vm: uuid })}`, url), { method: 'POST' });
    expect(r.status).toBe(200);
    const pv = (await r.json()) as any;
    expect(pv.guest_metrics).not.toBe(NULL);
    const gm = await x.call('VM.get_guest_metrics', vm);
    expect(gm).toBe(pv.guest_metrics);
    expect(await x.call('VM_guest_metrics.get_PV_drivers_detected', gm)).toBe(true);
    expect(await x.call('VBD.get_device', vbd)).toBe('hda');
    st = await introspect();
    expect(st.domains.find((d: any) => d.vm === uuid).devices[0].path).toBe('blkif');
    expect(st.qemu_dm.find((d: any) => d.vm === uuid).disks[0].unplugged).toBe(true);
    let ring = st.rings.find((x: any) => x.vm === uuid);
    expect(ring).toMatchObject({ dev: 'hda', devid: 768, slots: 32, requests: 0, in_flight: 0 });

    // blkif path: 1 MiB + 5 KiB at 4 MiB
    const b = pattern(MiB + 5 * 1024, 2);
    w = await guestWrite(vm, '0', 4 * MiB, b);
    expect(w.body).toMatchObject({ path: 'blkif', bytes: b.length, status: 'OKAY' });
    st = await introspect();
    ring = st.rings.find((x: any) => x.vm === uuid);
    expect(ring.ops.write).toBe(Math.ceil(b.length / (44 * 1024)));
    expect(ring.bytes_written).toBe(b.length);
    expect(ring.responses.error).toBe(0);
    qd = st.qemu_dm.find((d: any) => d.vm === uuid).disks[0];
    expect(qd.bytes_written).toBe(qemuWritten);
    const back = await guestRead(vm, '0', 4 * MiB, b.length);
    expect(back.path).toBe('blkif');
    expect(back.data.equals(b)).toBe(true);
    // what qemu-dm wrote is there too, read through the ring
    expect((await guestRead(vm, 'hda', 100, 19)).data.toString()).toBe('hello, emulated IDE');

    // FLUSH and DISCARD through the ring
    expect((await guestOp(vm, { op: 'flush' })).body).toMatchObject({ path: 'blkif', status: 'OKAY' });
    expect((await guestOp(vm, { op: 'discard', offset: 0, length: 4096 })).body).toMatchObject({ path: 'blkif', status: 'EOPNOTSUPP' });
    ring = (await introspect()).rings.find((x: any) => x.vm === uuid);
    expect(ring.ops).toMatchObject({ flush_diskcache: 1, discard: 1 });
    expect(ring.responses.eopnotsupp).toBe(1);

    await x.call('VM.clean_shutdown', vm);
    st = await introspect();
    expect(st.tapdisks.find((t: any) => t.vdi === vdiUuid)).toBeUndefined();
    expect(st.qemu_dm.find((d: any) => d.vm === uuid)).toBeUndefined();

    // halted: VM_BAD_POWER_STATE
    const h = await guestWrite(vm, '0', 0, Buffer.alloc(512));
    expect(h.status).toBe(500);
    expect(h.body).toContain(`VM_BAD_POWER_STATE ${vm} running halted`);

    const exp = await fetch(new URL(`/export_raw_vdi?${q({ session_id: x.session, vdi, format: 'raw' })}`, url));
    expect(exp.status).toBe(200);
    const disk = Buffer.from(await exp.arrayBuffer());
    expect(disk.length).toBe(16 * MiB);
    expect(disk.subarray(MiB, MiB + a.length).equals(a)).toBe(true);
    expect(disk.subarray(4 * MiB, 4 * MiB + b.length).equals(b)).toBe(true);
    expect(disk.subarray(100, 119).toString()).toBe('hello, emulated IDE');
    expect(disk.subarray(0, 100).equals(Buffer.alloc(100))).toBe(true);
  });

  it('a guest with PV drivers configured uses blkif from the start; FLUSH on the emulated path', async () => {
    const { vm } = await newVm('dp-pv', { other_config: { 'xapi-emu-pv-drivers': 'true' } });
    await x.call('VM.start', vm, false, false);
    expect((await guestWrite(vm, '0', 0, pattern(8192, 3))).body.path).toBe('blkif');
    await x.call('VM.hard_shutdown', vm);

    const { vm: vm2 } = await newVm('dp-emu-flush');
    await x.call('VM.start', vm2, false, false);
    expect((await guestOp(vm2, { op: 'flush' })).body).toMatchObject({ path: 'qemu-dm', status: 'OKAY' });
    expect((await guestOp(vm2, { op: 'discard', offset: 0, length: 512 })).body).toMatchObject({ path: 'qemu-dm', status: 'EOPNOTSUPP' });
    await x.call('VM.hard_shutdown', vm2);
  });

  it('hotplug with PV drivers: the ring goes with VBD.unplug, a new one comes with VBD.plug', async () => {
    const { vm, vbd } = await newVm('dp-hotplug', { other_config: { 'xapi-emu-pv-drivers': 'true' } });
    const uuid: string = await x.call('VM.get_uuid', vm);
    await x.call('VM.start', vm, false, false);
    expect((await guestWrite(vm, '0', 0, pattern(4096, 4))).body.path).toBe('blkif');
    expect((await introspect()).rings.find((r: any) => r.vm === uuid).requests).toBe(1);
    await x.call('VBD.unplug', vbd);
    expect((await introspect()).rings.filter((r: any) => r.vm === uuid)).toEqual([]);
    const gone = await guestWrite(vm, '0', 0, Buffer.alloc(512));
    expect(gone.status).toBe(500);
    await x.call('VBD.plug', vbd);
    expect((await guestWrite(vm, '0', 8192, pattern(4096, 5))).body.path).toBe('blkif');
    const ring = (await introspect()).rings.find((r: any) => r.vm === uuid);
    expect(ring.requests).toBe(1);
    expect((await guestRead(vm, '0', 0, 4096)).data.equals(pattern(4096, 4))).toBe(true);
    await x.call('VM.hard_shutdown', vm);
  });

  it('errors: no session (401), read-only role (403), bad parameters (400), unknown disk (404), beyond the disk', async () => {
    const { vm } = await newVm('dp-errors');
    await x.call('VM.start', vm, false, false);
    const noSession = await fetch(new URL(`/xapi-emu/introspect`, url));
    expect(noSession.status).toBe(401);
    const ro = await connect(url, 'ro', 'r');
    expect((await guestWrite(vm, '0', 0, Buffer.alloc(512), ro.session)).status).toBe(403);
    expect((await fetch(new URL(`/xapi-emu/introspect?${q({ session_id: ro.session })}`, url))).status).toBe(403);
    expect((await guestOp(vm, { op: 'write', offset: -1 })).status).toBe(400);
    expect((await guestOp(vm, { op: 'frobnicate', offset: 0 })).status).toBe(400);
    expect((await guestWrite(vm, '7', 0, Buffer.alloc(512))).status).toBe(404);
    expect((await guestWrite(vm, '0', 16 * MiB - 256, Buffer.alloc(512))).status).toBe(400);
    const pvHalted = await newVm('dp-halted');
    const r = await fetch(new URL(`/xapi-emu/guest/pv-drivers?${q({ session_id: x.session, vm: pvHalted.vm })}`, url), { method: 'POST' });
    expect(r.status).toBe(500);
    expect(await r.text()).toContain('VM_BAD_POWER_STATE');
    await x.call('VM.hard_shutdown', vm);
  });
});
