// XML-RPC wire codec (WIRE.md §1): a strict decoder of <methodCall> and a type-driven encoder that
// writes exactly what xapi (rpclib xmlrpc.ml, strict=false) writes.
import { SaxesParser } from 'saxes';
import { classes, type Ty } from '../../schema/index.js';
import { Typed } from './typed.js';
import { entryOf, storeXml, xmlBytesOf } from '../../storage/encoded-cache.js';

// ───────────────────────────── decoding ─────────────────────────────

/** The body is not an XML-RPC call we accept; xapi answers such bodies with an HTTP 500. */
export class XmlRpcParseError extends Error {
  override name = 'XmlRpcParseError';
}

export interface DecodedCall {
  method: string;
  params: unknown[];
  /** Strings (at any depth) that came from invalid UTF-8; the dispatcher answers INVALID_VALUE. */
  badUtf8: string[];
}

const MAX_DEPTH = 64; // arrays + structs
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder('utf-8');
const SCALARS = new Set(['string', 'int', 'i4', 'i8', 'boolean', 'double', 'dateTime.iso8601', 'base64', 'nil']);
const INT_RE = /^[+-]?\d+$/;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
// rpclib's is_empty: whitespace between elements is skipped (Python puts newlines there)
const isBlank = (s: string): boolean => /^[ \t\r\n]*$/.test(s);

class Frame {
  text = '';
  kids = 0; // element children seen
  val: unknown = undefined; // value produced by the (single) child, or the frame's own result
  name: string | undefined = undefined; // member name
  hasVal = false;
  arr: unknown[] | undefined = undefined;
  obj: Record<string, unknown> | undefined = undefined;
  constructor(readonly tag: string) {}
}

const fail = (msg: string): never => {
  throw new XmlRpcParseError(msg);
};

export function decodeMethodCall(body: Buffer | Uint8Array | string): DecodedCall {
  let xml: string;
  let lenient = false;
  if (typeof body === 'string') xml = body;
  else {
    try {
      xml = fatalUtf8.decode(body);
    } catch {
      xml = lenientUtf8.decode(body); // invalid bytes become U+FFFD; the strings holding them are reported
      lenient = true;
    }
  }
  return (lenient ? undefined : decodeCommonShape(xml)) ?? decodeWithSax(xml, lenient);
}

