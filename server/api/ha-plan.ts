// HA failover planning (xapi_ha_vm_failover.ml and binpack.ml): which protected VMs could be
// restarted where if some hosts failed, the largest number of host failures the pool can
// tolerate, and the pool's HA status (ha_plan_exists_for, ha_overcommitted) with its messages.
//
// Memory, as xapi plans it: a VM needs memory_static_max plus its overhead; a host offers what its
// xenopsd has free. Agility (Agility.vm_assert_agile): no vGPU, no VUSB, every disk on an SR that is
// shared and plugged on every enabled host, every VIF on a network with a PIF on every enabled host.
// A protected VM that is not agile is counted on the host it runs on.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { xapiDate } from '../clock.js';
import { XapiError } from '../dispatch/errors.js';
import { hostFreeMemory, memoryRequired } from './xenops-sync.js';

// ---- binpack.ml ----

type Sized = [string, number];

interface Configuration {
  /** live hosts and their free memory */
  hosts: Sized[];
  /** the VMs and the memory they need */
  vms: Map<string, number>;
  /** where each VM is (VM -> host) */
  placement: Map<string, string>;
  totalHosts: number;
  numFailures: number;
}

/** Biggest things first, each into the bin with the most room left (or left out). */
function biggestFitDecreasing(things: Sized[], bins: Sized[]): Map<string, string> {
  const byDesc = (a: Sized, b: Sized) => b[1] - a[1];
  const sortedThings = [...things].sort(byDesc);
  let sortedBins = [...bins].sort(byDesc);
  const mapping = new Map<string, string>();
  for (const [id, size] of sortedThings) {
    if (sortedBins.length === 0) break;
    const [bin, room] = sortedBins[0];
    if (room - size < 0) continue;
    const rest = sortedBins.slice(1);
    // re-insert before the first bin it is not smaller than (binpack.ml's insert)
    const i = rest.findIndex((b) => room - size >= b[1]);
    rest.splice(i < 0 ? rest.length : i, 0, [bin, room - size]);
    sortedBins = rest;
    mapping.set(id, bin);
  }
  return mapping;
}

function account(hosts: Sized[], vms: Map<string, number>, plan: Map<string, string>): Sized[] {
  return hosts.map(([h, mem]) => {
    let used = 0;
    for (const [vm, host] of plan) if (host === h) used += vms.get(vm) ?? 0;
    return [h, mem - used];
  });
}

class Stop extends Error {}

function packFailed(config: Configuration, failed: string[]): Map<string, string> {
  return biggestFitDecreasing(failed.map((vm) => [vm, config.vms.get(vm) ?? 0]), config.hosts);
}

function triviallyNeverPossible(c: Configuration): boolean {
  return c.hosts.length < c.numFailures || (c.hosts.length === c.numFailures && c.vms.size > 0);
}

function simulateFailure(c: Configuration, dead: string): Configuration {
  const failed = [...c.placement].filter(([, h]) => h === dead).map(([vm]) => vm);
  const hosts = c.hosts.filter(([h]) => h !== dead);
  const plan = packFailed({ ...c, hosts }, failed);
  if (plan.size !== failed.length) throw new Stop();
  const placement = new Map(c.placement);
  for (const [vm, h] of plan) placement.set(vm, h);
  return { ...c, hosts: account(hosts, c.vms, plan), placement, numFailures: c.numFailures - 1 };
}

function* choose<T>(l: T[], n: number): Generator<T[]> {
  if (n <= 0) {
    yield [];
    return;
  }
  for (let i = 0; i <= l.length - n; i++) for (const rest of choose(l.slice(i + 1), n - 1)) yield [l[i], ...rest];
}

function permutations<T>(l: T[]): T[][] {
  if (l.length <= 1) return [l];
  return l.flatMap((x, i) => permutations([...l.slice(0, i), ...l.slice(i + 1)]).map((p) => [x, ...p]));
}

function exhaustive(c: Configuration): boolean {
  try {
    if (triviallyNeverPossible(c)) throw new Stop();
    const hosts = c.hosts.map(([h]) => h);
    for (const combination of choose(hosts, c.numFailures)) {
      for (const order of permutations(combination)) order.reduce(simulateFailure, c);
    }
    return true;
  } catch (e) {
    if (e instanceof Stop) return false;
    throw e;
  }
}

