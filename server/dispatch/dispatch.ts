// Schema-driven dispatch of a decoded call, with xapi's order of checks (WIRE.md §1 "Dispatch order"):
// UTF-8, Async prefix, method lookup, arity, parameter types, session, RBAC, removed messages,
// async support, then the implementation (a class provider's handler, or the generic one).
import { messages, type MessageMeta, type Ty } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';
import { XapiError, internalError } from './errors.js';
import { compileParams, rpcToString } from './validate.js';
import { checkSession, checkRbac } from '../auth/access.js';
import { handlerFor, type Call, type Handler } from './registry.js';
import { runInTask, startAsync } from '../api/task-runner.js';

export type CallResult =
  | { ok: true; value: unknown; ty: Ty | null; bare?: boolean }
  /** `drop`: the connection is to be cut without an answer (a fault rule) */
  | { ok: false; error: string[]; drop?: boolean };

/** A fault on a call (the emulator's fault rules): what runs before its implementation (it may
 * throw an XAPI error, or wait), what runs after it, or a connection cut without an answer. */
export interface CallFault {
  drop?: boolean;
  before?: () => Promise<void>;
  after?: () => void;
}

export interface CallFaultHooks {
  /** every call, as it is received on a host's address: may throw (an unreachable host's answer) */
  received(emu: Emulator, name: string, origin: CallOrigin): void;
  /** a call about to run its implementation (after session and RBAC checks) */
  call(call: Call, args: unknown[]): CallFault | null;
}

/** Thrown by a fault hook: the connection is cut without an answer. */
export class DropConnection extends Error {}

/** Installed while a pool has fault rules: a single null check otherwise. */
let faultHooks: CallFaultHooks | null = null;
export function setCallFaultHooks(h: CallFaultHooks | null): void {
  faultHooks = h;
}

export interface CallOrigin {
  /** the host whose address received the call */
  host: string;
  /** strings whose bytes were not valid UTF-8 */
  badUtf8?: string[];
  /** X-Http-Other-Config-* headers, kept in task.other_config as xapi does */
  httpOtherConfig?: Record<string, string>;
}

const NO_SESSION = new Set([
  'session.login_with_password', 'session.slave_login', 'session.slave_local_login',
  'session.slave_local_login_with_password',
]);

/** Sync wire names, as system.listMethods lists them. */
const listMethods: string[] = [...messages.keys()];
const listMethodsTy: Ty = { k: 'set', of: { k: 'string' } };

const compiled = new WeakMap<MessageMeta, (args: unknown[]) => unknown[]>();
function coerce(msg: MessageMeta, args: unknown[]): unknown[] {
  let f = compiled.get(msg);
  if (!f) compiled.set(msg, (f = compileParams(msg)));
  return f(args);
}

const withDefaults = new WeakMap<MessageMeta, boolean>();
/** Whether a message has optional (defaulted) params; computed once per message. */
function hasDefaultParams(msg: MessageMeta): boolean {
  let d = withDefaults.get(msg);
  if (d === undefined) withDefaults.set(msg, (d = msg.params.some((p) => p.default !== undefined)));
  return d;
}

/** `VM.start` or its alias `VM_start`. */
function lookup(name: string): MessageMeta | undefined {
  const m = messages.get(name);
  if (m) return m;
  const i = name.indexOf('_');
  if (i <= 0) return undefined;
  // classes may contain "_" themselves (VM_metrics_get_record): try every split
  for (let j = i; j > 0; j = name.indexOf('_', j + 1)) {
    const hit = messages.get(`${name.slice(0, j)}.${name.slice(j + 1)}`);
    if (hit) return hit;
  }
  return undefined;
}

export async function dispatch(emu: Emulator, name: string, params: unknown[], origin: CallOrigin): Promise<CallResult> {
  try {
    return await dispatchInner(emu, name, params, origin);
  } catch (e) {
    if (e instanceof DropConnection) return { ok: false, error: ['INTERNAL_ERROR', 'connection dropped'], drop: true };
    return { ok: false, error: errorDescription(e) };
  } finally {
    emu.db.flush();
  }
}

export function errorDescription(e: unknown): string[] {
  if (e instanceof XapiError) return e.description;
  const text = e instanceof Error ? e.message : String(e);
  return internalError(text).description;
}

