// The SM driver interface: what xapi asks of an SMAPIv1 plugin (sr_create, sr_attach, sr_scan,
// vdi_create, vdi_snapshot ...), one implementation per SR type (file-sr.ts for ext and file,
// iso-sr.ts, udev-sr.ts, dummy-sr.ts). Drivers work on files and report what they found; the
// database side (SM's db_introduce / db_forget / set_* calls back into xapi) is in sm.ts.
import { open, type FileHandle } from 'node:fs/promises';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { XapiError } from '../dispatch/errors.js';
import { SM_ERROR_CODES } from './error-codes.js';

/** The SR an operation runs on, with the device_config of the PBD it runs through. */
export interface SrCtx {
  emu: Emulator;
  /** SR ref */
  sr: string;
  uuid: string;
  type: string;
  rec: Rec;
  /** device_config of the PBD used (empty for an SR without PBD) */
  dconf: Record<string, string>;
  /** the SR's mount point, <storage>/sr/<uuid> */
  path: string;
}

/** A disk as SM sees it (SM's VDI object): what db_introduce / _db_update write. */
export interface DiskInfo {
  /** the VDI uuid (for VHD SRs the same as the location) */
  uuid: string;
  location: string;
  name_label: string;
  name_description: string;
  virtual_size: number;
  physical_utilisation: number;
  read_only: boolean;
  managed: boolean;
  /** blktap's hidden flag (a base copy, or garbage) */
  hidden: boolean;
  /** uuid of the parent disk, or null */
  parent: string | null;
  /** sm_config keys to set (a null value removes the key) */
  sm_config: Record<string, string | null>;
  /** VDI.type when the driver decides it (ISO images: user) */
  type?: string;
}

export interface SrStat {
  physical_size: number;
  physical_utilisation: number;
  virtual_allocation: number;
}

export interface ScanResult {
  disks: DiskInfo[];
  stat: SrStat;
  /** keep VDI records whose disk is gone (the tools SR marks them missing instead) */
  keepGone?: boolean;
  /** locations of disks whose file is there but cannot be read: their records are kept */
  unreadable?: string[];
}

export interface SnapshotResult {
  /** the new leaf (DOUBLE), else the base copy */
  result: DiskInfo;
  /** the base copy introduced, if any */
  base: DiskInfo | null;
  /** the source disk after the operation (its new vhd-parent) */
  source: DiskInfo;
}

