// The object database: every XAPI object lives in memory (reads never touch the disk) and every
// write of a persistent class is written through to SQLite before the API answers (see flush()).
// Generations number the writes: they are the event tokens of event.from.
import BetterSqlite3 from 'better-sqlite3';
import { classes, model, type ClassMeta, type FieldMeta } from '../schema/index.js';
import { cloneValue, defaultFor } from './defaults.js';
import * as encoded from './encoded-cache.js';

// create() builds a record with a generated object literal that holds every field, in schema order.
// V8 keeps such an object in fast mode, whereas an object given its 20-90 fields one by one through
// `obj[name] = v` turns into a hash table (dictionary mode): bigger, and slower to read and to
// JSON.stringify (VM.get_record over JSON-RPC spent ~1/3 less in JSON.stringify). Keys, their order
// and values are exactly what the plain loop produced. (Records loaded from SQLite come from
// JSON.parse, which already gives fast-mode objects.)
type Maker = (src: Rec) => Rec;

/** `{ [f]: f in rec ? rec[f] : defaultFor(f) }` for the class's fields in schema order. */
const creators = new Map<string, Maker>();
function creatorOf(c: ClassMeta): Maker {
  let make = creators.get(c.name);
  if (!make) {
    const fields = c.fields as FieldMeta[];
    const names = fields.map((f) => f.name);
    if (names.includes('__proto__') || new Set(names).size !== names.length) {
      make = (rec) => {
        const full: Rec = {};
        for (const f of fields) full[f.name] = f.name in rec ? rec[f.name] : defaultFor(f);
        return full;
      };
    } else {
      const props = names.map((n, i) => {
        const q = JSON.stringify(n);
        return `${q}: ${q} in r ? r[${q}] : d(F[${i}])`;
      });
      const body = `return {${props.join(',\n')}};`;
      const gen = new Function('d', 'F', `return function (r) {\n${body}\n};`) as (d: typeof defaultFor, F: FieldMeta[]) => Maker;
      make = gen(defaultFor, fields);
    }
    creators.set(c.name, make);
  }
  return make;
}

export type Rec = Record<string, unknown>;

export interface Row {
  cls: string;
  ref: string;
  /** Changed only through create/update/touch/destroy, never in place by callers: the wire
   * encodings of a record are cached until it changes (encoded-cache.ts). */
  rec: Rec;
  /** generation at which the object was created */
  created: number;
  /** generation of its last change */
  modified: number;
}

/** A change-log entry: an object written at `gen`; `deleted` when the write destroyed it. */
interface LogEntry { gen: number; cls: string; ref: string; deleted?: { created: number } }

type Dirty = Row | { cls: string; ref: string; gone: true };

export interface Changes { gen: number; rows: Row[]; deleted: { cls: string; ref: string; gen: number }[] }

export const NULL_REF = 'OpaqueRef:NULL';

/** A row in a state snapshot: its record as JSON, and the generation it had when taken. */
export interface ImageRow { cls: string; ref: string; data: string; modified: number }

/**
 * A copy-on-write image of the database (Database.liveImage): the rows as they were at generation
 * `gen`. A row still at a generation up to `gen` is unchanged since; a row's record is saved
 * (serialized) before its first change after, so the image holds only what changed.
 */
export interface LiveImage {
  readonly gen: number;
  readonly keep: (cls: string) => boolean;
  /** rows changed or destroyed since, as they were in the image */
  readonly saved: Map<string, ImageRow>;
  /** rows a restore put back as the image has them, at the generation it gave them */
  readonly known: Map<string, number>;
}

/** rows per transaction when derived changes are written in the background */
const DERIVED_BATCH = 100;
/** meta key: '1' when the last commit left derived changes unwritten */
const DERIVED_PENDING = 'derived.pending';

