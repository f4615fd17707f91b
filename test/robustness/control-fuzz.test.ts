// Hostile input to the control API: seeded random requests on every route of the contract (the
// route's own keys with values of the wrong type, out of range, deep, huge; paths with traversal,
// escapes and junk; bodies that are not JSON or not objects; wrong methods). Every answer must be
// a JSON error with a 4xx status or a success, never a 5xx or a cut connection, and the pool must
// still answer XAPI afterwards.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { startEmulator, contract, type EmulatorHandle } from '../../server/index.js';
import type { Route } from '../../server/control/contract/route.js';
import { connect } from '../integration/helpers/jsonrpc.js';
import { Rng } from '../../robustness/lib.js';

let pool: EmulatorHandle;
beforeAll(async () => {
  pool = await startEmulator({ seed: 'control-fuzz' });
});
afterAll(() => pool?.stop());

it('2,000 hostile control requests: only JSON answers below 500, and XAPI still answers', async () => {
  const seeded = new Rng(20261203);
  const r = () => seeded.next();
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const routes = Object.entries(contract).flatMap(([area, ops]) =>
    Object.entries(ops as Record<string, Route>)
      // a toolstack restart closes the listeners: not a request to repeat in a loop
      .filter(([op]) => !(area === 'faults' && op === 'toolstackRestart'))
      .map(([op, route]) => {
        const schema = z.toJSONSchema(route.input, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, unknown> };
        return { name: `${area}.${op}`, route, keys: Object.keys(schema.properties ?? {}) };
      }),
  );
  const words = ['', 'a', 'vm1', '..', '../../etc/passwd', '%2e%2e%2f', 'OpaqueRef:NULL', 'OpaqueRef:nope', 'x'.repeat(5000), '名前', 'null', '-1', 'Running', 'agent', 'VM.*', '*', '/import*', 'initial', '.hidden', 'a/b'];
  const value = (depth = 0): unknown => {
    switch (Math.floor(r() * (depth > 3 ? 6 : 9))) {
      case 0: return pick(words);
      case 1: return Math.floor(r() * 2 ** 40) * (r() < 0.3 ? -1 : 1);
      case 2: return pick([0, 1, -1, 0.5, 1e308, -1e308, Number.MAX_SAFE_INTEGER]);
      case 3: return r() < 0.5;
      case 4: return null;
      case 5: return pick(words) + String(Math.floor(r() * 100));
      case 6: return Array.from({ length: Math.floor(r() * 4) }, () => value(depth + 1));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = Math.floor(r() * 4); i > 0; i--) o[pick(['code', 'params', 'method', 'times', 'nth', 'error', 'match', 'effect', 'fire', 'running', 'pattern', 'size', pick(words)])] = value(depth + 1);
        return o;
      }
    }
  };
  const auth = { authorization: `Basic ${Buffer.from(`root:${pool.password}`).toString('base64')}` };
  const problems: string[] = [];
  for (let i = 0; i < 2000; i++) {
    const { name, route, keys } = pick(routes);
    const input: Record<string, unknown> = {};
    for (const k of keys) if (r() < 0.8) input[k] = value();
    if (r() < 0.2) input[pick(words) || 'extra'] = value();
    let path = route.path.replace(/:([A-Za-z_]+)/g, (_m, k: string) => {
      const v = input[k];
      delete input[k];
      return r() < 0.1 ? pick(['..', '%2e%2e', '%', '%zz', '']) : encodeURIComponent(String(v ?? pick(words)));
    });
    if (r() < 0.05) path += pick(['/', '/extra', '//', '?x=%']);
    const method = r() < 0.1 ? pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH']) : route.method;
    let url = new URL(`/xapi-emu${path}`, pool.url).href;
    let body: string | undefined;
    if (method === 'GET' || method === 'DELETE' && r() < 0.5) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(input)) q.set(k, typeof v === 'string' ? v : JSON.stringify(v));
      if ([...q].length) url += (url.includes('?') ? '&' : '?') + q;
    } else {
      body = r() < 0.1 ? pick(['{', '[]', '"x"', '1', 'null', '{"a":', '\u0000']) : JSON.stringify(input);
    }
    let status: number;
    let text: string;
    try {
      const res = await fetch(url, { method, headers: { ...auth, 'content-type': 'application/json' }, body });
      status = res.status;
      text = await res.text();
    } catch (e) {
      problems.push(`${name} ${method} ${path}: ${(e as Error).message}`);
      continue;
    }
    if (status >= 500) problems.push(`${name} ${method} ${path} ${body ?? ''}: ${status} ${text.slice(0, 300)}`);
    else if (status >= 400) {
      let code: unknown;
      try {
        code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      if (typeof code !== 'string') problems.push(`${name} ${method} ${path}: ${status} without a JSON error: ${text.slice(0, 200)}`);
    }
  }
  expect(problems).toEqual([]);
  // the pool still answers, once the rules the fuzzer may have left and a frozen clock are gone
  await pool.control.faults.clear();
  await pool.control.clock.set({ frozen: false, scale: 0 });
  const x = await connect(pool.url, pool.username, pool.password);
  expect(await x.call('pool.get_all')).toHaveLength(1);
}, 240_000);