/** The general decoder (saxes): every well-formed document, every error. */
export function decodeWithSax(xml: string, lenient = false): DecodedCall {
  const badUtf8: string[] = [];
  const seen = (s: string): string => {
    if (lenient && s.includes('\uFFFD')) badUtf8.push(s);
    return s;
  };

  let method: string | undefined;
  let params: unknown[] | undefined;
  let depth = 0;
  const stack: Frame[] = [new Frame('#root')];
  const parser = new SaxesParser({ position: false });

  // Entity declarations are refused outright (billion laughs, external entities).
  parser.on('doctype', () => fail('DOCTYPE is not allowed'));
  parser.on('text', (t) => onText(t));
  parser.on('cdata', (t) => onText(t));
  parser.on('opentag', (node) => {
    const tag = node.name;
    const parent = stack[stack.length - 1];
    const n = parent.kids++;
    switch (parent.tag) {
      case '#root':
        if (tag !== 'methodCall') fail(`expected <methodCall>, got <${tag}>`);
        break;
      case 'methodCall':
        if (n === 0 && tag === 'params') fail('no <methodName>');
        if (!((n === 0 && tag === 'methodName') || (n === 1 && tag === 'params'))) fail(`unexpected <${tag}> in <methodCall>`);
        break;
      case 'params':
        if (tag !== 'param') fail(`unexpected <${tag}> in <params>`);
        break;
      case 'param':
      case 'data':
        if (tag !== 'value' || (parent.tag === 'param' && n > 0)) fail(`unexpected <${tag}> in <${parent.tag}>`);
        break;
      case 'value':
        if (n > 0) fail('<value> holds more than one element');
        if (tag === 'struct' || tag === 'array') {
          if (++depth > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`);
        } else if (!SCALARS.has(tag)) fail(`unknown value tag <${tag}>`);
        break;
      case 'struct':
        if (tag !== 'member') fail(`unexpected <${tag}> in <struct>`);
        break;
      case 'member':
        if (!((n === 0 && tag === 'name') || (n === 1 && tag === 'value'))) fail(`unexpected <${tag}> in <member>`);
        break;
      case 'array':
        if (tag !== 'data' || n > 0) fail(`unexpected <${tag}> in <array>`);
        break;
      default: // leaves: methodName, name and the scalar tags
        fail(`unexpected <${tag}> in <${parent.tag}>`);
    }
    const f = new Frame(tag);
    if (tag === 'struct') f.obj = Object.create(null) as Record<string, unknown>; // "__proto__" stays a plain key
    else if (tag === 'data' || tag === 'params') f.arr = [];
    stack.push(f);
  });
  parser.on('closetag', () => {
    const f = stack.pop()!;
    const parent = stack[stack.length - 1];
    let v: unknown;
    switch (f.tag) {
      case 'methodName':
        method = f.text;
        return;
      case 'params':
        params = f.arr;
        return;
      case 'param':
        if (f.kids === 0) fail('<param> without <value>');
        parent.arr!.push(f.val);
        return;
      case 'methodCall':
        return;
      case 'name':
        parent.name = seen(f.text);
        return;
      case 'member':
        if (f.kids < 2) fail('<member> without <name> and <value>');
        parent.obj![f.name!] = f.val;
        return;
      case 'data':
        parent.val = f.arr;
        return;
      case 'value':
        if (f.kids === 0) v = seen(f.text); // bare text, or "" for <value/>
        else if (!isBlank(f.text)) fail('text mixed with an element in <value>');
        else v = f.val;
        if (parent.tag === 'member') parent.val = v;
        else if (parent.tag === 'param') parent.val = v;
        else parent.arr!.push(v); // data
        return;
      case 'struct':
        depth--;
        v = f.obj;
        break;
      case 'array':
        depth--;
        v = f.kids === 0 ? [] : f.val;
        break;
      default:
        v = scalar(f.tag, f.text);
    }
    parent.val = v;
  });

  const onText = (t: string): void => {
    const f = stack[stack.length - 1];
    switch (f.tag) {
      case 'value':
      case 'methodName':
      case 'name':
        f.text += t;
        return;
      default:
        if (SCALARS.has(f.tag)) f.text += t;
        else if (!isBlank(t)) fail(`unexpected text in <${f.tag}>`);
    }
  };

  const scalar = (tag: string, text: string): unknown => scalarOf(tag, text, lenient, badUtf8);

  try {
    parser.write(xml);
    parser.close();
  } catch (e) {
    if (e instanceof XmlRpcParseError) throw e;
    throw new XmlRpcParseError(`malformed XML: ${(e as Error).message}`);
  }
  if (method === undefined) fail('no <methodName>');
  if (params === undefined) fail('no <params>');
  return { method: method!, params: params!, badUtf8 };
}

/** The value of a scalar element (<string>, <int>…) from its text; a string from invalid UTF-8
 * (lenient decoding) or a base64 one that is not UTF-8 goes to badUtf8. */
function scalarOf(tag: string, text: string, lenient: boolean, badUtf8: string[]): unknown {
  switch (tag) {
    case 'string':
    case 'dateTime.iso8601':
      if (lenient && text.includes('\uFFFD')) badUtf8.push(text);
      return text;
    case 'int':
    case 'i4':
    case 'i8': {
      const t = text.trim();
      if (!INT_RE.test(t)) fail(`bad integer ${JSON.stringify(text)}`);
      const n = Number(t);
      if (Number.isSafeInteger(n)) return n;
      const b = BigInt(t);
      if (b < INT64_MIN || b > INT64_MAX) fail(`integer out of range ${t}`);
      return b.toString(); // beyond 2^53: keep the exact decimal text
    }
    case 'boolean':
      return text === '1'; // as xapi: "true" is false
    case 'double': {
      const t = text.trim().toLowerCase();
      const n = Number(t);
      if (t !== '' && !Number.isNaN(n)) return n;
      if (/^[+-]?nan$/.test(t)) return NaN;
      if (/^[+-]?inf(inity)?$/.test(t)) return t[0] === '-' ? -Infinity : Infinity;
      return fail(`bad double ${JSON.stringify(text)}`);
    }
    case 'base64': {
      const bytes = Buffer.from(text, 'base64');
      try {
        return fatalUtf8.decode(bytes);
      } catch {
        const s = lenientUtf8.decode(bytes);
        badUtf8.push(s);
        return s;
      }
    }
    case 'nil':
      return null;
  }
  return fail(`unknown value tag <${tag}>`);
}

// ── The common shape, without a general parser ──
// What clients send is a methodCall in the plain XML-RPC vocabulary: elements without attributes,
// whitespace between them, character data with at most the five predefined entities. This scanner
// reads exactly that, and gives up (undefined) on anything else — a comment, CDATA, a processing
// instruction, DOCTYPE, an attribute, a character reference, a CR, any text the XML grammar would
// refuse or normalise, nesting past MAX_DEPTH, any error — leaving the document to decodeWithSax,
// which then gives the same result or the error. On what it accepts its result is the sax one:
// a unit test compares both on many documents. Module-level state, no closures: one call at a time.

let src = '';
let pos = 0;
let depthLeft = 0;
let fastBad: string[] = [];
/** stands for "not the common shape" */
const NO: unknown = Symbol('not the common shape');

/** Characters that end the fast path in character data: C0 controls but TAB and LF, CR (normalised
 * by XML), '>' (so "]]>" never passes), surrogates and U+FFFE/U+FFFF (checked by the XML grammar). */
const TEXT_ODD = /[\x00-\x08\x0b-\x1f>\ud800-\udfff\ufffe\uffff]/;
const ENTITY_ODD = /&(?!(?:amp|lt|gt|quot|apos);)/;
const ENTITY = /&(amp|lt|gt|quot|apos);/g;
const entityChar = (_: string, e: string): string =>
  e === 'amp' ? '&' : e === 'lt' ? '<' : e === 'gt' ? '>' : e === 'quot' ? '"' : "'";
const XML_DECL = /^<\?xml version=(["'])1\.0\1(?: encoding=(["'])(?:UTF-8|utf-8)\2)?\?>/;

/** Skips the blanks between elements (their text is dropped: a CR needs no normalising there). */
function skipBlank(): void {
  for (;;) {
    const c = src.charCodeAt(pos);
    if (c === 32 || c === 10 || c === 9 || c === 13) pos++;
    else return;
  }
}

/** Consumes `s` (a tag) if it is next. */
function eat(s: string): boolean {
  if (!src.startsWith(s, pos)) return false;
  pos += s.length;
  return true;
}

/** Character data up to the next '<', entities resolved; NO if it is anything unusual. */
function charData(): unknown {
  const end = src.indexOf('<', pos);
  if (end < 0) return NO;
  const t = src.slice(pos, end);
  pos = end;
  if (TEXT_ODD.test(t)) return NO;
  if (t.indexOf('&') < 0) return t;
  if (ENTITY_ODD.test(t)) return NO;
  return t.replace(ENTITY, entityChar);
}

const isBlankText = (t: string): boolean => {
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c !== 32 && c !== 10 && c !== 9) return false;
  }
  return true;
};

/** A scalar element's text, after its open tag, through its close tag. */
function scalarText(close: string): unknown {
  const t = charData();
  return t !== NO && eat(close) ? t : NO;
}

/** The content of a <value> (after `<value>`) through `</value>`. */
function valueBody(): unknown {
  const t = charData();
  if (t === NO) return NO;
  if (eat('</value>')) return t; // bare text, "" for <value></value>
  if (!isBlankText(t as string)) return NO;
  let v: unknown;
  const c = src.charCodeAt(pos + 1);
  if (c === 115 /* s */) {
    if (eat('<string>')) v = scalarText('</string>');
    else if (eat('<struct>')) v = struct();
    else if (eat('<string/>')) v = '';
    else return NO;
  } else if (c === 105 /* i */) {
    if (eat('<int>')) v = intOf('int', scalarText('</int>'));
    else if (eat('<i4>')) v = intOf('i4', scalarText('</i4>'));
    else if (eat('<i8>')) v = intOf('i8', scalarText('</i8>'));
    else return NO;
  } else if (c === 97 /* a */) {
    if (!eat('<array>')) return NO;
    v = array();
  } else if (eat('<boolean>')) {
    const b = scalarText('</boolean>');
    v = b === NO ? NO : b === '1';
  } else if (eat('<double>')) v = scalarOr('double', scalarText('</double>'));
  else if (eat('<dateTime.iso8601>')) v = scalarText('</dateTime.iso8601>');
  else if (eat('<base64>')) v = scalarOr('base64', scalarText('</base64>'));
  else if (eat('<nil/>')) v = null;
  else return NO;
  if (v === NO) return NO;
  const after = charData();
  if (after === NO || !isBlankText(after as string) || !eat('</value>')) return NO;
  return v;
}

const INT_PLAIN = /^-?\d{1,15}$/;
function intOf(tag: string, t: unknown): unknown {
  if (t === NO) return NO;
  if (INT_PLAIN.test(t as string)) return Number(t); // the everyday case: within 2^53, no sign or blanks
  return scalarOr(tag, t);
}

/** scalarOf, or NO where it would fail (decodeWithSax then reports the error). */
function scalarOr(tag: string, t: unknown): unknown {
  if (t === NO) return NO;
  try {
    return scalarOf(tag, t as string, false, fastBad);
  } catch {
    return NO;
  }
}

function array(): unknown {
  if (--depthLeft < 0) return NO;
  skipBlank();
  const out: unknown[] = [];
  if (!eat('</array>')) {
    if (!eat('<data>')) return NO;
    for (;;) {
      skipBlank();
      if (eat('<value>')) {
        const v = valueBody();
        if (v === NO) return NO;
        out.push(v);
      } else if (eat('</data>')) break;
      else return NO;
    }
    skipBlank();
    if (!eat('</array>')) return NO;
  }
  depthLeft++;
  return out;
}

function struct(): unknown {
  if (--depthLeft < 0) return NO;
  const out = Object.create(null) as Record<string, unknown>; // "__proto__" stays a plain key
  for (;;) {
    skipBlank();
    if (eat('</struct>')) break;
    if (!eat('<member>')) return NO;
    skipBlank();
    if (!eat('<name>')) return NO;
    const name = scalarText('</name>');
    if (name === NO) return NO;
    skipBlank();
    if (!eat('<value>')) return NO;
    const v = valueBody();
    if (v === NO) return NO;
    skipBlank();
    if (!eat('</member>')) return NO;
    out[name as string] = v;
  }
  depthLeft++;
  return out;
}

/** The call, if the document has the common shape (see above); else undefined. */
export function decodeCommonShape(xml: string): DecodedCall | undefined {
  src = xml;
  pos = 0;
  depthLeft = MAX_DEPTH;
  const badUtf8: string[] = (fastBad = []);
  try {
    if (xml.charCodeAt(0) === 60 /* < */ && xml.charCodeAt(1) === 63 /* ? */) {
      const m = XML_DECL.exec(xml);
      if (!m) return undefined;
      pos = m[0].length;
    }
    skipBlank();
    if (!eat('<methodCall>')) return undefined;
    skipBlank();
    if (!eat('<methodName>')) return undefined;
    const method = scalarText('</methodName>');
    if (method === NO) return undefined;
    skipBlank();
    if (!eat('<params>')) return undefined;
    const params: unknown[] = [];
    for (;;) {
      skipBlank();
      if (eat('<param>')) {
        skipBlank();
        if (!eat('<value>')) return undefined;
        const v = valueBody();
        if (v === NO) return undefined;
        skipBlank();
        if (!eat('</param>')) return undefined;
        params.push(v);
      } else if (eat('</params>')) break;
      else return undefined;
    }
    skipBlank();
    if (!eat('</methodCall>')) return undefined;
    skipBlank();
    if (pos !== xml.length) return undefined;
    return { method: method as string, params, badUtf8 };
  } finally {
    src = '';
    fastBad = [];
  }
}

// ───────────────────────────── encoding ─────────────────────────────

type Enc = (v: unknown) => string;

const ESC_TEST = /[&<>"\x00-\x08\x0b\x0c\x0e-\x1f]/;
const ESC_ALL = /[&<>"\x00-\x08\x0b\x0c\x0e-\x1f]/g;
const escChar = (c: string): string =>
  c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : ''; // control chars dropped, as rpclib
/** XML text escape as rpclib's `encode`; returns the input itself when there is nothing to do. */
export const escapeXml = (s: string): string => (ESC_TEST.test(s) ? s.replace(ESC_ALL, escChar) : s);

const EMPTY = '<value></value>';
const str = (s: string): string => (s === '' ? EMPTY : '<value>' + escapeXml(s) + '</value>');

// ── %.16g, as OCaml's Printf (glibc: correctly rounded, ties to even) ──
const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
const LO = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 0 : 1;

/** True when |x| equals the decimal digits × 10^exp exactly (BigInt, so only on the rare tie path). */
function exactlyEquals(x: number, digits: string, exp: number): boolean {
  f64[0] = Math.abs(x);
  const hi = u32[1 - LO], lo = u32[LO];
  const be = (hi >>> 20) & 0x7ff;
  let m = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e = -1074;
  if (be !== 0) {
    m |= 1n << 52n;
    e = be - 1075;
  }
  const k = exp - (digits.length - 1); // value = N × 10^k
  let L = m, R = BigInt(digits);
  if (k >= 0) R *= 5n ** BigInt(k);
  else L *= 5n ** BigInt(-k);
  const p2 = e - k;
  if (p2 >= 0) L <<= BigInt(p2);
  else R <<= BigInt(-p2);
  return L === R;
}

/** C's `%.16g`: 1 → "1", 0.5 → "0.5", 1e21 → "1e+21", 1e-5 → "1e-05". */
export function formatDouble(x: number): string {
  if (x !== x) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  // integral values below 1e16 have at most 16 digits: %.16g prints them exactly, as String does
  if (Number.isInteger(x) && x < 1e16 && x > -1e16) return String(x);
  const neg = x < 0;
  const a = neg ? -x : x;
  // toExponential rounds exact ties away from zero; %g rounds them to even.
  let s = a.toExponential(15);
  const s17 = a.toExponential(16);
  if (s17.charCodeAt(17) === 53 /* '5' */) {
    const ei = s17.indexOf('e');
    const digits17 = s17[0] + s17.slice(2, ei);
    const exp = +s17.slice(ei + 1);
    if ((digits17.charCodeAt(15) & 1) === 0 && exactlyEquals(a, digits17, exp)) {
      s = s17.slice(0, 17) + s17.slice(ei); // even: truncate
    }
  }
  const ei = s.indexOf('e');
  const X = +s.slice(ei + 1);
  const digits = (s[0] + s.slice(2, ei)).replace(/0+$/, '');
  let out: string;
  if (X < -4 || X >= 16) {
    const mant = digits.length > 1 ? digits[0] + '.' + digits.slice(1) : digits;
    const ax = X < 0 ? -X : X;
    out = mant + (X < 0 ? 'e-' : 'e+') + (ax < 10 ? '0' + ax : String(ax));
  } else if (X < 0) {
    out = '0.' + '0'.repeat(-X - 1) + digits;
  } else if (digits.length <= X + 1) {
    out = digits + '0'.repeat(X + 1 - digits.length);
  } else {
    out = digits.slice(0, X + 1) + '.' + digits.slice(X + 1);
  }
  return neg ? '-' + out : out;
}

// ── scalar encoders; lenient on a missing value so a sparse record never crashes the answer ──
const intText = (v: unknown): string => {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return '0';
    const t = Math.trunc(v);
    return Math.abs(t) < 1e21 ? String(t) : BigInt(t).toString(); // String(1e21) would be "1e+21"
  }
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return escapeXml(v); // ints beyond 2^53 are kept as decimal strings
  return '0';
};
const encString: Enc = (v) => (typeof v === 'string' ? str(v) : v == null ? EMPTY : str(String(v)));
const encInt: Enc = (v) => '<value>' + intText(v) + '</value>';
const encInt32: Enc = (v) => '<value><i4>' + intText(v) + '</i4></value>';
const encFloat: Enc = (v) => '<value><double>' + formatDouble(typeof v === 'number' ? v : Number(v ?? 0)) + '</double></value>';
const encBool: Enc = (v) => (v === true ? '<value><boolean>1</boolean></value>' : '<value><boolean>0</boolean></value>');
const pad2 = (n: number): string => (n < 10 ? '0' + n : String(n));
const dateText = (v: unknown): string => {
  if (typeof v === 'string') return escapeXml(v);
  if (v instanceof Date) {
    return v.getUTCFullYear().toString().padStart(4, '0') + pad2(v.getUTCMonth() + 1) + pad2(v.getUTCDate()) + 'T' +
      pad2(v.getUTCHours()) + ':' + pad2(v.getUTCMinutes()) + ':' + pad2(v.getUTCSeconds()) + 'Z';
  }
  return '19700101T00:00:00Z';
};
const encDate: Enc = (v) => '<value><dateTime.iso8601>' + dateText(v) + '</dateTime.iso8601></value>';

// Encode one element of a container: a Typed overrides the declared type.
const sub = (enc: Enc, x: unknown): string => (x instanceof Typed ? encodeValue(x.value, x.ty) : enc(x));

const encAny: Enc = (v) => {
  switch (typeof v) {
    case 'string':
      return str(v);
    case 'boolean':
      return encBool(v);
    case 'number':
      return Number.isInteger(v) ? encInt(v) : encFloat(v);
    case 'bigint':
      return encInt(v);
    case 'object':
      if (v === null) return EMPTY;
      if (v instanceof Typed) return encodeValue(v.value, v.ty);
      if (Array.isArray(v)) {
        let s = '<value><array><data>';
        for (let i = 0; i < v.length; i++) s += encAny(v[i]);
        return s + '</data></array></value>';
      }
      if (v instanceof Date) return encDate(v);
      {
        let s = '<value><struct>';
        const o = v as Record<string, unknown>;
        for (const k in o) {
          const x = o[k];
          if (x !== undefined) s += '<member><name>' + escapeXml(k) + '</name>' + encAny(x) + '</member>';
        }
        return s + '</struct></value>';
      }
    default:
      return EMPTY; // undefined (void) and functions
  }
};

// Small collections are concatenated. Past BIG items (get_all_records of thousands of objects) the
// items go to an array joined once: one flat string instead of a rope of millions of pieces, all
// alive until the end, that the GC keeps copying and the socket write has to flatten again.
const BIG = 32;

const setEnc = (item: Enc): Enc => (v) => {
  if (!Array.isArray(v)) return '<value><array><data></data></array></value>';
  if (v.length > BIG) {
    const parts = new Array<string>(v.length);
    for (let i = 0; i < v.length; i++) parts[i] = sub(item, v[i]);
    return '<value><array><data>' + parts.join('') + '</data></array></value>';
  }
  let s = '<value><array><data>';
  for (let i = 0; i < v.length; i++) s += sub(item, v[i]);
  return s + '</data></array></value>';
};

const mapEnc = (val: Enc): Enc => (v) => {
  let s = '<value><struct>';
  let parts: string[] | undefined;
  let n = 0;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k in o) {
      const m = '<member><name>' + escapeXml(k) + '</name>' + sub(val, o[k]) + '</member>';
      if (parts) parts.push(m);
      else if (++n > BIG) parts = [s, m];
      else s += m;
    }
  }
  return (parts ? parts.join('') : s) + '</struct></value>';
};

/** Struct of fixed members in order; option members are omitted when undefined. */
function membersEnc(fields: [string, Ty][]): Enc {
  const n = fields.length;
  const names = fields.map(([k]) => k);
  const pre = fields.map(([k]) => '<member><name>' + escapeXml(k) + '</name>');
  const opt = fields.map(([, t]) => t.k === 'option');
  const encs: Enc[] = new Array(n);
  let ready = false; // fields compiled on first use: records may refer to records (or themselves)
  return (v) => {
    if (!ready) {
      for (let i = 0; i < n; i++) {
        const t = fields[i][1];
        encs[i] = compile(t.k === 'option' ? t.of : t); // a present option is written as its value
      }
      ready = true;
    }
    const o = (v !== null && typeof v === 'object' ? v : {}) as Record<string, unknown>;
    let s = '<value><struct>';
    for (let i = 0; i < n; i++) {
      const x = o[names[i]];
      if (x == null && opt[i]) continue; // None
      s += pre[i] + (x instanceof Typed ? encodeValue(x.value, x.ty) : encs[i](x)) + '</member>';
    }
    return s + '</struct></value>';
  };
}

const recordEncs = new Map<string, Enc>();
/** A record of the class; a stored record's fragment is kept until the record changes. */
function recordEnc(cls: string): Enc {
  let e = recordEncs.get(cls);
  if (!e) {
    const c = classes.get(cls);
    if (!c) throw new Error(`xmlrpc encoder: unknown class ${cls}`);
    const members = membersEnc(c.fields.map((f) => [f.name, f.ty]));
    e = (v) => {
      const cached = entryOf(v);
      if (cached === undefined) return members(v);
      if (cached.xml !== undefined && cached.xmlBy === members) return cached.xml;
      const s = members(v);
      storeXml(cached, members, s);
      return s;
    };
    recordEncs.set(cls, e);
  }
  return e;
}

function build(ty: Ty): Enc {
  switch (ty.k) {
    case 'string':
    case 'enum':
    case 'ref':
      return encString;
    case 'int':
      return encInt;
    case 'int32':
      return encInt32;
    case 'float':
      return encFloat;
    case 'bool':
      return encBool;
    case 'datetime':
      return encDate;
    case 'any':
      return encAny;
    case 'set':
      return setEnc(compile(ty.of));
    case 'map':
      return mapEnc(compile(ty.value));
    case 'option': {
      // Outside a record (never in the datamodel today): the value when present, else "".
      const inner = compile(ty.of);
      return (v) => (v === undefined || v === null ? EMPTY : inner(v));
    }
    case 'record':
      return recordEnc(ty.class);
    case 'struct':
      return membersEnc(Object.entries(ty.fields));
  }
}

const compiled = new WeakMap<Ty, Enc>();
/** The encoder for a type, compiled once per Ty object. */
function compile(ty: Ty): Enc {
  let e = compiled.get(ty);
  if (!e) {
    e = build(ty);
    compiled.set(ty, e);
  }
  return e;
}

/** The `<value>…</value>` fragment for a value of type `ty` (null: void/untyped, encoded by JS type). */
export function encodeValue(value: unknown, ty: Ty | null): string {
  if (value instanceof Typed) return compile(value.ty)(value.value);
  return ty === null ? encAny(value) : compile(ty)(value);
}

const HEAD = '<?xml version="1.0"?><methodResponse><params><param>';
const TAIL = '</param></params></methodResponse>';

const SUCCESS_HEAD = HEAD + '<value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>';
const SUCCESS_TAIL = '</member></struct></value>' + TAIL;
const SUCCESS_HEAD_BYTES = Buffer.from(SUCCESS_HEAD);
const SUCCESS_TAIL_BYTES = Buffer.from(SUCCESS_TAIL);

export function encodeSuccess(value: unknown, ty: Ty | null): string {
  return SUCCESS_HEAD + encodeValue(value, ty) + SUCCESS_TAIL;
}

/** encodeSuccess, as byte chunks when the value is a stored record: the record's bytes then come
 * from the cache of encoded records, with nothing to encode or measure again. Otherwise the string. */
export function encodeSuccessBody(value: unknown, ty: Ty | null): string | Buffer[] {
  if (ty !== null && ty.k === 'record' && !(value instanceof Typed)) {
    const cached = entryOf(value);
    if (cached !== undefined) {
      const fragment = compile(ty)(value); // (kept in the entry by the record encoder)
      return [SUCCESS_HEAD_BYTES, xmlBytesOf(cached, fragment), SUCCESS_TAIL_BYTES];
    }
  }
  return encodeSuccess(value, ty);
}

export function encodeFailure(description: readonly string[]): string {
  let s = HEAD + '<value><struct><member><name>Status</name><value>Failure</value></member>' +
    '<member><name>ErrorDescription</name><value><array><data>';
  for (const d of description) s += str(String(d));
  return s + '</data></array></value></member></struct></value>' + TAIL;
}

/** A methodResponse whose param is the bare value, without Status/Value (system.listMethods). */
export function encodeBare(value: unknown, ty: Ty | null): string {
  return HEAD + encodeValue(value, ty) + TAIL;
}
