// Typed access to the generated datamodel (schema/generated/model.json), indexed once at load.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type { Records, ClassName, Ref } from './generated/types.js';

/** An XAPI type tree. `int32`, `struct` and `any` are not datamodel types: they describe the few wire
 * shapes xapi marshals by hand (event.from's result, valid_ref_counts). */
export type Ty =
  | { k: 'string' | 'int' | 'float' | 'bool' | 'datetime' | 'int32' | 'any'; secret?: boolean }
  | { k: 'enum'; name: string }
  | { k: 'ref'; class: string }
  | { k: 'record'; class: string }
  | { k: 'set'; of: Ty }
  | { k: 'option'; of: Ty }
  | { k: 'map'; key: Ty; value: Ty }
  | { k: 'struct'; fields: Record<string, Ty> };

export type Qualifier = 'RW' | 'StaticRO' | 'DynamicRO';
export type Lifecycle = 'Unreleased_s' | 'Prototyped_s' | 'Published_s' | 'Deprecated_s' | 'Removed_s';

export interface FieldMeta {
  name: string; // wire name: namespaces joined with "_"
  db: string; // DB column name: namespaces joined with "__"
  path: string[];
  ty: Ty;
  qualifier: Qualifier;
  default?: unknown;
  persist: boolean;
  lifecycle: Lifecycle;
  ignore_foreign_key?: boolean;
  map_keys_roles?: Record<string, string[]>;
}

export interface ParamMeta { name: string; ty: Ty; default?: unknown }

export type MessageTag =
  | 'custom' | 'field_getter' | 'field_setter' | 'field_add' | 'field_remove' | 'create' | 'destroy'
  | 'get_record' | 'get_by_uuid' | 'get_by_name_label' | 'get_all' | 'get_all_where'
  | 'get_all_records_where' | 'get_all_records';

export interface MessageMeta {
  name: string;
  tag: MessageTag;
  session: boolean;
  params: ParamMeta[];
  n_required_params: number;
  result: Ty | null;
  errors: string[];
  roles: string[] | null;
  async: boolean;
  lifecycle: Lifecycle;
  hidden?: boolean;
  pool_internal?: boolean;
  ctor_fields?: { name: string; required: boolean }[];
  map_keys_roles?: Record<string, string[]>;
  secret?: boolean;
  custom_marshaller?: boolean;
  forward_to?: string;
  no_current_operations?: boolean;
  /** filled at load */
  class: string;
  /** `<class>.<name>` */
  wire: string;
  /** for field messages: the field they act on */
  field?: FieldMeta;
}

export interface ClassMeta {
  name: string;
  lifecycle: Lifecycle;
  in_database: boolean;
  persist: boolean;
  gen_events: boolean;
  gen_constructor_destructor: boolean;
  expose_get_all: boolean;
  no_task_id: boolean;
  fields: FieldMeta[];
  internal_fields: string[];
  messages: MessageMeta[];
  /** filled at load */
  field: Map<string, FieldMeta>;
  fieldByDb: Map<string, FieldMeta>;
  message: Map<string, MessageMeta>;
}

export interface HttpAction {
  name: string; method: string; uri: string; in_sdk: boolean; query_args: string[];
  roles: string[] | null; sub_actions: Record<string, unknown>; rbac_checked: boolean;
}

export interface Model {
  source: { repo: string; commit: string };
  classes: ClassMeta[];
  enums: Record<string, string[]>;
  errors: Record<string, { params: string[]; documented: boolean }>;
  alerts: { name: string; priority: number }[];
  /** [classA, fieldA, classB, fieldB]: fieldA (a ref) is mirrored by the set fieldB */
  relations: [string, string, string, string][];
  releases: { code_name: string; version_major: number; version_minor: number; branding: string }[];
  roles: { name: string; internal: boolean }[];
  http_actions: HttpAction[];
  emergency_calls: string[];
  current_operations_for: string[];
}

const modelPath = fileURLToPath(new URL('./generated/model.json', import.meta.url));
export const model: Model = JSON.parse(readFileSync(modelPath, 'utf8'));

/** Classes by exact datamodel name (`VM`, `host`, `VM_metrics`). */
export const classes = new Map<string, ClassMeta>();
/** Classes by lower-cased name, as event class names are spelled. */
export const classesByLower = new Map<string, ClassMeta>();
/** Every dispatchable message by wire name: `VM.start` (the `VM_start` alias is resolved by dispatch). */
export const messages = new Map<string, MessageMeta>();

const fieldMessagePrefix: Partial<Record<MessageTag, string>> = {
  field_getter: 'get_', field_setter: 'set_', field_add: 'add_', field_remove: 'remove_',
};

for (const c of model.classes) {
  c.field = new Map(c.fields.map((f) => [f.name, f]));
  c.fieldByDb = new Map(c.fields.map((f) => [f.db, f]));
  c.message = new Map();
  for (const m of c.messages) {
    m.class = c.name;
    m.wire = `${c.name}.${m.name}`;
    const prefix = fieldMessagePrefix[m.tag] ?? (m.tag === 'custom' ? /^(get|set|add_to|remove_from|add|remove)_/.exec(m.name)?.[0] : undefined);
    if (prefix) {
      let fname = m.name.slice(prefix.length);
      if (m.tag === 'field_add' || m.tag === 'field_remove' || prefix === 'add_' || prefix === 'remove_') {
        // add_to_<map> / remove_from_<map> / add_<set> / remove_<set>
        if (fname.startsWith('to_') && !c.field.has(fname) && c.field.has(fname.slice(3))) fname = fname.slice(3);
        if (fname.startsWith('from_') && !c.field.has(fname) && c.field.has(fname.slice(5))) fname = fname.slice(5);
      }
      const f = c.field.get(fname);
      if (f) m.field = f;
    }
    c.message.set(m.name, m);
    messages.set(m.wire, m);
  }
  classes.set(c.name, c);
  classesByLower.set(c.name.toLowerCase(), c);
}

export const errorParams = (code: string): string[] | undefined => model.errors[code]?.params;

/** API version reported by hosts: XCP-ng 8.3 is the "nile" release. */
export const apiRelease = model.releases.find((r) => r.code_name === 'nile')!;
