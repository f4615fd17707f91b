// State snapshots of the whole pool, under <storage>/snapshots/<name>/: the database's rows (every
// class but session and task: sessions end with a restore, and a task is work of a session), the
// id counter, every SR's files (files.ts) and each host's xenopsd state (domains, devices,
// metadata, suspended VMs). Not the fault rules, not the clock.
//
// A restore is a set of ordinary database changes at new generations (Database.restoreImage), so
// event tokens never go back; every session ends (SESSION_INVALID, waiters woken). Snapshot and
// restore first wait for work in flight (tasks, xenopsd operations, writes into disks) to end, up to a
// bound, and refuse with BUSY rather than cut it: a task cut half-way would write into the
// restored state. Each snapshot remembers how the live state looked when it was last taken or
// restored (row generations, file stats), so a restore rewrites only what changed since. The
// initial snapshot (`reset`) keeps its rows as a copy-on-write image of the database instead
// (Database.liveImage), so that taking it at every start costs nothing whatever the pool's size.
// The id counter only goes forward: a ref handed out after the snapshot (an old client's session)
// is never handed out again.
//
// On disk: state.json (everything but the files), info.json (for listing), files/ and files.json
// (what was copied, and how the live files looked: a later snapshot of the same name links the
// copies of files that did not change instead of copying them again). A snapshot is
// written in a temporary directory and renamed into place; a restore is marked by a `.restoring`
// file naming it until done, and the next start finishes an interrupted one (restoreInterrupted).
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Emulator } from '../../emulator.js';
import { model } from '../../../schema/index.js';
import type { Database, ImageRow, LiveImage } from '../../../storage/database.js';
import type { XenopsdState } from '../../xenopsd/index.js';
import { xenopsOf } from '../../api/xenops-sync.js';
import { destroySession } from '../../api/session.js';
import { destroyTask } from '../../api/task-runner.js';
import { afterStorageStartup, smReady } from '../../sm/index.js';
import { withSrLock } from '../../sm/driver.js';
import { hasWriter } from '../../sm/attachments.js';
import { ControlError } from '../errors.js';
import { contentRoots, restoreFiles, saveFiles, type FileSet, type KnownFile, type Reuse } from './files.js';
import { resyncGuests } from '../../guest/events.js';

/** Names users give snapshots: no path separators, no leading dot (the initial snapshot's). */
export const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** The snapshot taken at start, which `reset` restores. */
export const INITIAL = '.initial';
/** How long a snapshot or restore waits for work in flight by default (wall seconds). */
export const DRAIN_S = 5;

export interface WaitOptions {
  /** wall seconds to wait for work in flight */
  wait?: number;
}

const FORMAT = 2;
/** Classes a snapshot leaves out: a restore ends every session, and a task is a session's work. */
const LEFT_OUT = new Set(['session', 'task']);
const kept = (cls: string) => !LEFT_OUT.has(cls);

export interface SnapshotInfo {
  name: string;
  /** wall-clock time it was taken, ISO 8601 */
  created: string;
  /** bytes on disk (SR files and state) */
  size: number;
  /** objects by class (classes with none are left out) */
  objects: Record<string, number>;
  /** VMs that are neither templates, snapshots nor control domains */
  vms: number;
  /** domains running on the hosts' xenopsds */
  domains: number;
}

interface State {
  format: number;
  info: SnapshotInfo;
  pool: string;
  ids: { counter: number };
  rows: [cls: string, ref: string, modified: number, data: string][];
  xenopsd: Record<string, XenopsdState>;
  files: FileSet;
  seen: [string, KnownFile][];
}

/** A snapshot in memory, with what the live state looked like when it was taken or last restored. */
interface Loaded {
  dir: string;
  info: SnapshotInfo;
  pool: string;
  ids: { counter: number };
  rows: ImageRow[];
  xenopsd: Record<string, XenopsdState>;
  files: FileSet;
  seen: Map<string, KnownFile>;
  /** the database whose row generations `gens` are (another after a restart: then all rows are rewritten) */
  db: Database | null;
  gens: Map<string, number> | undefined;
  /** the rows as a copy-on-write image of the database (then `rows` is empty) */
  live?: LiveImage;
  /** state.json is written */
  materialized: boolean;
}

export interface RestoreResult {
  name: string;
  /** rows created, replaced or destroyed */
  objects_changed: number;
  sessions_ended: number;
  files_copied: number;
  files_removed: number;
  domains: number;
  /** wall milliseconds the restore took */
  ms: number;
}

