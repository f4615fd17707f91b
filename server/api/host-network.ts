// host: the management interface (xapi_host.ml: management_reconfigure, management_disable,
// local_management_reconfigure, get_management_interface). The management interface is the PIF on
// the host's management bridge (the inventory's MANAGEMENT_INTERFACE); host.address follows its
// address as xapi's on_dom0_networking_change does, while the emulator keeps listening where it
// started: a host's listeners never move.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { recordOf } from './generic.js';
import { assertHostReachable, assertUsableForManagement, onDom0NetworkingChange, setManagementBridge } from './pif-helpers.js';
import { plugPif } from './PIF.js';

export function managementInterfaceOf(emu: Emulator, host: string): string | undefined {
  return ((emu.db.get('host', host)?.PIFs as string[]) ?? []).find((p) => emu.db.get('PIF', p)?.management === true);
}

function assertNoHa(emu: Emulator): void {
  if (emu.db.get('pool', emu.pool)?.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
}

/** Xapi_host.management_reconfigure, on the PIF's host. (xapi's comparison of the new and the
 * current management address types is inside a handler that swallows its own error, so it never
 * refuses anything: neither does the emulator.) */
export function managementReconfigure(emu: Emulator, pif: string): void {
  assertNoHa(emu);
  const rec = recordOf(emu, 'PIF', pif);
  const host = String(rec.host);
  assertHostReachable(emu, host);
  if (rec.managed === true) assertUsableForManagement(rec, pif, String(rec.primary_address_type));
  if (rec.management === true) return;
  // Xapi_network.attach_internal: the network's PIF on this host is brought up
  if (rec.currently_attached !== true) plugPif(emu, pif);
  const bridge = String(emu.db.get('network', String(rec.network))?.bridge ?? '');
  setManagementBridge(emu, host, bridge);
  onDom0NetworkingChange(emu, host);
}

registerProvider('host', {
  management_reconfigure(call: Call, pif: string) {
    managementReconfigure(call.emu, pif);
  },

  /** for a member in emergency mode only, which no emulated host is in */
  local_management_reconfigure(_call: Call, _iface: string) {
    throw new XapiError('NOT_IN_EMERGENCY_MODE', []);
  },

  /** Xapi_host.management_disable, on the host that receives the call */
  management_disable(call: Call) {
    const { emu } = call;
    assertNoHa(emu);
    if (call.host !== emu.master) throw new XapiError('SLAVE_REQUIRES_MANAGEMENT_INTERFACE', []);
    setManagementBridge(emu, call.host, '');
  },

  get_management_interface(call: Call, host: string) {
    recordOf(call.emu, 'host', host);
    const pif = managementInterfaceOf(call.emu, host);
    // xapi lets its Not_found escape
    if (!pif) throw new XapiError('INTERNAL_ERROR', ['Not_found']);
    return pif;
  },
});
