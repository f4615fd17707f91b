// allowed_operations / current_operations for any class that has them (WIRE.md §8), as xapi's
// message_forwarding.ml marks objects (with_vm_operation, with_sr_marked, with_sr_andor_vdi):
//  1. under the global lock, check the operation (the class's rule function; the first error wins),
//     write current_operations[task] = op and recompute allowed_operations;
//  2. run the operation;
//  3. remove the entry and recompute allowed_operations.
// A check failing with OTHER_OPERATION_IN_PROGRESS is not final: xapi's Helpers.retry waits for the
// blocking object to be unmarked (Early_wakeup) or a random 1-20 s, and tries again for up to two
// hours (Repeat_with_uniform_backoff.standard) before the error reaches the client. The waiting task
// is cancellable. Waits are in simulated time: at time scale 0 only an unmark wakes a waiter.
// JavaScript runs one callback at a time, so a synchronous check-and-mark is the global lock.
import type { Emulator } from '../emulator.js';
import type { Call } from '../dispatch/registry.js';
import type { Rec } from '../../storage/database.js';
import { XapiError } from '../dispatch/errors.js';
import { assertNotCancelling, createTask, destroyTask } from './task-runner.js';

/** The rules of one class. */
export interface OperationRules {
  /** every operation allowed_operations may list, in the order it lists them */
  allOps: readonly string[];
  /** allOps less those that the record's state alone rules out (optional): allowed_operations
   * checks only these, without building an error for each of the others */
  candidates?(rec: Rec): readonly string[];
  /** The error `op` would fail with on this object now (xapi's check_operation_error), or null.
   * `strict` is false when checking the operation being started and true when computing
   * allowed_operations (xapi's VM checks differ between the two). */
  check(emu: Emulator, ref: string, rec: Rec, op: string, strict: boolean): XapiError | null;
  /** orders allowed_operations (default: allOps order) */
  order?: (ops: string[]) => string[];
}

const rules = new Map<string, OperationRules>();

export function registerOperations(cls: string, r: OperationRules): void {
  rules.set(cls, r);
}

function rulesOf(cls: string): OperationRules {
  const r = rules.get(cls);
  if (!r) throw new Error(`no operation rules for ${cls}`);
  return r;
}

/** The error `op` would fail with now, or null. */
export function operationError(emu: Emulator, cls: string, ref: string, op: string, strict = false): XapiError | null {
  const rec = emu.db.get(cls, ref);
  if (!rec) return new XapiError('HANDLE_INVALID', [cls, ref]);
  return rulesOf(cls).check(emu, ref, rec, op, strict);
}

export function assertOperationValid(emu: Emulator, cls: string, ref: string, op: string): void {
  const e = operationError(emu, cls, ref, op);
  if (e) throw e;
}

/** Recomputes allowed_operations of one object (a no-op for a destroyed one). */
export function updateAllowedOperations(emu: Emulator, cls: string, ref: string): void {
  const rec = emu.db.get(cls, ref);
  if (!rec) return;
  const r = rulesOf(cls);
  let ops = (r.candidates?.(rec) ?? r.allOps).filter((op) => r.check(emu, ref, rec, op, true) === null);
  if (r.order) ops = r.order(ops);
  emu.db.update(cls, ref, { allowed_operations: ops });
}

/** Recomputes allowed_operations of every object of a class. */
export function updateAllAllowedOperations(emu: Emulator, cls: string): void {
  for (const ref of [...emu.db.table(cls).keys()]) updateAllowedOperations(emu, cls, ref);
}

/** The entries (task -> op) of an object's current_operations. */
export function currentOperations(rec: Rec): [string, string][] {
  return Object.entries((rec.current_operations ?? {}) as Record<string, string>);
}

/** OTHER_OPERATION_IN_PROGRESS for the first entry of current_operations that `blocks`, or null. */
export function otherOperationInProgress(cls: string, ref: string, rec: Rec, blocks: (op: string) => boolean = () => true): XapiError | null {
  for (const [task, op] of currentOperations(rec)) {
    if (blocks(op)) return new XapiError('OTHER_OPERATION_IN_PROGRESS', [cls, ref, op, task]);
  }
  return null;
}

