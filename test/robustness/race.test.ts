// Reduced race harness: 32 clients make 400 conflicting lifecycle calls on 2 VMs (a count, not a
// duration: a loaded machine does the same work, slower); no INTERNAL_ERROR, no hang, and the
// invariants hold once the pool is quiet.
import { expect, it } from 'vitest';
import { runRace } from '../../robustness/race.js';

it('32 racing clients, 400 calls: 0 INTERNAL_ERROR, 0 hangs, 0 violations', async () => {
  const r = await runRace({ clients: 32, seconds: 120, calls: 400, vms: 2, seed: 5, timeoutMs: 30_000 });
  console.log(r.text);
  expect(r.calls).toBeGreaterThanOrEqual(400);
  expect([...r.tally.internal]).toEqual([]);
  expect(r.hangs).toBe(0);
  expect(r.violations).toEqual([]);
}, 240_000);
