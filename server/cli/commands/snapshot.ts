// The snapshot-* commands: a snapshot named by snapshot-uuid= (or uuid=), reverted to, cloned,
// copied, destroyed or uninstalled (cli_operations.ml's snapshot_*).
import { defineCommand, type CommandContext } from '../commands.js';
import { boolParam, param } from '../args.js';
import { CliFailure } from '../errors.js';
import { NULL_REF } from '../../../storage/database.js';
import { NO_FORCE } from './vm.js';
import { uninstall } from './vm-install.js';

/** The snapshot the command names; a VM that is not a snapshot is refused. */
async function snapshotOf(ctx: CommandContext): Promise<string> {
  const uuid = param(ctx.params, 'snapshot-uuid') ?? param(ctx.params, 'uuid');
  if (uuid === undefined) throw new CliFailure('Required parameter not found: snapshot-uuid or uuid.');
  const ref = (await ctx.call('VM.get_by_uuid', uuid)) as string;
  if (!(await ctx.call('VM.get_is_a_snapshot', ref))) {
    throw new CliFailure(`This operation can only be performed on a VM snapshot. ${uuid} is not a VM snapshot.`);
  }
  return ref;
}

defineCommand({
  name: 'snapshot-revert',
  reqd: [],
  optn: ['uuid', 'snapshot-uuid'],
  help: 'Revert a VM to one of its snapshots or checkpoints.',
  standard: true,
  run: async (ctx) => {
    await ctx.call('VM.revert', await snapshotOf(ctx));
  },
});

/** A new VM from a snapshot: prints its uuid. */
async function fromSnapshot(ctx: CommandContext, op: (snap: string, name: string) => Promise<unknown>): Promise<void> {
  const name = param(ctx.params, 'new-name-label')!;
  const desc = param(ctx.params, 'new-name-description');
  const made = (await op(await snapshotOf(ctx), name)) as string;
  if (desc !== undefined) await ctx.call('VM.set_name_description', made, desc);
  ctx.printer.print({ t: 'list', lines: [(await ctx.call('VM.get_uuid', made)) as string] });
}

defineCommand({
  name: 'snapshot-clone',
  reqd: ['new-name-label'],
  optn: ['uuid', 'new-name-description'],
  help: 'Make a new template from a snapshot, with fast disk clones where the storage has them.',
  standard: true,
  run: (ctx) => fromSnapshot(ctx, (snap, name) => ctx.call('VM.clone', snap, name)),
});

defineCommand({
  name: 'snapshot-copy',
  reqd: ['new-name-label'],
  optn: ['uuid', 'new-name-description', 'sr-uuid'],
  help: "Make a new template from a snapshot with full copies of its disks, onto 'sr-uuid' if given.",
  standard: true,
  run: async (ctx) => {
    const srUuid = param(ctx.params, 'sr-uuid');
    const sr = srUuid === undefined ? NULL_REF : ((await ctx.call('SR.get_by_uuid', srUuid)) as string);
    await fromSnapshot(ctx, (snap, name) => ctx.call('VM.copy', snap, name, sr));
  },
});

defineCommand({
  name: 'snapshot-destroy',
  reqd: [],
  optn: ['uuid', 'snapshot-uuid'],
  help: "Destroy a snapshot's record, leaving its disks (snapshot-uninstall destroys them too).",
  run: async (ctx) => {
    const snap = await snapshotOf(ctx);
    if ((await ctx.call('VM.get_power_state', snap)) !== 'Halted') await ctx.call('VM.hard_shutdown', snap);
    await ctx.call('VM.destroy', snap);
  },
});

defineCommand({
  name: 'snapshot-uninstall',
  reqd: [],
  optn: ['uuid', 'snapshot-uuid', 'force'],
  help: 'Uninstall a snapshot: destroys it with the disks only it uses (snapshot-destroy keeps the disks).',
  standard: true,
  run: async (ctx) => uninstall(ctx, [await snapshotOf(ctx)]),
});

defineCommand({
  name: 'snapshot-reset-powerstate',
  reqd: [],
  optn: ['uuid', 'snapshot-uuid', 'force'],
  help: "Mark a suspended snapshot halted in the database only, giving up its memory image. Needs --force.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    if (!boolParam(ctx.params, 'force')) throw new CliFailure(NO_FORCE);
    await ctx.call('VM.power_state_reset', await snapshotOf(ctx));
  },
});
