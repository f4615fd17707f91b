// Imports in progress, recorded in the database before the first object is made and forgotten once
// the import has completed or been undone. An import cut by a stop of the emulator (a kill) is
// undone when it starts again: everything tagged with the import's task (VMs' other_config and
// networks' other_config `import_task`, VDIs' sm_config `import_task`, as xapi tags them) is
// destroyed, so that no half-imported VM or disk survives. (The SR layer keeps a VDI's sm_config
// its own, so the VDIs and networks made are recorded here too, as they are made.)
import type { Emulator } from '../emulator.js';
import { dispatch } from '../dispatch/dispatch.js';
import { createSession, destroySession } from '../api/session.js';
import { smReady } from '../sm/index.js';
import { NULL_REF } from '../../storage/database.js';

const KEY = 'xva.imports_in_progress';

/** task → the [class, ref] of the objects it made so far */
type Journal = Record<string, [string, string][]>;

function pending(emu: Emulator): Journal {
  try {
    const v = JSON.parse(emu.db.getMeta(KEY) ?? '{}');
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Journal) : {};
  } catch {
    return {};
  }
}

/** The import run by `task` is about to make objects. */
export function beginImport(emu: Emulator, task: string): void {
  emu.db.setMeta(KEY, JSON.stringify({ ...pending(emu), [task]: [] }));
}

/** The import run by `task` made `ref`. */
export function importMade(emu: Emulator, task: string, cls: string, ref: string): void {
  const j = pending(emu);
  if (!j[task]) return;
  j[task].push([cls, ref]);
  emu.db.setMeta(KEY, JSON.stringify(j));
}

/** The import run by `task` completed, or was undone. */
export function endImport(emu: Emulator, task: string): void {
  const j = pending(emu);
  if (!(task in j)) return;
  delete j[task];
  emu.db.setMeta(KEY, JSON.stringify(j));
}

const taggedBy = (m: unknown, tasks: Set<string>) => tasks.has(String((m as Record<string, string> | undefined)?.import_task));

const undoing = new WeakMap<Emulator, Promise<void>>();

/** Resolves once the imports cut by the last stop are undone. */
export function cutImportsUndone(emu: Emulator): Promise<void> {
  return undoing.get(emu) ?? Promise.resolve();
}

/** At start: the imports the last run left unfinished are undone (once the storage is up). */
export function undoCutImports(emu: Emulator): void {
  const journal = pending(emu);
  const tasks = new Set(Object.keys(journal));
  if (tasks.size === 0) return;
  const made = (cls: string) => new Set(Object.values(journal).flatMap((l) => l.filter(([c]) => c === cls).map(([, r]) => r)));
  // (once the SRs are up: VDI.destroy is an SM call, and would wait for this very work)
  const done = smReady(emu).then(async () => {
    const session = createSession(emu, emu.master, { uname: 'root', superuser: true }, 'import recovery');
    const call = (method: string, ...params: unknown[]) => dispatch(emu, method, [session, ...params], { host: emu.master });
    try {
      for (const [vm, row] of [...emu.db.table('VM')]) {
        if (!taggedBy(row.rec.other_config, tasks) && !made('VM').has(vm)) continue;
        emu.db.update('VM', vm, { current_operations: {}, power_state: 'Halted', suspend_VDI: NULL_REF });
        await call('VM.destroy', vm);
      }
      for (const [vdi, row] of [...emu.db.table('VDI')]) {
        if (made('VDI').has(vdi) || taggedBy(row.rec.sm_config, tasks)) await call('VDI.destroy', vdi);
      }
      for (const [net, row] of [...emu.db.table('network')]) {
        if (made('network').has(net) || taggedBy(row.rec.other_config, tasks)) await call('network.destroy', net);
      }
    } finally {
      destroySession(emu, session);
      for (const t of tasks) endImport(emu, t);
      emu.db.flush();
    }
  });
  undoing.set(emu, done.catch(() => undefined));
}
