// The simulated guest's disks: which path a disk's I/O takes (qemu-dm's emulated IDE before PV
// drivers, blkfront → blkif ring → tapdisk after), and the guest's block layer on top of it
// (sector-aligned transfers; a partial sector is read, merged and written back, as a page cache
// would do).
import { BlkifDevice, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, SECTOR_SIZE } from './blkif.js';
import { QemuDm } from './qemu-dm.js';
import type { Tapdisk } from './tapdisk.js';
import { XenopsError } from './types.js';
import type { Domain, VbdRuntime, Xenopsd } from './xenopsd.js';

export type GuestPath = 'qemu-dm' | 'blkif';

/** A guest disk request that failed with a blkif status (ERROR, EOPNOTSUPP). */
export class GuestIoError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export const statusName = (s: number): string =>
  s === BLKIF_RSP_OKAY ? 'OKAY' : s === BLKIF_RSP_EOPNOTSUPP ? 'EOPNOTSUPP' : s === BLKIF_RSP_ERROR ? 'ERROR' : String(s);

export interface GuestDisk {
  dev: string;
  domid: number;
  path: GuestPath;
  tapdisk: Tapdisk;
  blkif: BlkifDevice | null;
  qemu: QemuDm | null;
}

/** Xen's device number of a Linux device name (xapi-idl device_number.ml; the ring's handle) */
export function deviceNumberOf(dev: string): number {
  const ide = /^hd([a-d])$/.exec(dev);
  if (ide) {
    const d = ide[1].charCodeAt(0) - 97;
    return ((d < 2 ? 3 : 22) << 8) | ((d % 2) << 6);
  }
  const m = /^xvd([a-z]+)$/.exec(dev);
  if (!m) return 0;
  let disk = 0;
  for (const c of m[1]) disk = disk * 26 + (c.charCodeAt(0) - 96);
  disk -= 1;
  return disk < 16 ? (202 << 8) | (disk << 4) : (1 << 28) | (disk << 8);
}

/** blkfront connects to the device's backend: a new ring (xenstore handshake to Connected). */
export function connectBlkif(dev: string, tapdisk: Tapdisk): BlkifDevice {
  return new BlkifDevice(deviceNumberOf(dev), dev, tapdisk);
}

async function rawRead(g: GuestDisk, offset: number, length: number): Promise<Buffer> {
  if (g.path === 'qemu-dm') return g.qemu!.read(g.dev, g.tapdisk, offset, length);
  const out = Buffer.allocUnsafe(length);
  const st = await g.blkif!.front.read(offset / SECTOR_SIZE, out);
  if (st !== BLKIF_RSP_OKAY) throw new GuestIoError(st, `blkif read of ${g.dev}: ${statusName(st)}`);
  return out;
}

async function rawWrite(g: GuestDisk, offset: number, data: Buffer): Promise<void> {
  if (g.path === 'qemu-dm') return g.qemu!.write(g.dev, g.tapdisk, offset, data);
  const st = await g.blkif!.front.write(offset / SECTOR_SIZE, data);
  if (st !== BLKIF_RSP_OKAY) throw new GuestIoError(st, `blkif write of ${g.dev}: ${statusName(st)}`);
}

export async function guestRead(g: GuestDisk, offset: number, length: number): Promise<Buffer> {
  if (length === 0) return Buffer.alloc(0);
  const start = offset - (offset % SECTOR_SIZE);
  const end = Math.ceil((offset + length) / SECTOR_SIZE) * SECTOR_SIZE;
  const b = await rawRead(g, start, end - start);
  return start === offset && end === offset + length ? b : b.subarray(offset - start, offset - start + length);
}

export async function guestWrite(g: GuestDisk, offset: number, data: Buffer): Promise<void> {
  if (data.length === 0) return;
  const start = offset - (offset % SECTOR_SIZE);
  const end = Math.ceil((offset + data.length) / SECTOR_SIZE) * SECTOR_SIZE;
  if (start === offset && end === offset + data.length) return rawWrite(g, offset, data);
  const buf = Buffer.alloc(end - start);
  (await rawRead(g, start, SECTOR_SIZE)).copy(buf, 0);
  if (end - SECTOR_SIZE > start) (await rawRead(g, end - SECTOR_SIZE, SECTOR_SIZE)).copy(buf, end - SECTOR_SIZE - start);
  data.copy(buf, offset - start);
  return rawWrite(g, start, buf);
}

/** a cache flush: BLKIF_OP_FLUSH_DISKCACHE, or IDE FLUSH CACHE; returns the blkif status */
export async function guestFlush(g: GuestDisk): Promise<number> {
  if (g.path === 'qemu-dm') {
    await g.qemu!.flush(g.dev, g.tapdisk);
    return BLKIF_RSP_OKAY;
  }
  return g.blkif!.front.flush();
}

/** BLKIF_OP_DISCARD (tapback answers EOPNOTSUPP); the emulated IDE disk has no TRIM either */
export async function guestDiscard(g: GuestDisk, offset: number, length: number): Promise<number> {
  if (g.path === 'qemu-dm') return BLKIF_RSP_EOPNOTSUPP;
  return g.blkif!.front.discard(Math.floor(offset / SECTOR_SIZE), Math.ceil(length / SECTOR_SIZE));
}

// ---- the guest's devices on a xenopsd's domains ----
// qemu-dm instances and blkif rings hang on the domain and device records they serve (a new
// domain after a reboot or a migration gets new ones; a re-plugged disk gets a new ring).

