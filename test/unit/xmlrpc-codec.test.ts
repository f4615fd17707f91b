// XML-RPC codec: byte-exact output per WIRE.md §1, and a strict, hostile-input-proof decoder.
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { classes, model, type Ty } from '../../schema/index.js';
import {
  XmlRpcParseError, decodeMethodCall, encodeBare, encodeFailure, encodeSuccess, encodeValue, escapeXml, formatDouble,
} from '../../server/transport/xmlrpc-codec.js';
import { Typed } from '../../server/transport/typed.js';

const require = createRequire(import.meta.url);
const npmSerializer = require('xmlrpc/lib/serializer.js') as { serializeMethodCall(m: string, p: unknown[]): string };
const NpmDeserializer = require('xmlrpc/lib/deserializer.js') as new () => {
  deserializeMethodResponse(s: NodeJS.ReadableStream, cb: (err: unknown, v: unknown) => void): void;
};

const T = {
  string: { k: 'string' } as Ty,
  int: { k: 'int' } as Ty,
  int32: { k: 'int32' } as Ty,
  float: { k: 'float' } as Ty,
  bool: { k: 'bool' } as Ty,
  datetime: { k: 'datetime' } as Ty,
  any: { k: 'any' } as Ty,
  ref: { k: 'ref', class: 'VM' } as Ty,
  enum: { k: 'enum', name: 'vm_power_state' } as Ty,
};
const set = (of: Ty): Ty => ({ k: 'set', of });
const map = (key: Ty, value: Ty): Ty => ({ k: 'map', key, value });
const V = (s: string) => `<value>${s}</value>`;
const call = (params: string, method = 'VM.get_record') =>
  Buffer.from(`<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params}</params></methodCall>`);
const param = (v: string) => `<param><value>${v}</value></param>`;
const decode1 = (v: string): unknown => decodeMethodCall(call(param(v))).params[0];

/** A record of `cls` filled from schema defaults, with a type-appropriate zero where there is none. */
function fakeRecord(cls: string): Record<string, unknown> {
  const zero = (ty: Ty): unknown => {
    switch (ty.k) {
      case 'string': return '';
      case 'int': case 'int32': return 0;
      case 'float': return 0;
      case 'bool': return false;
      case 'datetime': return '19700101T00:00:00Z';
      case 'enum': return model.enums[ty.name][0];
      case 'ref': return 'OpaqueRef:NULL';
      case 'set': return [];
      case 'map': case 'struct': case 'record': return {};
      default: return undefined;
    }
  };
  const r: Record<string, unknown> = {};
  for (const f of classes.get(cls)!.fields) r[f.name] = f.default !== undefined ? f.default : zero(f.ty);
  return r;
}

