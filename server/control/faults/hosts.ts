// A member that fails or is cut off from the master, and its return.
//
// down: the host is gone. Its domains are gone with it (its xenopsd loses them), the master marks
// host_metrics.live false, calls forwarded to it fail with HOST_OFFLINE [host] (Message_forwarding
// .check_live) and its own address answers nothing (the connection is cut). As in xapi with HA
// off, the database still shows its VMs Running there: host.declare_dead (or VM.power_state_reset)
// resets them to Halted. When the rule goes the host boots again: live, enabled, and its VMs that
// have no domain any more are Halted, as its xapi's resync at start does (Dbsync_slave).
//
// isolated: the host runs but cannot reach the master. The master marks it offline (calls forwarded
// to it fail with HOST_OFFLINE); calls received on its own address get its emergency-mode error,
// HOST_STILL_BOOTING (xapi.ml sets it while a slave tries to reach its master), except the
// emergency calls. Its domains keep running; when the rule goes it is live again and resynced.
//
// xapi's master notices a silent host after host_assumed_dead_interval (10 min, Db_gc
// .check_host_liveness); here it is at once, so that a test sees the failure when the rule exists.
//
// The master may go down too: with HA off its members run in emergency mode (HOST_STILL_BOOTING)
// until one becomes master (pool.emergency_transition_to_master) or it comes back; with HA on a
// survivor takes the role and HA restarts the protected VMs (server/api/ha-failover.ts).
import type { Emulator } from '../../emulator.js';
import { setHostReachable, syncVm, xenopsOf } from '../../api/xenops-sync.js';
import { updateAllowedOperations } from '../../api/operations.js';
import type { FaultEngine } from './engine.js';
import { haHostFailed, haHostRecovered } from '../../api/ha-failover.js';
import { masterBack } from '../../pool/master-role.js';

export type HostFault = 'down' | 'isolated';

/** The fault a host has, if any; `hit`: a call met it (counted in the rule's hits). */
export function hostFault(engine: FaultEngine, host: string, hit = false): HostFault | undefined {
  for (const r of engine.rules.values()) {
    if (r.kind !== 'host' || r.ref !== host) continue;
    if (hit) {
      r.total++;
      r.fired++;
    }
    return r.input.effect.host_down ? 'down' : 'isolated';
  }
  return undefined;
}

function setLive(emu: Emulator, host: string, live: boolean): void {
  const metrics = String(emu.db.get('host', host)?.metrics);
  if (emu.db.has('host_metrics', metrics)) emu.db.update('host_metrics', metrics, { live });
  updateAllowedOperations(emu, 'host', host);
}

export async function hostFails(emu: Emulator, host: string, how: HostFault): Promise<void> {
  setHostReachable(emu, host, false);
  setLive(emu, host, false);
  emu.db.flush();
  if (how === 'isolated') return;
  const x = xenopsOf(emu, host);
  const gone = Promise.all(x.list().map((uuid) => x.shutdown(uuid, { clean: false }).catch(() => undefined)));
  // the domains' teardown follows the clock: with time frozen it ends when time moves on
  if (!emu.clock.state().frozen) await gone;
  // with HA on, the host is fenced and its protected VMs restarted elsewhere (a failed master
  // hands its role to a survivor); with HA off, members of a failed master run in emergency mode
  haHostFailed(emu, host);
}

export async function hostRecovers(emu: Emulator, host: string, how: HostFault): Promise<void> {
  if (!emu.db.has('host', host)) return;
  setHostReachable(emu, host, true);
  setLive(emu, host, true);
  if (how === 'down') emu.db.update('host', host, { enabled: true });
  updateAllowedOperations(emu, 'host', host);
  // what the master missed while it could not hear the host
  const x = xenopsOf(emu, host);
  const uuids = new Set(x.list());
  for (const [, row] of emu.db.table('VM')) if (row.rec.resident_on === host && row.rec.is_control_domain !== true) uuids.add(String(row.rec.uuid));
  for (const uuid of uuids) syncVm(emu, host, uuid);
  // the members that followed it reach it again; a former master comes back as a member
  masterBack(emu, host);
  haHostRecovered(emu, host);
  emu.db.flush();
}
