// Pool commands (cli_operations.ml's pool_*) that act through a single pool message.
import { defineCommand } from '../commands.js';
import { byUuid, reqd } from './params.js';

defineCommand({
  name: 'pool-sync-database',
  reqd: [],
  optn: [],
  help: 'Copy the pool database to every host now.',
  run: async (ctx) => {
    await ctx.call('pool.sync_database');
  },
});

defineCommand({
  name: 'pool-designate-new-master',
  reqd: ['host-uuid'],
  optn: [],
  help: 'Make another host of the pool its master, in an orderly handover.',
  run: async (ctx) => {
    await ctx.call('pool.designate_new_master', await byUuid(ctx, 'host', reqd(ctx, 'host-uuid')));
  },
});
