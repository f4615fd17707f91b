// Reduced race harness: 32 clients for 5 s of conflicting lifecycle operations on 2 VMs; no
// INTERNAL_ERROR, no hang, and the invariants hold once the pool is quiet.
import { expect, it } from 'vitest';
import { runRace } from '../../robustness/race.js';

it('32 racing clients for 5 s: 0 INTERNAL_ERROR, 0 hangs, 0 violations', async () => {
  const r = await runRace({ clients: 32, seconds: 5, vms: 2, seed: 5, timeoutMs: 30_000 });
  console.log(r.text);
  expect(r.calls).toBeGreaterThan(100);
  expect([...r.tally.internal]).toEqual([]);
  expect(r.hangs).toBe(0);
  expect(r.violations).toEqual([]);
}, 90_000);
