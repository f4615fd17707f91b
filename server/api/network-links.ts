// Whether a network carries traffic on a host, for what runs on that host (a guest's VIF has a
// link only when this is true).
import type { Emulator } from '../emulator.js';
import { pifTopo } from './pif-helpers.js';
import { linkOf } from '../networkd/nics.js';

/**
 * networkHasCarrier(emu, network, host): true when the network's PIF on that host is attached
 * (currently_attached) and a NIC under it has carrier: the NIC itself, one member of a bond, the
 * NIC or bond under a VLAN, tunnel or SR-IOV PIF. A network with no PIF on the host (a private or
 * internal network: a bridge of its own) always carries traffic.
 */
export function networkHasCarrier(emu: Emulator, network: string, host: string): boolean {
  const pifs = (emu.db.get('network', network)?.PIFs as string[] | undefined) ?? [];
  const pif = pifs.find((p) => emu.db.get('PIF', p)?.host === host);
  if (pif === undefined) return true;
  if (emu.db.get('PIF', pif)?.currently_attached !== true) return false;
  let topo: ReturnType<typeof pifTopo>;
  try {
    topo = pifTopo(emu, pif);
  } catch {
    return false; // a PIF of no known kind carries nothing
  }
  const root = topo[topo.length - 1];
  if (root.type.kind === 'bond_master') {
    const bond = emu.db.get('Bond', root.type.ref);
    return ((bond?.slaves as string[]) ?? []).some((s) => linkOf(emu, host, String(emu.db.get('PIF', s)?.device))?.carrier === true);
  }
  return linkOf(emu, host, String(root.rec.device))?.carrier === true;
}
