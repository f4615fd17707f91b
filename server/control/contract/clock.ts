// The clock: simulated time, its scale, advance and freeze.
import { z } from 'zod';
import { route } from './route.js';

export const clockState = z.object({
  now: z.string().describe('simulated now, ISO 8601'),
  now_ms: z.number().describe('simulated now, milliseconds since the epoch'),
  scale: z.number().describe('wall seconds per simulated second of work (0: simulated work is instant)'),
  frozen: z.boolean().describe('simulated time stands still; simulated waits last until it is advanced'),
  sleeping: z.number().int().describe('simulated waits under way (boots, task steps, GC quiet periods ...)'),
});

export const clock = {
  get: route({ method: 'GET', path: '/clock', summary: 'Reads the clock', input: z.object({}), output: clockState }),
  set: route({
    method: 'PUT',
    path: '/clock',
    summary: 'Sets the time scale, freezes or unfreezes time',
    input: z.object({ scale: z.number().min(0).max(3600).optional(), frozen: z.boolean().optional() }).strict(),
    output: clockState,
  }),
  advance: route({
    method: 'POST',
    path: '/clock/advance',
    summary: 'Moves simulated time forward; the simulated waits that end on the way wake, then periodic work (task and session GC) runs',
    input: z.object({ seconds: z.number().min(0).max(10 * 365 * 86400) }).strict(),
    output: clockState,
  }),
};
