// tapdisk: one user-space process per attached VDI, serving the blktap2 device
// /dev/xen/blktap-2/tapdev<minor> (and, for PV guests, tapback's blkif ring) from the VDI's file.
// Here a Tapdisk is an object with tapdisk's identity (pid, blktap minor, state bits, `type:path`
// args as `tap-ctl list` prints them) and the I/O it does on the disk. Like the real one it keeps
// the file open, and SM can pause it (tap_pause) while it changes the VDI's chain: each request
// takes the VDI's I/O registration (snapshots, resizes and the GC wait for it), and the file is
// opened again when SM has renamed or replaced it in between (tap-ctl unpause -a <new path>).
import type { VdiIo } from '../sm/driver.js';
import type { StorageBackend } from './types.js';

/** tapdisk state bits (blktap include/tapdisk-message.h, drivers/tapdisk-vbd.h) */
export const TD_VBD_DEAD = 0x1;
export const TD_VBD_CLOSED = 0x2;
export const TD_VBD_PAUSED = 0x20;

/** Datapath faults (the emulator's fault rules): whether a request moving `bytes` of a VDI (by
 * uuid) fails with an I/O error. Null while no rule exists. */
export const vdiIoFaults: { fails: ((vdi: string, bytes: number) => boolean) | null } = { fails: null };

export interface TapdiskInfo {
  pid: number;
  minor: number;
  state: number;
  args: string;
  device: string;
  vdi: string;
  sr: string;
  readOnly: boolean;
}

/** The blktap minors and tapdisk pids of one host. */
export class Blktap {
  private readonly minors = new Map<number, Tapdisk>();
  private nextPid = 4200;

  allocate(t: Tapdisk): number {
    let minor = 0;
    while (this.minors.has(minor)) minor++;
    this.minors.set(minor, t);
    return minor;
  }

  pid(): number {
    return this.nextPid++;
  }

  free(minor: number): void {
    this.minors.delete(minor);
  }

  list(): Tapdisk[] {
    return [...this.minors.values()];
  }

  /** `tap-ctl list` as SM reads it (not on a tty) */
  tapCtlList(): string {
    return this.list()
      .map((t) => `pid=${t.pid} minor=${t.minor} state=${t.state === 0 ? '0' : `0x${t.state.toString(16)}`} args=${t.args}`)
      .join('\n');
  }
}

export class Tapdisk {
  pid = 0;
  minor = -1;
  state = 0;
  private io: VdiIo | null = null;
  private fp = '';
  private path = '';
  private type: 'vhd' | 'aio' = 'vhd';
  /** requests run one after the other */
  private queue: Promise<unknown> = Promise.resolve();
  private unpaused: (() => void)[] = [];
  /** what tapdisk's stats report (blktap3's tapdisk_stats): requests and bytes done, and the
   * microseconds they took, read by the metrics daemon */
  readonly stats = { rd_reqs: 0, rd_bytes: 0, rd_usecs: 0, wr_reqs: 0, wr_bytes: 0, wr_usecs: 0 };
  /** the mirror of a storage migration (tapdisk's mirror mode, mirror.ts): told of every write
   * accepted from now, before it reaches the image */
  mirror: { written(offset: number, length: number): void } | null = null;

  private constructor(private readonly blktap: Blktap, private readonly storage: () => StorageBackend, readonly sr: string, readonly vdi: string, readonly readOnly: boolean) {}

  /** tap-ctl create -a vhd:<path>: allocate a minor, spawn, attach, open. */
  static async create(blktap: Blktap, storage: () => StorageBackend, sr: string, vdi: string, readOnly: boolean): Promise<Tapdisk> {
    const t = new Tapdisk(blktap, storage, sr, vdi, readOnly);
    await t.open();
    t.pid = blktap.pid();
    t.minor = blktap.allocate(t);
    return t;
  }

