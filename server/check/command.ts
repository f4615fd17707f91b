// `xapi-emu check --data DIR`: the invariants of a stopped emulator's data directory. Reads the
// database read-only, as it is on disk (no start-up repair runs, nothing is written), prints one
// violation per line and exits 1 if there is any. Domains, tasks and operations in flight are not
// on disk (the next start resets them), so only what is durable is checked.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { classes } from '../../schema/index.js';
import { Database, type Rec } from '../../storage/database.js';
import { defaultFor } from '../../storage/defaults.js';
import { checkInvariants, formatViolation, type CheckTarget } from './invariants.js';

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The objects of a data directory's database, exactly as stored: loaded row by row, so that
 * nothing (relation mirroring, defaults of the pool) hides what is on disk. */
export function readStoredState(dataDir: string): CheckTarget {
  const sql = new BetterSqlite3(join(dataDir, 'xapi.db'), { readonly: true, fileMustExist: true });
  const db = new Database({ file: null });
  try {
    const rows = sql.prepare('SELECT class, ref, data, created, modified FROM objects').all() as {
      class: string; ref: string; data: string; created: number; modified: number;
    }[];
    for (const r of rows) {
      const c = classes.get(r.class);
      if (!c) continue;
      const rec = JSON.parse(r.data) as Rec;
      for (const f of c.fields) if (!f.persist || !(f.name in rec)) rec[f.name] = defaultFor(f);
      db.table(r.class).set(r.ref, { cls: r.class, ref: r.ref, rec, created: r.created, modified: r.modified });
    }
  } finally {
    sql.close();
  }
  return { db, storageDir: dataDir, cancelHooks: new Map(), taskSessions: new Map() };
}

export async function checkCommand(dataArg: string | undefined): Promise<number> {
  const dataDir = resolve(dataArg ?? 'data');
  if (!existsSync(join(dataDir, 'xapi.db'))) {
    console.error(`xapi-emu check: no database in ${dataDir}`);
    return 2;
  }
  const pidFile = join(dataDir, 'xapi-emu.pid');
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
  if (pid && pid !== process.pid && running(pid)) {
    console.error(`xapi-emu check: an emulator (pid ${pid}) is running on ${dataDir}: stop it first`);
    return 2;
  }
  let state: CheckTarget;
  try {
    state = readStoredState(dataDir);
  } catch (e) {
    console.error(`xapi-emu check: cannot read ${join(dataDir, 'xapi.db')}: ${(e as Error).message}`);
    return 2;
  }
  const violations = await checkInvariants(state, { live: false });
  for (const v of violations) console.log(formatViolation(v));
  console.error(`xapi-emu check: ${violations.length} violation${violations.length === 1 ? '' : 's'} in ${dataDir}`);
  return violations.length > 0 ? 1 : 0;
}
