// The commands xapi's CLI generates for every class of its record tables (cli_operations.ml's
// make_param_funs): <class>-list, -param-list, -param-get, -param-set, -param-add,
// -param-remove, -param-clear.
import { XapiError } from '../dispatch/errors.js';
import { boolParam, param } from './args.js';
import { defineCommand, STD_PARAMS, type CommandContext, type Params } from './commands.js';
import { CliFailure, ParamNotFound } from './errors.js';
import { cliClasses } from './generated/records.js';
import type { CliClass, CliField } from './record-spec.js';
import { apiClass, filterRecords, makeRecord, paramAdd, paramClear, paramRemove, paramSet, recordSpec, type CliRecord, type FieldView } from './records.js';

type Rec = { [field: string]: unknown };

const EXPENSIVE = '<expensive field>';

/** `name (suffix): value` of a field; expensive ones are not computed in lists. */
const printField = (f: FieldView, list: boolean): [string, string] => [f.label(), list && f.spec.expensive ? EXPENSIVE : f.get()];

const required = (params: Params, name: string): string => {
  const v = param(params, name);
  if (v === undefined) throw new ParamNotFound(name);
  return v;
};

async function allRecords(ctx: CommandContext, c: CliClass): Promise<CliRecord[]> {
  const cls = apiClass(c.class);
  const all = (await ctx.call(`${cls}.get_all_records`)) as { [ref: string]: Rec };
  let entries = Object.entries(all);
  // role-list shows the roles that group others, as xapi's query "subroles<>[]"
  if (c.cli === 'role') entries = entries.filter(([, r]) => Array.isArray(r.subroles) && r.subroles.length > 0);
  return Promise.all(entries.map(([ref, r]) => makeRecord(ctx, c.record, ref, r)));
}

async function recordByUuid(ctx: CommandContext, c: CliClass, uuid: string): Promise<CliRecord> {
  const cls = apiClass(c.class);
  const ref = (await ctx.call(`${cls}.get_by_uuid`, uuid)) as string;
  const rec = (await ctx.call(`${cls}.get_record`, ref)) as Rec;
  return makeRecord(ctx, c.record, ref, rec);
}

/** The fields to print: `params=a,b` (or all), else the class's default columns; in record order. */
function selectFields(params: Params, fields: FieldView[], defaults: string[]): FieldView[] {
  const given = param(params, 'params');
  const names = given === undefined ? defaults : given === 'all' ? [] : given.split(',');
  const chosen = names.length === 0 ? fields : fields.filter((f) => names.includes(f.name));
  return chosen.filter((f) => !f.spec.hidden);
}

/** The fields to print with their computed values loaded (in a list, expensive ones are not
 * computed). A computed field whose message is not implemented here is left out, rather than
 * failing the whole record. */
async function loadShown(ctx: CommandContext, fields: FieldView[], list: boolean): Promise<FieldView[]> {
  const shown: FieldView[] = [];
  for (const f of fields) {
    try {
      if (!(list && f.spec.expensive)) await f.load(ctx);
      shown.push(f);
    } catch (e) {
      if (!(e instanceof XapiError && e.code === 'NOT_IMPLEMENTED')) throw e;
    }
  }
  return shown;
}

