// VDI commands (cli_operations.ml's vdi_*); vdi-import and vdi-export live with the transfers.
import { defineCommand, type CommandContext } from '../commands.js';
import { makeRecord, type CliRecord } from '../records.js';
import { boolOf, byUuid, bytesOf, failure, mapParams, param, printUuidOf, reqd, setParams } from './params.js';

const NULL = 'OpaqueRef:NULL';

/** The VDI types a command line may give (the others are the system's own). */
function vdiType(s: string): string {
  if (s === 'system' || s === 'user' || s === 'suspend' || s === 'crashdump') return s;
  throw failure(`Unknown vdi type: ${s}`);
}

defineCommand({
  name: 'vdi-create',
  reqd: ['sr-uuid', 'name-label', 'virtual-size'],
  optn: ['sm-config:', 'sharable', 'tags:', 'type'],
  help: 'Create a VDI in an SR; virtual-size takes a unit suffix (KiB, MiB, GiB, TiB).',
  run: async (ctx) => {
    const p = ctx.params;
    const sr = await byUuid(ctx, 'SR', reqd(ctx, 'sr-uuid'));
    const size = bytesOf('virtual-size', reqd(ctx, 'virtual-size'));
    const type = param(p, 'type');
    const rec = {
      name_label: reqd(ctx, 'name-label'), name_description: '', SR: sr, virtual_size: size,
      type: type === undefined ? 'user' : vdiType(type), sharable: boolOf(p, 'sharable'), read_only: false,
      xenstore_data: {}, other_config: {}, sm_config: mapParams(p, 'sm-config'), tags: setParams(p, 'tags'),
    };
    await printUuidOf(ctx, 'VDI', (await ctx.call('VDI.create', rec)) as string);
  },
});

defineCommand({
  name: 'vdi-introduce',
  reqd: ['uuid', 'sr-uuid', 'type', 'location'],
  optn: ['name-description', 'sharable', 'read-only', 'managed', 'other-config:', 'xenstore-data:', 'sm-config:', 'name-label'],
  help: 'Record in the database a VDI that exists on the storage of an SR.',
  run: async (ctx) => {
    const p = ctx.params;
    const sr = await byUuid(ctx, 'SR', reqd(ctx, 'sr-uuid'));
    const vdi = (await ctx.call('VDI.introduce', reqd(ctx, 'uuid'), param(p, 'name-label') ?? '', param(p, 'name-description') ?? '', sr,
      vdiType(reqd(ctx, 'type')), boolOf(p, 'sharable'), boolOf(p, 'read-only'), mapParams(p, 'other-config'), reqd(ctx, 'location'),
      mapParams(p, 'xenstore-data'), mapParams(p, 'sm-config'), boolOf(p, 'managed'), 0, 0, NULL, false, '19700101T00:00:00Z', NULL)) as string;
    await printUuidOf(ctx, 'VDI', vdi);
  },
});

defineCommand({
  name: 'vdi-resize',
  reqd: ['uuid', 'disk-size'],
  optn: ['online'],
  help: 'Grow a VDI to disk-size (with a unit suffix); online=true for a VDI in use.',
  run: async (ctx) => {
    const vdi = await byUuid(ctx, 'VDI', reqd(ctx, 'uuid'));
    const size = bytesOf('disk-size', reqd(ctx, 'disk-size'));
    await ctx.call(param(ctx.params, 'online') === 'true' ? 'VDI.resize_online' : 'VDI.resize', vdi, size);
  },
});

defineCommand({
  name: 'vdi-copy',
  reqd: ['uuid'],
  optn: ['sr-uuid', 'base-vdi-uuid', 'into-vdi-uuid'],
  help: 'Copy a VDI into a new VDI of sr-uuid, or into the existing VDI into-vdi-uuid; prints the copy\'s uuid.',
  run: async (ctx) => {
    const p = ctx.params;
    const vdi = await byUuid(ctx, 'VDI', reqd(ctx, 'uuid'));
    const baseUuid = param(p, 'base-vdi-uuid');
    const base = baseUuid === undefined ? NULL : await byUuid(ctx, 'VDI', baseUuid);
    const srUuid = param(p, 'sr-uuid');
    const intoUuid = param(p, 'into-vdi-uuid');
    if ((srUuid === undefined) === (intoUuid === undefined)) {
      throw failure('Please specify one but not both of: a destination sr-uuid (I will create a fresh VDI); or a destination into-vdi-uuid (I will copy the blocks into this VDI)');
    }
    const sr = srUuid === undefined ? NULL : await byUuid(ctx, 'SR', srUuid);
    const into = intoUuid === undefined ? NULL : await byUuid(ctx, 'VDI', intoUuid);
    await printUuidOf(ctx, 'VDI', (await ctx.call('VDI.copy', vdi, sr, base, into)) as string);
  },
});

defineCommand({
  name: 'vdi-pool-migrate',
  reqd: ['uuid', 'sr-uuid'],
  optn: ['dest-img-format'],
  help: 'Migrate a VDI to a specified SR, while it is attached to a running guest. You can specify the image format for the destination.',
  run: async (ctx) => {
    const vdi = await byUuid(ctx, 'VDI', reqd(ctx, 'uuid'));
    const sr = await byUuid(ctx, 'SR', reqd(ctx, 'sr-uuid'));
    const format = param(ctx.params, 'dest-img-format');
    const options = format === undefined ? {} : { 'dest-img-format': format };
    await printUuidOf(ctx, 'VDI', (await ctx.call('VDI.pool_migrate', vdi, sr, options)) as string);
  },
});

