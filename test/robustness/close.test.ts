// An emulator's close: what is pending reaches the disk first, and work that runs on after it
// (a call its client gave up on, a background batch of derived changes) writes nothing more:
// no flush may touch the closed SQLite file.
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, expect, it } from 'vitest';
import { Emulator } from '../../server/emulator.js';
import { tempDataDir } from '../../robustness/lib.js';

const dirs: { remove(): void }[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.remove();
});

const turn = () => new Promise<void>((r) => setImmediate(r));

function emulator(): { emu: Emulator; file: string } {
  const data = tempDataDir('close');
  dirs.push(data);
  const emu = new Emulator({ dataDir: data.dir, hosts: 1, password: 'pw', seed: 'close' });
  return { emu, file: `${data.dir}/xapi.db` };
}

/** The name_label SQLite holds for `ref`, read without loading the database. */
function storedLabel(file: string, ref: string): unknown {
  const sql = new BetterSqlite3(file, { readonly: true });
  try {
    const row = sql.prepare('SELECT data FROM objects WHERE ref = ?').get(ref) as { data: string } | undefined;
    return row && (JSON.parse(row.data) as Record<string, unknown>).name_label;
  } finally {
    sql.close();
  }
}

it('close writes the change still waiting for its flush', () => {
  const { emu, file } = emulator();
  emu.db.update('pool', emu.pool, { name_label: 'before close' }); // its flush is still queued
  emu.close();
  emu.dispose();
  expect(storedLabel(file, emu.pool)).toBe('before close');
});

it('a change made after close is never flushed to the closed database', async () => {
  const { emu, file } = emulator();
  emu.db.update('pool', emu.pool, { name_label: 'acknowledged' });
  emu.db.flush();
  emu.close();
  // a task that outlives the close goes on changing rows, some of them as derived changes
  emu.db.update('pool', emu.pool, { name_label: 'after close' });
  emu.db.derived(() => emu.db.update('host', emu.master, { name_description: 'derived after close' }));
  expect(() => emu.db.flush()).not.toThrow();
  expect(() => emu.db.setMeta('after-close', '1')).not.toThrow();
  await turn(); // the queued flush and the background batch would run here
  await turn();
  emu.dispose();
  expect(emu.db.get('pool', emu.pool)!.name_label).toBe('after close');
  expect(storedLabel(file, emu.pool)).toBe('acknowledged');
});
