// HTTP(S) front of an emulated pool: one Fastify instance per protocol (HTTP, HTTPS) with the RPC
// endpoints plus any HTTP handler plugins, served by one Node server per listening address (each
// host of the pool has its own on loopback). startServer opens the listeners for the whole pool and
// implements the toolstack restart.
import { join } from 'node:path';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createServer as createHttpServer, ServerResponse, type Server as HttpServer, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createHttpsServer } from 'node:https';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { model } from '../schema/index.js';
import { Emulator, type EmulatorOptions } from './emulator.js';
import { readConf, type XapiConf } from './config.js';
import { smReady } from './sm/index.js';
import type { UserSpec } from './auth/users.js';
import type { FixtureOption } from './control/fixture/startup.js';
import { guardConnections, type ConnectionTimeouts } from './transport/timeouts.js';
import { rpcPlugin, hostByLocalAddress, receivingHost, DEFAULT_RPC_BODY_LIMIT } from './transport/rpc-plugin.js';
import type { GuestProfile } from './guest/profile.js';
// the HTTP handlers (/import_raw_vdi, /export_raw_vdi …) register themselves
import './http/index.js';
// the pool-internal HTTP of pool.join (the master's side)
import { recoverAdoptions } from './pool/adoption.js';
import { setPoolRuntime } from './pool/runtime.js';
import { clearJournal, readJournal, readMember, writeMember, type MemberMarker } from './pool/marker.js';
import { adoptedOnMaster, listenOnMaster } from './pool/handover.js';
import { openDoor, type Door } from './pool/door.js';
// the emulator's control API (/xapi-emu/)
import './control/index.js';
import { ControlError, sendControlError } from './control/errors.js';
import { CONTROL_PREFIX } from './control/prefix.js';
import { materializeSnapshots, restoreInterrupted, takeInitialSnapshot } from './control/snapshots/index.js';
import { NBD_PORT, nbdListenerOf, startNbd, type RunningNbd } from './nbd/index.js';

export { DEFAULT_RPC_BODY_LIMIT };
/** root's password when none is given. Only accepted on loopback addresses (see cli.ts). */
export const DEFAULT_PASSWORD = 'xapi-emu';
export const DEFAULT_PORT = 8080;

// ───────────────────────────── the app ─────────────────────────────

export interface HttpPluginContext {
  emu: Emulator;
  /** the host ref that received a request (by the socket's local address) */
  hostOf: (req: FastifyRequest) => string;
  /** the running server around the app (absent for an app built alone) */
  runtime?: ServerRuntime;
  /** the directory served as the hosts' web root (--www), else a landing page */
  www?: string;
}

/** What a handler may ask of the running server. */
export interface ServerRuntime {
  /** the listeners' URLs, master first */
  urls(): string[];
  /** As `xe-toolstack-restart` (call it after answering: the listeners close). */
  toolstackRestart(): Promise<void>;
}
/** An HTTP handler module (/import, /export_raw_vdi …). Each runs in its own encapsulated scope. */
export type HttpPlugin = (app: FastifyInstance, ctx: HttpPluginContext) => Promise<void> | void;

/** Registers a plugin on every app built from now on (handler modules call it when imported). */
export function registerHttpPlugin(plugin: HttpPlugin): void {
  registeredPlugins().push(plugin);
}
// The handler modules (./http/index.js) are imported by this module, so they register before its
// body runs: the list hangs on a function, which exists from the start (a const would not yet).
function registeredPlugins(): HttpPlugin[] {
  const f = registeredPlugins as { list?: HttpPlugin[] };
  return (f.list ??= []);
}

export interface AppOptions {
  log?: boolean;
  /** largest RPC body in bytes (default 300 KiB, xapi's) */
  bodyLimit?: number;
  https?: { key: string; cert: string };
  /** host ref answering calls received on a local address (default: by host.address, else master) */
  hostFor?: (localAddress: string) => string;
  plugins?: HttpPlugin[];
  runtime?: ServerRuntime;
  /** the web root's directory (see HttpPluginContext.www) */
  www?: string;
}

