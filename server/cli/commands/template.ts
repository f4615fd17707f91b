// template-uninstall: a template named by uuid destroyed with the disks it owns
// (cli_operations.ml's template_uninstall).
import { defineCommand } from '../commands.js';
import { param } from '../args.js';
import { CliFailure } from '../errors.js';
import { uninstall } from './vm-install.js';

defineCommand({
  name: 'template-uninstall',
  reqd: ['template-uuid'],
  optn: ['force'],
  help: 'Uninstall a template: destroys it with the disks it owns.',
  standard: true,
  run: async (ctx) => {
    const uuid = param(ctx.params, 'template-uuid')!;
    const ref = (await ctx.call('VM.get_by_uuid', uuid)) as string;
    if (!(await ctx.call('VM.get_is_a_template', ref))) {
      throw new CliFailure(`This operation can only be performed on a VM template. ${uuid} is not a VM template.`);
    }
    await uninstall(ctx, [ref]);
  },
});