  private async open(): Promise<void> {
    const s = this.storage();
    const { io, path, type } = await s.open(this.sr, this.vdi, this.readOnly);
    this.io = io;
    this.path = path ?? '';
    this.type = type;
    this.fp = await s.fingerprint(this.sr, this.vdi);
  }

  get args(): string {
    return `${this.type}:${this.path}`;
  }

  get device(): string {
    return `/dev/xen/blktap-2/tapdev${this.minor}`;
  }

  get virtualSize(): number {
    return this.io?.virtualSize ?? 0;
  }

  info(): TapdiskInfo {
    return { pid: this.pid, minor: this.minor, state: this.state, args: this.args, device: this.device, vdi: this.vdi, sr: this.sr, readOnly: this.readOnly };
  }

  /** tap-ctl pause: requests wait until unpause */
  pause(): void {
    this.state |= TD_VBD_PAUSED;
  }

  unpause(): void {
    this.state &= ~TD_VBD_PAUSED;
    for (const w of this.unpaused.splice(0)) w();
  }

  private request<T>(write: boolean, fn: (io: VdiIo) => Promise<T>, sync = true, bytes = 0): Promise<T> {
    const run = async () => {
      if (this.state & (TD_VBD_DEAD | TD_VBD_CLOSED)) throw new Error(`tapdisk ${this.pid}: closed`);
      while (this.state & TD_VBD_PAUSED) await new Promise<void>((r) => this.unpaused.push(r));
      if (vdiIoFaults.fails !== null && vdiIoFaults.fails(this.vdi, bytes)) throw new Error(`tapdisk ${this.pid}: I/O error (EIO) on ${this.args}`);
      const s = this.storage();
      const release = await s.hold(this.vdi, !this.readOnly);
      try {
        if ((await s.fingerprint(this.sr, this.vdi)) !== this.fp) {
          // SM changed the file under us (snapshot, resize, coalesce): reopen it
          await this.io?.close().catch(() => undefined);
          this.io = null;
          await this.open();
        }
        if (!this.io) throw new Error(`tapdisk ${this.pid}: I/O error (no image behind ${this.args})`);
        const r = await fn(this.io);
        if (write) {
          if (sync) await this.io!.flush();
          this.fp = await s.fingerprint(this.sr, this.vdi);
        }
        return r;
      } finally {
        release();
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request(false, (io) => this.counted(false, length, () => io.read(offset, length)), true, length);
  }

  private async counted<T>(write: boolean, bytes: number, fn: () => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    const r = await fn();
    const us = Number((process.hrtime.bigint() - t0) / 1000n);
    const s = this.stats;
    if (write) (s.wr_reqs++, (s.wr_bytes += bytes), (s.wr_usecs += us));
    else (s.rd_reqs++, (s.rd_bytes += bytes), (s.rd_usecs += us));
    return r;
  }

  /** `sync: false` (a blkif WRITE without a barrier): written to the image, made durable by the
   * next flush (BLKIF_OP_FLUSH_DISKCACHE / WRITE_BARRIER), as a guest's cache semantics allow */
  write(offset: number, data: Uint8Array, opts: { sync?: boolean } = {}): Promise<void> {
    if (this.readOnly) return Promise.reject(new Error(`tapdisk ${this.pid}: read-only`));
    this.mirror?.written(offset, data.length);
    return this.request(true, (io) => this.counted(true, data.length, () => io.write(offset, data)), opts.sync ?? true, data.length);
  }

  /** a flush request (BLKIF_OP_FLUSH_DISKCACHE): the image's metadata and data to stable storage */
  flush(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    return this.request(true, async () => undefined, true);
  }

  /** tap-ctl destroy: close the image, free the minor. */
  async destroy(): Promise<void> {
    const close = async () => {
      this.state |= TD_VBD_CLOSED | TD_VBD_DEAD;
      const io = this.io;
      this.io = null;
      await io?.close().catch(() => undefined);
      this.blktap.free(this.minor);
    };
    this.unpause();
    const p = this.queue.then(close, close);
    this.queue = p.catch(() => undefined);
    await p;
  }
}