/** For each class, the relations in which one of its fields is mirrored by a field of another object. */
interface Mirror { field: string; otherClass: string; otherField: string; bothSets: boolean }
const mirrors = new Map<string, Mirror[]>();
/** The sets that follow a ref field (host.resident_VMs follows VM.resident_on ...). */
const followers: { cls: string; field: string; setClass: string; setField: string }[] = [];
for (const [a, fa, b, fb] of model.relations) {
  const A = classes.get(a)?.field.get(fa);
  const B = classes.get(b)?.field.get(fb);
  if (!A || !B || (a === b && fa === fb)) continue; // internal fields, or a set that mirrors itself
  const add = (cls: string, m: Mirror) => mirrors.set(cls, [...(mirrors.get(cls) ?? []), m]);
  const bothSets = B.ty.k === 'set' && A.ty.k === 'set';
  add(a, { field: fa, otherClass: b, otherField: fb, bothSets });
  // set <-> set relations are kept from both sides; a ref's reverse set is DynamicRO and only follows
  if (bothSets) add(b, { field: fb, otherClass: a, otherField: fa, bothSets });
  else if (A.ty.k === 'ref' && B.ty.k === 'set' && A.persist && B.persist) followers.push({ cls: a, field: fa, setClass: b, setField: fb });
}

const refsOf = (v: unknown): string[] =>
  Array.isArray(v) ? (v as string[]) : typeof v === 'string' && v !== NULL_REF && v !== '' ? [v] : [];

export interface DatabaseOptions {
  /** SQLite file; null keeps everything in memory only */
  file: string | null;
  /** how many deletions are remembered for `del` events */
  deletedKept?: number;
}

export class Database {
  generation = 0;
  private readonly tables = new Map<string, Map<string, Row>>();
  private readonly uuids = new Map<string, Map<string, string>>();
  private log: LogEntry[] = [];
  private deletedCount = 0;
  /** generation up to which deletions may have been forgotten */
  forgottenUpTo = 0;
  private readonly deletedKept: number;
  /** null with no file, and from close() on: work that outlives a close writes nothing more */
  private sql: BetterSqlite3.Database | null;
  private dirty = new Map<string, Dirty>();
  private flushScheduled = false;
  /** changes made under derived(): written in the background, or by a flush that has the same row */
  private derivedDirty = new Map<string, Dirty>();
  private deriving = 0;
  /** inside a create, a destroy or a change of a relation: both sides are written at once, so
   * that no kill can leave one side of a relation on disk without the other */
  private relating = 0;
  private derivedScheduled = false;
  private readonly listeners = new Set<() => void>();
  private notifyScheduled = false;
  /** extra meta entries written with every flush (the id counter) */
  metaHook: () => Record<string, string> = () => ({});
  /** live images (copy-on-write snapshots) that rows are saved into before they change */
  private readonly images = new Set<LiveImage>();
  private stmts?: { put: BetterSqlite3.Statement; del: BetterSqlite3.Statement; meta: BetterSqlite3.Statement };

  constructor(opts: DatabaseOptions) {
    this.deletedKept = opts.deletedKept ?? 20000;
    for (const c of model.classes) {
      this.tables.set(c.name, new Map());
      if (c.field.has('uuid')) this.uuids.set(c.name, new Map());
    }
    this.sql = opts.file === null ? null : new BetterSqlite3(opts.file);
    if (this.sql) this.openSql(this.sql);
  }