// ---- waking up waiters (xapi's Helpers.Early_wakeup) ----

// xapi wakes a waiter when the object it waits for is unmarked, or after its delay. With time frozen
// (scale 0) there is no delay, so a waiter wakes whenever any object is unmarked and checks again:
// the object that blocked it may be unmarked under another name (a VBD operation blocking a VDI).
const waiters = new WeakMap<Emulator, Set<() => void>>();

function waitersOf(emu: Emulator): Set<() => void> {
  let set = waiters.get(emu);
  if (!set) waiters.set(emu, (set = new Set()));
  return set;
}

/** Wakes the calls waiting for an object's current_operations to change (call it when an
 * operation ends other than through withOperations). */
export function broadcastOperations(emu: Emulator, _cls: string, _ref: string): void {
  for (const w of [...waitersOf(emu)]) w();
}

// ---- retry policies (Helpers.Policy = Repeat_with_uniform_backoff) ----

export interface RetryPolicy {
  minDelay: number;
  maxDelay: number;
  /** simulated seconds of waiting after which the error reaches the caller */
  maxTotalWait: number;
}

export const POLICY_STANDARD: RetryPolicy = { minDelay: 1, maxDelay: 20, maxTotalWait: 7200 };
export const POLICY_FAIL_QUICKLY: RetryPolicy = { minDelay: 2, maxDelay: 2, maxTotalWait: 120 };
/** OCaml's min_float: the first wait still happens, the second fails */
export const POLICY_FAIL_IMMEDIATELY: RetryPolicy = { minDelay: 0, maxDelay: 3, maxTotalWait: 2.2250738585072014e-308 };

/** Waits until an operation ends, the task is cancelled, or `seconds` of simulated time passed
 * (never, at time scale 0). Returns the simulated seconds waited. */
function wakeupOrTimeout(call: Call, seconds: number): Promise<number> {
  const { emu } = call;
  const started = Date.now();
  return new Promise((resolve) => {
    const set = waitersOf(emu);
    const prevCancel = emu.cancelHooks.get(call.task);
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      set.delete(done);
      if (timer) clearTimeout(timer);
      if (emu.cancelHooks.get(call.task) === onCancel) {
        if (prevCancel) emu.cancelHooks.set(call.task, prevCancel);
        else emu.cancelHooks.delete(call.task);
      }
      const scale = emu.clock.scale;
      resolve(scale > 0 ? (Date.now() - started) / 1000 / scale : 0);
    };
    const onCancel = () => {
      prevCancel?.();
      done();
    };
    set.add(done);
    emu.cancelHooks.set(call.task, onCancel);
    if (emu.clock.scale > 0) timer = setTimeout(done, seconds * emu.clock.scale * 1000);
  });
}

export interface Mark {
  cls: string;
  ref: string;
  op: string;
}

export interface OperationOptions {
  policy?: RetryPolicy;
  /** more checks made with the marking, under the same retry (PBD.unplug's check of the SR's VDIs) */
  precheck?: () => void;
}

function markAll(call: Call, marks: Mark[]): void {
  const { emu } = call;
  const done: Mark[] = [];
  try {
    for (const m of marks) {
      assertOperationValid(emu, m.cls, m.ref, m.op);
      const rec = emu.db.get(m.cls, m.ref)!;
      emu.db.update(m.cls, m.ref, { current_operations: { ...(rec.current_operations as object), [call.task]: m.op } });
      done.push(m);
      updateAllowedOperations(emu, m.cls, m.ref);
    }
  } catch (e) {
    unmarkAll(call, done);
    throw e;
  }
}

