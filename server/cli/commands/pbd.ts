// PBD commands (cli_operations.ml's pbd_*): the link between an SR and a host.
import { defineCommand } from '../commands.js';
import { byUuid, printUuidOf, reqd } from './params.js';

defineCommand({
  name: 'pbd-create',
  reqd: ['host-uuid', 'sr-uuid'],
  optn: ['device-config:'],
  help: 'Create a PBD linking an SR to a host; device-config:key=value pairs configure it.',
  run: async (ctx) => {
    // device-config followed by any one character, so the older device-config-key=value works too
    const prefix = 'device-config:';
    const config: Record<string, string> = {};
    for (const [k, v] of ctx.params) if (k.startsWith('device-config') && k.length > prefix.length) config[k.slice(prefix.length)] = v;
    const host = await byUuid(ctx, 'host', reqd(ctx, 'host-uuid'));
    const sr = await byUuid(ctx, 'SR', reqd(ctx, 'sr-uuid'));
    await printUuidOf(ctx, 'PBD', (await ctx.call('PBD.create', { host, SR: sr, device_config: config, other_config: {} })) as string);
  },
});

for (const [name, help, message] of [
  ['pbd-destroy', 'Destroy a PBD.', 'PBD.destroy'],
  ['pbd-plug', 'Attach an SR on the host of its PBD.', 'PBD.plug'],
  ['pbd-unplug', 'Detach an SR from the host of its PBD.', 'PBD.unplug'],
] as const) {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'PBD', reqd(ctx, 'uuid')));
    },
  });
}
