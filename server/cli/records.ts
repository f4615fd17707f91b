// A CLI record: the fields of records.ml for one object, read from its API record and written
// through the API messages a client would call (so RBAC, checks and events are those of the API).
import { classes, messages, model, type FieldMeta, type Ty } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import type { CliField } from './record-spec.js';
import { cliEnumNames, cliRecords } from './generated/records.js';
import { CliFailure, FieldNotFound } from './errors.js';
import { computeOf, type Computed } from './computed.js';

/** records.ml's marks for what cannot be shown */
export const NOT_IN_DATABASE = '<not in database>';
const NULL_REF = 'OpaqueRef:NULL';

type Rec = { [field: string]: unknown };

/** What a record needs of the session that reads and writes it. */
export interface RecordIo {
  emu: Emulator;
  /** an API call in the command's session; throws XapiError */
  call(name: string, ...args: unknown[]): Promise<unknown>;
}

/** A ref shown as its object's uuid (xapi's Ref_index), or "<not in database>". */
export function uuidOfRef(emu: Emulator, ref: unknown): string {
  if (typeof ref !== 'string') return NOT_IN_DATABASE;
  const cls = emu.db.classOf(ref);
  const uuid = cls ? emu.db.get(cls, ref)?.uuid : undefined;
  return typeof uuid === 'string' ? uuid : NOT_IN_DATABASE;
}

function nameOfRef(emu: Emulator, ref: unknown): string {
  if (typeof ref !== 'string') return NOT_IN_DATABASE;
  const cls = emu.db.classOf(ref);
  const name = cls ? emu.db.get(cls, ref)?.name_label : undefined;
  return typeof name === 'string' ? name : NOT_IN_DATABASE;
}

/** An error parameter as xapi's CLI prints it: a ref becomes `uuid (name)`. */
export function refConvert(emu: Emulator, s: string): string {
  if (!s.startsWith('OpaqueRef:')) return s;
  const cls = emu.db.classOf(s);
  const rec = cls ? emu.db.get(cls, s) : undefined;
  if (!rec || typeof rec.uuid !== 'string') return s;
  return typeof rec.name_label === 'string' ? `${rec.uuid} (${rec.name_label})` : rec.uuid;
}

/** One scalar as records.ml prints it. */
function scalar(emu: Emulator, ty: Ty, v: unknown, spec: CliField): string {
  switch (ty.k) {
    case 'ref':
      if (spec.fmt === 'name') return nameOfRef(emu, v);
      if (spec.fmt === 'uuid_or_null' && v === NULL_REF) return NULL_REF;
      return uuidOfRef(emu, v);
    case 'float':
      return typeof v === 'number' ? v.toFixed(3) : String(v);
    case 'enum': {
      const s = String(v);
      const named = spec.names ? cliEnumNames[spec.names]?.[s] : undefined;
      if (named !== undefined) return named;
      if (spec.fmt === 'lower') return s.charAt(0).toLowerCase() + s.slice(1);
      return s;
    }
    case 'option':
      return v === null || v === undefined ? '' : scalar(emu, ty.of, v, spec);
    default:
      if (v === null || v === undefined) return '';
      return typeof v === 'object' ? JSON.stringify(v) : String(v);
  }
}

/** A field of one object: its printed value, and for sets and maps their members. */
export class FieldView {
  constructor(
    readonly spec: CliField,
    private readonly ty: Ty | undefined,
    private readonly value: unknown,
    private readonly emu: Emulator,
    /** the record it comes from is absent (a NULL metrics ref) */
    private readonly absent: boolean,
    /** for a value xapi computes by further calls: how (undefined: not known here) */
    readonly compute?: (io: RecordIo) => Promise<Computed>,
  ) {}

  /** the computed value, once loaded (CliRecord.load) */
  private loaded: Computed | undefined;

  async load(io: RecordIo): Promise<void> {
    if (!this.computed || this.loaded) return;
    if (!this.compute) throw new XapiError('NOT_IMPLEMENTED', [`${this.spec.name} (CLI field)`]);
    this.loaded = await this.compute(io);
  }

  get name(): string {
    return this.spec.name;
  }

