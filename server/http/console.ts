// The console handlers of a host, as xapi's console.ml and xapi_vncsnapshot.ml:
//   CONNECT /console?ref=|uuid=   (xe console, XenCenter): 200, then the raw RFB or vt100 stream
//   GET /console?ref=|uuid=       (XO, XO Lite): a WebSocket (subprotocol binary) carrying it
//   GET /vncsnapshot?uuid=|ref=   the screen as a JPEG
// `ref`/`uuid` name a VM (its rfb console) or a console. As xapi: a request that names no console,
// a VM without an rfb console, a VM not running, or running on another host fails (500, xapi's
// Failure; xapi does not redirect consoles); a control domain's console needs pool-admin
// (http/connect_console/host_console); pool.limit_console_sessions refuses WebSockets and a second
// CONNECT to the same VM with 503.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { WebSocketServer, WebSocket } from 'ws';
import type { HttpPluginContext } from '../app.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { HttpError, runHttpHandler, sendError, type HttpCall } from './auth.js';
import { openConsole, snapshotJpeg, type ConsoleConnection } from '../console/index.js';

/** xapi's Console.Failure: a request its console handlers cannot serve */
const failure = (why: string) => new HttpError(500, new Error(`Console.Failure: ${why}`));

const queryOf = (req: FastifyRequest, name: string): string | undefined => {
  const v = (req.query as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(v) ? v[0] : v;
};

/** Console.console_of_request: the console a request names. */
function consoleOfRequest(emu: Emulator, req: FastifyRequest): string {
  const uuid = queryOf(req, 'uuid');
  const ref = queryOf(req, 'ref');
  let given: string;
  if (uuid !== undefined) {
    const found = emu.db.refByUuid('VM', uuid) ?? emu.db.refByUuid('console', uuid);
    if (found === undefined) throw failure(`no VM or console with uuid ${uuid}`);
    given = found;
  } else if (ref !== undefined) given = ref;
  else throw failure("the request lacks a 'ref' or 'uuid' parameter");
  if (emu.db.has('console', given)) return given;
  if (!emu.db.has('VM', given)) throw failure(`${given} is neither a VM nor a console`);
  const rfb = ((emu.db.get('VM', given)!.consoles ?? []) as string[]).find((c) => emu.db.get('console', c)?.protocol === 'rfb');
  if (rfb === undefined) throw failure('no VNC console for the VM');
  return rfb;
}

/** Console.rbac_check_for_control_domain: a host's own console is for pool-admin only. */
function checkHostConsole(call: HttpCall, console: string, action: string): void {
  const { emu, session } = call;
  const vm = emu.db.get('VM', String(emu.db.get('console', console)!.VM));
  if (!vm?.is_control_domain) return;
  const s = emu.db.get('session', session);
  if (s?.is_local_superuser) return;
  const subject = s && emu.db.get('subject', String(s.subject));
  const roles = ((subject?.roles ?? []) as string[]).map((r) => String(emu.db.get('role', r)?.name_label ?? ''));
  if (roles.includes('pool-admin')) return;
  throw new HttpError(500, new XapiError('RBAC_PERMISSION_DENIED', [
    `http/${action}/host_console`, 'No permission in user session. (Roles with this permission: pool-admin)',
  ]));
}

/** Console.check_vm_is_running_here. */
function checkRunningHere(call: HttpCall, console: string): string {
  const vm = String(call.emu.db.get('console', console)!.VM);
  const rec = call.emu.db.get('VM', vm);
  if (rec?.power_state !== 'Running') throw failure(`VM ${vm} has power_state <> Running`);
  if (rec.resident_on !== call.host) throw failure(`VM ${vm} has resident_on = ${String(rec.resident_on)} <> localhost`);
  return vm;
}

const protocolOf = (emu: Emulator, console: string): 'rfb' | 'vt100' => {
  const p = emu.db.get('console', console)!.protocol;
  if (p === 'rfb' || p === 'vt100') return p;
  throw failure('no support for tunnelling RDP');
};

const limitEnabled = (emu: Emulator): boolean => emu.db.get('pool', emu.pool)?.limit_console_sessions === true;

/** The CONNECT connections per VM (xapi's Connection_limit): user names. */
const connected = new WeakMap<Emulator, Map<string, string[]>>();

/** Serves the stream until either side ends it. */
async function serve(conn: ConsoleConnection | null): Promise<void> {
  if (!conn) throw failure('the VM has no domain');
  await conn.done;
}

async function connectProxy(call: HttpCall, vm: string, protocol: 'rfb' | 'vt100', socket: Socket): Promise<void> {
  const { emu, res, session } = call;
  const user = String(emu.db.get('session', session)?.auth_user_name ?? '');
  let perVm = connected.get(emu);
  if (!perVm) connected.set(emu, (perVm = new Map()));
  const users = perVm.get(vm) ?? [];
  if (limitEnabled(emu) && users.length > 0) {
    const body =
      '<html><body><h1>Connection Limit Exceeded</h1><p>There\'re users currently connected to this console ' +
      `(VM ${vm}). No more connections are allowed when limit_console_sessions is enabled.</p></body></html>`;
    return sendError(res, 503, 'Connection Limit Exceeded', body);
  }
  perVm.set(vm, [...users, user]);
  try {
    res.detachSocket(socket);
    socket.write('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nCache-Control: no-cache, no-store\r\n\r\n');
    const conn = openConsole(emu, vm, protocol, {
      write: (b) => void (socket.writable && socket.write(b)),
      close: () => socket.end(),
    });
    if (conn) {
      socket.on('data', (b: Buffer) => conn.receive(b));
      socket.once('close', () => conn.close());
      socket.once('end', () => conn.close());
    } else socket.end();
    await serve(conn);
  } finally {
    const left = perVm.get(vm) ?? [];
    const i = left.indexOf(user);
    if (i >= 0) left.splice(i, 1);
    if (left.length === 0) perVm.delete(vm);
  }
}

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  maxPayload: 1 << 20,
  // XO and noVNC ask for "binary": frames carry the console's bytes as they are
  handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
});

