// Where each message's implementation comes from: a class provider (server/api/<class>.ts) for the
// messages with XAPI semantics, else the generic handler of its tag (server/api/generic.ts).
// A custom message with no provider answers NOT_IMPLEMENTED, never a fake success.
import type { MessageMeta } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';
import type { CallOrigin } from './dispatch.js';
import { XapiError } from './errors.js';
import { genericHandler } from '../api/generic.js';

export interface Call {
  emu: Emulator;
  msg: MessageMeta;
  /** the method name as called, with its Async. prefix if any */
  label: string;
  /** the caller's session ref ('' for the login calls) */
  session: string;
  /** the task the call runs in, or OpaqueRef:NULL */
  task: string;
  /** the host that received the call */
  host: string;
  origin: CallOrigin;
}

export type Handler = (call: Call, ...args: any[]) => unknown;

/** A class provider: handlers for its custom messages by message name. */
export type Provider = Record<string, Handler>;

const providers = new Map<string, Provider>();
/** handlerFor's answers (a generic handler is a closure made for its message), until a provider changes */
let resolved = new WeakMap<MessageMeta, Handler>();

export function registerProvider(cls: string, p: Provider): void {
  providers.set(cls, { ...providers.get(cls), ...p });
  resolved = new WeakMap();
}

const notImplemented: Handler = (call) => {
  throw new XapiError('NOT_IMPLEMENTED', [call.msg.wire]);
};

export function handlerFor(msg: MessageMeta): Handler {
  let h = resolved.get(msg);
  if (h === undefined) {
    h = providers.get(msg.class)?.[msg.name] ?? genericHandler(msg) ?? notImplemented;
    resolved.set(msg, h);
  }
  return h;
}