type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

const ALLOW_ORIGIN = 'access-control-allow-origin';

/** Adds the header to the answer's writeHead rather than with setHeader, which would turn each
 * handler's writeHead into a merge with stored headers (and change what hasHeader reports). */
function allowAnyOrigin(_req: FastifyRequest, reply: FastifyReply, done: () => void): void {
  const res = reply.raw;
  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    const i = rest.findIndex((a) => typeof a === 'object' && a !== null);
    const h = rest[i];
    if (Array.isArray(h)) {
      if (!h.some((k, j) => j % 2 === 0 && String(k).toLowerCase() === ALLOW_ORIGIN)) rest[i] = [...h, ALLOW_ORIGIN, '*'];
    } else if (h) {
      if (!Object.keys(h).some((k) => k.toLowerCase() === ALLOW_ORIGIN)) rest[i] = { ...h, [ALLOW_ORIGIN]: '*' };
    } else if (!this.hasHeader(ALLOW_ORIGIN)) rest.push({ [ALLOW_ORIGIN]: '*' });
    return (writeHead as (...a: unknown[]) => ServerResponse).call(this, status, ...rest);
  } as typeof res.writeHead;
  done();
}

/** The servers of each app: the first is app.server, the others listen on further addresses. */
const serversOf = new WeakMap<FastifyInstance, { make: () => HttpServer; all: HttpServer[] }>();

export function buildApp(emu: Emulator, opts: AppOptions = {}): FastifyInstance {
  const conf = emu.conf;
  // (Node's timers take at most 2^31-1 ms, about 24 days, and treat more as 1 ms)
  const ms = (seconds: number) => Math.min(Math.ceil(seconds * 1000), 2 ** 31 - 1);
  const timeouts: ConnectionTimeouts = {
    headerRead: ms(conf.header_read_timeout_tcp),
    headerTotal: ms(conf.header_total_timeout_tcp),
    idle: ms(conf.idle_timeout_tcp),
  };
  const unguards: (() => void)[] = [];
  const servers: HttpServer[] = [];
  let handler: RequestHandler | undefined;
  const takeover = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (head.length > 0) socket.unshift(head);
    const res = new ServerResponse(req);
    res.assignSocket(socket as Socket);
    res.shouldKeepAlive = false;
    // an answer that is not a takeover (an error, another route) ends the connection
    res.once('finish', () => socket.end());
    socket.on('error', () => socket.destroy());
    handler!(req, res);
  };
  const make = (): HttpServer => {
    const tls = opts.https;
    // a TLS handshake is part of getting the request's headers
    const server: HttpServer = tls
      ? (createHttpsServer({ ...tls, ...(timeouts.headerTotal > 0 ? { handshakeTimeout: timeouts.headerTotal } : {}) }, handler) as unknown as HttpServer)
      : createHttpServer(handler);
    // a client that half-closes its connection after its request still gets the whole answer, as
    // from xapi (Node would cut it and abort the request)
    (server as { httpAllowHalfOpen?: boolean }).httpAllowHalfOpen = true;
    // event.from long-polls for up to its timeout: no request timeout; guardConnections times what
    // waits on the client, and closes idle keep-alive connections
    unguards.push(guardConnections(server, timeouts, tls !== undefined));
    // a WebSocket upgrade or a CONNECT is routed as any request; its handler takes the socket over
    server.on('upgrade', takeover);
    server.on('connect', takeover);
    servers.push(server);
    return server;
  };
  const app = Fastify({
    logger: opts.log ?? false,
    // a request line Fastify cannot route (a bad escape in the path ...): the control API answers
    // its own JSON error, other paths a bare 400
    frameworkErrors: (err, req, res) => {
      const reply = res as unknown as FastifyReply;
      void reply.header('access-control-allow-origin', '*');
      if (req.url.startsWith(`${CONTROL_PREFIX}/`) || req.url === CONTROL_PREFIX) {
        void sendControlError(reply, new ControlError(400, 'INVALID_INPUT', err.message));
      } else void reply.code(400).header('content-type', 'text/plain').send(`${err.message}\n`);
    },
    // every listening address is served by the same instance: building one per host costs
    // milliseconds each, a second for a 64-host pool
    serverFactory: (h: RequestHandler) => {
      handler = h;
      return make();
    },
  }) as unknown as FastifyInstance;
  app.addHttpMethod('CONNECT');
  serversOf.set(app, { make, all: servers });
  app.addHook('onClose', (_app, done) => {
    for (const u of unguards) u();
    // app.close() closes app.server; the servers of further addresses close with it
    const closing = servers.slice(1).map((srv) => new Promise<void>((resolve) => srv.close(() => resolve())));
    for (const srv of servers.slice(1)) srv.closeIdleConnections?.();
    Promise.all(closing).then(() => done(), done);
  });
  // Every answer allows any origin, errors and 404s included, so that a browser client (XO Lite)
  // reads them instead of failing on CORS. The RPC answers carry it already and stay untouched;
  // what Fastify sends (404s, framework errors) gets it here, and the HTTP handlers, which often
  // write raw, get it before they run.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (!reply.hasHeader('access-control-allow-origin')) void reply.header('access-control-allow-origin', '*');
    done(null, payload);
  });
  const hostFor = opts.hostFor ?? hostByLocalAddress(emu);
  app.register(rpcPlugin, { emu, bodyLimit: opts.bodyLimit, hostFor });
  const ctx: HttpPluginContext = { emu, hostOf: receivingHost(hostFor), runtime: opts.runtime, www: opts.www };
  for (const p of [...registeredPlugins(), ...(opts.plugins ?? [])]) {
    app.register(async (scope) => {
      scope.addHook('onRequest', allowAnyOrigin);
      await p(scope, ctx);
    });
  }
  return app;
}

