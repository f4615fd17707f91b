// Storage motion (xapi's storage_migrate.ml / storage_smapiv1_migrate.ml, the SR side of
// VM.migrate_send) and VDI.pool_migrate (Xapi_vm_migrate.vdi_pool_migrate, the checks of
// message_forwarding.ml). A disk of a running VM moves in four steps: the mirror starts on its
// tapdisk (xenopsd/mirror.ts), SM snapshots it, the snapshot is copied into a new VDI on the
// destination SR (then destroyed), and when xenopsd moves the domain the chunks written since the
// mirror started are copied again, between the close of the old tapdisk and the open of the new one.
// A disk of a halted VM (or a read-only one) is copied. The old VDI is destroyed once the VM runs
// on the new one.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { openVdi, refreshVdi, featuresOf } from '../sm/index.js';
import { BLOCK_SIZE } from '../../storage/vhd/index.js';
import { Mirror, type Tapdisk } from '../xenopsd/index.js';
import { vdiIoFaults } from '../xenopsd/tapdisk.js';
import { recordOf } from './generic.js';
import { inSubtask, updateAllowedOperations } from './operations.js';
import { callMessage } from './vm-snapshot.js';

/** simulated throughput of a disk copy between SRs (as VDI.copy's) */
const COPY_BYTES_PER_SECOND = 200 * 1024 * 1024;

/** One disk of a migration: where it goes, and once prepared, the VDI it became there. */
export interface DiskMove {
  vdi: string;
  sr: string;
  size: number;
  /** the Linux device of its VBD on the running VM, when mirrored */
  device?: string;
  dest?: string;
  mirror?: Mirror;
}

const isZero = (b: Buffer) => {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
};

/**
 * Copies `ranges` of `src` into `dst` (the whole disk when null: blocks no file of the source holds
 * and zero blocks are skipped, the destination being new). Reports the bytes done.
 */
export async function copyVdiData(emu: Emulator, src: string, dst: string, ranges: [number, number][] | null, done: (bytes: number) => void = () => undefined,
  datapathOf = src): Promise<void> {
  // the copy is part of the datapaths of the disk it moves (`datapathOf`: the source, when `src` is
  // its snapshot) and of the destination: a datapath fault on either fails it
  const uuids = [String(recordOf(emu, 'VDI', datapathOf).uuid), String(recordOf(emu, 'VDI', dst).uuid)];
  const io = (bytes: number) => {
    const fails = vdiIoFaults.fails;
    if (fails && uuids.some((u) => fails(u, bytes))) throw new XapiError('VDI_IO_ERROR', ['Device I/O errors']);
  };
  const s = await openVdi(emu, src, { readOnly: true });
  try {
    const d = await openVdi(emu, dst, { readOnly: false });
    try {
      const size = Math.min(s.virtualSize, d.virtualSize);
      const whole = ranges === null;
      const todo = ranges ?? [[0, size] as [number, number]];
      for (const [start, length] of todo) {
        const end = Math.min(start + length, size);
        for (let off = start; off < end; ) {
          const n = Math.min(BLOCK_SIZE - (off % BLOCK_SIZE), end - off);
          const skip = whole && s.hasData && !s.hasData(Math.floor(off / BLOCK_SIZE));
          if (!skip) {
            io(n);
            const data = await s.read(off, n);
            if (!(whole && isZero(data))) await d.write(off, data);
            await emu.clock.sleep(n / COPY_BYTES_PER_SECOND);
          }
          off += n;
          done(n);
        }
      }
      await d.flush();
    } finally {
      await d.close().catch(() => undefined);
    }
  } finally {
    await s.close().catch(() => undefined);
  }
  await refreshVdi(emu, dst).catch(() => undefined);
}

/**
 * sm_config key of the VDIs a storage migration makes: the destination VDI (receive_start) and the
 * snapshot of the source (its mirror's base), valued with the mirror's id. It goes from the
 * destination once the VM is on it (receive_finalize); the snapshot is destroyed. A VDI that still
 * has it when the emulator starts belongs to a migration that was cut (migrate-recovery.ts).
 */
export const BASE_MIRROR = 'base_mirror';

/** Storage_migrate's mirror id: the SR and location of the disk it moves */
export const mirrorId = (emu: Emulator, vdi: string): string => {
  const r = recordOf(emu, 'VDI', vdi);
  return `${recordOf(emu, 'SR', String(r.SR)).uuid}/${r.location}`;
};

/** The destination VDI of a move: a new VDI on the destination SR, described as the source. */
async function createDestination(call: Call, src: Rec, sr: string, id: string): Promise<string> {
  return inSubtask(call, 'VDI.create', (sub) => callMessage<string>(sub, 'VDI.create', {
    name_label: src.name_label, name_description: src.name_description, SR: sr, virtual_size: src.virtual_size, type: src.type,
    sharable: src.sharable, read_only: src.read_only, other_config: { ...(src.other_config as object) }, xenstore_data: { ...(src.xenstore_data as object) },
    sm_config: { [BASE_MIRROR]: id }, tags: [...(src.tags as string[])],
  }));
}

