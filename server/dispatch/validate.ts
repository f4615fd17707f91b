// Coercion of call parameters from their XAPI types to the server's internal values, imitating the
// unmarshallers xapi generates (gen_api.ml / gen_server.ml on top of ocaml-rpc's rpc.ml and
// ppx_deriving_rpc). A type error is INTERNAL_ERROR [Printexc.to_string exn], as exnHelper.ml
// maps any non-API exception; the texts below are the OCaml ones (sources cited at each).
import { z } from 'zod';
import { classes, model, type ClassMeta, type MessageMeta, type Ty } from '../../schema/index.js';
import { XapiError, internalError } from './errors.js';

// ---------------------------------------------------------------------------------------------
// OCaml texts

/** OCaml's `%S` (String.escaped plus quotes): non-ASCII bytes of the UTF-8 encoding become \ddd. */
export function ocamlQuote(s: string): string {
  let out = '"';
  for (const b of Buffer.from(s, 'utf8')) {
    if (b === 0x22) out += '\\"';
    else if (b === 0x5c) out += '\\\\';
    else if (b === 0x0a) out += '\\n';
    else if (b === 0x09) out += '\\t';
    else if (b === 0x0d) out += '\\r';
    else if (b === 0x08) out += '\\b';
    else if (b < 0x20 || b >= 0x7f) out += '\\' + String(b).padStart(3, '0');
    else out += String.fromCharCode(b);
  }
  return out + '"';
}

/** Printexc.to_string (Failure s): the generic printer of a one-string-argument exception. */
const failure = (s: string) => `Failure(${ocamlQuote(s)})`;

/** C's `%.<p>g`, as OCaml's Printf uses it (caml_format_float): also used by storage/where.ts. */
export function formatG(x: number, p: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x < 0 ? '-inf' : 'inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const e = x.toExponential(p - 1);
  const exp = Number(e.slice(e.indexOf('e') + 1));
  const strip = (m: string) => (m.includes('.') ? m.replace(/0+$/, '').replace(/\.$/, '') : m);
  if (exp < -4 || exp >= p) {
    const m = strip(e.slice(0, e.indexOf('e')));
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return strip(x.toFixed(p - 1 - exp));
}

/** Rpc.to_string (ocaml-rpc src/lib/rpc.ml) of the Rpc.t a JS value was decoded from. A JS number
 * cannot tell Int from Float: integers are shown as I(n). */
export function rpcToString(v: unknown): string {
  if (typeof v === 'string') return `S(${v})`;
  if (typeof v === 'number') return Number.isInteger(v) ? `I(${BigInt(v)})` : `F(${formatG(v, 6)})`;
  if (typeof v === 'boolean') return `B(${v})`;
  if (v === null || v === undefined) return 'N';
  if (v instanceof Date) return `D(${isNaN(v.getTime()) ? '' : dateOfMs(v.getTime())})`;
  if (Array.isArray(v)) return `[${v.map(rpcToString).join(';')}]`;
  if (typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${k}:${rpcToString(x)}`).join(';')}}`;
  return String(v);
}

// ---------------------------------------------------------------------------------------------
// Scalars: direct checks (each throws XapiError). ocaml-rpc rpc.ml: `failwith (sprintf "Expected
// <t>, got '%s'" (to_string x))` for int64_of_rpc, bool_of_rpc, float_of_rpc, string_of_rpc.

const fail = (text: string): never => { throw internalError(text); };
const expected = (what: string, v: unknown) => fail(failure(`Expected ${what}, got '${rpcToString(v)}'`));

const INT64_MIN = -(2n ** 63n), INT64_MAX = 2n ** 63n - 1n, UINT64_MAX = 2n ** 64n - 1n;

/** OCaml's Int64.of_string (runtime parse_intnat): sign, 0x/0o/0b/0u prefix, `_` after the first
 * digit; decimal must fit int64, other bases wrap up to 2^64-1. Failure "Int64.of_string". */
export function int64OfString(s: string): number {
  const m = /^([-+]?)(0[xX][0-9a-fA-F][0-9a-fA-F_]*|0[oO][0-7][0-7_]*|0[bB][01][01_]*|0[uU][0-9][0-9_]*|[0-9][0-9_]*)$/.exec(s);
  if (!m) return fail(failure('Int64.of_string'));
  const body = m[2].replace(/_/g, '');
  const kind = body.length > 1 && /[xXoObBuU]/.test(body[1]) ? body[1].toLowerCase() : 'd';
  let n = kind === 'u' || kind === 'd' ? BigInt(kind === 'u' ? body.slice(2) : body) : BigInt('0' + body.slice(1).toLowerCase());
  if (kind === 'd' ? n > INT64_MAX + (m[1] === '-' ? 1n : 0n) : n > UINT64_MAX) fail(failure('Int64.of_string'));
  if (kind !== 'd' && n > INT64_MAX) n -= 2n ** 64n; // wraps as int64
  return Number(m[1] === '-' ? -n : n);
}

function toInt(v: unknown): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string') return int64OfString(v);
  return expected('int64', v);
}

/** OCaml's float_of_string: `_` ignored, decimal/hex floats, nan, inf(inity); Failure "float_of_string". */
function floatOfString(s: string): number {
  const t = s.replace(/_/g, '');
  if (/^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)$/.test(t)) return Number(t);
  const special = /^\s*([-+]?)(nan|inf|infinity)$/i.exec(t);
  if (special) return /nan/i.test(special[2]) ? NaN : special[1] === '-' ? -Infinity : Infinity;
  const hex = /^\s*([-+]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([-+]?\d+))?$/.exec(t);
  if (hex && (hex[2] || hex[3])) {
    const frac = hex[3] ?? '';
    const mant = parseInt((hex[2] + frac) || '0', 16) / 16 ** frac.length;
    const x = mant * 2 ** Number(hex[4] ?? 0);
    return hex[1] === '-' ? -x : x;
  }
  return fail(failure('float_of_string'));
}

