// The XML-RPC decoder's fast path (decodeCommonShape) against the general saxes-based decoder: on
// every document it accepts, the same call; on everything else it must step aside (undefined), so
// that decodeMethodCall gives the sax result or error. Documents: hand-written edge cases, then
// seeded random calls in many spellings, and random damage done to them.
import { describe, expect, it } from 'vitest';
import { decodeCommonShape, decodeMethodCall, decodeWithSax, XmlRpcParseError, type DecodedCall } from '../../server/transport/xmlrpc-codec.js';

/** A canonical text of a decoded value: prototypes, -0 and NaN included. */
function canon(v: unknown): string {
  if (typeof v === 'number') return Object.is(v, -0) ? 'n:-0' : `n:${v}`;
  if (typeof v === 'string') return `s:${JSON.stringify(v)}`;
  if (v === null || typeof v !== 'object') return `${typeof v}:${String(v)}`;
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  const proto = Object.getPrototypeOf(v) === null ? 'null' : 'object';
  return `{${proto}|${Object.keys(v).map((k) => `${JSON.stringify(k)}=${canon((v as Record<string, unknown>)[k])}`).join(',')}}`;
}
const canonCall = (c: DecodedCall) => `${JSON.stringify(c.method)}(${c.params.map(canon).join(',')})|${JSON.stringify(c.badUtf8)}`;

type Outcome = { ok: true; text: string } | { ok: false };
function sax(doc: string): Outcome {
  try {
    return { ok: true, text: canonCall(decodeWithSax(doc)) };
  } catch (e) {
    if (!(e instanceof XmlRpcParseError)) throw e;
    return { ok: false };
  }
}

/** Checks one document; returns whether the fast path took it. */
function check(doc: string): boolean {
  const fast = decodeCommonShape(doc);
  const slow = sax(doc);
  if (fast === undefined) return false;
  expect(slow.ok, `fast path accepted a document sax refuses: ${JSON.stringify(doc)}`).toBe(true);
  expect(canonCall(fast), JSON.stringify(doc)).toBe((slow as { text: string }).text);
  return true;
}

const wrap = (params: string, decl = '<?xml version="1.0"?>', method = 'VM.get_record') =>
  `${decl}<methodCall><methodName>${method}</methodName><params>${params}</params></methodCall>`;
const p1 = (v: string) => wrap(`<param><value>${v}</value></param>`);

