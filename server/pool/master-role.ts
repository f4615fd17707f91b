// The master role of the pool's hosts (xapi's Pool_role and Xapi_pool_transition): which host is
// master (pool.master, in the database, so that a restart keeps it), which master each member
// follows (its pool.conf), the two-phase commit of a new master (Xapi_ha.propose_new_master /
// commit_new_master / abort_new_master) and the local HA flag of each host (Localdb ha_armed).
//
// In one process the hosts share one database, so a member's pool.conf matters only while the
// master it names is gone: a member that follows a master that is down runs in emergency mode
// (calls answer HOST_STILL_BOOTING, server/control/faults/calls.ts) until it is pointed at a live
// master (pool.emergency_reset_master, pool.recover_slaves) or that master comes back. Once every
// host can reach pool.master again, the pool.conf of all hosts names it (a member that meets a
// member answers HOST_IS_SLAVE and follows the address it gives).
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { xapiDate } from '../clock.js';
import { destroySession } from '../api/session.js';

interface RoleState {
  /** host -> the master its pool.conf names, for hosts that do not follow pool.master */
  follows: Map<string, string>;
  /** host -> the address it agreed to commit to (phase 1), and when (emulator clock, ms) */
  proposed: Map<string, { address: string; at: number }>;
  /** hosts whose HA was disabled locally (host.emergency_ha_disable) while the pool's is on */
  disarmed: Set<string>;
}

/** By the pool's storage directory, which a toolstack restart keeps. */
const states = new Map<string, RoleState>();

function stateOf(emu: Emulator): RoleState {
  let s = states.get(emu.storageDir);
  if (!s) states.set(emu.storageDir, (s = { follows: new Map(), proposed: new Map(), disarmed: new Set() }));
  return s;
}

/** The originator of the sessions HA makes its calls with. */
export const HA_ORIGINATOR = 'xapi-emu HA';

/** A proposal not committed after this long may be replaced by another (Xapi_ha: ten minutes). */
const PROPOSAL_TIMEOUT_MS = 10 * 60 * 1000;

export function hostAddress(emu: Emulator, host: string): string {
  return String(emu.db.get('host', host)?.address ?? '');
}

/** The master whose address `host`'s pool.conf names (itself for the master). */
export function followedMaster(emu: Emulator, host: string): string {
  if (host === emu.master) return host;
  return stateOf(emu).follows.get(host) ?? emu.master;
}

/** Whether `host` has HA armed: the pool's HA is on and the host did not disable it locally. */
export function haArmed(emu: Emulator, host: string): boolean {
  return emu.db.get('pool', emu.pool)?.ha_enabled === true && !stateOf(emu).disarmed.has(host);
}

export function disarmHa(emu: Emulator, host: string): void {
  stateOf(emu).disarmed.add(host);
}

/** pool.enable_ha / disable_ha: every host's local flag follows the pool's again. */
export function resetHaArming(emu: Emulator): void {
  stateOf(emu).disarmed.clear();
}

/** `host` points its pool.conf at `master` (Xapi_pool_transition.become_another_masters_slave). */
export function followMaster(emu: Emulator, host: string, master: string): void {
  const s = stateOf(emu);
  if (master === emu.master) s.follows.delete(host);
  else s.follows.set(host, master);
}

/** `host` answers again: the members that followed it reach it (and, if it is no longer the
 * master, follow the master it names in its HOST_IS_SLAVE). */
export function masterBack(emu: Emulator, host: string): void {
  const s = stateOf(emu);
  for (const [h, m] of [...s.follows]) if (m === host) s.follows.delete(h);
  s.follows.delete(host);
}

/**
 * `host` becomes the pool's master (Xapi_pool_transition.become_master). The members that followed
 * the old master keep following it (their pool.conf names it) unless `all` says they move too, as
 * in a committed two-phase change. The xapi of the new master restarts: the sessions of the pool
 * (which xapi does not persist) are gone once the call that made the change has answered. The new
 * master records POOL_MASTER_TRANSITION (Xapi_pool_transition.consider_sending_alert).
 */
