// GET / and every path no other handler serves: the host's web root (xapi's fileserver.ml on
// /opt/xensource/www). With --www DIR, the files of DIR (a directory answers its index.html), so
// that a build of XO Lite is served by the emulator as a host serves it; nothing outside DIR is
// ever read (".." and symlinks leading out are refused with xapi's 403). Without it, a landing page.
import { realpath, stat, open } from 'node:fs/promises';
import { extname, resolve, sep } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPlugin } from '../app.js';

/** Magic_mime's types for what a web root holds */
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html', '.htm': 'text/html', '.css': 'text/css', '.js': 'application/javascript',
  '.mjs': 'application/javascript', '.json': 'application/json', '.map': 'application/json',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg',
  '.gif': 'image/gif', '.ico': 'image/x-icon', '.webp': 'image/webp', '.woff': 'font/woff',
  '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.otf': 'font/otf', '.txt': 'text/plain',
  '.xml': 'application/xml', '.wasm': 'application/wasm', '.webmanifest': 'application/manifest+json',
};

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&quot;'));

const NO_CACHE = { connection: 'close', 'cache-control': 'no-cache, no-store' };

function forbidden(reply: FastifyReply): FastifyReply {
  return reply.code(403).headers({ ...NO_CACHE, 'content-type': 'text/html' })
    .send('<html><body><h1>HTTP 403 forbidden</h1>Access to the requested resource is forbidden.</body></html>');
}

function missing(reply: FastifyReply, uri: string): FastifyReply {
  return reply.code(404).headers({ ...NO_CACHE, 'content-type': 'text/html' })
    .send(`<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN"> <html><head> <title>404 Not Found</title> </head><body> <h1>Not Found</h1> <p>The requested URL ${escapeHtml(uri)} was not found on this server.</p> <hr><address>Xapi Server</address></body></html>`);
}

/** The page a host without a web client answers on / : what it is, and where its clients are. */
function landingPage(brand: string, version: string, hostname: string): string {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(`${brand} ${version}`)}</title></head>
<body>
<h1>${escapeHtml(brand)} ${escapeHtml(version)}</h1>
<p>Host <b>${escapeHtml(hostname)}</b>. Manage it with a web client:</p>
<ul>
<li><a href="https://lite.xen-orchestra.com/">XO Lite</a>, the web interface of a single pool</li>
<li><a href="https://xen-orchestra.com/">Xen Orchestra</a>, for several pools</li>
</ul>
<p>The API answers XML-RPC on <code>POST /</code> and JSON-RPC on <code>POST /jsonrpc</code>.</p>
</body></html>
`;
}

/** The decoded path under the root, or null when it cannot name a file (bad escape, NUL). */
function relativePath(url: string): string | null {
  const path = url.split('?', 1)[0];
  try {
    const p = decodeURIComponent(path);
    return p.includes('\0') ? null : p;
  } catch {
    return null;
  }
}

async function serveFile(root: string, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const uri = req.url.split('?', 1)[0];
  const rel = relativePath(req.url);
  if (rel === null) return missing(reply, uri);
  let file = resolve(root, `.${rel.startsWith('/') ? '' : '/'}${rel}`);
  const inside = (p: string) => p === root || p.startsWith(root + sep);
  if (!inside(file)) return forbidden(reply);
  try {
    // a symlink may not lead out either
    file = await realpath(file);
    if (!inside(file)) return forbidden(reply);
    if ((await stat(file)).isDirectory()) file = await realpath(resolve(file, 'index.html'));
    if (!inside(file)) return forbidden(reply);
    const handle = await open(file, 'r');
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      return missing(reply, uri);
    }
    const type = CONTENT_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
    return reply.code(200).headers({ 'content-type': type, 'content-length': String(st.size) }).send(handle.createReadStream());
  } catch {
    return missing(reply, uri);
  }
}

export const webrootPlugin: HttpPlugin = async (app, { emu, hostOf, www }) => {
  // (a directory gone since the start serves nothing: its paths answer 404)
  const root = www ? await realpath(resolve(www)).catch(() => resolve(www)) : null;
  const answer = async (req: FastifyRequest, reply: FastifyReply) => {
    if (root) return serveFile(root, req, reply);
    const uri = req.url.split('?', 1)[0];
    if (uri !== '/' && uri !== '/index.html') return missing(reply, uri);
    const host = emu.db.get('host', hostOf(req));
    const sv = (host?.software_version ?? {}) as Record<string, string>;
    return reply.code(200).header('content-type', 'text/html').send(landingPage(sv.product_brand ?? 'XCP-ng', sv.product_version ?? '', String(host?.hostname ?? '')));
  };
  app.get('/', answer);
  app.get('/*', answer);
};
