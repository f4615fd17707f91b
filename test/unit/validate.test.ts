import { describe, expect, it } from 'vitest';
import { classes, messages, type Ty } from '../../schema/index.js';
import { XapiError } from '../../server/dispatch/errors.js';
import {
  compileCreateRecord, compileParam, compileParams, formatG, int64OfString, rpcToString,
} from '../../server/dispatch/validate.js';

const err = (f: () => unknown): string[] => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(XapiError);
    return (e as XapiError).description;
  }
  throw new Error('no error');
};
const c = (ty: Ty, v: unknown) => compileParam(ty)(v);

describe('scalars', () => {
  it('int: integer numbers and OCaml Int64.of_string strings', () => {
    const ty: Ty = { k: 'int' };
    expect(c(ty, 42)).toBe(42);
    expect(c(ty, '4294967296')).toBe(4294967296);
    expect(c(ty, '-7')).toBe(-7);
    expect(c(ty, '+7')).toBe(7);
    expect(c(ty, '0x1F')).toBe(31);
    expect(c(ty, '1_000')).toBe(1000);
    expect(err(() => c(ty, 'abc'))).toEqual(['INTERNAL_ERROR', 'Failure("Int64.of_string")']);
    expect(err(() => c(ty, '9223372036854775808'))).toEqual(['INTERNAL_ERROR', 'Failure("Int64.of_string")']);
    expect(err(() => c(ty, 1.5))).toEqual(['INTERNAL_ERROR', `Failure("Expected int64, got 'F(1.5)'")`]);
    expect(err(() => c(ty, true))).toEqual(['INTERNAL_ERROR', `Failure("Expected int64, got 'B(true)'")`]);
    expect(int64OfString('-9223372036854775808')).toBe(-9223372036854775808);
  });

  it('float', () => {
    const ty: Ty = { k: 'float' };
    expect(c(ty, 0.5)).toBe(0.5);
    expect(c(ty, 3)).toBe(3);
    expect(c(ty, '1e3')).toBe(1000);
    expect(c(ty, '-2.5')).toBe(-2.5);
    expect(err(() => c(ty, 'x'))).toEqual(['INTERNAL_ERROR', 'Failure("float_of_string")']);
    expect(err(() => c(ty, false))).toEqual(['INTERNAL_ERROR', `Failure("Expected float, got 'B(false)'")`]);
  });

  it('bool accepts only booleans', () => {
    expect(c({ k: 'bool' }, true)).toBe(true);
    expect(c({ k: 'bool' }, false)).toBe(false);
    expect(err(() => c({ k: 'bool' }, 'true'))).toEqual(['INTERNAL_ERROR', `Failure("Expected bool, got 'S(true)'")`]);
    expect(err(() => c({ k: 'bool' }, 1))).toEqual(['INTERNAL_ERROR', `Failure("Expected bool, got 'I(1)'")`]);
  });

  it('string and ref accept only strings', () => {
    expect(c({ k: 'string' }, 'abc')).toBe('abc');
    expect(c({ k: 'ref', class: 'VM' }, 'OpaqueRef:x')).toBe('OpaqueRef:x');
    expect(err(() => c({ k: 'string' }, 5))).toEqual(['INTERNAL_ERROR', `Failure("Expected string, got 'I(5)'")`]);
    expect(err(() => c({ k: 'ref', class: 'VM' }, ['a']))).toEqual(['INTERNAL_ERROR', `Failure("Expected string, got '[S(a)]'")`]);
    expect(err(() => c({ k: 'string' }, { a: 1 }))).toEqual(['INTERNAL_ERROR', `Failure("Expected string, got '{a:I(1)}'")`]);
  });

  it('enum: any case in, datamodel spelling out', () => {
    const ty: Ty = { k: 'enum', name: 'vm_power_state' };
    expect(c(ty, 'running')).toBe('Running');
    expect(c(ty, 'RUNNING')).toBe('Running');
    expect(c(ty, 'Halted')).toBe('Halted');
    expect(err(() => c(ty, 'flying'))).toEqual(['INTERNAL_ERROR', 'Failure("Unknown tag/contents")']);
    expect(err(() => c(ty, 1))).toEqual(['INTERNAL_ERROR', 'Failure("Unknown tag/contents")']);
    // bond_mode has a hand-written, case-sensitive unmarshaller in xapi
    expect(c({ k: 'enum', name: 'bond_mode' }, 'balance-slb')).toBe('balance-slb');
    expect(err(() => c({ k: 'enum', name: 'bond_mode' }, 'LACP'))).toEqual(['INTERNAL_ERROR', 'Failure("Unmarshalling error in bond-mode")']);
  });

  it('datetime', () => {
    const ty: Ty = { k: 'datetime' };
    expect(c(ty, '20240420T12:00:00Z')).toBe('20240420T12:00:00Z');
    expect(c(ty, '2024-04-20T12:00:00Z')).toBe('20240420T12:00:00Z');
    expect(c(ty, '2024-04-20T12:00:00')).toBe('20240420T12:00:00Z');
    expect(c(ty, '20240420T12:00:00')).toBe('20240420T12:00:00Z');
    expect(c(ty, '2024-04-20T12:00:00+02:00')).toBe('20240420T10:00:00Z');
    expect(c(ty, '20240101T01:00:00-02:30')).toBe('20240101T03:30:00Z');
    expect(c(ty, '2024-01-01T00:30:00+01:00')).toBe('20231231T23:30:00Z');
    expect(c(ty, '2024-04-20T12:00:00.75Z')).toBe('20240420T12:00:00Z');
    expect(c(ty, new Date(Date.UTC(2024, 3, 20, 12, 0, 0)))).toBe('20240420T12:00:00Z');
    expect(c(ty, '19700101T00:00:00Z')).toBe('19700101T00:00:00Z');
    expect(err(() => c(ty, 'yesterday'))).toEqual(['INTERNAL_ERROR', 'Invalid argument: Clock__Date.of_iso8601: yesterday']);
    expect(err(() => c(ty, '20240230T00:00:00Z'))[0]).toBe('INTERNAL_ERROR');
    expect(err(() => c(ty, 5))).toEqual(['INTERNAL_ERROR', 'Failure("Date.t_of_rpc")']);
  });
});

