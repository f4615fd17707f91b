// Reduced crash harness: 8 SIGKILLs under mixed load; every acknowledged write survives, and the
// data directory satisfies the invariants as stored and after a start.
import { afterAll, expect, it } from 'vitest';
import { stopAll } from '../../bench/lib.js';
import { runCrash } from '../../robustness/crash.js';

afterAll(stopAll);

it('8 SIGKILLs under load: no acknowledged write lost, no invariant violated', async () => {
  const r = await runCrash({ kills: 8, workers: 4, maxLoadMs: 800, checkEvery: 4, seed: 3 });
  console.log(r.text);
  expect(r.kills).toBe(8);
  expect(r.acked).toBeGreaterThan(0);
  expect(r.lost).toEqual([]);
  expect(r.violations).toEqual([]);
}, 120_000);
