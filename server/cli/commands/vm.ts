// VM commands of xapi's command table that act through the VM selectors.
import { defineCommand, type CommandContext } from '../commands.js';
import { param } from '../args.js';
import { doVmOp } from '../selectors.js';
import type { CliRecord } from '../records.js';
import { xapiDate } from '../../clock.js';

/** Runs a VM operation, then prints the VM's messages of the moment whose priority is below
 * message-priority (default 5) on stderr, as xapi's wrap_op does. */
async function withMessages(ctx: CommandContext, vm: CliRecord, op: () => Promise<unknown>): Promise<void> {
  const since = xapiDate(ctx.emu.clock.now());
  await op();
  const limit = Number(param(ctx.params, 'message-priority') ?? 5);
  let msgs: { [ref: string]: { timestamp: string; priority: number; name: string } } = {};
  try {
    msgs = (await ctx.call('message.get', 'VM', vm.field('uuid').get(), since)) as typeof msgs;
  } catch {
    return;
  }
  for (const m of Object.values(msgs)) {
    if (m.priority < limit) ctx.printer.print({ t: 'stderr', text: `Message: time=${m.timestamp} priority=${m.priority} name='${m.name}'\n` });
  }
}

defineCommand({
  name: 'vm-pause',
  reqd: [],
  optn: [],
  help: "Pause a running VM. Note this operation does not free the associated memory (see 'vm-suspend').",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    await doVmOp(ctx, (vm) => withMessages(ctx, vm, () => ctx.call('VM.pause', vm.ref)));
  },
});

defineCommand({
  name: 'vm-unpause',
  reqd: [],
  optn: [],
  help: 'Unpause a paused VM.',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    await doVmOp(ctx, (vm) => withMessages(ctx, vm, () => ctx.call('VM.unpause', vm.ref)));
  },
});