  private openSql(sql: BetterSqlite3.Database): void {
    sql.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: a committed transaction survives a crash of the process (SIGKILL); only
    // a power loss of the machine may lose the last commits.
    sql.pragma('synchronous = NORMAL');
    sql.exec(`CREATE TABLE IF NOT EXISTS objects (class TEXT NOT NULL, ref TEXT NOT NULL, data TEXT NOT NULL,
      created INTEGER NOT NULL, modified INTEGER NOT NULL, PRIMARY KEY (class, ref)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`);
    this.stmts = {
      put: sql.prepare('INSERT OR REPLACE INTO objects (class, ref, data, created, modified) VALUES (?, ?, ?, ?, ?)'),
      del: sql.prepare('DELETE FROM objects WHERE class = ? AND ref = ?'),
      meta: sql.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
    };
    const gen = sql.prepare("SELECT value FROM meta WHERE key = 'generation'").get() as { value: string } | undefined;
    this.generation = gen ? Number(gen.value) : 0;
    this.forgottenUpTo = this.generation; // deletions before a restart are not remembered
    // sorted here rather than by SQLite, which would sort the whole table's data on disk
    const rows = (sql.prepare('SELECT class, ref, data, created, modified FROM objects').all() as {
      class: string; ref: string; data: string; created: number; modified: number;
    }[]).sort((a, b) => a.modified - b.modified);
    for (const r of rows) {
      const c = classes.get(r.class);
      if (!c) continue;
      const rec = JSON.parse(r.data) as Rec;
      for (const f of c.fields) if (!f.persist || !(f.name in rec)) rec[f.name] = defaultFor(f);
      const row: Row = { cls: r.class, ref: r.ref, rec, created: r.created, modified: r.modified };
      encoded.track(rec);
      this.tables.get(r.class)!.set(r.ref, row);
      this.indexUuid(row);
      this.log.push({ gen: row.modified, cls: row.cls, ref: row.ref });
    }
    const pending = sql.prepare('SELECT value FROM meta WHERE key = ?').get(DERIVED_PENDING) as { value: string } | undefined;
    if (pending?.value === '1') this.rebuildFollowingSets();
  }

  /**
   * After a stop that left derived changes half written: makes each set that follows a ref field
   * agree with the refs again (xapi's database derives them the same way), keeping the order of
   * the members that stay, and writes the sets it changed.
   */
  private rebuildFollowingSets(): void {
    for (const f of followers) {
      const owners = this.tables.get(f.setClass)!;
      const want = new Map<string, string[]>();
      for (const [ref, row] of this.tables.get(f.cls)!) {
        const target = row.rec[f.field];
        if (typeof target !== 'string' || !owners.has(target)) continue;
        const members = want.get(target);
        if (members) members.push(ref);
        else want.set(target, [ref]);
      }
      for (const [ref, row] of owners) {
        const have = Array.isArray(row.rec[f.setField]) ? (row.rec[f.setField] as string[]) : [];
        if (have.length === 0 && !want.has(ref)) continue;
        const members = new Set(want.get(ref));
        if (have.length === members.size && have.every((r) => members.has(r))) continue;
        const kept = have.filter((r) => members.delete(r));
        this.update(f.setClass, ref, { [f.setField]: [...kept, ...members] });
      }
    }
  }

  /** Whether the database has any stored object (a fresh data directory has none). */
  get isEmpty(): boolean {
    for (const t of this.tables.values()) if (t.size > 0) return false;
    return true;
  }

