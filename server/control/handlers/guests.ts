// The simulated guests' routes.
import type { Emulator } from '../../emulator.js';
import type { AreaHandlers } from './index.js';
import { ControlError } from '../errors.js';
import { BOOT_SECONDS, guestOsOf } from '../../guest/os.js';
import { agentState } from '../../guest/agent.js';
import { hasPvDrivers, profileOf } from '../../guest/profile.js';
import { GuestError, changeAddress, guestExit, loadOf, setAgentRunning, setLoad, vmRef, type GuestExit } from '../../guest/events.js';

function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof GuestError) throw new ControlError(409, e.code, e.message);
    throw e;
  }
}

async function guardedAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof GuestError) throw new ControlError(409, e.code, e.message);
    throw e;
  }
}

/** The VM a route names (an ambiguous name label is a 409 AMBIGUOUS_NAME). */
const vmOf = (emu: Emulator, vm: string): string => guarded(() => vmRef(emu, vm));

function stateOf(emu: Emulator, vm: string) {
  const rec = emu.db.get('VM', vm)!;
  const profile = profileOf(emu, rec);
  const gm = emu.db.get('VM_guest_metrics', String(rec.guest_metrics));
  const live = rec.power_state === 'Running' || rec.power_state === 'Paused';
  const agent = agentState(emu, rec);
  return {
    vm, uuid: String(rec.uuid), profile, power_state: String(rec.power_state),
    pv_drivers: live && hasPvDrivers(profile) && gm?.PV_drivers_detected === true,
    agent,
    boot_seconds: BOOT_SECONDS[guestOsOf(rec).family],
    networks: live ? ((gm?.networks ?? {}) as Record<string, string>) : {},
    load: loadOf(emu, vm),
  };
}

const exit = (how: GuestExit) => async ({ emu }: { emu: Emulator }, input: { vm: string }) => {
  const vm = vmOf(emu, input.vm);
  const { action } = await guardedAsync(() => guestExit(emu, vm, how));
  return { vm, action };
};

export const guestsHandlers: AreaHandlers<'guests'> = {
  get: ({ emu }, input) => stateOf(emu, vmOf(emu, input.vm)),
  shutdown: exit('shutdown'),
  reboot: exit('reboot'),
  crash: exit('crash'),
  agent: ({ emu }, input) => {
    const vm = vmOf(emu, input.vm);
    guarded(() => setAgentRunning(emu, vm, input.running));
    return stateOf(emu, vm);
  },
  ip: ({ emu }, input) => {
    const vm = vmOf(emu, input.vm);
    const address = guarded(() => changeAddress(emu, vm, input.vif, input.address));
    return { vm, vif: input.vif, address };
  },
  getLoad: ({ emu }, input) => loadOf(emu, vmOf(emu, input.vm)),
  setLoad: ({ emu }, input) => {
    const { vm, ...load } = input;
    const ref = vmOf(emu, vm);
    return guarded(() => setLoad(emu, ref, load));
  },
};
