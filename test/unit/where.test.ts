import { describe, expect, it } from 'vitest';
import { classes } from '../../schema/index.js';
import { XapiError } from '../../server/dispatch/errors.js';
import { compileWhere, dbStringOf } from '../../storage/where.js';

const VM = classes.get('VM')!;
const vm = (over: Record<string, unknown> = {}) => ({
  name_label: 'web', power_state: 'Running', is_a_template: false, memory_static_max: 4294967296,
  HVM_shadow_multiplier: 1, VCPUs_max: 2, other_config: { a: 'b' }, tags: [], ...over,
});
const w = (expr: string, rec = vm(), ref?: string) => compileWhere(expr, VM)(rec, ref);
const err = (f: () => unknown): string[] => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(XapiError);
    return (e as XapiError).description;
  }
  throw new Error('no error');
};
const PARSE = 'Xapi_database__Db_filter_parse.MenhirBasics.Error';

describe('get_all_records_where expressions', () => {
  it('WIRE.md example', () => {
    const e = 'field "power_state" = "Running" and not (field "is_a_template" = "true")';
    expect(w(e)).toBe(true);
    expect(w(e, vm({ is_a_template: true }))).toBe(false);
    expect(w(e, vm({ power_state: 'Halted' }))).toBe(false);
  });

  it('compares DB string forms', () => {
    expect(w('field "name__label" = "web"')).toBe(true);
    expect(w('field "name__label" = "Web"')).toBe(false);
    expect(w('field "memory__static_max" = "4294967296"')).toBe(true);
    expect(w('field "VCPUs__max" = "2"')).toBe(true);
    expect(w('field "is_a_template" = "false"')).toBe(true);
    expect(w('field "HVM__shadow_multiplier" = "1"')).toBe(true);
    expect(w('field "power_state" = "running"')).toBe(false); // enums as spelled
    expect(w(`field "other_config" = "(('a' 'b'))"`)).toBe(true);
    expect(w('field "tags" = "()"')).toBe(true);
    expect(w('field "name__label" = field "name__label"')).toBe(true);
  });

  it('literals on both sides, true and false', () => {
    expect(w('"a" = "a"')).toBe(true);
    expect(w('"a" = "b"')).toBe(false);
    expect(w('"" = ""')).toBe(true);
    expect(w('true')).toBe(true);
    expect(w('false')).toBe(false);
    expect(w('"web" = field "name__label"')).toBe(true);
  });

  it('and/or bind equally and associate left; not binds loosest', () => {
    // (true or false) and false
    expect(w('true or false and false')).toBe(false);
    // (false and true) or true
    expect(w('false and true or true')).toBe(true);
    // not (true and false)
    expect(w('not true and false')).toBe(true);
    // not (false or true)
    expect(w('not false or true')).toBe(false);
    // true and not (false or true)
    expect(w('true and not false or true')).toBe(false);
    expect(w('(not true) and false')).toBe(false);
    expect(w('(not false) or true')).toBe(true);
    expect(w('not not true')).toBe(true);
    expect(w('((true))')).toBe(true);
  });

  it('lexing: blanks, keywords without word boundaries, no escapes', () => {
    expect(w('\tfield\n"name__label"="web"')).toBe(true);
    expect(w('nottrue')).toBe(false);
    expect(w('trueandfalse')).toBe(false);
    expect(w('"a\\" = "a\\"')).toBe(true);
    expect(w('"with space" = "with space"')).toBe(true);
  });

  it('parse errors are INVALID_VALUE [expr; exn]', () => {
    for (const e of ['', 'field "x"', '"a" = "b" = "c"', 'true = "x"', '(true', 'true)', 'field = "a"', 'not', '"a" "b"']) {
      expect(err(() => compileWhere(e, VM))).toEqual(['INVALID_VALUE', e, PARSE]);
    }
    for (const e of ['"a" = "b', 'x = "y"', 'true\r', '"a" <> "b"', 'TRUE']) {
      expect(err(() => compileWhere(e, VM))).toEqual(['INVALID_VALUE', e, 'Failure("lexing: empty token")']);
    }
    // the parse error comes first when the bad character is further on
    expect(err(() => compileWhere('"a" "b" !', VM))).toEqual(['INVALID_VALUE', '"a" "b" !', PARSE]);
  });

  it('an unknown column fails only when evaluated', () => {
    const p = compileWhere('field "nope" = "x"', VM);
    expect(err(() => p(vm()))).toEqual(['INTERNAL_ERROR', 'missing field', 'nope', '']);
    expect(compileWhere('false and field "nope" = "x"', VM)(vm())).toBe(false);
    // wire names are not DB columns
    expect(err(() => w('field "name_label" = "web"'))).toEqual(['INTERNAL_ERROR', 'missing field', 'name_label', '']);
    // the right-hand side is looked up first, as OCaml evaluates arguments right to left
    expect(err(() => w('field "a" = field "b"'))).toEqual(['INTERNAL_ERROR', 'missing field', 'b', '']);
  });

  it('nesting deeper than the call stack: parsed and evaluated without recursion', () => {
    const n = 20_000;
    expect(w('not '.repeat(5000) + 'true')).toBe(true);
    expect(w('not '.repeat(n + 1) + 'true')).toBe(false);
    expect(w('('.repeat(n) + 'field "name__label" = "web"' + ')'.repeat(n))).toBe(true);
    expect(w('not ('.repeat(n + 1) + 'false' + ')'.repeat(n + 1))).toBe(true);
    // right-deep and left-deep chains
    expect(w('true and ('.repeat(n) + 'false' + ')'.repeat(n))).toBe(false);
    expect(w('true and ('.repeat(n) + 'true' + ')'.repeat(n))).toBe(true);
    expect(w('false or '.repeat(n) + 'field "power_state" = "Running"')).toBe(true);
    expect(w('true and '.repeat(n) + 'field "power_state" = "Halted"')).toBe(false);
    // still short-circuits: the missing field deep on the right is never looked up
    expect(w('false and ('.repeat(n) + 'field "nope" = "x"' + ')'.repeat(n))).toBe(false);
    expect(err(() => w('true and ('.repeat(n) + 'field "nope" = "x"' + ')'.repeat(n)))).toEqual(['INTERNAL_ERROR', 'missing field', 'nope', '']);
    // unbalanced: a parse error, not a stack overflow
    for (const e of ['('.repeat(n), 'not '.repeat(n), '('.repeat(n) + 'true' + ')'.repeat(n - 1), 'true' + ')'.repeat(n)]) {
      expect(err(() => compileWhere(e, VM))).toEqual(['INVALID_VALUE', e, PARSE]);
    }
  });

  it('_ref is the row reference', () => {
    expect(w('field "_ref" = "OpaqueRef:1"', vm(), 'OpaqueRef:1')).toBe(true);
  });
});

describe('DB string forms', () => {
  it('floats, sets and maps', () => {
    expect(dbStringOf({ k: 'float' })(0.1)).toBe('0.100000000000000006');
    expect(dbStringOf({ k: 'float' })(1)).toBe('1');
    expect(dbStringOf({ k: 'set', of: { k: 'string' } })(["it's", 'a\\b'])).toBe("('it\\'s' 'a\\\\b')");
    expect(dbStringOf({ k: 'map', key: { k: 'int' }, value: { k: 'set', of: { k: 'string' } } })({ '0': ['x'] }))
      .toBe("(('0' '(\\'x\\')'))");
    expect(dbStringOf({ k: 'bool' })(true)).toBe('true');
    expect(dbStringOf({ k: 'datetime' })('19700101T00:00:00Z')).toBe('19700101T00:00:00Z');
  });
});
