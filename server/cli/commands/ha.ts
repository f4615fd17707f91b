// HA commands (cli_operations.ml's pool_ha_* and host_emergency_ha_disable).
import { defineCommand } from '../commands.js';
import { boolOf, byUuid, failure, int64Of, mapParams, param, reqd } from './params.js';

/** fail_without_force's text */
const NO_FORCE = 'This operation is dangerous and may cause data loss. This operation must be forced (use --force).';

defineCommand({
  name: 'pool-ha-enable',
  reqd: [],
  optn: ['heartbeat-sr-uuids', 'ha-config:'],
  help: 'Enable HA on this Pool.',
  run: async (ctx) => {
    const configuration = mapParams(ctx.params, 'ha-config');
    const uuids = param(ctx.params, 'heartbeat-sr-uuids');
    const srs: string[] = [];
    for (const uuid of uuids === undefined ? [] : uuids.split(',')) srs.push(await byUuid(ctx, 'SR', uuid));
    await ctx.call('pool.enable_ha', srs, configuration);
  },
});

defineCommand({
  name: 'pool-ha-disable',
  reqd: [],
  optn: [],
  help: 'Disable HA on this Pool.',
  run: async (ctx) => {
    await ctx.call('pool.disable_ha');
  },
});

defineCommand({
  name: 'pool-ha-compute-max-host-failures-to-tolerate',
  reqd: [],
  optn: [],
  help: 'Compute the maximum number of host failures to tolerate under the current Pool configuration',
  run: async (ctx) => {
    const n = await ctx.call('pool.ha_compute_max_host_failures_to_tolerate');
    ctx.printer.print({ t: 'list', lines: [String(n)] });
  },
});

defineCommand({
  name: 'pool-ha-compute-hypothetical-max-host-failures-to-tolerate',
  reqd: [],
  // (each may be given several times, vm-uuid and restart-priority in pairs)
  optn: ['vm-uuid', 'restart-priority'],
  help: 'Compute the maximum number of host failures to tolerate with the supplied, proposed protected VMs.',
  run: async (ctx) => {
    const vms = ctx.params.filter(([k]) => k === 'vm-uuid').map(([, v]) => v);
    const priorities = ctx.params.filter(([k]) => k === 'restart-priority').map(([, v]) => v);
    if (vms.length !== priorities.length) throw failure('Call requires an equal number of vm-uuid and restart-priority arguments');
    const configuration: Record<string, string> = {};
    for (let i = 0; i < vms.length; i++) configuration[await byUuid(ctx, 'VM', vms[i])] = priorities[i];
    const n = await ctx.call('pool.ha_compute_hypothetical_max_host_failures_to_tolerate', configuration);
    ctx.printer.print({ t: 'list', lines: [String(n)] });
  },
});

defineCommand({
  name: 'pool-ha-compute-vm-failover-plan',
  reqd: ['host-uuids'],
  optn: [],
  help: 'Compute a VM failover plan assuming the given set of hosts fail.',
  hidden: true,
  run: async (ctx) => {
    const hosts: string[] = [];
    for (const uuid of reqd(ctx, 'host-uuids').split(',')) hosts.push(await byUuid(ctx, 'host', uuid));
    // the VMs resident on the failed hosts, control domains aside
    const vms: string[] = [];
    for (const h of hosts) {
      for (const vm of (await ctx.call('host.get_resident_VMs', h)) as string[]) {
        if (!(await ctx.call('VM.get_is_control_domain', vm))) vms.push(vm);
      }
    }
    const plan = (await ctx.call('pool.ha_compute_vm_failover_plan', hosts, vms)) as Record<string, Record<string, string>>;
    const named = async (cls: string, ref: string) => `${(await ctx.call(`${cls}.get_uuid`, ref)) as string} (${(await ctx.call(`${cls}.get_name_label`, ref)) as string})`;
    const rows: [string, string][] = [['VM', 'Destination Host or Error']];
    for (const [vm, result] of Object.entries(plan)) {
      const where = result.host !== undefined ? await named('host', result.host) : result.error_code ?? 'UNKNOWN';
      rows.push([await named('VM', vm), where]);
    }
    ctx.printer.print({ t: 'table', records: [rows] });
  },
});

defineCommand({
  name: 'pool-ha-prevent-restarts-for',
  reqd: ['seconds'],
  optn: [],
  help: 'Prevent HA VM restarts for a given number of seconds',
  hidden: true,
  run: async (ctx) => {
    await ctx.call('pool.ha_prevent_restarts_for', int64Of(reqd(ctx, 'seconds')));
  },
});

defineCommand({
  name: 'host-emergency-ha-disable',
  reqd: [],
  optn: ['force', 'soft'],
  help: 'Disable HA on the local host. Only to be used to recover a pool with a broken HA setup.',
  local: true,
  run: async (ctx) => {
    const soft = boolOf(ctx.params, 'soft');
    if (!boolOf(ctx.params, 'force')) throw failure(NO_FORCE);
    await ctx.call('host.emergency_ha_disable', soft);
  },
});
