// A minimal JSON-RPC client for integration tests: plain fetch against /jsonrpc, as XO does.
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
