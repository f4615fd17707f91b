// The periodic garbage collection of tasks and sessions (xapi's db_gc.ml): pending tasks older
// than pending_task_timeout are failed and removed, finished ones after completed_task_timeout,
// the number of tasks is trimmed to about max_tasks, idle sessions are removed.
import type { Emulator } from '../emulator.js';
import { destroyTask, failTask } from './task-runner.js';
import { XapiError } from '../dispatch/errors.js';
import { destroySession } from './session.js';

const parseDate = (s: string) => Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8), +s.slice(9, 11), +s.slice(12, 14), +s.slice(15, 17));

export function runGc(emu: Emulator): void {
  const now = emu.clock.now();
  const { pending_task_timeout, completed_task_timeout, max_tasks, inactive_session_timeout } = emu.conf;
  const tasks = [...emu.db.table('task').values()];
  let kept = 0;
  for (const row of tasks.sort((a, b) => b.created - a.created)) {
    const r = row.rec;
    const pending = r.status === 'pending';
    const age = (now - parseDate((pending ? r.created : r.finished) as string)) / 1000;
    const tooOld = pending ? age > pending_task_timeout : age > completed_task_timeout;
    // beyond max_tasks, finished tasks go first (xapi trims the oldest completed ones)
    const overflow = !pending && kept >= max_tasks;
    if (tooOld && pending) failTask(emu, row.ref, new XapiError('TASK_CANCELLED', [row.ref]));
    if (tooOld || overflow) destroyTask(emu, row.ref);
    else kept++;
  }
  for (const row of [...emu.db.table('session').values()]) {
    const idle = (now - parseDate(row.rec.last_active as string)) / 1000;
    if (idle > inactive_session_timeout) destroySession(emu, row.ref);
  }
  emu.db.flush();
}

export function startGc(emu: Emulator): () => void {
  const timer = setInterval(() => runGc(emu), emu.conf.gc_interval * 1000);
  timer.unref();
  return () => clearInterval(timer);
}
