// What a CLI command fails with, besides the API's own errors (XapiError), and how each is told
// to the client (xapi_cli.ml's exception handler).
import { XapiError } from '../dispatch/errors.js';
import type { Command } from './protocol.js';
import { errorDocs } from './generated/error-docs.js';

/** A command line the server cannot parse. */
export class ParseError extends Error {}
/** A required parameter is missing. */
export class ParamNotFound extends Error {}
export class UnknownCommand extends Error {}
/** A failure of the CLI itself: printed as "Error: <text>". */
export class CliFailure extends Error {}
/** A record has no field of that name (records.ml's CLI_failed_to_find_param). */
export class FieldNotFound extends Error {}
/** Several objects were acted on and some failed: (uuid, message) of each failure. */
export class MultipleFailure extends Error {
  constructor(readonly failures: [string, string][]) {
    super('operation failed');
  }
}
/** The command has told its own story and ends with this exit code. */
export class ExitWithError extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

const stderr = (text: string): Command => ({ t: 'PrintStderr', text });

function paramError(kind: string, text: string): Command[] {
  return [stderr(`${kind !== '' ? `${kind}: ${text}` : text}\n`), stderr("For usage run: 'xe help'\n")];
}

/**
 * An API error as xapi's CLI prints it: the datamodel's text for the code, then one `name: value`
 * line per parameter (refs shown as uuid and name); a code the datamodel does not document goes to
 * the client as an Error message.
 */
export function serverError(code: string, params: string[], refConvert: (s: string) => string = (s) => s): Command[] {
  const values = params.map(refConvert);
  const doc = errorDocs[code];
  if (!doc) return [{ t: 'Error', code, params: values }];
  const [text, names] = doc;
  const lines: string[] = [];
  const n = Math.max(names.length, values.length);
  for (let i = 0; i < n; i++) lines.push(`${i < names.length ? names[i] : '<extra>'}: ${i < values.length ? values[i] : '<unknown>'}`);
  return [stderr(`${text}\n`), ...lines.map((l) => stderr(`${l}\n`))];
}

/** The commands that report a failure (before the final Exit 1). */
export function failureCommands(e: unknown, refConvert?: (s: string) => string): Command[] {
  if (e instanceof ExitWithError) return [];
  // each failure of an operation on several objects, on stdout as xapi prints them
  if (e instanceof MultipleFailure) return e.failures.map(([uuid, msg]) => ({ t: 'Print', text: `operation failed on ${uuid}: ${msg}` }));
  if (e instanceof UnknownCommand) return paramError('Unknown command', e.message);
  if (e instanceof ParseError) return paramError('Syntax error', e.message);
  if (e instanceof ParamNotFound) return paramError('Required parameter not found', e.message);
  if (e instanceof CliFailure) return [stderr(`Error: ${e.message}\n`)];
  if (e instanceof FieldNotFound) return serverError('Missing parameter', [e.message]);
  if (e instanceof XapiError) {
    if (e.code === 'SESSION_AUTHENTICATION_FAILED') {
      return paramError('', (e.params[0] ?? '') === '' ? 'Username/password must be specified' : 'Authentication failed');
    }
    return serverError(e.code, e.params, refConvert);
  }
  return serverError('INTERNAL_ERROR', [String((e as Error)?.message ?? e)]);
}
