// XAPI calls from one emulator instance to another pool's master (pool.join's "unverified rpc"):
// JSON-RPC over HTTP, as any client talks to a pool. Failures to reach the other side become
// xapi's join errors; an XAPI error from the other side is passed on as it is.
import { XapiError } from '../dispatch/errors.js';

/** How long a call to the other pool may take before the join gives up on it (wall time: a
 * network timeout, not a simulated duration). */
const CALL_TIMEOUT_MS = 30_000;

export interface RemotePool {
  /** base URL, e.g. http://127.0.0.1:8080/ */
  url: string;
  session: string;
  call(method: string, ...params: unknown[]): Promise<any>;
  logout(): Promise<void>;
}

/** master_address as pool.join takes it: "addr" (the same port as ours) or "addr:port" (a bare
 * IPv6 address takes brackets to carry a port: "[::1]:8080"). */
export function masterUrl(address: string, ownPort: number): URL {
  const a = address.trim();
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(a) ?? /^([^:[\]]+)(?::(\d+))?$/.exec(a);
  const host = m ? m[1] : a.includes(':') ? a : '';
  const port = m?.[2] !== undefined ? Number(m[2]) : ownPort;
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) throw new XapiError('JOINING_HOST_CONNECTION_FAILED', []);
  try {
    return new URL(`http://${host.includes(':') ? `[${host}]` : host}:${port}/`);
  } catch {
    throw new XapiError('JOINING_HOST_CONNECTION_FAILED', []);
  }
}

/** One JSON-RPC call; transport failures map to JOINING_HOST_CONNECTION_FAILED (no connection) or
 * JOINING_HOST_SERVICE_FAILED (an HTTP answer that is not XAPI's). */
export async function rpc(url: URL | string, method: string, params: unknown[]): Promise<any> {
  let res: Response;
  try {
    res = await fetch(new URL('/jsonrpc', url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }),
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
  } catch {
    throw new XapiError('JOINING_HOST_CONNECTION_FAILED', []);
  }
  let j: { result?: unknown; error?: { message?: string; data?: unknown } | string[] | null };
  try {
    if (res.status !== 200) throw new Error(String(res.status));
    j = (await res.json()) as typeof j;
  } catch {
    throw new XapiError('JOINING_HOST_SERVICE_FAILED', []);
  }
  if (j.error) {
    const e = j.error;
    const desc = Array.isArray(e) ? e : [String(e.message ?? 'INTERNAL_ERROR'), ...(Array.isArray(e.data) ? (e.data as unknown[]).map(String) : [])];
    throw new XapiError(String(desc[0]), desc.slice(1).map(String));
  }
  return j.result;
}

export async function loginToPool(url: URL, user: string, password: string, originator: string): Promise<RemotePool> {
  const session = (await rpc(url, 'session.login_with_password', [user, password, '1.0', originator])) as string;
  return {
    url: url.toString(),
    session,
    call: (method, ...params) => rpc(url, method, [session, ...params]),
    logout: async () => {
      await rpc(url, 'session.logout', [session]).catch(() => undefined);
    },
  };
}
