// The clock's routes.
import type { Emulator } from '../../emulator.js';
import type { AreaHandlers } from './index.js';
import { runGc } from '../../api/task-gc.js';

export function clockOf(emu: Emulator) {
  const s = emu.clock.state();
  return { now: new Date(s.now).toISOString(), now_ms: s.now, scale: s.scale, frozen: s.frozen, sleeping: s.sleeping };
}

export const clockHandlers: AreaHandlers<'clock'> = {
  get: ({ emu }) => clockOf(emu),
  set: ({ emu }, input) => {
    if (input.scale !== undefined) emu.clock.setScale(input.scale);
    if (input.frozen === true) emu.clock.freeze();
    if (input.frozen === false) emu.clock.unfreeze();
    return clockOf(emu);
  },
  advance: async ({ emu }, input) => {
    emu.clock.advance(input.seconds);
    // what woke runs before the answer: a test that advances past a boot sees the guest booted
    await new Promise((r) => setImmediate(r));
    runGc(emu);
    return clockOf(emu);
  },
};
