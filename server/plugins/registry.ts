// A host's plugins (/etc/xapi.d/plugins): host.call_plugin runs one by name. Each plugin is a
// table of functions taking the call's string map and returning a string, as the scripts answer
// through XenAPIPlugin.dispatch; these simulate XCP-ng's own on the emulated hardware.
//
// Errors as xapi and XenAPIPlugin make them:
//   - no such script in the directory: XENAPI_MISSING_PLUGIN [name] (Xapi_plugins.find_plugin);
//   - a function the script's table lacks: UNKNOWN_XENAPI_PLUGIN_FUNCTION [fn];
//   - a function failing: its Failure (code and params) as the error; XCP-ng's error_wrapped turns
//     any other exception into code "-1" [message; details; backtrace].
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';

export interface PluginCall {
  emu: Emulator;
  /** the host the plugin runs on */
  host: string;
  /** the caller's session (the plugin's own calls back into xapi use it) */
  session: string;
  fn: string;
  args: Record<string, string>;
}

export type PluginFunction = (call: PluginCall) => string | Promise<string>;
export type Plugin = Record<string, PluginFunction>;

const installed = new Map<string, Plugin>();

/** Installs a plugin under its file name (e.g. `updater.py`). */
export function installPlugin(name: string, plugin: Plugin): void {
  installed.set(name, plugin);
}

export function pluginNames(): string[] {
  return [...installed.keys()].sort();
}

/** XenAPIPlugin.Failure: a plugin's own error, passed to the caller as an XAPI error. */
export function pluginFailure(code: string, params: string[]): XapiError {
  return new XapiError(code, params);
}

/** What xcpngutils.error_wrapped makes of an unexpected exception. */
export function wrappedError(message: string): XapiError {
  return new XapiError('-1', [message, '', `Traceback (most recent call last):\nException: ${message}\n`]);
}

/** xcpngutils.run_command failing (ProcessException through error_wrapped). */
export function commandFailed(command: string[], code: number, stdout: string, stderr: string): XapiError {
  const cmd = `[${command.map((c) => `'${c}'`).join(', ')}]`;
  return new XapiError(String(code), [
    `Command '${cmd}' failed with code: ${code}`,
    `stdout: '${stdout}', stderr: '${stderr}'`,
    `Traceback (most recent call last):\nProcessException: Command '${cmd}' failed with code: ${code}\n`,
  ]);
}

/** A function the real plugin has but the emulator does not simulate: an honest refusal. */
export const notSimulated =
  (plugin: string): PluginFunction =>
  ({ fn }) => {
    throw new XapiError('NOT_IMPLEMENTED', [`host.call_plugin ${plugin} ${fn}`]);
  };

export async function callPlugin(c: PluginCall & { plugin: string }): Promise<string> {
  const plugin = installed.get(c.plugin);
  if (!plugin) throw new XapiError('XENAPI_MISSING_PLUGIN', [c.plugin]);
  const f = Object.hasOwn(plugin, c.fn) ? plugin[c.fn] : undefined;
  if (!f) throw new XapiError('UNKNOWN_XENAPI_PLUGIN_FUNCTION', [c.fn]);
  return f(c);
}

/** json.dumps as the plugins print their answers (Python's separators, ASCII only). */
export function pyJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(v);
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (Array.isArray(v)) return `[${v.map(pyJson).join(', ')}]`;
  return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pyJson(k)}: ${pyJson(x)}`).join(', ')}}`;
}
