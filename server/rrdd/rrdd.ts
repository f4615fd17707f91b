// The simulated xcp-rrdd of each host: one RRD per host and per running VM, brought up to the
// emulator's clock when read (each 5 s step of simulated time gives one PDP, whether or not
// anybody looked), so a pool of a thousand idle VMs costs nothing until its metrics are asked for,
// and a halted VM nothing at all. A VM's RRD lives with its domain: it is not updated while the VM
// is down, and the steps it was down are unknown.
import type { Emulator } from '../emulator.js';
import { xenopsOf } from '../api/xenops-sync.js';
import { Rrd, STEP, fToS, type Cf } from './rrd.js';
import { hostReadings, vmReadings, type Reading } from './sources.js';
import { backup, restore, type Archived } from './archive.js';

/** The steps of a catch-up computed one by one (the single-step archive's rows); earlier ones are
 * one run of equal PDPs. */
const DETAILED_STEPS = 120;

interface Kept {
  rrd: Rrd;
  /** counters at the last update, and its time (s) */
  counters: Map<string, number>;
  /** the domain's start (ms) the RRD follows */
  domainStart?: number;
  /** a host's uuid, its backup's name */
  uuid?: string;
  /** the RRD began with its domain, whose devices counted from 0 then: the I/O done before the
   * first reading belongs to the first span, as xcp-rrdd sampling since the start would show */
  fromZero?: boolean;
}

/** xapi's periodic scheduler backs the RRDs up an hour after it starts, then every
 * rrd_backup_interval (xapi_periodic_scheduler_init.ml, xapi_globs.ml), in seconds */
export const RRD_BACKUP_DELAY = 3600;
export const RRD_BACKUP_INTERVAL = 86400;

/** What the daemon holds: the RRDs by host ref and VM uuid, and those read back from the last
 * backup, taken when their host or VM is first asked for. */
interface RrddState {
  hosts: Map<string, Kept>;
  vms: Map<string, Kept>;
  restored: Map<string, Archived>;
  /** where backups go (none for a pool in memory) */
  dataDir?: string;
  /** when the next periodic backup is due (ms of the emulator's clock) */
  nextBackup: number;
}

/** backup_rrds: every RRD kept to the data directory */
function backupState(state: RrddState): void {
  if (!state.dataDir) return;
  const all = new Map<string, Archived>();
  for (const k of state.hosts.values()) if (k.uuid !== undefined) all.set(k.uuid, { rrd: k.rrd });
  for (const [uuid, k] of state.vms) all.set(uuid, { rrd: k.rrd, domainStart: k.domainStart });
  backup(state.dataDir, all);
}

class Rrdd {
  readonly hosts: Map<string, Kept>;
  readonly vms: Map<string, Kept>;
  private readonly restored: Map<string, Archived>;

  constructor(readonly emu: Emulator, private readonly state: RrddState) {
    ({ hosts: this.hosts, vms: this.vms, restored: this.restored } = state);
  }

  /** The periodic backup, once its time has come: looked at as the clock is advanced and as RRDs
   * are read (they only change when read), so no wall-clock timer runs for it. */
  backupIfDue(): void {
    const now = this.emu.clock.now();
    if (now < this.state.nextBackup) return;
    while (this.state.nextBackup <= now) this.state.nextBackup += RRD_BACKUP_INTERVAL * 1000;
    // a pool in memory keeps no backup: nothing to bring up to date for one
    if (!this.state.dataDir) return;
    try {
      // xcp-rrdd's RRDs are current when it writes them: those of this pool's hosts catch up first
      for (const host of [...this.hosts.keys()]) {
        if (!this.emu.hosts.includes(host)) continue;
        this.host(host);
        for (const [uuid, ref] of this.residentVms(host)) this.vm(host, ref, uuid);
      }
      this.backup();
    } catch {
      // (a failed backup is logged and ignored by xapi; the next one tries again)
    }
  }

  private fromBackup(uuid: string): Kept | undefined {
    const a = this.restored.get(uuid);
    if (!a) return undefined;
    this.restored.delete(uuid);
    return { rrd: a.rrd, counters: new Map(), domainStart: a.domainStart };
  }

  /** backup_rrds: every RRD to the data directory (none without one) */
  backup(): void {
    backupState(this.state);
  }

  get seed(): string {
    return this.emu.ids.seed ?? this.emu.pool;
  }

  /** The host's RRD, up to date. */
  host(host: string): Rrd {
    const x = xenopsOf(this.emu, host);
    const now = this.emu.clock.now() / 1000;
    let k = this.hosts.get(host);
    const readings = hostReadings(this.emu, this.seed, x, host);
    const uuid = String(this.emu.db.get('host', host)!.uuid);
    if (!k && (k = this.fromBackup(uuid))) this.hosts.set(host, k);
    if (!k) {
      // the host has been up since long before anyone asked: its RRD starts one archive back
      k = { rrd: new Rrd([], now - STEP * DETAILED_STEPS), counters: new Map() };
      this.hosts.set(host, k);
    }
    k.uuid = uuid;
    update(k, readings, now);
    this.backupIfDue();
    return k.rrd;
  }