  /** The value as printed; a field of records.ml that reads more than the record is not shown. */
  get(): string {
    if (this.computed) return this.computedValue().text;
    if (this.absent) return this.spec.none ?? NOT_IN_DATABASE;
    const ty = this.ty!;
    const sep = this.spec.fmt === 'comma' ? ', ' : '; ';
    if (ty.k === 'set') return this.members().join(sep);
    if (ty.k === 'map') {
      if (this.spec.is === 'set') return this.members().join(sep);
      return this.entries().map(([k, v]) => `${k}: ${v}`).join('; ');
    }
    return scalar(this.emu, ty, this.value, this.spec);
  }

  /** A set's members (a map shown as a set, e.g. current-operations: its values). */
  private computedValue(): Computed {
    if (!this.loaded) throw new XapiError('NOT_IMPLEMENTED', [`${this.spec.name} (CLI field)`]);
    return this.loaded;
  }

  members(): string[] {
    if (this.computed) return this.computedValue().members ?? [];
    const ty = this.ty;
    if (this.absent || !ty) return [];
    if (ty.k === 'set' && Array.isArray(this.value)) return this.value.map((x) => scalar(this.emu, ty.of, x, this.spec));
    if (ty.k === 'map' && this.value && typeof this.value === 'object') return Object.values(this.value as Rec).map((x) => scalar(this.emu, ty.value, x, this.spec));
    return [];
  }

  entries(): [string, string][] {
    if (this.computed) return this.computedValue().entries ?? [];
    const ty = this.ty;
    if (this.absent || !ty || ty.k !== 'map' || !this.value || typeof this.value !== 'object') return [];
    return Object.entries(this.value as Rec).map(([k, x]) => [scalar(this.emu, ty.key, k, this.spec), scalar(this.emu, ty.value, x, this.spec)]);
  }

  /** a value xapi computes by calls beyond the record (not available here yet) */
  get computed(): boolean {
    return this.ty === undefined;
  }

  get isSet(): boolean {
    return this.spec.is === 'set';
  }
  get isMap(): boolean {
    return this.spec.is === 'map';
  }

  /** The name with its access suffix, as `*-list` and `*-param-list` print it. */
  label(): string {
    const s = this.spec;
    const suffix = s.is === 'set' ? (s.add_to_set ? ' (SRW)' : ' (SRO)')
      : s.is === 'map' ? (s.add_to_map ? ' (MRW)' : ' (MRO)')
        : s.set ? ' ( RW)' : ' ( RO)';
    return `${s.name}${suffix}${s.deprecated ? ' [DEPRECATED]' : ''}`;
  }
}

/** The CLI record of one object of a class. */
export class CliRecord {
  constructor(
    readonly cls: string,
    readonly ref: string,
    readonly fields: FieldView[],
  ) {}

  field(name: string): FieldView {
    const f = this.fields.find((x) => x.name === name);
    if (!f) throw new FieldNotFound(name);
    return f;
  }

  /** Computes the values of `fields` that need further calls (all of them by default). */
  async load(io: RecordIo, fields: FieldView[] = this.fields): Promise<void> {
    for (const f of fields) await f.load(io);
  }
}

/** The fields of a records.ml record, with their API field's metadata. */
export function recordSpec(record: string): { cls: string; fields: CliField[] } {
  const r = cliRecords[record];
  if (!r) throw new Error(`no CLI record ${record}`);
  return { cls: r.class, fields: r.fields };
}

/** The datamodel's class for a records.ml class name (`Host_cpu` is `host_cpu`, `Pool` is `pool`). */
export function apiClass(name: string): string {
  if (classes.has(name)) return name;
  const lower = name.toLowerCase();
  const c = model.classes.find((x) => x.name.toLowerCase() === lower);
  if (!c) throw new Error(`no class ${name}`);
  return c.name;
}

/** Builds the CLI record of `ref` from its API record. Fields of records it points at (VM_metrics
 * ...) and computed ones are read through the API when first shown, each record once. */
