// Task commands (cli_operations.ml's task_*).
import { defineCommand } from '../commands.js';
import { byUuid, reqd } from './params.js';

defineCommand({
  name: 'task-cancel',
  reqd: ['uuid'],
  optn: [],
  help: 'Ask a pending task to stop.',
  run: async (ctx) => {
    await ctx.call('task.cancel', await byUuid(ctx, 'task', reqd(ctx, 'uuid')));
  },
});
