// Hostile input over real sockets, complementing transport.test.ts: huge and streamed bodies, XML
// entity attacks, very deep nesting, invalid UTF-8, prototype keys, very long method names and a
// flood of concurrent calls. After each, the server still answers and its state is intact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';
import { main } from '../../server/cli.js';

const PASSWORD = 'hostile-test';
let server: RunningServer;
let base: string;
let s: string;
let sentinel: string; // a network whose state every check verifies

interface Res { status: number; contentType: string | null; text: string }

async function post(path: string, body: string | Uint8Array | ReadableStream<Uint8Array>, contentType = 'text/xml'): Promise<Res> {
  const init: RequestInit & { duplex?: 'half' } = { method: 'POST', body: body as unknown as BodyInit, headers: { 'content-type': contentType } };
  if (body instanceof ReadableStream) init.duplex = 'half';
  const r = await fetch(new URL(path, base), init);
  return { status: r.status, contentType: r.headers.get('content-type'), text: await r.text() };
}

const xmlCall = (method: string, ...params: string[]) =>
  `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params.map((p) => `<param>${p}</param>`).join('')}</params></methodCall>`;
const v = (x: string) => `<value>${x}</value>`;

async function json(method: string, params: unknown[]): Promise<any> {
  const r = await post('/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }), 'application/json');
  expect(r.status).toBe(200);
  const body = JSON.parse(r.text);
  if (body.error) return { error: [body.error.message, ...body.error.data] };
  return { result: body.result };
}
async function ok(method: string, ...params: unknown[]): Promise<any> {
  const r = await json(method, params);
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}

/** The server still answers normal calls over both protocols, and the sentinel is unchanged. */
async function assertHealthy(): Promise<void> {
  const s2 = await ok('session.login_with_password', 'root', PASSWORD);
  expect(await ok('network.get_name_label', s2, sentinel)).toBe('sentinel');
  expect(await ok('network.get_other_config', s2, sentinel)).toEqual({ keep: 'me' });
  const x = await post('/', xmlCall('network.get_name_label', v(s2), v(sentinel)));
  expect(x.status).toBe(200);
  expect(x.text).toContain('<member><name>Value</name><value>sentinel</value></member>');
  await ok('session.logout', s2);
  // nothing leaked into Object.prototype of this (the server's) process
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.keys(Object.prototype)).toEqual([]);
}

beforeAll(async () => {
  server = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0 });
  base = server.urls[0];
  s = await ok('session.login_with_password', 'root', PASSWORD);
  sentinel = await ok('network.create', s, { name_label: 'sentinel', other_config: { keep: 'me' } });
});
afterAll(async () => {
  await server?.close();
});

