// The HTTP transports over real sockets: endpoints, headers, envelopes and protocol-level errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request as httpRequest, Agent } from 'node:http';
import { startServer, type RunningServer } from '../../server/app.js';

const PASSWORD = 'transport-test';
let server: RunningServer;
let base: string;

interface Res { status: number; headers: Headers; text: string }

async function post(path: string, body: string | Uint8Array, contentType: string | null = 'text/xml', url = base): Promise<Res> {
  const headers: Record<string, string> = {};
  if (contentType !== null) headers['content-type'] = contentType;
  const r = await fetch(new URL(path, url), { method: 'POST', body: body as unknown as BodyInit, headers });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

const str = (s: string) => `<value>${s}</value>`;
const xmlCall = (method: string, ...params: string[]) =>
  `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params.map((p) => `<param>${p}</param>`).join('')}</params></methodCall>`;
const jsonCall = (o: object) => JSON.stringify(o);

/** The members of the top-level response struct as a name → raw XML map (enough for these checks). */
const status = (xml: string) => /<name>Status<\/name><value>(\w+)<\/value>/.exec(xml)?.[1];
const values = (xml: string) => [...xml.matchAll(/<value>([^<]*)<\/value>/g)].map((m) => m[1]);

beforeAll(async () => {
  server = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, hosts: 2 });
  base = server.urls[0];
});
afterAll(async () => {
  await server?.close();
});

describe('XML-RPC', () => {
  it('answers with exactly text/xml and the CORS headers', async () => {
    const r = await post('/', xmlCall('session.login_with_password', str('root'), str(PASSWORD)));
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/xml');
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    expect(r.headers.get('access-control-allow-headers')).toBe('X-Requested-With');
    expect(status(r.text)).toBe('Success');
    expect(r.text).toMatch(/<name>Value<\/name><value>OpaqueRef:[0-9a-f-]{36}<\/value>/);
    expect(r.text).not.toMatch(/>\s+</); // no whitespace between elements (XO parses with trim:false)
  });

  it('serves /, /RPC2, /json, /xmlrpc and any other POST path', async () => {
    for (const path of ['/', '/RPC2', '/json', '/xmlrpc', '/anything/else', '/json/x?y=1']) {
      const r = await post(path, xmlCall('session.login_with_password', str('root'), str(PASSWORD)));
      expect(r.headers.get('content-type'), path).toBe('text/xml');
      expect(status(r.text), path).toBe('Success');
    }
  });

  it('accepts any request content-type, or none', async () => {
    const body = xmlCall('system.listMethods');
    for (const ct of ['application/xml', 'text/xml; charset=utf-8', 'application/json', 'application/x-www-form-urlencoded', 'nonsense', null]) {
      const r = await post('/', new TextEncoder().encode(body), ct);
      expect(r.status, String(ct)).toBe(200);
      expect(r.text, String(ct)).toContain('<value>VM.start</value>');
    }
  });

  it('sends system.listMethods bare, without Status/Value', async () => {
    const r = await post('/', xmlCall('system.listMethods'));
    expect(r.text.startsWith('<?xml version="1.0"?><methodResponse><params><param><value><array><data><value>')).toBe(true);
    expect(status(r.text)).toBeUndefined();
    const names = values(r.text);
    expect(names).toContain('VM.get_all_records');
    expect(names.some((n) => n.startsWith('Async.'))).toBe(false);
  });

  it('answers an unknown method with MESSAGE_METHOD_UNKNOWN', async () => {
    const r = await post('/', xmlCall('VM.no_such_thing'));
    expect(status(r.text)).toBe('Failure');
    expect(values(r.text)).toEqual(expect.arrayContaining(['MESSAGE_METHOD_UNKNOWN', 'VM.no_such_thing']));
  });

  it('answers malformed XML with an HTTP 500 HTML page', async () => {
    for (const body of ['garbage', '<methodCall><methodName>x</methodName></methodCall>', '']) {
      const r = await post('/', body);
      expect(r.status, body).toBe(500);
      expect(r.headers.get('content-type')).toBe('text/html');
      expect(r.text).toMatch(/^<html>.*parse error.*<\/html>$/is);
    }
  });

  it('refuses 1000-deep nesting and keeps serving', async () => {
    const deep = '<value><array><data>'.repeat(1000) + '</data></array></value>'.repeat(1000);
    const r = await post('/', xmlCall('system.isAlive:x', deep));
    expect(r.status).toBe(500);
    const next = await post('/', xmlCall('system.listMethods'));
    expect(next.status).toBe(200);
  });

  it('answers bad UTF-8 in a parameter with INVALID_VALUE', async () => {
    const head = Buffer.from('<?xml version="1.0"?><methodCall><methodName>session.login_with_password</methodName><params><param><value>ro');
    const tail = Buffer.from(`t</value></param><param><value>${PASSWORD}</value></param></params></methodCall>`);
    const r = await post('/', Buffer.concat([head, Buffer.from([0xff, 0xfe]), tail]));
    expect(r.status).toBe(200);
    expect(status(r.text)).toBe('Failure');
    expect(values(r.text)).toEqual(expect.arrayContaining(['INVALID_VALUE', 'Invalid UTF-8 string in parameter']));
  });

  it('answers an oversized body with 413', async () => {
    const big = xmlCall('system.isAlive:x', str('x'.repeat(400 * 1024)));
    const r = await post('/', big);
    expect(r.status).toBe(413);
    expect((await post('/', xmlCall('system.listMethods'))).status).toBe(200);
  });
});

