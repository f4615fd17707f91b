// JSON-RPC codec: request parsing as ocaml-rpc's Jsonrpc, and byte-exact v1/v2 envelopes (WIRE.md §2).
import { describe, expect, it } from 'vitest';
import type { Ty } from '../../schema/index.js';
import {
  JsonRpcMalformed, decodeJsonRpc, encodeError, encodeParseError, encodeSuccess,
} from '../../server/transport/jsonrpc-codec.js';
import { Typed } from '../../server/transport/typed.js';

const malformed = (body: string | Buffer, reason: string) => {
  let err: unknown;
  try {
    decodeJsonRpc(body);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(JsonRpcMalformed);
  expect((err as JsonRpcMalformed).reason).toBe(reason);
  expect((err as Error).message).toBe(`Jsonrpc.Malformed_method_request(${JSON.stringify(reason)})`);
};

describe('JSON-RPC requests', () => {
  it('v2, as Xen Orchestra sends it', () => {
    const d = decodeJsonRpc(Buffer.from('{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","secret"],"id":0}'));
    expect(d).toEqual({ version: 2, id: 0, method: 'session.login_with_password', params: ['root', 'secret'], badUtf8: [] });
  });

  it('v1 with a string id', () => {
    const d = decodeJsonRpc('{"method":"VM.get_all","params":["OpaqueRef:dead"],"id":"xyz"}');
    expect(d).toEqual({ version: 1, id: 'xyz', method: 'VM.get_all', params: ['OpaqueRef:dead'], badUtf8: [] });
  });

  it('v2 params: absent or null → [], an object → [object]', () => {
    expect(decodeJsonRpc('{"jsonrpc":"2.0","method":"m","id":1}').params).toEqual([]);
    expect(decodeJsonRpc('{"jsonrpc":"2.0","method":"m","params":null,"id":1}').params).toEqual([]);
    const p = decodeJsonRpc('{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":1}').params;
    expect(p).toEqual([{ a: 1 }]);
  });

  it('objects are null-prototype; "__proto__" is just a key', () => {
    const d = decodeJsonRpc('{"method":"m","params":[{"__proto__":{"polluted":true},"a":[{"constructor":1}]}],"id":1}');
    const o = d.params[0] as Record<string, unknown>;
    expect(Object.getPrototypeOf(o)).toBe(null);
    expect(Object.keys(o)).toEqual(['__proto__', 'a']);
    expect((o['__proto__'] as Record<string, unknown>).polluted).toBe(true);
    expect(Object.getPrototypeOf((o.a as unknown[])[0])).toBe(null);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const copy: Record<string, unknown> = {};
    Object.assign(copy, o);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('malformed requests, with xapi\'s reasons and in its order of checks', () => {
    malformed('[1,2]', 'Invalid request body');
    malformed('"x"', 'Invalid request body');
    malformed('null', 'Invalid request body');
    malformed('{"params":[],"id":1}', 'Required field method is missing');
    malformed('{"method":1,"params":[],"id":1}', "Invalid field 'method' in request body");
    malformed('{"jsonrpc":"1.0","method":"m","params":[],"id":1}', "Invalid field 'jsonrpc' in request body");
    malformed('{"jsonrpc":2,"method":"m","params":[],"id":1}', "Invalid field 'jsonrpc' in request body");
    malformed('{"method":"m","id":1}', 'Required field params is missing');
    malformed('{"method":"m","params":{"a":1},"id":1}', "Invalid field 'params' in request body");
    malformed('{"method":"m","params":null,"id":1}', "Invalid field 'params' in request body");
    malformed('{"jsonrpc":"2.0","method":"m","params":"x","id":1}', "Invalid field 'params' in request body");
    malformed('{"method":"m","params":[]}', "Invalid field 'id' in request body");
    malformed('{"jsonrpc":"2.0","method":"m","params":[],"id":null}', "Invalid field 'id' in request body");
    malformed('{"method":"m","params":[],"id":1.5}', "Invalid field 'id' in request body");
    malformed('{"method":"m","params":[],"id":[1]}', "Invalid field 'id' in request body");
    malformed('', 'Blank input data');
    malformed(' \n', 'Blank input data');
  });

  it('invalid JSON', () => {
    for (const b of ['{', '{"method":"m",}', "{'method':'m'}", '{"method":"m","params":[],"id":1} x']) {
      expect(() => decodeJsonRpc(b)).toThrow(JsonRpcMalformed);
    }
  });

  it('refuses nesting deeper than 64 without overflowing the stack', () => {
    const deep = (n: number) => `{"method":"m","params":[${'['.repeat(n)}${']'.repeat(n)}],"id":1}`;
    expect(() => decodeJsonRpc(deep(100000))).toThrow(/Nesting deeper than 64/);
    expect(() => decodeJsonRpc(deep(64))).not.toThrow(); // the request object and params array do not count
    expect(() => decodeJsonRpc(deep(65))).toThrow(JsonRpcMalformed);
    // brackets inside strings do not count
    const d = decodeJsonRpc(`{"method":"m","params":["${'['.repeat(1000)}\\"{"],"id":1}`);
    expect(d.params[0]).toBe('['.repeat(1000) + '"{');
  });

  it('reports strings holding invalid UTF-8 or lone surrogates', () => {
    const body = Buffer.concat([
      Buffer.from('{"method":"VM.set_name_label","params":["ok","bad'),
      Buffer.from([0xff]),
      Buffer.from('",{"k'),
      Buffer.from([0xc3]),
      Buffer.from('":"v"}],"id":1}'),
    ]);
    const d = decodeJsonRpc(body);
    expect(d.params[0]).toBe('ok');
    expect(d.badUtf8).toEqual(['bad\uFFFD', 'k\uFFFD']);
    expect(decodeJsonRpc('{"method":"m","params":["\\ud800x","\\ud83d\\ude00","\\udc00"],"id":1}').badUtf8).toEqual(['\ud800x', '\udc00']);
    expect(decodeJsonRpc(Buffer.from('{"method":"m","params":["\uFFFD"],"id":1}')).badUtf8).toEqual([]);
  });
});

describe('JSON-RPC responses', () => {
  it('success v1 and v2', () => {
    expect(encodeSuccess(1, 'xyz', 'OpaqueRef:a')).toBe('{"result":"OpaqueRef:a","error":null,"id":"xyz"}');
    expect(encodeSuccess(2, 0, 'OpaqueRef:c90cd28f-37ec-4dbf-88e6-f697ccb28b39'))
      .toBe('{"jsonrpc":"2.0","result":"OpaqueRef:c90cd28f-37ec-4dbf-88e6-f697ccb28b39","id":0}');
    expect(encodeSuccess(2, 7, undefined)).toBe('{"jsonrpc":"2.0","result":"","id":7}');
  });

  it('values: ints as numbers, datetimes as strings, option fields omitted, Typed unwrapped', () => {
    const rec = { memory: 4294967296, ratio: 1.5, on: true, when: '20240420T12:00:00Z', opt: undefined, tags: ['a'], m: {} };
    expect(encodeSuccess(2, 1, rec)).toBe(
      '{"jsonrpc":"2.0","result":{"memory":4294967296,"ratio":1.5,"on":true,"when":"20240420T12:00:00Z","tags":["a"],"m":{}},"id":1}',
    );
    const ty: Ty = { k: 'record', class: 'VM' };
    const ev = { events: [{ id: '1', class: 'vm', snapshot: new Typed(ty, { uuid: 'u', power_state: 'Halted' }) }] };
    expect(encodeSuccess(1, 1, ev)).toBe(
      '{"result":{"events":[{"id":"1","class":"vm","snapshot":{"uuid":"u","power_state":"Halted"}}]},"error":null,"id":1}',
    );
    expect(encodeSuccess(2, 1, Object.assign(Object.create(null), { a: 1 }))).toBe('{"jsonrpc":"2.0","result":{"a":1},"id":1}');
  });

  it('errors v1 and v2', () => {
    expect(encodeError(1, 'xyz', ['SESSION_INVALID', 'OpaqueRef:dead']))
      .toBe('{"result":null,"error":["SESSION_INVALID","OpaqueRef:dead"],"id":"xyz"}');
    expect(encodeError(2, 0, ['VM_BAD_POWER_STATE', 'OpaqueRef:08c3', 'halted', 'running']))
      .toBe('{"jsonrpc":"2.0","error":{"code":1,"message":"VM_BAD_POWER_STATE","data":["OpaqueRef:08c3","halted","running"]},"id":0}');
    expect(encodeError(2, 'a', ['MESSAGE_REMOVED'])).toBe('{"jsonrpc":"2.0","error":{"code":1,"message":"MESSAGE_REMOVED","data":[]},"id":"a"}');
  });

  it('parse errors before dispatch: the raw array in a v2 envelope, id 0', () => {
    expect(encodeParseError(['INVALID_VALUE', 'Invalid UTF-8 string in parameter', 'x\uFFFD']))
      .toBe('{"jsonrpc":"2.0","error":["INVALID_VALUE","Invalid UTF-8 string in parameter","x\uFFFD"],"id":0}');
  });
});