describe('XML-RPC fast-path decoder', () => {
  it('takes the calls clients send, with the same result as the sax decoder', () => {
    const python =
      "<?xml version='1.0'?>\n<methodCall>\n<methodName>VM.get_record</methodName>\n<params>\n<param>\n" +
      '<value><string>OpaqueRef:abc</string></value>\n</param>\n<param>\n<value><string>a  b\n c&amp;&lt;</string></value>\n</param>\n' +
      '<param>\n<value><struct>\n<member>\n<name>k</name>\n<value><int>1</int></value>\n</member>\n<member>\n<name>__proto__</name>\n' +
      '<value><array><data>\n<value><boolean>1</boolean></value>\n<value><double>1.5</double></value>\n<value><nil/></value></data></array></value>\n' +
      '</member>\n</struct></value>\n</param>\n<param>\n<value><int>1073741824</int></value>\n</param>\n<param>\n' +
      '<value><string></string></value>\n</param>\n</params>\n</methodCall>\n';
    const taken = [
      python,
      python.replace(/>\n/g, '>\r\n'), // CRs between elements only
      wrap('<param><value><string>OpaqueRef:s</string></value></param><param><value><string>OpaqueRef:vm</string></value></param>'),
      wrap('<param><value>OpaqueRef:s</value></param>', ''),
      wrap('', '<?xml version="1.0" encoding="UTF-8"?>'),
      wrap('<param><value>x</value></param>', "<?xml version='1.0' encoding='utf-8'?>"),
      p1(''), p1('   '), p1(' bare\ttext\n'), p1('<string/>'), p1('<nil/>'), p1('<string>&quot;&apos;&gt;&lt;&amp;</string>'),
      p1('<int>-0</int>'), p1('<int> 12 </int>'), p1('<i4>+7</i4>'), p1('<i8>9007199254740993</i8>'), p1('<int>007</int>'),
      p1('<int>-9223372036854775808</int>'), p1('<boolean>true</boolean>'), p1('<boolean> 1</boolean>'), p1('<boolean>1</boolean>'),
      p1('<double>1e21</double>'), p1('<double> NaN </double>'), p1('<double>-inf</double>'), p1('<double>-0</double>'),
      p1('<dateTime.iso8601>20240420T12:00:00Z</dateTime.iso8601>'), p1(`<base64>${Buffer.from('héllo').toString('base64')}</base64>`),
      p1(`<base64>${Buffer.from([0x61, 0xff]).toString('base64')}</base64>`),
      p1('<array></array>'), p1('<array> </array>'), p1('<array><data></data></array>'), p1('<struct></struct>'),
      p1('<struct><member><name>a</name><value>1</value></member><member><name>a</name><value>2</value></member></struct>'),
      p1('<struct><member><name></name><value/></member></struct>'.replace('<value/>', '<value></value>')),
      p1('\n <struct> <member> <name>constructor</name> <value> <array> <data> <value>x</value> </data> </array> </value> </member> </struct> \n'),
      p1('<struct><member><name>a</name><value>'.repeat(64) + 'x' + '</value></member></struct>'.repeat(64)),
      p1('é ü \u0085 \u00a0 \u20ac \ufffd'),
      wrap('', '', ''),
      wrap('', '', 'a&amp;b'),
      wrap('') + '\n\n',
    ];
    for (const doc of taken) expect(check(doc), JSON.stringify(doc)).toBe(true);
  });

  it('steps aside for everything else; decodeMethodCall then answers as the sax decoder', () => {
    const aside = [
      '', '   ', '{"method":"x"}', '<methodResponse><params/></methodResponse>',
      '<!DOCTYPE methodCall><methodCall><methodName>x</methodName><params/></methodCall>',
      '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><methodCall><methodName>&e;</methodName><params/></methodCall>',
      '<methodCall><methodName>&foo;</methodName><params></params></methodCall>',
      '<methodCall><methodName>&#65;</methodName><params></params></methodCall>',
      '<methodCall><methodName>x</methodName><params/></methodCall>',
      '<methodCall><methodName>x</methodName></methodCall>',
      '<methodCall><params></params></methodCall>',
      '<methodCall><methodName>x</methodName><params></params></methodCall><methodCall/>',
      '<methodCall><methodName>x</methodName><params></params></methodCall>x',
      ' <?xml version="1.0"?><methodCall><methodName>x</methodName><params></params></methodCall>',
      '<?xml version="1.1"?><methodCall><methodName>x</methodName><params></params></methodCall>',
      '<?xml version="1.0" standalone="yes"?><methodCall><methodName>x</methodName><params></params></methodCall>',
      '<methodCall ><methodName>x</methodName><params></params></methodCall>',
      '<methodCall><!-- c --><methodName>x</methodName><params></params></methodCall>',
      '<methodCall><?pi x?><methodName>x</methodName><params></params></methodCall>',
      '<methodCall><methodName a="1">x</methodName><params></params></methodCall>',
      p1('<string><![CDATA[<x>]]></string>'), p1('a\rb'), p1('a\r\nb'), p1('x]]>y'), p1('a>b'), p1('\u0001'), p1('\ud83d\ude00'),
      p1('<float>1</float>'), p1('<int>12a</int>'), p1('<int></int>'), p1('<int>9223372036854775808</int>'), p1('<double>abc</double>'),
      p1('x<int>1</int>'), p1('<int>1</int>x'), p1('<int>1</int><int>2</int>'), p1('<value>a</value>'), p1('<array/>'),
      p1('<struct/>'), p1('<data></data>'), p1('<array><data/></array>'), p1('<nil></nil>'), p1('<string>a<b/>c</string>'),
      p1('<struct><member><name>a</name></member></struct>'), p1('<struct><member><value>1</value><name>a</name></member></struct>'),
      p1('<struct><member><name>a</name><value>1</value><value>2</value></member></struct>'), p1('<struct>x</struct>'),
      p1('<struct><member><name>a</name><value>'.repeat(65) + '</value></member></struct>'.repeat(65)),
      p1('<array><data><value>'.repeat(10000) + '</value></data></array>'.repeat(10000)),
      wrap('<param><value>a</value><value>b</value></param>'), wrap('<param></param>'), wrap('<param/>'), wrap('x'),
      p1('<string>abc</string>').slice(0, 80),
    ];
    for (const doc of aside) {
      expect(decodeCommonShape(doc), JSON.stringify(doc)).toBeUndefined();
      const slow = sax(doc);
      let viaEntry: Outcome;
      try {
        viaEntry = { ok: true, text: canonCall(decodeMethodCall(Buffer.from(doc))) };
      } catch (e) {
        expect(e).toBeInstanceOf(XmlRpcParseError);
        viaEntry = { ok: false };
      }
      expect(viaEntry, JSON.stringify(doc)).toEqual(slow);
    }
  });

  it('agrees with the sax decoder on seeded random calls, spelled in many ways, and on damaged copies of them', () => {
    let seed = 0x2545f491;
    const rnd = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)];
    const blanks = ['', '', '', ' ', '\n', '\t', '\r\n', '\n  '];
    const chars = ['a', 'Z', '0', ' ', '\t', '\n', '&amp;', '&lt;', '&gt;', '&quot;', '&apos;', 'é', '€', '\ufffd', '_', '.', ':', '-', '+'];
    const rawChars = ['\r', '>', '&', '&#38;', '&x;', '\u0001', '\ud83d\ude00', ']]>', '<![CDATA[c]]>', '<!--c-->'];
    const text = (odd: boolean) => {
      let s = '';
      for (let i = rnd(6); i > 0; i--) s += odd && rnd(12) === 0 ? pick(rawChars) : pick(chars);
      return s;
    };
    const B = () => pick(blanks);
    const value = (depth: number, odd: boolean): string => {
      const inner = (): string => {
        switch (rnd(depth > 3 ? 11 : 14)) {
          case 0: return text(odd);
          case 1: return `<string>${text(odd)}</string>`;
          case 2: return pick(['<string/>', '<nil/>', '<nil></nil>', '']);
          case 3: return `<int>${pick(['0', '-1', '42', ' 7 ', '+3', '9007199254740993', '-0', '1e3', '', '0x10'])}</int>`;
          case 4: return `<${pick(['i4', 'i8'])}>${pick(['1', '-2147483648', '9223372036854775807', '9223372036854775808'])}</${pick(['i4', 'i8'])}>`;
          case 5: return `<boolean>${pick(['0', '1', 'true', ' 1', ''])}</boolean>`;
          case 6: return `<double>${pick(['0.5', '-0', '1e21', 'nan', 'inf', '-Infinity', 'x', '', ' 2 '])}</double>`;
          case 7: return `<dateTime.iso8601>${pick(['20240420T12:00:00Z', '', 'x'])}</dateTime.iso8601>`;
          case 8: return `<base64>${pick(['aGk=', 'Yf8=', '', '!!'])}</base64>`;
          case 9: return B() + `<string>${text(odd)}</string>` + B();
          case 10: return pick(['<float>1</float>', '<value>x</value>', 'x<int>1</int>', '<int>1</int>y']);
          case 11:
          case 12: {
            let s = `<array>${B()}<data>`;
            for (let i = rnd(4); i > 0; i--) s += B() + value(depth + 1, odd);
            return s + `${B()}</data>${B()}</array>`;
          }
          default: {
            let s = '<struct>';
            for (let i = rnd(4); i > 0; i--) s += `${B()}<member>${B()}<name>${text(odd)}</name>${B()}${value(depth + 1, odd)}${B()}</member>`;
            return s + B() + '</struct>';
          }
        }
      };
      return rnd(20) === 0 ? '<value/>' : `<value>${inner()}</value>`;
    };
    const document = (odd: boolean): string => {
      const decl = pick(['', '<?xml version="1.0"?>', "<?xml version='1.0'?>", '<?xml version="1.0" encoding="UTF-8"?>', ...(odd ? ['<?xml version="1.0" ?>', ' '] : [])]);
      let ps = '';
      for (let i = rnd(4); i > 0; i--) ps += `${B()}<param>${B()}${value(0, odd)}${B()}</param>`;
      return `${decl}${B()}<methodCall>${B()}<methodName>${text(odd)}</methodName>${B()}<params>${ps}${B()}</params>${B()}</methodCall>${B()}`;
    };
    const damage = (d: string): string => {
      const i = rnd(d.length + 1);
      switch (rnd(4)) {
        case 0: return d.slice(0, i);
        case 1: return d.slice(0, i) + d.slice(i + 1 + rnd(8));
        case 2: return d.slice(0, i) + pick(['<', '>', '/', '&', '"', '<value>', '</value>', '<data>', '</struct>', ' a="1"', '\r', '\u0000', 'x']) + d.slice(i);
        default: {
          const j = rnd(d.length + 1);
          return d.slice(0, Math.min(i, j)) + d.slice(Math.max(i, j)) + d.slice(Math.min(i, j), Math.max(i, j));
        }
      }
    };
    let taken = 0;
    let total = 0;
    for (let n = 0; n < 4000; n++) {
      const doc = document(n % 3 === 0);
      total++;
      if (check(doc)) taken++;
      for (let k = 0; k < 3; k++) {
        total++;
        if (check(damage(doc))) taken++;
      }
    }
    // the fast path is not a no-op: a good share of the clean documents go through it
    expect(taken).toBeGreaterThan(total / 10);
  });
});
