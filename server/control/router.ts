// The routes of the contract, matched by method and path, and run: credentials, input validated with
// the route's zod schema, the handler, a JSON answer. Loaded at the first control call (plugin.ts),
// so that building the schemas of every route costs nothing at start.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { contract, type Route } from './contract/index.js';
import { authorizeControl } from './auth.js';
import { ControlError, sendControlError } from './errors.js';
import { handlers, type ControlContext } from './handlers/index.js';
import { openApiDocument } from './openapi.js';

type ControlHandler = (ctx: ControlContext, input: unknown) => unknown;

interface Compiled {
  name: string;
  route: Route;
  pattern: RegExp;
  params: string[];
  handler: ControlHandler | undefined;
}

const table: Compiled[] = [];
for (const [area, routes] of Object.entries(contract)) {
  for (const [op, route] of Object.entries(routes as Record<string, Route>)) {
    const params: string[] = [];
    const source = route.path
      .split('/')
      .map((seg) => {
        if (!seg.startsWith(':')) return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        params.push(seg.slice(1));
        return '([^/]+)';
      })
      .join('/');
    const handler = (handlers as Record<string, Record<string, ControlHandler>>)[area]?.[op];
    table.push({ name: `${area}.${op}`, route, pattern: new RegExp(`^${source}/?$`), params, handler });
  }
}

let doc: unknown;

const decode = (s: string): string => {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new ControlError(400, 'INVALID_INPUT', `bad escape in the path: ${s}`);
  }
};

/** Path parameters, then the query (GET) or the JSON body (others), as one object. */
function rawInput(r: Route, req: FastifyRequest, params: Record<string, string>): Record<string, unknown> {
  const rest = r.method === 'GET' ? (req.query as Record<string, unknown>) : req.body;
  if (rest !== undefined && rest !== null && (typeof rest !== 'object' || Array.isArray(rest))) {
    throw new ControlError(400, 'INVALID_INPUT', 'the body must be a JSON object');
  }
  return { ...((rest as Record<string, unknown>) ?? {}), ...params };
}

/** Answers a request under the prefix; `path` is what follows it ("/clock"). */
export async function routeControl(ctx: HttpPluginContext, req: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply> {
  try {
    const user = await authorizeControl(ctx.emu, req);
    if (req.method === 'GET' && path === '/openapi.json') {
      doc ??= openApiDocument();
      return reply.header('cache-control', 'no-store').send(doc);
    }
    for (const c of table) {
      if (c.route.method !== req.method) continue;
      const m = c.pattern.exec(path);
      if (!m) continue;
      const params = Object.fromEntries(c.params.map((p, i) => [p, decode(m[i + 1])]));
      if (!c.handler) throw new XapiError('NOT_IMPLEMENTED', [c.name]);
      const input = c.route.input.parse(rawInput(c.route, req, params));
      const out = await c.handler({ ...ctx, req, reply, user, host: ctx.hostOf(req) }, input);
      if (reply.sent) return reply;
      return reply.header('cache-control', 'no-store').send(out);
    }
    throw new ControlError(404, 'NOT_FOUND', `no control route ${req.method} ${req.url.split('?')[0]}`);
  } catch (e) {
    return sendControlError(reply, e);
  }
}
