// pool: the pool-wide networking messages (xapi_pool.ml): VLANs on every host at once and the
// management interface moved to another network on every host, members first.
import { handlerFor, registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { recordOf } from './generic.js';
import { assertUsableForManagement } from './pif-helpers.js';
import { createVlanOnHost, destroyVlan } from './VLAN.js';
import { messages } from '../../schema/index.js';
import { managementReconfigure } from './host-network.js';

const isLive = (call: Call, host: string): boolean =>
  call.emu.db.get('host_metrics', String(call.emu.db.get('host', host)?.metrics))?.live !== false;

registerProvider('pool', {
  /** Xapi_pool.create_VLAN: PIF.create_VLAN on every host; on a failure the PIFs made are destroyed */
  create_VLAN(call, device: string, network: string, VLAN: number) {
    const { emu } = call;
    const createVlan = handlerFor(messages.get('PIF.create_VLAN')!);
    const created: string[] = [];
    try {
      for (const host of emu.db.table('host').keys()) created.push(createVlan(call, device, network, host, VLAN) as string);
    } catch (e) {
      for (const pif of created) {
        const vlan = emu.db.get('PIF', pif)?.VLAN_master_of;
        if (typeof vlan === 'string' && emu.db.has('VLAN', vlan)) destroyVlan(call, vlan);
      }
      throw e;
    }
    return created;
  },

  /** Xapi_pool.create_VLAN_from_PIF: a VLAN on each live host's PIF of the same network */
  create_VLAN_from_PIF(call, pif: string, network: string, VLAN: number) {
    const { emu } = call;
    const base = recordOf(emu, 'PIF', pif);
    const bases = ((emu.db.get('network', String(base.network))?.PIFs as string[]) ?? []).filter((p) => isLive(call, String(emu.db.get('PIF', p)?.host)));
    const created: string[] = [];
    try {
      for (const p of bases) created.push(createVlanOnHost(call, p, Number(VLAN), network));
    } catch (e) {
      for (const v of created) {
        try {
          destroyVlan(call, v);
        } catch {
          // best effort, as xapi's safe_destroy_VLANs
        }
      }
      throw e;
    }
    return created.map((v) => String(emu.db.get('VLAN', v)!.untagged_PIF));
  },

  /** Xapi_pool.management_reconfigure: every host needs a usable PIF on the network */
  management_reconfigure(call, network: string) {
    const { emu } = call;
    if (emu.db.get('pool', emu.pool)?.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
    const pifs = (recordOf(emu, 'network', network).PIFs as string[]) ?? [];
    const byHost = new Map<string, string>();
    for (const p of pifs) byHost.set(String(emu.db.get('PIF', p)?.host), p);
    for (const host of emu.db.table('host').keys()) {
      if (!byHost.has(host)) throw new XapiError('PIF_NOT_PRESENT', [host, network]);
    }
    const addressType = emu.db.get('PIF', pifs[0])?.primary_address_type;
    for (const p of pifs) {
      const rec = recordOf(emu, 'PIF', p);
      if (rec.primary_address_type !== addressType) throw new XapiError('PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE', [p]);
      assertUsableForManagement(rec, p, String(rec.primary_address_type));
    }
    // call_fn_on_slaves_then_master
    const order = [...byHost.keys()].sort((a, b) => Number(a === emu.master) - Number(b === emu.master));
    for (const host of order) managementReconfigure(emu, byHost.get(host)!);
  },
});
