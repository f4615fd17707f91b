// The invariants of a pool's state: what must hold between the objects of the database, the
// domains of xenopsd and the files of the SRs whenever no operation is in flight. Used by the
// robustness harnesses and tests, and by `xapi-emu check --data DIR` on a stopped emulator.
import { model, classes, type Ty } from '../../schema/index.js';
import { NULL_REF, type Rec } from '../../storage/database.js';
import type { Emulator } from '../emulator.js';
import { xenopsOf } from '../api/xenops-sync.js';
import { fileSrProblems } from '../sm/consistency.js';

/** What the checker reads: a running Emulator, or the database of a stopped one (command.ts). */
export type CheckTarget = Pick<Emulator, 'db' | 'storageDir' | 'cancelHooks' | 'taskSessions'>;

export interface Violation {
  /** which invariant: ref, relation, power, vbd, task, operation, suspend, userdevice, file */
  kind: string;
  cls: string;
  ref: string;
  message: string;
}

export interface CheckOptions {
  /** The emulator runs (its xenopsds are bound, tasks live): check domains, tasks and
   * current_operations too. Off for a database read from a stopped emulator, whose volatile state
   * (domains, tasks, operations in flight) is gone and reset by the next start. Default true. */
  live?: boolean;
  /** No call is in flight: every pending task is then a task left behind. Default true. */
  quiescent?: boolean;
  /** check SR directories against VDI records (default true) */
  files?: boolean;
}

/**
 * Ref fields that xapi itself leaves pointing at destroyed objects; any other ref must resolve or be
 * NULL. Fields the datamodel marks ignore_foreign_key (role ids, update lists ...) are exempt too.
 *  - VM.snapshot_of: VM.destroy (xapi_vm_helpers.ml) deletes the VM's records but leaves its
 *    snapshots pointing at it: they become orphan snapshots, still listed by clients.
 *  - VDI.snapshot_of: VDI.destroy (xapi_vdi.ml) does not touch the snapshots of the VDI.
 *  - task.subtask_of: a parent task is destroyed by its caller or the GC (db_gc_util.ml) without
 *    its subtasks.
 *  - session.parent: a child session outlives its parent's logout until the session GC
 *    (db_gc_util.ml) finds its parent gone.
 * Not in the list: VM.parent (VM.destroy in xapi_vm.ml rebases the children onto the destroyed
 * VM's parent) and VM.suspend_VDI (VDI.destroy sets it to NULL in every VM that names it).
 * The one state below that xapi itself can reach: a client's own VDI.destroy of a Suspended VM's
 * image leaves the VM Suspended with a NULL suspend_VDI; the emulator's operations never do.
 */
export const DANGLING_ALLOWED: ReadonlySet<string> = new Set(['VM.snapshot_of', 'VDI.snapshot_of', 'task.subtask_of', 'session.parent']);

/** The refs a value holds, each with the class it must name. */
const refsIn = (ty: Ty, v: unknown, out: [string, string][]): void => {
  switch (ty.k) {
    case 'ref':
      if (typeof v === 'string' && v !== NULL_REF && v !== '') out.push([ty.class, v]);
      return;
    case 'set':
    case 'option':
      if (Array.isArray(v)) for (const x of v) refsIn(ty.of, x, out);
      else if (ty.k === 'option' && v !== undefined && v !== null) refsIn(ty.of, v, out);
      return;
    case 'map':
      if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
          refsIn(ty.key, k, out);
          refsIn(ty.value, x, out);
        }
      }
      return;
    default:
  }
};

const hasRef = (ty: Ty): boolean =>
  ty.k === 'ref' || ((ty.k === 'set' || ty.k === 'option') && hasRef(ty.of)) || (ty.k === 'map' && (hasRef(ty.key) || hasRef(ty.value)));