function toFloat(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return floatOfString(v);
  return expected('float', v);
}

function toBool(v: unknown): boolean {
  return typeof v === 'boolean' ? v : expected('bool', v);
}

function toStr(v: unknown): string {
  return typeof v === 'string' ? v : expected('string', v);
}

// Datetimes: API.Date.t_of_rpc (gen_api.ml) takes String or DateTime, else failwith "Date.t_of_rpc";
// then Clock.Date.of_iso8601 (ocaml/libs/clock/date.ml), whose failure is
// invalid_arg (__FUNCTION__ ^ ": " ^ x), which exnHelper.ml prints as "Invalid argument: <text>".
// The library `clock` is wrapped by dune, so __FUNCTION__ is "Clock__Date.of_iso8601" (inferred).
// xapi keeps a given UTC offset; here every datetime is normalised to UTC, as the server stores them.

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

function dateOfMs(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getUTCFullYear(), 4)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
}

const daysIn = (y: number, m: number) =>
  m === 2 ? (y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31;

const FAST = /^(\d{4})(\d{2})(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;
// Ptime.of_rfc3339 (non-strict: 't'/' ' separator and 'z' allowed, fraction truncated)
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?([Zz]|[-+]\d{2}:\d{2})$/;

export function parseDatetime(x: string): string {
  const bad = () => fail(`Invalid argument: Clock__Date.of_iso8601: ${x}`);
  let m: RegExpExecArray | null;
  let tz = 'Z';
  if (x.length > 5 && x[4] !== '-' && x.endsWith('Z')) {
    // the DB's own form: the fast path (a Scanf failure in xapi, reported here as the slow path's)
    m = FAST.exec(x);
  } else {
    // best_effort_iso8601_to_rfc3339: add the dashes, and Z when there is no timezone
    let s = x;
    const compact = /^(\d{4})(\d{2})(\d{2})T(.*)$/s.exec(s);
    if (compact) s = `${compact[1]}-${compact[2]}-${compact[3]}T${compact[4]}`;
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\S/.test(s)) s += 'Z'; // Scanf found no timezone
    m = RFC3339.exec(s);
    if (m) tz = m[7];
  }
  if (!m) return bad();
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number);
  if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || se > 60) return bad();
  let offset = 0;
  if (tz !== 'Z' && tz !== 'z') {
    const [oh, om] = tz.slice(1).split(':').map(Number);
    if (oh > 23 || om > 59) return bad();
    offset = (tz[0] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const t = new Date(0);
  t.setUTCFullYear(y, mo - 1, d);
  t.setUTCHours(h, mi - offset, se, 0);
  const year = t.getUTCFullYear();
  if (year < 0 || year > 9999) return bad();
  return dateOfMs(t.getTime());
}

function toDatetime(v: unknown): string {
  if (typeof v === 'string') return parseDatetime(v);
  if (v instanceof Date && !isNaN(v.getTime())) return dateOfMs(v.getTime());
  return fail(failure('Date.t_of_rpc'));
}

// Enums: ppx_deriving_rpc's polymorphic-variant of_rpc lower-cases a String and matches the
// lower-cased constructor names, else failwith "Unknown tag/contents". Two enums have hand-written
// unmarshallers in gen_api.ml `overrides`, which match the exact spelling.
const enumOverrides: Record<string, string> = {
  bond_mode: 'Unmarshalling error in bond-mode',
  event_operation: 'Unmarshalling error',
};
const enumConvs = new Map<string, (v: unknown) => string>();
function enumConv(name: string): (v: unknown) => string {
  let f = enumConvs.get(name);
  if (f) return f;
  const values = model.enums[name] ?? [];
  const exact = enumOverrides[name];
  if (exact !== undefined) {
    const set = new Set(values);
    f = (v) => (typeof v === 'string' && set.has(v) ? v : fail(failure(exact)));
  } else {
    const byLower = new Map(values.map((x) => [x.toLowerCase(), x]));
    f = (v) => (typeof v === 'string' && byLower.get(v.toLowerCase())) || fail(failure('Unknown tag/contents'));
  }
  enumConvs.set(name, f);
  return f;
}

type Conv = (v: unknown) => unknown;

/** The direct check of a scalar type, or undefined for a structured one. */
function scalarConv(ty: Ty): Conv | undefined {
  switch (ty.k) {
    case 'string': case 'ref': return toStr; // Ref.t_of_rpc is Rpc.string_of_rpc
    case 'int': case 'int32': return toInt;
    case 'float': return toFloat;
    case 'bool': return toBool;
    case 'datetime': return toDatetime;
    case 'enum': return enumConv(ty.name);
    case 'any': return (v) => v;
    default: return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Structures: zod schemas, built once per Ty object. A scalar inside a structure is a transform
// that reports its failure as an issue; the first issue (zod keeps depth-first order, which is
// the order the OCaml code fails in) becomes the INTERNAL_ERROR.

const messageOf = (e: unknown) => (e instanceof XapiError ? e.params[0] ?? e.code : String(e));

const lift = (conv: Conv) =>
  z.transform((v: unknown, ctx) => {
    try {
      return conv(v);
    } catch (e) {
      ctx.issues.push({ code: 'custom', message: messageOf(e), input: v });
      return z.NEVER;
    }
  });

/** Error map for a container's own type check. */
const notA = (text: (input: unknown) => string) => ({
  error: (iss: { code?: string; input?: unknown }) => (iss.code === 'invalid_type' ? text(iss.input) : undefined),
});

// The maps with hand-written unmarshallers (gen_api.ml `overrides`) fail with this text.
const mapOverride = (ty: Extract<Ty, { k: 'map' }>) => ty.key.k === 'int' || ty.key.k === 'enum';

const schemas = new WeakMap<Ty, z.ZodType>();
function schemaOf(ty: Ty): z.ZodType {
  let s = schemas.get(ty);
  if (s) return s;
  const scalar = scalarConv(ty);
  if (scalar) s = lift(scalar);
  else if (ty.k === 'set') {
    // ppx_deriving_rpc, list: `Rpc.Enum l` else "Expecting Rpc.Enum, but found '%s'"
    s = z.array(schemaOf(ty.of), notA((x) => failure(`Expecting Rpc.Enum, but found '${rpcToString(x)}'`)));
  } else if (ty.k === 'map') {
    // string-like keys: `Rpc.Dict l` else "Expecting Rpc.Dict, but found '%s'"; int and enum keys
    // use hand-written unmarshallers: Int64.of_string / <enum>_of_rpc (String k), "Unmarshalling error"
    // (keys must stay strings: zod retries a failed numeric-looking key as a number, e.g. "1e3")
    const key: z.ZodType = ty.key.k === 'int' ? lift((k) => String(typeof k === 'string' ? int64OfString(k) : fail(failure('Int64.of_string'))))
      : ty.key.k === 'enum' ? lift(enumConv(ty.key.name)) : z.string();
    const text = mapOverride(ty) ? () => failure('Unmarshalling error')
      : (x: unknown) => failure(`Expecting Rpc.Dict, but found '${rpcToString(x)}'`);
    s = z.record(key as z.ZodType<string, string>, schemaOf(ty.value), notA(text));
  } else if (ty.k === 'option') {
    s = schemaOf(ty.of).optional();
  } else if (ty.k === 'record') {
    s = lift(recordConv(ty.class));
  } else if (ty.k === 'struct') {
    s = z.object(Object.fromEntries(Object.entries(ty.fields).map(([k, t]) => [k, schemaOf(t)])));
  } else {
    s = z.unknown();
  }
  schemas.set(ty, s);
  return s;
}

function firstMessage(issues: readonly z.core.$ZodIssue[]): string {
  const iss = issues[0];
  if (iss?.code === 'invalid_key' && iss.issues.length) return iss.issues[0].message;
  return iss?.message ?? 'validation failed';
}

const compiled = new WeakMap<Ty, Conv>();

/** The coercion of a value of type `ty`: returns the internal value or throws XapiError. */
export function compileParam(ty: Ty): Conv {
  let f = compiled.get(ty);
  if (f) return f;
  const scalar = scalarConv(ty);
  if (scalar) f = scalar;
  else if (ty.k === 'option') {
    const inner = compileParam(ty.of);
    f = (v) => (v === undefined ? undefined : inner(v));
  } else if (ty.k === 'record') f = recordConv(ty.class);
  else {
    const schema = schemaOf(ty);
    const map = ty.k === 'map' ? ty : undefined;
    f = (v) => {
      const r = schema.safeParse(v);
      if (!r.success) throw internalError(firstMessage(r.error.issues));
      // zod leaves a "__proto__" key out of the records it builds; to xapi it is an ordinary key.
      // Put it back as an own data property (never through the prototype setter).
      if (map && isDict(v) && has(v, '__proto__')) {
        const key = compileParam(map.key)('__proto__') as string;
        const value = compileParam(map.value)(v.__proto__);
        Object.defineProperty(r.data, key, { value, enumerable: true, writable: true, configurable: true });
      }
      return r.data;
    };
  }
  compiled.set(ty, f);
  return f;
}

const isDict = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
const has = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);
const copy = <T>(v: T): T => (v !== null && typeof v === 'object' ? structuredClone(v) : v);

// `<class>_t_of_rpc` (gen_api.ml gen_record_type): on_dict, else failwith "Expected Dictionary";
// `assocer` gives a missing field its default (a `ref set` defaults to []), or fails with
// "Field %s not present in rpc"; an absent option field is None.
const recordConvs = new Map<string, Conv>();
function recordConv(cls: string): Conv {
  let f = recordConvs.get(cls);
  if (f) return f;
  const fields = (classes.get(cls)?.fields ?? []).map((fm) => {
    const dflt = fm.ty.k === 'set' && fm.ty.of.k === 'ref' ? [] : fm.default;
    return { name: fm.name, opt: fm.ty.k === 'option', dflt, conv: compileParam(fm.ty.k === 'option' ? fm.ty.of : fm.ty) };
  });
  f = (v) => {
    if (!isDict(v)) return fail(failure('Expected Dictionary'));
    const out: Record<string, unknown> = {};
    for (const fd of fields) {
      if (has(v, fd.name)) out[fd.name] = fd.conv(v[fd.name]);
      else if (fd.opt) continue;
      else if (fd.dflt !== undefined) out[fd.name] = copy(fd.dflt);
      else fail(failure(`Field ${fd.name} not present in rpc`));
    }
    return out;
  };
  recordConvs.set(cls, f);
  return f;
}

/** The struct argument of a generated `<class>.create` (gen_server.ml `from_ctor_record`): a
 * non-struct fails with "bad __structure"; the ctor fields are read in order, a missing one
 * without default raises Server_helpers.Dispatcher_FieldNotFound (server_helpers.ml `my_assoc`;
 * the module is in the unwrapped library xapi_internal_minimal, hence the bare module path), one
 * with a default takes it. Other keys are ignored. */
export function compileCreateRecord(
  cls: ClassMeta, ctorFields: readonly { name: string; required: boolean }[],
): (v: unknown) => Record<string, unknown> {
  const fields = ctorFields.map(({ name, required }) => {
    const fm = cls.field.get(name);
    if (!fm) throw new Error(`${cls.name}.create: no field ${name}`);
    return { name, required, dflt: fm.default, conv: compileParam(fm.ty) };
  });
  return (v) => {
    if (!isDict(v)) return fail(failure('bad __structure'));
    const out: Record<string, unknown> = {};
    for (const fd of fields) {
      if (has(v, fd.name)) out[fd.name] = fd.conv(v[fd.name]);
      else if (fd.required) fail(`Server_helpers.Dispatcher_FieldNotFound(${ocamlQuote(fd.name)})`);
      else out[fd.name] = copy(fd.dflt);
    }
    return out;
  };
}

/** Coerces the positional params of `msg` that follow the session (`args` excludes the session).
 * Missing trailing params take their default (deep-copied); extra args are dropped. */
export function compileParams(msg: MessageMeta): (args: unknown[]) => unknown[] {
  const convs = msg.params.map((p) =>
    msg.tag === 'create' && p.ty.k === 'record'
      ? compileCreateRecord(classes.get(p.ty.class)!, msg.ctor_fields ?? [])
      : compileParam(p.ty));
  const params = msg.params;
  const n = params.length;
  return (args) => {
    const out = new Array<unknown>(n);
    for (let i = 0; i < n; i++) out[i] = i < args.length ? convs[i](args[i]) : copy(params[i].default);
    return out;
  };
}
