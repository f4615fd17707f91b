// Bond commands (cli_operations.ml's bond_create, bond_destroy, bond_set_mode).
import { defineCommand } from '../commands.js';
import { CliFailure } from '../errors.js';
import { byUuid, mapParams, param, printUuidOf, reqd } from './params.js';

/** Record_util.bond_mode_of_string: dashes, any case; none given is balance-slb. */
function bondModeOf(s: string): string {
  const l = s.toLowerCase();
  if (l === '' || l === 'balance-slb') return 'balance-slb';
  if (l === 'active-backup' || l === 'lacp') return l;
  throw new CliFailure(`Invalid bond mode. Got ${l}`);
}

defineCommand({
  name: 'bond-create',
  reqd: ['network-uuid', 'pif-uuids'],
  optn: ['mac', 'mode', 'properties:'],
  help: 'Create a bonded interface from a list of existing PIF objects.',
  run: async (ctx) => {
    const network = await byUuid(ctx, 'network', reqd(ctx, 'network-uuid'));
    const members: string[] = [];
    for (const uuid of reqd(ctx, 'pif-uuids').split(',')) members.push(await byUuid(ctx, 'PIF', uuid));
    const mode = bondModeOf(param(ctx.params, 'mode') ?? '');
    const bond = (await ctx.call('Bond.create', network, members, param(ctx.params, 'mac') ?? '', mode, mapParams(ctx.params, 'properties'))) as string;
    await printUuidOf(ctx, 'Bond', bond);
  },
});

defineCommand({
  name: 'bond-destroy',
  reqd: ['uuid'],
  optn: [],
  help: 'Destroy a bonded interface.',
  run: async (ctx) => {
    await ctx.call('Bond.destroy', await byUuid(ctx, 'Bond', reqd(ctx, 'uuid')));
  },
});

defineCommand({
  name: 'bond-set-mode',
  reqd: ['uuid', 'mode'],
  optn: [],
  help: 'Change the bond mode.',
  run: async (ctx) => {
    const bond = await byUuid(ctx, 'Bond', reqd(ctx, 'uuid'));
    await ctx.call('Bond.set_mode', bond, bondModeOf(reqd(ctx, 'mode')));
  },
});
