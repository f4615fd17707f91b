// Reduced fuzzer run: 5,000 hostile requests against a spawned emulator; no crash, no hang, no
// answer that is not XenAPI's, bounded RSS.
import { afterAll, expect, it } from 'vitest';
import { stopAll } from '../../bench/lib.js';
import { runFuzz } from '../../robustness/fuzz.js';

afterAll(stopAll);

it('5,000 hostile requests: 0 crashes, 0 hangs, only XenAPI answers', async () => {
  const r = await runFuzz({ requests: 5000, concurrency: 8, batch: 500, seed: 7, timeoutMs: 10_000, maxRssMiB: 1024 });
  console.log(r.text);
  expect(r.requests).toBe(5000);
  expect(r.crashes).toBe(0);
  expect(r.hangs).toBe(0);
  expect(r.badAnswers).toEqual([]);
}, 240_000);
