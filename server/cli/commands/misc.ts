// Secret commands (cli_operations.ml's secret_*).
import { defineCommand } from '../commands.js';
import { byUuid, mapParams, printUuidOf, reqd } from './params.js';

defineCommand({
  name: 'secret-create',
  reqd: ['value'],
  optn: [],
  help: 'Store a secret; prints its uuid.',
  run: async (ctx) => {
    const secret = (await ctx.call('secret.create', { value: reqd(ctx, 'value'), other_config: mapParams(ctx.params, 'other-config') })) as string;
    await printUuidOf(ctx, 'secret', secret);
  },
});

defineCommand({
  name: 'secret-destroy',
  reqd: ['uuid'],
  optn: [],
  help: 'Destroy a secret.',
  run: async (ctx) => {
    await ctx.call('secret.destroy', await byUuid(ctx, 'secret', reqd(ctx, 'uuid')));
  },
});
