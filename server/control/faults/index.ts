// The fault rules of each pool, and the hooks they put in the layers below while any exists: the
// API dispatch (server/dispatch), the HTTP handlers (server/http/auth.ts) and the datapath
// (server/xenopsd/tapdisk.ts). With no rule anywhere the hooks are null, so the everyday path pays
// one null check.
import { z } from 'zod';
import type { Emulator } from '../../emulator.js';
import type { ServerRuntime } from '../../app.js';
import { setCallFaultHooks } from '../../dispatch/dispatch.js';
import { setHttpFaultHooks } from '../../http/auth.js';
import { vdiIoFaults } from '../../xenopsd/tapdisk.js';
import type { FaultRuleInput } from '../contract/faults.js';
import { FaultEngine, type Rule, type RuleKind } from './engine.js';
import { callFaultHooks } from './calls.js';
import { httpFaultHooks } from './http.js';
import { datapathFails } from './datapath.js';
import { hostFails, hostRecovers } from './hosts.js';

/** By the pool's storage directory, which a toolstack restart keeps (the Emulator object may change). */
const engines = new Map<string, FaultEngine>();

export function engineOf(emu: Emulator): FaultEngine | undefined {
  return engines.get(emu.storageDir);
}

function engineFor(emu: Emulator): FaultEngine {
  let e = engines.get(emu.storageDir);
  if (!e) engines.set(emu.storageDir, (e = new FaultEngine(emu)));
  e.emu = emu;
  return e;
}

/** Every rule of every pool of the process. */
export function* allRules(): Generator<Rule> {
  for (const e of engines.values()) yield* e.rules.values();
}

/** Puts the hooks in place while some rule needs them; takes them away after the last one. */
function refreshHooks(): void {
  const kinds = new Set<RuleKind>();
  for (const r of allRules()) kinds.add(r.kind);
  setCallFaultHooks(kinds.has('method') || kinds.has('host') || kinds.has('sr') ? callFaultHooks : null);
  setHttpFaultHooks(kinds.has('path') || kinds.has('host') ? httpFaultHooks : null);
  vdiIoFaults.fails = kinds.has('vdi') ? datapathFails : null;
  for (const [dir, e] of engines) if (e.rules.size === 0) engines.delete(dir);
}

/** A 400 naming the key of the rule that is wrong. */
const badKey = (path: (string | number)[], message: string) => new z.ZodError([{ code: 'custom', path, message, input: undefined }]);

/** The ref of an object given by ref or uuid. */
function resolve(emu: Emulator, cls: string, given: string, key: string): string {
  if (emu.db.has(cls, given)) return given;
  const ref = emu.db.refByUuid(cls, given);
  if (ref === undefined) throw badKey(['match', key], `no ${cls} ${given}`);
  return ref;
}

export async function createRule(emu: Emulator, runtime: ServerRuntime | undefined, input: FaultRuleInput): Promise<Rule> {
  const m = input.match;
  const engine = engineFor(emu);
  if (runtime) engine.runtime = runtime;
  let rule: Rule;
  if (m.method !== undefined) rule = engine.add('method', input);
  else if (m.path !== undefined) rule = engine.add('path', input);
  else if (m.vdi !== undefined) {
    const ref = resolve(emu, 'VDI', m.vdi, 'vdi');
    rule = engine.add('vdi', input, { ref, uuid: String(emu.db.get('VDI', ref)!.uuid) });
  } else if (m.sr !== undefined) {
    rule = engine.add('sr', input, { ref: resolve(emu, 'SR', m.sr, 'sr') });
  } else {
    const ref = resolve(emu, 'host', m.host!, 'host');
    if (ref === emu.master && !input.effect.host_down) throw badKey(['match', 'host'], 'the master cannot be cut off from itself: choose a member');
    for (const r of engine.rules.values()) if (r.kind === 'host' && r.ref === ref) throw badKey(['match', 'host'], `host ${ref} already has a fault (${r.id})`);
    rule = engine.add('host', input, { ref });
    await hostFails(emu, ref, input.effect.host_down ? 'down' : 'isolated');
  }
  refreshHooks();
  return rule;
}

export function findRule(emu: Emulator, id: string): Rule | undefined {
  return engineOf(emu)?.rules.get(id);
}

export async function removeRule(emu: Emulator, rule: Rule): Promise<void> {
  const engine = engineOf(emu);
  if (!engine) return;
  engine.remove(rule);
  refreshHooks();
  if (rule.kind === 'host') await hostRecovers(emu, rule.ref, rule.input.effect.host_down ? 'down' : 'isolated');
}

export async function clearRules(emu: Emulator): Promise<number> {
  const engine = engineOf(emu);
  if (!engine) return 0;
  const all = [...engine.rules.values()];
  for (const r of all) await removeRule(emu, r);
  return all.length;
}

export function releaseRule(emu: Emulator, rule: Rule): void {
  engineOf(emu)?.release(rule);
}
