// The control API's HTTP front: every route of the contract under /xapi-emu/, its input validated
// with the route's zod schema, JSON answers, errors as { error: { code, message, params } } with a
// 4xx status, and the OpenAPI document of the whole contract at /xapi-emu/openapi.json.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { contract, type ControlErrorBody, type Route } from './contract/index.js';
import { ControlAuthError, authorizeControl } from './auth.js';
import { handlers, type ControlContext } from './handlers/index.js';
import { openApiDocument } from './openapi.js';

import { CONTROL_PREFIX } from './prefix.js';

export { CONTROL_PREFIX };

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

/** Path parameters, then the query (GET) or the JSON body (others), as one object. */
function rawInput(r: Route, req: FastifyRequest): Record<string, unknown> {
  const params = (req.params ?? {}) as Record<string, string>;
  const rest = r.method === 'GET' ? (req.query as Record<string, unknown>) : req.body;
  if (rest !== undefined && rest !== null && (typeof rest !== 'object' || Array.isArray(rest))) {
    throw new ControlError(400, 'INVALID_INPUT', 'the body must be a JSON object');
  }
  return { ...((rest as Record<string, unknown>) ?? {}), ...params };
}

export async function controlPlugin(root: FastifyInstance, ctx: HttpPluginContext): Promise<void> {
  // in a scope of its own prefix, so that its not-found answer is for /xapi-emu/... only
  await root.register(async (app) => controlRoutes(app, ctx), { prefix: CONTROL_PREFIX });
}

async function controlRoutes(app: FastifyInstance, ctx: HttpPluginContext): Promise<void> {
  app.setErrorHandler((err, _req, reply) => {
    sendControlError(reply, err);
  });
  app.setNotFoundHandler((req, reply) => {
    sendControlError(reply, new ControlError(404, 'NOT_FOUND', `no control route ${req.method} ${req.url.split('?')[0]}`));
  });
  // bodies are JSON whatever their content type says (`curl -d '{...}'` sends a form's type);
  // an empty body is an empty input
  const parseJson = (_req: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: unknown) => void) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(new ControlError(400, 'INVALID_INPUT', 'the body is not valid JSON'), undefined);
    }
  };
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, parseJson);
  let doc: unknown;
  app.get('/openapi.json', async (req, reply) => {
    try {
      await authorizeControl(ctx.emu, req);
    } catch (e) {
      return sendControlError(reply, e);
    }
    doc ??= openApiDocument();
    return reply.header('cache-control', 'no-store').send(doc);
  });
  for (const [area, routes] of Object.entries(contract)) {
    for (const [op, r] of Object.entries(routes as Record<string, Route>)) {
      const handler = (handlers as Record<string, Record<string, ControlHandler>>)[area]?.[op];
      app.route({
        method: r.method,
        url: r.path,
        handler: async (req, reply) => {
          try {
            const user = await authorizeControl(ctx.emu, req);
            if (!handler) throw new XapiError('NOT_IMPLEMENTED', [`${area}.${op}`]);
            const input = r.input.parse(rawInput(r, req));
            const c: ControlContext = { ...ctx, req, reply, user, host: ctx.hostOf(req) };
            const out = await handler(c, input);
            if (reply.sent) return reply;
            return reply.header('cache-control', 'no-store').send(out);
          } catch (e) {
            return sendControlError(reply, e);
          }
        },
      });
    }
  }
}

type ControlHandler = (ctx: ControlContext, input: unknown) => unknown;
