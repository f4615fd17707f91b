// Network and PIF commands (cli_operations.ml's net_* and pif_*).
import { defineCommand } from '../commands.js';
import { boolOf, byUuid, enumOf, int64Of, param, printUuidOf, reqd } from './params.js';

defineCommand({
  name: 'network-create',
  reqd: ['name-label'],
  optn: ['name-description', 'MTU', 'bridge', 'managed'],
  help: 'Create a network; prints its uuid.',
  run: async (ctx) => {
    const p = ctx.params;
    const m = param(p, 'MTU');
    const mtu = m === undefined ? 1500 : int64Of(m);
    const network = (await ctx.call('network.create', {
      name_label: reqd(ctx, 'name-label'), name_description: param(p, 'name-description') ?? '', MTU: mtu,
      other_config: {}, bridge: param(p, 'bridge') ?? '', managed: boolOf(p, 'managed', true), tags: [],
    })) as string;
    await printUuidOf(ctx, 'network', network);
  },
});

defineCommand({
  name: 'network-destroy',
  reqd: ['uuid'],
  optn: [],
  help: 'Destroy a network.',
  run: async (ctx) => {
    await ctx.call('network.destroy', await byUuid(ctx, 'network', reqd(ctx, 'uuid')));
  },
});

defineCommand({
  name: 'network-attach',
  reqd: ['uuid', 'host-uuid'],
  optn: [],
  help: 'Make a network appear on a particular host.',
  hidden: true,
  run: async (ctx) => {
    const network = await byUuid(ctx, 'network', reqd(ctx, 'uuid'));
    await ctx.call('network.attach', network, await byUuid(ctx, 'host', reqd(ctx, 'host-uuid')));
  },
});

defineCommand({
  name: 'pif-scan',
  reqd: ['host-uuid'],
  optn: [],
  help: 'Look for network interfaces of a host that have no PIF yet, and make theirs.',
  run: async (ctx) => {
    await ctx.call('PIF.scan', await byUuid(ctx, 'host', reqd(ctx, 'host-uuid')));
  },
});

for (const [name, help, message] of [
  ['pif-plug', 'Bring a PIF up.', 'PIF.plug'],
  ['pif-unplug', 'Take a PIF down.', 'PIF.unplug'],
] as const) {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'PIF', reqd(ctx, 'uuid')));
    },
  });
}

defineCommand({
  name: 'pif-reconfigure-ip',
  reqd: ['uuid', 'mode'],
  optn: ['IP', 'netmask', 'gateway', 'DNS'],
  help: 'Set the IPv4 configuration of a PIF: mode=none, dhcp or static (then IP=, netmask=, gateway=, DNS=).',
  run: async (ctx) => {
    const p = ctx.params;
    const pif = await byUuid(ctx, 'PIF', reqd(ctx, 'uuid'));
    const mode = enumOf('ip_configuration_mode', reqd(ctx, 'mode'));
    await ctx.call('PIF.reconfigure_ip', pif, mode, anyCaseParam(p, 'IP'), param(p, 'netmask') ?? '', param(p, 'gateway') ?? '', anyCaseParam(p, 'DNS'));
  },
});

/** A parameter whatever the case of its name (read_optional_case_insensitive). */
const anyCaseParam = (p: [string, string][], k: string) => p.find(([n]) => n.toLowerCase() === k.toLowerCase())?.[1] ?? '';

defineCommand({
  name: 'pif-reconfigure-ipv6',
  reqd: ['uuid', 'mode'],
  optn: ['IPv6', 'gateway', 'DNS'],
  help: 'Reconfigure the IPv6 address settings on a PIF.',
  run: async (ctx) => {
    const p = ctx.params;
    const pif = await byUuid(ctx, 'PIF', reqd(ctx, 'uuid'));
    const mode = enumOf('ipv6_configuration_mode', reqd(ctx, 'mode'));
    await ctx.call('PIF.reconfigure_ipv6', pif, mode, anyCaseParam(p, 'IPv6'), param(p, 'gateway') ?? '', anyCaseParam(p, 'DNS'));
  },
});

defineCommand({
  name: 'pif-set-primary-address-type',
  reqd: ['uuid', 'primary_address_type'],
  optn: [],
  help: 'Change the primary address type used by this PIF.',
  run: async (ctx) => {
    const pif = await byUuid(ctx, 'PIF', reqd(ctx, 'uuid'));
    await ctx.call('PIF.set_primary_address_type', pif, enumOf('primary_address_type', reqd(ctx, 'primary_address_type')));
  },
});

defineCommand({
  name: 'pif-introduce',
  reqd: ['host-uuid', 'device'],
  optn: ['mac', 'managed'],
  help: 'Create a new PIF object representing a physical interface on a host.',
  run: async (ctx) => {
    const host = await byUuid(ctx, 'host', reqd(ctx, 'host-uuid'));
    const pif = (await ctx.call('PIF.introduce', host, param(ctx.params, 'mac') ?? '', reqd(ctx, 'device'), boolOf(ctx.params, 'managed', true))) as string;
    await printUuidOf(ctx, 'PIF', pif);
  },
});

for (const [name, help, message, hidden] of [
  ['pif-forget', 'Destroy a PIF object on a particular host.', 'PIF.forget', false],
  ['pif-db-forget', 'Destroy the database object representing a PIF on a particular host.', 'PIF.db_forget', true],
] as const) {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help, hidden,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'PIF', reqd(ctx, 'uuid')));
    },
  });
}