/** receive_finalize: the destination VDI is the disk now, no longer part of a migration */
export function receiveFinalize(emu: Emulator, vdi: string): void {
  const sm = emu.db.get('VDI', vdi)?.sm_config as Record<string, string> | undefined;
  if (!sm || !(BASE_MIRROR in sm)) return;
  const rest = { ...sm };
  delete rest[BASE_MIRROR];
  emu.db.update('VDI', vdi, { sm_config: rest });
}

export async function destroyVdi(call: Call, vdi: string): Promise<void> {
  if (!call.emu.db.has('VDI', vdi)) return;
  await inSubtask(call, 'VDI.destroy', (sub) => callMessage(sub, 'VDI.destroy', vdi));
}

/**
 * Storage_migrate.start for one disk (or DATA.copy when `tapdisk` is null: a disk nobody writes):
 * the destination VDI, the mirror, the snapshot and its copy. Undoes its work when it fails.
 */
export async function prepareMove(call: Call, m: DiskMove, tapdisk: Tapdisk | null, done: (bytes: number) => void): Promise<void> {
  const { emu } = call;
  const src = recordOf(emu, 'VDI', m.vdi);
  const id = mirrorId(emu, m.vdi);
  m.dest = await createDestination(call, src, m.sr, id);
  let snapshot: string | null = null;
  try {
    if (tapdisk) {
      m.mirror = await Mirror.start(tapdisk);
      snapshot = await inSubtask(call, 'VDI.snapshot', (sub) => callMessage<string>(sub, 'VDI.snapshot', m.vdi, { [BASE_MIRROR]: id }));
    }
    await copyVdiData(emu, snapshot ?? m.vdi, m.dest, null, done, m.vdi);
  } catch (e) {
    await abandonMove(call, m);
    throw tapdisk ? mirrorFailed(e, m.vdi) : e;
  } finally {
    if (snapshot) await destroyVdi(call, snapshot).catch(() => undefined);
  }
}

/** A failure of the mirror (its I/O, its machinery) is MIRROR_FAILED; an API error (an SR full
 * ...) stays itself. */
function mirrorFailed(e: unknown, vdi: string): unknown {
  return e instanceof XapiError && e.code !== 'VDI_IO_ERROR' ? e : new XapiError('MIRROR_FAILED', [vdi]);
}

/** The chunks written since the mirror started, copied from the source (its tapdisk closed). */
export async function finishMove(emu: Emulator, m: DiskMove): Promise<void> {
  if (!m.mirror || !m.dest) return;
  m.mirror.stop();
  await copyVdiData(emu, m.vdi, m.dest, m.mirror.ranges(m.size));
}

/** The move did not happen: the mirror stops, the destination VDI goes. */
export async function abandonMove(call: Call, m: DiskMove): Promise<void> {
  m.mirror?.stop();
  if (m.dest) await destroyVdi(call, m.dest).catch(() => undefined);
  m.dest = undefined;
}

/** The SR capabilities a storage migration needs (assert_sr_support_operations); `sr` names the
 * SR whose type is checked. */
export function assertSrSupports(emu: Emulator, sr: string, ops: string[]): void {
  const rec = emu.db.get('SR', sr);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  const features = featuresOf(emu, String(rec.type));
  const has = (f: string) => Object.prototype.hasOwnProperty.call(features, f);
  // Smint.Feature.has_capability: an SR that can mirror out can take a mirror in
  const missing = ops.filter((o) => !has(o) && !(o === 'VDI_MIRROR_IN' && has('VDI_MIRROR')));
  if (missing.length) throw new XapiError('SR_DOES_NOT_SUPPORT_MIGRATION', [sr, missing.join(';')]);
}


/** A failure of the storage interface, as storage_interface's errors (a variant and its argument). */
export class StorageError extends Error {
  constructor(readonly variant: string, readonly arg: string) {
    super(`${variant}: ${arg}`);
  }
}

/** (a VDI of this SR, the source's snapshot it is a copy of): locations, as the storage interface names VDIs */
export type SnapshotPair = [string, { vdi?: string; snapshot_time?: string }];

/**
 * SR.update_snapshot_info_dest (storage_mux), the destination's half of update_snapshot_info: the
 * copies of a disk's snapshots become snapshots of the copy of the disk (`vdi`), taken when the
 * source's were.
 */
export function updateSnapshotInfoDest(emu: Emulator, srUuid: string, vdi: string, pairs: SnapshotPair[]): void {
  const sr = emu.db.refByUuid('SR', srUuid);
  if (sr === undefined) throw new StorageError('Sr_not_attached', srUuid);
  const find = (location: unknown): string => {
    for (const v of (emu.db.get('SR', sr)!.VDIs as string[]) ?? []) if (emu.db.get('VDI', v)?.location === location) return v;
    throw new StorageError('Vdi_does_not_exist', String(location));
  };
  const leaf = find(vdi);
  const updates = pairs.map((p) => {
    if (!Array.isArray(p) || typeof p[1] !== 'object' || p[1] === null) throw new StorageError('Internal_error', 'bad snapshot pair');
    return { self: find(p[0]), snapshot_time: String(p[1].snapshot_time ?? '19700101T00:00:00Z') };
  });
  for (const u of updates) {
    emu.db.update('VDI', u.self, { snapshot_time: u.snapshot_time, snapshot_of: leaf, is_a_snapshot: true });
    updateAllowedOperations(emu, 'VDI', u.self);
  }
}
