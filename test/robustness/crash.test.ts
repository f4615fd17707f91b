// Reduced crash harness: 8 SIGKILLs under mixed load; every acknowledged write survives, and the
// data directory satisfies the invariants as stored and after a start.
import { afterAll, expect, it } from 'vitest';
import { stopAll } from '../../bench/lib.js';
import { runCrash } from '../../robustness/crash.js';

afterAll(stopAll);

// Each kill costs a start of a spawned emulator (about 3 s of CPU loading its modules): 8 of them
// take 30 s on an idle 2-core machine, and a loaded one runs them several times slower.
it('8 SIGKILLs under load: no acknowledged write lost, no invariant violated', async () => {
  const r = await runCrash({ kills: 8, workers: 4, maxLoadMs: 800, checkEvery: 4, seed: 3 });
  console.log(r.text);
  expect(r.kills).toBe(8);
  expect(r.acked).toBeGreaterThan(0);
  expect(r.lost).toEqual([]);
  expect(r.violations).toEqual([]);
}, 300_000);
