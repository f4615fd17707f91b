// The expression language of get_all_records_where / get_all_where (WIRE.md §6), as xapi's
// ocaml/database: db_filter_lex.mll (lexer), db_filter_parse.mly (menhir grammar), db_filter.ml
// (evaluation) and db_cache_impl.ml find_refs_with_filter_internal (field lookup).
import type { ClassMeta, Ty } from '../schema/index.js';
import { XapiError } from '../server/dispatch/errors.js';
import { formatG, ocamlQuote } from '../server/dispatch/validate.js';

type Rec = Record<string, unknown>;
type Val = (r: Rec, ref?: string) => string;
type Pred = (r: Rec, ref?: string) => boolean;

// Printexc.to_string of the two exceptions parsing can raise. ocamllex's "no rule matches" is
// Failure "lexing: empty token". Menhir's Error lives in the generated module's MenhirBasics; the
// library xapi_database is wrapped by dune, hence the unit name (inferred, not observed).
const LEX_ERROR = `Failure(${ocamlQuote('lexing: empty token')})`;
const PARSE_ERROR = 'Xapi_database__Db_filter_parse.MenhirBasics.Error';

type Tok = { t: 'EQ' | 'TRUE' | 'FALSE' | 'LPAREN' | 'RPAREN' | 'FIELD' | 'LAND' | 'LOR' | 'LNOT' | 'EOF' | 'BAD' } | { t: 'IDENT'; s: string };

const KEYWORDS: [string, Tok['t']][] = [['true', 'TRUE'], ['false', 'FALSE'], ['field', 'FIELD'], ['and', 'LAND'], ['or', 'LOR'], ['not', 'LNOT']];

/** The lexer: blanks are ' ', '\t', '\n' only; keywords need no word boundary ("notfalse" is
 * `not false`); a literal is '"' [^'"']* '"', with no escapes. After a lexing error it yields BAD,
 * which fails only when the parser reads it (the lexer is called lazily). */
function tokenize(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  for (;;) {
    while (src[i] === ' ' || src[i] === '\t' || src[i] === '\n') i++;
    if (i >= src.length) { out.push({ t: 'EOF' }); return out; }
    const c = src[i];
    if (c === '=') { out.push({ t: 'EQ' }); i++; continue; }
    if (c === '(') { out.push({ t: 'LPAREN' }); i++; continue; }
    if (c === ')') { out.push({ t: 'RPAREN' }); i++; continue; }
    if (c === '"') {
      const j = src.indexOf('"', i + 1);
      if (j < 0) { out.push({ t: 'BAD' }); return out; }
      out.push({ t: 'IDENT', s: src.slice(i + 1, j) });
      i = j + 1;
      continue;
    }
    const kw = KEYWORDS.find(([w]) => src.startsWith(w, i));
    if (!kw) { out.push({ t: 'BAD' }); return out; }
    out.push({ t: kw[1] } as Tok);
    i += kw[0].length;
  }
}

/** The parsed expression; `d` is the depth of the node's subtree. */
type Node =
  | { k: 'const'; d: 1; v: boolean }
  | { k: 'eq'; d: 1; a: Val; b: Val }
  | { k: 'not'; d: number; e: Node }
  | { k: 'and' | 'or'; d: number; l: Node; r: Node };

/** An expression being read: the whole input, a parenthesis, or the operand of a `not`. */
interface Frame { kind: 'top' | 'paren' | 'not'; left: Node | null; op: 'and' | 'or' | null }

/** The menhir grammar, read with an explicit stack (no recursion: nesting is bounded by the input
 * size only, as in xapi). Precedence there: `%right LNOT` then `%left LAND LOR`, so and/or bind
 * equally and associate left, and `not` binds *looser* than both: `not a and b` is
 * `not (a and b)`, and `not` extends to the end of its parenthesis. */
function parse(toks: Tok[], value: (tok: Tok, field: boolean) => Val): Node {
  let pos = 0;
  const peek = (): Tok => {
    const t = toks[pos];
    if (t.t === 'BAD') throw LEX_ERROR;
    return t;
  };
  const error = (): never => { throw PARSE_ERROR; };
  const next = () => toks[pos++];

  const parseValue = (): Val => {
    const t = peek();
    if (t.t === 'IDENT') { next(); return value(t, false); }
    if (t.t === 'FIELD') {
      next();
      const n = peek();
      if (n.t !== 'IDENT') return error();
      next();
      return value(n, true);
    }
    return error();
  };

  const stack: Frame[] = [{ kind: 'top', left: null, op: null }];
  for (;;) {
    // an operand: open parentheses and `not`s until a leaf
    let node: Node | null = null;
    while (node === null) {
      const t = peek();
      switch (t.t) {
        case 'TRUE': next(); node = { k: 'const', d: 1, v: true }; break;
        case 'FALSE': next(); node = { k: 'const', d: 1, v: false }; break;
        case 'LPAREN': next(); stack.push({ kind: 'paren', left: null, op: null }); break;
        case 'LNOT': next(); stack.push({ kind: 'not', left: null, op: null }); break;
        default: {
          const a = parseValue();
          if (peek().t !== 'EQ') return error();
          next();
          node = { k: 'eq', d: 1, a, b: parseValue() };
        }
      }
    }
    // then close every expression that ends after it
    for (;;) {
      const f = stack[stack.length - 1];
      f.left = f.left === null ? node : { k: f.op!, d: Math.max(f.left.d, node.d) + 1, l: f.left, r: node };
      const t = peek();
      if (t.t === 'LAND' || t.t === 'LOR') {
        next();
        f.op = t.t === 'LAND' ? 'and' : 'or';
        break;
      }
      stack.pop();
      if (f.kind === 'top') {
        if (t.t !== 'EOF') error();
        return f.left;
      }
      if (f.kind === 'paren') {
        if (t.t !== 'RPAREN') return error();
        next();
        node = f.left;
      } else node = { k: 'not', d: f.left.d + 1, e: f.left };
    }
  }
}

