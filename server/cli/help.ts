// `help`, answered without a session as xapi's CLI does: the usage and the common commands, every
// command with --all, or the parameters of the commands named.
import type { Params } from './commands.js';
import { commandTable } from './commands.js';
import type { Printer } from './printer.js';

/** What `help <command>` adds for a command with selectors. */
const SELECTORS = {
  vm: ['<vm-selectors>', " VMs can be specified by filtering the full list of VMs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, and 'power-state=halted' will select only VMs whose 'power-state' field is equal to 'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where multiple VMs are matching, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe vm-list params=all'. If no parameters to select VMs are given, the operation will be performed on all VMs."],
  host: ['<host-selectors>', " Hosts can be specified by filtering the full list of hosts on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the host with that uuid, and 'enabled=true' will select only hosts whose 'enabled' field is equal to 'true'. The special pseudo-field 'host' matches any of hostname, name-label or uuid. Where multiple hosts are matching, and the operation can be performed on multiple hosts, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe host-list params=all'. If no parameters to select hosts are given, the operation will be performed on all hosts."],
  sr: ['<sr-selectors>', " SRs can be specified by filtering the full list of SRs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the sr with that uuid, and 'enabled=true' will select only srs whose 'enabled' field is equal to 'true'. The special pseudo-field 'sr' matches either of name-label or uuid. Where multiple SRs are matching, and the operation can be performed on multiple SRs, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe sr-list params=all'. If no parameters to select SRs are given, the operation will be performed on all SRs."],
} as const;

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
          ['optional params ', (c.selectors ? [...c.optn, SELECTORS[c.selectors][0]] : c.optn).join(', ')],
          ['description     ', c.selectors ? c.help + SELECTORS[c.selectors][1] : c.help],
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