export async function makeRecord(io: RecordIo, record: string, ref: string, rec: Rec): Promise<CliRecord> {
  const spec = recordSpec(record);
  const cls = apiClass(spec.cls);
  const meta = classes.get(cls)!;
  const related = new Map<string, Promise<Rec | null>>();
  const relatedRecord = (x: RecordIo, viaCls: string): Promise<Rec | null> => {
    let p = related.get(viaCls);
    if (!p) {
      const link = meta.fields.find((m) => m.ty.k === 'ref' && m.ty.class === viaCls);
      const target = link ? rec[link.name] : undefined;
      // an absent record (a NULL ref, or one gone meanwhile) shows the field's "none" text
      p = typeof target === 'string' && target !== NULL_REF ? x.call(`${viaCls}.get_record`, target).then((r) => r as Rec, () => null) : Promise.resolve(null);
      related.set(viaCls, p);
    }
    return p;
  };
  const fields: FieldView[] = [];
  for (const f of spec.fields) {
    if (f.via) {
      const viaCls = apiClass(f.via);
      const fm = classes.get(viaCls)?.field.get(f.field ?? '');
      const compute = fm && (async (x: RecordIo): Promise<Computed> => {
        const sub = await relatedRecord(x, viaCls);
        const v = new FieldView(f, fm.ty, sub?.[fm.name], x.emu, sub === null);
        return { text: v.get(), members: v.members(), entries: v.entries() };
      });
      fields.push(new FieldView(f, undefined, undefined, io.emu, false, compute));
    } else {
      const fm: FieldMeta | undefined = f.field ? meta.field.get(f.field) : undefined;
      const compute = fm ? undefined : computeOf(record, f);
      fields.push(new FieldView(f, fm?.ty, fm ? rec[fm.name] : undefined, io.emu, false, compute && ((x: RecordIo) => compute(x, ref, rec))));
    }
  }
  return new CliRecord(cls, ref, fields);
}

// ───────────────────────── filters ─────────────────────────

type FieldKind = { t: 'normal' } | { t: 'set'; name: string } | { t: 'map'; name: string };

/** What a parameter name refers to: a field, `map:key` / `set:contains`, or the older
 * `map-key` / `set-contains` spelling (longest field name first). */
export function fieldKind(name: string, fields: CliField[]): FieldKind {
  if (fields.some((f) => f.name === name)) return { t: 'normal' };
  const colon = name.indexOf(':');
  if (colon >= 0) {
    const real = name.slice(0, colon);
    const f = fields.find((x) => x.name === real);
    if (!f) throw new CliFailure(`Unknown field '${name}'`);
    if (f.is === 'set') return { t: 'set', name: f.name };
    if (f.is === 'map') return { t: 'map', name: f.name };
    throw new CliFailure(`Field '${f.name}' is not a set or map`);
  }
  const byLength = (a: CliField, b: CliField) => b.name.length - a.name.length;
  const map = fields.filter((f) => f.is === 'map').sort(byLength).find((f) => name.startsWith(`${f.name}-`));
  if (map) return { t: 'map', name: map.name };
  const set = fields.filter((f) => f.is === 'set').sort(byLength).find((f) => name.startsWith(`${f.name}-`));
  if (set) return { t: 'set', name: set.name };
  throw new CliFailure(`Unknown field '${name}'`);
}

const same = (ci: boolean | undefined, a: string, b: string) => (ci ? a.toLowerCase() === b.toLowerCase() : a === b);

/** The records matching `k=v` (xapi's filter_records_on_fields). */
export async function filterRecords(io: RecordIo, records: CliRecord[], [k, v]: [string, string], spec: CliField[]): Promise<CliRecord[]> {
  if (records.length === 0) return [];
  const kind = fieldKind(k, spec);
  for (const r of records) await r.field(kind.t === 'normal' ? k : kind.name).load(io);
  if (kind.t === 'normal') return records.filter((r) => { const f = r.field(k); return same(f.spec.case_insensitive, f.get(), v); });
  const rest = k.slice(kind.name.length + 1);
  if (kind.t === 'set') {
    if (rest !== 'contains') throw new CliFailure('Invalid syntax for set filtering (should be set-param:contains=key)');
    return records.filter((r) => { const f = r.field(kind.name); return f.members().some((m) => same(f.spec.case_insensitive, m, v)); });
  }
  return records.filter((r) => {
    const f = r.field(kind.name);
    const ci = f.spec.case_insensitive;
    const hit = f.entries().find(([mk]) => same(ci, mk, rest));
    return hit !== undefined && same(ci, hit[1], v);
  });
}

// ───────────────────────── writes ─────────────────────────

