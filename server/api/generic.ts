// The messages xapi generates for every class (WIRE.md §6): record and field accessors, lookups,
// get_all*, create and destroy. Derived from the schema for all classes at once.
import { classes, type MessageMeta, type ClassMeta, type FieldMeta } from '../../schema/index.js';
import { XapiError } from '../dispatch/errors.js';
import type { Call, Handler } from '../dispatch/registry.js';
import { compileWhere } from '../../storage/where.js';
import type { Rec } from '../../storage/database.js';
import type { Emulator } from '../emulator.js';

/** A stored record, or HANDLE_INVALID [class; ref] as xapi's database answers a missing row. */
export function recordOf(emu: Emulator, cls: string, ref: string): Rec {
  const rec = emu.db.get(cls, ref);
  if (!rec) throw new XapiError('HANDLE_INVALID', [cls, ref]);
  return rec;
}

const rowOf = (call: Call, cls: string, ref: string): Rec => recordOf(call.emu, cls, ref);

type Pred = (r: Rec, ref: string) => boolean;

function allRecords(call: Call, c: ClassMeta, pred?: Pred): Record<string, Rec> {
  const out: Record<string, Rec> = {};
  for (const [ref, row] of call.emu.db.table(c.name)) if (!pred || pred(row.rec, ref)) out[ref] = row.rec;
  return out;
}

function allRefs(call: Call, c: ClassMeta, pred?: Pred): string[] {
  const out: string[] = [];
  for (const [ref, row] of call.emu.db.table(c.name)) if (!pred || pred(row.rec, ref)) out.push(ref);
  return out;
}

/** The handler of a field message (get_/set_/add_to_/remove_from_/add_/remove_), for any tag. */
export function fieldHandler(c: ClassMeta, f: FieldMeta, msg: MessageMeta): Handler | undefined {
  const isMap = f.ty.k === 'map';
  if (msg.name === `get_${f.name}`) return (call, self: string) => rowOf(call, c.name, self)[f.name];
  if (msg.name === `set_${f.name}`) {
    return (call, self: string, value: unknown) => {
      rowOf(call, c.name, self);
      call.emu.db.update(c.name, self, { [f.name]: value });
    };
  }
  if (isMap && msg.name === `add_to_${f.name}`) {
    return (call, self: string, key: string, value: unknown) => {
      const map = rowOf(call, c.name, self)[f.name] as Record<string, unknown>;
      if (Object.prototype.hasOwnProperty.call(map, key)) throw new XapiError('MAP_DUPLICATE_KEY', [c.name, f.db, self, key]);
      call.emu.db.update(c.name, self, { [f.name]: { ...map, [key]: value } });
    };
  }
  if (isMap && msg.name === `remove_from_${f.name}`) {
    return (call, self: string, key: string) => {
      const map = rowOf(call, c.name, self)[f.name] as Record<string, unknown>;
      if (!Object.prototype.hasOwnProperty.call(map, key)) return;
      const next = { ...map };
      delete next[key];
      call.emu.db.update(c.name, self, { [f.name]: next });
    };
  }
  if (!isMap && msg.name === `add_${f.name}`) {
    return (call, self: string, value: unknown) => {
      const set = rowOf(call, c.name, self)[f.name] as unknown[];
      if (!set.includes(value)) call.emu.db.update(c.name, self, { [f.name]: [...set, value] });
    };
  }
  if (!isMap && msg.name === `remove_${f.name}`) {
    return (call, self: string, value: unknown) => {
      const set = rowOf(call, c.name, self)[f.name] as unknown[];
      if (set.includes(value)) call.emu.db.update(c.name, self, { [f.name]: set.filter((x) => x !== value) });
    };
  }
  return undefined;
}

/** A provider's way to serve a custom-tagged field message with the generic semantics. */
export const generic: Handler = (call, ...args) => {
  const c = classes.get(call.msg.class)!;
  const h = call.msg.field && fieldHandler(c, call.msg.field, call.msg);
  if (!h) throw new XapiError('NOT_IMPLEMENTED', [call.msg.wire]);
  return h(call, ...args);
};

export function genericHandler(msg: MessageMeta): Handler | undefined {
  const c = classes.get(msg.class)!;
  switch (msg.tag) {
    case 'get_record':
      return (call, self: string) => rowOf(call, c.name, self);
    case 'get_by_uuid':
      return (call, uuid: string) => {
        const ref = call.emu.db.refByUuid(c.name, uuid);
        if (!ref) throw new XapiError('UUID_INVALID', [c.name, uuid]);
        return ref;
      };
    case 'get_by_name_label':
      return (call, label: string) => allRefs(call, c, (r) => r.name_label === label);
    case 'get_all':
      return (call) => allRefs(call, c);
    case 'get_all_records':
      return (call) => allRecords(call, c);
    case 'get_all_where':
      return (call, expr: string) => allRefs(call, c, compileWhere(expr, c));
    case 'get_all_records_where':
      return (call, expr: string) => allRecords(call, c, compileWhere(expr, c));
    case 'field_getter': case 'field_setter': case 'field_add': case 'field_remove':
      return msg.field ? fieldHandler(c, msg.field, msg) : undefined;
    case 'create':
      return (call, args: Rec) => {
        const ref = call.emu.ids.ref();
        call.emu.db.create(c.name, ref, { ...args, uuid: call.emu.ids.uuid() });
        return ref;
      };
    case 'destroy':
      return (call, self: string) => {
        rowOf(call, c.name, self);
        call.emu.db.destroy(c.name, self);
      };
    default:
      return undefined;
  }
}
