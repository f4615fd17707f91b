// The VM's disks, CD drives and VIFs as xe shows and changes them (cli_operations.ml's
// vm_disk_*, vm_cd_*, vm_vif_list), and vm-vcpu-hotplug.
import { defineCommand, type CommandContext } from '../commands.js';
import { param } from '../args.js';
import { doVmOp } from '../selectors.js';
import { CliFailure } from '../errors.js';
import { XapiError } from '../../dispatch/errors.js';
import { makeRecord, type CliRecord, type FieldView } from '../records.js';
import { NULL_REF } from '../../../storage/database.js';
import { bytesOf } from './vm-memory.js';

type Rec = { [field: string]: any };

/** `params=` (a list, or all) or the command's own columns, in the record's order. */
function chosen(given: string | undefined, r: CliRecord, defaults: string[]): FieldView[] {
  const names = given === undefined ? defaults : given === 'all' ? [] : given.split(',');
  return names.length === 0 ? r.fields : r.fields.filter((f) => names.includes(f.name));
}

/** `name (RO): value` of each field; one whose value this server cannot compute is left out. */
async function printed(ctx: CommandContext, fields: FieldView[]): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for (const f of fields) {
    try {
      await f.load(ctx);
      out.push([f.label(), f.get()]);
    } catch (e) {
      if (!(e instanceof XapiError && e.code === 'NOT_IMPLEMENTED')) throw e;
    }
  }
  return out;
}

/** The VM's disks (or CDs): for each, its VBD then its VDI (none for an empty drive). */
async function diskList(ctx: CommandContext, vm: string, cd: boolean): Promise<void> {
  const vbds = (await ctx.call('VM.get_VBDs', vm)) as string[];
  let n = 0;
  for (const vbd of vbds) {
    const b = (await ctx.call('VBD.get_record', vbd)) as Rec;
    if (b.type !== (cd ? 'CD' : 'Disk')) continue;
    const disk = `${cd ? 'CD' : 'Disk'} ${n++}`;
    const vbdRec = await makeRecord(ctx, 'vbd', vbd, b);
    ctx.printer.print({ t: 'msg', text: `${disk} VBD:` });
    ctx.printer.print({ t: 'table', records: [await printed(ctx, chosen(param(ctx.params, 'vbd-params'), vbdRec, cd ? ['uuid', 'vm-name-label', 'userdevice', 'empty'] : ['uuid', 'vm-name-label', 'userdevice']))] });
    if (!b.empty) {
      const vdiRec = await makeRecord(ctx, 'vdi', b.VDI, (await ctx.call('VDI.get_record', b.VDI)) as Rec);
      ctx.printer.print({ t: 'msg', text: `${disk} VDI:` });
      ctx.printer.print({ t: 'table', records: [await printed(ctx, chosen(param(ctx.params, 'vdi-params'), vdiRec, ['uuid', 'name-label', 'virtual-size', 'sr-name-label']))] });
    }
  }
}

for (const cd of [false, true]) {
  defineCommand({
    name: cd ? 'vm-cd-list' : 'vm-disk-list',
    reqd: [],
    optn: ['vbd-params', 'vdi-params'],
    help: cd ? "List the CD drives of the selected VM(s), with the ISO in each." : "List the disks of the selected VM(s): each VBD and its VDI.",
    standard: true,
    selectors: 'vm',
    run: async (ctx) => {
      await doVmOp(ctx, (vm) => diskList(ctx, vm.ref, cd), { ignore: ['vbd-params', 'vdi-params'] });
    },
  });
}

defineCommand({
  name: 'snapshot-disk-list',
  reqd: [],
  optn: ['uuid', 'snapshot-uuid', 'vbd-params', 'vdi-params'],
  help: "List the disks of a snapshot: each VBD and its VDI.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const uuid = param(ctx.params, 'snapshot-uuid') ?? param(ctx.params, 'uuid');
    if (uuid === undefined) throw new CliFailure('Required parameter not found: snapshot-uuid or uuid.');
    const ref = (await ctx.call('VM.get_by_uuid', uuid)) as string;
    if (!(await ctx.call('VM.get_is_a_snapshot', ref))) throw new CliFailure(`This operation can only be performed on a VM snapshot. ${uuid} is not a VM snapshot.`);
    await diskList(ctx, ref, false);
  },
});

