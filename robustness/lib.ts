// Shared parts of the robustness harnesses: options from flags and environment, a seeded random
// source, records for the calls the harnesses make, JSON-RPC over real sockets with a bound on
// every answer, and the figures each harness prints at the end.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { MiB } from '../test/integration/helpers/records.js';

export { GiB, MiB, NULL } from '../test/integration/helpers/records.js';

// ───────────── options ─────────────

/** `--name value` from argv, else XAPI_EMU_ROBUST_<NAME> from the environment, else the default. */
export function option(argv: string[], name: string, def: number): number {
  const i = argv.indexOf(`--${name}`);
  const raw = i >= 0 ? argv[i + 1] : process.env[`XAPI_EMU_ROBUST_${name.toUpperCase().replace(/-/g, '_')}`];
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name}: invalid value "${raw}"`);
  return n;
}

/** Whether a script is run directly (npm run robust:…) rather than imported by a test. */
export const isMain = (url: string): boolean => !!process.argv[1] && fileURLToPath(url) === process.argv[1];

// ───────────── seeded randomness ─────────────

/** mulberry32: small, fast, reproducible from its seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** a weighted choice among [weight, value] pairs */
  weighted<T>(xs: readonly (readonly [number, T])[]): T {
    let r = this.next() * xs.reduce((a, [w]) => a + w, 0);
    for (const [w, v] of xs) if ((r -= w) < 0) return v;
    return xs[xs.length - 1][1];
  }
}

// ───────────── calls ─────────────

export class Fault extends Error {
  constructor(readonly description: string[]) {
    super(JSON.stringify(description));
  }
  get code(): string {
    return this.description[0] ?? '?';
  }
}

export class Hang extends Error {}

/** One JSON-RPC call with a bound on the answer; XAPI errors throw Fault, no answer in time throws Hang. */
export async function jsonRpc(base: string, method: string, params: unknown[], timeoutMs = 30_000): Promise<any> {
  let res: Response;
  try {
    res = await fetch(new URL('/jsonrpc', base), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    if ((e as Error).name === 'TimeoutError') throw new Hang(`${method}: no answer in ${timeoutMs} ms`);
    throw e;
  }
  const text = await res.text();
  let body: { result?: unknown; error?: { message: string; data?: string[] } };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${method}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`);
  }
  if (body.error) throw new Fault([body.error.message, ...(body.error.data ?? [])]);
  return body.result;
}

export interface Session {
  base: string;
  session: string;
  call(method: string, ...params: unknown[]): Promise<any>;
}

export async function loginAs(base: string, user: string, password: string, timeoutMs = 30_000): Promise<Session> {
  const session = (await jsonRpc(base, 'session.login_with_password', [user, password, '1.0', 'xapi-emu-robustness'], timeoutMs)) as string;
  return { base, session, call: (method, ...params) => jsonRpc(base, method, [session, ...params], timeoutMs) };
}

/** Error codes counted, and the messages of INTERNAL_ERRORs kept apart (they are the defects). */
export class Tally {
  readonly codes = new Map<string, number>();
  readonly internal = new Map<string, number>();
  ok = 0;
  add(code: string, detail?: string): void {
    this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    if (code === 'INTERNAL_ERROR') {
      const d = (detail ?? '').replace(/&quot;/g, '"').slice(0, 60); // XML-RPC and JSON-RPC spell it alike
      this.internal.set(d, (this.internal.get(d) ?? 0) + 1);
    }
  }
  fault(e: unknown): void {
    if (e instanceof Fault) this.add(e.code, e.description.slice(1).join(' '));
    else if (e instanceof Hang) this.add('(hang)');
    else this.add('(transport)', (e as Error).message);
  }
  get internalCount(): number {
    let n = 0;
    for (const v of this.internal.values()) n += v;
    return n;
  }
  lines(): string[] {
    const rows = [...this.codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `    ${c.padEnd(40)} ${n}`);
    const all = [...this.internal].sort((a, b) => b[1] - a[1]);
    const internal = all.slice(0, 12).map(([m, n]) => `    INTERNAL_ERROR ${JSON.stringify(m)} x${n}`);
    if (all.length > 12) internal.push(`    ... and ${all.length - 12} other INTERNAL_ERROR messages`);
    return [`  ok answers: ${this.ok}`, '  errors by code:', ...(rows.length ? rows : ['    (none)']), ...internal];
  }
}

// ───────────── data directories and figures ─────────────

export function tempDataDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), `xapi-emu-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** VmRSS of this process, MiB. */
export const selfRssMiB = (): number => process.memoryUsage().rss / MiB;

export function report(title: string, figures: Record<string, string | number>, extra: string[] = []): string {
  const w = Math.max(...Object.keys(figures).map((k) => k.length));
  return [
    `== ${title}`,
    ...Object.entries(figures).map(([k, v]) => `  ${k.padEnd(w)}  ${typeof v === 'number' ? (Number.isInteger(v) ? v : v.toFixed(1)) : v}`),
    ...extra,
  ].join('\n');
}

// ───────────── records for calls ─────────────

export { vmArgs, vdiArgs, vbdArgs } from '../test/integration/helpers/records.js';

/** The default pool's local SR (an ext SR on the master). */
export async function localSr(s: Session): Promise<string> {
  const srs = (await s.call('SR.get_all_records_where', 'field "type" = "ext"')) as Record<string, { name_label: string }>;
  const ref = Object.keys(srs)[0];
  if (!ref) throw new Error('no ext SR in the pool');
  return ref;
}