/** Byte access to a VDI's virtual disk: a Vhd (through its chain) or a raw file. */
export interface VdiIo {
  readonly virtualSize: number;
  /** false when the 2 MiB block `index` certainly reads as zeros (no file of a VHD chain holds it) */
  hasData?(index: number): boolean;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export type SnapshotKind = 'single' | 'double' | 'internal';

export interface SrDriver {
  readonly types: readonly string[];
  /** SR.create: make a new SR on the device described by ctx.dconf */
  create(ctx: SrCtx, physicalSize: number): Promise<void>;
  /** SR.destroy (sr_delete): remove the SR's contents; fails if disks remain */
  delete(ctx: SrCtx): Promise<void>;
  /** PBD.plug (sr_attach): make the mount point available */
  attach(ctx: SrCtx): Promise<void>;
  /** PBD.unplug (sr_detach) */
  detach(ctx: SrCtx): Promise<void>;
  /** SR.probe: SM's XML answer */
  probe(emu: Emulator, type: string, dconf: Record<string, string>, smConfig: Record<string, string>): Promise<string>;
  /** SR.scan: the disks on the device and the SR's sizes */
  scan(ctx: SrCtx): Promise<ScanResult>;
  /** SR.update: the SR's sizes */
  update(ctx: SrCtx): Promise<SrStat>;
  vdiCreate(ctx: SrCtx, req: { uuid: string; size: number; smConfig: Record<string, string> }): Promise<DiskInfo>;
  /** removes the disk's data; `vdi` is the VDI record. `dataOnly` (VDI.data_destroy): the data
   * goes, the CBT log stays. */
  vdiDelete(ctx: SrCtx, vdi: Rec, opts?: { dataOnly?: boolean }): Promise<void>;
  /** VDI.snapshot / VDI.clone (sm vdi_snapshot / vdi_clone); `kind` from driver_params:type.
   * `newUuid` is asked for the base copy's uuid first, then for a DOUBLE snapshot's new leaf. */
  vdiSnapshot(ctx: SrCtx, vdi: Rec, opts: { clone: boolean; kind: SnapshotKind }, newUuid: () => string): Promise<SnapshotResult>;
  /** grows a disk; returns its new state */
  vdiResize(ctx: SrCtx, vdi: Rec, size: number): Promise<DiskInfo>;
  vdiIntroduce(ctx: SrCtx, req: { uuid: string; location: string; smConfig: Record<string, string> }): Promise<DiskInfo>;
  /** the disk's current state (vdi_update / VDI.stat) */
  vdiStat(ctx: SrCtx, vdi: Rec): Promise<DiskInfo>;
  /** the file holding the VDI (a VHD leaf or a raw image), or null when it has none */
  vdiPath(ctx: SrCtx, vdi: Rec): string | null;
  /** opens the VDI for I/O (a Vhd for VHD disks) */
  openVdi(ctx: SrCtx, vdi: Rec, opts: { readOnly: boolean }): Promise<VdiIo>;
  /** whether the disks are VHD chains the GC looks after */
  readonly vhdBased: boolean;
}

const drivers = new Map<string, SrDriver>();

export function registerDriver(d: SrDriver): void {
  for (const t of d.types) drivers.set(t, d);
}

export function driverFor(type: string): SrDriver | undefined {
  return drivers.get(type.toLowerCase());
}

// ---- SM errors, as xapi reports them ----

/** An SM plugin failure (SM's XenError): a Fault(code, "<description>[ [opterr=...]]"), with
 * what the plugin printed on stderr (a probe's list of exports, targets or LUNs). */
export class SmError extends Error {
  constructor(readonly key: string, readonly code: number, readonly text: string, readonly stderr = '') {
    super(text);
  }
}

export function smError(key: string, opterr?: string, stderr?: string): SmError {
  const [code, desc] = SM_ERROR_CODES[key] ?? [1, `Error reporting error, unknown key ${key}`];
  return new SmError(key, code, opterr === undefined ? desc : `${desc} [opterr=${opterr}]`, stderr);
}

/** Thrown by a driver for a method its SM plugin does not implement (Fault 38). */
export const unimplemented = () => smError('Unimplemented');

/**
 * xapi's view of an SM failure (sm_exec.ml): faults 39, 24, 16 and 144 become SR_NOT_EMPTY,
 * VDI_IN_USE, SR_DEVICE_IN_USE and VDI_MISSING; any other code n becomes
 * SR_BACKEND_FAILURE_<n> ["", text, stderr]. Fault 38 is reported by each caller its own way
 * (`onUnimplemented`).
 */
export function toXapiError(e: unknown, ctx: { sr?: string; vdi?: string; onUnimplemented?: () => XapiError } = {}): unknown {
  if (!(e instanceof SmError)) return e;
  switch (e.code) {
    case 38:
      return ctx.onUnimplemented?.() ?? new XapiError('SR_OPERATION_NOT_SUPPORTED', [ctx.sr ?? '']);
    case 39:
      return new XapiError('SR_NOT_EMPTY', []);
    case 24:
      return new XapiError('VDI_IN_USE', []);
    case 16:
      return new XapiError('SR_DEVICE_IN_USE', []);
    case 144:
      return new XapiError('VDI_MISSING', [ctx.sr ?? '', ctx.vdi ?? '']);
    default:
      return new XapiError(`SR_BACKEND_FAILURE_${e.code}`, ['', e.text, e.stderr]);
  }
}

// ---- the SR lock (SM's per-SR lock: one SM operation at a time on an SR, the GC included) ----

class AsyncLock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

const locks = new WeakMap<Emulator, Map<string, AsyncLock>>();

export function withSrLock<T>(emu: Emulator, srUuid: string, fn: () => Promise<T>): Promise<T> {
  let m = locks.get(emu);
  if (!m) locks.set(emu, (m = new Map()));
  let l = m.get(srUuid);
  if (!l) m.set(srUuid, (l = new AsyncLock()));
  return l.run(fn);
}

// ---- raw files ----

/** A raw image file as a VdiIo (ISO images, `.raw` VDIs). */
export class RawFile implements VdiIo {
  private constructor(private fh: FileHandle | null, readonly virtualSize: number, private readonly readOnly: boolean) {}

  static async open(path: string, readOnly: boolean): Promise<RawFile> {
    const fh = await open(path, readOnly ? 'r' : 'r+');
    const size = (await fh.stat()).size;
    return new RawFile(fh, size, readOnly);
  }

  private handle(): FileHandle {
    if (!this.fh) throw new Error('closed');
    return this.fh;
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.virtualSize) {
      throw new RangeError(`range ${offset}+${length} beyond the size ${this.virtualSize}`);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length);
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle().read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.readOnly) throw new Error('opened read-only');
    this.check(offset, data.length);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle().write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.handle().sync();
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }
}