describe('XML-RPC encoding of each type (WIRE.md §1)', () => {
  it('strings, refs, enums are bare; the empty string is <value></value>', () => {
    expect(encodeValue('abc', T.string)).toBe('<value>abc</value>');
    expect(encodeValue('OpaqueRef:NULL', T.ref)).toBe('<value>OpaqueRef:NULL</value>');
    expect(encodeValue('Halted', T.enum)).toBe('<value>Halted</value>');
    expect(encodeValue('', T.string)).toBe('<value></value>');
    expect(encodeValue(' a\n b ', T.string)).toBe('<value> a\n b </value>');
  });

  it('escapes & < > " and drops control chars but TAB/LF/CR', () => {
    expect(encodeValue('a&b<c>d"e\'f', T.string)).toBe('<value>a&amp;b&lt;c&gt;d&quot;e\'f</value>');
    expect(encodeValue('x\x00\x01\x08\x0b\x0c\x1fy\t\n\rz\x7f', T.string)).toBe('<value>xy\t\n\rz\x7f</value>');
    const plain = 'nothing to escape';
    expect(escapeXml(plain)).toBe(plain);
  });

  it('ints are bare decimal text; only int32 gets <i4>; never <i8>', () => {
    expect(encodeValue(4294967296, T.int)).toBe('<value>4294967296</value>');
    expect(encodeValue(-1, T.int)).toBe('<value>-1</value>');
    expect(encodeValue(0, T.int)).toBe('<value>0</value>');
    expect(encodeValue('9223372036854775807', T.int)).toBe('<value>9223372036854775807</value>');
    expect(encodeValue(1e21, T.int)).toBe('<value>1000000000000000000000</value>');
    expect(encodeValue(12, T.int32)).toBe('<value><i4>12</i4></value>');
    expect(encodeValue(12, T.any)).toBe('<value>12</value>');
  });

  it('floats are <double> with %.16g', () => {
    expect(encodeValue(1.0, T.float)).toBe('<value><double>1</double></value>');
    expect(encodeValue(0.5, T.float)).toBe('<value><double>0.5</double></value>');
    expect(encodeValue(1e21, T.float)).toBe('<value><double>1e+21</double></value>');
    expect(encodeValue(0.1, T.float)).toBe('<value><double>0.1</double></value>');
    expect(encodeValue(1 / 3, T.float)).toBe('<value><double>0.3333333333333333</double></value>');
    expect(encodeValue(0.5, T.any)).toBe('<value><double>0.5</double></value>');
  });

  it('formatDouble matches C printf %.16g, ties to even included', () => {
    const cases: [number, string][] = [
      [1, '1'], [0.5, '0.5'], [-2.5, '-2.5'], [1e21, '1e+21'], [1e16, '1e+16'], [1234567890123456, '1234567890123456'],
      [1e-4, '0.0001'], [1e-5, '1e-05'], [0.000123, '0.000123'], [1e100, '1e+100'], [5e-324, '4.940656458412465e-324'],
      [1.7976931348623157e308, '1.797693134862316e+308'], [1325376000.5, '1325376000.5'], [0, '0'], [-0, '-0'],
      [1000000000000000.5, '1000000000000000'], [1000000000000001.5, '1000000000000002'], [123456789012345680, '1.234567890123457e+17'],
      [NaN, 'nan'], [Infinity, 'inf'], [-Infinity, '-inf'],
    ];
    for (const [x, s] of cases) expect(formatDouble(x), String(x)).toBe(s);
  });

  it('booleans are <boolean>1/0', () => {
    expect(encodeValue(true, T.bool)).toBe('<value><boolean>1</boolean></value>');
    expect(encodeValue(false, T.bool)).toBe('<value><boolean>0</boolean></value>');
    expect(encodeValue(true, T.any)).toBe('<value><boolean>1</boolean></value>');
  });

  it('datetimes are <dateTime.iso8601> in YYYYMMDDTHH:MM:SSZ', () => {
    expect(encodeValue('20240420T12:00:00Z', T.datetime)).toBe('<value><dateTime.iso8601>20240420T12:00:00Z</dateTime.iso8601></value>');
    expect(encodeValue(new Date(Date.UTC(2024, 3, 20, 12, 0, 5)), T.datetime))
      .toBe('<value><dateTime.iso8601>20240420T12:00:05Z</dateTime.iso8601></value>');
  });

  it('sets and maps, nested, with escaped member names', () => {
    expect(encodeValue([], set(T.string))).toBe('<value><array><data></data></array></value>');
    expect(encodeValue(['a', ''], set(T.ref))).toBe('<value><array><data><value>a</value><value></value></data></array></value>');
    expect(encodeValue({}, map(T.string, T.string))).toBe('<value><struct></struct></value>');
    const ty = map(T.string, set(map(T.string, T.int)));
    expect(encodeValue({ 'a<&>': [{ x: 1 }, {}] }, ty)).toBe(
      '<value><struct><member><name>a&lt;&amp;&gt;</name><value><array><data>' +
        '<value><struct><member><name>x</name><value>1</value></member></struct></value>' +
        '<value><struct></struct></value></data></array></value></member></struct></value>',
    );
    expect(encodeValue({ '0': 0.25 }, map(T.int, T.float)))
      .toBe('<value><struct><member><name>0</name><value><double>0.25</double></value></member></struct></value>');
  });

  it('a VM record: every field in schema order, no whitespace, each type as xapi writes it', () => {
    const vm = classes.get('VM')!;
    const r = fakeRecord('VM');
    Object.assign(r, {
      uuid: '5f1b0000-0000-4000-8000-000000000001', memory_static_max: 4294967296, VBDs: ['OpaqueRef:a'],
      other_config: { 'x&y': 'z' }, name_label: 'my <VM>',
    });
    const xml = encodeValue(r, { k: 'record', class: 'VM' });
    expect(xml).not.toMatch(/>\s+</);
    const names = [...xml.matchAll(/<member><name>([^<]*)<\/name>/g)].map((m) => m[1]).filter((n) => n !== 'x&amp;y');
    expect(names).toEqual(vm.fields.map((f) => f.name));
    expect(xml.startsWith('<value><struct><member><name>uuid</name><value>5f1b0000-0000-4000-8000-000000000001</value></member>' +
      '<member><name>allowed_operations</name><value><array><data></data></array></value></member>' +
      '<member><name>current_operations</name><value><struct></struct></value></member>' +
      '<member><name>name_label</name><value>my &lt;VM&gt;</value></member>' +
      '<member><name>name_description</name><value></value></member>' +
      '<member><name>power_state</name><value>Halted</value></member>')).toBe(true);
    for (const m of [
      '<member><name>memory_static_max</name><value>4294967296</value></member>',
      '<member><name>is_a_template</name><value><boolean>0</boolean></value></member>',
      '<member><name>HVM_shadow_multiplier</name><value><double>1</double></value></member>',
      '<member><name>snapshot_time</name><value><dateTime.iso8601>19700101T00:00:00Z</dateTime.iso8601></value></member>',
      '<member><name>VBDs</name><value><array><data><value>OpaqueRef:a</value></data></array></value></member>',
      '<member><name>other_config</name><value><struct><member><name>x&amp;y</name><value>z</value></member></struct></value></member>',
      '<member><name>affinity</name><value>OpaqueRef:NULL</value></member>',
    ]) expect(xml).toContain(m);
    expect(xml.endsWith('<member><name>secureboot_certificates_state</name><value>ok</value></member></struct></value>')).toBe(true);
  });

  it('option fields are omitted when undefined, written as their value when present', () => {
    const ty: Ty = { k: 'record', class: 'sr_stat' };
    const fields = classes.get('sr_stat')!.fields;
    const base = fakeRecord('sr_stat');
    const without = encodeValue(base, ty);
    expect(without).not.toContain('<name>uuid</name>');
    expect([...without.matchAll(/<member>/g)].length).toBe(fields.length - 1);
    const withUuid = encodeValue({ ...base, uuid: 'u-1' }, ty);
    expect(withUuid).toContain('<member><name>uuid</name><value>u-1</value></member>');
    // nested optional record
    const probe = encodeValue({ ...fakeRecord('probe_result'), sr: { ...base, uuid: 'u-2' } }, { k: 'record', class: 'probe_result' });
    expect(probe).toContain('<member><name>sr</name><value><struct>');
    expect(probe).toContain('<member><name>uuid</name><value>u-2</value></member>');
  });

  it('struct types: members in declared order (event.from result)', () => {
    const ty: Ty = { k: 'struct', fields: { events: set(T.any), valid_ref_counts: map(T.string, T.int32), token: T.string } };
    expect(encodeValue({ token: 't', events: [], valid_ref_counts: { VM: 3 } }, ty)).toBe(
      '<value><struct><member><name>events</name><value><array><data></data></array></value></member>' +
        '<member><name>valid_ref_counts</name><value><struct><member><name>VM</name><value><i4>3</i4></value></member></struct></value></member>' +
        '<member><name>token</name><value>t</value></member></struct></value>',
    );
  });

  it('a Typed value is encoded with its own type, anywhere', () => {
    const snap = new Typed(map(T.string, T.float), { a: 1 });
    expect(encodeValue([{ id: '1', snapshot: snap }], set(T.any))).toBe(
      '<value><array><data><value><struct><member><name>id</name><value>1</value></member>' +
        '<member><name>snapshot</name><value><struct><member><name>a</name><value><double>1</double></value></member></struct></value></member>' +
        '</struct></value></data></array></value>',
    );
    expect(encodeValue(new Typed(T.float, 2), T.string)).toBe('<value><double>2</double></value>');
    expect(encodeValue(['x', new Typed(T.int32, 5)], set(T.string))).toBe('<value><array><data><value>x</value><value><i4>5</i4></value></data></array></value>');
    const vm = { ...fakeRecord('VM'), HVM_shadow_multiplier: new Typed(T.string, 'typed') };
    expect(encodeValue(vm, { k: 'record', class: 'VM' })).toContain('<name>HVM_shadow_multiplier</name><value>typed</value>');
  });

  it('any: encoded by JS type', () => {
    expect(encodeValue({ s: 'a', n: 3, f: 1.5, b: false, l: ['', 2], u: undefined }, T.any)).toBe(
      '<value><struct><member><name>s</name><value>a</value></member><member><name>n</name><value>3</value></member>' +
        '<member><name>f</name><value><double>1.5</double></value></member><member><name>b</name><value><boolean>0</boolean></value></member>' +
        '<member><name>l</name><value><array><data><value></value><value>2</value></data></array></value></member></struct></value>',
    );
    expect(encodeValue(undefined, null)).toBe('<value></value>');
  });

  it('responses: success, failure, bare', () => {
    expect(encodeSuccess('OpaqueRef:x', T.ref)).toBe(
      '<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member>' +
        '<member><name>Value</name><value>OpaqueRef:x</value></member></struct></value></param></params></methodResponse>',
    );
    expect(encodeSuccess(undefined, null)).toBe(
      '<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member>' +
        '<member><name>Value</name><value></value></member></struct></value></param></params></methodResponse>',
    );
    expect(encodeFailure(['HANDLE_INVALID', 'VM', 'OpaqueRef:8a0c', ''])).toBe(
      '<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member>' +
        '<member><name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value><value>VM</value>' +
        '<value>OpaqueRef:8a0c</value><value></value></data></array></value></member></struct></value></param></params></methodResponse>',
    );
    expect(encodeBare(['VM.start', 'system.listMethods'], set(T.string))).toBe(
      '<?xml version="1.0"?><methodResponse><params><param><value><array><data><value>VM.start</value>' +
        '<value>system.listMethods</value></data></array></value></param></params></methodResponse>',
    );
  });
});

