// XCP-ng's plugins about the host itself: hyperthreading.py (from the host's CPU record),
// netdata.py (not installed on a fresh host) and service.py (systemd units: not simulated).
import { installPlugin, notSimulated, pyJson, wrappedError, type PluginFunction } from './registry.js';

installPlugin('hyperthreading.py', {
  // `xl info threads_per_core` > 1
  get_hyperthreading: ({ emu, host }) => {
    const cpu = (emu.db.get('host', host)?.cpu_info ?? {}) as Record<string, string>;
    return pyJson(Number(cpu.threads_per_core ?? '1') > 1);
  },
});

installPlugin('netdata.py', {
  // `service netdata status` fails: no such service on a fresh host
  is_netdata_installed: () => pyJson(false),
  // no /etc/netdata/stream.conf: no streaming configured
  get_netdata_api_key: () => '',
  install_netdata: notSimulated('netdata.py'),
});

const service = (fn: PluginFunction): PluginFunction => (c) => {
  if (!c.args.service) throw wrappedError('Missing or empty argument `service`');
  return fn(c);
};
const units = notSimulated('service.py');
installPlugin('service.py', {
  start_service: service(units),
  stop_service: service(units),
  restart_service: service(units),
  try_restart_service: service(units),
});