  getMeta(key: string): string | undefined {
    return (this.sql?.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    if (this.sql) this.stmts?.meta.run(key, value);
  }

  // ---- reads ----

  table(cls: string): Map<string, Row> {
    const t = this.tables.get(cls);
    if (!t) throw new Error(`no table ${cls}`);
    return t;
  }

  row(cls: string, ref: string): Row | undefined {
    return this.tables.get(cls)?.get(ref);
  }

  get(cls: string, ref: string): Rec | undefined {
    return this.tables.get(cls)?.get(ref)?.rec;
  }

  has(cls: string, ref: string): boolean {
    return this.tables.get(cls)?.has(ref) ?? false;
  }

  refByUuid(cls: string, uuid: string): string | undefined {
    return this.uuids.get(cls)?.get(uuid);
  }

  count(cls: string): number {
    return this.tables.get(cls)?.size ?? 0;
  }

  /** The class a ref belongs to (refs are unique across tables). */
  classOf(ref: string): string | undefined {
    for (const [cls, t] of this.tables) if (t.has(ref)) return cls;
    return undefined;
  }

  // ---- writes ----

  /** Creates an object from a (possibly partial) record: missing fields take the schema default. */
  create(cls: string, ref: string, rec: Rec): Row {
    const c = classes.get(cls)!;
    const table = this.table(cls);
    if (table.has(ref)) throw new Error(`duplicate ref ${ref}`);
    const full = creatorOf(c)(rec);
    const gen = ++this.generation;
    const row: Row = { cls, ref, rec: full, created: gen, modified: gen };
    encoded.track(full);
    table.set(ref, row);
    this.indexUuid(row);
    this.relating++;
    this.touched(row);
    for (const m of mirrors.get(cls) ?? []) this.mirror(cls, ref, m, [], refsOf(full[m.field]));
    this.relating--;
    return row;
  }

  /** Sets fields of an object; a field whose value is unchanged does not count as a change. */
  update(cls: string, ref: string, changes: Rec): Row {
    const row = this.table(cls).get(ref);
    if (!row) throw new Error(`no ${cls} ${ref}`);
    const ms = mirrors.get(cls);
    const fields = classes.get(cls)?.field;
    let changed = false;
    // a change of fields that are not persisted (allowed_operations) has nothing to write
    let persisted = false;
    let related = false;
    for (const k in changes) {
      const before = row.rec[k];
      const after = changes[k];
      if (sameValue(before, after)) continue;
      if (!persisted && fields?.get(k)?.persist !== false) persisted = true;
      if (!changed) {
        changed = true;
        encoded.changed(row.rec); // before the first write: no encoding of the old record survives it
        if (this.images.size > 0) this.preserve(row);
      }
      row.rec[k] = after;
      if (k === 'uuid') {
        this.uuids.get(cls)?.delete(before as string);
        this.indexUuid(row);
      }
      if (ms) for (const m of ms) if (m.field === k) {
        // a set that follows a ref is made whole again at load (rebuildFollowingSets)
        if (m.bothSets) related = true;
        this.mirror(cls, ref, m, refsOf(before), refsOf(after));
      }
    }
    if (changed) {
      row.modified = ++this.generation;
      if (related) this.relating++;
      this.touched(row, persisted);
      if (related) this.relating--;
    }
    return row;
  }

  /** Marks an object as changed without changing it (event.inject). */
  touch(cls: string, ref: string): void {
    const row = this.table(cls).get(ref);
    if (!row) return;
    if (this.images.size > 0) this.preserve(row);
    row.modified = ++this.generation;
    this.touched(row);
  }

  destroy(cls: string, ref: string): void {
    const table = this.table(cls);
    const row = table.get(ref);
    if (!row) return;
    if (this.images.size > 0) this.preserve(row);
    table.delete(ref);
    encoded.untrack(row.rec);
    this.uuids.get(cls)?.delete(row.rec.uuid as string);
    this.relating++;
    for (const m of mirrors.get(cls) ?? []) this.mirror(cls, ref, m, refsOf(row.rec[m.field]), []);
    const gen = ++this.generation;
    this.log.push({ gen, cls, ref, deleted: { created: row.created } });
    this.deletedCount++;
    this.markDirty({ cls, ref, gone: true });
    this.relating--;
    this.pruneLog();
  }

  private mirror(cls: string, ref: string, m: Mirror, before: string[], after: string[]): void {
    this.relating++;
    const other = this.tables.get(m.otherClass)!;
    for (const r of before) {
      if (after.includes(r)) continue;
      const o = other.get(r);
      const set = o?.rec[m.otherField];
      if (o && Array.isArray(set) && set.includes(ref)) this.bumpSet(o, m.otherField, set.filter((x) => x !== ref));
    }
    for (const r of after) {
      if (before.includes(r)) continue;
      const o = other.get(r);
      const set = o?.rec[m.otherField];
      if (o && Array.isArray(set) && !set.includes(ref)) this.bumpSet(o, m.otherField, [...set, ref]);
    }
    this.relating--;
  }

  private bumpSet(o: Row, field: string, value: string[]): void {
    if (this.images.size > 0) this.preserve(o);
    encoded.changed(o.rec);
    o.rec[field] = value;
    o.modified = ++this.generation;
    this.touched(o);
  }

  private indexUuid(row: Row): void {
    const u = row.rec.uuid;
    if (typeof u === 'string' && u) this.uuids.get(row.cls)?.set(u, row.ref);
  }

  private touched(row: Row, persisted = true): void {
    this.log.push({ gen: row.modified, cls: row.cls, ref: row.ref });
    if (persisted) this.markDirty(row);
    else this.notify();
    this.pruneLog();
  }

  private markDirty(entry: Dirty): void {
    if (!this.persists(entry.cls)) return this.notify();
    const key = `${entry.cls}\u0000${entry.ref}`;
    if (this.deriving > 0 && this.relating === 0 && !this.dirty.has(key)) {
      this.derivedDirty.set(key, entry);
      return this.notify();
    }
    this.derivedDirty.delete(key); // written whole with this change
    this.dirty.set(key, entry);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
    this.notify();
  }

  private persists(cls: string): boolean {
    return this.sql !== null && (classes.get(cls)?.persist ?? false);
  }

  /** Writes every pending change to SQLite in one transaction. Called before any answer leaves.
   * With `always`, writes the generation even when no persistent row changed (writes to volatile
   * classes move it too), so that event tokens never go back after a clean restart. */
  flush(always = false): void {
    this.flushScheduled = false;
    if (!this.sql || (this.dirty.size === 0 && !always)) return;
    const pending = [...this.dirty.values()];
    this.dirty.clear();
    this.write(pending);
  }

  /**
   * Runs fn, whose changes are derived from what the next start finds anyway (the start-up resync
   * of power states with the domains, allowed_operations, operations of tasks that did not
   * survive): they are in memory at once, and written to SQLite in the background, a batch at a
   * time, so that a start does not wait for them. A kill before they are written loses nothing
   * that the next start does not derive again; a later change of the same row writes it whole
   * with that change, and close() writes what is left.
   */
  derived<T>(fn: () => T): T {
    this.deriving++;
    try {
      return fn();
    } finally {
      this.deriving--;
      this.scheduleDerived();
    }
  }

  private scheduleDerived(): void {
    if (this.derivedScheduled || this.deriving > 0 || this.derivedDirty.size === 0 || !this.sql) return;
    this.derivedScheduled = true;
    setImmediate(() => {
      this.derivedScheduled = false;
      const batch: Dirty[] = [];
      for (const [key, e] of this.derivedDirty) {
        if (batch.length >= DERIVED_BATCH) break;
        batch.push(e);
        this.derivedDirty.delete(key);
      }
      if (batch.length > 0) this.write(batch);
      this.scheduleDerived();
    });
  }

  private write(pending: Dirty[]): void {
    if (!this.sql) return; // closed: a background batch queued before the close finds nothing to write to
    const { put, del, meta } = this.stmts!;
    this.sql.transaction(() => {
      for (const e of pending) {
        if ('gone' in e) del.run(e.cls, e.ref);
        else put.run(e.cls, e.ref, JSON.stringify(persistedRecord(e)), e.created, e.modified);
      }
      meta.run('generation', String(this.generation));
      meta.run(DERIVED_PENDING, this.derivedDirty.size > 0 ? '1' : '0');
      for (const [k, v] of Object.entries(this.metaHook())) meta.run(k, v);
    })();
  }

  /** Registers a callback run (once per tick) after changes: event waiters use it. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(): void {
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      for (const fn of [...this.listeners]) fn();
    });
  }

  /** Rows changed and objects deleted after generation `since` (deleted ones only if they existed then). */
  changesSince(since: number, filter?: (cls: string, ref: string) => boolean): Changes {
    const rows: Row[] = [];
    const deleted: { cls: string; ref: string; gen: number }[] = [];
    let lo = 0;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.log[mid].gen <= since) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.log.length; i++) {
      const e = this.log[i];
      if (filter && !filter(e.cls, e.ref)) continue;
      if (e.deleted) {
        if (e.deleted.created <= since) deleted.push({ cls: e.cls, ref: e.ref, gen: e.gen });
        continue;
      }
      const row = this.tables.get(e.cls)!.get(e.ref);
      if (row && row.modified === e.gen) rows.push(row);
    }
    return { gen: this.generation, rows, deleted };
  }

  /** Keeps the change log at most a few times the size of what it must remember. */
  private pruneLog(): void {
    let live = 0;
    for (const t of this.tables.values()) live += t.size;
    if (this.log.length < 4 * (live + this.deletedCount) + 1024) return;
    let dropDeleted = Math.max(0, this.deletedCount - this.deletedKept);
    const kept: LogEntry[] = [];
    for (const e of this.log) {
      if (e.deleted) {
        if (dropDeleted > 0) {
          dropDeleted--;
          this.deletedCount--;
          this.forgottenUpTo = Math.max(this.forgottenUpTo, e.gen);
          continue;
        }
        kept.push(e);
      } else if (this.tables.get(e.cls)!.get(e.ref)?.modified === e.gen) kept.push(e);
    }
    this.log = kept;
  }

  // ---- images (state snapshots) ----

  /**
   * Every row of the classes `keep` accepts, each record serialized: JSON gives a deep copy that no
   * later write can reach, and parses back into a fresh record (in fast mode) on restore.
   */
  image(keep: (cls: string) => boolean): ImageRow[] {
    const out: ImageRow[] = [];
    for (const [cls, t] of this.tables) {
      if (!keep(cls)) continue;
      for (const row of t.values()) out.push({ cls, ref: row.ref, data: JSON.stringify(row.rec), modified: row.modified });
    }
    return out;
  }

  /**
   * Makes the classes `keep` accepts hold exactly the image's rows, as a set of ordinary changes
   * at new generations: a row that differs is replaced (mod), a missing one created (add), one not
   * in the image destroyed (del), so event.from tokens keep going forward and waiters see the
   * difference. `unchanged` names, by `cls\0ref`, the generation at which each live row was last
   * known equal to the image (rows keep their generation until written, and every write takes a
   * new one): such a row is kept as it is. Answers that map for the rows as the restore left them.
   * Relations need no mirroring: the image's rows are consistent among themselves.
   */
  restoreImage(rows: Iterable<ImageRow>, keep: (cls: string) => boolean, unchanged?: Map<string, number>): { known: Map<string, number>; changed: number } {
    const wanted = new Map<string, ImageRow>();
    for (const r of rows) wanted.set(`${r.cls}\u0000${r.ref}`, r);
    const known = new Map<string, number>();
    let changed = 0;
    // deletions first: a restored row may take back a uuid that another row holds now
    for (const [cls, t] of this.tables) {
      if (!keep(cls)) continue;
      for (const [ref, row] of [...t]) {
        if (wanted.has(`${cls}\u0000${ref}`)) continue;
        this.dropRow(row);
        changed++;
      }
    }
    for (const [key, img] of wanted) {
      if (!classes.has(img.cls) || !keep(img.cls)) continue;
      const row = this.tables.get(img.cls)!.get(img.ref);
      if (row && unchanged?.get(key) === row.modified) {
        known.set(key, row.modified);
        continue;
      }
      known.set(key, this.putRow(img, row));
      changed++;
    }
    return { known, changed };
  }

  /** A copy-on-write image of the classes `keep` accepts, as they are now: taking it costs
   * nothing; each row is saved into it (serialized) the first time it changes afterwards. */
  liveImage(keep: (cls: string) => boolean): LiveImage {
    const img: LiveImage = { gen: this.generation, keep, saved: new Map(), known: new Map() };
    this.images.add(img);
    return img;
  }

  /** Stops saving rows into an image. */
  dropImage(img: LiveImage): void {
    this.images.delete(img);
  }

  /** Whether a live image was taken of this database (and is still kept up). */
  holds(img: LiveImage): boolean {
    return this.images.has(img);
  }

  private preserve(row: Row): void {
    const key = `${row.cls}\u0000${row.ref}`;
    for (const img of this.images) {
      if (img.saved.has(key) || !img.keep(row.cls)) continue;
      // unchanged since the image: as it was then (a row made after the image has nothing to save)
      if (row.modified <= img.gen || img.known.get(key) === row.modified) {
        img.saved.set(key, { cls: row.cls, ref: row.ref, data: JSON.stringify(row.rec), modified: row.modified });
      }
    }
  }

  /** Whether a live row is as the image has it. */
  private asInImage(img: LiveImage, key: string, row: Row): boolean {
    return row.modified <= img.gen || img.known.get(key) === row.modified;
  }

  /** The rows of a live image, serialized. */
  liveRows(img: LiveImage): ImageRow[] {
    const out: ImageRow[] = [...img.saved.values()];
    for (const [cls, t] of this.tables) {
      if (!img.keep(cls)) continue;
      for (const [ref, row] of t) {
        const key = `${cls}\u0000${ref}`;
        if (!img.saved.has(key) && this.asInImage(img, key, row)) out.push({ cls, ref, data: JSON.stringify(row.rec), modified: row.modified });
      }
    }
    return out;
  }

  /** restoreImage for a live image: only the rows changed since (saved ones) are rewritten. */
  restoreLive(img: LiveImage): number {
    let changed = 0;
    for (const [cls, t] of this.tables) {
      if (!img.keep(cls)) continue;
      for (const [ref, row] of [...t]) {
        const key = `${cls}\u0000${ref}`;
        if (img.saved.has(key) || this.asInImage(img, key, row)) continue;
        this.dropRow(row); // made after the image
        changed++;
      }
    }
    for (const [key, saved] of img.saved) {
      const row = this.tables.get(saved.cls)!.get(saved.ref);
      if (row && img.known.get(key) === row.modified) continue;
      img.known.set(key, this.putRow(saved, row));
      changed++;
    }
    return changed;
  }

  /** Destroys a row as a restore does (no relation to mirror: the image's rows agree). */
  private dropRow(row: Row): void {
    if (this.images.size > 0) this.preserve(row);
    const { cls, ref } = row;
    this.tables.get(cls)!.delete(ref);
    encoded.untrack(row.rec);
    const uuids = this.uuids.get(cls);
    if (uuids?.get(row.rec.uuid as string) === ref) uuids.delete(row.rec.uuid as string);
    this.log.push({ gen: ++this.generation, cls, ref, deleted: { created: row.created } });
    this.deletedCount++;
    this.markDirty({ cls, ref, gone: true });
  }

  /** Puts an image's row in place of `row` (or anew), at a new generation; answers it. */
  private putRow(img: ImageRow, row: Row | undefined): number {
    const c = classes.get(img.cls)!;
    const rec = JSON.parse(img.data) as Rec;
    for (const f of c.fields) if (!(f.name in rec)) rec[f.name] = defaultFor(f);
    if (row && this.images.size > 0) this.preserve(row);
    const gen = ++this.generation;
    const uuids = this.uuids.get(img.cls);
    if (row) {
      if (uuids?.get(row.rec.uuid as string) === img.ref) uuids.delete(row.rec.uuid as string);
      encoded.untrack(row.rec);
      row.rec = rec;
      row.modified = gen;
      encoded.track(rec);
      this.indexUuid(row);
      this.touched(row);
    } else {
      const fresh: Row = { cls: img.cls, ref: img.ref, rec, created: gen, modified: gen };
      encoded.track(rec);
      this.tables.get(img.cls)!.set(img.ref, fresh);
      this.indexUuid(fresh);
      this.touched(fresh);
    }
    return gen;
  }

  /** The generation of each row of the classes `keep` accepts, by `cls\0ref`. */
  generations(keep: (cls: string) => boolean): Map<string, number> {
    const out = new Map<string, number>();
    for (const [cls, t] of this.tables) if (keep(cls)) for (const [ref, row] of t) out.set(`${cls}\u0000${ref}`, row.modified);
    return out;
  }

  close(): void {
    for (const [key, e] of this.derivedDirty) if (!this.dirty.has(key)) this.dirty.set(key, e);
    this.derivedDirty.clear();
    this.flush(true);
    // what is acknowledged is on disk now; later changes (a task its client gave up on, still
    // running) stay in memory, as they would in a xapi that stops
    const sql = this.sql;
    this.sql = null;
    sql?.close();
  }
}

function persistedRecord(row: Row): Rec {
  const c = classes.get(row.cls) as ClassMeta;
  const out: Rec = {};
  for (const f of c.fields as FieldMeta[]) if (f.persist) out[f.name] = row.rec[f.name];
  return out;
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

export { cloneValue };