/** Snapshots in memory, by directory, for each database (gone with it: a closed emulator's too). */
const caches = new WeakMap<Database, Map<string, Loaded>>();

function cacheOf(emu: Emulator): Map<string, Loaded> {
  let m = caches.get(emu.db);
  if (!m) caches.set(emu.db, (m = new Map()));
  return m;
}

/** the tail of each storage root's snapshot operations */
const locks = new Map<string, Promise<unknown>>();

export const snapshotsDir = (emu: Emulator) => join(emu.storageDir, 'snapshots');
const dirOf = (emu: Emulator, name: string) => join(snapshotsDir(emu), name);

/** Snapshot operations of one storage root run one at a time. */
function serial<T>(emu: Emulator, fn: () => Promise<T>): Promise<T> {
  const key = emu.storageDir;
  const p = (locks.get(key) ?? Promise.resolve()).then(fn, fn);
  const tail = p.catch(() => undefined);
  locks.set(key, tail);
  void tail.then(() => {
    if (locks.get(key) === tail) locks.delete(key);
  });
  return p;
}

export function assertName(name: string): void {
  if (!SNAPSHOT_NAME.test(name)) throw new ControlError(400, 'INVALID_INPUT', `invalid snapshot name ${JSON.stringify(name)}`);
}

// ---- work in flight ----

/** What is still running: pending tasks that have a runner, xenopsd operations, writes into disks. */
function inFlight(emu: Emulator): string[] {
  const busy: string[] = [];
  for (const ref of emu.clientTasks) if (!emu.db.has('task', ref)) emu.clientTasks.delete(ref);
  for (const [ref, row] of emu.db.table('task')) {
    if (row.rec.status === 'pending' && !emu.clientTasks.has(ref)) busy.push(`task ${ref} (${String(row.rec.name_label)})`);
  }
  for (const host of emu.hosts) if (!xenopsOf(emu, host).idle()) busy.push(`xenopsd of host ${host}`);
  // (a storage GC pass under way has a task, and each of its steps holds the SR lock, which a
  // snapshot or restore holds throughout; a GC still waiting for its quiet period runs after, on
  // the SR as the restore left it, as cleanup.py works on whatever the SR holds).
  // A write under way into a disk: an import in a task of the client's own, a guest's request.
  for (const [ref, row] of emu.db.table('VDI')) if (hasWriter(emu, String(row.rec.uuid))) busy.push(`a write into VDI ${ref}`);
  return busy;
}