/** Every Node server of an app: app.server, then those of addresses added by listenAlso. */
export function serversOfApp(app: FastifyInstance): HttpServer[] {
  return serversOf.get(app)?.all ?? [app.server as unknown as HttpServer];
}

/** Serves a listening app on one more address too (after app.listen). */
async function listenAlso(app: FastifyInstance, host: string, port: number): Promise<HttpServer> {
  const server = serversOf.get(app)!.make();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

// ───────────────────────────── the server ─────────────────────────────

export interface ServerOptions {
  /** listen address of the master (default 127.0.0.1) */
  host?: string;
  /** default 8080, or 443 with https; 0 picks a free port */
  port?: number;
  https?: boolean;
  /** with https: also plain HTTP on this port */
  httpPort?: number;
  /** data directory (default ./data); ignored with memory */
  dataDir?: string;
  memory?: boolean;
  hosts?: number;
  password?: string;
  seed?: string;
  timeScale?: number;
  /** the pool's default guest profile (server/guest/profile.ts) */
  guestProfile?: GuestProfile;
  /** xapi.conf file, read at start and again on each toolstack restart */
  configFile?: string;
  conf?: XapiConf;
  users?: UserSpec[];
  authFailDelay?: number;
  /** host.address of every host when listening on a non-loopback address (default: host, or
   * 127.0.0.1 for a wildcard address) */
  address?: string;
  log?: boolean;
  bodyLimit?: number;
  plugins?: HttpPlugin[];
  /** seconds in-flight requests get when listeners close before their connections are cut (default 2) */
  closeGrace?: number;
  /** the NBD server's port on every host address (default 10809, or any free port when `port` is 0;
   * null: no NBD server) */
  nbdPort?: number | null;
  /** a directory served as every host's web root (GET /, as /opt/xensource/www) */
  www?: string;
  /** a fixture (a YAML/JSON file, or a document) loaded into the new pool before the listeners open
   * (see control/fixture/startup.ts for a data directory that already holds a pool) */
  fixture?: FixtureOption;
}

export interface RunningServer {
  /** the current Emulator (a new one after each toolstack restart with a data directory) */
  readonly emu: Emulator;
  /** the app of the master's first listener */
  readonly app: FastifyInstance;
  /** one app per protocol (HTTP, HTTPS), each serving every listening address */
  readonly apps: FastifyInstance[];
  /** the Node server of each listener, in the order of urls */
  readonly servers: HttpServer[];
  /** one per listener, master first, e.g. http://127.0.0.1:8080/ */
  readonly urls: string[];
  readonly dataDir: string | null;
  /** As `xe-toolstack-restart`: listeners and the API layer close and reopen on the same database. */
  toolstackRestart(): Promise<void>;
  close(): Promise<void>;
}

const isLoopback = (h: string): boolean => h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
const isWildcard = (h: string): boolean => h === '0.0.0.0' || h === '::' || h === '';
const urlHost = (h: string): string => (isIP(h) === 6 ? `[${h}]` : h);

/** Host i's loopback address: the master's (--host) last octet plus i, so that pools of several
 * instances on one machine do not collide (127.0.0.1 gives 127.0.0.1, 127.0.0.2 ...). */
export function loopbackHostAddress(host: string, i: number): string {
  const m = /^127\.(\d+)\.(\d+)\.(\d+)$/.exec(host);
  if (!m || Number(m[3]) + i > 254) return `127.0.0.${i + 1}`;
  return `127.${m[1]}.${m[2]}.${Number(m[3]) + i}`;
}

/** Rows of classes that xapi does not persist (sessions, tasks …) vanish with the process. */
function dropVolatile(emu: Emulator): void {
  for (const c of model.classes) {
    if (c.persist) continue;
    for (const ref of [...emu.db.table(c.name).keys()]) {
      try {
        emu.db.destroy(c.name, ref);
      } catch {
        /* already gone through a relation */
      }
    }
  }
  emu.cancelHooks.clear();
}

/** The self-signed certificate: <data>/xapi-ssl.pem (key + certificate, as a host's
 * /etc/xensource/xapi-ssl.pem), made on first start; in memory only with `memory`. */
async function certificate(dataDir: string | null, names: string[]): Promise<{ key: string; cert: string }> {
  const file = dataDir ? join(dataDir, 'xapi-ssl.pem') : null;
  let pem = file && existsSync(file) ? readFileSync(file, 'utf8') : null;
  if (!pem) {
    const ips = [...new Set(names.filter((n) => isIP(n) && !isWildcard(n)).concat(['127.0.0.1', '::1']))];
    const notAfterDate = new Date();
    notAfterDate.setFullYear(notAfterDate.getFullYear() + 10);
    const cn = names.find((n) => !isWildcard(n)) ?? 'localhost';
    // (loaded only here: the certificate library costs a tenth of a second at every start)
    const { generate: generateCert } = await import('selfsigned');
    const g = await generateCert([{ name: 'commonName', value: cn }], {
      keySize: 2048,
      algorithm: 'sha256',
      notAfterDate,
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, ...ips.map((ip) => ({ type: 7 as const, ip }))] },
      ],
    });
    pem = g.private + g.cert;
    if (file) writeFileSync(file, pem, { mode: 0o600 });
  }
  // OpenSSL's PEM readers skip blocks of the other kind, so the combined file serves as both
  return { key: pem, cert: pem };
}

