// network: custom messages (xapi_network.ml). Purposes say what a network is for: `nbd` and
// `insecure_nbd` make VDI.get_nbd_info offer the hosts' NBD servers on that network's PIFs.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { recordOf } from './generic.js';

/** a pool offers NBD either with TLS or without, never both (Xapi_network.assert_can_add_purpose) */
const INCOMPATIBLE: Record<string, string[]> = { nbd: ['insecure_nbd'], insecure_nbd: ['nbd'] };

registerProvider('network', {
  add_purpose(call: Call, self: string, value: string) {
    const { emu } = call;
    const rec = recordOf(emu, 'network', self);
    if (!rec.managed) throw new XapiError('NETWORK_UNMANAGED', [self]);
    const current = rec.purpose as string[];
    if (current.includes(value)) return;
    const bad = INCOMPATIBLE[value] ?? [];
    for (const [, row] of emu.db.table('network')) {
      const clash = (row.rec.purpose as string[]).find((p) => bad.includes(p));
      if (clash) throw new XapiError('NETWORK_INCOMPATIBLE_PURPOSES', [value, clash]);
    }
    // xapi conses the new purpose onto the list
    emu.db.update('network', self, { purpose: [value, ...current] });
  },

  remove_purpose(call: Call, self: string, value: string) {
    const { emu } = call;
    const current = recordOf(emu, 'network', self).purpose as string[];
    if (current.includes(value)) emu.db.update('network', self, { purpose: current.filter((p) => p !== value) });
  },
});