describe('huge bodies', () => {
  it('answers a 20 MB body with 413, then serves normally', async () => {
    const body = xmlCall('system.isAlive:x', v('x'.repeat(20 * 1024 * 1024)));
    const r = await post('/', body);
    expect(r.status).toBe(413);
    expect(r.contentType).toBe('text/html');
    const j = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"system.listMethods","params":["${'y'.repeat(20 * 1024 * 1024)}"],"id":1}`, 'application/json');
    expect(j.status).toBe(413);
    await assertHealthy();
  });

  it('answers an oversized chunked body (no content-length) with 413', async () => {
    const chunk = new TextEncoder().encode('z'.repeat(64 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ < 64) c.enqueue(chunk); // 4 MiB
        else c.close();
      },
    });
    const r = await post('/', stream);
    expect(r.status).toBe(413);
    await assertHealthy();
  });
});

describe('XML entity attacks', () => {
  it('refuses billion laughs (internal entity expansion) at once', async () => {
    const ents = ['<!ENTITY lol "lol">'];
    for (let i = 1; i <= 9; i++) ents.push(`<!ENTITY lol${i} "${`&lol${i === 1 ? '' : i - 1};`.repeat(10)}">`);
    const body = `<?xml version="1.0"?><!DOCTYPE lolz [${ents.join('')}]><methodCall><methodName>system.isAlive:x</methodName><params><param><value>&lol9;</value></param></params></methodCall>`;
    const t0 = performance.now();
    const r = await post('/', body);
    expect(r.status).toBe(500);
    expect(r.contentType).toBe('text/html');
    expect(r.text).not.toContain('lollollol');
    expect(performance.now() - t0).toBeLessThan(5000);
    await assertHealthy();
  });

  it('refuses external entities and reads no file', async () => {
    for (const decl of ['<!ENTITY xxe SYSTEM "file:///etc/passwd">', '<!ENTITY % p SYSTEM "http://127.0.0.1:1/x.dtd"> %p;']) {
      const body = `<?xml version="1.0"?><!DOCTYPE m [${decl}]><methodCall><methodName>system.isAlive:x</methodName><params><param><value>&xxe;</value></param></params></methodCall>`;
      const r = await post('/', body);
      expect(r.status).toBe(500);
      expect(r.text).not.toMatch(/root:|daemon:/);
    }
    // an entity that was never declared
    const r = await post('/', xmlCall('system.isAlive:x', v('&xxe;')));
    expect(r.status).toBe(500);
    // the five predefined entities and character references are fine
    const fine = await post('/', xmlCall('system.isAlive:x', v('&lt;&gt;&amp;&quot;&apos;&#65;&#x42;')));
    expect(fine.status).toBe(200);
    expect(fine.text).toContain('<value>&lt;&gt;&amp;&quot;\'AB</value>');
    await assertHealthy();
  });
});

describe('deep nesting', () => {
  it('refuses 100k-deep JSON with an HTTP 500, without overflowing the stack', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const r = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"system.isAlive:x","params":[${deep}],"id":1}`, 'application/json');
    expect(r.status).toBe(500);
    expect(r.text).toContain('Jsonrpc.Malformed_method_request');
    const objs = '{"a":'.repeat(50_000) + '1' + '}'.repeat(50_000);
    const r2 = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"system.isAlive:x","params":[${objs}],"id":1}`, 'application/json');
    expect(r2.status).toBe(500);
    // unbalanced: only openers
    const r3 = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"x","params":[${'['.repeat(100_000)}`, 'application/json');
    expect(r3.status).toBe(500);
    await assertHealthy();
  });

  it('refuses 6000-deep XML with an HTTP 500', async () => {
    const deep = '<value><array><data>'.repeat(6000) + '</data></array></value>'.repeat(6000); // 258 KB, under the body limit
    const r = await post('/', xmlCall('system.isAlive:x', deep));
    expect(r.status).toBe(500);
    await assertHealthy();
  });

  it('refuses deep XML structs and unclosed nesting, as a real method\'s parameter too, without a stack overflow', async () => {
    const structs = '<value><struct><member><name>a</name>'.repeat(4000) + '<value>x</value>' + '</member></struct></value>'.repeat(4000);
    const unclosed = '<value><array><data>'.repeat(12000);
    for (const deep of [structs, unclosed]) {
      for (const method of ['system.isAlive:x', 'network.add_to_other_config']) {
        const r = await post('/', xmlCall(method, v(s), v(sentinel), v('k'), deep));
        expect(r.status).toBe(500);
        expect(r.text).not.toContain('Maximum call stack');
      }
    }
    const json = '{"a":'.repeat(3000) + '"x"' + '}'.repeat(3000);
    const j = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"network.add_to_other_config","params":["${s}","${sentinel}","k",${json}],"id":1}`, 'application/json');
    expect(j.text).not.toContain('Maximum call stack');
    await assertHealthy();
  });
});

describe('deep where expressions', () => {
  it('evaluates get_all_records_where / get_all_where nested 5000 and 60000 deep, over both protocols', async () => {
    for (const depth of [5000, 60_000]) {
      const nots = 'not '.repeat(depth) + 'field "name__label" = "sentinel"'; // an even count: no change
      const parens = '('.repeat(depth) + 'field "name__label" = "sentinel"' + ')'.repeat(depth);
      for (const expr of [nots, parens]) {
        expect(Object.keys(await ok('network.get_all_records_where', s, expr))).toEqual([sentinel]);
        const x = await post('/', xmlCall('network.get_all_where', v(s), v(expr)));
        expect(x.status).toBe(200);
        expect(x.text).toContain(`<value><array><data><value>${sentinel}</value></data></array></value>`);
      }
      // unbalanced: xapi's parse error, not a stack overflow
      const bad = '('.repeat(depth) + 'true';
      expect((await json('network.get_all_where', [s, bad])).error).toEqual(['INVALID_VALUE', bad, 'Xapi_database__Db_filter_parse.MenhirBasics.Error']);
    }
    await assertHealthy();
  });
});

describe('a non-loopback listen address', () => {
  const start = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    main(['--host', '0.0.0.0', '--port', '0', '--memory', ...argv], env).then(async (r) => {
      if (typeof r === 'number') return r;
      await r.close();
      return 'started';
    });

  it('is refused with the default or an empty password, from the flag or the environment', async () => {
    expect(await start([])).toBe(2);
    expect(await start(['--password', ''])).toBe(2);
    expect(await start(['--password', '  '])).toBe(2);
    expect(await start([], { XAPI_EMU_PASSWORD: '' })).toBe(2);
  });
});

describe('invalid UTF-8', () => {
  const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));

  it('answers INVALID_VALUE ["Invalid UTF-8 string in parameter"; Rpc.to_string of the param]', async () => {
    const body = bytes(
      `<?xml version="1.0"?><methodCall><methodName>network.set_name_label</methodName><params><param><value>${s}</value></param><param><value>${sentinel}</value></param><param><value>ab`,
      [0xff, 0xfe], 'cd</value></param></params></methodCall>',
    );
    const r = await post('/', body);
    expect(r.status).toBe(200);
    const vals = [...r.text.matchAll(/<value>([^<]*)<\/value>/g)].map((m) => m[1]);
    expect(vals.slice(-3)).toEqual(['INVALID_VALUE', 'Invalid UTF-8 string in parameter', 'S(ab\uFFFD\uFFFDcd)']);
    // in a struct value, over JSON-RPC: the whole struct param is printed
    const jbody = bytes(`{"jsonrpc":"2.0","method":"network.set_other_config","params":["${s}","${sentinel}",{"k":"x`, [0xc3, 0x28], '"}],"id":2}');
    const j = JSON.parse((await post('/jsonrpc', jbody, 'application/json')).text);
    expect(j.error).toEqual({ code: 1, message: 'INVALID_VALUE', data: ['Invalid UTF-8 string in parameter', '{k:S(x\uFFFD()}'] });
    // a lone surrogate cannot be UTF-8 either
    const lone = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"network.set_name_label","params":["${s}","${sentinel}","\\ud800"],"id":3}`, 'application/json');
    expect(JSON.parse(lone.text).error.message).toBe('INVALID_VALUE');
    await assertHealthy();
  });

  it('checks UTF-8 before anything else (even a bad session or an unknown method)', async () => {
    const r = await post('/', bytes('<?xml version="1.0"?><methodCall><methodName>no.such</methodName><params><param><value>', [0xc0, 0xaf], '</value></param></params></methodCall>'));
    expect(r.text).toContain('<value>INVALID_VALUE</value><value>Invalid UTF-8 string in parameter</value>');
    await assertHealthy();
  });
});

describe('prototype keys', () => {
  it('stores __proto__ / constructor / toString as plain map keys (XML-RPC struct)', async () => {
    const net = await ok('network.create', s, { name_label: 'proto-xml', other_config: {} });
    const struct = `<value><struct>${['__proto__', 'constructor', 'toString', 'hasOwnProperty'].map((k) => `<member><name>${k}</name><value>${k}-v</value></member>`).join('')}</struct></value>`;
    const r = await post('/', xmlCall('network.set_other_config', v(s), v(net), struct));
    expect(r.text).toContain('<value>Success</value>');
    const oc = await ok('network.get_other_config', s, net);
    expect(Object.keys(oc).sort()).toEqual(['__proto__', 'constructor', 'hasOwnProperty', 'toString']);
    expect(oc.__proto__).toBe('__proto__-v');
    const x = await post('/', xmlCall('network.get_other_config', v(s), v(net)));
    expect(x.text).toContain('<member><name>__proto__</name><value>__proto__-v</value></member>');
    await assertHealthy();
  });

  it('stores them from JSON-RPC objects, and add_to/remove_from treat them as ordinary keys', async () => {
    const net = await ok('network.create', s, { name_label: 'proto-json', other_config: {} });
    const body = `{"jsonrpc":"2.0","method":"network.set_other_config","params":["${s}","${net}",{"__proto__":"p","constructor":"c"}],"id":1}`;
    expect(JSON.parse((await post('/jsonrpc', body, 'application/json')).text).result).toBe('');
    expect(Object.keys(await ok('network.get_other_config', s, net)).sort()).toEqual(['__proto__', 'constructor']);
    // a non-string value for the key is a type error, not a prototype change
    const bad = `{"jsonrpc":"2.0","method":"network.set_other_config","params":["${s}","${net}",{"__proto__":{"polluted":"yes"}}],"id":2}`;
    expect(JSON.parse((await post('/jsonrpc', bad, 'application/json')).text).error.message).toBe('INTERNAL_ERROR');
    expect((await json('network.add_to_other_config', [s, net, '__proto__', 'again'])).error).toEqual(['MAP_DUPLICATE_KEY', 'network', 'other_config', net, '__proto__']);
    await ok('network.remove_from_other_config', s, net, '__proto__');
    await ok('network.remove_from_other_config', s, net, 'hasOwnProperty'); // absent: a no-op
    await ok('network.add_to_other_config', s, net, 'polluted', 'yes');
    expect(await ok('network.get_other_config', s, net)).toEqual({ constructor: 'c', polluted: 'yes' });
    // the keys survive in a create struct and in events
    const token = (await ok('event.from', s, ['network'], '', 0)).token;
    await ok('network.add_to_other_config', s, net, '__proto__', 'ev');
    const ev = await ok('event.from', s, [`network/${net}`], token, 5.0);
    expect(Object.keys(ev.events[0].snapshot.other_config)).toContain('__proto__');
    await assertHealthy();
  });

  it('ignores __proto__ at the top of a JSON-RPC request', async () => {
    const r = await post('/jsonrpc', '{"__proto__":{"method":"session.logout","params":[],"id":1}}', 'application/json');
    expect(r.status).toBe(500);
    expect(r.text).toContain('Jsonrpc.Malformed_method_request');
    await assertHealthy();
  });
});

describe('long method names and many params', () => {
  it('answers a 200 KB method name with MESSAGE_METHOD_UNKNOWN (and 1 MB with 413)', async () => {
    const name = 'VM.' + 'a'.repeat(200 * 1024);
    const r = await post('/', xmlCall(name));
    expect(r.status).toBe(200);
    expect(r.text).toContain(`<value>MESSAGE_METHOD_UNKNOWN</value><value>${name}</value>`);
    const a = await post('/', xmlCall('Async.' + name, v(s)));
    expect(a.text).toContain(`<value>MESSAGE_METHOD_UNKNOWN</value><value>${name}</value>`);
    const u = 'x_'.repeat(50_000); // many "_" splits for the alias lookup
    const t0 = performance.now();
    expect((await json(u, [s])).error).toEqual(['MESSAGE_METHOD_UNKNOWN', u]);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect((await post('/', xmlCall('VM.' + 'b'.repeat(1024 * 1024)))).status).toBe(413);
    await assertHealthy();
  });

  it('answers 9000 params with MESSAGE_PARAMETER_COUNT_MISMATCH', async () => {
    const params = Array.from({ length: 9000 }, () => '<value/>');
    const r = await post('/', xmlCall('VM.get_all', v(s), ...params));
    expect(r.text).toContain('<value>MESSAGE_PARAMETER_COUNT_MISMATCH</value><value>VM.get_all</value><value>0</value><value>9000</value>');
    await assertHealthy();
  });
});

describe('a flood of concurrent calls', () => {
  it('serves 200 concurrent calls (reads and writes, both protocols) and loses no write', async () => {
    const net = await ok('network.create', s, { name_label: 'flood', other_config: {} });
    const calls = Array.from({ length: 200 }, (_, i) => {
      switch (i % 4) {
        case 0: return json('network.add_to_other_config', [s, net, `k${i}`, `v${i}`]);
        case 1: return post('/', xmlCall('network.add_to_other_config', v(s), v(net), v(`k${i}`), v(`v${i}`))).then((r) => ({ xml: r }));
        case 2: return json('VM.get_all_records', [s]);
        default: return json('session.login_with_password', ['root', PASSWORD]);
      }
    });
    const out = await Promise.all(calls);
    out.forEach((r: any, i) => {
      if (i % 4 === 1) expect(r.xml.text, String(i)).toContain('<value>Success</value>');
      else expect(r.error, String(i)).toBeUndefined();
    });
    const oc = await ok('network.get_other_config', s, net);
    const want = Object.fromEntries(Array.from({ length: 200 }, (_, i) => i).filter((i) => i % 4 < 2).map((i) => [`k${i}`, `v${i}`]));
    expect(oc).toEqual(want);
    for (const r of out.filter((_, i) => i % 4 === 3) as any[]) await ok('session.logout', r.result);
    await assertHealthy();
  });

  it('keeps 50 long polls waiting while other calls are served, and wakes them all', async () => {
    const net = await ok('network.create', s, { name_label: 'pollers', other_config: {} });
    const token = (await ok('event.from', s, ['network'], '', 0)).token;
    const polls = Array.from({ length: 50 }, () => ok('event.from', s, [`network/${net}`], token, 30.0));
    for (let i = 0; i < 20; i++) expect(await ok('pool.get_all', s)).toHaveLength(1);
    await ok('network.set_name_label', s, net, 'woken');
    for (const r of await Promise.all(polls)) expect(r.events.map((e: any) => [e.operation, e.snapshot.name_label])).toEqual([['mod', 'woken']]);
    await assertHealthy();
  });
});
