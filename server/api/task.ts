// task: create, cancel, destroy and the setters a task's owner may call (xapi_task.ml).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { generic, recordOf } from './generic.js';
import { createTask, destroyTask } from './task-runner.js';
import { checkRbac, EXTRA_PERMISSIONS } from '../auth/access.js';
import { messages } from '../../schema/index.js';

const destroyAny = messages.get('task.destroy')!;

/** A session may act on its own tasks; other tasks need the task.destroy/any permission. */
function assertOwnTask(call: Call, task: string): void {
  // (NULL passes dispatch's handle check, and is the task of calls that run without one)
  recordOf(call.emu, 'task', task);
  if (task === call.task) return;
  const owner = call.emu.taskSessions.get(task);
  const me = call.emu.db.get('session', call.session);
  const theirs = owner ? call.emu.db.get('session', owner) : undefined;
  if (me && theirs && me.auth_user_sid === theirs.auth_user_sid && me.auth_user_name === theirs.auth_user_name) return;
  // TaskHelper.assert_op_valid: Rbac_static.permission_task_destroy_any, a pool-operator permission
  const perm = 'task.destroy/any';
  checkRbac(call.emu, call.session, { ...destroyAny, wire: perm, roles: EXTRA_PERMISSIONS[perm], map_keys_roles: undefined }, []);
}

const guarded = (name: string) => (call: Call, self: string, ...rest: unknown[]) => {
  assertOwnTask(call, self);
  return generic(call, self, ...rest);
};

registerProvider('task', {
  create(call, label: string, description: string) {
    const ref = createTask(call.emu, { label, description, session: call.session, host: call.host, subtaskOf: call.task });
    call.emu.clientTasks.add(ref);
    return ref;
  },
  destroy(call, self: string) {
    assertOwnTask(call, self);
    const rec = call.emu.db.get('task', self)!;
    if (rec.status === 'pending') {
      call.emu.db.update('task', self, { current_operations: { ...(rec.current_operations as object), task: 'destroy' } });
    } else destroyTask(call.emu, self);
  },
  cancel(call, task: string) {
    assertOwnTask(call, task);
    call.emu.db.update('task', task, { current_operations: { [call.task]: 'cancel' } });
    call.emu.cancelHooks.get(task)?.();
  },
  set_status: guarded('status'),
  set_progress: guarded('progress'),
  set_result: guarded('result'),
  set_error_info: guarded('error_info'),
  add_to_other_config: guarded('other_config'),
  remove_from_other_config: guarded('other_config'),
  set_other_config: guarded('other_config'),
});
