// The simulated network cards' routes.
import type { Emulator } from '../../emulator.js';
import type { AreaHandlers } from './index.js';
import { ControlError } from '../errors.js';
import { NicError, addNic, forgetNics, nicsOf, removeNic, setCarrier, type Nic } from '../../networkd/nics.js';
import { startNetworkd } from '../../networkd/index.js';
import { onRestore } from '../snapshots/snapshots.js';

// a restored pool's cards are those its PIFs describe
onRestore((emu) => {
  forgetNics(emu);
  startNetworkd(emu);
});

/** A host by ref, uuid or name label (404 when none, 409 when a name is ambiguous). */
function hostOf(emu: Emulator, name: string): string {
  if (emu.db.has('host', name)) return name;
  const byUuid = emu.db.refByUuid('host', name);
  if (byUuid) return byUuid;
  const named = [...emu.db.table('host')].filter(([, r]) => r.rec.name_label === name).map(([ref]) => ref);
  if (named.length === 1) return named[0];
  if (named.length > 1) throw new ControlError(409, 'AMBIGUOUS_NAME', `${named.length} hosts are named ${name}`);
  throw new ControlError(404, 'NOT_FOUND', `no host ${name}`);
}

function stateOf(emu: Emulator, host: string, n: Nic) {
  const pif = ((emu.db.get('host', host)?.PIFs as string[]) ?? []).find((p) => {
    const r = emu.db.get('PIF', p);
    return r?.physical === true && r.device === n.device;
  });
  return {
    device: n.device, MAC: n.MAC, speed: n.speed, duplex: n.duplex, carrier: n.carrier, vendor_name: n.vendor_name,
    device_name: n.device_name, pci_bus_path: n.pci_bus_path, sriov_vfs: n.sriov_vfs, pif: pif ?? null,
  };
}

function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof NicError) throw new ControlError(e.code === 'NIC_NOT_FOUND' ? 404 : 409, e.code, e.message);
    throw e;
  }
}

export const nicsHandlers: AreaHandlers<'nics'> = {
  list: ({ emu }, input) => {
    const host = hostOf(emu, input.host);
    return nicsOf(emu, host).map((n) => stateOf(emu, host, n));
  },
  add: ({ emu }, input) => {
    const { host: name, ...spec } = input;
    const host = hostOf(emu, name);
    return stateOf(emu, host, guarded(() => addNic(emu, host, spec)));
  },
  remove: ({ emu }, input) => {
    const host = hostOf(emu, input.host);
    // the answer names the PIF the card had
    const before = nicsOf(emu, host).find((n) => n.device === input.device);
    const gone = guarded(() => removeNic(emu, host, input.device));
    return { ...stateOf(emu, host, before ?? gone), carrier: false };
  },
  carrier: ({ emu }, input) => {
    const host = hostOf(emu, input.host);
    return stateOf(emu, host, guarded(() => setCarrier(emu, host, input.device, input.carrier)));
  },
};