/** Below this depth an expression is compiled to nested closures (the fast path); deeper ones
 * are evaluated with an explicit stack. */
const CLOSURE_DEPTH = 500;

/** Db_filter.eval_expr: `and`/`or` short-circuit; the right value of an equality is looked up
 * before the left one (OCaml evaluates `f (lookup a) (lookup b)` right to left), which decides
 * which missing field is reported. */
function closure(n: Node): Pred {
  switch (n.k) {
    case 'const': return n.v ? () => true : () => false;
    case 'eq': {
      const { a, b } = n;
      return (r, ref) => { const vb = b(r, ref); return a(r, ref) === vb; };
    }
    case 'not': {
      const e = closure(n.e);
      return (r, ref) => !e(r, ref);
    }
    default: {
      const l = closure(n.l), rt = closure(n.r);
      return n.k === 'and' ? (x, ref) => l(x, ref) && rt(x, ref) : (x, ref) => l(x, ref) || rt(x, ref);
    }
  }
}

/** The same without recursion, for deeper expressions. */
function evaluator(root: Node): Pred {
  if (root.d <= CLOSURE_DEPTH) return closure(root);
  // pending and/or nodes (with the side being evaluated) and nots, reused between rows
  const nodes: Node[] = [];
  const rightSide: boolean[] = [];
  return (r, ref) => {
    nodes.length = 0;
    rightSide.length = 0;
    let n: Node = root;
    for (;;) {
      while (n.k === 'not' || n.k === 'and' || n.k === 'or') {
        nodes.push(n);
        rightSide.push(false);
        n = n.k === 'not' ? n.e : n.l;
      }
      const leaf = n as Extract<Node, { k: 'const' | 'eq' }>;
      let v: boolean;
      if (leaf.k === 'const') v = leaf.v;
      else { const vb = leaf.b(r, ref); v = leaf.a(r, ref) === vb; }
      for (;;) {
        const p = nodes.pop();
        if (p === undefined) return v;
        const right = rightSide.pop()!;
        if (p.k === 'not') { v = !v; continue; }
        if (right || (p.k === 'and' ? !v : v)) continue;
        // the left side did not decide: evaluate the right one
        nodes.push(p);
        rightSide.push(true);
        n = (p as { r: Node }).r;
        break;
      }
    }
  };
}

// ---------------------------------------------------------------------------------------------
// DB string forms: gen_db_actions.ml dm_to_string, and Schema.Value.marshal, which writes sets and
// maps with String_marshall_helper as SExpr.string_of (ocaml/libs/sexpr/sExpr.ml): a set is
// ('a' 'b'), a map (('k' 'v') ('k2' 'v2')), with \ and ' escaped by a backslash.

const sexprString = (s: string) => `'${s.replace(/[\\']/g, (c) => '\\' + c)}'`;

const intString = (v: unknown) =>
  typeof v === 'number' ? (Number.isSafeInteger(v) ? String(v) : BigInt(Math.trunc(v)).toString()) : String(v ?? '');

export function dbStringOf(ty: Ty): (v: unknown) => string {
  switch (ty.k) {
    case 'int': case 'int32': return intString;
    case 'float': return (v) => formatG(Number(v), 18); // Printf "%0.18g"
    case 'bool': return (v) => (v ? 'true' : 'false');
    case 'set': {
      const el = dbStringOf(ty.of);
      return (v) => `(${(Array.isArray(v) ? v : []).map((x) => sexprString(el(x))).join(' ')})`;
    }
    case 'map': {
      const key = dbStringOf(ty.key), val = dbStringOf(ty.value);
      return (v) => `(${Object.entries((v ?? {}) as Rec).map(([k, x]) => `(${sexprString(key(k))} ${sexprString(val(x))})`).join(' ')})`;
    }
    // an option of a ref is stored as a set of 0 or 1 refs
    case 'option': return ty.of.k === 'ref' ? (v) => (v === undefined ? '()' : `(${sexprString(String(v))})`) : (v) => (v === undefined ? '' : String(v));
    // string, ref, enum (datamodel spelling), datetime (stored as Date.to_rfc3339 gives it)
    default: return (v) => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));
  }
}

/** Compiles `expr` for the rows of `cls`. Field names are DB column names (`name__label`); `_ref`
 * is the row's ref (pass it as the second argument). A column the row lacks is looked up only
 * when evaluated, and then fails as Row.find does: DBCache_NotFound ("missing field", col, ""),
 * which exnHelper.ml turns into INTERNAL_ERROR ["missing field"; col; ""]. */
export function compileWhere(expr: string, cls: ClassMeta): (record: Rec, ref?: string) => boolean {
  const value = (tok: Tok, field: boolean): Val => {
    const s = (tok as { s: string }).s;
    if (!field) return () => s;
    if (s === '_ref') return (r, ref) => ref ?? String(r._ref ?? '');
    const f = cls.fieldByDb.get(s);
    if (!f) return () => { throw new XapiError('INTERNAL_ERROR', ['missing field', s, '']); };
    const str = dbStringOf(f.ty), name = f.name;
    return (r) => str(r[name]);
  };
  try {
    return evaluator(parse(tokenize(expr), value));
  } catch (e) {
    // db_filter.ml expr_of_string: Expression_error (x, e) -> INVALID_VALUE [x; Printexc.to_string e]
    if (typeof e === 'string') throw new XapiError('INVALID_VALUE', [expr, e]);
    throw e;
  }
}
