// What every HTTP handler (/import_raw_vdi, /export_raw_vdi, /import …) shares with xapi's
// xapi_http.ml: the credentials (assert_credentials_ok), the RBAC check of the handler's
// http_action, and the task the handler runs in (with_context): the client's `task_id`, which the
// handler completes or fails, or one of its own, named in the `task-id` response header and
// destroyed when the handler returns.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { model, type HttpAction, type Ty } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { checkSession } from '../auth/access.js';
import { authenticate as checkPassword, createSession, destroySession, type Login } from '../api/session.js';
import { createTask, completeTask, failTask, destroyTask } from '../api/task-runner.js';

const actions = new Map(model.http_actions.map((a) => [a.name, a]));

/** The http_action an HTTP handler is registered as (xapi's Datamodel.http_actions). */
export function httpAction(name: string): HttpAction {
  const a = actions.get(name);
  if (!a) throw new Error(`no http_action ${name} in the datamodel`);
  return a;
}

/** A failure with the HTTP status xapi answers it with (before any response header went out). The
 * task gets `error`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: unknown,
  ) {
    super(error instanceof Error ? error.message : String(error));
  }
}

/** Request parameters: xapi looks a handler's own parameters up in the query, then the cookies. */
export interface HttpParams {
  get(name: string): string | undefined;
  has(name: string): boolean;
  /** session_id, task_id, subtask_of: cookie first (Xapi_http.lookup_param_of_req) */
  auth(name: string): string | undefined;
}

export function paramsOf(req: FastifyRequest): HttpParams {
  const query = (req.query ?? {}) as Record<string, string | string[] | undefined>;
  const cookies = parseCookies(req.headers.cookie);
  const q = (name: string): string | undefined => {
    const v = query[name];
    return Array.isArray(v) ? v[0] : v;
  };
  return {
    get: (name) => q(name) ?? cookies.get(name),
    has: (name) => q(name) !== undefined || cookies.has(name),
    auth: (name) => cookies.get(name) ?? q(name),
  };
}

function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    const k = part.slice(0, i).trim();
    if (!out.has(k)) out.set(k, safeDecode(part.slice(i + 1).trim()));
  }
  return out;
}

const safeDecode = (s: string): string => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

/** What a handler sees. */
export interface HttpCall {
  emu: Emulator;
  req: FastifyRequest;
  /** the raw response: handlers write their own headers (200 before the body, as xapi) */
  res: ServerResponse;
  params: HttpParams;
  /** the host that received the request */
  host: string;
  session: string;
  /** the task the handler runs in */
  task: string;
  /** Runs `fn` when the task is cancelled (task.cancel); the handler then fails with TASK_CANCELLED. */
  onCancel(fn: () => void): void;
  /** Throws TASK_CANCELLED if the task has been cancelled. */
  assertNotCancelled(): void;
  /** Aborted when the client goes away (the connection closes, or is half-closed, before the
   * request's body has come in or before the answer has gone out): what waits on the client stops. */
  clientGone: AbortSignal;
}

/** How the handler ended: a result for the task (`ty` null: void), or `redirected` (the task is left
 * to the request that follows the redirection). */
export type HttpOutcome = { value: unknown; ty: Ty | null } | { redirected: true } | void;

export interface HttpHandlerSpec {
  /** the http_action name, e.g. put_import_raw_vdi: gives the roles and the 401 realm; or an
   * action of the emulator's own (its control calls, which the datamodel does not know) */
  action: string | HttpAction;
  /** name_label of a task the handler makes itself (with_context's label), e.g. "Importing raw VDI" */
  label: string;
}

const NO_CACHE = { 'cache-control': 'no-cache, no-store' };

/** Faults on HTTP handlers (the emulator's fault rules), installed while a pool has rules. */
export interface HttpFaultHooks {
  /** as the request is received on a host's address: true if the fault dealt with it (cut it) */
  received(emu: Emulator, req: FastifyRequest, host: string): boolean;
  /** after the credentials and RBAC checks: true if the fault answered (a status, a cut); it may
   * wait (latency, hang) or wrap the response (truncation) and let the handler run */
  request(emu: Emulator, req: FastifyRequest, res: ServerResponse, host: string, givenTask: string | undefined): Promise<boolean>;
}
let httpFaults: HttpFaultHooks | null = null;
export function setHttpFaultHooks(h: HttpFaultHooks | null): void {
  httpFaults = h;
}

/** An error answer as xapi's Http_svr writes it: HTML, no keep-alive. */
export function sendError(res: ServerResponse, status: number, message: string, body = '', headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, message, {
    'content-type': 'text/html',
    connection: 'close',
    ...NO_CACHE,
    ...headers,
    'content-length': String(Buffer.byteLength(body)),
  });
  res.end(body);
}

