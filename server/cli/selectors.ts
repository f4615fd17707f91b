// Choosing the objects a command acts on, as xapi's CLI does for the commands with VM, host or
// SR selectors: `vm=<name or uuid>` (host=, sr=), filters on any field of the record, and
// --multiple to act on several; each failure of several is reported and the rest still run.
import { XapiError } from '../dispatch/errors.js';
import { boolParam, param } from './args.js';
import { STD_PARAMS, type CommandContext } from './commands.js';
import { CliFailure, FieldNotFound, MultipleFailure, serverError } from './errors.js';
import { filterRecords, makeRecord, recordSpec, refConvert, type CliRecord } from './records.js';

type Rec = { [field: string]: unknown };

const escapeQuotes = (s: string) => s.replace(/"/g, '\\"');

interface Selector {
  /** the pseudo-field naming an object by name or uuid */
  key: string;
  /** the API class, and its records.ml record */
  cls: string;
  record: string;
  /** the fields the pseudo-field matches */
  matches: string[];
}

const VM: Selector = { key: 'vm', cls: 'VM', record: 'vm', matches: ['uuid', 'name__label'] };
const HOST: Selector = { key: 'host', cls: 'host', record: 'host', matches: ['uuid', 'hostname', 'name__label'] };
const SR: Selector = { key: 'sr', cls: 'SR', record: 'sr', matches: ['uuid', 'name__label'] };

async function select(ctx: CommandContext, sel: Selector, params: [string, string][], ignore: string[]): Promise<CliRecord[]> {
  const named = param(params, sel.key);
  const rest = named === undefined ? params : params.filter(([k]) => k !== sel.key);
  const expr = named === undefined ? 'true' : sel.matches.map((f) => `(field "${f}"="${escapeQuotes(named)}")`).join(' or ');
  const all = (await ctx.call(`${sel.cls}.get_all_records_where`, expr)) as { [ref: string]: Rec };
  let records = await Promise.all(Object.entries(all).map(([ref, r]) => makeRecord(ctx, sel.record, ref, r)));
  const { fields } = recordSpec(sel.record);
  for (const f of rest) {
    const stem = f[0].split(':')[0];
    if (STD_PARAMS.includes(stem) || ignore.includes(stem)) continue;
    records = await filterRecords(ctx, records, f, fields);
  }
  return records;
}

/** The VMs a command names: neither templates nor control domains unless asked for. */
export function selectVms(ctx: CommandContext, ignore: string[] = [], opts: { controlDomains?: boolean; templates?: boolean } = {}): Promise<CliRecord[]> {
  const params: [string, string][] = [...ctx.params];
  if (!opts.controlDomains) params.unshift(['is-control-domain', 'false']);
  if (!opts.templates) params.unshift(['is-a-template', 'false']);
  return select(ctx, VM, params, ignore);
}

export const selectHosts = (ctx: CommandContext, ignore: string[] = []) => select(ctx, HOST, ctx.params, ignore);
export const selectSrs = (ctx: CommandContext, ignore: string[] = []) => select(ctx, SR, ctx.params, ignore);

/** Runs `op` on every record, then reports every failure at once. */
async function doMultiple<T>(ctx: CommandContext, records: CliRecord[], op: (r: CliRecord) => Promise<T>): Promise<T[]> {
  const failures: [string, string][] = [];
  const done: T[] = [];
  for (const r of records) {
    try {
      done.push(await op(r));
    } catch (e) {
      const uuid = r.field('uuid').get();
      if (e instanceof XapiError) {
        const lines = serverError(e.code, e.params, (s) => refConvert(ctx.emu, s));
        const first = lines[0];
        failures.push([uuid, first.t === 'Error' ? `${e.code}: [ ${e.params.join('; ')} ]`
          : lines.map((l) => (l.t === 'PrintStderr' ? l.text.replace(/\n$/, '') : '')).join('\n')]);
      } else failures.push([uuid, (e as Error).message]);
    }
  }
  if (failures.length > 0) throw new MultipleFailure(failures);
  return done;
}

type What = { one: string; many: string; none: string };

async function doOp<T>(ctx: CommandContext, records: CliRecord[], op: (r: CliRecord) => Promise<T>, multiple: boolean, what: What): Promise<T[]> {
  if (records.length === 0) throw new CliFailure(what.none);
  if (records.length === 1) return [await op(records[0])];
  if (multiple && boolParam(ctx.params, 'multiple')) return doMultiple(ctx, records, op);
  throw new CliFailure(multiple ? `${what.many}. --multiple required to complete the operation` : `${what.many}. Operation can only be performed on ${what.one} at a time`);
}

/** A VM operation on the selected VMs (xapi's do_vm_op). */
export async function doVmOp<T>(ctx: CommandContext, op: (vm: CliRecord) => Promise<T>, opts: { multiple?: boolean; ignore?: string[]; controlDomains?: boolean; templates?: boolean } = {}): Promise<T[]> {
  let vms: CliRecord[];
  try {
    vms = await selectVms(ctx, opts.ignore ?? [], opts);
  } catch (e) {
    if (e instanceof FieldNotFound) throw new CliFailure(`Parameter '${e.message}' is not a field of the VM class. Failed to select VM for operation.`);
    throw e;
  }
  return doOp(ctx, vms, op, opts.multiple ?? true, { one: 'one VM', many: 'Multiple matches VMs found', none: 'No matching VMs found' });
}

export async function doHostOp<T>(ctx: CommandContext, op: (host: CliRecord) => Promise<T>, opts: { multiple?: boolean; ignore?: string[] } = {}): Promise<T[]> {
  const hosts = await selectHosts(ctx, opts.ignore ?? []);
  return doOp(ctx, hosts, op, opts.multiple ?? true, { one: 'one host', many: 'Multiple matching hosts found', none: 'No matching hosts found' });
}

export async function doSrOp<T>(ctx: CommandContext, op: (sr: CliRecord) => Promise<T>, opts: { multiple?: boolean; ignore?: string[] } = {}): Promise<T[]> {
  const srs = await selectSrs(ctx, opts.ignore ?? []);
  // (xapi says "hosts" when no SR matches)
  return doOp(ctx, srs, op, opts.multiple ?? true, { one: 'one SR', many: 'Multiple matching SRs found', none: 'No matching hosts found' });
}
