// The object database's durability rules for derived state (storage/database.ts): changes made
// under derived() are read at once and reach SQLite in the background or with a later change of
// the same row; close() writes what is left; after a kill that left them half written, the sets
// that follow a ref field are made to agree with the refs at the next load.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { Database, NULL_REF } from '../../storage/database.js';

const dirs: string[] = [];
const open: Database[] = [];
afterEach(() => {
  for (const db of open.splice(0)) db.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dbFile(): string {
  const d = mkdtempSync(join(tmpdir(), 'xapi-emu-db-'));
  dirs.push(d);
  return join(d, 'xapi.db');
}

/** The records SQLite holds now (read without loading, so without any repair a load makes). */
function stored(file: string): Map<string, Record<string, unknown>> {
  const sql = new BetterSqlite3(file, { readonly: true });
  try {
    const rows = sql.prepare('SELECT ref, data FROM objects').all() as { ref: string; data: string }[];
    return new Map(rows.map((r) => [r.ref, JSON.parse(r.data) as Record<string, unknown>]));
  } finally {
    sql.close();
  }
}

/** What a new start loads. */
function onDisk(file: string): Database {
  const db = new Database({ file });
  open.push(db);
  return db;
}

const turn = () => new Promise<void>((r) => setImmediate(r));

/** A pool of one host with `n` Running VMs resident on it, written to `file`. */
function runningPool(file: string, n: number): { db: Database; host: string; vms: string[] } {
  const db = new Database({ file });
  const host = 'OpaqueRef:host-0';
  db.create('host', host, { uuid: 'host-0', name_label: 'h0' });
  const vms: string[] = [];
  for (let i = 0; i < n; i++) {
    const ref = `OpaqueRef:vm-${i}`;
    db.create('VM', ref, { uuid: `vm-${i}`, name_label: `vm ${i}`, power_state: 'Running', resident_on: host, domid: i + 1 });
    vms.push(ref);
  }
  db.flush();
  return { db, host, vms };
}

const haltAll = (db: Database, vms: string[]) =>
  db.derived(() => {
    for (const vm of vms) db.update('VM', vm, { power_state: 'Halted', resident_on: NULL_REF, domid: -1 });
  });

describe('derived changes', () => {
  it('are read at once, written in the background, and a later change of the row writes it whole', async () => {
    const file = dbFile();
    const { db, host, vms } = runningPool(file, 1200);
    open.push(db);
    haltAll(db, vms);
    db.update('VM', vms[7], { name_label: 'renamed' });
    db.flush(); // what an answer to the client waits for

    expect(db.get('VM', vms[0])!.power_state).toBe('Halted');
    expect(db.get('host', host)!.resident_VMs).toEqual([]);
    const before = stored(file);
    // the row changed by the client is on disk whole, its derived change with it; the rest is not yet
    expect(before.get(vms[7])).toMatchObject({ name_label: 'renamed', power_state: 'Halted', domid: -1 });
    expect(vms.filter((v) => before.get(v)!.power_state === 'Halted')).toEqual([vms[7]]);

    let written = 0;
    for (let i = 0; i < 100 && written < vms.length; i++) {
      await turn();
      const now = stored(file);
      written = vms.filter((v) => now.get(v)!.power_state === 'Halted').length;
    }
    expect(written).toBe(vms.length);
    expect(stored(file).get(host)!.resident_VMs).toEqual([]);
  });

  it('close() writes those not yet written', () => {
    const file = dbFile();
    const { db, vms } = runningPool(file, 1200);
    haltAll(db, vms);
    db.close();
    const after = stored(file);
    expect(vms.every((v) => after.get(v)!.power_state === 'Halted')).toBe(true);
  });

  it('a create or a destroy is written with the next flush, both sides of its relations with it', () => {
    const file = dbFile();
    const { db, vms } = runningPool(file, 2);
    open.push(db);
    db.derived(() => {
      db.create('console', 'OpaqueRef:con', { uuid: 'con', protocol: 'rfb', location: 'x', VM: vms[0] });
      db.destroy('VM', vms[1]);
    });
    db.flush();
    const disk = stored(file);
    expect(disk.get('OpaqueRef:con')!.VM).toBe(vms[0]);
    expect(disk.get(vms[0])!.consoles).toEqual(['OpaqueRef:con']);
    expect(disk.has(vms[1])).toBe(false);
  });
});

describe('a stop with derived changes half written', () => {
  it('the next load makes the sets that follow a ref agree with the refs, and writes them', async () => {
    const file = dbFile();
    const { db, host, vms } = runningPool(file, 1200);
    haltAll(db, vms);
    await turn(); // one batch written, then a kill: db is never closed
    const half = stored(file);
    const resident = vms.filter((v) => half.get(v)!.resident_on === host);
    expect(resident.length).toBeGreaterThan(0);
    expect(resident.length).toBeLessThan(vms.length);
    expect(half.get(host)!.resident_VMs).not.toEqual(resident);
    const loaded = onDisk(file);
    expect(loaded.get('host', host)!.resident_VMs).toEqual(resident);
    loaded.flush(); // as the start that loaded it does
    expect(stored(file).get(host)!.resident_VMs).toEqual(resident);
    db.close();
  });

  it('keeps the order of the members that stay', () => {
    const file = dbFile();
    const db = new Database({ file });
    for (const h of ['h1', 'h2']) db.create('host', `OpaqueRef:${h}`, { uuid: h });
    for (const v of ['a', 'b', 'c', 'd']) db.create('VM', `OpaqueRef:${v}`, { uuid: v, resident_on: 'OpaqueRef:h1' });
    db.close();
    // as a kill can leave it: a moved VM's row written, the hosts' rows not (or the reverse)
    const sql = new BetterSqlite3(file);
    const edit = (ref: string, fn: (rec: Record<string, unknown>) => void) => {
      const row = sql.prepare('SELECT data FROM objects WHERE ref = ?').get(ref) as { data: string };
      const rec = JSON.parse(row.data) as Record<string, unknown>;
      fn(rec);
      sql.prepare('UPDATE objects SET data = ? WHERE ref = ?').run(JSON.stringify(rec), ref);
    };
    edit('OpaqueRef:a', (r) => (r.resident_on = 'OpaqueRef:h2'));
    edit('OpaqueRef:h1', (r) => (r.resident_VMs = ['OpaqueRef:d', 'OpaqueRef:a', 'OpaqueRef:gone', 'OpaqueRef:b']));
    sql.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('derived.pending', '1')").run();
    sql.close();

    const loaded = onDisk(file);
    expect(loaded.get('host', 'OpaqueRef:h1')!.resident_VMs).toEqual(['OpaqueRef:d', 'OpaqueRef:b', 'OpaqueRef:c']);
    expect(loaded.get('host', 'OpaqueRef:h2')!.resident_VMs).toEqual(['OpaqueRef:a']);
  });
});
