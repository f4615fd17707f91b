// `help`, answered without a session as xapi's CLI does: the usage and the common commands, every
// command with --all, or the parameters of the commands named.
import type { Params } from './commands.js';
import { commandTable } from './commands.js';
import type { Printer } from './printer.js';

const NOT_COMMANDS = ['server', 'username', 'password', 'port', 'minimal', 'all'];

/** Command names in lines of at most about 74 columns, indented by 4. */
function makeList(names: string[]): string[] {
  const indent = '    ';
  const lines: string[] = [];
  let cur = indent + (names[0] ?? '');
  for (const n of names.slice(1)) {
    if (cur.length + n.length > 74) {
      lines.push(cur);
      cur = indent + n;
    } else cur = `${cur}, ${n}`;
  }
  lines.push(cur);
  return lines;
}

const usage = (argv0: string) => `Usage:
  ${argv0} <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --debug ]                Enable debug output
    [ --debug-on-fail ]        Enable debug output only on failure
    [ --traceparent <value> ]  Distributed tracing context
    [ <other arguments> ... ]  Command-specific options

To get help on a specific command:
  ${argv0} help <command>

`;

export function help(printer: Printer, params: Params, argv0 = 'xe'): void {
  const asked = params.filter(([k]) => !NOT_COMMANDS.includes(k)).map(([k]) => k);
  if (asked.length > 0) {
    for (const name of asked) {
      const c = commandTable.get(name);
      if (!c) {
        printer.print({ t: 'list', lines: [`Unknown command '${name}'`] });
        continue;
      }
      printer.print({
        t: 'table',
        records: [[
          ['command name        ', name],
          ['reqd params     ', c.reqd.join(', ')],
          ['optional params ', c.optn.join(', ')],
          ['description     ', c.help],
        ]],
      });
    }
    return;
  }
  const visible = [...commandTable.values()].filter((c) => !c.hidden).map((c) => c.name).sort();
  if (params.some(([k, v]) => k === 'all' && v === 'true')) {
    const host = visible.filter((n) => n.startsWith('host-'));
    const vm = visible.filter((n) => n.startsWith('vm-'));
    const other = visible.filter((n) => !n.startsWith('host-') && !n.startsWith('vm-'));
    if (printer.minimal) return printer.print({ t: 'list', lines: visible });
    printer.print({ t: 'list', lines: [`${usage(argv0)}Full command list\n-----------------\n`] });
    for (const [i, group] of [host, vm, other].entries()) {
      if (i > 0) printer.print({ t: 'list', lines: makeList(['']) });
      if (group.length > 0) printer.print({ t: 'list', lines: makeList(group) });
    }
    return;
  }
  const common = visible.filter((n) => commandTable.get(n)!.standard);
  if (printer.minimal) return printer.print({ t: 'list', lines: common });
  printer.print({ t: 'list', lines: [`${usage(argv0)}To get a full listing of commands:\n  ${argv0} help --all\n\nCommon command list\n-------------------\n`] });
  printer.print({ t: 'list', lines: makeList(common) });
}
