// VIF commands (cli_operations.ml's vif_*).
import { randomInt } from 'node:crypto';
import { defineCommand } from '../commands.js';
import { boolOf, byUuid, enumOf, failure, param, printUuidOf, reqd } from './params.js';

/** mac=random as xapi's CLI makes it: one random byte repeated six times, the first marked
 * locally administered and unicast (Record_util.random_mac_local). */
function randomMacLocal(): string {
  const b = randomInt(0x100);
  const first = (b | 0x2) & ~0x1;
  return [first, b, b, b, b, b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

defineCommand({
  name: 'vif-create',
  reqd: ['device', 'network-uuid', 'vm-uuid'],
  optn: ['mac'],
  help: "Create a VIF on a VM at device (see the VM's allowed-VIF-devices); mac=random makes a locally administered MAC, none lets the host choose.",
  run: async (ctx) => {
    const mac = param(ctx.params, 'mac') ?? '';
    const vm = await byUuid(ctx, 'VM', reqd(ctx, 'vm-uuid'));
    const network = await byUuid(ctx, 'network', reqd(ctx, 'network-uuid'));
    const mtu = await ctx.call('network.get_MTU', network);
    const vif = (await ctx.call('VIF.create', {
      device: reqd(ctx, 'device'), network, VM: vm, MAC: mac === 'random' ? randomMacLocal() : mac, MTU: mtu,
      other_config: {}, currently_attached: false, qos_algorithm_type: '', qos_algorithm_params: {},
      locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [], trunks: [],
    })) as string;
    await printUuidOf(ctx, 'VIF', vif);
  },
});

defineCommand({
  name: 'vif-unplug',
  reqd: ['uuid'],
  optn: ['force'],
  help: 'Detach a VIF from its running VM; --force without the guest\'s consent.',
  run: async (ctx) => {
    const vif = await byUuid(ctx, 'VIF', reqd(ctx, 'uuid'));
    await ctx.call(boolOf(ctx.params, 'force') ? 'VIF.unplug_force' : 'VIF.unplug', vif);
  },
});

for (const [name, help, message] of [
  ['vif-destroy', 'Destroy a VIF.', 'VIF.destroy'],
  ['vif-plug', 'Attach a VIF to its running VM.', 'VIF.plug'],
] as const) {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'VIF', reqd(ctx, 'uuid')));
    },
  });
}

defineCommand({
  name: 'vif-move',
  reqd: ['uuid', 'network-uuid'],
  optn: [],
  help: 'Move the VIF to another network.',
  run: async (ctx) => {
    const vif = await byUuid(ctx, 'VIF', reqd(ctx, 'uuid'));
    await ctx.call('VIF.move', vif, await byUuid(ctx, 'network', reqd(ctx, 'network-uuid')));
  },
});

for (const v of ['4', '6'] as const) {
  defineCommand({
    name: `vif-configure-ipv${v}`,
    reqd: ['uuid', 'mode'],
    optn: ['address', 'gateway'],
    help: `Configure IPv${v} settings on a VIF.`,
    run: async (ctx) => {
      const vif = await byUuid(ctx, 'VIF', reqd(ctx, 'uuid'));
      const mode = enumOf(`vif_ipv${v}_configuration_mode`, reqd(ctx, 'mode'));
      const address = param(ctx.params, 'address') ?? '';
      if (mode === 'Static' && address === '') throw failure('Required parameter not found: address');
      await ctx.call(`VIF.configure_ipv${v}`, vif, mode, address, param(ctx.params, 'gateway') ?? '');
    },
  });
}