describe('XML-RPC decoding', () => {
  it('decodes what Python xmlrpc.client sends (tagged strings, newlines between elements)', () => {
    const body =
      "<?xml version='1.0'?>\n<methodCall>\n<methodName>VM.get_record</methodName>\n<params>\n<param>\n" +
      '<value><string>OpaqueRef:abc</string></value>\n</param>\n<param>\n<value><string>a  b\n c&amp;&lt;</string></value>\n</param>\n' +
      '<param>\n<value><struct>\n<member>\n<name>k</name>\n<value><int>1</int></value>\n</member>\n<member>\n<name>__proto__</name>\n' +
      '<value><array><data>\n<value><boolean>1</boolean></value>\n<value><double>1.5</double></value>\n<value><nil/></value></data></array></value>\n' +
      '</member>\n</struct></value>\n</param>\n<param>\n<value><int>1073741824</int></value>\n</param>\n<param>\n' +
      '<value><string></string></value>\n</param>\n</params>\n</methodCall>\n';
    const d = decodeMethodCall(Buffer.from(body));
    expect(d.method).toBe('VM.get_record');
    expect(d.badUtf8).toEqual([]);
    expect(d.params.length).toBe(5);
    expect(d.params[0]).toBe('OpaqueRef:abc');
    expect(d.params[1]).toBe('a  b\n c&<');
    const s = d.params[2] as Record<string, unknown>;
    expect(Object.getPrototypeOf(s)).toBe(null);
    expect(s.k).toBe(1);
    expect(Object.keys(s)).toEqual(['k', '__proto__']);
    expect(s['__proto__']).toEqual([true, 1.5, null]);
    expect(({} as Record<string, unknown>).k).toBeUndefined();
    expect(d.params[3]).toBe(1073741824);
    expect(d.params[4]).toBe('');
  });

  it('decodes the WIRE.md Python example', () => {
    const body =
      "<?xml version='1.0'?>\n<methodCall><methodName>VM.get_record</methodName><params>\n" +
      '<param><value><string>OpaqueRef:3e3b2c1e-0000-4000-8000-000000000001</string></value></param>\n' +
      '<param><value><string>OpaqueRef:8a0c9d7f-0000-4000-8000-000000000002</string></value></param>\n</params></methodCall>';
    expect(decodeMethodCall(Buffer.from(body))).toEqual({
      method: 'VM.get_record',
      params: ['OpaqueRef:3e3b2c1e-0000-4000-8000-000000000001', 'OpaqueRef:8a0c9d7f-0000-4000-8000-000000000002'],
      badUtf8: [],
    });
  });

  it('decodes what the xmlrpc npm package sends', () => {
    const xml = npmSerializer.serializeMethodCall('VM.start', ['OpaqueRef:s', 42, 1.5, true, { a: ['x', ''], b: null }, new Date(0)]);
    const d = decodeMethodCall(Buffer.from(xml));
    expect(d.method).toBe('VM.start');
    expect(d.params).toEqual(['OpaqueRef:s', 42, 1.5, true, { a: ['x', ''], b: null }, '19700101T00:00:00']);
  });

  it('scalars: bare text, empty values, int forms, booleans as xapi reads them, base64', () => {
    expect(decode1('bare  text ')).toBe('bare  text ');
    expect(decodeMethodCall(call('<param><value/></param>')).params).toEqual(['']);
    expect(decode1('')).toBe('');
    expect(decode1('<string/>')).toBe('');
    expect(decode1('   ')).toBe('   ');
    expect(decode1('\n  <int>7</int>\n')).toBe(7);
    expect(decode1('<i4>-7</i4>')).toBe(-7);
    expect(decode1('<i8>9007199254740993</i8>')).toBe('9007199254740993');
    expect(decode1('<boolean>1</boolean>')).toBe(true);
    expect(decode1('<boolean>0</boolean>')).toBe(false);
    expect(decode1('<boolean>true</boolean>')).toBe(false);
    expect(decode1('<double>0.5</double>')).toBe(0.5);
    expect(decode1('<double>1e21</double>')).toBe(1e21);
    expect(decode1('<dateTime.iso8601>20240420T12:00:00Z</dateTime.iso8601>')).toBe('20240420T12:00:00Z');
    expect(decode1(`<base64>${Buffer.from('héllo').toString('base64')}</base64>`)).toBe('héllo');
    expect(decode1('<nil/>')).toBe(null);
    expect(decode1('<array><data></data></array>')).toEqual([]);
    expect(decode1('<array></array>')).toEqual([]);
    expect(decode1('<struct></struct>')).toEqual({});
    expect(decode1('<string><![CDATA[<x>]]></string>')).toBe('<x>');
    expect(decodeMethodCall(call('')).params).toEqual([]);
  });

  it('round trip: our encoding, read back by our decoder and by the xmlrpc npm package', async () => {
    const v = { name: 'a & b', list: ['x', '', 'y z'], flag: true, off: false, ratio: 0.25, nested: { k: ['v'] } };
    const frag = encodeValue(v, T.any);
    expect(decode1(frag.slice('<value>'.length, -'</value>'.length))).toEqual(v);
    const xml = encodeBare(v, T.any);
    const got = await new Promise((resolve, reject) => {
      const s = new PassThrough();
      new NpmDeserializer().deserializeMethodResponse(s, (err, val) => (err ? reject(err) : resolve(val)));
      s.end(xml);
    });
    expect(got).toEqual(v);
  });

  it('reports strings holding invalid UTF-8', () => {
    const body = Buffer.concat([
      Buffer.from('<methodCall><methodName>VM.set_name_label</methodName><params><param><value>ok</value></param><param><value>bad'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('</value></param><param><value><struct><member><name>k</name><value><string>x'),
      Buffer.from([0xc3]),
      Buffer.from('</string></value></member></struct></value></param></params></methodCall>'),
    ]);
    const d = decodeMethodCall(body);
    expect(d.params[0]).toBe('ok');
    expect(d.badUtf8).toEqual(['bad\uFFFD\uFFFD', 'x\uFFFD']);
    // a genuine U+FFFD in valid UTF-8 is not an error
    expect(decodeMethodCall(call(param('\uFFFD'))).badUtf8).toEqual([]);
    // invalid UTF-8 inside base64
    const b64 = Buffer.from([0x61, 0xff]).toString('base64');
    expect(decodeMethodCall(call(param(`<base64>${b64}</base64>`))).badUtf8).toEqual(['a\uFFFD']);
  });

  describe('refuses hostile or malformed input with XmlRpcParseError', () => {
    const bad: [string, string | Buffer][] = [
      ['billion laughs', '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>' +
        '<methodCall><methodName>x</methodName><params><param><value>&lol3;</value></param></params></methodCall>'],
      ['external entity', '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><methodCall><methodName>&e;</methodName><params/></methodCall>'],
      ['plain DOCTYPE', '<!DOCTYPE methodCall><methodCall><methodName>x</methodName><params/></methodCall>'],
      ['undefined entity', '<methodCall><methodName>&foo;</methodName><params/></methodCall>'],
      ['deep arrays (10000)', call(param('<array><data><value>'.repeat(10000) + '</value></data></array>'.repeat(10000))).toString()],
      ['65 nested structs', call(param('<struct><member><name>a</name><value>'.repeat(65) + '</value></member></struct>'.repeat(65))).toString()],
      ['truncated', call(param('<string>abc</string>')).toString().slice(0, 80)],
      ['no params', '<methodCall><methodName>VM.get_all</methodName></methodCall>'],
      ['no methodName', '<methodCall><params/></methodCall>'],
      ['not a methodCall', '<methodResponse><params/></methodResponse>'],
      ['empty body', ''],
      ['not XML', '{"method":"x"}'],
      ['unknown value tag', call(param('<float>1</float>')).toString()],
      ['two values in a param', call('<param><value>a</value><value>b</value></param>').toString()],
      ['text beside an element', call(param('x<int>1</int>')).toString()],
      ['bad int', call(param('<int>12a</int>')).toString()],
      ['int beyond int64', call(param('<int>9223372036854775808</int>')).toString()],
      ['empty int', call(param('<int></int>')).toString()],
      ['bad double', call(param('<double>abc</double>')).toString()],
      ['member without value', call(param('<struct><member><name>a</name></member></struct>')).toString()],
      ['two roots', '<methodCall><methodName>x</methodName><params/></methodCall><methodCall/>'],
    ];
    for (const [name, body] of bad) {
      it(name, () => {
        expect(() => decodeMethodCall(Buffer.from(body))).toThrow(XmlRpcParseError);
      });
    }

    it('accepts 64 nested structs', () => {
      const v = decode1('<struct><member><name>a</name><value>'.repeat(64) + 'x' + '</value></member></struct>'.repeat(64));
      let o = v as Record<string, unknown>;
      for (let i = 0; i < 63; i++) o = o.a as Record<string, unknown>;
      expect(o.a).toBe('x');
    });
  });
});
