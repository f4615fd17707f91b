// The whole control API, by area. The server, the client and the OpenAPI document all read this.
import type { Contract } from './route.js';
import { clock } from './clock.js';
import { snapshots } from './snapshots.js';
import { faults } from './faults.js';
import { guests } from './guests.js';
import { fixture } from './fixture.js';
import { status } from './status.js';
import { updates } from './updates.js';
import { storage } from './storage.js';
import { nics } from './nics.js';

export const contract = {
  clock,
  snapshots,
  faults,
  guests,
  fixture,
  status,
  updates,
  storage,
  nics,
} satisfies Contract;

export type ControlContract = typeof contract;
export * from './route.js';