/** A CLI string turned into what a message's parameter takes (records.ml's parsers). */
async function toApi(io: RecordIo, ty: Ty, cliName: string, s: string): Promise<unknown> {
  switch (ty.k) {
    case 'string':
      return s;
    case 'int': {
      const n = bytesOrInt(s);
      if (n === undefined) throw new CliFailure(`Failed to parse parameter '${cliName}': expecting an integer`);
      return n;
    }
    case 'float': {
      const n = Number(s);
      if (s.trim() === '' || Number.isNaN(n)) throw new CliFailure(`Parameter ${cliName} must be a floating-point number`);
      return n;
    }
    case 'bool': {
      const l = s.toLowerCase();
      if (['true', 't', 'yes', 'y', '1'].includes(l)) return true;
      if (['false', 'f', 'no', 'n', '0'].includes(l)) return false;
      throw new CliFailure(`Failed to parse parameter '${cliName}': expecting a boolean (true or false)`);
    }
    case 'enum': {
      const values = model.enums[ty.name] ?? [];
      // the wire name, or the name the CLI prints it under (case aside)
      const l = s.toLowerCase();
      const names = Object.values(cliEnumNames).find((t) => values.every((x) => x in t) && values.length === Object.keys(t).length);
      const hit = values.find((x) => x.toLowerCase() === l || names?.[x]?.toLowerCase() === l);
      if (hit === undefined) throw new XapiError('INVALID_VALUE', [cliName, s]);
      return hit;
    }
    case 'ref':
      // a uuid, as every CLI parameter naming an object (get_by_uuid's UUID_INVALID otherwise)
      return s === '' ? NULL_REF : io.call(`${ty.class}.get_by_uuid`, s);
    case 'datetime':
      return s;
    default:
      throw new CliFailure(`Field '${cliName}' cannot be set from the command line`);
  }
}

