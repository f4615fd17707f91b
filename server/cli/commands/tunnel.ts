// Tunnel commands (cli_operations.ml's tunnel_create, tunnel_destroy).
import { defineCommand } from '../commands.js';
import { byUuid, enumOf, param, printUuidOf, reqd } from './params.js';

defineCommand({
  name: 'tunnel-create',
  reqd: ['pif-uuid', 'network-uuid'],
  optn: ['protocol'],
  help: 'Create a new tunnel on a host.',
  run: async (ctx) => {
    const network = await byUuid(ctx, 'network', reqd(ctx, 'network-uuid'));
    const pif = await byUuid(ctx, 'PIF', reqd(ctx, 'pif-uuid'));
    const protocol = enumOf('tunnel_protocol', param(ctx.params, 'protocol') ?? 'gre');
    const tunnel = (await ctx.call('tunnel.create', pif, network, protocol)) as string;
    // (the access PIF, not the tunnel)
    await printUuidOf(ctx, 'PIF', (await ctx.call('tunnel.get_access_PIF', tunnel)) as string);
  },
});

defineCommand({
  name: 'tunnel-destroy',
  reqd: ['uuid'],
  optn: [],
  help: 'Destroy a tunnel.',
  run: async (ctx) => {
    await ctx.call('tunnel.destroy', await byUuid(ctx, 'tunnel', reqd(ctx, 'uuid')));
  },
});
