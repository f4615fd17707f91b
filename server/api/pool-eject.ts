// pool.eject (xapi_pool.ml eject, eject_self; message_forwarding runs it on the host, then on the
// master): refused for the master, with HA enabled, or while a VM other than dom0 is resident on
// the host and not Halted. The master forgets the host and what was its own (server/pool/
// ejection.ts); the host comes back at its address as a fresh standalone pool: an adopted
// instance on its own (its door finds the master gone), a host of this process as a pool this
// process serves.
import { registerProvider } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { adoptedHosts, markAdopted, removeHost } from '../pool/ejection.js';
import { poolRuntime } from '../pool/runtime.js';

registerProvider('pool', {
  eject(call, host: string) {
    const { emu } = call;
    const { db } = emu;
    const h = db.get('host', host);
    if (!h) throw new XapiError('HANDLE_INVALID', ['host', host]);
    if (db.get('pool', emu.pool)?.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
    // Xapi_pool.Cannot_eject_master is an OCaml exception, not an API error: xapi answers it so
    if (host === emu.master) throw new XapiError('INTERNAL_ERROR', ['Xapi_pool.Cannot_eject_master']);
    // message_forwarding: the host must be reachable to eject itself
    if (db.get('host_metrics', String(h.metrics))?.live === false) throw new XapiError('HOST_OFFLINE', [host]);
    for (const [, r] of db.table('VM')) {
      if (r.rec.resident_on === host && r.rec.is_control_domain !== true && r.rec.power_state !== 'Halted') {
        throw new XapiError('OPERATION_NOT_ALLOWED', ['VM resident on host']);
      }
    }
    const address = String(h.address);
    const uuid = String(h.uuid);
    const adopted = adoptedHosts(emu).has(uuid);
    removeHost(emu, host);
    markAdopted(emu, uuid, false);
    const runtime = poolRuntime(emu);
    // after the answer: the address is let go
    if (runtime) setImmediate(() => void runtime.hostLeft(address, adopted).catch((e: Error) => console.error(`xapi-emu: pool.eject: ${e.message}`)));
  },
});
