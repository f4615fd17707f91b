// RBAC matrix derived from the schema: for each role and a sample of the messages of each class, a
// call as a user of that role (arguments of the right count, refs that name nothing) must fail with
// RBAC_PERMISSION_DENIED exactly when the message's roles in the datamodel do not include the role.
//   npm run robust:rbac -- [--per-class 0 (all)] [--seed 1]
import { startServer } from '../server/app.js';
import { classes, messages, model, type Ty } from '../schema/index.js';
import { Fault, Hang, Rng, isMain, jsonRpc, loginAs, option, report } from './lib.js';

export interface RbacOptions { perClass: number; seed: number; timeoutMs: number }
export interface RbacResult { calls: number; mismatches: string[]; text: string }

/** Calls that end the session or block by design; the rest only meet refs that name nothing. */
const AVOID = /^(session\..*|event\.(next|from))$/;

/** A well-typed value (values are unmarshalled before the RBAC check, as xapi's generated server does). */
const dummy = (ty: Ty): unknown => {
  switch (ty.k) {
    case 'ref': return 'OpaqueRef:rbac-probe';
    case 'enum': return model.enums[ty.name]?.[0] ?? 'rbac-probe';
    case 'record': {
      const c = classes.get(ty.class);
      return Object.fromEntries((c?.fields ?? []).filter((f) => f.qualifier !== 'DynamicRO').map((f) => [f.name, dummy(f.ty)]));
    }
    case 'int': case 'float': return 0;
    case 'bool': return false;
    case 'set': return [];
    case 'map': case 'struct': return {};
    case 'datetime': return '19700101T00:00:00Z';
    default: return 'rbac-probe';
  }
};

export async function runRbac(o: RbacOptions): Promise<RbacResult> {
  const roles = model.roles.filter((r) => !r.internal).map((r) => r.name);
  const users = roles.map((role, i) => ({ name: `rbac-${i}`, password: `p${i}`, role }));
  const server = await startServer({ port: 0, memory: true, password: 'rbac-pass', authFailDelay: 0, users });
  const rng = new Rng(o.seed);
  const mismatches: string[] = [];
  let calls = 0;
  try {
    const base = server.urls[0];
    // the sample: per class, perClass messages (all when 0) that take a session
    const byClass = new Map<string, typeof sample>();
    // removed messages answer MESSAGE_REMOVED before any check, as xapi's dispatcher no longer knows them
    const sample = [...messages.values()].filter((m) => m.session && m.lifecycle !== 'Removed_s' && !AVOID.test(m.wire));
    for (const m of sample) byClass.set(m.class, [...(byClass.get(m.class) ?? []), m]);
    const chosen = [...byClass.values()].flatMap((ms) => {
      if (!o.perClass || ms.length <= o.perClass) return ms;
      const pool = [...ms];
      return Array.from({ length: o.perClass }, () => pool.splice(rng.int(pool.length), 1)[0]);
    });
    for (const [i, role] of roles.entries()) {
      const s = await loginAs(base, users[i].name, users[i].password, o.timeoutMs);
      for (const m of chosen) {
        const args = m.params.map((p) => dummy(p.ty));
        const method = m.async && rng.chance(0.2) ? `Async.${m.wire}` : m.wire;
        const allowed = (m.roles ?? ['pool-admin']).includes(role);
        calls++;
        let denied: string[] | null = null;
        let other = 'success';
        try {
          const r = await jsonRpc(base, method, [s.session, ...args], o.timeoutMs);
          if (method.startsWith('Async.') && typeof r === 'string') {
            // the task carries the outcome; a denial is refused before any task exists
          }
        } catch (e) {
          if (e instanceof Hang) mismatches.push(`${role} ${method}: no answer`);
          else if (e instanceof Fault && e.code === 'RBAC_PERMISSION_DENIED') denied = e.description;
          else if (!(e instanceof Fault)) mismatches.push(`${role} ${method}: ${(e as Error).message}`);
          else other = e.description.slice(0, 3).join(' ');
        }
        if (allowed && denied) mismatches.push(`${role} ${method}: denied (${denied.slice(1).join(' ')}) but the datamodel grants it`);
        if (!allowed && !denied) mismatches.push(`${role} ${method}: not denied (${other}) but the datamodel gives it only to ${(m.roles ?? ['pool-admin']).join(', ')}`);
        if (denied && denied[1] !== m.wire.toLowerCase()) mismatches.push(`${role} ${method}: denied with permission ${denied[1]}, expected ${m.wire.toLowerCase()}`);
      }
    }
    const text = report('rbac', { roles: roles.length, 'messages sampled': chosen.length, calls, mismatches: mismatches.length },
      mismatches.slice(0, 40).map((m) => `  mismatch: ${m}`));
    return { calls, mismatches, text };
  } finally {
    await server.close();
  }
}

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const r = await runRbac({ perClass: option(argv, 'per-class', 0), seed: option(argv, 'seed', 1), timeoutMs: option(argv, 'timeout', 10_000) });
  console.log(r.text);
  return r.mismatches.length > 0 ? 1 : 0;
}

if (isMain(import.meta.url)) process.exit(await main());
