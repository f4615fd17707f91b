// Reading a command's parameters as xapi's cli_operations.ml does: `prefix:key=value` maps, sets
// of keys, booleans, sizes with unit suffixes; and the small steps most commands share.
import { model } from '../../../schema/index.js';
import { XapiError } from '../../dispatch/errors.js';
import { param } from '../args.js';
import type { CommandContext, Params } from '../commands.js';
import { CliFailure } from '../errors.js';

export { param };

/** `name:key=value` parameters as a map (read_map_params; the later of two equal keys wins on the wire). */
export function mapParams(params: Params, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  const len = name.length + 1;
  for (const [k, v] of params) if (k.startsWith(name) && k.length > len) out[k.slice(len)] = v;
  return out;
}

/** `name:key=` parameters as a set of keys (read_set_params). */
export const setParams = (params: Params, name: string): string[] => Object.keys(mapParams(params, name));

const TRUE = ['true', 't', 'yes', 'y', '1'];
const FALSE = ['false', 'f', 'no', 'n', '0'];

/** A boolean parameter as Record_util.bool_of_string reads it. */
export function boolOf(params: Params, name: string, dflt = false): boolean {
  const v = param(params, name);
  if (v === undefined) return dflt;
  const l = v.toLowerCase();
  if (TRUE.includes(l)) return true;
  if (FALSE.includes(l)) return false;
  throw new CliFailure(`Failed to parse parameter '${name}': Expected 'true','t','yes','y','1','false','f','no','n','0' got ${v}`);
}

const UNITS: Record<string, bigint> = {
  '': 1n, b: 1n, bytes: 1n,
  k: 1n << 10n, kb: 1n << 10n, kib: 1n << 10n,
  m: 1n << 20n, mb: 1n << 20n, mib: 1n << 20n,
  g: 1n << 30n, gb: 1n << 30n, gib: 1n << 30n,
  t: 1n << 40n, tb: 1n << 40n, tib: 1n << 40n,
};

/** A size: digits, optional blanks, an optional unit (Record_util.bytes_of_string). */
export function bytesOf(field: string, s: string): number {
  const m = /^\s*([+-]?\d+)\s*(\S*)/.exec(s);
  const fail = () => new CliFailure(`Failed to parse field '${field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '${s}'`);
  if (!m) throw fail();
  const n = BigInt(m[1]);
  const unit = UNITS[m[2].toLowerCase()];
  if (n < 0n || n >= 1n << 63n || unit === undefined) throw fail();
  // (an int64 product, as xapi computes it)
  return Number(BigInt.asIntN(64, n * unit));
}

/** A failure of the command's own code: an INTERNAL_ERROR as xapi reports an OCaml Failure. */
export const failure = (text: string) => new XapiError('INTERNAL_ERROR', [`Failure: ${text}`]);

/** The object of `cls` with the uuid given as parameter `name` (a reqd parameter, or checked before). */
export const byUuid = (ctx: CommandContext, cls: string, uuid: string): Promise<string> => ctx.call(`${cls}.get_by_uuid`, uuid) as Promise<string>;

/** The parameter `name` of a command that lists it as required. */
export function reqd(ctx: CommandContext, name: string): string {
  const v = param(ctx.params, name);
  if (v === undefined) throw new CliFailure(`Required parameter not found: ${name}`);
  return v;
}

/** Prints the uuid of a new object, as most create commands do. */
export async function printUuidOf(ctx: CommandContext, cls: string, ref: string): Promise<void> {
  ctx.printer.print({ t: 'list', lines: [(await ctx.call(`${cls}.get_uuid`, ref)) as string] });
}

/** An enum value as the CLI reads it: its datamodel name, case aside (the generated *_of_string). */
export function enumOf(name: string, s: string): string {
  const values = model.enums[name] ?? [];
  const hit = values.find((v) => v.toLowerCase() === s.toLowerCase());
  if (hit === undefined) throw new CliFailure(`Expected one of ${values.map((v) => `'${v}'`).join(', ')}, got ${s}`);
  return hit;
}

/** An integer as Int64.of_string reads it: decimal, or 0x/0o/0b prefixed, `_` allowed. */
export function int64Of(s: string): number {
  if (!/^[+-]?(\d[\d_]*|0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+)$/.test(s)) throw failure('Int64.of_string');
  const digits = Number(s.replace(/^[+-]/, '').replace(/_/g, ''));
  return s.startsWith('-') ? -digits : digits;
}