describe('structures', () => {
  it('sets coerce their elements', () => {
    const ty: Ty = { k: 'set', of: { k: 'enum', name: 'vm_operations' } };
    expect(c(ty, ['START', 'clean_shutdown'])).toEqual(['start', 'clean_shutdown']);
    expect(c({ k: 'set', of: { k: 'int' } }, [1, '2'])).toEqual([1, 2]);
    expect(err(() => c(ty, 'start'))).toEqual(['INTERNAL_ERROR', `Failure("Expecting Rpc.Enum, but found 'S(start)'")`]);
    // the first failing element is reported
    expect(err(() => c({ k: 'set', of: { k: 'int' } }, [1, 'x', true]))).toEqual(['INTERNAL_ERROR', 'Failure("Int64.of_string")']);
  });

  it('maps coerce keys by the key type and values by the value type', () => {
    expect(c({ k: 'map', key: { k: 'string' }, value: { k: 'string' } }, { a: 'b' })).toEqual({ a: 'b' });
    expect(c({ k: 'map', key: { k: 'int' }, value: { k: 'float' } }, { '0': '0.5', '+1': 1 })).toEqual({ '0': 0.5, '1': 1 });
    expect(c({ k: 'map', key: { k: 'enum', name: 'vm_operations' }, value: { k: 'string' } }, { START: 'no' })).toEqual({ start: 'no' });
    expect(c({ k: 'map', key: { k: 'ref', class: 'VIF' }, value: { k: 'string' } }, { 'OpaqueRef:a': '10.0.0.1' })).toEqual({ 'OpaqueRef:a': '10.0.0.1' });
    expect(err(() => c({ k: 'map', key: { k: 'string' }, value: { k: 'string' } }, ['a']))).toEqual(['INTERNAL_ERROR', `Failure("Expecting Rpc.Dict, but found '[S(a)]'")`]);
    expect(err(() => c({ k: 'map', key: { k: 'string' }, value: { k: 'string' } }, { a: 1 }))).toEqual(['INTERNAL_ERROR', `Failure("Expected string, got 'I(1)'")`]);
    expect(err(() => c({ k: 'map', key: { k: 'enum', name: 'vm_operations' }, value: { k: 'string' } }, { fly: 'x' }))).toEqual(['INTERNAL_ERROR', 'Failure("Unknown tag/contents")']);
    expect(err(() => c({ k: 'map', key: { k: 'int' }, value: { k: 'int' } }, { x: 1 }))).toEqual(['INTERNAL_ERROR', 'Failure("Int64.of_string")']);
    expect(err(() => c({ k: 'map', key: { k: 'int' }, value: { k: 'int' } }, { '1e3': 1 }))).toEqual(['INTERNAL_ERROR', 'Failure("Int64.of_string")']);
    expect(err(() => c({ k: 'map', key: { k: 'int' }, value: { k: 'int' } }, 'x'))).toEqual(['INTERNAL_ERROR', 'Failure("Unmarshalling error")']);
  });

  it('nested sets in maps', () => {
    const ty: Ty = { k: 'map', key: { k: 'int' }, value: { k: 'set', of: { k: 'string' } } };
    expect(c(ty, { '1': ['a', 'b'] })).toEqual({ '1': ['a', 'b'] });
    expect(err(() => c(ty, { '1': 'a' }))).toEqual(['INTERNAL_ERROR', `Failure("Expecting Rpc.Enum, but found 'S(a)'")`]);
  });

  it('options allow undefined', () => {
    expect(c({ k: 'option', of: { k: 'int' } }, undefined)).toBeUndefined();
    expect(c({ k: 'option', of: { k: 'int' } }, '3')).toBe(3);
  });

  it('compiles once per Ty', () => {
    const ty: Ty = { k: 'set', of: { k: 'string' } };
    expect(compileParam(ty)).toBe(compileParam(ty));
  });
});