  /** The RRD of a VM running on `host` (by uuid), up to date; undefined if it runs elsewhere or not. */
  vm(host: string, vm: string, uuid: string): Rrd | undefined {
    const x = xenopsOf(this.emu, host);
    const d = x.internals().domains.get(uuid);
    if (!d) {
      const kept = this.vms.get(uuid) ?? this.fromBackup(uuid);
      if (kept) this.vms.set(uuid, kept);
      return kept?.rrd;
    }
    const now = this.emu.clock.now() / 1000;
    let k = this.vms.get(uuid);
    const start = d.createTime / 1000;
    if (!k && (k = this.fromBackup(uuid))) this.vms.set(uuid, k);
    if (!k) {
      k = { rrd: new Rrd([], Math.min(now, start)), counters: new Map(), domainStart: d.createTime, fromZero: start <= now };
      this.vms.set(uuid, k);
    } else if (k.domainStart !== d.createTime) {
      // a new domain: the steps the VM was down are unknown, its devices' counters start again
      k.domainStart = d.createTime;
      k.counters.clear();
      k.fromZero = true;
      const gap = Math.floor(start / STEP) - k.rrd.pdpIndex;
      if (gap > 0) k.rrd.pushPdps(new Float64Array(k.rrd.dss.length).fill(NaN), gap, start);
    }
    update(k, vmReadings(this.emu, this.seed, x, vm, uuid), now);
    this.backupIfDue();
    return k.rrd;
  }

  /** put_rrd_handler: a VM's RRD pushed to this host (a migration's), in place of the one kept;
   * it follows the domain running here, if any. */
  putVm(host: string, uuid: string, rrd: Rrd): void {
    const d = xenopsOf(this.emu, host).internals().domains.get(uuid);
    this.restored.delete(uuid);
    this.vms.set(uuid, { rrd, counters: new Map(), domainStart: d?.createTime });
  }

  /** archive_rrd_internal on the master: the RRD kept as its uuid's backup, the one a host or VM
   * that has none live takes up. */
  archive(uuid: string, rrd: Rrd): void {
    if (this.state.dataDir) backup(this.state.dataDir, new Map([[uuid, { rrd }]]));
    this.restored.set(uuid, { rrd });
  }

  /** The uuids of the VMs running on `host` with their refs. */
  residentVms(host: string): [uuid: string, ref: string][] {
    const out: [string, string][] = [];
    for (const uuid of xenopsOf(this.emu, host).internals().domains.keys()) {
      const ref = this.emu.db.refByUuid('VM', uuid);
      if (ref) out.push([uuid, ref]);
    }
    return out;
  }
}

/** Brings an RRD to `now`: new data sources are added, each PDP since the last update gets its
 * value (a counter's rate is spread evenly over the time since its last reading). */
function update(k: Kept, readings: Reading[], now: number): void {
  const rrd = k.rrd;
  for (const r of readings) if (!rrd.dss.some((d) => d.name === r.def.name)) rrd.addDs(r.def);
  const steps = Math.floor(now / STEP) - rrd.pdpIndex;
  if (steps <= 0) return;
  const elapsed = now - rrd.lastUpdated;
  const byName = new Map(readings.map((r) => [r.def.name, r]));
  const rates = new Map<string, number>();
  // a counter first seen while others were already counted is a new device's (a hot-plugged
  // VBD's tapdisk): it started from 0 within this span
  const counting = k.counters.size > 0;
  for (const r of readings) {
    if (!('counter' in r)) continue;
    const last = k.counters.get(r.def.name) ?? (k.fromZero || counting ? 0 : undefined);
    // a counter that went back (a tapdisk replaced) gives no rate for this span
    rates.set(r.def.name, last === undefined || r.counter < last || elapsed <= 0 ? (last === undefined ? 0 : NaN) : (r.counter - last) / elapsed);
    k.counters.set(r.def.name, r.counter);
  }
  k.fromZero = false;
  const values = new Float64Array(rrd.dss.length);
  const fill = (pdp: number) => {
    rrd.dss.forEach((d, i) => {
      const r = byName.get(d.name);
      // a data source whose device is gone is unknown
      values[i] = !r ? NaN : 'counter' in r ? rates.get(d.name)! : r.at(pdp);
    });
  };
  const first = rrd.pdpIndex + 1;
  const bulk = Math.max(0, steps - DETAILED_STEPS);
  if (bulk > 0) {
    fill(first);
    rrd.pushPdps(values, bulk, (first + bulk - 1) * STEP);
  }
  for (let p = first + bulk; p < first + steps; p++) {
    fill(p);
    rrd.pushPdps(values, 1, p === first + steps - 1 ? now : p * STEP);
  }
}

/** One xcp-rrdd per machine (the emulator's storage directory): like xenopsd, it outlives a
 * toolstack restart (a new Emulator on the same storage finds it again); a new process starts
 * from the last backup. */
