// host: the messages the VM lifecycle needs (xapi_host.ml): free memory as xenopsd reports it,
// disable/enable (a disabled host starts no VM; a host that is down cannot be enabled). Evacuation,
// reboot, shutdown and host's allowed_operations are in pool-ops.ts. Others stay NOT_IMPLEMENTED.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { hostFreeMemory } from './xenops-sync.js';
import { updateAllowedOperations } from './operations.js';

function assertHost(call: Call, host: string): void {
  if (!call.emu.db.has('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host]);
}

registerProvider('host', {
  compute_free_memory(call, host: string) {
    assertHost(call, host);
    return hostFreeMemory(call.emu, host);
  },

  disable(call, host: string, _autoEnable?: boolean) {
    assertHost(call, host);
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
});