export function becomeMaster(emu: Emulator, host: string, opts: { all: boolean }): void {
  const old = emu.master;
  if (old === host) return;
  const s = stateOf(emu);
  if (!opts.all) {
    for (const h of emu.db.table('host').keys()) if (h !== host && h !== old && !s.follows.has(h)) s.follows.set(h, old);
    // the old master, when it comes back, meets the new one and becomes its member
  } else {
    s.follows.clear();
  }
  s.follows.delete(host);
  s.proposed.clear();
  emu.master = host;
  const rec = emu.db.get('host', host)!;
  emu.db.create('message', emu.ids.ref(), {
    uuid: emu.ids.uuid(), name: 'POOL_MASTER_TRANSITION', priority: 4, cls: 'Host', obj_uuid: rec.uuid, timestamp: xapiDate(emu.clock.now()), body: '',
  });
  emu.db.flush();
  dropSessionsAfterAnswer(emu);
}

/** The toolstacks restart after the answer of the call that changed roles has left (the HA
 * monitor's own session goes on: its restarts are what the new master does next). */
function dropSessionsAfterAnswer(emu: Emulator): void {
  const sessions = [...emu.db.table('session')].filter(([, row]) => row.rec.originator !== HA_ORIGINATOR).map(([ref]) => ref);
  setImmediate(() => {
    for (const ref of sessions) if (emu.db.has('session', ref)) destroySession(emu, ref);
    emu.db.flush();
  });
}

// ---- the two-phase commit (Xapi_ha.propose_new_master / commit_new_master / abort_new_master) ----

export function proposeNewMaster(emu: Emulator, host: string, address: string): void {
  const s = stateOf(emu);
  const now = emu.clock.now();
  const p = s.proposed.get(host);
  if (p && p.address !== address && now - p.at <= PROPOSAL_TIMEOUT_MS) {
    const secs = ((now - p.at) / 1000).toFixed(6);
    throw new XapiError('HA_ABORT_NEW_MASTER', [`Already agreed to commit host address '${p.address}' at ${new Date(p.at).toISOString().replace('.000Z', 'Z')} ('${secs}' secs ago)`]);
  }
  s.proposed.set(host, { address, at: now });
}

/** Phase 2 on `host`: it becomes master if the address is its own, else a member of that address. */
export function commitNewMaster(emu: Emulator, host: string, address: string): void {
  const s = stateOf(emu);
  const p = s.proposed.get(host);
  if (!p) throw new XapiError('HA_ABORT_NEW_MASTER', [`Received commit_new_master(${address}) but never received a proposal`]);
  if (p.address !== address) throw new XapiError('HA_ABORT_NEW_MASTER', [`Received commit_new_master(${address}) but previously received proposal for ${p.address}`]);
  s.proposed.delete(host);
  const target = emu.hostByAddress(address);
  if (address === hostAddress(emu, host)) becomeMaster(emu, host, { all: false });
  else followMaster(emu, host, target ?? '');
}

export function abortNewMaster(emu: Emulator, host: string): void {
  stateOf(emu).proposed.delete(host);
}

/**
 * Xapi_pool_transition.attempt_two_phase_commit_of_new_master, run for `host`: every peer (the old
 * master first) and then the new master itself agree to the proposal, or all that agreed are told
 * to abort; then each commits. `reachable` says which hosts answer.
 */
export function twoPhaseCommit(emu: Emulator, host: string, reachable: (h: string) => boolean): void {
  const address = hostAddress(emu, host);
  const peers = [emu.master, ...[...emu.db.table('host').keys()].filter((h) => h !== emu.master && h !== host)].filter((h) => h !== host);
  const agreed: string[] = [];
  try {
    for (const h of [...peers, host]) {
      if (!reachable(h)) throw new XapiError('HOST_OFFLINE', [h]);
      proposeNewMaster(emu, h, address);
      agreed.push(h);
    }
  } catch (e) {
    for (const h of agreed) abortNewMaster(emu, h);
    throw e;
  }
  // the new master commits last; by then every peer follows it
  const s = stateOf(emu);
  for (const h of peers) {
    s.proposed.delete(h);
    s.follows.delete(h);
  }
  s.proposed.delete(host);
  becomeMaster(emu, host, { all: true });
}
