// Commands that change who is in the pool and who leads it (cli_operations.ml's pool_join,
// pool_eject, pool_emergency_*, pool_recover_slaves, host_forget, host_declare_dead, host_power_on).
import { XapiError } from '../../dispatch/errors.js';
import { defineCommand, type CommandContext } from '../commands.js';
import { userSaysYes } from '../exchange.js';
import { doHostOp } from '../selectors.js';
import { boolOf, byUuid, reqd } from './params.js';

/** xapi's fuse (Constants.fuse_time) as OCaml's string_of_float prints it. */
const FUSE_TIME = '10.';

/** A message printed to the client straight away, --minimal or not (a marshalled Print). */
const say = (ctx: CommandContext, text: string) => ctx.printer.print({ t: 'raw', text });

defineCommand({
  name: 'pool-join',
  reqd: ['master-address', 'master-username', 'master-password'],
  optn: ['force'],
  help: 'Instruct host to join an existing pool.',
  run: async (ctx) => {
    const force = boolOf(ctx.params, 'force');
    try {
      await ctx.call(force ? 'pool.join_force' : 'pool.join', reqd(ctx, 'master-address'), reqd(ctx, 'master-username'), reqd(ctx, 'master-password'));
      ctx.printer.print({ t: 'list', lines: [`Host agent will restart and attempt to join pool in ${FUSE_TIME} seconds...`] });
    } catch (e) {
      // (told as advice, and the command succeeds)
      if (!(e instanceof XapiError) || e.code !== 'JOINING_HOST_CONNECTION_FAILED') throw e;
      ctx.printer.print({ t: 'list', lines: [
        'Host cannot contact destination host: connection refused.',
        'Check destination host has services running and accessible from this host.',
      ] });
    }
  },
});

/** The VDIs of the SRs only `host` sees, as pool-eject warns of them ("VDI: uuid (name)"). */
async function localVdis(ctx: CommandContext, host: string): Promise<string[]> {
  const warnings: string[] = [];
  for (const pbd of (await ctx.call('host.get_PBDs', host)) as string[]) {
    const sr = (await ctx.call('PBD.get_SR', pbd)) as string;
    const hosts = await Promise.all(((await ctx.call('SR.get_PBDs', sr)) as string[]).map((p) => ctx.call('PBD.get_host', p)));
    if (hosts.some((h) => h !== host)) continue;
    for (const vdi of (await ctx.call('SR.get_VDIs', sr)) as string[]) {
      warnings.push(`VDI: ${(await ctx.call('VDI.get_uuid', vdi)) as string} (${(await ctx.call('VDI.get_name_label', vdi)) as string})`);
    }
  }
  // (xapi gathers them onto the front of a list)
  return warnings.reverse();
}

defineCommand({
  name: 'pool-eject',
  reqd: ['host-uuid'],
  optn: [],
  help: 'Instruct host to leave an existing pool.',
  run: async (ctx) => {
    const host = await byUuid(ctx, 'host', reqd(ctx, 'host-uuid'));
    if (!boolOf(ctx.params, 'force')) {
      // best effort: a warning that cannot be made is left out
      const vdis = await localVdis(ctx, host).catch(() => []);
      say(ctx, "WARNING: Ejecting a host from the pool will reinitialise that host's local SRs.");
      say(ctx, 'WARNING: Any data contained with the local SRs will be lost.');
      if (vdis.length > 0) {
        say(ctx, 'The following VDI objects will be destroyed:');
        for (const v of vdis) say(ctx, v);
      }
      if (!(await userSaysYes(ctx))) return;
    }
    await ctx.call('pool.eject', host);
    ctx.printer.print({ t: 'list', lines: [`Specified host will attempt to restart as a master of a new pool in ${FUSE_TIME} seconds...`] });
  },
});

defineCommand({
  name: 'pool-emergency-transition-to-master',
  reqd: [],
  optn: ['force'],
  help: "Instruct slave to become pool master. The operation will be ignored if this host is already master; the optional parameter '--force' will force the operation.",
  local: true,
  run: async (ctx) => {
    const force = boolOf(ctx.params, 'force');
    if (ctx.host === ctx.emu.master && !force) {
      ctx.printer.print({ t: 'list', lines: ["Host agent is already master. Use '--force' to execute the operation anyway."] });
      return;
    }
    await ctx.call('pool.emergency_transition_to_master');
    ctx.printer.print({ t: 'list', lines: [`Host agent will restart and transition to master in ${FUSE_TIME} seconds...`] });
  },
});

defineCommand({
  name: 'pool-emergency-reset-master',
  reqd: ['master-address'],
  optn: [],
  help: 'Instruct slave to reset master address.',
  local: true,
  run: async (ctx) => {
    const address = reqd(ctx, 'master-address');
    await ctx.call('pool.emergency_reset_master', address);
    ctx.printer.print({ t: 'list', lines: [`Host agent will restart and become slave of ${address} in ${FUSE_TIME} seconds...`] });
  },
});

defineCommand({
  name: 'pool-recover-slaves',
  reqd: [],
  optn: [],
  help: 'Instruct master to try and reset master-address of all slaves currently running in emergency mode.',
  run: async (ctx) => {
    const hosts = (await ctx.call('pool.recover_slaves')) as string[];
    const uuids: string[] = [];
    for (const h of hosts) uuids.push((await ctx.call('host.get_uuid', h)) as string);
    ctx.printer.print({ t: 'list', lines: uuids });
  },
});

/** A host operation that cannot be undone: warnings and a 'yes' first, unless --force. */
function hostCarefulOp(name: string, help: string, message: string, warnings: string[]): void {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      const host = await byUuid(ctx, 'host', reqd(ctx, 'uuid'));
      if (!boolOf(ctx.params, 'force')) {
        for (const w of warnings) say(ctx, w);
        if (!(await userSaysYes(ctx))) return;
      }
      await ctx.call(message, host);
    },
  });
}

hostCarefulOp('host-forget',
  "Forget about the host without contacting it explicitly. WARNING: this call is useful if the host to 'forget' is dead; however, if the host is live and part of the pool, you should consider using pool-eject instead.",
  'host.destroy', [
    'WARNING: A host should only be forgotten if it is physically unrecoverable;',
    "WARNING: if possible, Hosts should be 'ejected' from the Pool instead.",
    'WARNING: Once a host has been forgotten it will have to be re-installed.',
    'WARNING: This operation is irreversible.',
  ]);

hostCarefulOp('host-declare-dead',
  'Declare that the the host is dead without contacting it explicitly. WARNING: This call is dangerous and can cause data loss if the host is not actually dead',
  'host.declare_dead', [
    'WARNING: A host should only be declared dead if it is verified offline.',
    'WARNING: Performing this operation if the host is still online and has any',
    'WARNING: running VMs may lead to possible data loss and/or corruption.',
  ]);

defineCommand({
  name: 'host-power-on',
  reqd: [],
  optn: [],
  help: 'Power on the XE host.',
  selectors: 'host',
  run: async (ctx) => {
    await doHostOp(ctx, (h) => ctx.call('host.power_on', h.ref));
  },
});
