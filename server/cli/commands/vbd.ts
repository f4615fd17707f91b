// VBD commands (cli_operations.ml's vbd_*).
import { defineCommand } from '../commands.js';
import { boolOf, byUuid, failure, param, printUuidOf, reqd } from './params.js';

defineCommand({
  name: 'vbd-create',
  reqd: ['vm-uuid', 'device'],
  optn: ['vdi-uuid', 'bootable', 'type', 'mode', 'unpluggable'],
  help: "Create a VBD on a VM at device (see the VM's allowed-VBD-devices); without vdi-uuid an empty CD drive. type is Disk, CD or Floppy; mode is RO or RW.",
  run: async (ctx) => {
    const p = ctx.params;
    const vm = await byUuid(ctx, 'VM', reqd(ctx, 'vm-uuid'));
    const vdiUuid = param(p, 'vdi-uuid');
    const empty = vdiUuid === undefined;
    const vdi = empty ? 'OpaqueRef:NULL' : await byUuid(ctx, 'VDI', vdiUuid);
    const bootable = boolOf(p, 'bootable');
    const m = param(p, 'mode');
    let mode = 'RW';
    if (m !== undefined) {
      const l = m.toLowerCase();
      if (l === 'ro') mode = 'RO';
      else if (l !== 'rw') throw failure(`Unknown mode: ${m} (should be "ro" or "rw"`);
    }
    const t = param(p, 'type');
    let type = 'Disk';
    if (t !== undefined) {
      const l = t.toLowerCase();
      const known: Record<string, string> = { cd: 'CD', disk: 'Disk', floppy: 'Floppy' };
      if (known[l] === undefined) throw failure(`"Unknown type: ${t} (should be "cd", "disk" or "floppy"`);
      type = known[l];
    }
    const unpluggable = boolOf(p, 'unpluggable', true);
    if (type === 'Disk' && empty) throw failure('Empty VBDs can only be made for type=CD');
    const vbd = (await ctx.call('VBD.create', {
      VM: vm, VDI: vdi, userdevice: reqd(ctx, 'device'), bootable, mode, type, unpluggable, empty,
      qos_algorithm_type: '', qos_algorithm_params: {}, other_config: {}, device: '', currently_attached: false,
    })) as string;
    await printUuidOf(ctx, 'VBD', vbd);
  },
});

defineCommand({
  name: 'vbd-insert',
  reqd: ['uuid', 'vdi-uuid'],
  optn: [],
  help: 'Put a VDI (an ISO) into an empty CD drive.',
  run: async (ctx) => {
    const vbd = await byUuid(ctx, 'VBD', reqd(ctx, 'uuid'));
    await ctx.call('VBD.insert', vbd, await byUuid(ctx, 'VDI', reqd(ctx, 'vdi-uuid')));
  },
});

defineCommand({
  name: 'vbd-unplug',
  reqd: ['uuid'],
  optn: ['timeout', 'force'],
  help: 'Detach a VBD from its running VM; --force detaches without the guest\'s consent. With timeout=, a refusal by the guest is waited out that long.',
  run: async (ctx) => {
    const vbd = await byUuid(ctx, 'VBD', reqd(ctx, 'uuid'));
    const t = param(ctx.params, 'timeout');
    const timeout = t === undefined ? 0 : Number(t);
    if (t !== undefined && (t.trim() === '' || !Number.isFinite(timeout))) throw failure("Failed to parse parameter 'timeout': expecting a float");
    const start = ctx.emu.clock.now();
    try {
      await ctx.call(boolOf(ctx.params, 'force') ? 'VBD.unplug_force' : 'VBD.unplug', vbd);
    } catch (e) {
      // a guest that refuses the detach may still let go: poll every 5 s until the timeout
      if ((e as { code?: string }).code !== 'DEVICE_DETACH_REJECTED') throw e;
      while ((ctx.emu.clock.now() - start) / 1000 < timeout) {
        await ctx.emu.clock.sleep(5);
        if (!(await ctx.call('VBD.get_currently_attached', vbd))) return;
      }
      throw e;
    }
  },
});

for (const [name, help, message] of [
  ['vbd-destroy', 'Destroy a VBD.', 'VBD.destroy'],
  ['vbd-eject', 'Take the disc out of a CD drive.', 'VBD.eject'],
  ['vbd-plug', 'Attach a VBD to its running VM.', 'VBD.plug'],
] as const) {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'VBD', reqd(ctx, 'uuid')));
    },
  });
}
