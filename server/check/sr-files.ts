// A file SR's directory against its VDI records, as SM's scan would compare them: each VDI has its
// file, each disk file has its VDI or is a hidden base copy waiting for the GC, every file reads as
// a disk. Kept behind fileSrProblems() so that the storage layer's own consistency check can take
// its place.
import { readdir, stat } from 'node:fs/promises';
import type { Rec } from '../../storage/database.js';
import { Vhd } from '../../storage/vhd/index.js';
import type { Emulator } from '../emulator.js';
import { isUuid, srFile, srPath } from '../sm/paths.js';

/** SR types whose VDIs are `<uuid>.vhd` / `<uuid>.raw` files in the SR's mount point (SM's FileSR and EXTSR). */
const FILE_SR_TYPES = new Set(['ext', 'file']);
export const isFileSr = (sr: Rec): boolean => FILE_SR_TYPES.has(String(sr.type));

/** Names under which SM and the imports build a file before renaming it into place. */
const STAGING = /^\..+\.tmp$|\.vhd\.(new|resize)$/;

export interface SrFileOptions {
  /** no operation is in flight: a staging file is one left behind (default false) */
  quiescent?: boolean;
}

/** What is wrong between an SR's files and its VDI records, one sentence each; [] when consistent. */
export async function fileSrProblems(emu: Pick<Emulator, 'db' | 'storageDir'>, srRef: string, opts: SrFileOptions = {}): Promise<string[]> {
  const { db } = emu;
  const sr = db.get('SR', srRef);
  if (!sr) return [`no SR ${srRef}`];
  const dir = srPath(emu as Emulator, String(sr.uuid));
  const vdis = (Array.isArray(sr.VDIs) ? (sr.VDIs as string[]) : []).map((r) => [r, db.get('VDI', r)] as const).filter((x): x is [string, Rec] => !!x[1]);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    const attached = (sr.PBDs as string[]).some((p) => db.get('PBD', p)?.currently_attached === true);
    return attached && vdis.length > 0 ? [`mount point ${String(sr.uuid)} is missing but the SR is attached and has ${vdis.length} VDIs`] : [];
  }
  const problems: string[] = [];
  const files = new Map<string, string>(); // uuid -> file name
  for (const name of names.sort()) {
    const m = /^(.+)\.(vhd|raw)$/.exec(name);
    if (m && isUuid(m[1])) files.set(m[1], name);
    else if (opts.quiescent && STAGING.test(name)) problems.push(`staging file ${name} left behind`);
  }
  const byLocation = new Set<string>();
  for (const [ref, vdi] of vdis) {
    const loc = String(vdi.location);
    byLocation.add(loc);
    if (!files.has(loc)) problems.push(`VDI ${String(vdi.uuid)} (${ref}) has no file ${loc}.vhd or ${loc}.raw`);
  }
  for (const [uuid, name] of files) {
    const file = srFile(emu as Emulator, String(sr.uuid), name);
    const st = await stat(file).catch(() => null);
    if (!st?.isFile()) {
      problems.push(`${name} is not a regular file`);
      continue;
    }
    if (name.endsWith('.raw')) {
      if (!byLocation.has(uuid)) problems.push(`file ${name} has no VDI`);
      continue;
    }
    let hidden = false;
    try {
      const v = await Vhd.open(file, { readOnly: true, parents: false });
      hidden = v.hidden;
      await v.close();
    } catch (e) {
      problems.push(`file ${name} is not a valid VHD (${(e as Error).message})`);
      continue;
    }
    // a hidden file without record is a base copy that nothing uses any more: the GC removes it
    if (!byLocation.has(uuid) && !hidden) problems.push(`file ${name} has no VDI and is not a base copy`);
  }
  return problems;
}
