// The control API's HTTP front under /xapi-emu/: JSON bodies, JSON errors, and every request handed
// to the router (router.ts: the contract's routes, validated with their zod schemas, and the OpenAPI
// document at /xapi-emu/openapi.json), which is loaded at the first control call.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { ControlError, sendControlError } from './errors.js';
import { CONTROL_PREFIX } from './prefix.js';

export { CONTROL_PREFIX, ControlError, sendControlError };

export async function controlPlugin(root: FastifyInstance, ctx: HttpPluginContext): Promise<void> {
  // in a scope of its own prefix, so that its answers to what matches nothing are for /xapi-emu/... only
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
  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const { routeControl } = await import('./router.js');
    const path = req.url.split('?')[0].slice(CONTROL_PREFIX.length) || '/';
    return routeControl(ctx, req, reply, path);
  };
  app.all('/*', handle);
}
