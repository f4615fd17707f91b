// qemu-dm, the device model of an HVM domain (qemu-upstream-compat through qemu-wrapper): until
// the guest loads PV drivers, its disks are emulated IDE drives backed by the blktap devices of
// the disks' tapdisks (`-drive file=/dev/sm/backend/<sr>/<vdi>` → /dev/xen/blktap-2/tapdev<minor>),
// so emulated disk I/O goes guest → qemu-dm → Tapdisk. When PV drivers load, the guest unplugs the
// emulated disks through the Xen platform device and qemu-dm leaves the I/O path; it keeps running
// (VGA, the platform device) until the domain is destroyed.
import type { Tapdisk } from './tapdisk.js';

/** IDE commands move at most 256 sectors (LBA28 READ/WRITE DMA with a sector count of 0) */
export const IDE_MAX_SECTORS = 256;
const SECTOR = 512;

export interface QemuDiskStats {
  /** IDE READ/WRITE DMA commands served */
  commands: number;
  reads: number;
  writes: number;
  flushes: number;
  bytes_read: number;
  bytes_written: number;
}

export interface QemuDisk {
  /** the Linux name (hda ..) */
  dev: string;
  /** qemu's drive id: ide<bus>-hd<unit> or ide<bus>-cd<unit> */
  id: string;
  /** -drive file= */
  file: string;
  cdrom: boolean;
  tapdisk: Tapdisk | null;
  /** unplugged by the guest's PV drivers (xen-platform unplug): no longer served */
  unplugged: boolean;
  stats: QemuDiskStats;
}

export interface QemuDmSpec {
  domid: number;
  /** MiB */
  memoryMiB: number;
  bootOrder: string;
  vcpus: number;
  maxVcpus: number;
  disks: { dev: string; position: number; cdrom: boolean; backend: { sr: string; vdi: string } | null; tapdisk: Tapdisk | null }[];
}

let nextPid = 7100;

export class QemuDm {
  readonly pid = nextPid++;
  readonly domid: number;
  readonly args: string[];
  readonly disks = new Map<string, QemuDisk>();
  private closed = false;

  constructor(spec: QemuDmSpec) {
    this.domid = spec.domid;
    const n = spec.domid;
    // xenopsd's device.ml (Dm.qemu_args): the fixed part, then one -drive/-device pair per disk
    const args = [
      '-xen-domid', String(n), '-m', `size=${spec.memoryMiB}`, '-boot', `order=${spec.bootOrder}`,
      '-smp', `${spec.vcpus},maxcpus=${spec.maxVcpus}`, '-display', 'none', '-nodefaults', '-S',
      '-qmp', `unix:/var/run/xen/qmp-libxl-${n},server,nowait`, '-qmp', `unix:/var/run/xen/qmp-event-${n},server,nowait`,
      '-vnc', `unix:/var/run/xen/vnc-${n},lock-key-sync=off`,
      '-device', 'xen-platform,addr=3,device-id=0x0001,revision=0x2,class-id=0x0100,subvendor_id=0x5853,subsystem_id=0x0001',
    ];
    for (const d of [...spec.disks].sort((a, b) => a.position - b.position)) {
      const m = /^hd([a-d])$/.exec(d.dev);
      if (!m) continue; // only the first four disks are emulated
      const pos = m[1].charCodeAt(0) - 97;
      const bus = pos >> 1;
      const unit = pos & 1;
      const id = `ide${bus}-${d.cdrom ? 'cd' : 'hd'}${unit}`;
      const file = d.backend ? `/dev/sm/backend/${d.backend.sr}/${d.backend.vdi}` : '';
      args.push('-drive', `file=${file},if=none,id=${id},auto-read-only=off,format=raw${d.cdrom ? ',readonly=on' : ''}`);
      args.push('-device', `${d.cdrom ? 'ide-cd' : 'ide-hd'},drive=${id},bus=ide.${bus},unit=${unit}`);
      this.disks.set(d.dev, {
        dev: d.dev, id, file, cdrom: d.cdrom, tapdisk: d.tapdisk, unplugged: false,
        stats: { commands: 0, reads: 0, writes: 0, flushes: 0, bytes_read: 0, bytes_written: 0 },
      });
    }
    this.args = args;
  }

  /** the disk qemu emulates for `dev`, if it still serves it */
  served(dev: string): QemuDisk | null {
    const d = this.disks.get(dev);
    return d && !d.unplugged && !this.closed ? d : null;
  }

  /** the guest's PV drivers unplug the emulated disks (xen-platform's unplug port) */
  unplugDisks(): void {
    for (const d of this.disks.values()) if (!d.cdrom) d.unplugged = true;
  }

  /** a hot-unplugged disk's tapdisk is gone */
  detach(dev: string): void {
    const d = this.disks.get(dev);
    if (d) d.tapdisk = null;
  }

  /** the emulated disk, opened on the blktap device of the tapdisk serving it now */
  private disk(dev: string, tapdisk: Tapdisk | null): QemuDisk & { tapdisk: Tapdisk } {
    const d = this.served(dev);
    if (!d || !tapdisk) throw new Error(`qemu-dm ${this.domid}: no emulated disk ${dev}`);
    d.tapdisk = tapdisk;
    return d as QemuDisk & { tapdisk: Tapdisk };
  }

  /** IDE READ DMA commands of at most 256 sectors, each a pread on the blktap device */
  async read(dev: string, tapdisk: Tapdisk | null, offset: number, length: number): Promise<Buffer> {
    const d = this.disk(dev, tapdisk);
    const out = Buffer.allocUnsafe(length);
    for (let at = 0; at < length; ) {
      const n = Math.min(IDE_MAX_SECTORS * SECTOR, length - at);
      const b = await d.tapdisk.read(offset + at, n);
      b.copy(out, at);
      d.stats.commands++;
      d.stats.reads++;
      d.stats.bytes_read += n;
      at += n;
    }
    return out;
  }

  /** IDE WRITE DMA commands of at most 256 sectors, each a pwrite on the blktap device */
  async write(dev: string, tapdisk: Tapdisk | null, offset: number, data: Buffer): Promise<void> {
    const d = this.disk(dev, tapdisk);
    if (d.tapdisk.readOnly) throw new Error(`qemu-dm ${this.domid}: ${dev} is read-only`);
    for (let at = 0; at < data.length; ) {
      const n = Math.min(IDE_MAX_SECTORS * SECTOR, data.length - at);
      await d.tapdisk.write(offset + at, data.subarray(at, at + n));
      d.stats.commands++;
      d.stats.writes++;
      d.stats.bytes_written += n;
      at += n;
    }
  }

  /** IDE FLUSH CACHE */
  async flush(dev: string, tapdisk: Tapdisk | null): Promise<void> {
    const d = this.disk(dev, tapdisk);
    await d.tapdisk.flush();
    d.stats.commands++;
    d.stats.flushes++;
  }

  destroy(): void {
    this.closed = true;
  }

  info() {
    return {
      pid: this.pid, domid: this.domid, args: this.args.join(' '),
      disks: [...this.disks.values()].map((d) => ({
        dev: d.dev, id: d.id, file: d.file, cdrom: d.cdrom, unplugged: d.unplugged,
        tapdisk: d.tapdisk ? { pid: d.tapdisk.pid, minor: d.tapdisk.minor, device: d.tapdisk.device } : null,
        ...structuredClone(d.stats),
      })),
    };
  }
}