describe('JSON-RPC', () => {
  it('answers v2 with exactly application/json and the CORS headers', async () => {
    const r = await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'session.login_with_password', params: ['root', PASSWORD], id: 0 }), 'application/json');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    expect(r.headers.get('access-control-allow-headers')).toBe('X-Requested-With');
    const j = JSON.parse(r.text);
    expect(Object.keys(j)).toEqual(['jsonrpc', 'result', 'id']);
    expect(j.jsonrpc).toBe('2.0');
    expect(j.id).toBe(0);
    expect(j.result).toMatch(/^OpaqueRef:[0-9a-f-]{36}$/);
  });

  it('answers v1 in the v1 envelope', async () => {
    const r = await post('/jsonrpc', jsonCall({ method: 'session.login_with_password', params: ['root', PASSWORD], id: 'xyz' }), null);
    const j = JSON.parse(r.text);
    expect(j.error).toBeNull();
    expect(j.id).toBe('xyz');
    expect(j.result).toMatch(/^OpaqueRef:/);
  });

  it('puts call errors in the envelope (v1 array, v2 object with code 1)', async () => {
    const v1 = JSON.parse((await post('/jsonrpc', jsonCall({ method: 'session.login_with_password', params: ['root', 'wrong'], id: 1 }))).text);
    expect(v1.result).toBeNull();
    expect(v1.error[0]).toBe('SESSION_AUTHENTICATION_FAILED');
    const v2 = JSON.parse((await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'VM.get_all', params: ['OpaqueRef:dead'], id: 2 }))).text);
    expect(v2).toEqual({ jsonrpc: '2.0', error: { code: 1, message: 'SESSION_INVALID', data: ['OpaqueRef:dead'] }, id: 2 });
  });

  it('wraps system.listMethods in the normal envelope', async () => {
    const j = JSON.parse((await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'system.listMethods', params: [], id: 3 }))).text);
    expect(Array.isArray(j.result)).toBe(true);
    expect(j.result).toContain('pool.get_all_records');
  });

  it('answers an unknown method with MESSAGE_METHOD_UNKNOWN', async () => {
    const j = JSON.parse((await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'nope.nope', params: [], id: 4 }))).text);
    expect(j.error).toEqual({ code: 1, message: 'MESSAGE_METHOD_UNKNOWN', data: ['nope.nope'] });
  });

  it('routes every /jsonrpc… path to JSON-RPC, as xapi’s longest-prefix match', async () => {
    const r = await post('/jsonrpc/sub?x=1', jsonCall({ jsonrpc: '2.0', method: 'system.listMethods', params: [], id: 5 }));
    expect(r.headers.get('content-type')).toBe('application/json');
  });

  it('answers a malformed request with an HTTP 500 HTML page', async () => {
    for (const body of ['{', '{"jsonrpc":"2.0","method":"x","params":[]}', '{"params":[],"id":1}', '[1]']) {
      const r = await post('/jsonrpc', body, 'application/json');
      expect(r.status, body).toBe(500);
      expect(r.headers.get('content-type')).toBe('text/html');
      expect(r.text).toContain('Jsonrpc.Malformed_method_request');
    }
  });

  it('refuses 1000-deep nesting and keeps serving', async () => {
    const deep = '['.repeat(1000) + ']'.repeat(1000);
    const r = await post('/jsonrpc', `{"jsonrpc":"2.0","method":"system.listMethods","params":[${deep}],"id":1}`);
    expect(r.status).toBe(500);
    expect((await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'system.listMethods', params: [], id: 6 }))).status).toBe(200);
  });

  it('answers bad UTF-8 in a parameter with INVALID_VALUE', async () => {
    const body = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","method":"session.login_with_password","params":["ro'), Buffer.from([0xc3, 0x28]), Buffer.from(`t","${PASSWORD}"],"id":7}`)]);
    const j = JSON.parse((await post('/jsonrpc', body, 'application/json')).text);
    expect(j.error.message).toBe('INVALID_VALUE');
    expect(j.error.data[0]).toBe('Invalid UTF-8 string in parameter');
  });

  it('answers an oversized body with 413', async () => {
    const r = await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'system.listMethods', params: ['x'.repeat(400 * 1024)], id: 8 }));
    expect(r.status).toBe(413);
  });
});

