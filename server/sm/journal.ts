// SM's journals (fjournaler.py) for the multi-step file operations of file SRs: before touching
// any file an operation records its intent as `<type>_<id>` in the SR directory (written, fsynced,
// directory fsynced), and removes it once the files are whole and the database committed. A
// journal found afterwards means the operation was cut (a crash, or an error whose clean-up did
// not finish); recovery.ts resolves it from what the files and records say, rolling the operation
// forward or back. The names match neither `*.vhd` nor `*.raw`, so scans never see them.
import { open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncPath, unlinkDurably } from './durable.js';
import { isUuid } from './paths.js';

/**
 * create / delete: VDI.create and VDI.destroy of the VDI `id`; clone: a snapshot or clone of the
 * leaf `id` (SM's JRN_CLONE); resize: a VDI.resize of `id`; relink: the children of the coalesced
 * disk `id` being moved onto its parent (cleanup.py's JRN_RELINK); leaf: a leaf-coalesce of `id`
 * into its parent (JRN_LEAF).
 */
export const JOURNAL_TYPES = ['create', 'delete', 'clone', 'resize', 'relink', 'leaf'] as const;
export type JournalType = (typeof JOURNAL_TYPES)[number];

export interface Journal {
  type: JournalType;
  /** the disk the operation is about (a uuid) */
  id: string;
  /** what recovery needs to know (file names, the uuids the operation made up) */
  value: Record<string, string>;
}

const NAME = new RegExp(`^(${JOURNAL_TYPES.join('|')})_(.+)$`);

export const journalName = (type: JournalType, id: string) => `${type}_${id}`;

/** The type and id of a journal file name, or null for any other name. */
export function parseJournalName(name: string): { type: JournalType; id: string } | null {
  const m = NAME.exec(name);
  return m && isUuid(m[2]) ? { type: m[1] as JournalType, id: m[2] } : null;
}

/** Records an intent durably. A journal already there for the same disk is an error (as SM). */
export async function journalCreate(dir: string, j: Journal): Promise<void> {
  const fh = await open(join(dir, journalName(j.type, j.id)), 'wx');
  try {
    await fh.writeFile(`${JSON.stringify(j.value)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsyncPath(dir);
}

export async function journalRemove(dir: string, type: JournalType, id: string): Promise<void> {
  await unlinkDurably(join(dir, journalName(type, id)));
}

/**
 * The journals of an SR directory, given its listing. A journal whose value cannot be read was cut
 * while being written, before its operation touched anything: it comes back with an empty value.
 */
export async function journalsOf(dir: string, names?: string[]): Promise<Journal[]> {
  const out: Journal[] = [];
  for (const name of names ?? (await readdir(dir))) {
    const p = parseJournalName(name);
    if (!p) continue;
    let value: Record<string, string> = {};
    try {
      const v = JSON.parse((await readFile(join(dir, name), 'utf8')).split('\n')[0]) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) value = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)]));
    } catch {
      /* cut while written */
    }
    out.push({ ...p, value });
  }
  return out;
}
