// In-process use from a Node test suite: startEmulator() opens a pool on a free loopback port and
// hands back what a test needs (the URL, credentials, the control API's client, stop()).
import { startServer, type RunningServer, type ServerOptions } from './app.js';
import { controlClient, type ControlClient } from './control/client.js';
import type { UserSpec } from './auth/users.js';
import type { Emulator } from './emulator.js';
import type { FixtureOption } from './control/fixture/startup.js';

export interface StartEmulatorOptions {
  /** hosts in the pool (default 1) */
  hosts?: number;
  /** seed for refs, uuids, MACs and guest addresses: the same seed gives the same pool */
  seed?: string;
  /** root's password (default: a fresh random one) */
  password?: string;
  users?: UserSpec[];
  /** wall seconds per simulated second (default 0: simulated work is instant) */
  timeScale?: number;
  /** a fixture to load into the new pool: a YAML/JSON file, or `{ doc, baseDir }` */
  fixture?: FixtureOption;
  /** a data directory to keep the pool in (default: memory only, gone with stop()) */
  dataDir?: string;
  /** default 0: a free port */
  port?: number;
  /** seconds before a failed login is answered (default 0 here; xapi waits 5) */
  authFailDelay?: number;
  /** anything else startServer takes */
  server?: Omit<ServerOptions, 'hosts' | 'seed' | 'password' | 'users' | 'timeScale' | 'dataDir' | 'memory' | 'port' | 'authFailDelay' | 'fixture'>;
}

export interface EmulatorHandle {
  /** the master's URL, e.g. http://127.0.0.1:41234/ */
  url: string;
  /** every host's URL, master first */
  urls: string[];
  username: 'root';
  password: string;
  /** the control API (/xapi-emu/) as root */
  control: ControlClient;
  /** the running server (toolstack restart, the current Emulator ...) */
  server: RunningServer;
  readonly emu: Emulator;
  /** Closes the listeners and removes an in-memory pool's storage. */
  stop(): Promise<void>;
}

export async function startEmulator(options: StartEmulatorOptions = {}): Promise<EmulatorHandle> {
  const password = options.password ?? `xapi-emu-${Math.random().toString(36).slice(2, 12)}`;
  const server = await startServer({
    ...options.server,
    host: options.server?.host ?? '127.0.0.1',
    port: options.port ?? 0,
    hosts: options.hosts,
    seed: options.seed,
    password,
    users: options.users,
    timeScale: options.timeScale,
    fixture: options.fixture,
    authFailDelay: options.authFailDelay ?? 0,
    ...(options.dataDir ? { dataDir: options.dataDir } : { memory: true }),
  });
  const url = server.urls[0];
  return {
    url,
    urls: server.urls,
    username: 'root',
    password,
    control: controlClient({ url, username: 'root', password }),
    server,
    get emu() {
      return server.emu;
    },
    stop: () => server.close(),
  };
}