async function drain(emu: Emulator, what: string, opts: WaitOptions = {}): Promise<void> {
  await smReady(emu);
  const deadline = Date.now() + (opts.wait ?? DRAIN_S) * 1000;
  for (;;) {
    const busy = inFlight(emu);
    if (busy.length === 0) return;
    if (Date.now() >= deadline) throw new ControlError(409, 'BUSY', `cannot ${what} while work is in flight: ${busy.join(', ')}`, busy);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Runs fn holding the lock of every SR (those of the live pool and of the snapshot): an SR
 * operation or GC pass that starts meanwhile waits, then finds the files and records as fn left them. */
function withSrLocks<T>(emu: Emulator, extra: Iterable<string>, fn: () => Promise<T>): Promise<T> {
  const uuids = new Set<string>(extra);
  for (const row of emu.db.table('SR').values()) uuids.add(String(row.rec.uuid));
  const sorted = [...uuids].sort();
  const step = (i: number): Promise<T> => (i === sorted.length ? fn() : withSrLock(emu, sorted[i], () => step(i + 1)));
  return step(0);
}

// ---- taking ----

/** Counts of the pool as it is now (what a snapshot taken now holds). */
function countsOf(emu: Emulator, xenopsd: Record<string, XenopsdState>): Pick<SnapshotInfo, 'objects' | 'vms' | 'domains'> {
  const objects: Record<string, number> = {};
  for (const c of model.classes) {
    const n = emu.db.count(c.name);
    if (n > 0 && kept(c.name)) objects[c.name] = n;
  }
  let vms = 0;
  for (const row of emu.db.table('VM').values()) {
    const v = row.rec;
    if (v.is_a_template !== true && v.is_a_snapshot !== true && v.is_control_domain !== true) vms++;
  }
  const domains = Object.values(xenopsd).reduce((n, x) => n + x.domains.length, 0);
  return { objects, vms, domains };
}

function stateOf(l: Loaded, rows: ImageRow[]): State {
  return {
    format: FORMAT, info: l.info, pool: l.pool, ids: l.ids,
    rows: rows.map((r) => [r.cls, r.ref, r.modified, r.data]), xenopsd: l.xenopsd, files: l.files, seen: [...l.seen],
  };
}

/**
 * Takes the snapshot at once (the caller made sure nothing is in flight). With `live`, its rows
 * are a copy-on-write image of the database (free to take, whatever the size of the pool) and
 * its state.json is written only when needed (materialize): the initial snapshot, taken at every
 * start, costs a start nothing but its SR files.
 */
/** What the initial snapshot takes at once, before its files. */
interface Prepared {
  live: LiveImage;
  xenopsd: Record<string, XenopsdState>;
}

function domainsOf(emu: Emulator): Record<string, XenopsdState> {
  const xenopsd: Record<string, XenopsdState> = {};
  for (const host of emu.hosts) xenopsd[String(emu.db.get('host', host)?.uuid)] = xenopsOf(emu, host).exportState();
  return xenopsd;
}

function takeNow(emu: Emulator, name: string, opts: { live?: boolean; prepared?: Prepared } = {}): Loaded {
  const root = snapshotsDir(emu);
  mkdirSync(root, { recursive: true });
  const tmp = join(root, `.tmp-${randomBytes(6).toString('hex')}`);
  try {
    emu.db.flush();
    const dir = dirOf(emu, name);
    const before = cacheOf(emu).get(dir);
    if (before?.live && before.live !== opts.prepared?.live) emu.db.dropImage(before.live);
    const live = opts.prepared?.live ?? (opts.live ? emu.db.liveImage(kept) : undefined);
    const rows = live ? [] : emu.db.image(kept);
    const xenopsd = opts.prepared?.xenopsd ?? domainsOf(emu);
    // in the same tick as the rows: nothing writes to the files in between
    const { set, known } = saveFiles(emu.storageDir, contentRoots(emu), join(tmp, 'files'), reuseOf(dir, before));
    const info: SnapshotInfo = { name, created: new Date().toISOString(), size: set.bytes, ...countsOf(emu, xenopsd) };
    const l: Loaded = {
      dir, info, pool: emu.pool, ids: { counter: emu.ids.counter }, rows, xenopsd, files: set, seen: known, db: emu.db,
      gens: new Map(rows.map((r) => [`${r.cls}\u0000${r.ref}`, r.modified])), live, materialized: !live,
    };
    if (!live) {
      const json = JSON.stringify(stateOf(l, rows));
      writeFileSync(join(tmp, 'state.json'), json);
      info.size += json.length;
    }
    writeFileSync(join(tmp, 'info.json'), JSON.stringify(info));
    writeFileSync(join(tmp, 'files.json'), JSON.stringify({ files: set, seen: [...known] }));
    if (existsSync(dir)) {
      const trash = join(root, `.trash-${randomBytes(6).toString('hex')}`);
      renameSync(dir, trash);
      renameSync(tmp, dir);
      rmSync(trash, { recursive: true, force: true });
    } else renameSync(tmp, dir);
    cacheOf(emu).set(dir, l);
    return l;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The copies of the snapshot a new one replaces, for the files that did not change since. */
function reuseOf(dir: string, before: Loaded | undefined): Reuse | undefined {
  if (before) return { dir: join(dir, 'files'), seen: before.seen };
  try {
    const f = JSON.parse(readFileSync(join(dir, 'files.json'), 'utf8')) as { seen: [string, KnownFile][] };
    return { dir: join(dir, 'files'), seen: new Map(f.seen) };
  } catch {
    return undefined;
  }
}

/** Writes a live snapshot's state.json (its rows as the image has them), once. */
function materialize(emu: Emulator, l: Loaded): void {
  if (l.materialized || !l.live || !emu.db.holds(l.live)) return;
  const tmp = join(l.dir, `state.json.${randomBytes(6).toString('hex')}`);
  writeFileSync(tmp, JSON.stringify(stateOf(l, emu.db.liveRows(l.live))));
  renameSync(tmp, join(l.dir, 'state.json'));
  l.materialized = true;
}

/** Before the database closes (a toolstack restart): live snapshots are written out, so that the
 * next API layer, on a database opened anew, finds them on disk. */
export function materializeSnapshots(emu: Emulator): void {
  for (const l of cacheOf(emu).values()) if (l.live && emu.db.holds(l.live)) materialize(emu, l);
}

export function takeSnapshot(emu: Emulator, name: string, opts: { replace?: boolean } & WaitOptions = {}): Promise<SnapshotInfo> {
  assertName(name);
  return serial(emu, async () => {
    if (!opts.replace && existsSync(join(dirOf(emu, name), 'state.json'))) {
      throw new ControlError(409, 'SNAPSHOT_EXISTS', `a snapshot named ${name} exists (replace it with replace: true)`, [name]);
    }
    await drain(emu, 'take a snapshot', opts);
    return withSrLocks(emu, [], async () => takeNow(emu, name).info);
  });
}

/** The snapshot `reset` goes back to: taken once the pool is loaded (at start, or after a fixture
 * is loaded), replacing the previous one. */
export function takeInitialSnapshot(emu: Emulator): Promise<SnapshotInfo> {
  // the database and the domains as the start left them, now, before any client is served (the
  // image is copy-on-write: free); the SR files once the storage start-up has reconciled them, and
  // before any storage call of a client (they wait for it), so the start is not held back
  const prepared: Prepared = { live: emu.db.liveImage(kept), xenopsd: domainsOf(emu) };
  const files = afterStorageStartup(emu, () => withSrLocks(emu, [], async () => takeNow(emu, INITIAL, { live: true, prepared }).info));
  return serial(emu, () => files);
}

// ---- reading ----

function load(emu: Emulator, name: string): Loaded {
  const dir = dirOf(emu, name);
  const have = cacheOf(emu).get(dir);
  // a live snapshot holds only while its database is the emulator's (not after a restart)
  if (have && (!have.live || emu.db.holds(have.live))) return have;
  cacheOf(emu).delete(dir);
  let state: State;
  try {
    state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as State;
  } catch {
    throw new ControlError(404, 'NOT_FOUND', name === INITIAL ? 'no initial snapshot: the pool was not started by the server' : `no snapshot named ${name}`, [name]);
  }
  if (state.format !== FORMAT) throw new ControlError(409, 'SNAPSHOT_INVALID', `snapshot ${name} has format ${state.format}, not ${FORMAT}`, [name]);
  const l: Loaded = {
    dir, info: state.info, pool: state.pool, ids: state.ids,
    rows: state.rows.map(([cls, ref, modified, data]) => ({ cls, ref, modified, data })),
    xenopsd: state.xenopsd, files: state.files, seen: new Map(state.seen), db: null, gens: undefined, materialized: true,
  };
  cacheOf(emu).set(dir, l);
  return l;
}

export function listSnapshots(emu: Emulator): SnapshotInfo[] {
  const root = snapshotsDir(emu);
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const out: SnapshotInfo[] = [];
  for (const n of names) {
    if (!SNAPSHOT_NAME.test(n)) continue;
    try {
      out.push(JSON.parse(readFileSync(join(root, n, 'info.json'), 'utf8')) as SnapshotInfo);
    } catch {
      /* half written: not a snapshot */
    }
  }
  return out.sort((a, b) => a.created.localeCompare(b.created) || a.name.localeCompare(b.name));
}

export function snapshotInfo(emu: Emulator, name: string): SnapshotInfo {
  assertName(name);
  try {
    return JSON.parse(readFileSync(join(dirOf(emu, name), 'info.json'), 'utf8')) as SnapshotInfo;
  } catch {
    throw new ControlError(404, 'NOT_FOUND', `no snapshot named ${name}`, [name]);
  }
}

export function deleteSnapshot(emu: Emulator, name: string): Promise<void> {
  assertName(name);
  return serial(emu, async () => {
    const dir = dirOf(emu, name);
    if (!existsSync(join(dir, 'info.json'))) throw new ControlError(404, 'NOT_FOUND', `no snapshot named ${name}`, [name]);
    const trash = join(snapshotsDir(emu), `.trash-${randomBytes(6).toString('hex')}`);
    renameSync(dir, trash);
    cacheOf(emu).delete(dir);
    rmSync(trash, { recursive: true, force: true });
  });
}

// ---- restoring ----

const marker = (emu: Emulator) => join(snapshotsDir(emu), '.restoring');

/** Files and database, synchronously (nothing else runs in between). */
function applyFilesAndDb(emu: Emulator, l: Loaded): { changed: number; copied: number; removed: number } {
  const { copied, removed } = restoreFiles(emu.storageDir, contentRoots(emu), join(l.dir, 'files'), l.files, l.seen);
  let changed: number;
  if (l.live && emu.db.holds(l.live)) changed = emu.db.restoreLive(l.live);
  else {
    const r = emu.db.restoreImage(l.rows, kept, l.db === emu.db ? l.gens : undefined);
    l.db = emu.db;
    l.gens = r.known;
    changed = r.changed;
  }
  // refs and uuids handed out since the snapshot are never handed out again: an old client's
  // session ref must not come back to life as a new client's
  emu.ids.counter = Math.max(emu.ids.counter, l.ids.counter);
  emu.db.flush(true);
  return { changed, copied, removed };
}

export function restoreSnapshot(emu: Emulator, name: string, opts: WaitOptions = {}): Promise<RestoreResult> {
  if (name !== INITIAL) assertName(name);
  return serial(emu, async () => {
    const t0 = performance.now();
    const l = load(emu, name);
    if (l.pool !== emu.pool || (!l.live && !l.rows.some((r) => r.cls === 'pool' && r.ref === emu.pool))) {
      throw new ControlError(409, 'SNAPSHOT_INVALID', `snapshot ${name} is of another pool`, [name]);
    }
    await drain(emu, 'restore a snapshot', opts);
    // on disk before the restore is marked under way: the next start may have to finish it
    materialize(emu, l);
    const srs = l.rows.filter((r) => r.cls === 'SR').map((r) => String((JSON.parse(r.data) as { uuid?: string }).uuid));
    if (l.live) for (const r of l.live.saved.values()) if (r.cls === 'SR') srs.push(String((JSON.parse(r.data) as { uuid?: string }).uuid));
    const r = await withSrLocks(emu, srs, () => restoreLocked(emu, name, l));
    // then what keeps state of its own beside the database: the simulated guests (boots under way
    // are armed again), and any module registered with onRestore
    resyncGuests(emu);
    for (const hook of restoreHooks) await hook(emu);
    emu.db.flush();
    return { ...r, ms: Math.round((performance.now() - t0) * 100) / 100 };
  });
}

async function restoreLocked(emu: Emulator, name: string, l: Loaded): Promise<RestoreResult> {
  writeFileSync(marker(emu), name);
  // every session ends, waking its event.from waiters with SESSION_INVALID
  let sessions = 0;
  for (const ref of [...emu.db.table('session').keys()]) {
    destroySession(emu, ref);
    sessions++;
  }
  for (const ref of [...emu.db.table('task').keys()]) destroyTask(emu, ref);
  emu.cancelHooks.clear();
  emu.clientTasks.clear();
  // the domains go first: their tapdisks close before their files are replaced
  const xs = emu.hosts.map((h) => ({ x: xenopsOf(emu, h), uuid: String(emu.db.get('host', h)?.uuid) }));
  for (const { x } of xs) await x.dropDomains();
  const { changed, copied, removed } = applyFilesAndDb(emu, l);
  rmSync(marker(emu), { force: true });
  let domains = 0;
  for (const { x, uuid } of xs) {
    const s = l.xenopsd[uuid] ?? { nextDomid: 1, metadata: [], suspended: [], domains: [] };
    await x.importState(s);
    domains += s.domains.length;
  }
  // the API side's resync of what xenopsd reports (a no-op when both sides are the snapshot's)
  await new Promise((r) => setImmediate(r));
  return {
    name: name === INITIAL ? 'initial' : name, objects_changed: changed, sessions_ended: sessions, files_copied: copied, files_removed: removed,
    domains, ms: 0,
  };
}

/** Work run at the end of every restore, for state kept outside the database and xenopsd. */
const restoreHooks: ((emu: Emulator) => void | Promise<void>)[] = [];

/** Registers work to run after each restore (e.g. the simulated guests' resync). */
export function onRestore(hook: (emu: Emulator) => void | Promise<void>): void {
  restoreHooks.push(hook);
}

export const resetPool = (emu: Emulator, opts: WaitOptions = {}): Promise<RestoreResult> => restoreSnapshot(emu, INITIAL, opts);

/**
 * At start, before the API layer runs: leftovers of snapshots cut by a kill are removed, and a
 * restore cut half-way is finished (its files and database; the domains are gone with the process).
 */
export function restoreInterrupted(emu: Emulator): void {
  const root = snapshotsDir(emu);
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return;
  }
  for (const n of names) if (n.startsWith('.tmp-') || n.startsWith('.trash-')) rmSync(join(root, n), { recursive: true, force: true });
  let name: string;
  try {
    name = readFileSync(marker(emu), 'utf8');
  } catch {
    return;
  }
  try {
    if (statSync(join(root, name, 'state.json')).isFile()) applyFilesAndDb(emu, load(emu, name));
  } catch (e) {
    console.error(`xapi-emu: could not finish restoring snapshot ${name}: ${(e as Error).message}`);
  }
  rmSync(marker(emu), { force: true });
}
