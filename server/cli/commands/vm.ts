// VM commands of xapi's command table that act through the VM selectors: the lifecycle, clone,
// snapshot, copy (cli_operations.ml's vm_* functions).
import { defineCommand, type CommandContext } from '../commands.js';
import { boolParam, param } from '../args.js';
import { CliFailure } from '../errors.js';
import { XapiError } from '../../dispatch/errors.js';
import { NULL_REF } from '../../../storage/database.js';
import { bytesOf } from './vm-memory.js';
import { doVmOp } from '../selectors.js';
import { mapParams } from './params.js';
import { RemotePool, remoteLogin } from '../../api/migrate-remote.js';
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

/** A host named by uuid or name-label (cli_operations.ml's get_host_by_name_or_id). */
async function hostByNameOrId(ctx: CommandContext, name: string): Promise<string> {
  const hosts = (await ctx.call('host.get_all_records')) as { [ref: string]: { uuid: string; name_label: string } };
  const found = Object.entries(hosts).find(([, h]) => h.name_label === name || h.uuid === name);
  if (!found) throw new CliFailure(`Host ${name} not found`);
  return found[0];
}

defineCommand({
  name: 'vm-start',
  reqd: [],
  optn: ['force', 'on', 'paused'],
  help: "Start the selected VM(s); 'on' names the host to start on, --force skips hardware-compatibility checks.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const force = boolParam(ctx.params, 'force');
    const paused = boolParam(ctx.params, 'paused');
    const on = param(ctx.params, 'on');
    await doVmOp(ctx, async (vm) => {
      if (on !== undefined) await ctx.call('VM.start_on', vm.ref, await hostByNameOrId(ctx, on), paused, force);
      else await ctx.call('VM.start', vm.ref, paused, force);
    }, { controlDomains: true, ignore: ['on', 'paused', 'progress'] });
  },
});

defineCommand({
  name: 'vm-suspend',
  reqd: [],
  optn: [],
  help: 'Suspend the selected VM(s).',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    await doVmOp(ctx, (vm) => ctx.call('VM.suspend', vm.ref), { ignore: ['progress'] });
  },
});

defineCommand({
  name: 'vm-resume',
  reqd: [],
  optn: ['force', 'on'],
  help: "Resume the selected VM(s), on the host 'on' names if given.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const force = boolParam(ctx.params, 'force');
    const on = param(ctx.params, 'on');
    await doVmOp(ctx, async (vm) => {
      if (on !== undefined) await ctx.call('VM.resume_on', vm.ref, await hostByNameOrId(ctx, on), false, force);
      else await ctx.call('VM.resume', vm.ref, false, force);
    }, { ignore: ['on', 'progress'] });
  },
});

defineCommand({
  name: 'vm-shutdown',
  reqd: [],
  optn: ['force'],
  help: 'Shut down the selected VM(s): cleanly, or at once with --force.',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const op = boolParam(ctx.params, 'force') ? 'VM.hard_shutdown' : 'VM.clean_shutdown';
    await doVmOp(ctx, (vm) => ctx.call(op, vm.ref), { ignore: ['progress'] });
  },
});

defineCommand({
  name: 'vm-reboot',
  reqd: [],
  optn: ['force'],
  help: 'Reboot the selected VM(s): cleanly, or at once with --force.',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const op = boolParam(ctx.params, 'force') ? 'VM.hard_reboot' : 'VM.clean_reboot';
    await doVmOp(ctx, (vm) => ctx.call(op, vm.ref));
  },
});

/** What a command that can lose data says when it is not forced. */
export const NO_FORCE = 'This operation is dangerous and may cause data loss. This operation must be forced (use --force).';

defineCommand({
  name: 'vm-reset-powerstate',
  reqd: [],
  optn: ['force'],
  help: "Mark the selected VM(s) halted in the database only, for a VM known not to run anywhere (a dead host's). Needs --force.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    if (!boolParam(ctx.params, 'force')) throw new CliFailure(NO_FORCE);
    await doVmOp(ctx, (vm) => ctx.call('VM.power_state_reset', vm.ref));
  },
});

