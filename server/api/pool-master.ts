// The messages that move the master role (xapi_pool.ml: designate_new_master,
// emergency_transition_to_master, emergency_reset_master, recover_slaves, is_slave, hello;
// xapi_host.ml: propose_new_master, commit_new_master, abort_new_master, is_in_emergency_mode).
// The role itself is kept by server/pool/master-role.ts.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import {
  abortNewMaster, becomeMaster, commitNewMaster, followedMaster, followMaster, haArmed, proposeNewMaster, twoPhaseCommit,
} from '../pool/master-role.js';
import { withPoolOperation } from './pool-operations.js';

export function hostLive(emu: Emulator, host: string): boolean {
  return emu.db.get('host_metrics', String(emu.db.get('host', host)?.metrics))?.live !== false;
}

/** A member whose master is gone runs in emergency mode (xapi.ml server_run_in_emergency_mode). */
export function inEmergencyMode(emu: Emulator, host: string): boolean {
  if (host === emu.master) return false;
  const m = followedMaster(emu, host);
  return !emu.db.has('host', m) || !hostLive(emu, m);
}

function assertHost(emu: Emulator, host: string): void {
  if (!emu.db.has('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host]);
}

registerProvider('pool', {
  // Message_forwarding runs it on the named host (check_live: HOST_OFFLINE), which does nothing if
  // it is the master already; else, with HA off, the two-phase commit of itself as new master.
  designate_new_master(call: Call, host: string) {
    const { emu } = call;
    assertHost(emu, host);
    return withPoolOperation(call, 'designate_new_master', () => {
      if (host === emu.master) return;
      if (!hostLive(emu, host)) throw new XapiError('HOST_OFFLINE', [host]);
      if (emu.db.get('pool', emu.pool)?.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
      twoPhaseCommit(emu, host, (h) => hostLive(emu, h));
    });
  },

  // on the host that received it (a member that lost its master), unless its HA is armed
  emergency_transition_to_master(call: Call) {
    const { emu } = call;
    if (haArmed(emu, call.host)) throw new XapiError('HA_IS_ENABLED', []);
    becomeMaster(emu, call.host, { all: false });
  },

  // the receiving host's pool.conf names the master at this address
  emergency_reset_master(call: Call, masterAddress: string) {
    const { emu } = call;
    if (haArmed(emu, call.host)) throw new XapiError('HA_IS_ENABLED', []);
    const target = emu.hostByAddress(String(masterAddress));
    if (call.host === emu.master) {
      // the master hands its role to the host it is told to follow, the only state one
      // database can hold for it
      if (target !== undefined && target !== call.host && hostLive(emu, target)) becomeMaster(emu, target, { all: false });
      return;
    }
    followMaster(emu, call.host, target ?? '');
  },

  // the master points every member it can reach at itself, and lists them
  recover_slaves(call: Call) {
    const { emu } = call;
    const recovered: string[] = [];
    for (const h of emu.db.table('host').keys()) {
      if (h === emu.master || !hostLive(emu, h)) continue;
      followMaster(emu, h, emu.master);
      recovered.push(h);
    }
    return recovered;
  },

  is_slave(call: Call, host: string) {
    const { emu } = call;
    assertHost(emu, host);
    if (host !== emu.master && !hostLive(emu, host)) throw new XapiError('HOST_OFFLINE', [host]);
    return host !== emu.master;
  },

  // a member reports to the master after its start: its address is updated if it changed, and
  // (HA off) it is live; its initialisation, which would enable it again, ends at once here
  hello(call: Call, hostUuid: string, hostAddress: string) {
    const { emu } = call;
    const host = emu.db.refByUuid('host', String(hostUuid));
    if (host === undefined) return 'unknown_host';
    if (emu.db.get('host', host)!.address !== hostAddress) emu.db.update('host', host, { address: String(hostAddress) });
    if (emu.db.get('pool', emu.pool)?.ha_enabled !== true) {
      const metrics = String(emu.db.get('host', host)!.metrics);
      if (emu.db.has('host_metrics', metrics)) emu.db.update('host_metrics', metrics, { live: true });
    }
    return 'ok';
  },
});

registerProvider('host', {
  propose_new_master(call: Call, address: string, _manual: boolean) {
    proposeNewMaster(call.emu, call.host, String(address));
  },
  commit_new_master(call: Call, address: string) {
    commitNewMaster(call.emu, call.host, String(address));
  },
  abort_new_master(call: Call, _address: string) {
    abortNewMaster(call.emu, call.host);
  },
  is_in_emergency_mode(call: Call) {
    return inEmergencyMode(call.emu, call.host);
  },
});