describe('HTTP', () => {
  it('answers OPTIONS on any path with the CORS preflight headers', async () => {
    for (const path of ['/', '/jsonrpc', '/json', '/some/where']) {
      const r = await fetch(new URL(path, base), { method: 'OPTIONS' });
      expect(r.status, path).toBe(200);
      expect(r.headers.get('access-control-allow-origin')).toBe('*');
      expect(r.headers.get('access-control-allow-headers')).toBe('X-Requested-With');
      expect(r.headers.get('access-control-allow-methods')).toBeTruthy();
    }
    const r = await fetch(new URL('/jsonrpc', base), { method: 'OPTIONS', headers: { 'access-control-request-headers': 'content-type' } });
    expect(r.headers.get('access-control-allow-headers')).toBe('content-type, X-Requested-With');
  });

  it('keeps connections alive across calls, with 32 concurrent clients', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 32 });
    const sockets = new Set<unknown>();
    const call = (i: number) =>
      new Promise<string>((resolve, reject) => {
        const body = jsonCall({ jsonrpc: '2.0', method: 'system.listMethods', params: [], id: i });
        const req = httpRequest(new URL('/jsonrpc', base), { method: 'POST', agent, headers: { 'content-length': Buffer.byteLength(body) } }, (res) => {
          sockets.add(res.socket);
          let data = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (data += c));
          res.on('end', () => resolve(data));
        });
        req.on('error', reject);
        req.end(body);
      });
    for (let round = 0; round < 5; round++) {
      const out = await Promise.all(Array.from({ length: 32 }, (_, i) => call(round * 32 + i)));
      for (const [i, o] of out.entries()) expect(JSON.parse(o).id).toBe(round * 32 + i);
    }
    expect(sockets.size).toBeLessThanOrEqual(32); // 160 calls over at most 32 connections
    agent.destroy();
  });

  it('answers a pool member’s address as that member (HOST_IS_SLAVE to the master)', async () => {
    expect(server.urls[1]).toMatch(/^http:\/\/127\.0\.0\.2:\d+\/$/);
    const j = JSON.parse((await post('/jsonrpc', jsonCall({ jsonrpc: '2.0', method: 'session.login_with_password', params: ['root', PASSWORD], id: 0 }), 'application/json', server.urls[1])).text);
    expect(j.error).toEqual({ code: 1, message: 'HOST_IS_SLAVE', data: ['127.0.0.1'] });
  });

  it('toolstack restart: same pool, sessions gone, listening again', async () => {
    const login = async () =>
      JSON.parse((await post('/jsonrpc', jsonCall({ method: 'session.login_with_password', params: ['root', PASSWORD], id: 0 }))).text).result as string;
    const s = await login();
    const pool = JSON.parse((await post('/jsonrpc', jsonCall({ method: 'pool.get_all', params: [s], id: 1 }))).text).result;
    const emuBefore = server.emu;
    await server.toolstackRestart();
    base = server.urls[0];
    // the restart closed fetch's pooled keep-alive sockets: let the client see those closes first
    await new Promise((r) => setTimeout(r, 50));
    expect(server.emu).toBe(emuBefore); // --memory keeps the same in-memory database
    const stale = JSON.parse((await post('/jsonrpc', jsonCall({ method: 'pool.get_all', params: [s], id: 2 }))).text);
    expect(stale.error).toEqual(['SESSION_INVALID', s]);
    const s2 = await login();
    expect(JSON.parse((await post('/jsonrpc', jsonCall({ method: 'pool.get_all', params: [s2], id: 3 }))).text).result).toEqual(pool);
  });
});
