// Faults on HTTP handlers (/import_raw_vdi, /export_raw_vdi, /import, /export, /rrd_updates ...):
// rules on the request's path answer with a status (failing a task the client gave with the rule's
// error, else INTERNAL_ERROR), cut the response after N bytes of its body, add latency, hang or
// cut the connection. A failed host's address answers nothing.
import type { ServerResponse } from 'node:http';
import type { FastifyRequest } from 'fastify';
import type { Emulator } from '../../emulator.js';
import { XapiError } from '../../dispatch/errors.js';
import { sendError, type HttpFaultHooks } from '../../http/auth.js';
import { failTask } from '../../api/task-runner.js';
import { engineOf } from './index.js';
import { hostFault } from './hosts.js';

const cut = (req: FastifyRequest) => req.raw.socket?.destroy();

/** The response's body ends after `limit` bytes: what goes beyond is dropped and the connection
 * closes once the bytes before the cut have gone out. */
function truncate(res: ServerResponse, limit: number): void {
  let left = limit;
  let done = false;
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  const stop = () => {
    if (done) return;
    done = true;
    const sock = res.socket;
    if (sock) sock.destroySoon();
    else res.destroy();
  };
  const take = (chunk: unknown, encoding?: unknown): boolean => {
    if (done) return false;
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return true;
    const b = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : Buffer.from(chunk as Uint8Array);
    if (b.length <= left) {
      left -= b.length;
      if (b.length > 0) write(b);
      return true;
    }
    if (left > 0) write(b.subarray(0, left));
    left = 0;
    stop();
    return false;
  };
  res.write = ((chunk: unknown, encoding?: unknown) => take(chunk, encoding) && !res.writableNeedDrain) as typeof res.write;
  res.end = ((chunk?: unknown, encoding?: unknown) => {
    if (take(chunk, encoding) && !done) end();
    return res;
  }) as typeof res.end;
}

export const httpFaultHooks: HttpFaultHooks = {
  received(emu, req, host) {
    const engine = engineOf(emu);
    if (!engine || engine.count.host === 0 || hostFault(engine, host) !== 'down') return false;
    hostFault(engine, host, true);
    cut(req);
    return true;
  },

  async request(emu: Emulator, req, res, _host, givenTask) {
    const engine = engineOf(emu);
    if (!engine) return false;
    const path = req.url.split('?')[0];
    for (const rule of [...engine.rules.values()]) {
      if (rule.kind !== 'path' || !rule.pattern!.test(path)) continue;
      const want = rule.input.match.http_method;
      if (want !== undefined && want !== req.method) continue;
      if (!engine.fires(rule)) continue;
      const e = rule.input.effect;
      if (e.latency) await emu.clock.sleep(e.latency);
      if (e.hang) {
        const gone = new AbortController();
        req.raw.socket?.once('close', () => gone.abort());
        await engine.hang(rule, gone.signal);
      }
      if (e.drop) {
        // the handler fails at once with its connection: a task the client gave ends with it
        if (givenTask !== undefined && emu.db.has('task', givenTask)) failTask(emu, givenTask, new XapiError('INTERNAL_ERROR', ['the connection was dropped']));
        emu.db.flush();
        cut(req);
        return true;
      }
      if (e.status !== undefined || e.error) {
        const status = e.status ?? 500;
        const err = e.error ? new XapiError(e.error.code, [...e.error.params]) : new XapiError('INTERNAL_ERROR', [`HTTP ${status}`]);
        if (givenTask !== undefined && emu.db.has('task', givenTask)) failTask(emu, givenTask, err);
        emu.db.flush();
        if (!req.raw.readableEnded) req.raw.resume();
        sendError(res, status, status === 500 ? 'Internal Error' : 'Error', `<html><body><h1>HTTP ${status}</h1>${err.description.join(' ')}</body></html>`);
        return true;
      }
      if (e.truncate_after !== undefined) truncate(res, e.truncate_after);
    }
    return false;
  },
};
