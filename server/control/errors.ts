// The control API's errors: { error: { code, message, params } } with a 4xx status (5xx for a bug).
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { XapiError } from '../dispatch/errors.js';
import type { ControlErrorBody } from './contract/route.js';
import { ControlAuthError } from './auth.js';

/** A failure the control API answers with its own status and code. */
export class ControlError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly params?: string[],
  ) {
    super(message);
  }
}

/** XAPI errors a control call may meet, and the status they are answered with. */
const XAPI_STATUS: Record<string, number> = {
  HANDLE_INVALID: 404, UUID_INVALID: 404, SESSION_INVALID: 401, SESSION_AUTHENTICATION_FAILED: 401, RBAC_PERMISSION_DENIED: 403,
};

export function errorBody(e: unknown): { status: number; body: ControlErrorBody } {
  if (e instanceof ControlError) return { status: e.status, body: { error: { code: e.code, message: e.message, ...(e.params ? { params: e.params } : {}) } } };
  if (e instanceof ControlAuthError) {
    const [code, ...params] = e.error.description;
    return { status: e.status, body: { error: { code, message: e.status === 401 ? 'Unauthorised' : 'Forbidden', params } } };
  }
  if (e instanceof z.ZodError) {
    return {
      status: 400,
      body: { error: { code: 'INVALID_INPUT', message: z.prettifyError(e), issues: e.issues.map((i) => ({ path: i.path.map((p) => (typeof p === 'symbol' ? String(p) : p)), message: i.message })) } },
    };
  }
  if (e instanceof XapiError) {
    const [code, ...params] = e.description;
    return { status: XAPI_STATUS[code] ?? 400, body: { error: { code, message: e.description.join(' '), params } } };
  }
  const fst = e as { statusCode?: number; code?: string; message?: string };
  if (typeof fst?.statusCode === 'number' && fst.statusCode >= 400 && fst.statusCode < 500) {
    return { status: fst.statusCode, body: { error: { code: 'BAD_REQUEST', message: String(fst.message ?? fst.code) } } };
  }
  return { status: 500, body: { error: { code: 'INTERNAL_ERROR', message: String((e as Error)?.message ?? e) } } };
}

export function sendControlError(reply: FastifyReply, e: unknown): FastifyReply {
  const { status, body } = errorBody(e);
  if (status === 401) reply.header('www-authenticate', 'Basic realm="xapi-emu"');
  return reply.code(status).header('cache-control', 'no-store').send(body);
}
