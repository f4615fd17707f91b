// What happens inside a guest, on demand: it shuts itself down, reboots, crashes; its agent stops
// or starts; it takes another address; its load changes.
//
// A domain that shut down, rebooted or crashed by itself is handled by xenopsd as the VM's
// actions_after_shutdown / _reboot / _crash say (Xapi_xenops.of_vm's on_action_behaviour):
// destroy and coredump_and_destroy tear the domain down (Halted), restart, rename_restart and
// coredump_and_restart start a new domain, preserve leaves it paused. xapi only learns the
// outcome through xenopsd's updates, so the VM's operations are not marked.
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { XapiError } from '../dispatch/errors.js';
import { xapiDate } from '../clock.js';
import { syncVm, toXapiFromXenops, withEventsSuppressed, xenopsOf } from '../api/xenops-sync.js';
import { DURATIONS } from '../xenopsd/xenopsd.js';
import { agentReport, agentReported, forgetBoots } from './agent.js';
import { formatIpv4, inSubnet, leasesOn, offerIpv4, parseIpv4, subnetOf } from './dhcp.js';
import { hasAgent, hasOs, profileOf, type GuestProfile } from './profile.js';

/** A guest event that the guest's state rules out (answered 409 by the control API). */
export class GuestError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export type GuestExit = 'shutdown' | 'reboot' | 'crash';

/** other_config key of VM_metrics holding the guest's load */
export const GUEST_LOAD_KEY = 'xapi-emu-guest-load';

export interface GuestLoad {
  /** fraction of its vCPUs the guest keeps busy, 0..1 */
  cpu: number;
  /** bytes per second of disk I/O */
  disk: number;
  /** bytes per second on its NICs */
  network: number;
}

/** A VM by ref or uuid. */
/** A VM named by ref, uuid, or the name_label of exactly one VM that is not a template or snapshot. */
export function vmRef(emu: Emulator, vm: string): string {
  if (emu.db.has('VM', vm)) return vm;
  const ref = emu.db.refByUuid('VM', vm);
  if (ref) return ref;
  if (!vm.startsWith('OpaqueRef:')) {
    const named: string[] = [];
    for (const [r, row] of emu.db.table('VM')) {
      const v = row.rec;
      if (v.name_label === vm && v.is_a_template !== true && v.is_a_snapshot !== true) named.push(r);
    }
    if (named.length === 1) return named[0];
    if (named.length > 1) throw new GuestError('AMBIGUOUS_NAME', `${named.length} VMs are named ${vm}: name one by ref or uuid`);
  }
  throw new XapiError(vm.startsWith('OpaqueRef:') ? 'HANDLE_INVALID' : 'UUID_INVALID', ['VM', vm]);
}

function runningRec(emu: Emulator, vm: string): Rec {
  const rec = emu.db.get('VM', vm)!;
  if (rec.is_control_domain === true || rec.is_a_template === true || rec.is_a_snapshot === true) {
    throw new GuestError('NOT_A_GUEST', `${vm} is not a guest VM`);
  }
  if (rec.power_state !== 'Running') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', String(rec.power_state).toLowerCase()]);
  return rec;
}

/** the xenopsd action of an actions_after_* value */
function actionOf(value: string): 'destroy' | 'restart' | 'preserve' {
  if (value === 'restart' || value === 'rename_restart' || value === 'coredump_and_restart') return 'restart';
  if (value === 'preserve') return 'preserve';
  return 'destroy';
}

/** The guest shuts itself down, reboots or crashes; resolves once xenopsd has acted and the
 * database says so. Returns the action taken. */
export async function guestExit(emu: Emulator, vm: string, how: GuestExit): Promise<{ action: string }> {
  const rec = runningRec(emu, vm);
  const profile = profileOf(emu, rec);
  if (how !== 'crash' && !hasOs(profile)) throw new GuestError('NO_OS', 'no operating system runs in this VM');
  const value = String(how === 'shutdown' ? rec.actions_after_shutdown : how === 'reboot' ? rec.actions_after_reboot : rec.actions_after_crash);
  const host = String(rec.resident_on);
  const uuid = String(rec.uuid);
  const x = xenopsOf(emu, host);
  // the guest takes its time to stop its services; a crash is immediate
  if (how !== 'crash') await emu.clock.sleep(DURATIONS.VM_shutdown_domain_guest);
  const action = actionOf(value);
  try {
    await withEventsSuppressed(emu, host, uuid, async () => {
      if (!x.list().includes(uuid)) throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', 'halted']);
      if (action === 'destroy') await x.shutdown(uuid, { clean: false });
      else if (action === 'restart') await x.reboot(uuid, { clean: false });
      else await x.pause(uuid);
    });
  } catch (e) {
    throw toXapiFromXenops(e, vm);
  }
  emu.db.flush();
  return { action: value };
}

function reportingAgent(emu: Emulator, rec: Rec, vm: string): Rec {
  if (!hasAgent(profileOf(emu, rec))) throw new GuestError('NO_GUEST_AGENT', 'the guest of this VM runs no guest agent');
  const gm = emu.db.get('VM_guest_metrics', String(rec.guest_metrics));
  if (!gm || !agentReported(emu, rec, gm)) throw new GuestError('GUEST_BOOTING', `the guest agent of ${vm} has not started yet`);
  return gm;
}