/** Every failed VM as big as the biggest, the most VMs failing, the biggest hosts failing. */
function approximate(c: Configuration): boolean {
  if (triviallyNeverPossible(c)) return false;
  if (c.vms.size === 0) return true;
  const maxVm = Math.max(...c.vms.values());
  const capacity = c.hosts.map(([, m]) => Math.floor(m / maxVm)).sort((a, b) => b - a);
  const left = capacity.slice(c.numFailures).reduce((a, b) => a + b, 0);
  const perHost = c.hosts.map(([h]) => [...c.placement.values()].filter((x) => x === h).length).sort((a, b) => b - a);
  const toMove = perHost.slice(0, c.numFailures).reduce((a, b) => a + b, 0);
  return toMove <= left;
}

function binomial(n: number, r: number): number {
  let v = 1;
  for (let i = 1; i <= r; i++) v = (v * (n - r + i)) / i;
  return v;
}
const factorial = (n: number): number => (n <= 1 ? 1 : n * factorial(n - 1));

/** Binpack.choose_heuristic: every combination when there are few, else the conservative one. */
function planAlwaysPossible(c: Configuration): boolean {
  const n = c.totalHosts;
  const r = c.numFailures;
  if (n > 32 || binomial(n, r) * factorial(r) >= 3500) return approximate(c);
  return exhaustive(c);
}

// ---- xapi_ha_vm_failover.ml ----

export const HA_RESTART = 'restart';
export const HA_BEST_EFFORT = 'best-effort';

const isGuest = (r: Rec) => r.is_a_template !== true && r.is_a_snapshot !== true && r.is_control_domain !== true;

/** Helpers.vm_should_always_run */
export const isProtected = (r: Rec) => r.ha_always_run === true && r.ha_restart_priority === HA_RESTART;

export function allProtectedVms(emu: Emulator): [string, Rec][] {
  return [...emu.db.table('VM')].filter(([, row]) => isGuest(row.rec) && isProtected(row.rec)).map(([ref, row]) => [ref, row.rec]);
}

const live = (emu: Emulator, h: string): boolean => emu.db.get('host_metrics', String(emu.db.get('host', h)?.metrics))?.live === true;

/** get_live_set: enabled hosts that are live */
export function liveSet(emu: Emulator): string[] {
  return [...emu.db.table('host')].filter(([h, row]) => row.rec.enabled === true && live(emu, h)).map(([h]) => h);
}

/** Agility.vm_assert_agile as an error code, or null. */
export function agilityError(emu: Emulator, rec: Rec): [string, string[]] | null {
  const { db } = emu;
  const enabled = [...db.table('host')].filter(([, r]) => r.rec.enabled === true).map(([h]) => h);
  if (((rec.VGPUs as string[]) ?? []).length > 0) return ['VM_HAS_VGPU', []];
  if (((rec.VUSBs as string[]) ?? []).length > 0) return ['VM_HAS_VUSBS', []];
  for (const vbd of (rec.VBDs as string[]) ?? []) {
    const b = db.get('VBD', vbd);
    if (!b || b.empty === true || !db.has('VDI', String(b.VDI))) continue;
    const sr = String(db.get('VDI', String(b.VDI))!.SR);
    const s = db.get('SR', sr);
    const plugged = new Set(((s?.PBDs as string[]) ?? []).map((p) => db.get('PBD', p)).filter((p) => p?.currently_attached === true).map((p) => String(p!.host)));
    if (s?.shared !== true || !enabled.every((h) => plugged.has(h))) return ['HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED', [sr]];
  }
  for (const vif of (rec.VIFs as string[]) ?? []) {
    const net = String(db.get('VIF', vif)?.network);
    const withPif = new Set(((db.get('network', net)?.PIFs as string[]) ?? []).map((p) => db.get('PIF', p)).filter((p) => p && !db.has('Bond', String(p.bond_slave_of))).map((p) => String(p!.host)));
    if (!enabled.every((h) => withPif.has(h))) return ['HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED', [net]];
  }
  return null;
}

/** What a planning question may pretend (configuration_change). */
export interface ConfigurationChange {
  hostsToDisable?: string[];
  numFailures?: number;
  newVmsToProtect?: string[];
  /** VMs about to run on a host (old_vms_arriving): host, VM and the record they will run with */
  vmsArriving?: [string, string, Rec][];
}

export interface RestartPlan {
  /** VM -> host, for the protected VMs that are down */
  plan: Map<string, string>;
  config: Configuration;
  notRestarted: string[];
  nonAgile: boolean;
}

