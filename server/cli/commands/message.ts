// Message commands (cli_operations.ml's message_*).
import { defineCommand } from '../commands.js';
import { CliFailure } from '../errors.js';
import { failure, param, reqd } from './params.js';

defineCommand({
  name: 'message-create',
  reqd: ['name', 'priority', 'body'],
  optn: ['vm-uuid', 'host-uuid', 'sr-uuid', 'pool-uuid'],
  help: 'Send a message about a VM, host, SR or pool.',
  run: async (ctx) => {
    const p = ctx.params;
    const priority = reqd(ctx, 'priority');
    if (!/^[+-]?\d+$/.test(priority)) throw failure('Priority field should be an integer');
    // the first of these names the object, in xapi's order
    const target = ([['vm-uuid', 'VM'], ['pool-uuid', 'Pool'], ['sr-uuid', 'SR'], ['host-uuid', 'Host']] as const)
      .map(([k, cls]) => [param(p, k), cls] as const).find(([v]) => v !== undefined);
    if (!target) throw new CliFailure('Need one of: vm-uuid, host-uuid, sr-uuid or pool-uuid');
    await ctx.call('message.create', reqd(ctx, 'name'), Number(priority), target[1], target[0], reqd(ctx, 'body'));
  },
});

defineCommand({
  name: 'message-destroy',
  reqd: [],
  optn: ['uuid', 'uuids'],
  help: 'Destroy a message (uuid=), or several (uuids= a comma-separated list).',
  run: async (ctx) => {
    const uuid = param(ctx.params, 'uuid');
    const uuids = param(ctx.params, 'uuids');
    if (uuid !== undefined && uuids !== undefined) throw new CliFailure('Ambiguous arguments; need one of uuid, uuids');
    if (uuid === undefined && uuids === undefined) throw new CliFailure('Need one of uuid, uuids');
    const list = uuid !== undefined ? [uuid] : uuids!.split(',');
    const refs: string[] = [];
    for (const u of list) refs.push((await ctx.call('message.get_by_uuid', u)) as string);
    await ctx.call('message.destroy_many', refs);
  },
});
