// xcp-networkd of each simulated host: the NICs (nics.ts) and the addresses the fabric gives
// (dhclient.ts). At start it reads its links again into the database, as xapi's monitor does on
// its first round: a change cut short by a kill (a NIC's table written, its PIF_metrics not yet)
// is made whole. The guests' view of their links follows when xenopsd's first sync reports them.
import type { Emulator } from '../emulator.js';
import { readLinks } from './nics.js';

export function startNetworkd(emu: Emulator): void {
  for (const host of emu.db.table('host').keys()) readLinks(emu, host);
}
