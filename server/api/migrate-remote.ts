// The destination pool of a cross-pool migration, seen from the source (xapi's remote_of_dest: a
// Client over HTTP to the destination's master, on the session of migrate_receive's token): its
// XenAPI calls over JSON-RPC, and the HTTP handlers the migration streams to (/import_raw_vdi for the
// disks, /import_metadata for the VM's objects).
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { XapiError } from '../dispatch/errors.js';

/** how long a remote call may take before the destination counts as unreachable */
const CALL_TIMEOUT_MS = 120_000;

export class RemotePool {
  private id = 0;

  /** `sm`: the destination host's storage interface (the token's SM URL) */
  constructor(readonly master: string, readonly session: string, readonly sm = '') {}

  /** the address the destination is reached at (Api_errors.cannot_contact_host's parameter) */
  get address(): string {
    return new URL(this.master).hostname;
  }

  private unreachable(): XapiError {
    return new XapiError('CANNOT_CONTACT_HOST', [this.address]);
  }

  /** a XenAPI call on the token's session: the destination's errors come back as they are */
  call<T>(method: string, ...params: unknown[]): Promise<T> {
    return this.rpc<T>(method, [this.session, ...params]);
  }

  /** a XenAPI call with its parameters as given (session.login_with_password) */
  async rpc<T>(method: string, params: unknown[]): Promise<T> {
    let res: Response;
    try {
      res = await fetch(new URL('/jsonrpc', this.master), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', method, params, id: ++this.id }),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    } catch {
      throw this.unreachable();
    }
    const text = await res.text().catch(() => '');
    let msg: { result?: T; error?: { message?: string; data?: unknown[] } };
    try {
      msg = JSON.parse(text);
    } catch {
      throw new XapiError('INTERNAL_ERROR', [`${method} on ${this.address}: HTTP ${res.status}`]);
    }
    if (msg.error) throw new XapiError(String(msg.error.message ?? 'INTERNAL_ERROR'), (msg.error.data ?? []).map(String));
    return msg.result as T;
  }

  /** A call of the destination's storage interface (JSON-RPC, its arguments named); its errors come
   * back as SR_BACKEND_FAILURE with the storage error. */
  async storage(method: string, args: Record<string, unknown>): Promise<unknown> {
    if (!this.sm) throw new XapiError('INTERNAL_ERROR', ['the destination gave no storage URL']);
    let res: Response;
    try {
      res = await fetch(this.sm, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ method, params: [args], id: ++this.id }),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    } catch {
      throw this.unreachable();
    }
    const text = await res.text().catch(() => '');
    let msg: { result?: unknown; error?: unknown };
    try {
      msg = JSON.parse(text);
    } catch {
      throw new XapiError('INTERNAL_ERROR', [`${method} on ${this.address}: HTTP ${res.status}`]);
    }
    if (msg.error !== undefined && msg.error !== null) throw new XapiError('SR_BACKEND_FAILURE', [`${method}: ${JSON.stringify(msg.error)}`, '', '']);
    return msg.result;
  }

  /**
   * PUT of `body` to an HTTP handler of the destination, in a task made there for it; resolves
   * with the task's result (an XML-RPC value fragment), or fails with the task's error.
   */
  async put(path: string, query: Record<string, string>, body: Readable | Buffer, length: number, label: string): Promise<string> {
    const task = await this.call<string>('task.create', label, '');
    try {
      const url = new URL(path, this.master);
      for (const [k, v] of Object.entries({ ...query, session_id: this.session, task_id: task })) url.searchParams.set(k, v);
      let status = 0;
      try {
        status = await new Promise<number>((resolve, reject) => {
          const req = request(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
            res.on('error', reject);
          });
          req.on('error', reject);
          pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, req).catch(reject);
        });
      } catch {
        throw this.unreachable();
      }
      const t = await this.call<Record<string, unknown>>('task.get_record', task);
      if (t.status === 'success') return String(t.result ?? '');
      const info = (t.error_info as string[] | undefined) ?? [];
      if (info.length) throw new XapiError(info[0], info.slice(1));
      throw new XapiError('INTERNAL_ERROR', [`${path} on ${this.address}: HTTP ${status}`]);
    } finally {
      await this.call('task.destroy', task).catch(() => undefined);
    }
  }
}

/** The refs of an XML-RPC value fragment (a task's result) */
export function refsOf(result: string): string[] {
  return result.match(/OpaqueRef:[0-9a-fA-F-]+/g) ?? [];
}

/** session.login_with_password on a remote pool's master */
export async function remoteLogin(master: string, uname: string, pwd: string): Promise<string> {
  return new RemotePool(master, '').rpc<string>('session.login_with_password', [uname, pwd, '1.3', 'xapi-emu']);
}
