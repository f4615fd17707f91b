// The live status page: GET /xapi-emu/ serves static files shipped beside this module (plain HTML,
// JS and CSS, no build step), which render GET /xapi-emu/status and follow GET /xapi-emu/events.
// The page, its files and the stream take the control API's credentials (a pool-admin); a browser
// gets the Basic prompt from the 401 and sends the same credentials with the page's requests.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../../app.js';
import { authorizeControl } from '../auth.js';
import { ControlError, sendControlError } from '../errors.js';
import { CONTROL_PREFIX } from '../prefix.js';
import { streamEvents, streamParams, streamsOf } from './events.js';

const STATIC_DIR = fileURLToPath(new URL('./static/', import.meta.url));

/** what is served, by path under the control prefix. The script and the style sheet hold nothing
 * of the pool and are served to anyone, so that a page opened with ?session_id= (which its
 * sub-resources do not carry) loads them; the page and everything it reads take credentials. */
const FILES: Record<string, { file: string; type: string; open?: boolean }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/page/status.js': { file: 'status.js', type: 'text/javascript; charset=utf-8', open: true },
  '/page/status.css': { file: 'status.css', type: 'text/css; charset=utf-8', open: true },
};

// nothing but the page's own files and calls: no inline code, no other origin
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export async function statusPagePlugin(app: FastifyInstance, ctx: HttpPluginContext): Promise<void> {
  const { emu } = ctx;
  // read once: the files ship with the module
  const bodies = new Map(Object.entries(FILES).map(([path, f]) => [path, { ...f, body: readFileSync(STATIC_DIR + f.file) }]));
  const authorized = async (req: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    try {
      await authorizeControl(emu, req);
      return true;
    } catch (e) {
      sendControlError(reply, e);
      return false;
    }
  };
  for (const [path, { type, body, open }] of bodies) {
    app.get(CONTROL_PREFIX + path, { exposeHeadRoute: false }, async (req, reply) => {
      if (!open && !(await authorized(req, reply))) return reply;
      return reply
        .header('content-type', type)
        .header('cache-control', 'no-store')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', CSP)
        .send(body);
    });
  }
  // relative links of the page resolve under the prefix only with its trailing slash
  app.get(CONTROL_PREFIX, { exposeHeadRoute: false }, async (req, reply) => {
    const q = req.url.indexOf('?');
    return reply.redirect(`${CONTROL_PREFIX}/${q < 0 ? '' : req.url.slice(q)}`, 302);
  });
  const streams = streamsOf(app);
  app.get(`${CONTROL_PREFIX}/events`, { exposeHeadRoute: false }, async (req, reply) => {
    if (!(await authorized(req, reply))) return reply;
    let p;
    try {
      p = streamParams(req.query as Record<string, unknown>);
    } catch (e) {
      return sendControlError(reply, new ControlError(400, 'INVALID_INPUT', `bad stream parameter: ${(e as Error).message}`));
    }
    streamEvents(emu, req, reply, p, streams);
    return reply;
  });
}