function unmarkAll(call: Call, marks: Mark[]): void {
  const { emu } = call;
  for (const m of marks) {
    const rec = emu.db.get(m.cls, m.ref);
    if (!rec) {
      broadcastOperations(emu, m.cls, m.ref);
      continue;
    }
    const ops = { ...(rec.current_operations as Record<string, string>) };
    delete ops[call.task];
    emu.db.update(m.cls, m.ref, { current_operations: ops });
    updateAllowedOperations(emu, m.cls, m.ref);
    broadcastOperations(emu, m.cls, m.ref);
  }
}

/** Marks the objects (in order: SR before VDI, as with_sr_andor_vdi), retrying while another
 * operation is in progress, then runs fn and unmarks them whatever happens. */
export async function withOperations<T>(call: Call, marks: Mark[], fn: () => Promise<T> | T, opts: OperationOptions = {}): Promise<T> {
  const { emu } = call;
  const policy = opts.policy ?? POLICY_STANDARD;
  let waited = 0;
  // Helpers.retry marks the task cancellable before its first attempt
  if (emu.db.has('task', call.task)) emu.db.update('task', call.task, { allowed_operations: ['cancel'] });
  for (;;) {
    assertNotCancelling(emu, call.task);
    try {
      opts.precheck?.();
      markAll(call, marks);
      break;
    } catch (e) {
      if (!(e instanceof XapiError) || e.code !== 'OTHER_OPERATION_IN_PROGRESS' || e.params.length === 0) throw e;
      if (waited >= policy.maxTotalWait) throw e;
      const delay = policy.minDelay + (policy.maxDelay - policy.minDelay) * Math.random();
      waited += await wakeupOrTimeout(call, delay);
    }
  }
  try {
    return await fn();
  } finally {
    unmarkAll(call, marks);
  }
}

export function withOperation<T>(call: Call, cls: string, ref: string, op: string, fn: () => Promise<T> | T, opts?: OperationOptions): Promise<T> {
  return withOperations(call, [{ cls, ref, op }], fn, opts);
}

/** Runs fn in a subtask of the call's task, as xapi's code calls the API from inside an operation
 * (Helpers.call_api_functions): an operation it marks on an object the caller already marked gets
 * its own current_operations entry instead of overwriting (and then removing) the caller's. */
export async function inSubtask<T>(call: Call, label: string, fn: (sub: Call) => Promise<T>): Promise<T> {
  const task = createTask(call.emu, { label, session: call.session, host: call.host, subtaskOf: call.task });
  try {
    return await fn({ ...call, task, label });
  } finally {
    destroyTask(call.emu, task);
  }
}

/** Drops current_operations entries of tasks that no longer exist (after a restart, as xapi's
 * cancel_tasks at startup) and recomputes allowed_operations of every object of the classes. */
export function resetOperations(emu: Emulator, classes: string[]): void {
  for (const cls of classes) {
    for (const [ref, row] of [...emu.db.table(cls)]) {
      const ops = currentOperations(row.rec);
      const live = ops.filter(([task]) => emu.db.has('task', task));
      if (live.length !== ops.length) emu.db.update(cls, ref, { current_operations: Object.fromEntries(live) });
    }
    if (rules.has(cls)) updateAllAllowedOperations(emu, cls);
  }
}

/** OCaml's hash of a polymorphic variant tag (caml_hash_variant): sets of enum values print in
 * this order (Set.elements compares the tags' hashes). */
export function ocamlVariantHash(tag: string): number {
  let acc = 0n;
  const M63 = (1n << 63n) - 1n;
  for (const ch of Buffer.from(tag, 'utf8')) acc = (223n * acc + BigInt(ch)) & M63;
  // tagged value (acc << 1 | 1) masked to 32 bits and sign-extended, then untagged
  const tagged = Number(((acc << 1n) | 1n) & 0xffffffffn) | 0;
  return tagged >> 1;
}

/** Sorts enum values as an OCaml Set of polymorphic variants lists them. */
export function ocamlSetOrder(ops: string[]): string[] {
  return [...ops].sort((a, b) => ocamlVariantHash(a) - ocamlVariantHash(b));
}
