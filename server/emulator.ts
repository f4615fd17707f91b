// One emulated pool: its database, identifiers, clock, configuration and the services the API
// layer needs. Transports and CLI sit on top of it; providers receive it through each call.
import { join } from 'node:path';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { model } from '../schema/index.js';
import { Database } from '../storage/database.js';
import { Ids } from '../storage/ids.js';
import { Clock } from './clock.js';
import { createDefaultPool } from './pool/default-pool.js';
import { ensureUsers, type UserSpec } from './auth/users.js';
import { defaultConf, type XapiConf } from './config.js';
import { startGc } from './api/task-gc.js';
import './api/index.js';
import { startSm } from './sm/index.js';
import { startNetworkd } from './networkd/index.js';
import { undoCutImports } from './xva/import-journal.js';
import { repairCutMigrations } from './api/migrate-recovery.js';
import { startXenops } from './api/xenops-sync.js';
import { resumeHa } from './api/ha-failover.js';
import { destroyMachine } from './xenopsd/index.js';
import { forgetMachineRrds } from './rrdd/rrdd.js';
import type { GuestProfile } from './guest/profile.js';

export interface EmulatorOptions {
  /** data directory; null = nothing on disk */
  dataDir: string | null;
  hosts: number;
  seed?: string;
  /** root's password */
  password: string;
  users?: UserSpec[];
  timeScale?: number;
  /** the clock to keep (a toolstack restart keeps the host's clock) */
  clock?: Clock;
  /** seconds before SESSION_AUTHENTICATION_FAILED is answered (xapi: 5) */
  authFailDelay?: number;
  conf?: XapiConf;
  /** address of host i (host 0 is the master) */
  hostAddress?: (i: number) => string;
  now?: number;
  /** the guest profile of VMs that name none, when the pool names none either (default agent) */
  guestProfile?: GuestProfile;
}

export class Emulator {
  readonly db: Database;
  readonly ids: Ids;
  readonly clock: Clock;
  conf: XapiConf;
  password: string;
  users: UserSpec[];
  authFailDelay: number;
  readonly pool: string;
  /** The pool's master: pool.master, which a change of master role writes (server/pool/master-role.ts) */
  get master(): string {
    return this.db.get('pool', this.pool)!.master as string;
  }
  set master(host: string) {
    this.db.update('pool', this.pool, { master: host });
  }
  readonly hosts: string[];
  /** classes whose calls run without a task (task, event ... in Datamodel.no_task_id_for) */
  readonly noTaskClasses = new Set(model.classes.filter((c) => c.no_task_id).map((c) => c.name));
  /** running operations that can be cancelled, by task ref */
  readonly cancelHooks = new Map<string, () => void>();
  /** tasks made by task.create: a client's own, with no work of the emulator behind them (a state
   * snapshot waits for the others to end) */
  readonly clientTasks = new Set<string>();
  /** the session that owns each task (task.session is an internal field of the datamodel) */
  readonly taskSessions = new Map<string, string>();
  /** Where SR contents live (<storageDir>/sr/<sr-uuid>/): the data directory, or with no data
   * directory (--memory) a temporary directory made now and removed by dispose() or at exit. */
  readonly storageDir: string;
  private readonly tempStorage: boolean;
  private stopGc: () => void = () => {};
  private stopSm: () => void = () => {};
  private stopXenops: () => void = () => {};

  constructor(readonly opts: EmulatorOptions) {
    if (opts.dataDir) mkdirSync(opts.dataDir, { recursive: true });
    this.tempStorage = !opts.dataDir;
    this.storageDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'xapi-emu-'));
    if (this.tempStorage) tempDirs.add(this.storageDir);
    this.db = new Database({ file: opts.dataDir ? join(opts.dataDir, 'xapi.db') : null });
    const counter = Number(this.db.getMeta('ids.counter') ?? 0);
    this.ids = new Ids(opts.seed ?? this.db.getMeta('ids.seed'), counter);
    this.db.metaHook = () => ({ 'ids.counter': String(this.ids.counter), ...(this.ids.seed ? { 'ids.seed': this.ids.seed } : {}) });
    this.clock = opts.clock ?? new Clock(opts.timeScale ?? 0);
    this.conf = opts.conf ?? defaultConf();
    this.password = opts.password;
    this.users = opts.users ?? [];
    this.authFailDelay = opts.authFailDelay ?? 5;
    const hostAddress = opts.hostAddress ?? ((i: number) => `127.0.0.${i + 1}`);
    if (this.db.isEmpty) {
      createDefaultPool(this.db, this.ids, { hosts: opts.hosts, now: opts.now ?? Date.now(), hostAddress, dataDir: opts.dataDir });
    }
    const [pool] = this.db.table('pool').keys();
    this.pool = pool;
    this.hosts = [this.master, ...[...this.db.table('host').keys()].filter((h) => h !== this.master)];
    ensureUsers(this);
    this.db.flush();
  }

  /** The SR mount points' parent directory. */
  get srRoot(): string {
    return join(this.storageDir, 'sr');
  }

  /** Starts the background work (task and session GC, storage attach and GC). */
  start(): void {
    this.stopGc = startGc(this);
    startNetworkd(this);
    this.stopSm = startSm(this);
    undoCutImports(this);
    repairCutMigrations(this);
    this.stopXenops = startXenops(this);
    resumeHa(this);
  }

  /** session.change_password: lasts until the emulator restarts, when --password applies again */
  setPassword(pwd: string): void {
    this.password = pwd;
  }

  hostByAddress(address: string): string | undefined {
    for (const [ref, row] of this.db.table('host')) if (row.rec.address === address) return ref;
    return undefined;
  }

  close(): void {
    this.stopXenops();
    this.stopSm();
    this.stopGc();
    this.db.close();
  }

  /** After close(), for good: removes the temporary storage of an in-memory emulator. */
  dispose(): void {
    // the machine stops: its domains (and their tapdisks) go with it
    void destroyMachine(this.storageDir);
    forgetMachineRrds(this.storageDir);
    if (!this.tempStorage) return;
    rmSync(this.storageDir, { recursive: true, force: true });
    tempDirs.delete(this.storageDir);
  }
}

/** Temporary storage directories of in-memory emulators still alive: removed when the process exits. */
const tempDirs = new Set<string>();
process.once('exit', () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
