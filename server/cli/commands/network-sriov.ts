// SR-IOV network commands (cli_operations.ml's Network_sriov.create / destroy).
import { defineCommand } from '../commands.js';
import { byUuid, printUuidOf, reqd } from './params.js';

defineCommand({
  name: 'network-sriov-create',
  reqd: ['pif-uuid', 'network-uuid'],
  optn: [],
  help: 'Create a new network-sriov on a PIF.',
  run: async (ctx) => {
    const pif = await byUuid(ctx, 'PIF', reqd(ctx, 'pif-uuid'));
    const network = await byUuid(ctx, 'network', reqd(ctx, 'network-uuid'));
    await printUuidOf(ctx, 'network_sriov', (await ctx.call('network_sriov.create', pif, network)) as string);
  },
});

defineCommand({
  name: 'network-sriov-destroy',
  reqd: ['uuid'],
  optn: [],
  help: 'Destroy a network-sriov.',
  run: async (ctx) => {
    await ctx.call('network_sriov.destroy', await byUuid(ctx, 'network_sriov', reqd(ctx, 'uuid')));
  },
});
