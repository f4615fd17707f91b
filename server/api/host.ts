// host: the messages the VM lifecycle needs (xapi_host.ml): free memory as xenopsd reports it,
// disable/enable (a disabled host starts no VM; a host that is down cannot be enabled), and
// declare_dead for a host that went away. Evacuation, reboot, shutdown and host's
// allowed_operations are in pool-ops.ts. Plugins (host.call_plugin) run on the simulated host
// (server/plugins/); no extension is installed. Others stay NOT_IMPLEMENTED.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { forceStateReset, hostFreeMemory, xenopsOf } from './xenops-sync.js';
import { updateAllowedOperations } from './operations.js';
import { hostDataSources } from '../rrdd/data-sources.js';
import { backupRrds } from '../rrdd/rrdd.js';
import { callPlugin } from '../plugins/index.js';
import { assertHostDisablePreservesPlan } from './ha-plan.js';

function assertHost(call: Call, host: string): void {
  if (!call.emu.db.has('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host]);
}

/** Date.localtime: the server's local time, an ISO 8601 basic datetime without a zone (the
 * emulator's hosts keep UTC) */
function localtime(ms: number): string {
  return isoBasic(ms);
}

/** xapi's datetime text: 20260101T00:00:00, with Z for UTC */
function isoBasic(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
}

// the host's data sources live in its xcp-rrdd (server/rrdd/)
registerProvider('host', {
  get_data_sources(call, host: string) {
    assertHost(call, host);
    return hostDataSources.get(call.emu, host);
  },
  record_data_source(call, host: string, name: string) {
    assertHost(call, host);
    hostDataSources.record(call.emu, host, name);
  },
  query_data_source(call, host: string, name: string) {
    assertHost(call, host);
    return hostDataSources.query(call.emu, host, name);
  },
  forget_data_source_archives(call, host: string, name: string) {
    assertHost(call, host);
    hostDataSources.forget(call.emu, host, name);
  },
  backup_rrds(call, host: string, delay: number) {
    assertHost(call, host);
    backupRrds(call.emu, Number(delay));
  },
});

function isLive(call: Call, host: string): boolean {
  return call.emu.db.get('host_metrics', String(call.emu.db.get('host', host)?.metrics))?.live === true;
}

/** Jsonrpc.call_of_string: a JSON object with a method name (and params). */
function extensionMethod(call: string): string {
  let v: unknown;
  try {
    v = JSON.parse(call);
  } catch (e) {
    throw new XapiError('INTERNAL_ERROR', [`Jsonrpc.Parse_error: ${(e as Error).message}`]);
  }
  const method = (v as { method?: unknown } | null)?.method;
  if (typeof v !== 'object' || v === null || typeof method !== 'string') {
    throw new XapiError('INTERNAL_ERROR', [`Jsonrpc.Malformed_method_request(${call})`]);
  }
  return method;
}

registerProvider('host', {
  // the emulator's clock is the host's clock (xapi_host.ml: Date.now / Date.localtime)
  get_servertime(call, host: string) {
    assertHost(call, host);
    return `${isoBasic(call.emu.clock.now())}Z`;
  },

  get_server_localtime(call, host: string) {
    assertHost(call, host);
    return localtime(call.emu.clock.now());
  },

  // Xapi_plugins.call_plugin, on the named host (message_forwarding runs it there)
  call_plugin(call, host: string, plugin: string, fn: string, args: Record<string, string>) {
    assertHost(call, host);
    // message_forwarding.check_live: a member that is down cannot be reached
    if (host !== call.emu.master && !isLive(call, host)) throw new XapiError('HOST_OFFLINE', [host]);
    return callPlugin({ emu: call.emu, host, session: call.session, plugin, fn, args: args ?? {} });
  },

  // Xapi_extensions: scripts of /etc/xapi.d/extensions, of which a simulated host has none
  has_extension(call, host: string, _name: string) {
    assertHost(call, host);
    return false;
  },

  call_extension(call, host: string, request: string) {
    assertHost(call, host);
    throw new XapiError('MESSAGE_METHOD_UNKNOWN', [extensionMethod(request)]);
  },

  compute_free_memory(call, host: string) {
    assertHost(call, host);
    return hostFreeMemory(call.emu, host);
  },

  disable(call, host: string, _autoEnable?: boolean) {
    assertHost(call, host);
    assertHostDisablePreservesPlan(call.emu, host);
    call.emu.db.update('host', host, { enabled: false });
    updateAllowedOperations(call.emu, 'host', host);
  },

  enable(call, host: string) {
    assertHost(call, host);
    const metrics = call.emu.db.get('host_metrics', String(call.emu.db.get('host', host)?.metrics));
    if (metrics?.live === false) throw new XapiError('HOST_OFFLINE', [host]);
    call.emu.db.update('host', host, { enabled: true });
    updateAllowedOperations(call.emu, 'host', host);
  },

  // Xapi_host.declare_dead: for a host that is gone (live false) and not the master; its VMs are
  // reset to Halted (VM.power_state_reset of each) and it is disabled. With HA off this is how a
  // dead host's VMs come back: the master noticing only sets host_metrics.live false.
  declare_dead(call, host: string) {
    const { emu } = call;
    assertHost(call, host);
    const metrics = emu.db.get('host_metrics', String(emu.db.get('host', host)?.metrics));
    if (metrics?.live !== false || host === emu.master) throw new XapiError('HOST_IS_LIVE', [host]);
    for (const [vm, row] of [...emu.db.table('VM')]) {
      if (row.rec.resident_on !== host || row.rec.is_control_domain === true) continue;
      try {
        xenopsOf(emu, host).remove(String(row.rec.uuid));
      } catch {
        // its xenopsd holds nothing of it
      }
      forceStateReset(emu, vm, 'Halted');
    }
    emu.db.update('host', host, { enabled: false });
    updateAllowedOperations(emu, 'host', host);
  },
});
