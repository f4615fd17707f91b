// network.create's choice of bridge (Xapi_network.create): a network created with no bridge gets
// the next free xapi<N> (N from a counter that starts at 0 with the toolstack), one given by a
// client must be new, at most 15 characters and not in the host's own name spaces.
import { registerProvider } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { genericHandler } from './generic.js';
import { messages } from '../../schema/index.js';

const BRIDGE_BLACKLIST = ['xen', 'xapi', 'vif', 'tap', 'eth'];
const counters = new WeakMap<Emulator, number>();
const genericCreate = genericHandler(messages.get('network.create')!)!;

function chooseBridgeName(emu: Emulator, bridges: Set<string>): string {
  let n = counters.get(emu) ?? 0;
  while (bridges.has(`xapi${n}`)) n++;
  counters.set(emu, n + 1);
  return `xapi${n}`;
}

registerProvider('network', {
  create(call, args: Rec) {
    const { emu } = call;
    const bridges = new Set<string>();
    for (const [, row] of emu.db.table('network')) bridges.add(String(row.rec.bridge));
    const MTU = Number(args.MTU ?? 0) <= 0 ? 1500 : Number(args.MTU);
    let bridge = String(args.bridge ?? '');
    if (bridge === '') bridge = chooseBridgeName(emu, bridges);
    else {
      // a pool-internal session (a VM import between hosts) is trusted with any name
      const internal = emu.db.get('session', call.session)?.pool === true;
      if (!internal && (bridge.length > 15 || BRIDGE_BLACKLIST.some((p) => bridge.startsWith(p)))) throw new XapiError('INVALID_VALUE', ['bridge', bridge]);
      if (bridges.has(bridge)) throw new XapiError('BRIDGE_NAME_EXISTS', [bridge]);
    }
    return genericCreate(call, { ...args, MTU, bridge, purpose: [], default_locking_mode: 'unlocked', assigned_ips: {} });
  },
});