/** compute_restart_plan: where the protected VMs that are down would start, and the pool after. */
export function computeRestartPlan(emu: Emulator, protectedVms: [string, Rec][], live: string[], numFailures: number, change: ConfigurationChange = {}): RestartPlan {
  const { db } = emu;
  const n = change.numFailures ?? numFailures;
  let vms = [...protectedVms];
  for (const vm of change.newVmsToProtect ?? []) if (db.has('VM', vm) && !vms.some(([r]) => r === vm)) vms.push([vm, db.get('VM', vm)!]);
  // an arriving VM is accounted to its new host, with the configuration it arrives with
  const arriving = change.vmsArriving ?? [];
  vms = vms.map(([vm, rec]) => {
    const a = arriving.find(([, v]) => v === vm);
    return a ? [vm, { ...a[2], resident_on: a[0] }] : [vm, rec];
  });
  const allHosts = [...db.table('host')].sort((a, b) => String(a[1].rec.uuid).localeCompare(String(b[1].rec.uuid)));
  const liveHosts = allHosts.map(([h]) => h).filter((h) => db.get('host', h)?.enabled === true && !(change.hostsToDisable ?? []).includes(h) && live.includes(h));
  vms.sort((a, b) => String(a[1].uuid).localeCompare(String(b[1].uuid)));
  const accountedTo = (rec: Rec): string | undefined => {
    if (liveHosts.includes(String(rec.resident_on))) return String(rec.resident_on);
    if (liveHosts.includes(String(rec.scheduled_to_be_resident_on))) return String(rec.scheduled_to_be_resident_on);
    return undefined;
  };
  const arrivingMemory = (h: string) => arriving.filter(([host]) => host === h).reduce((sum, [, , rec]) => sum + memoryRequired(rec), 0);
  let hosts: Sized[] = liveHosts.map((h) => [h, hostFreeMemory(emu, h) - arrivingMemory(h)]);
  const sizes = new Map(vms.map(([vm, rec]) => [vm, memoryRequired(rec)]));
  const agile = vms.filter(([, rec]) => agilityError(emu, rec) === null);
  const nonAgile = vms.filter(([, rec]) => agilityError(emu, rec) !== null);
  // a non-agile VM is pinned to the host it runs on; one that is down has nowhere to go
  const agileSizes = new Map(agile.map(([vm]) => [vm, sizes.get(vm)!]));
  const placement = new Map<string, string>();
  const failed: string[] = [];
  for (const [vm, rec] of agile) {
    const h = accountedTo(rec);
    if (h === undefined) failed.push(vm);
    else placement.set(vm, h);
  }
  let config: Configuration = { hosts, vms: agileSizes, placement, totalHosts: allHosts.length, numFailures: Math.max(0, Math.min(n, allHosts.length)) };
  const plan = packFailed(config, failed);
  hosts = account(config.hosts, agileSizes, plan);
  const newPlacement = new Map(placement);
  for (const [vm, h] of plan) newPlacement.set(vm, h);
  config = { ...config, hosts, placement: newPlacement };
  const notRestarted = vms.filter(([vm, rec]) => accountedTo(rec) === undefined && !plan.has(vm)).map(([vm]) => vm);
  return { plan, config, notRestarted, nonAgile: nonAgile.length > 0 };
}

export type PlanStatus = 'all' | 'excluding_non_agile' | 'none';

export function planForNFailures(emu: Emulator, protectedVms: [string, Rec][], n: number, change: ConfigurationChange = {}, live = liveSet(emu)): PlanStatus {
  const r = computeRestartPlan(emu, protectedVms, live, n, change);
  if (r.notRestarted.length > 0) return 'none';
  if (!planAlwaysPossible(r.config)) return 'none';
  return r.nonAgile ? 'excluding_non_agile' : 'all';
}