defineCommand({
  name: 'vm-destroy',
  reqd: ['uuid'],
  optn: [],
  help: "Destroy a VM's record, leaving its disks (vm-uninstall destroys them too).",
  run: async (ctx) => {
    const vm = (await ctx.call('VM.get_by_uuid', param(ctx.params, 'uuid'))) as string;
    if (await ctx.call('VM.get_is_control_domain', vm)) throw new XapiError('OPERATION_NOT_ALLOWED', ['You cannot destroy a control domain via the CLI']);
    await ctx.call('VM.destroy', vm);
  },
});

/** clone / snapshot / checkpoint of the selected VMs: prints the new VMs' uuids (vm_clone_aux). */
async function cloneLike(ctx: CommandContext, op: (vm: CliRecord, name: string) => Promise<unknown>, opts: { templates: boolean; multiple?: boolean; ignore?: string[] }): Promise<void> {
  const name = param(ctx.params, 'new-name-label')!;
  const desc = param(ctx.params, 'new-name-description');
  const made = (await doVmOp(ctx, (vm) => op(vm, name), {
    templates: opts.templates, multiple: opts.multiple, ignore: ['new-name-label', 'new-name-description', ...(opts.ignore ?? [])],
  })) as string[];
  // (xapi describes the first new VM only)
  if (desc !== undefined) await ctx.call('VM.set_name_description', made[0], desc);
  const uuids: string[] = [];
  for (const ref of made) uuids.push((await ctx.call('VM.get_uuid', ref)) as string);
  ctx.printer.print({ t: 'list', lines: uuids });
}

defineCommand({
  name: 'vm-clone',
  reqd: ['new-name-label'],
  optn: ['new-name-description'],
  help: 'Clone a VM, with fast disk clones where the storage has them.',
  standard: true,
  selectors: 'vm',
  run: (ctx) => cloneLike(ctx, (vm, name) => ctx.call('VM.clone', vm.ref, name), { templates: true, ignore: ['ignore-vdi-uuids'] }),
});

defineCommand({
  name: 'vm-snapshot',
  reqd: ['new-name-label'],
  optn: ['new-name-description', 'ignore-vdi-uuids'],
  help: "Snapshot a VM, with fast disk snapshots where the storage has them; 'ignore-vdi-uuids' lists disks left out.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const ignored = param(ctx.params, 'ignore-vdi-uuids');
    const vdis: string[] = [];
    for (const u of ignored === undefined ? [] : ignored.split(',')) vdis.push((await ctx.call('VDI.get_by_uuid', u)) as string);
    await cloneLike(ctx, (vm, name) => ctx.call('VM.snapshot', vm.ref, name, vdis), { templates: false, ignore: ['ignore-vdi-uuids'] });
  },
});

defineCommand({
  name: 'vm-checkpoint',
  reqd: ['new-name-label'],
  optn: ['new-name-description'],
  help: 'Checkpoint a VM: a snapshot of its disks and of its memory.',
  standard: true,
  selectors: 'vm',
  run: (ctx) => cloneLike(ctx, (vm, name) => ctx.call('VM.checkpoint', vm.ref, name), { templates: false, ignore: ['ignore-vdi-uuids'] }),
});

defineCommand({
  name: 'vm-copy',
  reqd: ['new-name-label'],
  optn: ['new-name-description', 'sr-uuid'],
  help: "Copy a VM with full copies of its disks (never a copy-on-write clone), onto 'sr-uuid' if given.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const srUuid = param(ctx.params, 'sr-uuid');
    const sr = srUuid === undefined ? NULL_REF : ((await ctx.call('SR.get_by_uuid', srUuid)) as string);
    await cloneLike(ctx, (vm, name) => ctx.call('VM.copy', vm.ref, name, sr), { templates: true, multiple: false, ignore: ['sr-uuid'] });
  },
});