const machines = new Map<string, RrddState>();
const daemons = new WeakMap<Emulator, Rrdd>();
export function rrddOf(emu: Emulator): Rrdd {
  let r = daemons.get(emu);
  if (r) return r;
  const dataDir = emu.opts.dataDir;
  // a pool in memory keeps its Emulator through a toolstack restart, and nothing after
  let state = dataDir ? machines.get(emu.storageDir) : undefined;
  if (!state) {
    state = {
      hosts: new Map(), vms: new Map(), restored: dataDir ? restore(dataDir) : new Map(), dataDir: dataDir ?? undefined,
      nextBackup: emu.clock.now() + RRD_BACKUP_DELAY * 1000,
    };
    if (dataDir) machines.set(emu.storageDir, state);
  }
  const daemon = new Rrdd(emu, state);
  r = daemon;
  daemons.set(emu, daemon);
  emu.clock.onAdvance(() => daemon.backupIfDue());
  return r;
}

export class NoRraAvailable extends Error {}

/** Rrd_updates.create_multi: rows of the archives of `cf` that hold `start`, for several RRDs with
 * their legend prefixes ("host:<uuid>:", "vm:<uuid>:"). */
export interface Updates {
  start: number;
  step: number;
  end: number;
  legend: string[];
  rows: { t: number; values: number[] }[];
}

export function exportUpdates(sets: [prefix: string, rrd: Rrd][], start: number, interval: number, cf: Cf | null): Updates {
  if (sets.length === 0) throw new NoRraAvailable();
  const lastUpdated = sets[0][1].lastUpdated;
  const pdpInterval = Math.floor(interval / STEP);
  // a negative start is relative to the latest update
  const from = Math.min(...sets.map(([, r]) => (start < 0 ? Math.floor(start + r.lastUpdated) : start)));
  const chosen = sets.map(([, r]) => r.bestRras(pdpInterval, cf, from));
  const firstRra = chosen.find((c) => c.length > 0)?.[0];
  if (!firstRra) throw new NoRraAvailable();
  const kept = chosen.map((c) => c.filter((r) => r.pdpCnt === firstRra.pdpCnt && r.rows === firstRra.rows));
  const legend: string[] = [];
  sets.forEach(([prefix, rrd], j) => {
    for (const rra of kept[j]) for (const d of rrd.dss) legend.push(`${rra.cf}:${prefix}${d.name}`);
  });
  const rraStep = STEP * firstRra.pdpCnt;
  const lastCdp = Math.floor(lastUpdated / rraStep) * rraStep;
  const firstCdp = Math.floor(from / rraStep) * rraStep + rraStep;
  const rows: Updates['rows'] = [];
  for (let i = 0; i < firstRra.rows; i++) {
    const t = lastCdp - i * rraStep;
    if (t < from) break;
    const values: number[] = [];
    sets.forEach(([, rrd], j) => {
      for (const rra of kept[j]) for (let d = 0; d < rrd.dss.length; d++) values.push(rrd.peek(rra, d, i));
    });
    rows.push({ t, values });
  }
  return { start: firstCdp, step: rraStep, end: lastCdp, legend, rows };
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Rrd_updates.xml_of: rrdtool's xport, as Xmlm writes it (a declaration, no whitespace). */
export function updatesXml(u: Updates): string {
  const parts: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n<xport><meta>'];
  parts.push(`<start>${u.start}</start><step>${u.step}</step><end>${u.end}</end><rows>${u.rows.length}</rows><columns>${u.legend.length}</columns><legend>`);
  for (const l of u.legend) parts.push(`<entry>${esc(l)}</entry>`);
  parts.push('</legend></meta><data>');
  for (const r of u.rows) {
    parts.push(`<row><t>${r.t}</t>`);
    for (const v of r.values) parts.push(`<v>${fToS(v)}</v>`);
    parts.push('</row>');
  }
  parts.push('</data></xport>');
  return parts.join('');
}

/** Rrd_updates.json_of_t: every number a JSON string (rrd.ml's Json module). */
export function updatesJson(u: Updates): string {
  const s = String;
  return JSON.stringify({
    meta: { start: s(u.start), step: s(u.step), end: s(u.end), rows: s(u.rows.length), columns: s(u.legend.length), legend: u.legend },
    data: u.rows.map((r) => ({ t: s(r.t), values: r.values.map(fToS) })),
  });
}

/** The machine stops cleanly (the process's emulator is disposed): its RRDs are backed up first,
 * as xapi does before a host shuts down (xapi_host.ml); a kill loses what came after the last
 * backup. */
export function forgetMachineRrds(storageDir: string): void {
  const state = machines.get(storageDir);
  machines.delete(storageDir);
  if (!state) return;
  try {
    backupState(state);
  } catch {
    // a stop goes on without its backup, as xapi's log_and_ignore_exn
  }
}

/** host.backup_rrds: a backup after `delay` seconds of the emulator's clock (xapi schedules it). */
export function backupRrds(emu: Emulator, delay: number): void {
  const rrdd = rrddOf(emu);
  if (!(delay > 0)) return rrdd.backup();
  emu.clock.sleep(delay).then(() => rrdd.backup(), () => undefined).catch(() => undefined);
}