/** The guest agent stops (its metrics stay, live=false) or starts again (it reports at once). */
export function setAgentRunning(emu: Emulator, vm: string, run: boolean): void {
  const rec = runningRec(emu, vm);
  const profile: GuestProfile = profileOf(emu, rec);
  if (!hasAgent(profile)) throw new GuestError('NO_GUEST_AGENT', 'the guest of this VM runs no guest agent');
  const gm = emu.db.get('VM_guest_metrics', String(rec.guest_metrics));
  if (!run) {
    if (!gm || !agentReported(emu, rec, gm)) throw new GuestError('GUEST_BOOTING', `the guest agent of ${vm} has not started yet`);
    if (gm.live !== false) emu.db.update('VM_guest_metrics', String(rec.guest_metrics), { live: false });
  } else {
    if (!gm) throw new GuestError('GUEST_BOOTING', `the PV drivers of ${vm} are not up yet`);
    agentReport(emu, vm);
  }
  emu.db.flush();
}

/** The guest's address on a VIF changes: to `address`, or to the next one DHCP has free. */
export function changeAddress(emu: Emulator, vm: string, device: string, address?: string): string {
  const rec = runningRec(emu, vm);
  const gm = reportingAgent(emu, rec, vm);
  if (gm.live === false) throw new GuestError('GUEST_AGENT_STOPPED', `the guest agent of ${vm} is stopped`);
  const vif = ((rec.VIFs as string[]) ?? []).find((v) => String(emu.db.get('VIF', v)?.device) === device || v === device || emu.db.get('VIF', v)?.uuid === device);
  const vifRec = vif && emu.db.get('VIF', vif);
  if (!vif || !vifRec || vifRec.currently_attached !== true) throw new GuestError('NO_SUCH_NIC', `${vm} has no attached VIF ${device}`);
  const dev = String(vifRec.device);
  const networks = { ...(gm.networks as Record<string, string>) };
  let ip: string | null;
  if (address !== undefined) {
    const n = parseIpv4(address);
    if (n === null) throw new GuestError('INVALID_ADDRESS', `not an IPv4 address: ${address}`);
    // a lease is of the VIF's network (another would be given up at the next report)
    const net = emu.db.get('network', String(vifRec.network));
    if (!net || !inSubnet(subnetOf(net), n)) throw new GuestError('INVALID_ADDRESS', `${address} is not in the subnet of the VIF's network`);
    if (leasesOn(emu, String(vifRec.network), vif).has(n)) throw new GuestError('ADDRESS_IN_USE', `${address} is held by another VIF on this network`);
    ip = formatIpv4(n);
  } else {
    const cur = parseIpv4(networks[`${dev}/ip`] ?? '');
    ip = offerIpv4(emu, vif, cur === null ? undefined : cur + 1);
    if (ip === null || ip === networks[`${dev}/ip`]) throw new GuestError('SUBNET_FULL', 'the network has no other free address');
  }
  networks[`${dev}/ip`] = ip;
  networks[`${dev}/ipv4/0`] = ip;
  emu.db.update('VM_guest_metrics', String(rec.guest_metrics), { networks, last_updated: xapiDate(emu.clock.now()) });
  emu.db.flush();
  return ip;
}

/** The load the guest puts on its vCPUs, disks and NICs (kept in VM_metrics.other_config for the
 * metrics that will read it). */
export function loadOf(emu: Emulator, vm: string): GuestLoad {
  const rec = emu.db.get('VM', vm)!;
  const m = emu.db.get('VM_metrics', String(rec.metrics));
  try {
    const v = JSON.parse(((m?.other_config ?? {}) as Record<string, string>)[GUEST_LOAD_KEY] ?? '{}') as Partial<GuestLoad>;
    return { cpu: Number(v.cpu) || 0, disk: Number(v.disk) || 0, network: Number(v.network) || 0 };
  } catch {
    return { cpu: 0, disk: 0, network: 0 };
  }
}

export function setLoad(emu: Emulator, vm: string, load: Partial<GuestLoad>): GuestLoad {
  const rec = emu.db.get('VM', vm)!;
  const metrics = String(rec.metrics);
  const m = emu.db.get('VM_metrics', metrics);
  if (!m) throw new GuestError('NO_METRICS', `${vm} has no VM_metrics`);
  const next = { ...loadOf(emu, vm), ...Object.fromEntries(Object.entries(load).filter(([, v]) => v !== undefined)) } as GuestLoad;
  emu.db.update('VM_metrics', metrics, { other_config: { ...(m.other_config as Record<string, string>), [GUEST_LOAD_KEY]: JSON.stringify(next) } });
  emu.db.flush();
  return next;
}

/** Re-arms the guests after the database or the domains were replaced (a state restore): every VM
 * with a domain is synced again, which arms the boots still under way. */
export function resyncGuests(emu: Emulator): void {
  forgetBoots(emu);
  for (const [, row] of [...emu.db.table('VM')]) {
    const r = row.rec;
    if (r.is_control_domain === true || (r.power_state !== 'Running' && r.power_state !== 'Paused')) continue;
    const host = String(r.resident_on);
    if (!emu.hosts.includes(host)) continue;
    syncVm(emu, host, String(r.uuid));
  }
  emu.db.flush();
}
