// JSON-RPC wire codec (WIRE.md §2): request parsing as ocaml-rpc's
// `Jsonrpc.version_id_and_call_of_string`, and the v1/v2 response envelopes xapi writes.
import type { Ty } from '../../schema/index.js';
import { Typed } from './typed.js';
import { entryOf, jsonBytesOf, storeJson } from '../../storage/encoded-cache.js';

/** A request xapi would refuse with `Jsonrpc.Malformed_method_request(...)` (an HTTP 500 page). */
export class JsonRpcMalformed extends Error {
  override name = 'JsonRpcMalformed';
  /** The bare reason, e.g. "Invalid field 'id' in request body". */
  readonly reason: string;
  constructor(reason: string) {
    super(`Jsonrpc.Malformed_method_request(${JSON.stringify(reason)})`);
    this.reason = reason;
  }
}

export type JsonRpcVersion = 1 | 2;

export interface JsonRpcCall {
  version: JsonRpcVersion;
  id: string | number;
  method: string;
  params: unknown[];
  /** Strings (at any depth, keys included) that came from invalid UTF-8 or hold lone surrogates. */
  badUtf8: string[];
}

const MAX_DEPTH = 64;
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder('utf-8');

/** How many `c` the text holds, counting up to `max` + 1 (native searches: quicker than a scan). */
function countUpTo(s: string, c: string, max: number): number {
  let n = 0;
  for (let i = s.indexOf(c); i >= 0 && n <= max; i = s.indexOf(c, i + 1)) n++;
  return n;
}

/** Iterative scan for nesting depth, so a hostile `[[[[…` is refused before JSON.parse recurses.
 * The request object and its params array do not count: 64 levels of arrays/objects in a param, as in XML. */
function checkDepth(s: string): void {
  // the depth cannot exceed the number of opening brackets: most requests need no scan
  const limit = MAX_DEPTH + 2;
  const squares = countUpTo(s, '[', limit);
  if (squares <= limit && squares + countUpTo(s, '{', limit - squares) <= limit) return;
  let depth = 0;
  let inStr = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (inStr) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inStr = false;
    } else if (c === 34) inStr = true;
    else if (c === 91 /* [ */ || c === 123 /* { */) {
      if (++depth > MAX_DEPTH + 2) throw new JsonRpcMalformed(`Nesting deeper than ${MAX_DEPTH}`);
    } else if (c === 93 /* ] */ || c === 125 /* } */) depth--;
  }
}

// lone surrogates (from \uD800-style escapes) cannot become UTF-8 (String#isWellFormed is ES2024)
const SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const illFormed = (s: string): boolean => SURROGATE.test(s) && LONE_SURROGATE.test(s);

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

export function decodeJsonRpc(body: Buffer | Uint8Array | string): JsonRpcCall {
  let text: string;
  let lenient = false;
  if (typeof body === 'string') text = body;
  else {
    try {
      text = fatalUtf8.decode(body);
    } catch {
      text = lenientUtf8.decode(body); // invalid bytes become U+FFFD; the strings holding them are reported
      lenient = true;
    }
  }
  if (/^[ \t\r\n]*$/.test(text)) throw new JsonRpcMalformed('Blank input data');
  checkDepth(text);
  let req: unknown;
  try {
    req = JSON.parse(text);
  } catch (e) {
    throw new JsonRpcMalformed(`Invalid JSON: ${(e as Error).message}`);
  }
  if (req === null || typeof req !== 'object' || Array.isArray(req)) throw new JsonRpcMalformed('Invalid request body');
  const r = req as Record<string, unknown>;

  // Same order of checks as ocaml-rpc: method, jsonrpc, params, id.
  if (!hasOwn(r, 'method')) throw new JsonRpcMalformed('Required field method is missing');
  const method = r.method;
  if (typeof method !== 'string') throw new JsonRpcMalformed("Invalid field 'method' in request body");

  let version: JsonRpcVersion = 1;
  if (hasOwn(r, 'jsonrpc')) {
    if (r.jsonrpc !== '2.0') throw new JsonRpcMalformed("Invalid field 'jsonrpc' in request body");
    version = 2;
  }

  let params: unknown[];
  const p = hasOwn(r, 'params') ? r.params : undefined;
  if (Array.isArray(p)) params = p;
  else if (version === 1) {
    if (p === undefined) throw new JsonRpcMalformed('Required field params is missing');
    throw new JsonRpcMalformed("Invalid field 'params' in request body");
  } else if (p === undefined || p === null) params = [];
  else if (typeof p === 'object') params = [p]; // v2 named params: one struct param
  else throw new JsonRpcMalformed("Invalid field 'params' in request body");

  const id = hasOwn(r, 'id') ? r.id : undefined;
  // absent or null is a notification, which xapi rejects; floats are not ids either
  if (!(typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id)))) {
    throw new JsonRpcMalformed("Invalid field 'id' in request body");
  }

  const badUtf8: string[] = [];
  for (let i = 0; i < params.length; i++) params[i] = clean(params[i], lenient, badUtf8);
  return { version, id, method, params, badUtf8 };
}

