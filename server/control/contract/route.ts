// A route of the control API: its HTTP method and path under /xapi-emu/, and zod schemas of what
// it takes and answers. The contract files hold only these (no server code), so that the typed
// client and the OpenAPI document are made from the same schemas the server validates with.
//
// Input: path parameters (`:name` in the path) come from the input's keys of the same name; the
// rest is the JSON body (POST, PUT, DELETE) or the query string (GET, whose values arrive as
// strings: use z.coerce for numbers and booleans).
import type { z } from 'zod';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface Route<I extends z.ZodType = z.ZodType, O extends z.ZodType = z.ZodType> {
  method: Method;
  /** under /xapi-emu, e.g. /snapshots/:name */
  path: string;
  summary: string;
  input: I;
  output: O;
}

export const route = <I extends z.ZodType, O extends z.ZodType>(r: Route<I, O>): Route<I, O> => r;

/** Routes by area, then by operation name: `client.<area>.<operation>(input)`. */
export type Contract = Record<string, Record<string, Route>>;

export type InputOf<R> = R extends Route<infer I, z.ZodType> ? z.input<I> : never;
export type OutputOf<R> = R extends Route<z.ZodType, infer O> ? z.output<O> : never;
export type ParsedInputOf<R> = R extends Route<infer I, z.ZodType> ? z.output<I> : never;

/** Every error of the control API has this body, with an HTTP status of 4xx (or 5xx for a bug). */
export interface ControlErrorBody {
  error: {
    /** an XAPI error code (HANDLE_INVALID ...) or one of the control API's own (INVALID_INPUT, NOT_FOUND ...) */
    code: string;
    message: string;
    params?: string[];
    /** INVALID_INPUT: where in the input */
    issues?: { path: (string | number)[]; message: string }[];
  };
}
