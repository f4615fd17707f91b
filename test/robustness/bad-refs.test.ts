// Every message of the datamodel that takes a ref, called with a ref that names nothing, NULL, or an
// object of another class (and well-typed other arguments, real objects where the pool has some): the answer is a XenAPI error
// (HANDLE_INVALID as xapi's lookups give, or whatever check comes first), never a JavaScript
// exception passed off as INTERNAL_ERROR.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { model, messages, type MessageMeta, type Ty } from '../../schema/index.js';
import { startServer, type RunningServer } from '../../server/app.js';
import { connect, XapiFault, type Client } from '../integration/helpers/jsonrpc.js';

/** Calls that end the caller's session or stop the host under the test. */
const AVOID = /^(session\..*|event\..*|host\.(restart_agent|shutdown_agent|emergency_.*)|pool\.emergency_.*)$/;
const JS_ERROR = /Cannot read propert|is not a function|is not iterable|Maximum call stack|undefined|Cannot convert|Invalid (array|string) length/;
const BAD_REF = 'OpaqueRef:00000000-dead-4bad-8ef0-000000000000';
/** accepted by many messages as "none" (VM.copy's SR, VBD.VDI ...): the others must refuse it */
const NULL_REF = 'OpaqueRef:NULL';

let server: RunningServer;
let c: Client;

beforeAll(async () => {
  server = await startServer({ port: 0, memory: true, password: 'pw', authFailDelay: 0 });
  c = await connect(server.urls[0], 'root', 'pw');
});
afterAll(async () => server?.close());

const hasRef = (ty: Ty): boolean => ty.k === 'ref';

it('answers a XenAPI error, never a JavaScript exception, to every message given a ref that names nothing, NULL or another class', async () => {
  const real = new Map<string, string>();
  const realRef = async (cls: string): Promise<string> => {
    if (!real.has(cls)) {
      const all = (await c.call(`${cls}.get_all`).catch(() => [])) as string[];
      real.set(cls, all[0] ?? BAD_REF);
    }
    return real.get(cls)!;
  };
  const value = async (ty: Ty): Promise<unknown> => {
    switch (ty.k) {
      case 'string': return 'x';
      case 'int': case 'int32': return 0;
      case 'float': return 0;
      case 'bool': return false;
      case 'datetime': return '20250101T00:00:00Z';
      case 'enum': return model.enums[ty.name]?.[0] ?? 'x';
      case 'ref': return realRef(ty.class);
      case 'set': return [];
      case 'map': return {};
      default: return {};
    }
  };
  const targets = [...messages.values()].filter((m: MessageMeta) => m.session && !AVOID.test(m.wire) && m.params.some((p) => hasRef(p.ty)));
  expect(targets.length).toBeGreaterThan(500);
  const defects: string[] = [];
  let calls = 0;
  // a ref of a class no message takes where an SR, VM, VDI ... is expected
  const [foreign] = (await c.call('host_cpu.get_all')) as string[];
  for (const m of targets) {
    for (let i = 0; i < m.params.length; i++) {
      const ty = m.params[i].ty;
      if (!hasRef(ty)) continue;
      for (const bad of ty.k === 'ref' && ty.class === 'host_cpu' ? [BAD_REF, NULL_REF] : [BAD_REF, NULL_REF, foreign]) {
      const args: unknown[] = [];
      for (let j = 0; j < m.params.length; j++) args.push(j === i ? bad : await value(m.params[j].ty));
      calls++;
      try {
        await c.call(m.wire, ...args);
      } catch (e) {
        if (!(e instanceof XapiFault)) throw e;
        const [code, ...params] = e.description;
        if (code === 'INTERNAL_ERROR' && JS_ERROR.test(params.join(' '))) defects.push(`${m.wire} (${m.params[i].name} = ${bad}): ${params.join(' ')}`);
      }
      }
    }
  }
  expect(calls).toBeGreaterThan(1000);
  expect(defects).toEqual([]);
}, 120_000);