export async function startServer(opts: ServerOptions = {}): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  const loopback = isLoopback(host);
  const dataDir = opts.memory ? null : (opts.dataDir ?? 'data');
  const address = opts.address ?? (isWildcard(host) ? '127.0.0.1' : host);
  const emuOpts: EmulatorOptions = {
    dataDir,
    hosts: opts.hosts ?? 1,
    seed: opts.seed,
    guestProfile: opts.guestProfile,
    password: opts.password ?? DEFAULT_PASSWORD,
    users: opts.users,
    timeScale: opts.timeScale,
    authFailDelay: opts.authFailDelay,
    conf: opts.conf ?? (opts.configFile ? readConf(opts.configFile) : undefined),
    // on loopback each host gets its own address (and listener); elsewhere they share one
    hostAddress: loopback ? (i) => loopbackHostAddress(host, i) : () => address,
  };
  const grace = (opts.closeGrace ?? 2) * 1000;

  // a fixture makes the pool with its hosts, and its users log in as those of --users do
  // (the fixture modules are loaded only when a fixture is given: they cost a start without one)
  const fxm = opts.fixture === undefined ? undefined : { ...(await import('./control/fixture/startup.js')), ...(await import('./control/fixture/load.js')) };
  const fx = fxm && opts.fixture !== undefined ? fxm.readFixtureOption(opts.fixture) : undefined;
  if (fx) {
    emuOpts.hosts = fxm!.fixtureHosts(fx.fixture) ?? emuOpts.hosts;
    emuOpts.users = [...(emuOpts.users ?? []), ...(fx.fixture.users ?? [])];
  }
  const loadIt = fx ? (dataDir === null ? true : fxm!.prepareDataDir(dataDir, fx)) : false;

  let emu = new Emulator(emuOpts);
  // an instance whose host another pool adopted comes back as the door to it
  let memberAtStart = dataDir !== null ? await membershipAtStart(dataDir, emu) : undefined;
  if (memberAtStart === 'ejected') {
    // the master let the host go while this instance was down: a fresh pool
    emu.close();
    emu.dispose();
    resetDataDir(dataDir!);
    emu = new Emulator(emuOpts);
    memberAtStart = undefined;
  }
  if (!memberAtStart) {
    recoverAdoptions(emu);
    restoreInterrupted(emu);
    emu.start();
  }
  if (fx && loadIt && !memberAtStart) {
    try {
      await fxm!.loadFixture(emu, fx.fixture, { baseDir: fx.baseDir });
    } catch (e) {
      await smReady(emu);
      emu.close();
      emu.dispose();
      throw e;
    }
    if (dataDir !== null) fxm!.finishDataDir(dataDir, fx);
  }
  // what `reset` goes back to
  // (its files are taken once the storage start-up is done, before any client's storage call)
  if (!memberAtStart) takeInitialSnapshot(emu).catch((e) => console.error(`xapi-emu: no initial snapshot: ${(e as Error).message}`));
  // Listen addresses, from the database (it may predate these options): the master on `host`,
  // members on their own loopback address; elsewhere every call is answered as the master.
  // (after a change of master, the first address may be a member's: each host keeps its address)
  const plan: { addr: string; hostRef: string }[] = [{ addr: host, hostRef: (loopback ? emu.hostByAddress(host) : undefined) ?? emu.master }];
  /** the Node servers listening on each address */
  const serversAt = new Map<string, HttpServer[]>();
  if (loopback) {
    for (const h of emu.hosts) {
      const a = emu.db.get('host', h)?.address;
      if (typeof a === 'string' && /^127\./.test(a) && a !== host && !plan.some((p) => p.addr === a)) plan.push({ addr: a, hostRef: h });
    }
  }
  const tls = opts.https
    ? await certificate(dataDir, [host, address, ...emu.hosts.map((h) => String(emu.db.get('host', h)?.address ?? ''))])
    : undefined;
  let port = opts.port ?? (opts.https ? 443 : DEFAULT_PORT);
  let httpPort = opts.https ? opts.httpPort : undefined;

  let nbdPort = opts.nbdPort === undefined ? (opts.port === 0 ? 0 : NBD_PORT) : opts.nbdPort;
  let nbd: RunningNbd | null = null;
  let apps: FastifyInstance[] = [];
  let urls: string[] = [];
  const runtime: ServerRuntime = { urls: () => urls, toolstackRestart: () => running.toolstackRestart() };
  let door: Door | null = null;

  /** The master: an adopted host's address is served too, at the pool's port. */
  async function listenHost(address: string): Promise<number> {
    if (!loopback || plan.some((p) => p.addr === address)) return port;
    const hostRef = emu.hostByAddress(address) ?? emu.master;
    plan.push({ addr: address, hostRef });
    for (const [i, app] of apps.entries()) {
      const secure = tls !== undefined && i === 0;
      const p = secure || !tls ? port : httpPort!;
      serversAt.set(address, [...(serversAt.get(address) ?? []), await listenAlso(app, address, p)]);
      urls.push(`${secure ? 'https' : 'http'}://${urlHost(address)}:${p}/`);
    }
    return port;
  }

  /** the pool this instance's host was handed over to (null: it serves its own pool) */
  let memberOf: MemberMarker | null = null;

  /** The joiner: its listeners give way to the door (or to the master itself on the same port). */
  async function openMemberDoor(m: MemberMarker): Promise<void> {
    memberOf = m;
    const targetPort = Number(new URL(m.master).port) || 80;
    await listenOnMaster(m.host, m.master, m.secret).catch((e: Error) => console.error(`xapi-emu: the master does not serve this host yet: ${e.message}`));
    if (targetPort === port && m.address === host) {
      urls = [`http://${urlHost(host)}:${port}/`];
      return;
    }
    // the master refusing the connection: if it ejected the host, this instance serves again
    const refused = async (): Promise<{ host: string; port: number } | null> => {
      const adopted = await adoptedOnMaster(m.host, m.master, m.secret).catch(() => undefined);
      if (adopted !== false) return null;
      await becomeStandalone();
      return { host, port };
    };
    door = await openDoor({ host, port }, { host: m.address, port: targetPort }, refused);
    port = door.port;
    urls = [`http://${urlHost(host)}:${door.port}/`];
  }

  /** An ejected member: a fresh standalone pool on its data directory, serving as a master. */
  function becomeStandalone(): Promise<void> {
    return serial(async () => {
      if (closed || !memberOf) return;
      await door?.close();
      door = null;
      memberOf = null;
      emu.dispose();
      if (dataDir !== null) resetDataDir(dataDir);
      emu = new Emulator(emuOpts);
      // the fresh pool's hosts are new objects: each listener answers as the host now at its address
      for (const p of plan) p.hostRef = emu.hostByAddress(p.addr) ?? emu.master;
      registerRuntime();
      emu.start();
      await listen();
    });
  }

  /** The master, after pool.eject: the host's address is served no more; a host of this process
   * (not an adopted one) comes back at its address as a fresh standalone pool of its own. */
  async function hostLeft(address: string, adopted: boolean): Promise<void> {
    const i = plan.findIndex((p) => p.addr === address);
    if (i <= 0) return;
    plan.splice(i, 1);
    const gone = serversAt.get(address) ?? [];
    serversAt.delete(address);
    urls = urls.filter((u) => new URL(u).hostname !== urlHost(address));
    await Promise.all(gone.map((srv) => new Promise<void>((resolve) => {
      srv.closeAllConnections?.();
      srv.close(() => resolve());
    })));
    if (!adopted) await startEjected(address);
  }

  /** The standalone pools of hosts ejected from this process's pool, one per address. */
  const ejected: RunningServer[] = [];
  async function startEjected(address: string): Promise<void> {
    const own = dataDir === null ? null : join(dataDir, 'ejected', address);
    ejected.push(await startServer({
      ...opts, host: address, port, hosts: 1, fixture: undefined, nbdPort: null, address: undefined,
      ...(own === null ? { memory: true } : { memory: false, dataDir: own }),
    }));
  }
  const registerRuntime = () =>
    setPoolRuntime(emu, {
      port: () => port,
      dataDir,
      listenHost,
      hostLeft,
      becomeMember: (m) =>
        serial(async () => {
          if (closed || memberOf) return;
          await closeListeners();
          await smReady(emu);
          emu.close();
          await openMemberDoor(m);
        }),
    });
  registerRuntime();

  async function listen(): Promise<void> {
    // a host answers on the address it listens on, even after host.address followed its
    // management interface elsewhere
    const byAddress = hostByLocalAddress(emu);
    const hostFor = loopback ? (a: string) => plan.find((p) => p.addr === a)?.hostRef ?? byAddress(a) : () => emu.master;
    const appOpts: AppOptions = { log: opts.log, bodyLimit: opts.bodyLimit, hostFor, plugins: opts.plugins, runtime, www: opts.www };
    const opened: FastifyInstance[] = [];
    const openedUrls: string[] = [];
    try {
      const kinds: { secure: boolean }[] = tls ? [{ secure: true }, ...(httpPort !== undefined ? [{ secure: false }] : [])] : [{ secure: false }];
      for (const { secure } of kinds) {
        const app = buildApp(emu, { ...appOpts, https: secure ? tls : undefined });
        opened.push(app);
        for (const [i, { addr }] of plan.entries()) {
          // port 0: the first listener picks the port and the pool's other hosts reuse it
          const wanted = secure || !tls ? port : httpPort!;
          const server = i === 0 ? (await app.listen({ host: addr, port: wanted }), app.server) : await listenAlso(app, addr, wanted);
          serversAt.set(addr, [...(serversAt.get(addr) ?? []), server]);
          const actual = (server.address() as { port: number }).port;
          if (secure || !tls) port = actual;
          else httpPort = actual;
          openedUrls.push(`${secure ? 'https' : 'http'}://${urlHost(addr)}:${actual}/`);
        }
      }
    } catch (e) {
      await Promise.allSettled(opened.map((a) => a.close()));
      throw e;
    }
    apps = opened;
    urls = openedUrls;
    if (nbdPort !== null) {
      try {
        // the host's certificate, made when an NBD client or VDI.get_nbd_info first needs it
        const hostCert = () => (tls ? Promise.resolve(tls) : certificate(dataDir, [host, address, ...plan.map((p) => p.addr)]));
        // one listener per host on loopback; elsewhere the hosts share the one address
        const nbdPlan = loopback ? plan.map((p) => ({ addr: p.addr, hosts: [p.hostRef] })) : [{ addr: host, hosts: [...emu.hosts] }];
        nbd = await startNbd(emu, nbdPlan, nbdPort, hostCert).catch((e: NodeJS.ErrnoException) => {
          // a second emulator on this machine: the default NBD port is taken, any free one serves
          if (opts.nbdPort !== undefined || e.code !== 'EADDRINUSE') throw e;
          console.error(`xapi-emu: NBD port ${nbdPort} in use, the NBD server takes a free port`);
          return startNbd(emu, nbdPlan, 0, hostCert);
        });
      } catch (e) {
        await closeListeners();
        throw e;
      }
      // a toolstack restart comes back on the same port
      nbdPort = nbdListenerOf(emu, emu.master)?.port ?? nbdPort;
    }
  }

  async function closeListeners(): Promise<void> {
    await nbd?.close();
    nbd = null;
    await Promise.all(
      apps.map(async (app) => {
        // idle keep-alive connections close at once; in-flight calls (event.from long polls) get a grace
        const timer = setTimeout(() => {
          for (const server of serversOfApp(app)) server.closeAllConnections?.();
        }, grace);
        try {
          await app.close();
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    apps = [];
    serversAt.clear();
  }

  if (memberAtStart) {
    emu.close();
    await openMemberDoor(memberAtStart);
  } else await listen();
  // hosts ejected from this pool before a restart come back as their own pools
  if (dataDir !== null && existsSync(join(dataDir, 'ejected'))) {
    for (const a of readdirSync(join(dataDir, 'ejected'))) if (/^127\.\d+\.\d+\.\d+$/.test(a) && !plan.some((p) => p.addr === a)) await startEjected(a);
  }

  let busy: Promise<void> = Promise.resolve();
  let closed = false;
  const serial = (f: () => Promise<void>): Promise<void> => (busy = busy.then(f, f));

  const running: RunningServer = {
    get emu() {
      return emu;
    },
    get app() {
      return apps[0];
    },
    get apps() {
      return apps;
    },
    get servers() {
      return apps.flatMap(serversOfApp);
    },
    get urls() {
      return urls;
    },
    dataDir,
    toolstackRestart: () =>
      serial(async () => {
        if (closed || memberOf) return;
        let conf = emu.conf;
        if (opts.configFile) {
          try {
            conf = readConf(opts.configFile);
          } catch (e) {
            console.error(`xapi-emu: keeping the previous configuration: ${(e as Error).message}`);
          }
        }
        await closeListeners();
        // storage start-up work (mounting, reconciling SRs) finishes before the API layer goes,
        // so that none of it runs on into the next one, or into a removed data directory
        await smReady(emu);
        // snapshots that live in the database's memory go to disk before it closes
        if (dataDir !== null) materializeSnapshots(emu);
        emu.close();
        if (dataDir === null) {
          // nothing to re-open from: the same in-memory database, minus what xapi does not persist
          dropVolatile(emu);
          emu.conf = conf;
          emu.db.flush();
        } else {
          emu = new Emulator({ ...emuOpts, conf, clock: emu.clock });
          recoverAdoptions(emu);
          restoreInterrupted(emu);
        }
        registerRuntime();
        emu.start();
        await listen();
      }),
    close: () =>
      serial(async () => {
        if (closed) return;
        closed = true;
        for (const e of ejected.splice(0)) await e.close();
        if (memberOf) {
          await door?.close();
          emu.dispose();
          return;
        }
        await closeListeners();
        // storage start-up work (mounting, reconciling SRs) finishes before the API layer goes,
        // so that none of it runs on into the next one, or into a removed data directory
        await smReady(emu);
        emu.close();
        emu.dispose();
      }),
  };
  return running;
}

/** At start: the member marker, or a hand-over cut before its end resolved with the master (its
 * commit is what counts). A master out of reach leaves the journal for the next start, and the
 * instance serves as the standalone pool it still is. */
async function membershipAtStart(dataDir: string, emu: Emulator): Promise<MemberMarker | 'ejected' | undefined> {
  const m = readMember(dataDir);
  if (m) return (await adoptedOnMaster(m.host, m.master, m.secret).catch(() => undefined)) === false ? 'ejected' : m;
  const j = readJournal(dataDir);
  if (!j) return undefined;
  const adopted = await adoptedOnMaster(j.host, j.master, j.secret).catch(() => undefined);
  if (adopted === false) clearJournal(dataDir);
  if (adopted !== true) return undefined;
  const address = String(emu.db.get('host', emu.db.refByUuid('host', j.host) ?? emu.master)?.address ?? '');
  const member: MemberMarker = { master: j.master, host: j.host, address, secret: j.secret };
  writeMember(dataDir, member);
  clearJournal(dataDir);
  return member;
}

/** What pool.eject leaves of an adopted host's data directory: nothing, for a fresh pool (its
 * certificate stays, as the host's does, and the running process's pid file). */
function resetDataDir(dataDir: string): void {
  for (const name of readdirSync(dataDir)) {
    if (name === 'xapi-ssl.pem' || name === 'xapi-emu.pid') continue;
    rmSync(join(dataDir, name), { recursive: true, force: true });
  }
}