/** Per class, the fields that may hold refs and must resolve. */
const refFields = model.classes.map((c) => ({
  cls: c.name,
  fields: c.fields.filter((f) => hasRef(f.ty) && !f.ignore_foreign_key && !DANGLING_ALLOWED.has(`${c.name}.${f.name}`)),
}));

/** Relations kept on both sides, as storage/database.ts mirrors them (fields that are public). */
const relations = model.relations.filter(([a, fa, b, fb]) => {
  const A = classes.get(a)?.field.get(fa);
  const B = classes.get(b)?.field.get(fb);
  return !!A && !!B && !(a === b && fa === fb) && !A.ignore_foreign_key && !B.ignore_foreign_key;
});

const asList = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : typeof v === 'string' && v !== NULL_REF && v !== '' ? [v] : []);

export async function checkInvariants(emu: CheckTarget, opts: CheckOptions = {}): Promise<Violation[]> {
  const live = opts.live ?? true;
  const quiescent = opts.quiescent ?? true;
  const { db } = emu;
  const out: Violation[] = [];
  const bad = (kind: string, cls: string, ref: string, message: string) => out.push({ kind, cls, ref, message });
  const label = (cls: string, ref: string) => `${cls} ${String(db.get(cls, ref)?.uuid ?? ref)}`;

  // every ref resolves to an object of its class, or is NULL, or is one xapi leaves dangling
  for (const { cls, fields } of refFields) {
    if (!live && !classes.get(cls)!.persist) continue;
    for (const [ref, row] of db.table(cls)) {
      for (const f of fields) {
        if (!live && !f.persist) continue;
        const refs: [string, string][] = [];
        refsIn(f.ty, row.rec[f.name], refs);
        for (const [target, r] of refs) {
          if (!db.has(target, r)) bad('ref', cls, ref, `${label(cls, ref)}: ${f.name} = ${r} is no ${target}${db.classOf(r) ? ` (it is a ${db.classOf(r)})` : ''}`);
        }
      }
    }
  }

  // both sides of every relation agree: A.fa names B exactly when B.fb lists A
  for (const [a, fa, b, fb] of relations) {
    if (!live && (!classes.get(a)!.persist || !classes.get(b)!.persist)) continue;
    const ta = db.table(a);
    const tb = db.table(b);
    for (const [ref, row] of ta) {
      for (const other of asList(row.rec[fa])) {
        const o = tb.get(other);
        if (o && !asList(o.rec[fb]).includes(ref)) bad('relation', a, ref, `${label(a, ref)}: ${fa} = ${other} but ${label(b, other)}.${fb} does not list it`);
      }
    }
    for (const [ref, row] of tb) {
      for (const other of asList(row.rec[fb])) {
        const o = ta.get(other);
        if (o && !asList(o.rec[fa]).includes(ref)) bad('relation', b, ref, `${label(b, ref)}: ${fb} lists ${other} but ${label(a, other)}.${fa} is ${JSON.stringify(o.rec[fa])}`);
      }
    }
  }

  // VMs and their devices
  for (const [vm, row] of db.table('VM')) {
    const rec = row.rec;
    const ps = String(rec.power_state);
    if (ps === 'Suspended') {
      const sv = String(rec.suspend_VDI ?? NULL_REF);
      if (sv === NULL_REF || !db.has('VDI', sv)) bad('suspend', 'VM', vm, `${label('VM', vm)}: Suspended with suspend_VDI ${sv} that does not exist`);
    }
    const seen = new Map<string, string>();
    for (const vbd of asList(rec.VBDs)) {
      const b = db.get('VBD', vbd);
      if (!b) continue;
      const dev = String(b.userdevice);
      if (seen.has(dev)) bad('userdevice', 'VM', vm, `${label('VM', vm)}: VBDs ${seen.get(dev)} and ${vbd} share userdevice ${dev}`);
      else seen.set(dev, vbd);
      if (live && b.currently_attached === true && ps !== 'Running' && ps !== 'Paused') {
        bad('vbd', 'VBD', vbd, `${label('VBD', vbd)}: currently_attached on ${label('VM', vm)} which is ${ps}`);
      }
    }
  }

  if (live) {
    checkDomains(emu, bad, label);
    checkTasks(emu, quiescent, bad, label);
  }

  if (opts.files ?? true) {
    for (const sr of db.table('SR').keys()) {
      for (const problem of await fileSrProblems(emu, sr, { leftovers: !live || quiescent })) bad('file', 'SR', sr, problem);
    }
  }
  return out;
}

