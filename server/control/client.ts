// A typed client of the control API, made from the contract: `client.<area>.<operation>(input)`
// resolves to the route's output (parsed with its schema) or rejects with a ControlApiError.
import { contract, type ControlContract, type ControlErrorBody, type InputOf, type OutputOf, type Route } from './contract/index.js';
import { CONTROL_PREFIX } from './prefix.js';

export interface ControlClientOptions {
  /** the emulator's URL, e.g. http://127.0.0.1:8080/ */
  url: string;
  /** HTTP Basic credentials (a pool-admin), or */
  username?: string;
  password?: string;
  /** a session ref */
  session?: string;
}

export class ControlApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly params: string[] = [],
    readonly body?: ControlErrorBody,
  ) {
    super(`${code}: ${message}`);
  }
}

type Calls<C> = { [M in keyof C]: {} extends InputOf<C[M]> ? (input?: InputOf<C[M]>) => Promise<OutputOf<C[M]>> : (input: InputOf<C[M]>) => Promise<OutputOf<C[M]>> };
export type ControlClient = { [A in keyof ControlContract]: Calls<ControlContract[A]> };

export function controlClient(opts: ControlClientOptions): ControlClient {
  const base = new URL(opts.url);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (opts.username !== undefined) headers.authorization = `Basic ${Buffer.from(`${opts.username}:${opts.password ?? ''}`).toString('base64')}`;
  const call = async (r: Route, given: Record<string, unknown> = {}): Promise<unknown> => {
    const rest = { ...given };
    const path = r.path.replace(/:([A-Za-z_]+)/g, (_m, k: string) => {
      const v = rest[k];
      delete rest[k];
      return encodeURIComponent(String(v));
    });
    const url = new URL(CONTROL_PREFIX + path, base);
    if (opts.session) url.searchParams.set('session_id', opts.session);
    let body: string | undefined;
    if (r.method === 'GET') {
      for (const [k, v] of Object.entries(rest)) if (v !== undefined) url.searchParams.set(k, typeof v === 'object' ? JSON.stringify(v) : String(v));
    } else body = JSON.stringify(rest);
    const res = await fetch(url, { method: r.method, headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' }, body });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new ControlApiError(res.status, 'BAD_RESPONSE', text.slice(0, 200));
    }
    if (!res.ok) {
      const e = (parsed as ControlErrorBody | undefined)?.error;
      throw new ControlApiError(res.status, e?.code ?? `HTTP_${res.status}`, e?.message ?? res.statusText, e?.params ?? [], parsed as ControlErrorBody);
    }
    return r.output.parse(parsed);
  };
  const client: Record<string, Record<string, unknown>> = {};
  for (const [area, routes] of Object.entries(contract)) {
    client[area] = {};
    for (const [op, r] of Object.entries(routes as Record<string, Route>)) client[area][op] = (input?: Record<string, unknown>) => call(r, input);
  }
  return client as ControlClient;
}
