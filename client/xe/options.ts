// The client's settings, as newcli.ml and options.ml read them: the command line first, then the
// XE_EXTRA_ARGS variable, then ~/.xe, then the defaults. Words the client knows (-s, server=, ...)
// are taken out; the rest goes to the server as the command's arguments.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export interface Settings {
  server: string;
  port: number | null;
  username: string;
  password: string;
  passwordFile: string;
  ssl: boolean;
  debug: boolean;
  debugOnFail: boolean;
  traceparent: string | null;
  /** PEM file of the certificates trusted for TLS (ours: the real client does not check) */
  cafile: string | null;
}

/** The usage text is due (exit 0 unless something else went wrong first). */
export class Usage extends Error {}
/** An error the client reports with a text of its own (exit 1). */
export class ClientExit extends Error {
  constructor(readonly text: string, readonly code = 1) {
    super(text);
  }
}

export const defaults = (): Settings => ({
  server: '127.0.0.1', port: null, username: 'root', password: 'null', passwordFile: '',
  ssl: true, debug: false, debugOnFail: false, traceparent: null, cafile: null,
});

/** OCaml's bool_of_string: only the two words (anything else is an unhandled exception). */
function ocamlBool(v: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new ClientExit('Unhandled exception\nInvalid_argument("bool_of_string")\n');
}

/** OCaml's int_of_string on a port: decimal, 0x/0o/0b, underscores. */
function parsePort(v: string, warn: (s: string) => void): number {
  const m = /^([+-]?)(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)$/.exec(v);
  const n = m ? (m[1] === '-' ? -1 : 1) * Number(m[2].replace(/_/g, '').replace(/^0[oO]/, '0o').replace(/^0[bB]/, '0b')) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    warn('Port number must be an integer (0-65535)\n');
    throw new Usage();
  }
  return n;
}

/** Sets a known key; false when the key is not the client's. */
function setKeyword(s: Settings, k: string, v: string, warn: (s: string) => void): boolean {
  switch (k) {
    case 'server': s.server = v; break;
    case 'port': s.port = parsePort(v, warn); break;
    case 'username': s.username = v; break;
    case 'password': s.password = v; break;
    case 'passwordfile': s.passwordFile = v; break;
    case 'nossl': s.ssl = !ocamlBool(v); break;
    case 'debug': try { s.debug = ocamlBool(v); } catch { s.debug = false; } break;
    case 'debugonfail': try { s.debugOnFail = ocamlBool(v); } catch { s.debugOnFail = false; } break;
    case 'traceparent': s.traceparent = v; break;
    case 'cafile': s.cafile = v; break;
    default: return false;
  }
  return true;
}

/** Two-word options and flags of the command line. */
function option(args: string[]): [string, string, string[]] | null {
  const [a, b] = args;
  const two: Record<string, string> = { '-s': 'server', '-h': 'server', '-p': 'port', '-u': 'username', '-pw': 'password', '-pwf': 'passwordfile', '--traceparent': 'traceparent', '--cafile': 'cafile' };
  const flags: Record<string, string> = { '--nossl': 'nossl', '--debug': 'debug', '--debug-on-fail': 'debugonfail' };
  if (a in flags) return [flags[a], 'true', args.slice(1)];
  if (a in two && b !== undefined) return [two[a], b, args.slice(2)];
  return null;
}

function processArgs(s: Settings, args: string[], warn: (s: string) => void): string[] {
  const rest: string[] = [];
  let xs = args;
  while (xs.length > 0) {
    const o = option(xs);
    if (o && setKeyword(s, o[0], o[1], warn)) {
      xs = o[2];
      continue;
    }
    const [arg, ...more] = xs;
    const eq = arg.indexOf('=');
    if (!(eq >= 0 && setKeyword(s, arg.slice(0, eq), arg.slice(eq + 1), warn))) rest.push(arg);
    xs = more;
  }
  return rest;
}

/** ~/.xe: `key=value` lines (blank lines skipped); one line without `=` voids the whole file. */
export function readRc(home: string, warn: (s: string) => void): [string, string][] {
  let text: string;
  try {
    text = readFileSync(`${home}/.xe`, 'utf8');
  } catch {
    return [];
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const out: [string, string][] = [];
  for (const l of lines) {
    if (l === '') continue;
    const eq = l.indexOf('=');
    if (eq < 0) {
      warn('Error parsing rc file. No defaults loaded\n');
      return [];
    }
    out.push([l.slice(0, eq), l.slice(eq + 1)]);
  }
  return out;
}

/** XE_EXTRA_ARGS: arguments separated by commas (a backslash keeps a comma; backslashes go). */
export function splitExtraArgs(s: string): string[] {
  const out: string[] = [];
  let pos = 0;
  let i = 0;
  while (pos < s.length) {
    if (s[pos] === ',') {
      pos++;
      i = pos;
    } else if (i >= s.length || (s[i] === ',' && s[i - 1] !== '\\')) {
      out.push(s.slice(pos, i).replace(/\\/g, ''));
      i++;
      pos = i;
    } else i++;
  }
  return out;
}

export interface Parsed {
  settings: Settings;
  /** what goes to the server */
  args: string[];
}

/** The settings and the server's arguments, in the real client's order of priority. */
export function parseArgs(argv: string[], env: NodeJS.ProcessEnv, warn: (s: string) => void): Parsed {
  const s = defaults();
  const rcRest = readRc(env.HOME ?? '', warn).filter(([k, v]) => !setKeyword(s, k, v, warn)).map(([k, v]) => `${k}=${v}`);
  const extrasRest = processArgs(s, splitExtraArgs(env.XE_EXTRA_ARGS ?? ''), warn);
  if (env.TRACEPARENT !== undefined) s.traceparent = env.TRACEPARENT;
  const help = argv.some((a) => a === '-help' || a === '--help');
  const argsRest = processArgs(s, argv, warn);
  if (help) throw new Usage();
  if (s.passwordFile !== '') readPasswordFile(s);
  return { settings: s, args: [...argsRest, ...extrasRest, ...rcRest] };
}

/** -pwf: the user name on the first line, the password on the second. */
function readPasswordFile(s: Settings): void {
  let text: string;
  try {
    text = readFileSync(s.passwordFile, 'latin1');
  } catch {
    throw new ClientExit(`Error opening password file '${s.passwordFile}'\n`);
  }
  const lines = text.split('\n');
  // (a line is complete with its newline, or at the end of the file when it has characters)
  if (lines.length < 2 || (lines.length === 2 && lines[1] === '')) {
    throw new ClientExit('Error: password file format: expecting username on the first line, password on the second line\n');
  }
  s.username = lines[0];
  s.password = lines[1];
}

/** The files the server may read or write: those named as `k=v` values on the command line. */
export const permittedFilenames = (args: string[]): string[] =>
  args.flatMap((a) => {
    const eq = a.indexOf('=');
    if (eq < 0) return [];
    const v = a.slice(eq + 1);
    return v.trim() === '' ? [] : [canonicalize(v)];
  });

export const canonicalize = (p: string): string => resolve(process.cwd(), p);