type Bad = (kind: string, cls: string, ref: string, message: string) => void;

/** A Running/Paused VM has a domain on its resident_on host; a Halted/Suspended one has none. */
function checkDomains(emu: CheckTarget, bad: Bad, label: (cls: string, ref: string) => string): void {
  const { db } = emu;
  const domains = new Map<string, string>(); // VM uuid -> host
  for (const host of db.table('host').keys()) {
    let list: string[];
    try {
      list = xenopsOf(emu as Emulator, host).list();
    } catch {
      bad('power', 'host', host, `${label('host', host)}: no xenopsd bound`);
      continue;
    }
    for (const uuid of list) {
      if (domains.has(uuid)) bad('power', 'host', host, `VM ${uuid} has domains on two hosts`);
      domains.set(uuid, host);
    }
  }
  for (const [vm, row] of db.table('VM')) {
    const rec = row.rec;
    if (rec.is_control_domain === true) continue;
    const ps = String(rec.power_state);
    const uuid = String(rec.uuid);
    const host = domains.get(uuid);
    domains.delete(uuid);
    if (ps === 'Running' || ps === 'Paused') {
      if (!host) bad('power', 'VM', vm, `${label('VM', vm)}: ${ps} but xenopsd has no domain for it`);
      else if (host !== rec.resident_on) bad('power', 'VM', vm, `${label('VM', vm)}: domain on ${host}, resident_on ${String(rec.resident_on)}`);
    } else if (host) {
      bad('power', 'VM', vm, `${label('VM', vm)}: ${ps} but xenopsd runs a domain for it on ${label('host', host)}`);
    }
  }
  for (const [uuid, host] of domains) bad('power', 'host', host, `${label('host', host)}: domain of VM ${uuid} which has no record`);
}

/** classes with current_operations (VM, VDI, SR, VBD, host ...) */
const OPERATED = model.classes.filter((c) => c.field.has('current_operations') && c.name !== 'task').map((c) => c.name);

/** Pending tasks belong to a call in flight; current_operations name pending tasks. */
function checkTasks(emu: CheckTarget, quiescent: boolean, bad: Bad, label: (cls: string, ref: string) => string): void {
  const { db } = emu;
  const inOperations = new Set<string>();
  for (const cls of OPERATED) {
    for (const [ref, row] of db.table(cls)) {
      for (const task of Object.keys((row.rec.current_operations ?? {}) as Rec)) {
        inOperations.add(task);
        const t = db.get('task', task);
        if (!t) bad('operation', cls, ref, `${label(cls, ref)}: current_operations names task ${task} which does not exist`);
        else if (t.status !== 'pending') bad('operation', cls, ref, `${label(cls, ref)}: current_operations names task ${task} which is ${String(t.status)}`);
      }
    }
  }
  for (const [task, row] of db.table('task')) {
    if (row.rec.status !== 'pending') continue;
    if (quiescent) bad('task', 'task', task, `task ${String(row.rec.uuid)} "${String(row.rec.name_label)}" pending with no call in flight`);
    else if (!inOperations.has(task) && !emu.cancelHooks.has(task) && !emu.taskSessions.has(task)) {
      bad('task', 'task', task, `task ${String(row.rec.uuid)} "${String(row.rec.name_label)}" pending with no running operation`);
    }
  }
}

/** One line per violation, as `xapi-emu check` prints them. */
export const formatViolation = (v: Violation): string => `${v.kind}: ${v.message}`;
