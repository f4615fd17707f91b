// The consistency of a file SR (ext, file) with the database, as an invariant: what a crash, a
// failed operation or a race must never leave behind.
import { readdir } from 'node:fs/promises';
import type { Emulator } from '../emulator.js';
import { driverFor } from './driver.js';
import { DISK_NAME, rawName, readDisk, vhdName, type DiskFile } from './file-sr.js';
import { isOperationLeftover } from './recovery.js';
import { isUuid, srFile, srPath } from './paths.js';

/**
 * The inconsistencies between a file SR's directory and its VDI records, one sentence each; an
 * empty list when there is none. Checked:
 *  - every VDI record of the SR has its `<location>.vhd` (or `.raw`) file, and that file is a
 *    readable disk, visible unless the record is a base copy (managed false);
 *  - every disk file has a VDI record, or is a hidden VHD (a base copy, or garbage the GC removes);
 *  - every VHD's parent is a file of the SR;
 *  - no journal of an unfinished operation, no temporary file, no OLD_ leaf is left.
 * SRs of other types, and SRs with no attached PBD (no mount point), have nothing to check: [].
 * Reads every VHD header of the SR: meant for tests and the invariant checker, not hot paths.
 */
export interface SrProblemOptions {
  /** report journals and temporary files (default true); false while operations may be in flight */
  leftovers?: boolean;
}

export async function fileSrProblems(emu: Pick<Emulator, 'db' | 'storageDir'>, srRef: string, opts: SrProblemOptions = {}): Promise<string[]> {
  const sr = emu.db.get('SR', srRef);
  if (!sr || !driverFor(String(sr.type))?.vhdBased) return [];
  const attached = (sr.PBDs as string[]).some((p) => emu.db.get('PBD', p)?.currently_attached === true);
  if (!attached) return [];
  const srUuid = String(sr.uuid);
  const problems: string[] = [];
  let names: string[];
  try {
    names = await readdir(srPath(emu, srUuid));
  } catch {
    return [`SR ${srUuid}: its directory is missing while a PBD is attached`];
  }

  const disks = new Map<string, DiskFile>();
  for (const name of names.sort()) {
    if (isOperationLeftover(name)) {
      if (opts.leftovers !== false) problems.push(`SR ${srUuid}: ${name} left by an unfinished operation`);
      continue;
    }
    const m = DISK_NAME.exec(name);
    if (!m || !isUuid(m[1])) continue;
    try {
      const d = await readDisk(srFile(emu, srUuid, name), m[1], m[2] as 'vhd' | 'raw');
      if (d && !(d.kind === 'raw' && disks.has(d.uuid))) disks.set(d.uuid, d);
    } catch (e) {
      problems.push(`SR ${srUuid}: ${name} is not a valid disk (${e instanceof Error ? e.message : String(e)})`);
    }
  }

  const recorded = new Set<string>();
  for (const v of sr.VDIs as string[]) {
    const r = emu.db.get('VDI', v);
    if (!r) {
      problems.push(`SR ${srUuid}: VDIs lists ${v}, which does not exist`);
      continue;
    }
    const loc = String(r.location);
    recorded.add(loc);
    // a cbt_metadata VDI (VDI.data_destroy) has only its CBT log
    if (r.type === 'cbt_metadata' && !disks.has(loc)) {
      if (!names.includes(`${loc}.cbtlog`)) problems.push(`SR ${srUuid}: cbt_metadata VDI ${r.uuid} (${v}) has no CBT log ${loc}.cbtlog`);
      continue;
    }
    const d = disks.get(loc);
    if (!d) {
      if (!names.includes(vhdName(loc)) && !names.includes(rawName(loc))) problems.push(`SR ${srUuid}: VDI ${r.uuid} (${v}) has no file ${vhdName(loc)}`);
      continue;
    }
    if (d.hidden && r.managed === true) problems.push(`SR ${srUuid}: VDI ${r.uuid} (${v}) is managed but its file is hidden`);
  }
  for (const d of disks.values()) {
    if (!recorded.has(d.uuid) && !d.hidden) problems.push(`SR ${srUuid}: ${d.kind === 'raw' ? rawName(d.uuid) : vhdName(d.uuid)} has no VDI record`);
    if (d.parent && !disks.has(d.parent)) problems.push(`SR ${srUuid}: the parent ${d.parent} of ${vhdName(d.uuid)} is missing`);
  }
  return problems;
}
