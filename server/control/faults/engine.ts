// The fault rules of one pool and the decision whether a match fires: hits counters, "next N
// calls", "only the Nth", and seeded probability draws (the same seed fires on the same matches,
// run after run). Rules live in memory only: they are not part of the pool's state (snapshots,
// restarts of the toolstack keep them; a restart of the process ends them), as xapi's FIST files
// in /tmp are not part of its database.
import type { Emulator } from '../../emulator.js';
import type { ServerRuntime } from '../../app.js';
import type { FaultRule, FaultRuleInput } from '../contract/faults.js';

export type RuleKind = 'method' | 'path' | 'vdi' | 'host' | 'sr';

export interface Rule {
  id: string;
  kind: RuleKind;
  input: FaultRuleInput;
  /** method or path glob, compiled */
  pattern: RegExp | null;
  created: number;
  total: number;
  fired: number;
  released: boolean;
  /** calls a hang holds */
  waiters: Set<() => void>;
  /** the probability draws */
  random: () => number;
  /** vdi rules: bytes the datapath may still move; once exceeded, every request fails */
  bytesLeft: number;
  exhausted: boolean;
  /** the object a vdi, host or sr rule is about (its ref) and the vdi's uuid */
  ref: string;
  uuid: string;
}

/** "VM.*" → /^VM\..*$/: `*` is any run of characters, everything else is literal. */
export function compileGlob(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

/** A seeded generator (mulberry32 over an FNV-1a hash of the seed): deterministic draws in [0, 1). */
export function seededRandom(seed: string): () => number {
  let h = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 0x01000193);
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rule ids are never reused in a process, so that an id held by a test cannot name a later rule. */
let nextId = 1;

export class FaultEngine {
  readonly rules = new Map<string, Rule>();
  /** rules by kind: calls look only for the kinds that exist */
  readonly count: Record<RuleKind, number> = { method: 0, path: 0, vdi: 0, host: 0, sr: 0 };
  /** the running server, for toolstack restarts (set by the control calls) */
  runtime: ServerRuntime | undefined;

  /** the pool (a toolstack restart may bring a new Emulator for the same pool) */
  constructor(public emu: Emulator) {}

  add(kind: RuleKind, input: FaultRuleInput, extra: { ref?: string; uuid?: string } = {}): Rule {
    const id = `fault-${nextId++}`;
    const glob = kind === 'method' ? input.match.method : kind === 'path' ? input.match.path : undefined;
    const rule: Rule = {
      id, kind, input,
      pattern: glob === undefined ? null : compileGlob(glob),
      created: this.emu.clock.now(),
      total: 0, fired: 0, released: false, waiters: new Set(),
      random: seededRandom(input.fire?.seed ?? id),
      bytesLeft: input.effect.io_error_after ?? 0, exhausted: false,
      ref: extra.ref ?? '', uuid: extra.uuid ?? '',
    };
    this.rules.set(id, rule);
    this.count[kind]++;
    return rule;
  }

  /** Counts a match and says whether the rule fires on it. */
  fires(rule: Rule): boolean {
    const n = ++rule.total;
    const f = rule.input.fire;
    let fire = true;
    if (f?.nth !== undefined && n !== f.nth) fire = false;
    if (f?.times !== undefined && rule.fired >= f.times) fire = false;
    // a draw on every match (not only on those still eligible), so that a seed gives the same
    // pattern whatever the other settings
    if (f?.probability !== undefined && !(rule.random() < f.probability)) fire = false;
    if (rule.input.effect.hang && rule.released) fire = false;
    if (fire) rule.fired++;
    return fire;
  }

  /** Lets the calls a hang holds go on; later matches pass. */
  release(rule: Rule): void {
    rule.released = true;
    for (const w of [...rule.waiters]) w();
    rule.waiters.clear();
  }

  remove(rule: Rule): void {
    if (this.rules.delete(rule.id)) this.count[rule.kind]--;
    for (const w of [...rule.waiters]) w();
    rule.waiters.clear();
  }

  /** Waits until the rule is released or removed, or `abort` fires. */
  hang(rule: Rule, abort?: AbortSignal): Promise<void> {
    if (rule.released || !this.rules.has(rule.id)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        rule.waiters.delete(done);
        abort?.removeEventListener('abort', done);
        resolve();
      };
      rule.waiters.add(done);
      abort?.addEventListener('abort', done, { once: true });
    });
  }

  view(rule: Rule): FaultRule {
    const { input } = rule;
    return {
      id: rule.id,
      match: input.match,
      fire: input.fire ?? {},
      effect: input.effect,
      ...(input.description !== undefined ? { description: input.description } : {}),
      created: new Date(rule.created).toISOString(),
      hits: { total: rule.total, fired: rule.fired },
      hanging: rule.waiters.size,
      released: rule.released,
      ...(rule.kind === 'vdi' ? { bytes_left: rule.bytesLeft } : {}),
    };
  }
}
