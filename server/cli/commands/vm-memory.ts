// The vm-memory-*-set commands: sizes with an optional unit (record_util.ml's bytes_of_string),
// set through VM.set_memory_* on the selected VMs, templates and control domains included.
import { defineCommand, type CommandContext } from '../commands.js';
import { param } from '../args.js';
import { doVmOp } from '../selectors.js';
import { CliFailure } from '../errors.js';

const UNITS: { [suffix: string]: bigint } = { bytes: 1n, b: 1n, '': 1n, kib: 1n << 10n, kb: 1n << 10n, k: 1n << 10n,
  mib: 1n << 20n, mb: 1n << 20n, m: 1n << 20n, gib: 1n << 30n, gb: 1n << 30n, g: 1n << 30n, tib: 1n << 40n, tb: 1n << 40n, t: 1n << 40n };

/** `512MiB`, `2 GiB`, `1024`: a number of bytes (binary units whatever the spelling). */
export function bytesOf(field: string, text: string): number {
  const m = /^\s*([+-]?\d+)\s*(\S*)/.exec(text);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  const size = m ? BigInt(m[1]) : -1n;
  if (!m || unit === undefined || size < 0n || size * unit > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CliFailure(`Failed to parse field '${field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '${text}'`);
  }
  return Number(size * unit);
}

function memoryCommand(name: string, keys: string[], help: string, message: string, opts: { templates: boolean }, args: (v: number[]) => number[] = (v) => v): void {
  defineCommand({
    name, reqd: keys, optn: [], help, selectors: 'vm',
    run: async (ctx: CommandContext) => {
      const values = args(keys.map((k) => bytesOf(k, param(ctx.params, k)!)));
      await doVmOp(ctx, (vm) => ctx.call(message, vm.ref, ...values), { controlDomains: true, templates: opts.templates, ignore: keys });
    },
  });
}

memoryCommand('vm-memory-dynamic-range-set', ['min', 'max'], "Set a VM's dynamic memory range (the range the balloon driver may use).", 'VM.set_memory_dynamic_range', { templates: true });
memoryCommand('vm-memory-static-range-set', ['min', 'max'], "Set a VM's static memory range (for a halted VM).", 'VM.set_memory_static_range', { templates: true });
memoryCommand('vm-memory-limits-set', ['static-min', 'static-max', 'dynamic-min', 'dynamic-max'], "Set all four memory limits of a VM at once.", 'VM.set_memory_limits', { templates: true });
memoryCommand('vm-memory-set', ['memory'], "Set a VM's memory: static max and the dynamic range all to one value.", 'VM.set_memory', { templates: true });
memoryCommand('vm-memory-target-set', ['target'], "Set a running VM's memory target: its dynamic range pinned to that value.", 'VM.set_memory_dynamic_range', { templates: false }, ([t]) => [t, t]);
