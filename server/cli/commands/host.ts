// Host commands (cli_operations.ml's host_*): most act on the hosts the selectors choose.
import { defineCommand } from '../commands.js';
import { doHostOp } from '../selectors.js';
import { boolOf, byUuid, failure, param, reqd } from './params.js';

defineCommand({
  name: 'host-enable',
  reqd: [],
  optn: [],
  help: 'Let a host run VMs again (and end its maintenance mode).',
  selectors: 'host',
  run: async (ctx) => {
    await doHostOp(ctx, async (h) => {
      await ctx.call('host.remove_from_other_config', h.ref, 'MAINTENANCE_MODE');
      await ctx.call('host.enable', h.ref);
    });
  },
});

defineCommand({
  name: 'host-disable',
  reqd: [],
  optn: ['auto-enable'],
  help: 'Stop a host from running new VMs; auto-enable=false keeps it disabled across restarts.',
  selectors: 'host',
  run: async (ctx) => {
    const autoEnable = boolOf(ctx.params, 'auto-enable', true);
    await doHostOp(ctx, (h) => ctx.call('host.disable', h.ref, autoEnable), { ignore: ['auto-enable'] });
  },
});

defineCommand({
  name: 'host-shutdown',
  reqd: [],
  optn: [],
  help: 'Shut a disabled host down.',
  selectors: 'host',
  run: async (ctx) => {
    await doHostOp(ctx, (h) => ctx.call('host.shutdown', h.ref));
  },
});

defineCommand({
  name: 'host-reboot',
  reqd: [],
  optn: [],
  help: 'Reboot a disabled host.',
  selectors: 'host',
  run: async (ctx) => {
    await doHostOp(ctx, (h) => ctx.call('host.reboot', h.ref));
  },
});

defineCommand({
  name: 'host-evacuate',
  reqd: [],
  optn: ['network-uuid', 'batch-size'],
  help: 'Migrate every VM off a host (over network-uuid if given, batch-size at a time).',
  selectors: 'host',
  run: async (ctx) => {
    const net = param(ctx.params, 'network-uuid');
    const network = net === undefined ? 'OpaqueRef:NULL' : await byUuid(ctx, 'network', net);
    const b = param(ctx.params, 'batch-size');
    // (an unsigned decimal and nothing after it)
    if (b !== undefined && !/^\d+$/.test(b)) throw failure(`scanf: bad input at char number 0: ${JSON.stringify(b)}`);
    const batch = b === undefined ? 0 : Number(b);
    await doHostOp(ctx, (h) => ctx.call('host.evacuate', h.ref, network, batch), { multiple: false, ignore: ['network-uuid', 'batch-size'] });
  },
});

defineCommand({
  name: 'host-get-vms-which-prevent-evacuation',
  reqd: ['uuid'],
  optn: [],
  help: 'List the VMs that stop a host from being evacuated, each with the reason.',
  run: async (ctx) => {
    const host = await byUuid(ctx, 'host', reqd(ctx, 'uuid'));
    const vms = (await ctx.call('host.get_vms_which_prevent_evacuation', host)) as Record<string, string[]>;
    for (const [vm, error] of Object.entries(vms)) {
      const rec = (await ctx.call('VM.get_record', vm)) as { uuid: string; name_label: string };
      ctx.printer.print({ t: 'table', records: [[['uuid', rec.uuid], ['name-label', rec.name_label], ['reason', error.join(',')]]] });
    }
  },
});

defineCommand({
  name: 'host-compute-free-memory',
  reqd: [],
  optn: [],
  help: 'Print the memory of a host, in bytes, that is free to start VMs.',
  selectors: 'host',
  run: async (ctx) => {
    await doHostOp(ctx, async (h) => {
      ctx.printer.print({ t: 'msg', text: String(await ctx.call('host.compute_free_memory', h.ref)) });
    }, { multiple: false });
  },
});

defineCommand({
  name: 'host-cpu-info',
  reqd: [],
  optn: ['uuid'],
  help: 'Print the CPUs of a host (uuid=, else the host serving the session).',
  run: async (ctx) => {
    const uuid = param(ctx.params, 'uuid');
    const host = uuid !== undefined ? await byUuid(ctx, 'host', uuid) : ((await ctx.call('session.get_this_host', ctx.session)) as string);
    const info = (await ctx.call('host.get_cpu_info', host)) as Record<string, string>;
    ctx.printer.print({ t: 'table', records: [Object.entries(info)] });
  },
});