const UNAUTHORISED_BODY = '<html><body><h1>HTTP 401 unauthorised</h1>Please check your credentials and retry.</body></html>';
const FORBIDDEN_BODY = '<html><body><h1>HTTP 403 forbidden</h1>Access to the requested resource is forbidden.</body></html>';
const internalErrorBody = (detail: string) =>
  '<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; please wait a while and try again. ' +
  `If the problem persists, please contact your support representative.<h1> Additional information </h1>${escapeHtml(detail)}</body></html>`;
const escapeHtml = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&quot;'));

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 500: 'Internal Error', 501: 'Not Implemented' };

class Unauthorised extends Error {}

/** HTTP Basic credentials checked as session.login_with_password checks them. */
async function basicLogin(emu: Emulator, header: string, client: string): Promise<string> {
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  const uname = i < 0 ? decoded : decoded.slice(0, i);
  const pwd = i < 0 ? '' : decoded.slice(i + 1);
  const originator = `${client} using Basic auth`;
  let login: Login;
  try {
    login = await checkPassword(emu, uname, pwd);
  } catch {
    throw new Unauthorised();
  }
  return createSession(emu, emu.master, login, originator);
}

/** The role names of a session (its subject's roles); root sessions have every permission. */
function sessionRoles(emu: Emulator, session: string): string[] {
  const s = emu.db.get('session', session);
  const subject = s ? emu.db.get('subject', s.subject as string) : undefined;
  if (!subject) return [];
  return (subject.roles as string[]).map((r) => String(emu.db.get('role', r)?.name_label ?? ''));
}

/** Rbac.check for `http/<action>`: RBAC_PERMISSION_DENIED with xapi's parameters. */
export function checkHttpRbac(emu: Emulator, session: string, action: HttpAction): void {
  const s = emu.db.get('session', session);
  if (!s || s.is_local_superuser || !action.rbac_checked) return;
  const roles = action.roles ?? ['pool-admin'];
  const mine = sessionRoles(emu, session);
  if (mine.some((r) => roles.includes(r))) return;
  throw new XapiError('RBAC_PERMISSION_DENIED', [
    `http/${action.name}`,
    `No permission in user session. (Roles with this permission: ${roles.join(', ')})`,
  ]);
}

/** The session a request authenticates with (Xapi_http.assert_credentials_ok and with_context), in
 * xapi's order: session_id (cookie, then query), the pool secret (none here), HTTP Basic (a session
 * made for this request and destroyed after), a client certificate (none here). */
async function authenticate(emu: Emulator, req: FastifyRequest, params: HttpParams): Promise<{ session: string; temporary: boolean }> {
  const given = params.auth('session_id');
  if (given !== undefined) {
    try {
      // a session is checked in the pool's database: it is valid on any host
      return { session: checkSession(emu, given), temporary: false };
    } catch {
      throw new Unauthorised();
    }
  }
  const authz = req.headers.authorization;
  if (authz !== undefined) {
    if (/^basic /i.test(authz)) {
      const client = req.raw.socket.remoteAddress ?? 'unknown';
      return { session: await basicLogin(emu, authz, client), temporary: true };
    }
    throw new Error(`Unknown authorization header: ${authz}`);
  }
  throw new Unauthorised();
}

/**
 * Runs an HTTP handler the way xapi runs its handlers: credentials (401), RBAC (403, failing a
 * given task), then the handler inside the client's task (`task_id`, completed or failed, never
 * destroyed) or a task of its own (destroyed when the handler returns). Errors before the handler
 * wrote its headers get the status of an HttpError (else 500); errors after them only reach the
 * task, and the response is ended (or cut, when it promised a Content-Length).
 */