/** compute_max_host_failures_to_tolerate: the largest n for which every protected VM has a plan. */
export function maxHostFailuresToTolerate(emu: Emulator, protectedVms = allProtectedVms(emu), live = liveSet(emu)): number {
  const hosts = emu.db.count('host');
  // Helpers.bisect over [0, hosts], assuming no plan for n means none for more
  let lo = 0;
  let hi = hosts;
  if (planForNFailures(emu, protectedVms, 0, {}, live) !== 'all') return 0;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (planForNFailures(emu, protectedVms, mid, {}, live) === 'all') lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export function poolMessage(emu: Emulator, name: string, priority: number, body: string): void {
  const pool = emu.db.get('pool', emu.pool)!;
  emu.db.create('message', emu.ids.ref(), { uuid: emu.ids.uuid(), name, priority, cls: 'Pool', obj_uuid: pool.uuid, timestamp: xapiDate(emu.clock.now()), body });
}

/** mark_pool_as_overcommitted: true if something changed */
export function markPoolOvercommitted(emu: Emulator, live = liveSet(emu)): boolean {
  const pool = emu.db.get('pool', emu.pool)!;
  const overcommitted = pool.ha_overcommitted === true;
  const plannedFor = Number(pool.ha_plan_exists_for);
  const toTolerate = Number(pool.ha_host_failures_to_tolerate);
  const max = maxHostFailuresToTolerate(emu, allProtectedVms(emu), live);
  if (plannedFor !== max) {
    emu.db.update('pool', emu.pool, { ha_plan_exists_for: Math.min(toTolerate, max) });
    if (max < plannedFor) poolMessage(emu, 'HA_POOL_DROP_IN_PLAN_EXISTS_FOR', 3, String(max));
  }
  if (!overcommitted) {
    emu.db.update('pool', emu.pool, { ha_overcommitted: true });
    poolMessage(emu, 'HA_POOL_OVERCOMMITTED', 3,
      `The failover tolerance for pool '${pool.name_label}' has dropped and the initially specified number of host failures to tolerate can no longer be guaranteed`);
  }
  return plannedFor !== max || !overcommitted;
}

/** update_pool_status: ha_plan_exists_for and ha_overcommitted from a fresh plan; true if changed. */
export function updatePoolStatus(emu: Emulator, live = liveSet(emu)): boolean {
  const pool = emu.db.get('pool', emu.pool)!;
  const toTolerate = Number(pool.ha_host_failures_to_tolerate);
  const plannedFor = Number(pool.ha_plan_exists_for);
  const overcommitted = pool.ha_overcommitted === true;
  if (planForNFailures(emu, allProtectedVms(emu), toTolerate, {}, live) === 'all') {
    emu.db.update('pool', emu.pool, { ha_overcommitted: false });
    if (plannedFor !== toTolerate) emu.db.update('pool', emu.pool, { ha_plan_exists_for: toTolerate });
    return overcommitted || plannedFor !== toTolerate;
  }
  return markPoolOvercommitted(emu, live);
}

/** assert_configuration_change_preserves_ha_plan: only a plan that exists now can be broken. */
export function assertChangePreservesPlan(emu: Emulator, change: ConfigurationChange): void {
  const pool = emu.db.get('pool', emu.pool)!;
  if (pool.ha_enabled !== true || pool.ha_allow_overcommit === true) return;
  const toTolerate = Number(pool.ha_plan_exists_for);
  const vms = allProtectedVms(emu);
  const live = liveSet(emu);
  if (planForNFailures(emu, vms, toTolerate, {}, live) !== 'all') return;
  if (planForNFailures(emu, vms, toTolerate, change, live) !== 'all') throw haBreaksPlan();
}

/** check_vm_preserves_ha_plan (message_forwarding.ml), when a VM is placed on a host to start,
 * resume or migrate: a VM of restart priority not yet protected is a new VM to protect; any other
 * arrives on the host with its memory. */
export function assertVmPlacementPreservesPlan(emu: Emulator, vm: string, rec: Rec, host: string): void {
  if (rec.ha_restart_priority === HA_RESTART && rec.ha_always_run !== true) assertChangePreservesPlan(emu, { newVmsToProtect: [vm] });
  else assertChangePreservesPlan(emu, { vmsArriving: [[host, vm, rec]] });
}

/** assert_host_disable_preserves_ha_plan: host.disable and host.evacuate. */
export function assertHostDisablePreservesPlan(emu: Emulator, host: string): void {
  assertChangePreservesPlan(emu, { hostsToDisable: [host] });
}

const haBreaksPlan = () => new XapiError('HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN', []);

/** compute_evacuation_plan for the failed VMs onto the remaining hosts (ha_compute_vm_failover_plan). */
export function evacuationPlan(emu: Emulator, remaining: string[], vms: [string, Rec][]): Map<string, string> {
  const hosts: Sized[] = remaining.map((h) => [h, hostFreeMemory(emu, h)]);
  return biggestFitDecreasing(vms.map(([vm, rec]) => [vm, memoryRequired(rec)]), hosts);
}