defineCommand({
  name: 'vdi-clone',
  reqd: ['uuid'],
  optn: ['driver-params-', 'new-name-label', 'new-name-description'],
  help: 'Clone a VDI (on storage that can, a copy-on-write child); prints the clone\'s uuid.',
  run: async (ctx) => {
    const p = ctx.params;
    const vdi = await byUuid(ctx, 'VDI', reqd(ctx, 'uuid'));
    const clone = (await ctx.call('VDI.clone', vdi, mapParams(p, 'driver-params'))) as string;
    const label = param(p, 'new-name-label');
    if (label !== undefined) await ctx.call('VDI.set_name_label', clone, label);
    const description = param(p, 'new-name-description');
    if (description !== undefined) await ctx.call('VDI.set_name_description', clone, description);
    await printUuidOf(ctx, 'VDI', clone);
  },
});

defineCommand({
  name: 'vdi-snapshot',
  reqd: ['uuid'],
  optn: ['driver-params-'],
  help: 'Snapshot a VDI; prints the snapshot\'s uuid.',
  run: async (ctx) => {
    const vdi = await byUuid(ctx, 'VDI', reqd(ctx, 'uuid'));
    await printUuidOf(ctx, 'VDI', (await ctx.call('VDI.snapshot', vdi, mapParams(ctx.params, 'driver-params'))) as string);
  },
});

defineCommand({
  name: 'vdi-list-changed-blocks',
  reqd: ['vdi-from-uuid', 'vdi-to-uuid'],
  optn: [],
  help: 'Print the blocks that differ between two snapshots of a VDI with CBT on, as a base64 bitmap.',
  run: async (ctx) => {
    const from = await byUuid(ctx, 'VDI', reqd(ctx, 'vdi-from-uuid'));
    const to = await byUuid(ctx, 'VDI', reqd(ctx, 'vdi-to-uuid'));
    ctx.printer.print({ t: 'raw', text: (await ctx.call('VDI.list_changed_blocks', from, to)) as string });
  },
});

for (const [name, help, message] of [
  ['vdi-destroy', 'Destroy a VDI and its data.', 'VDI.destroy'],
  ['vdi-forget', 'Remove a VDI from the database, leaving its data on the storage.', 'VDI.forget'],
  ['vdi-update', 'Refresh the fields of a VDI from its storage.', 'VDI.update'],
  ['vdi-enable-cbt', 'Turn changed block tracking on for a VDI.', 'VDI.enable_cbt'],
  ['vdi-disable-cbt', 'Turn changed block tracking off for a VDI.', 'VDI.disable_cbt'],
  ['vdi-data-destroy', 'Delete the data of a snapshot VDI with CBT on, keeping its changed block log.', 'VDI.data_destroy'],
] as const) {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'VDI', reqd(ctx, 'uuid')));
    },
  });
}

/** The fields of `r` named in `names`, in the record's own order, as print_field shows them. */
async function fieldsOf(ctx: CommandContext, r: CliRecord, names: string[]): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for (const f of r.fields) {
    if (!names.includes(f.name)) continue;
    await f.load(ctx);
    out.push([f.label(), f.get()]);
  }
  return out;
}

defineCommand({
  name: 'diagnostic-vdi-status',
  reqd: ['uuid'],
  optn: [],
  help: 'Show a VDI with its locks and sharing, and its VBDs, attached ones first.',
  run: async (ctx) => {
    const vdi = await byUuid(ctx, 'VDI', reqd(ctx, 'uuid'));
    const rec = await makeRecord(ctx, 'vdi', vdi, (await ctx.call('VDI.get_record', vdi)) as Record<string, unknown>);
    ctx.printer.print({ t: 'table', records: [await fieldsOf(ctx, rec, ['uuid', 'name-label', 'sr-uuid', 'mode', 'read-only', 'sharable', 'storage-lock'])] });
    const vbds: CliRecord[] = [];
    for (const ref of (await ctx.call('VDI.get_VBDs', vdi)) as string[]) {
      vbds.push(await makeRecord(ctx, 'vbd', ref, (await ctx.call('VBD.get_record', ref)) as Record<string, unknown>));
    }
    const active = vbds.filter((v) => v.field('currently-attached').get() === 'true');
    const inactive = vbds.filter((v) => !active.includes(v));
    const show = async (list: CliRecord[]) => {
      for (const v of list) ctx.printer.print({ t: 'table', records: [await fieldsOf(ctx, v, ['uuid', 'userdevice', 'device', 'empty', 'mode', 'type', 'storage-lock'])] });
    };
    if (active.length === 0) ctx.printer.print({ t: 'list', lines: ['no active VBDs.'] });
    else {
      ctx.printer.print({ t: 'list', lines: ['active VBDs:'] });
      await show(active);
    }
    if (inactive.length > 0) {
      ctx.printer.print({ t: 'list', lines: ['inactive VBDs:'] });
      await show(inactive);
    }
  },
});
