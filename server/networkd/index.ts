// xcp-networkd of each simulated host: the NICs (nics.ts) and the addresses the fabric gives
// (dhclient.ts). At start it reads its links again into the database, as xapi's monitor does on
// its first round: a change cut short by a kill (a NIC's table written, its PIF_metrics not yet)
// is made whole.
import type { Emulator } from '../emulator.js';
import { syncHostMetrics } from './nics.js';

export function startNetworkd(emu: Emulator): void {
  for (const host of emu.db.table('host').keys()) syncHostMetrics(emu, host);
}
