// The command table of the CLI server: each command is declared once with its parameters, its
// help and what it runs; `help` lists them. Command modules add theirs with defineCommand.
import type { Emulator } from '../emulator.js';
import type { Printer } from './printer.js';
import type { RecordIo } from './records.js';

export type Params = [string, string][];

/** What a command runs with: the session it acts in, its parameters and the printer. */
export interface CommandContext extends RecordIo {
  emu: Emulator;
  /** the host that received the request */
  host: string;
  session: string;
  params: Params;
  printer: Printer;
  /** the client has gone: a command that waits stops waiting */
  closed?: () => boolean;
}

export interface CommandSpec {
  name: string;
  /** required parameters (xapi checks them before running the command) */
  reqd: string[];
  optn: string[];
  help: string;
  /** listed by `help` without --all */
  standard?: boolean;
  /** never listed by `help` */
  hidden?: boolean;
  /** the command acts on the objects chosen by selectors (selectors.ts): `help` says so */
  selectors?: 'vm' | 'host' | 'sr';
  /** runs on the host that receives it, in a session local to that host, even on a pool member
   * (xapi's Neverforward commands with a local session: the way to mend a pool without a master) */
  local?: boolean;
  run(ctx: CommandContext): Promise<void>;
}

export const commandTable = new Map<string, CommandSpec>();

export function defineCommand(spec: CommandSpec): void {
  if (commandTable.has(spec.name)) throw new Error(`CLI command ${spec.name} defined twice`);
  commandTable.set(spec.name, spec);
}

/** Parameters every command accepts, never taken as filters (cli_operations.ml's stdparams). */
export const STD_PARAMS = ['server', 'password', 'port', 'username', 'minimal', 'force', 'multiple', 'all', 'message-priority', 'trace'];