defineCommand({
  name: 'vm-vif-list',
  reqd: [],
  optn: [],
  help: 'List the VIFs of the selected VM(s).',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    // (every VM matched is listed: no --multiple needed)
    const withMultiple: CommandContext = { ...ctx, params: [['multiple', 'true'], ...ctx.params] };
    await doVmOp(withMultiple, async (vm) => {
      const table: [string, string][][] = [];
      for (const vif of (await ctx.call('VM.get_VIFs', vm.ref)) as string[]) {
        const r = await makeRecord(ctx, 'vif', vif, (await ctx.call('VIF.get_record', vif)) as Rec);
        table.push(await printed(ctx, chosen(param(ctx.params, 'params'), r, ['uuid', 'device', 'MAC', 'network-uuid', 'network-name-label', 'vm-name-label'])));
      }
      ctx.printer.print({ t: 'table', records: table });
    }, { ignore: ['params'] });
  },
});

/** A VBD of `vm` onto `vdi`, then plugged if the VM runs (a failure to plug leaves it unplugged). */
async function vbdAndPlug(ctx: CommandContext, vm: string, vdi: string, userdevice: string, mode: 'RW' | 'RO', type: 'Disk' | 'CD', otherConfig: { [k: string]: string }): Promise<string> {
  const vbd = (await ctx.call('VBD.create', {
    VM: vm, VDI: vdi, userdevice, bootable: false, mode, type, unpluggable: true, empty: false,
    qos_algorithm_type: '', qos_algorithm_params: {}, other_config: otherConfig, device: '', currently_attached: false,
  })) as string;
  try {
    await ctx.call('VBD.plug', vbd);
  } catch (e) {
    if (!(e instanceof XapiError)) throw e;
  }
  return vbd;
}

defineCommand({
  name: 'vm-disk-add',
  reqd: ['disk-size', 'device'],
  optn: ['sr-uuid'],
  help: "Add a new disk of 'disk-size' to the selected VM(s) at 'device', on 'sr-uuid' or the pool's default SR.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const size = bytesOf('disk-size', param(ctx.params, 'disk-size')!);
    const device = param(ctx.params, 'device')!;
    const srUuid = param(ctx.params, 'sr-uuid');
    let sr: string;
    if (srUuid !== undefined) sr = (await ctx.call('SR.get_by_uuid', srUuid)) as string;
    else {
      const pool = ((await ctx.call('pool.get_all')) as string[])[0];
      const def = (await ctx.call('pool.get_default_SR', pool)) as string;
      const ok = def !== NULL_REF && (await ctx.call('SR.get_uuid', def).then(() => true, () => false));
      if (!ok) throw new CliFailure('No default Pool SR set; you must specify an SR on the commandline');
      sr = def;
    }
    await doVmOp(ctx, async (vm) => {
      const vdi = (await ctx.call('VDI.create', {
        name_label: 'Created by xe', name_description: 'Created by xe', SR: sr, virtual_size: size, type: 'user',
        sharable: false, read_only: false, other_config: {}, xenstore_data: {}, sm_config: { vmhint: vm.field('uuid').get() }, tags: [],
      })) as string;
      try {
        await vbdAndPlug(ctx, vm.ref, vdi, device, 'RW', 'Disk', { owner: '' });
      } catch (e) {
        await ctx.call('VDI.destroy', vdi);
        throw e;
      }
    }, { ignore: ['sr-uuid', 'device', 'disk-size'] });
  },
});

defineCommand({
  name: 'vm-disk-remove',
  reqd: ['device'],
  optn: [],
  help: "Remove the disk at 'device' from the selected VM(s), destroying it.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const device = param(ctx.params, 'device')!;
    await doVmOp(ctx, async (vm) => {
      let found: string | undefined;
      for (const vbd of (await ctx.call('VM.get_VBDs', vm.ref)) as string[]) {
        if ((await ctx.call('VBD.get_userdevice', vbd)) === device) { found = vbd; break; }
      }
      if (found === undefined) throw new CliFailure('Disk not found');
      const vdi = (await ctx.call('VBD.get_VDI', found)) as string;
      await ctx.call('VBD.destroy', found);
      await ctx.call('VDI.destroy', vdi);
    }, { ignore: ['device'] });
  },
});

/** The VDIs named `name` on ISO SRs. */
async function isosNamed(ctx: CommandContext, name: string): Promise<string[]> {
  const out: string[] = [];
  for (const vdi of (await ctx.call('VDI.get_by_name_label', name)) as string[]) {
    const sr = (await ctx.call('VDI.get_SR', vdi)) as string;
    if ((await ctx.call('SR.get_content_type', sr)) === 'iso') out.push(vdi);
  }
  return out;
}

