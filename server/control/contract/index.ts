// The whole control API, by area. The server, the client and the OpenAPI document all read this.
import type { Contract } from './route.js';
import { clock } from './clock.js';
import { status } from './status.js';
import { fixture } from './fixture.js';
import { guests } from './guests.js';
import { faults } from './faults.js';

export const contract = {
  clock,
  status,
  fixture,
  guests,
  faults,
} satisfies Contract;

export type ControlContract = typeof contract;
export * from './route.js';
