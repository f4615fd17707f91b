// vm-install (a new VM from a template: clone or copy, then provision its disks) and the
// uninstall commands that destroy a VM with the disks it owns (cli_operations.ml's vm_install,
// vm_uninstall_common).
import { defineCommand, type CommandContext } from '../commands.js';
import { boolParam, param } from '../args.js';
import { doVmOp } from '../selectors.js';
import { CliFailure } from '../errors.js';
import { userSaysYes } from '../exchange.js';
import { NULL_REF } from '../../../storage/database.js';

type Rec = { [field: string]: any };

const quote = (s: string) => s.replace(/"/g, '\\"');

/** The template named by template-uuid=, template-name(-label)= or template= (uuid, else name). */
async function findTemplate(ctx: CommandContext): Promise<string> {
  const byUuid = async (uuid: string) => (await ctx.call('VM.get_by_uuid', uuid)) as string;
  const byName = async (name: string) => {
    const found = Object.keys((await ctx.call('VM.get_all_records_where',
      `field "name__label"="${quote(name)}" and field "is_a_template"="true" and field "is_control_domain"="false"`)) as Rec);
    if (found.length === 0) throw new CliFailure('No templates matched');
    if (found.length > 1) throw new CliFailure('More than one matching template found');
    return found[0];
  };
  const uuid = param(ctx.params, 'template-uuid');
  if (uuid !== undefined) return byUuid(uuid).catch(() => { throw new CliFailure('Cannot find template'); });
  const name = param(ctx.params, 'template-name-label') ?? param(ctx.params, 'template-name');
  if (name !== undefined) return byName(name);
  const either = param(ctx.params, 'template');
  if (either !== undefined) return byUuid(either).catch(() => byName(either));
  throw new CliFailure("Template must be specified by parameter 'template-uuid', 'template-name', 'template-name-label' or 'template'");
}

/** The SR the disks go to: sr-uuid= and sr-name-label= must agree; a snapshot keeps its disks' SRs. */
async function targetSr(ctx: CommandContext, template: string): Promise<string | null> {
  const srUuid = param(ctx.params, 'sr-uuid');
  const srName = param(ctx.params, 'sr-name-label');
  if (await ctx.call('VM.get_is_a_snapshot', template)) {
    if (srUuid !== undefined || srName !== undefined) {
      throw new CliFailure('Do not use the sr-name-label or sr-uuid argument when installing from a snapshot. By default, it will install each new disk on the same SR as the corresponding snapshot disks.');
    }
    return NULL_REF;
  }
  const byUuid = srUuid === undefined ? null : ((await ctx.call('SR.get_by_uuid', srUuid)) as string);
  if (srName === undefined) return byUuid;
  const named = (await ctx.call('SR.get_by_name_label', srName)) as string[];
  if (named.length === 0) throw new CliFailure('No SR with that name-label found');
  if (byUuid !== null) {
    if (!named.includes(byUuid)) throw new CliFailure("SR specified via sr-uuid doesn't have the name specified via sr-name-label");
    return byUuid;
  }
  if (named.length > 1) throw new CliFailure('Multiple SRs with that name-label found');
  return named[0];
}

/** Points every <disk> of other_config:disks at `srUuid` (Cli_util.rewrite_provisioning_xml). */
async function rewriteDisks(ctx: CommandContext, vm: string, srUuid: string): Promise<void> {
  const oc = (await ctx.call('VM.get_other_config', vm)) as { [k: string]: string };
  if (oc.disks === undefined) return;
  const disks = oc.disks.replace(/<disk\b[^>]*>/g, (el) => el.replace(/\ssr="[^"]*"/, ` sr="${srUuid}"`));
  await ctx.call('VM.remove_from_other_config', vm, 'disks');
  await ctx.call('VM.add_to_other_config', vm, 'disks', disks);
}

/** Whether VM.recommendations asks for a field set to true (`<restriction field=".." value="true"/>`). */
function recommended(xml: string, field: string): boolean {
  for (const m of xml.matchAll(/<restriction\b([^>]*)>/g)) {
    if (new RegExp(`\\bfield="${field}"`).test(m[1])) return /\bvalue="true"/.test(m[1]);
  }
  return false;
}

defineCommand({
  name: 'vm-install',
  reqd: ['new-name-label'],
  optn: ['sr-name-label', 'sr-uuid', 'template', 'copy-bios-strings-from'],
  help: "Install a new VM from a template, named by 'template' (its name or uuid), with its disks on the SR given or the pool's default SR.",
  standard: true,
  run: async (ctx) => {
    const template = await findTemplate(ctx);
    if (!(await ctx.call('VM.get_is_a_template', template))) throw new CliFailure('Can only install from templates');
    const name = param(ctx.params, 'new-name-label')!;
    const sr = await targetSr(ctx, template);
    // the suspend SR: the one asked for, else the template's
    const suspendSr = sr !== null && sr !== NULL_REF ? sr : ((await ctx.call('VM.get_suspend_SR', template)) as string);
    let srUuid = '';
    if (sr !== null && sr !== NULL_REF) srUuid = (await ctx.call('SR.get_uuid', sr)) as string;
    else {
      const pool = ((await ctx.call('pool.get_all')) as string[])[0];
      const def = (await ctx.call('pool.get_default_SR', pool)) as string;
      const defUuid = def === NULL_REF ? undefined : ((await ctx.call('SR.get_uuid', def).catch(() => undefined)) as string | undefined);
      if (defUuid !== undefined) srUuid = defUuid;
      else if (((await ctx.call('VM.get_other_config', template)) as { [k: string]: string }).disks !== undefined) {
        throw new CliFailure('Failed to find a valid default SR for the Pool. Please provide an sr-name-label or sr-uuid parameter.');
      }
    }
    const vm = (sr !== null && sr !== NULL_REF
      ? await ctx.call('VM.copy', template, name, sr)
      : await ctx.call('VM.clone', template, name)) as string;
    try {
      await ctx.call('VM.set_name_description', vm, 'Installed via xe CLI');
      await ctx.call('VM.set_suspend_SR', vm, suspendSr);
      await rewriteDisks(ctx, vm, srUuid);
      const pool = ((await ctx.call('pool.get_all')) as string[])[0];
      const wantDevice = recommended((await ctx.call('VM.get_recommendations', template)) as string, 'has-vendor-device')
        && !(await ctx.call('pool.get_policy_no_vendor_device', pool));
      // (the clone already carries the template's value: only a change needs the call)
      if (wantDevice !== (await ctx.call('VM.get_has_vendor_device', vm))) await ctx.call('VM.set_has_vendor_device', vm, wantDevice);
      await ctx.call('VM.provision', vm);
      const from = param(ctx.params, 'copy-bios-strings-from');
      if (from !== undefined) await ctx.call('VM.copy_bios_strings', vm, await ctx.call('host.get_by_uuid', from));
      ctx.printer.print({ t: 'list', lines: [(await ctx.call('VM.get_uuid', vm)) as string] });
    } catch (e) {
      await ctx.call('VM.destroy', vm).catch(() => undefined);
      throw e;
    }
  },
});

/**
 * Lists the VMs and the disks they own (VBD other_config:owner, and the suspend image), then,
 * forced, destroys them: a VM not halted is hard-shut-down first.
 */
export async function uninstall(ctx: CommandContext, vms: string[]): Promise<void> {
  const lines: string[] = [];
  const steps: (() => Promise<void>)[] = [];
  const vdiLine = async (vdi: string) => {
    const r = (await ctx.call('VDI.get_record', vdi)) as Rec;
    return `VDI: ${r.uuid} (${r.name_label}) ${r.VBDs.length > 1 ? ' ** WARNING: disk is shared by other VMs' : ''}`;
  };
  const exists = (vdi: string) => ctx.call('VDI.get_uuid', vdi).then(() => true, () => false);
  for (const vm of vms) {
    const r = (await ctx.call('VM.get_record', vm)) as Rec;
    const vdis: string[] = [];
    for (const vbd of r.VBDs as string[]) {
      try {
        const b = (await ctx.call('VBD.get_record', vbd)) as Rec;
        if ('owner' in b.other_config && (await exists(b.VDI))) vdis.push(b.VDI);
      } catch {
        // a VBD gone meanwhile owns nothing
      }
    }
    const suspendVdi = r.suspend_VDI !== NULL_REF && (await exists(r.suspend_VDI)) ? (r.suspend_VDI as string) : null;
    lines.push(`VM : ${r.uuid} (${r.name_label})`);
    for (const v of vdis) lines.push(await vdiLine(v));
    if (suspendVdi !== null) lines.push(await vdiLine(suspendVdi));
    steps.push(async () => {
      if ((await ctx.call('VM.get_power_state', vm)) !== 'Halted') await ctx.call('VM.hard_shutdown', vm);
      await ctx.call('VM.destroy', vm);
      for (const v of vdis) await ctx.call('VDI.destroy', v);
      if (suspendVdi !== null) await ctx.call('VDI.destroy', suspendVdi).catch(() => undefined);
    });
  }
  // (printed straight to the client, --minimal or not, as xapi does)
  ctx.printer.print({ t: 'raw', text: 'The following items are about to be destroyed' });
  for (const l of lines) ctx.printer.print({ t: 'raw', text: l });
  if (!boolParam(ctx.params, 'force') && !(await userSaysYes(ctx))) return;
  for (const s of steps) await s();
  ctx.printer.print({ t: 'raw', text: 'All objects destroyed' });
}

defineCommand({
  name: 'vm-uninstall',
  reqd: [],
  optn: ['force'],
  help: 'Uninstall a VM and its snapshots: destroys them with the disks only they use (vm-destroy keeps the disks).',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const vms = await doVmOp(ctx, async (vm) => vm.ref);
    const snapshots: string[] = [];
    for (const vm of vms) snapshots.push(...((await ctx.call('VM.get_snapshots', vm)) as string[]));
    await uninstall(ctx, [...vms, ...snapshots]);
  },
});