/** The CD drives of a VM (empty ones only if asked). */
async function cdDrives(ctx: CommandContext, vm: string, emptyOnly: boolean): Promise<string[]> {
  const out: string[] = [];
  for (const vbd of (await ctx.call('VM.get_VBDs', vm)) as string[]) {
    const b = (await ctx.call('VBD.get_record', vbd)) as Rec;
    if (b.type === 'CD' && (!emptyOnly || b.empty)) out.push(vbd);
  }
  return out;
}

defineCommand({
  name: 'vm-cd-add',
  reqd: ['cd-name', 'device'],
  optn: [],
  help: "Add a CD drive holding the ISO 'cd-name' to the selected VM(s) at 'device'.",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const name = param(ctx.params, 'cd-name')!;
    const vdis = await isosNamed(ctx, name);
    if (vdis.length === 0) throw new CliFailure(`CD ${name} not found!`);
    await doVmOp(ctx, (vm) => vbdAndPlug(ctx, vm.ref, vdis[0], param(ctx.params, 'device')!, 'RO', 'CD', {}), { ignore: ['cd-name', 'device', 'cd-location'] });
  },
});

defineCommand({
  name: 'vm-cd-remove',
  reqd: ['cd-name'],
  optn: [],
  help: "Remove the CD drive holding 'cd-name' (or '<EMPTY>' for an empty one) from the selected VM(s).",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const name = param(ctx.params, 'cd-name')!;
    await doVmOp(ctx, async (vm) => {
      let found: string | undefined;
      for (const vbd of (await ctx.call('VM.get_VBDs', vm.ref)) as string[]) {
        let match: boolean;
        try {
          const vdi = (await ctx.call('VBD.get_VDI', vbd)) as string;
          const sr = (await ctx.call('VDI.get_SR', vdi)) as string;
          match = (await ctx.call('SR.get_content_type', sr)) === 'iso' && (await ctx.call('VDI.get_name_label', vdi)) === name;
        } catch {
          // no VDI: an empty drive
          match = name === '<EMPTY>';
        }
        if (match) { found = vbd; break; }
      }
      if (found === undefined) throw new CliFailure('Disk not found');
      await ctx.call('VBD.destroy', found);
    }, { ignore: ['cd-name'] });
  },
});

defineCommand({
  name: 'vm-cd-eject',
  reqd: [],
  optn: [],
  help: 'Eject the CD of the selected VM(s) (a VM with one CD drive).',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    await doVmOp(ctx, async (vm) => {
      const cds = await cdDrives(ctx, vm.ref, false);
      if (cds.length === 0) throw new CliFailure('No CDs found');
      if (cds.length > 1) throw new CliFailure('Two or more CDs found. Please use vbd-eject');
      await ctx.call('VBD.eject', cds[0]);
    });
  },
});

defineCommand({
  name: 'vm-cd-insert',
  reqd: ['cd-name'],
  optn: [],
  help: "Insert the ISO 'cd-name' into the empty CD drive of the selected VM(s).",
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const name = param(ctx.params, 'cd-name')!;
    const vdis = await isosNamed(ctx, name);
    if (vdis.length === 0) throw new CliFailure(`CD ${name} not found`);
    if (vdis.length > 1) throw new CliFailure(`Multiple CDs named ${name} found. Please use vbd-insert and specify uuids`);
    await doVmOp(ctx, async (vm) => {
      const cds = await cdDrives(ctx, vm.ref, true);
      if (cds.length === 0) throw new XapiError('VM_NO_EMPTY_CD_VBD', [vm.ref]);
      if (cds.length > 1) throw new CliFailure('Two or more empty CD devices found. Please use vbd-insert');
      await ctx.call('VBD.insert', cds[0], vdis[0]);
    }, { ignore: ['cd-name'] });
  },
});

defineCommand({
  name: 'vm-vcpu-hotplug',
  reqd: ['new-vcpus'],
  optn: [],
  help: "Set the number of VCPUs of a running VM to 'new-vcpus'.",
  selectors: 'vm',
  run: async (ctx) => {
    const v = param(ctx.params, 'new-vcpus')!;
    if (!/^[+-]?\d+$/.test(v)) throw new CliFailure("Failed to parse parameter 'new-vcpus': expecting an integer");
    await doVmOp(ctx, (vm) => ctx.call('VM.set_VCPUs_number_live', vm.ref, Number(v)), { ignore: ['new-vcpus'] });
  },
});
