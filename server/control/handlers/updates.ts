// The updates offered to hosts (server/plugins/updates.ts).
import type { Emulator } from '../../emulator.js';
import type { AreaHandlers } from './index.js';
import { ControlError } from '../errors.js';
import { pendingOf, publish, withdraw } from '../../plugins/index.js';

function hostsOf(emu: Emulator, given: string[] | undefined): string[] {
  if (!given) return [...emu.hosts];
  return given.map((g) => {
    if (emu.db.has('host', g)) return g;
    const byUuid = emu.db.refByUuid('host', g);
    if (byUuid) return byUuid;
    const named = emu.hosts.filter((h) => emu.db.get('host', h)?.name_label === g);
    if (named.length === 1) return named[0];
    if (named.length > 1) throw new ControlError(409, 'AMBIGUOUS_NAME', `several hosts are named ${g}`, [g]);
    throw new ControlError(404, 'NOT_FOUND', `no host ${g}`, [g]);
  });
}

function stateOf(emu: Emulator) {
  return {
    hosts: emu.hosts.map((h) => {
      const r = emu.db.get('host', h);
      return { host: String(r?.uuid), name_label: String(r?.name_label), packages: pendingOf(emu, h) };
    }),
  };
}

export const updatesHandlers: AreaHandlers<'updates'> = {
  get: ({ emu }) => stateOf(emu),
  publish: ({ emu }, input) => {
    publish(emu, hostsOf(emu, input.hosts), input.packages);
    return stateOf(emu);
  },
  withdraw: ({ emu }, input) => {
    withdraw(emu, hostsOf(emu, input.hosts), input.names);
    return stateOf(emu);
  },
};
