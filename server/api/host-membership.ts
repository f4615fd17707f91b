// host.destroy, host.power_on (xapi_host.ml) and pool.sync_database (xapi_pool.ml): the messages
// of a pool's membership that are not join or eject.
//  - destroy: the record of a host that is gone (not live, not the master, no VM resident but its
//    control domain) leaves the database with what was its own; its local SRs stay, detached, as
//    after xapi's database GC of their PBDs.
//  - power_on (and set_power_on_mode): the master runs the power-on-host plugin (power-on.py) for the host's
//    power_on_mode: none configured fails as the plugin does; IPMI needs its power_on_config keys;
//    wake-on-lan and IPMI boot the machine, which is live again after its boot time unless it is
//    failed (a host failed through the control API stays down: the plugin waits for it, then fails).
//  - sync_database: every acknowledged write is in the database file already (xapi flushes to the
//    members' backups): a flush, nothing more.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { updateAllowedOperations, withOperation } from './operations.js';
import { isHostReachable, syncHost } from './xenops-sync.js';
import { HOST_BOOT_SECONDS } from './pool-ops.js';
import { markAdopted, removeHost } from '../pool/ejection.js';
import { poolRuntime } from '../pool/runtime.js';

/** power-on.py's waitForXapi: 120 polls, 5 seconds apart */
const POWER_ON_WAIT_SECONDS = 600;

const pluginFailure = (type: string, msg: string) => new XapiError('XENAPI_PLUGIN_FAILURE', ['main', type, msg]);

function hostRec(call: Call, host: string): Record<string, unknown> {
  const h = call.emu.db.get('host', host);
  if (!h) throw new XapiError('HANDLE_INVALID', ['host', host]);
  return h;
}

const isLive = (call: Call, host: string) => call.emu.db.get('host_metrics', String(call.emu.db.get('host', host)?.metrics))?.live !== false;

registerProvider('host', {
  // Xapi_host.set_power_on_mode: the secrets the previous configuration named are destroyed
  // (Xapi_secret.clean_out_passwds)
  set_power_on_mode(call, host: string, mode: string, config: Record<string, string>) {
    const { db } = call.emu;
    const before = (hostRec(call, host).power_on_config ?? {}) as Record<string, string>;
    db.update('host', host, { power_on_mode: String(mode), power_on_config: { ...(config ?? {}) } });
    for (const [k, v] of Object.entries(before)) {
      if (!k.endsWith('password_secret')) continue;
      const secret = db.refByUuid('secret', v);
      if (secret) db.destroy('secret', secret);
    }
    updateAllowedOperations(call.emu, 'host', host);
  },

  destroy(call, host: string) {
    const { emu } = call;
    const h = hostRec(call, host);
    // precheck_destroy_declare_dead
    if (isLive(call, host) || host === emu.master) throw new XapiError('HOST_IS_LIVE', [host]);
    if (emu.db.get('pool', emu.pool)?.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
    for (const [, r] of emu.db.table('VM')) {
      if (r.rec.resident_on === host && r.rec.is_control_domain !== true) throw new XapiError('HOST_HAS_RESIDENT_VMS', [host]);
    }
    const address = String(h.address);
    const uuid = String(h.uuid);
    removeHost(emu, host, { keepLocalSrs: true });
    markAdopted(emu, uuid, false);
    const runtime = poolRuntime(emu);
    // the address is let go; nothing comes back at it (the machine is gone)
    if (runtime) setImmediate(() => void runtime.hostLeft(address, true).catch(() => undefined));
  },

  power_on(call, host: string) {
    const { emu } = call;
    const h = hostRec(call, host);
    return withOperation(call, 'host', host, 'power_on', async () => {
      const mode = String(h.power_on_mode ?? '');
      const config = (h.power_on_config ?? {}) as Record<string, string>;
      if (mode === '') throw pluginFailure('HOST_POWER_ON_NOT_CONFIGURED', '');
      if (mode === 'IPMI') {
        for (const k of ['power_on_ip', 'power_on_user', 'power_on_password_secret']) if (!(k in config)) throw pluginFailure('KeyError', `'${k}'`);
      } else if (mode !== 'wake-on-lan') {
        // a custom mode is a module of the plugin's directory: a simulated host has none
        throw pluginFailure('ModuleNotFoundError', `No module named '${mode}'`);
      }
      const metrics = String(h.metrics);
      // a machine failed through the control API does not boot: the plugin waits, then gives up
      if (!isHostReachable(emu, host)) {
        await emu.clock.sleep(POWER_ON_WAIT_SECONDS);
        if (!isLive(call, host)) throw new XapiError('INTERNAL_ERROR', ['The host failed to power on.']);
        return;
      }
      await emu.clock.sleep(HOST_BOOT_SECONDS);
      if (emu.db.has('host_metrics', metrics)) emu.db.update('host_metrics', metrics, { live: true });
      if (emu.db.has('host', host)) {
        emu.db.update('host', host, { enabled: true });
        syncHost(emu, host);
        updateAllowedOperations(emu, 'host', host);
      }
    });
  },
});

registerProvider('pool', {
  sync_database(call) {
    call.emu.db.flush(true);
  },
});