defineCommand({
  name: 'vm-snapshot-with-quiesce',
  reqd: ['new-name-label'],
  optn: ['new-name-description'],
  help: 'Snapshot a VM with its file systems quiesced (the guest service for it no longer exists: this fails).',
  standard: true,
  selectors: 'vm',
  run: (ctx) => cloneLike(ctx, (vm, name) => ctx.call('VM.snapshot_with_quiesce', vm.ref, name), { templates: false }),
});

defineCommand({
  name: 'vm-compute-memory-overhead',
  reqd: [],
  optn: [],
  help: 'Print the memory a VM needs beyond its own for virtualization.',
  selectors: 'vm',
  run: async (ctx) => {
    await doVmOp(ctx, async (vm) => {
      ctx.printer.print({ t: 'msg', text: String(await ctx.call('VM.compute_memory_overhead', vm.ref)) });
    }, { controlDomains: true });
  },
});

defineCommand({
  name: 'vm-compute-maximum-memory',
  reqd: ['total'],
  optn: ['approximate'],
  help: "Print the most memory a VM could be given out of 'total' bytes; 'approximate' allows some slack.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const total = bytesOf('total', param(ctx.params, 'total')!);
    const approximate = boolParam(ctx.params, 'approximate');
    await doVmOp(ctx, async (vm) => {
      ctx.printer.print({ t: 'list', lines: [String(await ctx.call('VM.maximise_memory', vm.ref, total, approximate))] });
    }, { ignore: ['total', 'approximate'] });
  },
});

/** The parameters that ask for a storage migration to another pool. */
const SXM_PARAMS = ['remote-master', 'remote-username', 'vif', 'remote-password', 'remote-network', 'vdi', 'vgpu', 'image-format'];

/** remote-master: an address (xapi's CLI: HTTPS on 443), or address:port of a plain HTTP listener
 * (an emulator's), or a URL */
function remoteMasterUrl(given: string): string {
  if (given.includes('://')) return given;
  return /:\d+$/.test(given) && !given.endsWith(']') ? `http://${given}` : `https://${given}:443`;
}

/** vm-migrate to another pool (Cli_operations.vm_migrate's storage migration): a session on the
 * remote master, its host, network and SRs by name or uuid, its token, then VM.migrate_send here. */
