// VLAN commands (cli_operations.ml's vlan_create, vlan_destroy, pool_vlan_create): each prints the
// untagged PIF(s) made, not the VLAN object.
import { XapiError } from '../../dispatch/errors.js';
import { defineCommand, type CommandContext } from '../commands.js';
import { byUuid, failure, int64Of, printUuidOf, reqd } from './params.js';

/** validate_and_get_vlan */
function vlanTag(ctx: CommandContext): number {
  try {
    return int64Of(reqd(ctx, 'vlan'));
  } catch {
    throw failure("Failed to parse parameter 'vlan': expecting an integer");
  }
}

defineCommand({
  name: 'vlan-create',
  reqd: ['pif-uuid', 'vlan', 'network-uuid'],
  optn: [],
  help: 'Create a new VLAN on a host.',
  run: async (ctx) => {
    const network = await byUuid(ctx, 'network', reqd(ctx, 'network-uuid'));
    const tagged = await byUuid(ctx, 'PIF', reqd(ctx, 'pif-uuid'));
    const vlan = (await ctx.call('VLAN.create', tagged, vlanTag(ctx), network)) as string;
    await printUuidOf(ctx, 'PIF', (await ctx.call('VLAN.get_untagged_PIF', vlan)) as string);
  },
});

defineCommand({
  name: 'vlan-destroy',
  reqd: ['uuid'],
  optn: [],
  help: 'Destroy a VLAN.',
  run: async (ctx) => {
    const uuid = reqd(ctx, 'uuid');
    try {
      await ctx.call('VLAN.destroy', await byUuid(ctx, 'VLAN', uuid));
    } catch (e) {
      // the uuid of the VLAN's untagged PIF is accepted too, as it always was
      if (e instanceof XapiError && (e.code === 'HANDLE_INVALID' || e.code === 'HOST_OFFLINE')) throw e;
      const pif = await byUuid(ctx, 'PIF', uuid).catch(() => undefined);
      if (pif === undefined) throw e;
      await ctx.call('PIF.destroy', pif);
    }
  },
});

defineCommand({
  name: 'pool-vlan-create',
  reqd: ['pif-uuid', 'vlan', 'network-uuid'],
  optn: [],
  help: 'Create a new VLAN on each host in a pool.',
  run: async (ctx) => {
    const network = await byUuid(ctx, 'network', reqd(ctx, 'network-uuid'));
    const pif = await byUuid(ctx, 'PIF', reqd(ctx, 'pif-uuid'));
    const pifs = (await ctx.call('pool.create_VLAN_from_PIF', pif, network, vlanTag(ctx))) as string[];
    const uuids: string[] = [];
    for (const p of pifs) uuids.push((await ctx.call('PIF.get_uuid', p)) as string);
    ctx.printer.print({ t: 'list', lines: uuids });
  },
});