// (module-level rather than closures made on every call: the hot path of every JSON-RPC request)
function check(s: string, lenient: boolean, badUtf8: string[]): void {
  if ((lenient && s.includes('\uFFFD')) || illFormed(s)) badUtf8.push(s);
}

/** Post-pass: null-prototype objects, so a "__proto__" key stays data when code later copies it.
 * Recursion is bounded by MAX_DEPTH. */
function clean(v: unknown, lenient: boolean, badUtf8: string[]): unknown {
  if (typeof v === 'string') check(v, lenient, badUtf8);
  else if (Array.isArray(v)) for (let i = 0; i < v.length; i++) v[i] = clean(v[i], lenient, badUtf8);
  else if (v !== null && typeof v === 'object') {
    const o = Object.create(null) as Record<string, unknown>;
    for (const k of Object.keys(v)) {
      check(k, lenient, badUtf8);
      o[k] = clean((v as Record<string, unknown>)[k], lenient, badUtf8);
    }
    return o;
  }
  return v;
}

// Values are already in wire form (datetimes as strings, records keyed by wire names); Typed wrappers
// unwrap through their toJSON. A void result is "", as xapi's.
const json = (v: unknown): string => (v === undefined ? '""' : JSON.stringify(v));

/** JSON.stringify of a record; a stored record's text is kept until the record changes. */
function recordJson(v: unknown): string {
  const cached = entryOf(v);
  if (cached === undefined) return JSON.stringify(v);
  if (cached.json !== undefined) return cached.json;
  const s = JSON.stringify(v);
  storeJson(cached, s);
  return s;
}

/** The result text: JSON.stringify(value), with the records of a record or map-of-records result
 * (get_record, get_all_records…) taken from the cache of encoded records. */
export function encodeResult(value: unknown, ty?: Ty | null): string {
  if (value === undefined) return '""';
  if (ty && value !== null && typeof value === 'object' && !(value instanceof Typed)) {
    if (ty.k === 'record') return recordJson(value);
    if (ty.k === 'map' && ty.value.k === 'record' && !Array.isArray(value)) {
      // as JSON.stringify writes an object: own enumerable keys in order, undefined values left out
      const o = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const k of Object.keys(o)) {
        const x = o[k];
        const t = entryOf(x) ? recordJson(x) : JSON.stringify(x);
        if (t !== undefined) parts.push(JSON.stringify(k) + ':' + t);
      }
      return '{' + parts.join(',') + '}';
    }
  }
  return JSON.stringify(value);
}

const V2_RESULT = Buffer.from('{"jsonrpc":"2.0","result":');
const V1_RESULT = Buffer.from('{"result":');

/** encodeSuccess, as chunks when the result is a stored record: its bytes then come from the cache
 * of encoded records, with nothing to encode or measure again. Otherwise the string. */
export function encodeSuccessBody(version: JsonRpcVersion, id: string | number, value: unknown, ty: Ty | null): string | (Buffer | string)[] {
  if (ty !== null && ty.k === 'record' && !(value instanceof Typed)) {
    const cached = entryOf(value);
    if (cached !== undefined) {
      const bytes = jsonBytesOf(cached, recordJson(value));
      return version === 2
        ? [V2_RESULT, bytes, ',"id":' + JSON.stringify(id) + '}']
        : [V1_RESULT, bytes, ',"error":null,"id":' + JSON.stringify(id) + '}'];
    }
  }
  return encodeSuccess(version, id, value, ty);
}

/** `ty`, the result's type, lets stored records come from the cache of encoded records. */
export function encodeSuccess(version: JsonRpcVersion, id: string | number, value: unknown, ty?: Ty | null): string {
  const result = ty === undefined ? json(value) : encodeResult(value, ty);
  return version === 2
    ? '{"jsonrpc":"2.0","result":' + result + ',"id":' + JSON.stringify(id) + '}'
    : '{"result":' + result + ',"error":null,"id":' + JSON.stringify(id) + '}';
}

export function encodeError(version: JsonRpcVersion, id: string | number, description: readonly string[]): string {
  if (version === 1) return '{"result":null,"error":' + JSON.stringify(description) + ',"id":' + JSON.stringify(id) + '}';
  return '{"jsonrpc":"2.0","error":{"code":1,"message":' + JSON.stringify(description[0] ?? '') +
    ',"data":' + JSON.stringify(description.slice(1)) + '},"id":' + JSON.stringify(id) + '}';
}

/** An error raised before dispatch: xapi sends the raw array in a v2 envelope with id 0. */
export function encodeParseError(description: readonly string[]): string {
  return '{"jsonrpc":"2.0","error":' + JSON.stringify(description) + ',"id":0}';
}
