// The OpenAPI 3.1 document of the control API, made from the contract's zod schemas.
import { z } from 'zod';
import { contract, type Route } from './contract/index.js';
import { CONTROL_PREFIX } from './prefix.js';

const json = (schema: z.ZodType, io: 'input' | 'output') => z.toJSONSchema(schema, { io, unrepresentable: 'any' });

const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        params: { type: 'array', items: { type: 'string' } },
        issues: { type: 'array', items: { type: 'object', properties: { path: { type: 'array' }, message: { type: 'string' } } } },
      },
    },
  },
};

export function openApiDocument(version = '0'): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [area, routes] of Object.entries(contract)) {
    for (const [op, r] of Object.entries(routes as Record<string, Route>)) {
      const names = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]);
      const path = CONTROL_PREFIX + r.path.replace(/:([A-Za-z_]+)/g, '{$1}');
      const input = json(r.input, 'input') as { properties?: Record<string, unknown>; required?: string[] };
      const props = input.properties ?? {};
      const parameters: unknown[] = names.map((n) => ({ name: n, in: 'path', required: true, schema: props[n] ?? { type: 'string' } }));
      const op3: Record<string, unknown> = {
        operationId: `${area}.${op}`,
        summary: r.summary,
        tags: [area],
        responses: {
          '200': { description: 'OK', content: { 'application/json': { schema: json(r.output, 'output') } } },
          default: { description: 'An error', content: { 'application/json': { schema: errorSchema } } },
        },
      };
      const rest = Object.fromEntries(Object.entries(props).filter(([k]) => !names.includes(k)));
      const required = (input.required ?? []).filter((k) => !names.includes(k));
      if (r.method === 'GET') {
        for (const [k, s] of Object.entries(rest)) parameters.push({ name: k, in: 'query', required: required.includes(k), schema: s });
      } else if (Object.keys(rest).length > 0) {
        op3.requestBody = {
          required: required.length > 0,
          content: { 'application/json': { schema: { ...input, properties: rest, required } } },
        };
      }
      if (parameters.length) op3.parameters = parameters;
      (paths[path] ??= {})[r.method.toLowerCase()] = op3;
    }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'xapi-emu control API', version },
    servers: [{ url: '/' }],
    components: { securitySchemes: { basic: { type: 'http', scheme: 'basic' }, session: { type: 'apiKey', in: 'query', name: 'session_id' } } },
    security: [{ basic: [] }, { session: [] }],
    paths,
  };
}