/** An integer, or a size with a unit suffix as memory fields accept (KiB, MiB, GiB, TiB). */
function bytesOrInt(s: string): number | undefined {
  const m = /^\s*(-?\d+)\s*(KiB|MiB|GiB|TiB)?\s*$/.exec(s);
  if (!m) return undefined;
  const unit = { KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/** Calls a field operation's message: the object's ref goes to its first parameter of the class,
 * the given values to the others in order. A message that takes the whole map (set_<map>) gets
 * `whole` instead. */
async function callFieldMessage(io: RecordIo, rec: CliRecord, wire: string, cliName: string, values: string[], whole?: () => { [k: string]: string } | string[]): Promise<void> {
  const msg = messages.get(wire);
  if (!msg) throw new XapiError('MESSAGE_METHOD_UNKNOWN', [wire]);
  const args: unknown[] = [];
  let i = 0;
  let self = false;
  for (const p of msg.params) {
    if (!self && p.ty.k === 'ref' && p.ty.class === rec.cls) {
      args.push(rec.ref);
      self = true;
    } else if (p.ty.k === 'map' && whole) args.push(whole());
    else if (p.ty.k === 'set' && whole) {
      const of = p.ty.of;
      const members = whole() as string[];
      args.push(await Promise.all(members.map((m) => toApi(io, of, cliName, m))));
    }
    else args.push(await toApi(io, p.ty, cliName, values[i++] ?? ''));
  }
  await io.call(wire, ...args);
}

/** `<class>-param-set k=v ...`: plain fields through their setter, map members `m:key=v` through
 * the map's messages (set_in_map, or remove then add; a whole-map setter gets all keys at once). */
export async function paramSet(io: RecordIo, rec: CliRecord, spec: CliField[], pairs: [string, string][]): Promise<void> {
  const wholeMaps = new Map<string, { field: FieldView; set: string; pairs: [string, string][] }>();
  for (const [k, v] of pairs) {
    const kind = fieldKind(k, spec);
    if (kind.t === 'map') {
      const f = rec.field(kind.name);
      const key = k.slice(kind.name.length + 1);
      const s = f.spec;
      if (s.set_in_map && !s.set_map) await callFieldMessage(io, rec, s.set_in_map, kind.name, [key, v]);
      else if (s.set_map && !s.set_in_map) {
        const acc = wholeMaps.get(s.set_map) ?? { field: f, set: s.set_map, pairs: [] };
        acc.pairs.push([key, v]);
        wholeMaps.set(s.set_map, acc);
      } else if (!s.set_in_map && !s.set_map) {
        if (!s.add_to_map) throw new CliFailure(`Map field '${kind.name}' is read-only.`);
        const current = Object.fromEntries(f.entries());
        if (key in current) await mapRemove(io, rec, f, key, current);
        await mapAdd(io, rec, f, key, v, current);
        current[key] = v;
      } else throw new CliFailure(`Broken Records (field ${kind.name})`);
    } else if (kind.t === 'set') throw new CliFailure('Cannot param-set on set fields');
    else {
      const f = rec.field(k);
      if (!f.spec.set) {
        if (f.spec.add_to_map) throw new CliFailure(`Field '${k}' is a map or set. use the 'name:key=value' syntax.`);
        throw new CliFailure(`Field '${k}' is read-only.`);
      }
      await callFieldMessage(io, rec, f.spec.set, k, [v]);
    }
  }
  for (const { field, set, pairs: kv } of wholeMaps.values()) {
    await callFieldMessage(io, rec, set, field.name, [], () => ({ ...Object.fromEntries(field.entries()), ...Object.fromEntries(kv) }));
  }
}

async function mapAdd(io: RecordIo, rec: CliRecord, f: FieldView, key: string, value: string, current: { [k: string]: string }): Promise<void> {
  await callFieldMessage(io, rec, f.spec.add_to_map!, f.name, [key, value], () => ({ ...current, [key]: value }));
}

async function mapRemove(io: RecordIo, rec: CliRecord, f: FieldView, key: string, current: { [k: string]: string }): Promise<void> {
  if (!f.spec.remove_from_map) throw new CliFailure(`Records broken (field ${f.name})`);
  const rest = { ...current };
  delete rest[key];
  await callFieldMessage(io, rec, f.spec.remove_from_map, f.name, [key], () => rest);
}

/** `<class>-param-add`: a set member (param-key=), or map entries given as `k=v`. */
export async function paramAdd(io: RecordIo, rec: CliRecord, name: string, key: string | undefined, pairs: [string, string][]): Promise<void> {
  const f = rec.field(name);
  const s = f.spec;
  if (s.add_to_set) {
    if (key === undefined) throw new CliFailure('When adding a key to a set, use the syntax: *-param-add param-name=<name> param-key=<key>');
    await callFieldMessage(io, rec, s.add_to_set, name, [key], () => [...f.members(), key]);
  } else if (s.add_to_map) {
    const current = Object.fromEntries(f.entries());
    for (const [k, v] of pairs) {
      await mapAdd(io, rec, f, k, v, current);
      current[k] = v;
    }
  } else if (s.is) throw new CliFailure('Parameter is read-only');
  else throw new CliFailure('Can only add to parameters of type Set or Map');
}

/** `<class>-param-remove`: a set member or a map key, which must be there. */
export async function paramRemove(io: RecordIo, rec: CliRecord, name: string, key: string): Promise<void> {
  const f = rec.field(name);
  const s = f.spec;
  if (s.is === 'set' && s.remove_from_set) {
    if (!f.members().includes(key)) throw new CliFailure(`Key ${key} is not in the set`);
    await callFieldMessage(io, rec, s.remove_from_set, name, [key], () => f.members().filter((m) => m !== key));
  } else if (s.is === 'map' && s.remove_from_map) {
    const current = Object.fromEntries(f.entries());
    if (!(key in current)) throw new CliFailure(`Key ${key} is not in map`);
    await mapRemove(io, rec, f, key, current);
  } else if (s.is) throw new CliFailure('Cannot remove parameters from read-only map');
  else throw new CliFailure('Can only remove from parameters of type Set or Map');
}

/** `<class>-param-clear`: empties a set or map, or sets a plain field to "". */
export async function paramClear(io: RecordIo, rec: CliRecord, name: string): Promise<void> {
  const f = rec.field(name);
  const s = f.spec;
  if (s.is === 'set' && s.remove_from_set) {
    const members = f.members();
    for (let i = 0; i < members.length; i++) await callFieldMessage(io, rec, s.remove_from_set, name, [members[i]], () => members.slice(i + 1));
  } else if (s.clear_map) await callFieldMessage(io, rec, s.clear_map, name, [], () => ({}));
  else if (s.set_map) await callFieldMessage(io, rec, s.set_map, name, [], () => ({}));
  else if (s.is === 'map' && s.remove_from_map) {
    const current = Object.fromEntries(f.entries());
    for (const k of Object.keys(current)) {
      await mapRemove(io, rec, f, k, current);
      delete current[k];
    }
  } else if (s.set) {
    try {
      await callFieldMessage(io, rec, s.set, name, ['']);
    } catch {
      throw new CliFailure('Cannot clear this parameter');
    }
  } else throw new CliFailure('Can only clear RW parameters');
}
