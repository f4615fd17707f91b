// The management interface commands (cli_operations.ml's host_management_reconfigure,
// host_management_disable, host_emergency_management_reconfigure, pool_management_reconfigure).
import { defineCommand } from '../commands.js';
import { byUuid, reqd } from './params.js';

defineCommand({
  name: 'host-management-reconfigure',
  reqd: ['pif-uuid'],
  optn: [],
  help: 'Reconfigure the management interface of this node.',
  run: async (ctx) => {
    await ctx.call('host.management_reconfigure', await byUuid(ctx, 'PIF', reqd(ctx, 'pif-uuid')));
  },
});

defineCommand({
  name: 'host-management-disable',
  reqd: [],
  optn: [],
  help: 'Disable the management interface of this node.',
  local: true,
  run: async (ctx) => {
    await ctx.call('host.management_disable');
  },
});

defineCommand({
  name: 'host-emergency-management-reconfigure',
  reqd: ['interface'],
  optn: [],
  help: 'Reconfigure the management interface of this node: only use if the node is in emergency mode.',
  local: true,
  run: async (ctx) => {
    await ctx.call('host.local_management_reconfigure', reqd(ctx, 'interface'));
  },
});

defineCommand({
  name: 'pool-management-reconfigure',
  reqd: ['network-uuid'],
  optn: [],
  help: 'Reconfigure the management network interface for all Hosts in the Pool',
  run: async (ctx) => {
    await ctx.call('pool.management_reconfigure', await byUuid(ctx, 'network', reqd(ctx, 'network-uuid')));
  },
});