function defineClassCommands(c: CliClass): void {
  const { fields } = recordSpec(c.record);
  const visible = fields.filter((f) => !f.hidden);
  const name = (op: string) => `${c.cli}-${op}`;
  const plural = c.cli === 'patch' ? 'patches' : `${c.cli}s`;

  defineCommand({
    name: name('list'),
    reqd: [],
    optn: ['params', 'database:', ...visible.map((f) => f.name), ...visible.filter((f) => f.is === 'set').map((f) => `${f.name}:contains`)],
    help: `Lists all the ${plural}, filtering on the optional arguments. To filter on map parameters, use the syntax 'map-param:key=value'`,
    standard: c.cli === 'vm' || c.cli === 'network' || c.cli === 'sr',
    run: async (ctx) => {
      if (ctx.params.some(([k]) => k.startsWith('database:'))) throw new XapiError('NOT_IMPLEMENTED', [`${name('list')} database:`]);
      const all = await allRecords(ctx, c);
      const filters: Params = [...c.filters, ...ctx.params.filter(([k]) => k !== 'params' && !STD_PARAMS.includes(k))];
      let records = all;
      for (const f of filters) records = await filterRecords(ctx, records, f, fields);
      const shown = boolParam(ctx.params, 'all') ? all : records;
      const table: [string, string][][] = [];
      for (const r of shown) {
        const chosen = await loadShown(ctx, selectFields(ctx.params, r.fields, c.list), true);
        table.push(chosen.map((f) => printField(f, true)));
      }
      ctx.printer.print({ t: 'table', records: table });
    },
  });

  defineCommand({
    name: name('param-list'),
    reqd: ['uuid'],
    optn: ['database:'],
    help: 'Lists all the parameters of the object specified by the uuid.',
    run: async (ctx) => {
      const r = await recordByUuid(ctx, c, required(ctx.params, 'uuid'));
      const shown = await loadShown(ctx, r.fields.filter((x) => !x.spec.hidden), false);
      ctx.printer.print({ t: 'table', records: [shown.map((f) => printField(f, false))] });
    },
  });

  defineCommand({
    name: name('param-get'),
    reqd: ['uuid', 'param-name'],
    optn: ['param-key', 'database:'],
    help: "Gets the parameter specified of the object. If the parameter is a map of key=value pairs, use 'param-key=<key>' to get the value associated with a particular key.",
    run: async (ctx) => {
      const r = await recordByUuid(ctx, c, required(ctx.params, 'uuid'));
      const f = r.field(required(ctx.params, 'param-name'));
      await f.load(ctx);
      const key = param(ctx.params, 'param-key');
      if (key !== undefined && f.isMap) {
        const hit = f.entries().find(([k]) => k === key);
        if (!hit) throw new CliFailure(`Key ${key} not found in map`);
        ctx.printer.print({ t: 'list', lines: [hit[1]] });
      } else ctx.printer.print({ t: 'list', lines: [f.get()] });
    },
  });

  const settable = [
    ...visible.filter((f) => f.set).map((f) => f.name),
    ...visible.filter((f) => f.add_to_map || f.set_in_map || f.set_map).map((f) => `${f.name}:`),
  ];
  if (settable.length > 0) {
    defineCommand({
      name: name('param-set'),
      reqd: ['uuid'],
      optn: settable,
      help: "Sets the parameter specified. If param-value is not given, the parameter is set to a null value. To set a (key,value) pair in a map parameter, use the syntax 'map-param:key=value'.",
      run: async (ctx) => {
        const r = await recordByUuid(ctx, c, required(ctx.params, 'uuid'));
        await paramSet(ctx, r, fields, ctx.params.filter(([k]) => k !== 'uuid' && !STD_PARAMS.includes(k)));
      },
    });
  }

  if (visible.some((f: CliField) => f.add_to_set || f.add_to_map)) {
    defineCommand({
      name: name('param-add'),
      reqd: ['uuid', 'param-name'],
      optn: ['param-key'],
      help: "Adds to a set or map parameter. If the parameter is a set, use param-key=<key to add>. If the parameter is a map, pass the values to add as 'key=value' pairs.",
      run: async (ctx) => {
        const r = await recordByUuid(ctx, c, required(ctx.params, 'uuid'));
        const pairs = ctx.params.filter(([k]) => !['uuid', 'param-name', 'param-key', ...STD_PARAMS].includes(k));
        await paramAdd(ctx, r, required(ctx.params, 'param-name'), param(ctx.params, 'param-key'), pairs);
      },
    });
    defineCommand({
      name: name('param-remove'),
      reqd: ['uuid', 'param-name', 'param-key'],
      optn: [],
      help: 'Removes a member or a key,value pair from a set/map respectively.',
      run: async (ctx) => {
        const r = await recordByUuid(ctx, c, required(ctx.params, 'uuid'));
        await paramRemove(ctx, r, required(ctx.params, 'param-name'), required(ctx.params, 'param-key'));
      },
    });
  }

  const clearable = visible.filter((f) => f.set || f.is).map((f) => f.name);
  if (clearable.length > 0) {
    defineCommand({
      name: name('param-clear'),
      reqd: ['uuid', 'param-name'],
      optn: [],
      help: `Clears the specified parameter (param-name can be ${clearable.join(',')}).`,
      run: async (ctx) => {
        const r = await recordByUuid(ctx, c, required(ctx.params, 'uuid'));
        await paramClear(ctx, r, required(ctx.params, 'param-name'));
      },
    });
  }
}

for (const c of cliClasses) {
  // classes of xapi's CLI that this datamodel does not have are left out
  try {
    apiClass(c.class);
  } catch {
    continue;
  }
  defineClassCommands(c);
}
