// The faults' routes: rules are made, read, released and removed here; what they do is in
// server/control/faults/.
import type { Emulator } from '../../emulator.js';
import type { AreaHandlers } from './index.js';
import { ControlError } from '../errors.js';
import { clearRules, createRule, engineOf, findRule, releaseRule, removeRule } from '../faults/index.js';

function ruleOf(emu: Emulator, id: string) {
  const r = findRule(emu, id);
  if (!r) throw new ControlError(404, 'NOT_FOUND', `no fault rule ${id}`, [id]);
  return r;
}

const view = (emu: Emulator, id: string) => {
  // (the rule first: with no rule at all there is no engine either)
  const r = ruleOf(emu, id);
  return engineOf(emu)!.view(r);
};

export const faultsHandlers: AreaHandlers<'faults'> = {
  list: ({ emu }) => {
    const e = engineOf(emu);
    return { rules: e ? [...e.rules.values()].map((r) => e.view(r)) : [] };
  },
  get: ({ emu }, { id }) => view(emu, id),
  create: async ({ emu, runtime }, input) => {
    const r = await createRule(emu, runtime, input);
    return engineOf(emu)!.view(r);
  },
  delete: async ({ emu }, { id }) => {
    await removeRule(emu, ruleOf(emu, id));
    return { removed: id };
  },
  clear: async ({ emu }) => ({ removed: await clearRules(emu) }),
  release: ({ emu }, { id }) => {
    const r = ruleOf(emu, id);
    if (!r.input.effect.hang) throw new ControlError(400, 'INVALID_INPUT', `fault rule ${id} does not hang`, [id]);
    releaseRule(emu, r);
    return engineOf(emu)!.view(r);
  },
  toolstackRestart: ({ runtime, reply }) => {
    if (!runtime) throw new ControlError(409, 'NOT_RUNNING', 'no running server to restart');
    // after the answer has gone out: the restart closes the listeners
    reply.raw.once('finish', () => void runtime.toolstackRestart());
    return { restarting: true as const };
  },
};
