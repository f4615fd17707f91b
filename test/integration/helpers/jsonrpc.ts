// Minimal JSON-RPC clients for integration tests: plain fetch against /jsonrpc, as XO does, and one
// that keeps its own connection open across calls.
import { Agent, request } from 'node:http';

export class XapiFault extends Error {
  constructor(readonly description: string[]) {
    super(JSON.stringify(description));
  }
}

export interface Client {
  /** calls `method` with the session prepended (after login) */
  call(method: string, ...params: unknown[]): Promise<any>;
  /** calls without prepending the session */
  raw(method: string, ...params: unknown[]): Promise<any>;
  session: string;
}

export async function connect(url: string, user: string, password: string): Promise<Client> {
  let id = 0;
  const raw = async (method: string, ...params: unknown[]) => {
    const res = await fetch(new URL('/jsonrpc', url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ method, params, id: ++id }),
    });
    // JSON-RPC 1.0: the error is the whole description array
    const j = (await res.json()) as { result?: unknown; error?: string[] | null };
    if (j.error) throw new XapiFault(j.error);
    return j.result;
  };
  const session = (await raw('session.login_with_password', user, password, '1.0', 'test')) as string;
  return { session, raw, call: (method, ...params) => raw(method, session, ...params) };
}

export interface KeepAliveClient extends Client {
  /** closes the client's connection */
  close(): void;
}

/** A session whose calls all go over one keep-alive connection of its own (an http.Agent with a
 * single socket), as a long-lived client of a real pool does. */
export async function connectKeepAlive(url: string, user: string, password: string, originator = 'test'): Promise<KeepAliveClient> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const endpoint = new URL('/jsonrpc', url);
  let id = 0;
  const raw = (method: string, ...params: unknown[]) =>
    new Promise<any>((resolve, reject) => {
      const body = JSON.stringify({ method, params, id: ++id });
      const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
      const req = request(endpoint, { method: 'POST', agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const j = JSON.parse(Buffer.concat(chunks).toString()) as { result?: unknown; error?: string[] | null };
            if (j.error) reject(new XapiFault(j.error));
            else resolve(j.result);
          } catch (e) {
            reject(e);
          }
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  try {
    const session = (await raw('session.login_with_password', user, password, '1.0', originator)) as string;
    return { session, raw, call: (method, ...params) => raw(method, session, ...params), close: () => agent.destroy() };
  } catch (e) {
    agent.destroy();
    throw e;
  }
}

/** The error description a promise rejects with. */
export async function faultOf(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof XapiFault) return e.description;
    throw e;
  }
  throw new Error('expected a XenAPI failure');
}
