// The handlers of the control API's routes, by area as in the contract.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../../app.js';
import type { ControlContract, OutputOf, ParsedInputOf } from '../contract/index.js';
import { clockHandlers } from './clock.js';
import { statusHandlers } from './status.js';
import { fixtureHandlers } from './fixture.js';
import { guestsHandlers } from './guests.js';
import { faultsHandlers } from './faults.js';
import { snapshotsHandlers } from './snapshots.js';
import { updatesHandlers } from './updates.js';
import { storageHandlers } from './storage.js';
import { nicsHandlers } from './nics.js';

export interface ControlContext extends HttpPluginContext {
  req: FastifyRequest;
  reply: FastifyReply;
  /** who called */
  user: string;
  /** the host that received the call */
  host: string;
}

export type Handler<R> = (ctx: ControlContext, input: ParsedInputOf<R>) => OutputOf<R> | Promise<OutputOf<R>>;
export type AreaHandlers<A extends keyof ControlContract> = { [M in keyof ControlContract[A]]: Handler<ControlContract[A][M]> };

export const handlers: { [A in keyof ControlContract]: AreaHandlers<A> } = {
  clock: clockHandlers,
  status: statusHandlers,
  fixture: fixtureHandlers,
  guests: guestsHandlers,
  faults: faultsHandlers,
  snapshots: snapshotsHandlers,
  updates: updatesHandlers,
  storage: storageHandlers,
  nics: nicsHandlers,
};