describe('create records', () => {
  const vbd = classes.get('VBD')!;
  const create = compileCreateRecord(vbd, messages.get('VBD.create')!.ctor_fields!);
  const full = {
    VM: 'OpaqueRef:vm', VDI: 'OpaqueRef:vdi', userdevice: '0', bootable: true, mode: 'RW', type: 'Disk',
    empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {},
  };

  it('coerces ctor fields, defaults the optional ones, ignores others', () => {
    const r = create({ ...full, mode: 'rw', type: 'DISK', extra: 1, status_code: 'x' });
    expect(r).toEqual({ ...full, device: '', unpluggable: true, currently_attached: false });
    expect(Object.keys(r)).not.toContain('extra');
    expect(Object.keys(r)).not.toContain('status_code');
  });

  it('missing required field', () => {
    const { userdevice: _, ...rest } = full;
    expect(err(() => create(rest))).toEqual(['INTERNAL_ERROR', 'Server_helpers.Dispatcher_FieldNotFound("userdevice")']);
  });

  it('bad field value and non-struct', () => {
    expect(err(() => create({ ...full, bootable: 'yes' }))).toEqual(['INTERNAL_ERROR', `Failure("Expected bool, got 'S(yes)'")`]);
    expect(err(() => create(['x']))).toEqual(['INTERNAL_ERROR', 'Failure("bad __structure")']);
  });

  it('defaults are deep-copied', () => {
    const net = classes.get('network')!;
    const mk = compileCreateRecord(net, messages.get('network.create')!.ctor_fields!);
    const required = Object.fromEntries(messages.get('network.create')!.ctor_fields!.filter((f) => f.required)
      .map((f) => [f.name, net.field.get(f.name)!.ty.k === 'map' ? {} : net.field.get(f.name)!.ty.k === 'set' ? [] : net.field.get(f.name)!.ty.k === 'int' ? 0 : '']));
    const a = mk(required), b = mk(required);
    for (const k of Object.keys(a)) if (typeof a[k] === 'object') expect(a[k]).not.toBe(b[k]);
  });
});

describe('compileParams', () => {
  it('coerces positional params and fills defaults', () => {
    const login = compileParams(messages.get('session.login_with_password')!);
    expect(login(['root', 'pw'])).toEqual(['root', 'pw', '1.1', '']);
    expect(login(['root', 'pw', '2.0'])).toEqual(['root', 'pw', '2.0', '']);
    const snap = compileParams(messages.get('VM.snapshot')!);
    const a = snap(['OpaqueRef:v', 'n']), b = snap(['OpaqueRef:v', 'n']);
    expect(a).toEqual(['OpaqueRef:v', 'n', []]);
    expect(a[2]).not.toBe(b[2]);
    const start = compileParams(messages.get('VM.start')!);
    expect(start(['OpaqueRef:v', false, true])).toEqual(['OpaqueRef:v', false, true]);
    expect(err(() => start(['OpaqueRef:v', 'false', true]))).toEqual(['INTERNAL_ERROR', `Failure("Expected bool, got 'S(false)'")`]);
  });

  it('create takes the record', () => {
    const f = compileParams(messages.get('VBD.create')!);
    expect(err(() => f([{}]))).toEqual(['INTERNAL_ERROR', 'Server_helpers.Dispatcher_FieldNotFound("VM")']);
  });
});

describe('helpers', () => {
  it('formatG matches C %g', () => {
    expect(formatG(0.5, 6)).toBe('0.5');
    expect(formatG(1e20, 6)).toBe('1e+20');
    expect(formatG(123456789, 6)).toBe('1.23457e+08');
    expect(formatG(0.0001, 6)).toBe('0.0001');
    expect(formatG(0.00001, 6)).toBe('1e-05');
    expect(formatG(1, 18)).toBe('1');
    expect(formatG(0.1, 18)).toBe('0.100000000000000006');
    expect(formatG(1e21, 18)).toBe('1e+21');
  });
  it('rpcToString', () => {
    expect(rpcToString({ a: [1, 'x', null], b: 2.5 })).toBe('{a:[I(1);S(x);N];b:F(2.5)}');
  });
});
