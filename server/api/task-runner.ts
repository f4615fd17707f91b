// How calls run in tasks (xapi's server_helpers.ml / taskHelper.ml): an Async call returns its
// task at once and completes it later; a sync call of an async-capable message runs in a database
// task that is destroyed when the call returns.
import type { Call, Handler } from '../dispatch/registry.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { errorDescription } from '../dispatch/dispatch.js';
import { encodeValue } from '../transport/xmlrpc-codec.js';
import { xapiDate } from '../clock.js';
import { EPOCH } from '../../storage/defaults.js';
import type { Ty } from '../../schema/index.js';

export interface NewTask { label: string; description?: string; session: string; host: string; subtaskOf?: string; httpOtherConfig?: Record<string, string> }

export function createTask(emu: Emulator, t: NewTask): string {
  const ref = emu.ids.ref();
  emu.db.create('task', ref, {
    uuid: emu.ids.uuid(),
    name_label: t.label,
    name_description: t.description ?? '',
    created: xapiDate(emu.clock.now()),
    finished: EPOCH,
    status: 'pending',
    progress: 0,
    type: '<none/>',
    result: '',
    error_info: [],
    resident_on: t.host,
    subtask_of: t.subtaskOf ?? 'OpaqueRef:NULL',
    other_config: Object.fromEntries(Object.entries(t.httpOtherConfig ?? {}).map(([k, v]) => [`http:${k}`, v])),
    allowed_operations: [],
    current_operations: {},
    backtrace: '()',
  });
  emu.taskSessions.set(ref, t.session);
  return ref;
}

/** Marks a pending task successful, with its result as an XML-RPC value fragment (for every client). */
export function completeTask(emu: Emulator, ref: string, value: unknown, ty: Ty | null): void {
  const rec = emu.db.get('task', ref);
  if (!rec || rec.status !== 'pending') return;
  emu.db.update('task', ref, {
    allowed_operations: [],
    finished: xapiDate(emu.clock.now()),
    progress: 1,
    result: ty === null || value === undefined ? '' : encodeValue(value, ty),
    status: 'success',
  });
}

export function failTask(emu: Emulator, ref: string, err: unknown): void {
  const rec = emu.db.get('task', ref);
  if (!rec || rec.status !== 'pending') return;
  const description = errorDescription(err);
  emu.db.update('task', ref, {
    progress: 1,
    error_info: description,
    backtrace: '()',
    finished: xapiDate(emu.clock.now()),
    allowed_operations: [],
    status: description[0] === 'TASK_CANCELLED' ? 'cancelled' : 'failure',
  });
}

export async function runInTask(call: Call, handler: Handler, args: unknown[]): Promise<unknown> {
  const emu = call.emu;
  const task = createTask(emu, { label: call.label, session: call.session, host: call.host, httpOtherConfig: call.origin.httpOtherConfig });
  try {
    return await handler({ ...call, task }, ...args);
  } finally {
    destroyTask(emu, task);
  }
}

export function startAsync(call: Call, handler: Handler, args: unknown[]): string {
  const emu = call.emu;
  const task = createTask(emu, { label: call.label, session: call.session, host: call.host, httpOtherConfig: call.origin.httpOtherConfig });
  setImmediate(async () => {
    try {
      const value = await handler({ ...call, task }, ...args);
      // a void result is marshalled as Rpc.String "" (gen_server.ml), i.e. "<value></value>"
      completeTask(emu, task, call.msg.result === null ? '' : value, call.msg.result ?? { k: 'string' });
    } catch (e) {
      failTask(emu, task, e);
    } finally {
      emu.db.flush();
    }
  });
  return task;
}

export function destroyTask(emu: Emulator, ref: string): void {
  emu.db.destroy('task', ref);
  emu.taskSessions.delete(ref);
  emu.cancelHooks.delete(ref);
}

/** Fails the current operation with TASK_CANCELLED when its task has been cancelled. */
export function assertNotCancelling(emu: Emulator, task: string): void {
  const ops = emu.db.get('task', task)?.current_operations as Record<string, string> | undefined;
  if (ops && Object.values(ops).includes('cancel')) throw new XapiError('TASK_CANCELLED', [task]);
}
