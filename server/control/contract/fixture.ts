// Fixtures: the pool as a fixture document, and loading one into the running pool.
import { z } from 'zod';
import { route } from './route.js';
import { fixtureSchema, type FixtureInput } from '../fixture/schema.js';

const document = z.custom<FixtureInput>((v) => typeof v === 'object' && v !== null && !Array.isArray(v)).describe('a fixture document');

export const fixture = {
  export: route({
    method: 'GET',
    path: '/fixture',
    summary: 'The current pool as a fixture that reproduces it (JSON, or YAML text with format=yaml)',
    input: z.object({ format: z.enum(['json', 'yaml']).optional() }).strict(),
    output: document,
  }),
  load: route({
    method: 'POST',
    path: '/fixture',
    summary: "Loads a fixture into the running pool, adding to what it has (its hosts must be the pool's; disk content from files is refused here)",
    input: z.object({ fixture: fixtureSchema.or(z.unknown()) }).strict(),
    output: z.object({ vms: z.array(z.string()).describe('uuids of the VMs made, in the fixture order') }),
  }),
};