async function wsProxy(call: HttpCall, vm: string, protocol: 'rfb' | 'vt100', socket: Socket): Promise<void> {
  const { emu, req, res } = call;
  if (limitEnabled(emu)) return sendError(res, 503, 'Service Unavailable');
  if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') throw new HttpError(501, new Error('not a WebSocket upgrade'));
  res.detachSocket(socket);
  const ws = await new Promise<WebSocket | null>((resolve) => {
    // ws answers a bad handshake itself and destroys the socket
    const gone = () => resolve(null);
    socket.once('close', gone);
    wss.handleUpgrade(req.raw, socket, Buffer.alloc(0), (w) => {
      socket.off('close', gone);
      resolve(w);
    });
  });
  if (!ws) return;
  const conn = openConsole(emu, vm, protocol, {
    write: (b) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(b, { binary: true });
    },
    close: () => ws.close(1000),
  });
  if (!conn) {
    ws.close(1011);
    throw failure('the VM has no domain');
  }
  ws.on('message', (data: Buffer | string) => conn.receive(typeof data === 'string' ? Buffer.from(data, 'latin1') : data));
  ws.once('close', () => conn.close());
  ws.on('error', () => conn.close());
  await serve(conn);
}

function consoleHandler(ctx: HttpPluginContext, action: 'connect_console' | 'connect_console_ws', open: Set<Socket>) {
  return (req: FastifyRequest, reply: Parameters<typeof runHttpHandler>[2]) =>
    runHttpHandler(ctx, req, reply, { action, label: 'Connection to VM console' }, async (call) => {
      const console = consoleOfRequest(call.emu, req);
      const protocol = protocolOf(call.emu, console);
      checkHostConsole(call, console, 'connect_console');
      const vm = checkRunningHere(call, console);
      const socket = req.raw.socket as Socket;
      // only a request Node handed over (an upgrade or a CONNECT) owns its socket
      if (!(req.raw as { upgrade?: boolean }).upgrade) throw new HttpError(501, new Error('not a WebSocket upgrade'));
      open.add(socket);
      socket.once('close', () => open.delete(socket));
      if (action === 'connect_console') await connectProxy(call, vm, protocol, socket);
      else await wsProxy(call, vm, protocol, socket);
    });
}

export async function consolePlugin(app: FastifyInstance, ctx: HttpPluginContext): Promise<void> {
  // a closing server ends its open consoles (Node's server waits for the connections it handed over)
  const open = new Set<Socket>();
  app.addHook('preClose', (done) => {
    for (const s of open) s.destroy();
    done();
  });
  app.route({ method: 'CONNECT', url: '/console', handler: consoleHandler(ctx, 'connect_console', open) });
  app.get('/console', consoleHandler(ctx, 'connect_console_ws', open));
  app.get('/vncsnapshot', (req, reply) =>
    runHttpHandler(ctx, req, reply, { action: 'get_vncsnapshot', label: 'Taking snapshot of VM console' }, async (call) => {
      const console = consoleOfRequest(call.emu, req);
      checkHostConsole(call, console, 'get_vncsnapshot');
      const vm = String(call.emu.db.get('console', console)!.VM);
      const rec = call.emu.db.get('VM', vm);
      // xapi asks the local xenopsd for the console's address: none for a VM without a domain here
      const jpg = rec?.power_state === 'Running' && rec.resident_on === call.host ? snapshotJpeg(call.emu, vm) : null;
      if (!jpg) return sendError(call.res, 404, 'Not Found');
      // the name of xapi's temporary file (random, as Filename.temp_file's)
      const name = `snapshot${randomBytes(3).toString('hex')}.jpg`;
      call.res.writeHead(200, {
        connection: 'keep-alive',
        'content-length': String(jpg.length),
        'content-disposition': `attachment; filename="${name}"`,
      });
      call.res.end(jpg);
    }),
  );
}
