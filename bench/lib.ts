// Shared helpers of the benchmark: child processes (emulator, bare Fastify), RPC calls, statistics
// and the report's tables.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { request, Pool, type Dispatcher } from 'undici';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = fileURLToPath(new URL('../bin/xapi-emu.js', import.meta.url));
export const BARE = fileURLToPath(new URL('./bare-server.ts', import.meta.url));
export const PASSWORD = 'bench-pass';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const now = () => performance.now();

// ───────────────────────────── child processes ─────────────────────────────

const children = new Set<ChildProcess>();

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** stdout + stderr so far, for error messages */
  output(): string;
  /** performance.now() when stdout first matched `readyLine` (the emulator's banner: all listeners up) */
  readyAt?: number;
}

function track(proc: ChildProcess, readyLine?: RegExp): Child {
  children.add(proc);
  let out = '';
  const child: Child = { proc, pid: proc.pid!, output: () => out };
  proc.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    if (readyLine && child.readyAt === undefined && readyLine.test(out)) child.readyAt = now();
  });
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  proc.on('exit', () => children.delete(proc));
  return child;
}

/** A free TCP port on 127.0.0.1 (the kernel's pick; released at once for the child to take). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** `node bin/xapi-emu.js …` (the node process itself: its pid is the emulator's). */
export function spawnEmulator(args: string[]): Child {
  const proc = spawn(process.execPath, [BIN, '--password', PASSWORD, '--auth-fail-delay', '0', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, XAPI_EMU_LOG: '0' },
  });
  return track(proc, /\n\s*pid\s+\d+/);
}

/** The bare Fastify server of bench/bare-server.ts; resolves with its base URL. */
export async function spawnBare(xmlFile: string, jsonFile: string): Promise<{ child: Child; url: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', BARE, xmlFile, jsonFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const child = track(proc);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bare server did not start:\n${child.output()}`)), 20_000);
    proc.stdout!.on('data', () => {
      const m = /LISTENING (\S+)/.exec(child.output());
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`bare server exited (${code}):\n${child.output()}`));
    });
  });
  return { child, url };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stop(child: Child, graceMs = 3000): Promise<void> {
  const p = child.proc;
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stop({ proc: c, pid: c.pid!, output: () => '' })));
}

/** Last resort on exit: SIGKILL whatever is left (synchronous). */
export function killAllSync(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** CPU time (user + system) a process has used so far, in ms (/proc/<pid>/stat, USER_HZ = 100). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return (Number(f[11]) + Number(f[12])) * 10; // utime, stime
}

/** VmRSS of a process, in MiB. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

// ───────────────────────────── RPC ─────────────────────────────

export class RpcError extends Error {
  constructor(readonly description: unknown) {
    super(`XAPI error: ${JSON.stringify(description)}`);
  }
}

export const jsonBody = (method: string, params: unknown[], id: number | string = 1): string =>
  JSON.stringify({ jsonrpc: '2.0', method, params, id });

const xmlEsc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
function xmlValue(v: unknown): string {
  if (typeof v === 'string') return `<value><string>${xmlEsc(v)}</string></value>`;
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
  if (typeof v === 'number') return Number.isInteger(v) ? `<value><int>${v}</int></value>` : `<value><double>${v}</double></value>`;
  if (Array.isArray(v)) return `<value><array><data>${v.map(xmlValue).join('')}</data></array></value>`;
  if (v && typeof v === 'object') {
    const members = Object.entries(v).map(([k, x]) => `<member><name>${xmlEsc(k)}</name>${xmlValue(x)}</member>`);
    return `<value><struct>${members.join('')}</struct></value>`;
  }
  return '<value></value>';
}
export const xmlBody = (method: string, params: unknown[]): string =>
  `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params.map((p) => `<param>${xmlValue(p)}</param>`).join('')}</params></methodCall>`;

/** Whether an XML-RPC response is a Status=Success struct (no full parse: the bodies can be 100 MB). */
export const xmlSuccess = (body: string): boolean =>
  body.startsWith('<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value>');

export interface Timed<T> {
  value: T;
  /** ms until the response headers (the server has built the whole body by then) */
  ttfb: number;
  /** ms until the last byte */
  total: number;
  /** performance.now() at the last byte */
  end: number;
  bytes: number;
  text: string;
}

/** A raw POST; the body is read whole. */
export async function post(base: string, path: string, body: string, contentType: string, dispatcher?: Dispatcher): Promise<Timed<null>> {
  const t0 = now();
  const res = await request(new URL(path, base), {
    method: 'POST',
    body,
    headers: { 'content-type': contentType },
    ...(dispatcher ? { dispatcher } : {}),
  });
  const ttfb = now() - t0;
  const buf = Buffer.from(await res.body.arrayBuffer());
  const end = now();
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${buf.toString().slice(0, 300)}`);
  return { value: null, ttfb, total: end - t0, end, bytes: buf.length, text: buf.toString('utf8') };
}

/** A JSON-RPC v2 call; throws RpcError on an XAPI error. */
export async function jsonCall<T = unknown>(base: string, method: string, params: unknown[], dispatcher?: Dispatcher): Promise<Timed<T>> {
  const r = await post(base, '/jsonrpc', jsonBody(method, params), 'application/json', dispatcher);
  const msg = JSON.parse(r.text) as { result?: T; error?: unknown };
  if (msg.error !== undefined) throw new RpcError(msg.error);
  return { ...r, value: msg.result as T };
}

export const login = async (base: string, dispatcher?: Dispatcher): Promise<string> =>
  (await jsonCall<string>(base, 'session.login_with_password', ['root', PASSWORD, '1.0', 'xapi-emu-bench'], dispatcher)).value;

/** Polls login until it succeeds; resolves with the session. */
export async function waitForLogin(base: string, child: Child, timeoutMs = 120_000): Promise<string> {
  const end = now() + timeoutMs;
  const pool = new Pool(base, { connections: 1 });
  try {
    for (;;) {
      if (child.proc.exitCode !== null) throw new Error(`the emulator exited (${child.proc.exitCode}):\n${child.output()}`);
      try {
        return await login(base, pool);
      } catch (e) {
        if (e instanceof RpcError) throw e;
        if (now() > end) throw new Error(`no login after ${timeoutMs} ms: ${(e as Error).message}\n${child.output()}`);
        await sleep(10);
      }
    }
  } finally {
    await pool.close();
  }
}

// ───────────────────────────── statistics and tables ─────────────────────────────

/** Nearest-rank percentile of a sample. */
export function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
export const median = (xs: number[]) => pct(xs, 50);

export const fmt = (x: number, digits = 1): string =>
  Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : String(x);

/** A plain-text table: first row is the header; numbers are right-aligned. */
export function table(title: string, rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    '  ' + r.map((c, i) => (i === 0 || !/^[-\d.,]+( ?[a-zA-Z%]*)?$/.test(c) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const sep = '  ' + widths.map((w) => '-'.repeat(w)).join('  ');
  return [title, line(cells[0]), sep, ...cells.slice(1).map(line)].join('\n');
}
