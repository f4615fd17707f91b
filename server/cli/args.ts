// The command line as the CLI server receives it (one argument a line) and parses it, as xapi's
// cli_frontend does: `k=v` pairs, `--flag` as flag=true, and the few two-word switches.
import { ParseError } from './errors.js';

export interface CommandLine {
  cmdname: string;
  /** in the order given; a name may repeat (map and set members) */
  params: [string, string][];
}

/** `-x value` switches (xapi's switch_map); any other single-dash word is a syntax error. */
const SWITCHES: Record<string, string> = {
  '--force': 'force', '--live': 'live', '--internal': 'internal', '-u': 'username', '-pw': 'password',
  '-s': 'server', '-h': 'server', '-p': 'port', '--debug': 'debug', '--minimal': 'minimal', '--all': 'all',
};

export function parseCommandLine(args: string[]): CommandLine {
  const [cmdname, ...rest] = args;
  if (cmdname === undefined) throw new ParseError('');
  if (cmdname.includes('=')) throw new ParseError('command name is missing');
  const params: [string, string][] = [];
  for (let i = 0; i < rest.length; i++) {
    const p = rest[i];
    if (p.startsWith('--')) params.push([p.slice(2), 'true']);
    else if (p.startsWith('-')) {
      // (xapi raises a bare failure here, which its parser turns into an empty syntax error)
      if (i + 1 >= rest.length) throw new ParseError('');
      const key = SWITCHES[p];
      if (key === undefined) throw new ParseError('');
      params.push([key, rest[++i]]);
    } else {
      const eq = p.indexOf('=');
      params.push(eq < 0 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)]);
    }
  }
  return { cmdname, params };
}

/** The request body: one argument a line (CR LF or LF), a first line `session_id=` taken apart. */
export function parseBody(body: string): { session: string | null; args: string[] } {
  const args = body.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (args[0]?.startsWith('session_id=')) return { session: args[0].slice(11), args: args.slice(1) };
  return { session: null, args };
}

/** The first value given for `name` (xapi's List.assoc). */
export const param = (params: [string, string][], name: string): string | undefined => params.find(([k]) => k === name)?.[1];

export function boolParam(params: [string, string][], name: string): boolean {
  const v = param(params, name);
  if (v === undefined) return false;
  const l = v.toLowerCase();
  if (l === 'true' || l === 'on' || l === 'yes' || l === '1') return true;
  if (l === 'false' || l === 'off' || l === 'no' || l === '0') return false;
  throw new ParseError(`invalid value for ${name}: ${v}`);
}
