// The whole control API, by area. The server, the client and the OpenAPI document all read this.
import type { Contract } from './route.js';
import { clock } from './clock.js';
import { snapshots } from './snapshots.js';

export const contract = {
  clock,
  snapshots,
} satisfies Contract;

export type ControlContract = typeof contract;
export * from './route.js';