const qemus = new WeakMap<Domain, QemuDm>();
const rings = new WeakMap<VbdRuntime, BlkifDevice>();
const ringDisk = new WeakMap<BlkifDevice, Tapdisk>();

/** the device model of an HVM domain (spawned by VM_create_device_model) */
function qemuOf(x: Xenopsd, id: string, d: Domain): QemuDm | null {
  if (!d.qemu) return null;
  let q = qemus.get(d);
  if (!q) {
    const spec = x.internals().metadata.get(id);
    q = new QemuDm({
      domid: d.domid, memoryMiB: Math.round(d.memoryTarget / 1048576), bootOrder: spec?.bootOrder ?? 'cd', vcpus: d.vcpus,
      maxVcpus: d.vcpus,
      disks: [...d.vbds.values()].map((v) => ({
        dev: v.spec.id, position: v.spec.position, cdrom: v.spec.ty === 'CDROM', backend: v.spec.backend, tapdisk: v.tapdisk,
      })),
    });
    // a guest whose PV drivers are already up has unplugged the emulated disks
    if (d.pvDrivers) q.unplugDisks();
    qemus.set(d, q);
  }
  return q;
}

/** blkfront's ring to the device's tapdisk, while the guest's PV drivers run and it is attached */
function ringOf(d: Domain, v: VbdRuntime): BlkifDevice | null {
  const old = rings.get(v);
  if (!d.pvDrivers || !v.active || !v.tapdisk) {
    if (old) {
      old.close();
      rings.delete(v);
    }
    return null;
  }
  if (old && ringDisk.get(old) === v.tapdisk) return old;
  old?.close();
  const r = connectBlkif(v.spec.id, v.tapdisk);
  ringDisk.set(r, v.tapdisk);
  rings.set(v, r);
  return r;
}

/** the path `dev`'s I/O takes now: blkif with PV drivers, qemu-dm's IDE before, else none */
function pathOf(x: Xenopsd, id: string, d: Domain, v: VbdRuntime): GuestPath | null {
  if (!v.active || !v.tapdisk) return null;
  if (ringOf(d, v)) return 'blkif';
  return qemuOf(x, id, d)?.served(v.spec.id) ? 'qemu-dm' : null;
}

/**
 * Runs the simulated guest's I/O on its disk `dev` in the VM's queue (between lifecycle
 * operations, as a domain's I/O stops while xenopsd tears it down). The domain must be running.
 */
export function withGuestDisk<T>(x: Xenopsd, id: string, dev: string, fn: (g: GuestDisk) => Promise<T>): Promise<T> {
  const i = x.internals();
  return i.queued(id, async () => {
    const d = i.domains.get(id);
    if (!d) throw new XenopsError('Bad_power_state', ['Halted', 'Running']);
    if (d.paused) throw new XenopsError('Bad_power_state', ['Paused', 'Running']);
    const v = d.vbds.get(dev);
    if (!v) throw new XenopsError('Does_not_exist', ['VBD', `${id}.${dev}`]);
    const path = pathOf(x, id, d, v);
    if (!path || !v.tapdisk) throw new XenopsError('Device_not_connected');
    return fn({ dev, domid: d.domid, path, tapdisk: v.tapdisk, blkif: path === 'blkif' ? ringOf(d, v) : null, qemu: qemuOf(x, id, d) });
  });
}

/** The guest's PV drivers load: the emulated disks are unplugged from qemu-dm, blkfront connects
 * a ring to each attached disk, and the guest agent reports (pv_drivers_detected, which the API
 * side turns into VM_guest_metrics). Loading them again changes nothing. */
export function loadPvDrivers(x: Xenopsd, id: string): Promise<void> {
  const i = x.internals();
  return i.queued(id, async () => {
    const d = i.domains.get(id);
    if (!d) throw new XenopsError('Bad_power_state', ['Halted', 'Running']);
    if (d.paused) throw new XenopsError('Bad_power_state', ['Paused', 'Running']);
    if (!d.built) throw new XenopsError('Domain_not_built');
    if (d.pvDrivers) return;
    qemuOf(x, id, d);
    d.pvDrivers = true;
    qemus.get(d)?.unplugDisks();
    for (const v of d.vbds.values()) ringOf(d, v);
    i.changedVm(id);
  });
}

/** What `tap-ctl list`, the device models and the rings of a host show. */
export function introspect(x: Xenopsd) {
  const i = x.internals();
  const domains: unknown[] = [];
  const qemu: unknown[] = [];
  const ringsOut: unknown[] = [];
  for (const [id, d] of i.domains) {
    const q = qemuOf(x, id, d);
    if (q) qemu.push({ vm: id, ...q.info() });
    const devices = [...d.vbds.values()].map((v) => {
      const path = pathOf(x, id, d, v);
      const r = rings.get(v);
      if (r && path === 'blkif') ringsOut.push({ vm: id, domid: d.domid, ...r.info() });
      return { dev: v.spec.id, path, tapdisk: v.tapdisk ? { pid: v.tapdisk.pid, minor: v.tapdisk.minor } : null };
    });
    domains.push({ vm: id, domid: d.domid, domain_type: d.domainType, paused: d.paused, pv_drivers: d.pvDrivers, devices });
  }
  return {
    host: x.host.uuid,
    tapdisks: x.blktap.list().map((t) => ({ pid: t.pid, minor: t.minor, state: t.state, args: t.args, device: t.device, vdi: t.vdi, sr: t.sr, read_only: t.readOnly })),
    tap_ctl_list: x.blktap.tapCtlList(),
    domains,
    qemu_dm: qemu,
    rings: ringsOut,
  };
}