async function dispatchInner(emu: Emulator, label: string, params: unknown[], origin: CallOrigin): Promise<CallResult> {
  if (origin.badUtf8?.length) {
    // xapi reports the first param holding the bad string, as Rpc.to_string prints it: S(...), {k:S(v)}
    const bad = origin.badUtf8;
    const holds = (v: unknown): boolean =>
      typeof v === 'string' ? bad.includes(v)
        : Array.isArray(v) ? v.some(holds)
          : v !== null && typeof v === 'object' && !(v instanceof Date) && Object.entries(v).some(([k, x]) => bad.includes(k) || holds(x));
    const param = params.find(holds);
    throw new XapiError('INVALID_VALUE', ['Invalid UTF-8 string in parameter', param === undefined ? bad[0] : rpcToString(param)]);
  }
  if (faultHooks !== null) faultHooks.received(emu, label, origin);
  let name = label;
  let async = false;
  if (name.startsWith('Async.')) { name = name.slice(6); async = true; }
  else if (name.startsWith('InternalAsync.')) { name = name.slice(14); async = true; }

  if (name === 'system.listMethods') return { ok: true, value: listMethods, ty: listMethodsTy, bare: true };
  if (name.startsWith('system.isAlive:') && params.length > 0) return { ok: true, value: params[0], ty: { k: 'any' } };

  // The `X_y` alias does not combine with Async (server_helpers.ml)
  const msg = async ? messages.get(name) : lookup(name);
  if (!msg) {
    if (params.length === 0) throw new XapiError('MESSAGE_METHOD_UNKNOWN', [name]);
    // xapi checks the first param as a session, then hands the call to its extension mechanism
    checkSession(emu, params[0], origin.host);
    throw new XapiError('MESSAGE_METHOD_UNKNOWN', [name]);
  }

  const withSession = msg.session && !NO_SESSION.has(msg.wire);
  const got = withSession ? params.length - 1 : params.length;
  const hasDefaults = hasDefaultParams(msg);
  if (hasDefaults ? got < msg.n_required_params : got !== msg.params.length) {
    // counts exclude the session; with no param at all the received count is -1, as in xapi
    throw new XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH', [name, String(msg.n_required_params), String(got)]);
  }
  if (msg.lifecycle === 'Removed_s') {
    if (withSession) checkSession(emu, params[0], origin.host);
    throw new XapiError('MESSAGE_REMOVED', []);
  }
  const raw = withSession ? params.slice(1, 1 + msg.params.length) : params.slice(0, msg.params.length);
  const args = coerce(msg, raw);

  let sessionRef = '';
  if (withSession) {
    // the session param is unmarshalled as a string first
    if (typeof params[0] !== 'string') throw internalError(`Failure("Expected string, got '${rpcToString(params[0])}'")`);
    sessionRef = checkSession(emu, params[0], origin.host);
    checkRbac(emu, sessionRef, msg, args);
  }
  // the name as called, without its Async. prefix (gen_server.ml passes __call to do_dispatch)
  if (async && !msg.async) throw new XapiError('Fault', [`No async mode for this operation (rpc: ${name})`]);

  const handler = handlerFor(msg);
  const call: Call = { emu, msg, label, session: sessionRef, task: 'OpaqueRef:NULL', host: origin.host, origin };
  const fault = faultHooks === null ? null : faultHooks.call(call, args);
  if (fault !== null) {
    if (fault.drop) throw new DropConnection();
    return withFault(call, handler, args, async, inTaskOf(emu, msg), fault);
  }

  // Every call of an async-capable message runs in a database task (context.ml of_http_req),
  // except for the classes without task ids (task, event ...).
  const inTask = inTaskOf(emu, msg);
  let value: unknown;
  if (async || inTask) {
    // A bad handle is found by the implementation, so an Async call returns a task that fails with it.
    const run: Handler = (c, ...a) => {
      checkHandles(emu, msg, a);
      return handler(c, ...a);
    };
    if (async) return { ok: true, value: startAsync(call, run, args), ty: TASK_REF };
    value = await runInTask(call, run, args);
  } else {
    // (no closure on the everyday path: under tsx, each one made per call costs a __name call)
    checkHandles(emu, msg, args);
    value = await handler(call, ...args);
  }
  return { ok: true, value: value === undefined ? '' : value, ty: msg.result };
}

const TASK_REF: Ty = { k: 'ref', class: 'task' };

const inTaskOf = (emu: Emulator, msg: MessageMeta): boolean => msg.async && !emu.noTaskClasses.has(msg.class);

/** The implementation with a fault before it (inside the task: an Async call's task fails with
 * the fault's error) and after it. Off the everyday path. */
async function withFault(call: Call, handler: Handler, args: unknown[], async: boolean, inTask: boolean, fault: CallFault): Promise<CallResult> {
  const { emu, msg } = call;
  const run: Handler = async (c, ...a) => {
    checkHandles(emu, msg, a);
    if (fault.before) await fault.before();
    try {
      return await handler(c, ...a);
    } finally {
      fault.after?.();
    }
  };
  if (async) return { ok: true, value: startAsync(call, run, args), ty: TASK_REF };
  const value = inTask ? await runInTask(call, run, args) : await run(call, ...args);
  return { ok: true, value: value === undefined ? '' : value, ty: msg.result };
}

/** Arguments xapi reads as "none" when they name no object (Xapi_vm.copy: an SR that does not
 * exist means each disk stays in its own SR), so no HANDLE_INVALID for them. */
const MAY_NAME_NOTHING: ReadonlyMap<MessageMeta | undefined, string> = new Map([[messages.get('VM.copy'), 'sr']]);

/** A ref argument naming no object of its class is HANDLE_INVALID [class; ref]. */
function checkHandles(emu: Emulator, msg: MessageMeta, args: unknown[]): void {
  const lenient = MAY_NAME_NOTHING.get(msg);
  for (let i = 0; i < msg.params.length; i++) {
    const ty = msg.params[i].ty;
    if (ty.k !== 'ref' || msg.params[i].name === lenient) continue;
    const ref = args[i];
    if (typeof ref !== 'string' || ref === 'OpaqueRef:NULL') continue;
    if (!emu.db.has(ty.class, ref)) throw new XapiError('HANDLE_INVALID', [ty.class, ref]);
  }
}