export async function runHttpHandler(
  ctx: HttpPluginContext,
  req: FastifyRequest,
  reply: FastifyReply,
  spec: HttpHandlerSpec,
  handler: (call: HttpCall) => Promise<HttpOutcome>,
): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  const clientGone = watchClient(req.raw, res);
  const emu = ctx.emu;
  const action = typeof spec.action === 'string' ? httpAction(spec.action) : spec.action;
  const host = ctx.hostOf(req);
  const params = paramsOf(req);
  const givenTask = params.auth('task_id');
  if (httpFaults !== null && httpFaults.received(emu, req, host)) return;

  let auth: { session: string; temporary: boolean };
  try {
    auth = await authenticate(emu, req, params);
  } catch (e) {
    discardBody(req.raw);
    // xapi answers 401 with the handler's name as the realm and leaves a given task alone
    if (e instanceof Unauthorised) {
      return sendError(res, 401, 'Unauthorised', UNAUTHORISED_BODY, { 'www-authenticate': `Basic realm="${action.name}"` });
    }
    return sendError(res, 500, 'Internal Error', internalErrorBody((e as Error).message));
  }
  const { session, temporary } = auth;
  try {
    try {
      checkHttpRbac(emu, session, action);
    } catch (e) {
      if (givenTask !== undefined) failTask(emu, givenTask, e);
      discardBody(req.raw);
      return sendError(res, 403, 'Forbidden', FORBIDDEN_BODY);
    }
    if (givenTask !== undefined && !emu.db.has('task', givenTask)) {
      discardBody(req.raw);
      return sendError(res, 500, 'Internal Error', internalErrorBody(`HANDLE_INVALID task ${givenTask}`));
    }
    if (httpFaults !== null && (await httpFaults.request(emu, req, res, host, givenTask))) return;
    const task = givenTask ?? createTask(emu, { label: spec.label, session, host });
    try {
      await runInTask({ emu, req, res, params, host, session, task, clientGone }, handler);
    } finally {
      // with_context: a task of its own dies with the handler
      if (givenTask === undefined) destroyTask(emu, task);
    }
  } catch (e) {
    // a bug, not an API error: answer rather than leave the client hanging
    if (!res.headersSent) sendError(res, 500, 'Internal Error', internalErrorBody(String((e as Error)?.message ?? e)));
    else res.destroy();
  } finally {
    if (temporary) destroySession(emu, session);
    emu.db.flush();
  }
}

async function runInTask(
  base: Omit<HttpCall, 'onCancel' | 'assertNotCancelled'>,
  handler: (call: HttpCall) => Promise<HttpOutcome>,
): Promise<void> {
  const { emu, task, res, req } = base;
  const cancelling = () => {
    const ops = emu.db.get('task', task)?.current_operations as Record<string, string> | undefined;
    return !!ops && Object.values(ops).includes('cancel');
  };
  const onCancel: (() => void)[] = [];
  emu.cancelHooks.set(task, () => {
    for (const f of onCancel) f();
  });
  const call: HttpCall = {
    ...base,
    onCancel: (fn) => {
      onCancel.push(fn);
      if (cancelling()) fn();
    },
    assertNotCancelled: () => {
      if (cancelling()) throw new XapiError('TASK_CANCELLED', [task]);
    },
  };
  try {
    const outcome = await handler(call);
    // a redirected request leaves the task to the request that follows the redirection; no
    // result (TaskHelper.complete None) leaves task.result ""
    if (!(outcome && 'redirected' in outcome)) completeTask(emu, task, outcome?.value, outcome ? outcome.ty : null);
    emu.db.flush();
    if (!res.headersSent) {
      res.writeHead(200, okHeaders(task, { 'content-length': 0 }));
      res.end();
    } else if (!res.writableEnded) res.end();
  } catch (e) {
    const err = cancelling() ? new XapiError('TASK_CANCELLED', [task]) : e instanceof HttpError ? e.error : e;
    failTask(emu, task, err);
    emu.db.flush();
    discardBody(req.raw);
    if (!res.headersSent) {
      const status = e instanceof HttpError ? e.status : 500;
      const detail = err instanceof XapiError ? err.description.join(' ') : String((err as Error)?.message ?? err);
      sendError(res, status, STATUS_TEXT[status] ?? 'Error', status === 500 ? internalErrorBody(detail) : '');
    } else if (!res.writableEnded) {
      // a body whose length was promised cannot end early without lying: cut the connection
      if (res.hasHeader('content-length')) res.destroy();
      else res.end();
    }
  } finally {
    emu.cancelHooks.delete(task);
  }
}

/** A signal aborted when the client is gone: the request closes before its body is complete, or the
 * response closes before it is finished. Watched from the start, so that a client gone while the
 * handler was busy elsewhere (authentication, creating a VDI) is not missed. */
function watchClient(raw: IncomingMessage, res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  const gone = () => ac.abort();
  const requestClosed = () => {
    if (!raw.complete) gone();
  };
  const responseClosed = () => {
    if (!res.writableFinished) gone();
  };
  if (raw.destroyed) requestClosed();
  if (res.destroyed || raw.socket?.destroyed) responseClosed();
  if (!ac.signal.aborted) {
    raw.once('close', requestClosed);
    res.once('close', responseClosed);
  }
  return ac.signal;
}

/** A request body nobody will read: let it flow away so the answer is not stuck behind it (the
 * connection closes after our answer anyway). */
function discardBody(raw: IncomingMessage): void {
  if (!raw.readableEnded && !raw.destroyed) raw.resume();
}

/** The 200 answer a handler sends before its body: no keep-alive, as xapi (Http.http_200_ok
 * ~keep_alive:false), with the task's ref. */
export function okHeaders(task: string, extra: Record<string, string | number> = {}): Record<string, string> {
  const h: Record<string, string> = { connection: 'close', ...NO_CACHE, 'task-id': task };
  for (const [k, v] of Object.entries(extra)) h[k] = String(v);
  return h;
}
