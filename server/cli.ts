// The `xapi-emu` command: flags (each with an XAPI_EMU_* environment variable), start-up banner,
// signals (SIGINT/SIGTERM stop, SIGHUP = toolstack restart) and `xapi-emu toolstack-restart`.
import { parseArgs } from 'node:util';
import { existsSync, readFileSync, unlinkSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { userSpecs, type UserSpec } from './auth/users.js';
import { GUEST_PROFILES, isGuestProfile, type GuestProfile } from './guest/profile.js';
import { startServer, DEFAULT_PASSWORD, DEFAULT_PORT, DEFAULT_RPC_BODY_LIMIT, type RunningServer } from './app.js';

type Kind = 'string' | 'boolean';
interface Flag { type: Kind; env: string; help: string; arg?: string }

const FLAGS = {
  host: { type: 'string', env: 'XAPI_EMU_HOST', arg: 'ADDR', help: 'listen address of the master (default 127.0.0.1)' },
  port: { type: 'string', env: 'XAPI_EMU_PORT', arg: 'N', help: `listen port (default ${DEFAULT_PORT}, or 443 with --https; 0 = any free port)` },
  https: { type: 'boolean', env: 'XAPI_EMU_HTTPS', help: 'serve TLS with a self-signed certificate (<data>/xapi-ssl.pem)' },
  'http-port': { type: 'string', env: 'XAPI_EMU_HTTP_PORT', arg: 'N', help: 'with --https, also serve plain HTTP on this port' },
  'nbd-port': { type: 'string', env: 'XAPI_EMU_NBD_PORT', arg: 'N', help: 'NBD server port on every host address (default 10809, or any free port with --port 0)' },
  data: { type: 'string', env: 'XAPI_EMU_DATA', arg: 'DIR', help: 'data directory (default ./data)' },
  memory: { type: 'boolean', env: 'XAPI_EMU_MEMORY', help: 'keep everything in memory, write no file' },
  hosts: { type: 'string', env: 'XAPI_EMU_HOSTS', arg: 'N', help: 'hosts in the pool when it is created (default 1)' },
  password: { type: 'string', env: 'XAPI_EMU_PASSWORD', arg: 'PWD', help: `root's password (default "${DEFAULT_PASSWORD}", loopback only)` },
  seed: { type: 'string', env: 'XAPI_EMU_SEED', arg: 'S', help: 'seed for refs and uuids (reproducible pools)' },
  'guest-profile': { type: 'string', env: 'XAPI_EMU_GUEST_PROFILE', arg: 'P', help: 'guest of VMs that name none: agent (default), pv-drivers, no-drivers or no-os' },
  'time-scale': { type: 'string', env: 'XAPI_EMU_TIME_SCALE', arg: 'X', help: 'duration of emulated operations, 0 = instant (default 0)' },
  config: { type: 'string', env: 'XAPI_EMU_CONFIG', arg: 'FILE', help: 'xapi.conf-style file, re-read on toolstack restart' },
  fixture: { type: 'string', env: 'XAPI_EMU_FIXTURE', arg: 'FILE', help: 'YAML or JSON fixture loaded into a new pool (an empty --data, or --memory)' },
  www: { type: 'string', env: 'XAPI_EMU_WWW', arg: 'DIR', help: 'directory served as the hosts\' web root (GET /), e.g. a build of XO Lite' },
  users: { type: 'string', env: 'XAPI_EMU_USERS', arg: 'FILE', help: 'JSON file of extra users: [{"name","password","role"}]' },
  'auth-fail-delay': { type: 'string', env: 'XAPI_EMU_AUTH_FAIL_DELAY', arg: 'SECONDS', help: 'delay before a failed login is answered (default 5, as xapi)' },
  address: { type: 'string', env: 'XAPI_EMU_ADDRESS', arg: 'ADDR', help: 'host.address on a non-loopback --host (default --host, or 127.0.0.1 for 0.0.0.0)' },
  'max-rpc-size': { type: 'string', env: 'XAPI_EMU_MAX_RPC_SIZE', arg: 'BYTES', help: `largest RPC request body (default ${DEFAULT_RPC_BODY_LIMIT}, as xapi)` },
  log: { type: 'boolean', env: 'XAPI_EMU_LOG', help: 'log every request (JSON lines on stdout)' },
  pid: { type: 'string', env: 'XAPI_EMU_PID', arg: 'PID', help: 'toolstack-restart: the process to signal (default: read <data>/xapi-emu.pid)' },
  help: { type: 'boolean', env: '', help: 'show this help' },
  version: { type: 'boolean', env: '', help: 'show the version' },
} satisfies Record<string, Flag>;
type Name = keyof typeof FLAGS;

const version = (): string =>
  (JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as { version: string }).version;

function usage(): string {
  const lines = Object.entries(FLAGS as Record<string, Flag>).map(([name, f]) => {
    const left = `  --${name}${f.arg ? ` ${f.arg}` : ''}`;
    return `${left.padEnd(30)}${f.help}${f.env ? ` [${f.env}]` : ''}`;
  });
  return [
    'Usage: xapi-emu [options]                 run an emulated XCP-ng/XenServer pool',
    '       xapi-emu toolstack-restart [--data DIR | --pid PID]',
    '                                          restart the API of a running emulator (SIGHUP)',
    '       xapi-emu check [--data DIR]        check the invariants of a stopped emulator\'s data directory',
    '',
    'Options (each also read from the environment variable in brackets):',
    ...lines,
    '',
    'With --hosts N on a loopback --host, host i also answers on the address --host plus i (127.0.0.1:',
    '127.0.0.1, 127.0.0.2 ...), same port; on any other address every host shares the address and all',
    'calls are answered by the master. After pool.join the instance forwards its connections to the',
    'master, which runs its host (pool.join\'s master_address is "addr" for our own port, or "addr:port").',
  ].join('\n');
}

class UsageError extends Error {}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off', '']);

/** Flag values: the command line first, then the environment. */
function readFlags(argv: string[], env: NodeJS.ProcessEnv): { values: Partial<Record<Name, string | boolean>>; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: Object.fromEntries(Object.entries(FLAGS).map(([k, f]) => [k, { type: f.type }])) as Record<Name, { type: Kind }>,
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const values: Partial<Record<Name, string | boolean>> = {};
  for (const [name, f] of Object.entries(FLAGS) as [Name, Flag][]) {
    const cli = (parsed.values as Record<string, string | boolean | undefined>)[name];
    if (cli !== undefined) values[name] = cli;
    else if (f.env && env[f.env] !== undefined) {
      const raw = env[f.env]!;
      if (f.type === 'string') values[name] = raw;
      else if (TRUE.has(raw.toLowerCase())) values[name] = true;
      else if (FALSE.has(raw.toLowerCase())) values[name] = false;
      else throw new UsageError(`${f.env}: expected a boolean (1/0, true/false), got "${raw}"`);
    }
  }
  return { values, positionals: parsed.positionals };
}

function guestProfileOf(v: string | boolean | undefined): GuestProfile | undefined {
  if (v === undefined) return undefined;
  if (!isGuestProfile(v)) throw new UsageError(`--guest-profile: "${String(v)}" is none of ${GUEST_PROFILES.join(', ')}`);
  return v;
}

function num(v: string | boolean | undefined, name: string, o: { int?: boolean; min?: number; max?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  const bad = typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || (o.int && !Number.isInteger(n)) ||
    (o.min !== undefined && n < o.min) || (o.max !== undefined && n > o.max);
  if (bad) throw new UsageError(`--${name}: invalid value "${v}"`);
  return n;
}

function readUsers(file: string): UserSpec[] {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--users ${file}: ${(e as Error).message}`);
  }
  const r = userSpecs.safeParse(data);
  if (!r.success) throw new UsageError(`--users ${file}:\n${z.prettifyError(r.error)}`);
  const seen = new Set<string>();
  for (const u of r.data) {
    if (seen.has(u.name)) throw new UsageError(`--users ${file}: user "${u.name}" is listed twice`);
    seen.add(u.name);
  }
  return r.data;
}

/** --www: an existing directory (its files are read at each request) */
function wwwDir(dir: string): string {
  const abs = resolve(dir);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) throw new UsageError(`--www ${dir}: not a directory`);
  return abs;
}

// (the fixture modules are loaded only when a fixture is given: they cost a start without one)
const fixtureErrorClass = async () => (await import('./control/fixture/schema.js')).FixtureError;

function fixtureUsage(e: Error, file: string): UsageError {
  const lines = e.message.split('\n');
  return new UsageError(`--fixture ${file}: ${lines.length > 1 ? `\n  ${lines.join('\n  ')}` : lines[0]}`);
}

async function checkedFixture(file: string): Promise<string> {
  const { readFixtureOption } = await import('./control/fixture/startup.js');
  try {
    readFixtureOption(file);
  } catch (e) {
    if (e instanceof (await fixtureErrorClass())) throw fixtureUsage(e as Error, file);
    throw e;
  }
  return file;
}

const isLoopback = (h: string): boolean => h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const pidFile = (dir: string): string => join(dir, 'xapi-emu.pid');

/** `xapi-emu toolstack-restart`: SIGHUP to the emulator running on a data directory. */
function signalRestart(values: Partial<Record<Name, string | boolean>>): number {
  let pid = num(values.pid, 'pid', { int: true, min: 1 });
  if (pid === undefined) {
    const file = pidFile(resolve(String(values.data ?? 'data')));
    if (!existsSync(file)) {
      console.error(`xapi-emu: no ${file}: is an emulator running on this data directory? (with --memory, use --pid)`);
      return 1;
    }
    pid = Number(readFileSync(file, 'utf8').trim());
  }
  try {
    process.kill(pid, 'SIGHUP');
  } catch (e) {
    console.error(`xapi-emu: cannot signal process ${pid}: ${(e as Error).message}`);
    return 1;
  }
  console.log(`xapi-emu: toolstack restart requested (pid ${pid})`);
  return 0;
}

let current: RunningServer | null = null;

/** Restarts the toolstack of the emulator started by main() in this process (or of `server`). */
export async function toolstackRestart(server: RunningServer | null = current): Promise<void> {
  if (!server) throw new Error('no emulator is running in this process');
  await server.toolstackRestart();
}

function banner(s: RunningServer, host: string, password: string, hosts: number): string {
  return [
    `xapi-emu ${version()}: a pool of ${s.emu.hosts.length} host${s.emu.hosts.length > 1 ? 's' : ''}` +
      (hosts !== s.emu.hosts.length ? ` (from the existing database; --hosts ${hosts} ignored)` : ''),
    ...s.urls.map((u, i) => `  ${i === 0 ? 'XAPI'.padEnd(10) : ''.padEnd(10)}${u}`),
    ...(s.emu.hosts.length > 1 && !isLoopback(host) ? [`  ${''.padEnd(10)}(all hosts share this address: every call is answered by the master)`] : []),
    `  ${'user'.padEnd(10)}root`,
    `  ${'password'.padEnd(10)}${password}`,
    `  ${'data'.padEnd(10)}${s.dataDir === null ? 'in memory' : resolve(s.dataDir)}`,
    `  ${'pid'.padEnd(10)}${process.pid} (SIGHUP: toolstack restart)`,
  ].join('\n');
}

/** Runs the command; resolves with an exit code for one-shot commands, stays running for the server. */
export async function main(argv: string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): Promise<number | RunningServer> {
  let values: Partial<Record<Name, string | boolean>>;
  let positionals: string[];
  try {
    ({ values, positionals } = readFlags(argv, env));
    if (values.help) {
      console.log(usage());
      return 0;
    }
    if (values.version) {
      console.log(version());
      return 0;
    }
    if (positionals[0] === 'toolstack-restart' && positionals.length === 1) return signalRestart(values);
    if (positionals[0] === 'check' && positionals.length === 1) return (await import('./check/command.js')).checkCommand(values.data as string | undefined);
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);

    const host = String(values.host ?? '127.0.0.1');
    const password = values.password === undefined ? DEFAULT_PASSWORD : String(values.password);
    if (!isLoopback(host) && (password === DEFAULT_PASSWORD || password.trim() === '')) {
      const which = password === DEFAULT_PASSWORD ? 'the default password' : 'an empty password';
      throw new UsageError(`refusing to listen on ${host} with ${which}: set --password or XAPI_EMU_PASSWORD`);
    }
    const memory = values.memory === true;
    const dataDir = resolve(String(values.data ?? 'data'));
    const hosts = num(values.hosts, 'hosts', { int: true, min: 1, max: 250 }) ?? 1;
    const opts = {
      host,
      port: num(values.port, 'port', { int: true, min: 0, max: 65535 }),
      https: values.https === true,
      httpPort: num(values['http-port'], 'http-port', { int: true, min: 0, max: 65535 }),
      nbdPort: num(values['nbd-port'], 'nbd-port', { int: true, min: 0, max: 65535 }),
      memory,
      dataDir,
      hosts,
      password,
      seed: values.seed === undefined ? undefined : String(values.seed),
      guestProfile: guestProfileOf(values['guest-profile']),
      timeScale: num(values['time-scale'], 'time-scale', { min: 0 }),
      configFile: values.config === undefined ? undefined : resolve(String(values.config)),
      users: values.users === undefined ? undefined : readUsers(String(values.users)),
      authFailDelay: num(values['auth-fail-delay'], 'auth-fail-delay', { min: 0 }),
      address: values.address === undefined ? undefined : String(values.address),
      bodyLimit: num(values['max-rpc-size'], 'max-rpc-size', { int: true, min: 1024 }),
      log: values.log === true,
      // read and checked now: a bad fixture is a usage error, before anything is made
      fixture: values.fixture === undefined ? undefined : await checkedFixture(resolve(String(values.fixture))),
      www: values.www === undefined ? undefined : wwwDir(String(values.www)),
    };
    if (opts.httpPort !== undefined && !opts.https) throw new UsageError('--http-port goes with --https (plain HTTP is on --port otherwise)');

    if (!memory) {
      mkdirSync(dataDir, { recursive: true });
      const file = pidFile(dataDir);
      const other = existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : 0;
      if (other && other !== process.pid && alive(other)) {
        console.error(`xapi-emu: another emulator (pid ${other}) is running on ${dataDir}`);
        return 1;
      }
    }

    let server: RunningServer;
    try {
      server = await startServer(opts);
    } catch (e) {
      if (values.fixture !== undefined && e instanceof (await fixtureErrorClass())) throw fixtureUsage(e as Error, String(values.fixture));
      console.error(`xapi-emu: ${(e as Error).message}`);
      return 1;
    }
    current = server;
    const pf = memory ? null : pidFile(dataDir);
    if (pf) writeFileSync(pf, `${process.pid}\n`);
    // (a fixture's hosts make the pool: --hosts is not what was asked then)
    console.log(banner(server, host, password, values.fixture !== undefined && values.hosts === undefined ? server.emu.hosts.length : hosts));
    installSignals(server, pf);
    return server;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`xapi-emu: ${e.message}\nTry "xapi-emu --help".`);
      return 2;
    }
    console.error(`xapi-emu: ${(e as Error).message}`);
    return 1;
  }
}

function installSignals(server: RunningServer, pf: string | null): void {
  let stopping = false;
  const removePid = () => {
    try {
      if (pf && existsSync(pf) && readFileSync(pf, 'utf8').trim() === String(process.pid)) unlinkSync(pf);
    } catch {
      /* best effort */
    }
  };
  const stop = (sig: string) => {
    if (stopping) {
      removePid();
      process.exit(1); // a second signal: do not wait any longer
    }
    stopping = true;
    console.log(`xapi-emu: ${sig}, stopping`);
    server.close().then(
      () => {
        removePid();
        process.exit(0);
      },
      (e) => {
        console.error(`xapi-emu: ${(e as Error).message}`);
        removePid();
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    console.log('xapi-emu: SIGHUP, restarting the toolstack');
    server.toolstackRestart().then(
      () => console.log(`xapi-emu: toolstack restarted: ${server.urls.join(' ')}`),
      (e) => {
        console.error(`xapi-emu: toolstack restart failed: ${(e as Error).message}`);
        stop('restart failure');
      },
    );
  });
  process.on('exit', removePid);
}

/** Entry point when run as a script (bin/xapi-emu.js, or `tsx server/cli.ts`). */
export async function run(argv?: string[]): Promise<void> {
  const r = await main(argv);
  if (typeof r === 'number') process.exit(r);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await run();