async function migrateToPool(ctx: CommandContext, params: [string, string][], options: Record<string, string>): Promise<void> {
  const master = remoteMasterUrl(param(params, 'remote-master')!);
  const session = String(await remoteLogin(master, param(params, 'remote-username')!, param(params, 'remote-password')!));
  const remote = new RemotePool(master, session);
  try {
    const named = (x: string, f: string) => `(field "${f}"="${x}") or (field "name__label"="${x}") or (field "uuid"="${x}")`;
    const wanted = param(params, 'host');
    const hosts = await remote.call<string[]>('host.get_all_where', wanted === undefined ? 'true' : named(wanted, 'hostname'));
    if (hosts.length === 0) throw new CliFailure(wanted === undefined ? 'Failed to find a suitable host' : `Failed to find host: ${wanted}`);
    const host = hosts[0];
    let network: string;
    const net = param(params, 'remote-network');
    if (net !== undefined) {
      const nets = await remote.call<string[]>('network.get_all_where', named(net, 'bridge'));
      if (nets.length === 0) throw new CliFailure(`Failed to find network: ${net}`);
      network = nets[0];
    } else {
      const pifs = await remote.call<string[]>('PIF.get_all_where', `(field "host"="${host}") and (field "management"="true")`);
      if (pifs.length === 0) throw new CliFailure(`Could not find management PIF on host ${await remote.call<string>('host.get_uuid', host)}`);
      network = await remote.call<string>('PIF.get_network', pifs[0]);
    }
    const vifMap: Record<string, string> = {};
    for (const [vif, n] of Object.entries(mapParams(params, 'vif'))) vifMap[String(await ctx.call('VIF.get_by_uuid', vif))] = await remote.call<string>('network.get_by_uuid', n);
    const vdiMap: Record<string, string> = {};
    for (const [vdi, sr] of Object.entries(mapParams(params, 'vdi'))) vdiMap[String(await ctx.call('VDI.get_by_uuid', vdi))] = await remote.call<string>('SR.get_by_uuid', sr);
    const vgpuMap: Record<string, string> = {};
    for (const [vgpu, g] of Object.entries(mapParams(params, 'vgpu'))) vgpuMap[String(await ctx.call('VGPU.get_by_uuid', vgpu))] = await remote.call<string>('GPU_group.get_by_uuid', g);
    const hostLabel = await remote.call<string>('host.get_name_label', host);
    const netLabel = await remote.call<string>('network.get_name_label', network);
    ctx.printer.print({ t: 'msg', text: `Will migrate to remote host: ${hostLabel}, using remote network: ${netLabel}. Here is the VDI mapping:` });
    for (const [vdi, sr] of Object.entries(vdiMap)) {
      ctx.printer.print({ t: 'msg', text: `VDI ${await ctx.call('VDI.get_uuid', vdi)} -> SR ${await remote.call<string>('SR.get_uuid', sr)}` });
    }
    const token = await remote.call<Record<string, string>>('host.migrate_receive', host, network, options);
    const kept = params.filter(([k]) => !k.startsWith('vif:') && !k.startsWith('vdi:'));
    const made = await doVmOp({ ...ctx, params: kept }, (vm) => ctx.call('VM.migrate_send', vm.ref, token, true, vdiMap, vifMap, options, vgpuMap), {
      templates: true, ignore: ['host', 'host-uuid', 'host-name', 'live', 'force', 'copy', ...SXM_PARAMS],
    });
    if (boolParam(params, 'copy')) ctx.printer.print({ t: 'list', lines: [await remote.call<string>('VM.get_uuid', String(made[0]))] });
  } finally {
    await remote.call('session.logout').catch(() => undefined);
  }
}

defineCommand({
  name: 'vm-migrate',
  reqd: [],
  optn: ['live', 'host', 'host-uuid', 'remote-master', 'remote-username', 'remote-password', 'remote-network', 'force', 'copy', 'compress', 'vif:', 'vdi:', 'image-format:'],
  help: "Move the selected VM(s) to the host 'host' (name or uuid) of this pool while they run, or with remote-master=, remote-username= and remote-password= to a host of another pool with their disks (vdi:<vdi uuid>=<sr uuid>, vif:<vif uuid>=<network uuid>, remote-network=).",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    // host-uuid= and host-name= are older spellings of host=
    const params: [string, string][] = ctx.params.map(([k, v]) => [k === 'host-uuid' || k === 'host-name' ? 'host' : k, v]);
    const options: { [k: string]: string } = {};
    const compress = param(params, 'compress');
    if (compress !== undefined) options.compress = compress;
    for (const k of ['force', 'live', 'copy']) options[k] = String(boolParam(params, k));
    if (params.some(([k]) => SXM_PARAMS.some((p) => k.startsWith(p)))) {
      ctx.printer.print({ t: 'msg', text: "Performing a storage live migration. Your VM's VDIs will be migrated with the VM." });
      if (!['remote-master', 'remote-username', 'remote-password'].every((k) => param(params, k) !== undefined)) {
        throw new CliFailure("Storage live migration requires remote-master, remote-username, and remote-password to be specified. Please see 'xe help vm-migrate' for help.");
      }
      await migrateToPool(ctx, params, options);
      return;
    }
    const name = param(params, 'host');
    if (name === undefined) throw new CliFailure('No destination host specified');
    const host = await hostByNameOrId(ctx, name);
    await doVmOp({ ...ctx, params }, (vm) => ctx.call('VM.pool_migrate', vm.ref, host, options), {
      controlDomains: true, ignore: ['host', 'host-uuid', 'host-name', 'live', 'compress'],
    });
  },
});
