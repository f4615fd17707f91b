// VIF: create, destroy, plug and unplug (xapi_vif.ml, xapi_vif_helpers.ml), hotplug through
// xenopsd, and the VIF's allowed_operations (Xapi_vif_helpers.valid_operations); move to another
// network (live: the backend changes bridge in xenopsd), the switch port's locking mode and its
// allowed addresses, the static IP settings for the guest's tools, and 802.1Q trunks. A change to
// a VIF whose device is active (attached, VM not suspended) is pushed to xenopsd, whose update
// makes the guest report what it now sees (server/guest/).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { genericHandler } from './generic.js';
import { messages } from '../../schema/index.js';
import { currentOperations, ocamlSetOrder, registerOperations, updateAllowedOperations, withOperation } from './operations.js';
import { domainTypeOf, toXapiFromXenops, vifSpec, vmSpec, withEventsSuppressed, xenopsOf } from './xenops-sync.js';
import type { Xenopsd } from '../xenopsd/index.js';
import { NULL_REF } from '../../storage/database.js';
import { effectiveLockingMode } from '../guest/link.js';
import { dropStaticAddress } from '../guest/agent.js';
import { isIPv4, isIPv6 } from 'node:net';
import { attachNetworkForVif, assertCanSeeNetwork, isSriovNetwork } from './network.js';
import { assertDeviceListSettled } from './vm-settings.js';

const ALL_OPS = ['attach', 'plug', 'unplug'];

function vifErrors(emu: Emulator, ref: string, rec: Rec): Map<string, XapiError> {
  const t = new Map<string, XapiError>();
  const set = (e: XapiError, ops: string[]) => {
    for (const o of ops) if (!t.has(o)) t.set(o, e);
  };
  const { db } = emu;
  const cur = currentOperations(rec);
  if (cur.length) {
    // refs and ops are folded onto lists: printed in reverse order, "; "-separated, always in braces
    const refs = cur.map(([r]) => r).reverse();
    const ops = cur.map(([, o]) => o).reverse();
    set(new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VIF', ref, `{${ops.join('; ')}}`, `{${refs.join('; ')}}`]), ALL_OPS);
  }
  const vm = String(rec.VM);
  const vmRec = db.get('VM', vm) ?? {};
  if (vmRec.is_control_domain === true) set(new XapiError('OPERATION_NOT_ALLOWED', ['Control domain does not support hotplug']), ['plug']);
  if (isSriovNetwork(emu, String(rec.network))) set(new XapiError('OPERATION_NOT_ALLOWED', ['Network SR-IOV VIF plug/unplug not allowed']), ['plug', 'unplug']);
  const ps = String(vmRec.power_state ?? 'Halted');
  const plugged = rec.currently_attached === true;
  if (ps === 'Running' && plugged) set(new XapiError('DEVICE_ALREADY_ATTACHED', [ref]), ['plug']);
  else if (ps === 'Running') set(new XapiError('DEVICE_ALREADY_DETACHED', [ref]), ['unplug']);
  else set(new XapiError('VM_BAD_POWER_STATE', [vm, 'running', ps.toLowerCase()]), ['plug', 'unplug']);
  for (const [, op] of currentOperations(vmRec)) {
    if (['clean_shutdown', 'hard_shutdown', 'suspend', 'pause'].includes(op)) {
      set(new XapiError('OPERATION_NOT_ALLOWED', [`Current operation on VM:${vm} is ${op}`]), ['plug', 'unplug']);
    }
  }
  if (ps === 'Running' && domainTypeOf(vmRec) === 'hvm') {
    const gm = db.get('VM_guest_metrics', String(vmRec.guest_metrics));
    if (gm?.can_use_hotplug_vif === 'no') set(new XapiError('OPERATION_NOT_ALLOWED', ['VM states it does not support VIF hotplug.']), ['plug', 'unplug']);
    else if (gm?.PV_drivers_detected !== true && gm?.can_use_hotplug_vif !== 'yes') set(new XapiError('VM_MISSING_PV_DRIVERS', [vm]), ['plug', 'unplug']);
  }
  return t;
}

registerOperations('VIF', {
  allOps: ALL_OPS,
  check: (emu, ref, rec, op) => vifErrors(emu, ref, rec).get(op) ?? null,
  order: ocamlSetOrder,
});

function vifRec(call: Call, vif: string): Rec {
  return recordOf(call.emu, 'VIF', vif);
}

async function hotplug(call: Call, vif: string, plug: boolean): Promise<void> {
  const { emu } = call;
  const rec = vifRec(call, vif);
  const vm = String(rec.VM);
  const vmRec = recordOf(emu, 'VM', vm);
  const host = String(vmRec.resident_on);
  const uuid = String(vmRec.uuid);
  const x = xenopsOf(emu, host);
  x.add(vmSpec(emu, vm));
  try {
    await withEventsSuppressed(emu, host, uuid, () => (plug ? x.vifPlug(uuid, String(rec.device)) : x.vifUnplug(uuid, String(rec.device))));
  } catch (e) {
    throw toXapiFromXenops(e, vm);
  }
}

// ---- addresses (Helpers.assert_is_valid_ip / _cidr / _ip_addr) and the licence ----

const isIp = (family: 4 | 6, s: string): boolean => (family === 4 ? isIPv4(s) : isIPv6(s));

/** Helpers.parse_cidr: the address part of "<addr>/<prefix length>", or null. */
function cidrAddress(family: 4 | 6, s: string): string | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m || !isIp(family, m[1]) || Number(m[2]) > (family === 4 ? 32 : 128)) return null;
  return family === 4 ? m[1] : m[1].toLowerCase();
}

function assertValidIp(family: 4 | 6, field: string, s: string): void {
  if (!isIp(family, s)) throw new XapiError('INVALID_IP_ADDRESS_SPECIFIED', [field]);
}

function assertValidCidr(family: 4 | 6, field: string, s: string): void {
  if (cidrAddress(family, s) === null) throw new XapiError('INVALID_CIDR_ADDRESS_SPECIFIED', [field]);
}

/** Helpers.assert_is_valid_ip_addr: an address or a CIDR */
function assertValidIpOrCidr(family: 4 | 6, field: string, s: string): void {
  if (!isIp(family, s) && cidrAddress(family, s) === null) throw new XapiError('INVALID_IP_ADDRESS_SPECIFIED', [field]);
}

/** Pool_features.assert_enabled: the pool's restrictions (from its hosts' licences) allow it. */
function assertLicensed(emu: Emulator, restriction: string, feature: string): void {
  const r = (emu.db.get('pool', emu.pool)?.restrictions ?? {}) as Record<string, string>;
  if (r[restriction] === 'true') throw new XapiError('LICENCE_RESTRICTION', [feature]);
}

/** Xapi_vif.device_active: the device exists in a domain (attached, and the VM not suspended). */
function deviceActive(emu: Emulator, rec: Rec): boolean {
  return rec.currently_attached === true && emu.db.get('VM', String(rec.VM))?.power_state !== 'Suspended';
}

/** Runs a change on the VIF's device in the xenopsd of the VM's host (Xapi_xenops.vif_set_*):
 * with the VM's metadata pushed first, and the VM synced from xenopsd's update after. */
async function onDevice(call: Call, vif: string, fn: (x: Xenopsd, id: string, dev: string) => Promise<void>): Promise<void> {
  const { emu } = call;
  const rec = vifRec(call, vif);
  const vm = String(rec.VM);
  const vmRec = recordOf(emu, 'VM', vm);
  const host = String(vmRec.resident_on);
  if (host === NULL_REF) throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', String(vmRec.power_state).toLowerCase()]);
  const uuid = String(vmRec.uuid);
  const x = xenopsOf(emu, host);
  x.add(vmSpec(emu, vm));
  try {
    await withEventsSuppressed(emu, host, uuid, () => fn(x, uuid, String(rec.device)));
  } catch (e) {
    throw toXapiFromXenops(e, vm);
  }
}

/** Xapi_vif.move_internal's device part, for VIFs whose record already names their new network
 * (a bond made or undone moves the host's VIFs): each active backend joins its network's bridge.
 * A VM that stopped meanwhile takes the record's bridge at its next start. */
export async function moveVifBackends(call: Call, vifs: string[]): Promise<void> {
  const { emu } = call;
  for (const v of vifs) {
    const rec = emu.db.get('VIF', v);
    if (!rec || !deviceActive(emu, rec)) continue;
    const bridge = String(emu.db.get('network', String(rec.network))?.bridge ?? '');
    try {
      await onDevice(call, v, (x, id, dev) => x.vifMove(id, dev, bridge));
    } catch (e) {
      if (!(e instanceof XapiError)) throw e;
    }
  }
}

/** Xapi_vif.refresh_filtering_rules: the port's rules follow the record while the device is active. */
async function refreshFilteringRules(call: Call, vif: string): Promise<void> {
  const rec = vifRec(call, vif);
  if (!deviceActive(call.emu, rec)) return;
  const { lockingMode } = vifSpec(call.emu, rec);
  await onDevice(call, vif, (x, id, dev) => x.vifSetLockingMode(id, dev, lockingMode!));
}

async function refreshIpConfiguration(call: Call, vif: string, family: 4 | 6): Promise<void> {
  const rec = vifRec(call, vif);
  if (!deviceActive(call.emu, rec)) return;
  const spec = vifSpec(call.emu, rec);
  await onDevice(call, vif, (x, id, dev) => x.vifSetIpConfiguration(id, dev, family, (family === 4 ? spec.ipv4Configuration : spec.ipv6Configuration)!));
}

async function refreshTrunks(call: Call, vif: string): Promise<void> {
  const rec = vifRec(call, vif);
  if (!deviceActive(call.emu, rec)) return;
  const { trunks } = vifSpec(call.emu, rec);
  await onDevice(call, vif, (x, id, dev) => x.vifSetTrunks(id, dev, trunks!));
}

/** Xapi_vlan.assert_valid_VLAN_tag */
function assertValidVlanTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > 4094) throw new XapiError('VLAN_TAG_INVALID', [String(tag)]);
}

/** Xapi_pif_helpers.assert_network_compatible_with_trunks_on_pif: trunks go over an untagged port. */
function assertNetworkCompatibleWithTrunks(emu: Emulator, network: string): void {
  const pifs = (emu.db.get('network', network)?.PIFs as string[] | undefined) ?? [];
  if (pifs.some((p) => Number(emu.db.get('PIF', p)?.VLAN ?? -1) !== -1)) throw new XapiError('NETWORK_INCOMPATIBLE_WITH_TRUNKS', [network]);
}

/** Listext.setify: each value once, at its last place. */
function setify<T>(xs: T[]): T[] {
  const last = new Map<T, number>();
  xs.forEach((x, i) => last.set(x, i));
  return xs.filter((x, i) => last.get(x) === i);
}

/** Xapi_vif.assert_has_feature_static_ip_setting: the guest's tools say they apply static IP settings. */
function assertHasStaticIpSetting(emu: Emulator, vm: string): void {
  const gm = emu.db.get('VM_guest_metrics', String(emu.db.get('VM', vm)?.guest_metrics));
  if (((gm?.other ?? {}) as Record<string, string>)['feature-static-ip-setting'] !== '1') throw new XapiError('VM_LACKS_FEATURE', [vm]);
}

/** Xapi_vif.configure_ipv4 / configure_ipv6 */
async function configureIp(call: Call, family: 4 | 6, self: string, mode: string, address: string, gateway: string): Promise<void> {
  const { emu } = call;
  const rec = vifRec(call, self);
  address = String(address ?? '');
  gateway = String(gateway ?? '');
  if (mode === 'Static') {
    assertLicensed(emu, 'restrict_guest_ip_setting', 'Guest_ip_setting');
    assertValidCidr(family, 'address', address);
    // Xapi_vif.assert_no_locking_mode_conflict: a locked port passes only its allowed addresses
    if (effectiveLockingMode(emu, rec) === 'locked') {
      const allowed = (family === 4 ? rec.ipv4_allowed : rec.ipv6_allowed) as string[];
      const addr = cidrAddress(family, address);
      if (addr !== null && !allowed.includes(addr)) throw new XapiError('ADDRESS_VIOLATES_LOCKING_CONSTRAINT', [address]);
    }
    if (gateway !== '') assertValidIp(family, 'gateway', gateway);
  }
  assertHasStaticIpSetting(emu, String(rec.VM));
  const p = family === 4 ? 'ipv4' : 'ipv6';
  if (family === 4 && rec.ipv4_configuration_mode === 'Static' && mode !== 'Static' && deviceActive(emu, rec)) dropStaticAddress(emu, self);
  emu.db.update('VIF', self, { [`${p}_configuration_mode`]: mode, [`${p}_addresses`]: [address], [`${p}_gateway`]: gateway });
  await refreshIpConfiguration(call, self, family);
}

/** Xapi_vif.set_ipv4_allowed and its kin: the port's allowed addresses (a licensed feature when
 * addresses are added). */
async function setAllowed(call: Call, family: 4 | 6, self: string, value: string[]): Promise<void> {
  const set = setify((value ?? []).map(String));
  vifRec(call, self);
  if (set.length) assertLicensed(call.emu, 'restrict_vif_locking', 'VIF_locking');
  for (const a of set) assertValidIpOrCidr(family, `ipv${family}_allowed`, a);
  call.emu.db.update('VIF', self, { [`ipv${family}_allowed`]: set });
  await refreshFilteringRules(call, self);
}

async function addAllowed(call: Call, family: 4 | 6, self: string, value: string): Promise<void> {
  const field = `ipv${family}_allowed`;
  const current = vifRec(call, self)[field] as string[];
  assertLicensed(call.emu, 'restrict_vif_locking', 'VIF_locking');
  assertValidIpOrCidr(family, field, String(value));
  if (!current.includes(String(value))) call.emu.db.update('VIF', self, { [field]: [...current, String(value)] });
  await refreshFilteringRules(call, self);
}

async function removeAllowed(call: Call, family: 4 | 6, self: string, value: string): Promise<void> {
  const field = `ipv${family}_allowed`;
  const current = vifRec(call, self)[field] as string[];
  if (current.includes(String(value))) call.emu.db.update('VIF', self, { [field]: current.filter((a) => a !== String(value)) });
  await refreshFilteringRules(call, self);
}

/** A locally administered unicast MAC (xapi's Record_util.random_mac_local). */
export function randomMac(emu: Emulator): string {
  const hex = emu.ids.uuid().replace(/-/g, '');
  const b = [0, 1, 2, 3, 4, 5].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16));
  b[0] = (b[0] & 0xfc) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

const genericCreate = genericHandler(messages.get('VIF.create')!)!;

registerProvider('VIF', {
  /** Xapi_vif.create: a device number may be used once per VM; an empty MAC gets a random one. */
  create(call, args: Rec) {
    const { db } = call.emu;
    const vm = db.get('VM', String(args.VM));
    if (!vm) throw new XapiError('HANDLE_INVALID', ['VM', String(args.VM)]);
    assertDeviceListSettled(call, String(args.VM), vm);
    if (!db.has('network', String(args.network))) throw new XapiError('HANDLE_INVALID', ['network', String(args.network)]);
    const allowed = [...((args.ipv4_allowed as unknown[] | undefined) ?? []), ...((args.ipv6_allowed as unknown[] | undefined) ?? [])];
    if (args.locking_mode === 'locked' || allowed.length) assertLicensed(call.emu, 'restrict_vif_locking', 'VIF_locking');
    const device = String(args.device ?? '');
    if (!/^\d+$/.test(device)) throw new XapiError('INVALID_DEVICE', [device]);
    if (((args.trunks as unknown[] | undefined) ?? []).length) assertNetworkCompatibleWithTrunks(call.emu, String(args.network));
    if ((vm.VIFs as string[]).some((v) => db.get('VIF', v)?.device === device)) throw new XapiError('DEVICE_ALREADY_EXISTS', [device]);
    const MAC = String(args.MAC ?? '') === '' ? randomMac(call.emu) : String(args.MAC);
    const ref = genericCreate(call, { ...args, MAC, MAC_autogenerated: String(args.MAC ?? '') === '', currently_attached: false }) as string;
    updateAllowedOperations(call.emu, 'VIF', ref);
    return ref;
  },

  /** Xapi_vif_helpers.destroy: refused while attached to a running VM; with its metrics. Also
   * refused while one of its own operations or a VM operation reading the device list runs. */
  destroy(call, self: string) {
    const { db } = call.emu;
    const rec = vifRec(call, self);
    const vm = db.get('VM', String(rec.VM));
    if (rec.currently_attached === true && vm?.power_state === 'Running') {
      throw new XapiError('OPERATION_NOT_ALLOWED', ['VIF currently attached to a running VM']);
    }
    const [busy] = currentOperations(rec);
    if (busy) throw new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VIF', self, `{${busy[1]}}`, `{${busy[0]}}`]);
    if (vm) assertDeviceListSettled(call, String(rec.VM), vm);
    if (db.has('VIF_metrics', String(rec.metrics))) db.destroy('VIF_metrics', String(rec.metrics));
    db.destroy('VIF', self);
  },

  plug: (call, self: string) => withOperation(call, 'VIF', self, 'plug', () => hotplug(call, self, true)),
  unplug: (call, self: string) => withOperation(call, 'VIF', self, 'unplug', () => hotplug(call, self, false)),
  unplug_force: (call, self: string) => withOperation(call, 'VIF', self, 'unplug', () => hotplug(call, self, false)),

  /** Xapi_vif.move: the record changes network; an active device's backend moves bridge in
   * xenopsd (the network attached on the VM's host first), the guest sees only a carrier flap. */
  async move(call, self: string, network: string) {
    const { emu } = call;
    const rec = vifRec(call, self);
    recordOf(emu, 'network', network);
    const active = deviceActive(emu, rec);
    const vm = String(rec.VM);
    const host = String(emu.db.get('VM', vm)?.resident_on ?? NULL_REF);
    if (active) {
      try {
        assertCanSeeNetwork(emu, vm, host, network);
      } catch (e) {
        if (e instanceof XapiError && e.code === 'VM_REQUIRES_NETWORK') throw new XapiError('HOST_CANNOT_ATTACH_NETWORK', [host, network]);
        throw e;
      }
    }
    if ((rec.trunks as unknown[]).length) assertNetworkCompatibleWithTrunks(emu, network);
    emu.db.update('VIF', self, { network });
    updateAllowedOperations(emu, 'VIF', self);
    if (!active) return;
    attachNetworkForVif(emu, self, host);
    const bridge = String(emu.db.get('network', network)?.bridge ?? '');
    await onDevice(call, self, (x, id, dev) => x.vifMove(id, dev, bridge));
    if (emu.db.get('VIF', self)?.currently_attached !== true) throw new XapiError('INTERNAL_ERROR', [`vif_move: Unable to plug moved VIF ${self}`]);
  },

  /** Xapi_vif.set_locking_mode: locked is a licensed feature, refused under a vswitch controller. */
  async set_locking_mode(call, self: string, value: string) {
    const { emu } = call;
    const rec = vifRec(call, self);
    const effective = effectiveLockingMode(emu, { ...rec, locking_mode: value });
    if (effective === 'locked') {
      // Helpers.assert_vswitch_controller_not_active (the host's backend is openvswitch)
      const sdn = [...emu.db.table('SDN_controller')].length > 0;
      // checked where the call is forwarded: the VM's host, or this one
      const resident = String(emu.db.get('VM', String(rec.VM))?.resident_on ?? NULL_REF);
      const host = resident === NULL_REF ? call.host : resident;
      const backend = ((emu.db.get('host', host)?.software_version ?? {}) as Record<string, string>).network_backend;
      if (sdn && backend === 'openvswitch') throw new XapiError('OPERATION_NOT_ALLOWED', ['A vswitch controller is active']);
      assertLicensed(emu, 'restrict_vif_locking', 'VIF_locking');
    }
    emu.db.update('VIF', self, { locking_mode: value });
    await refreshFilteringRules(call, self);
  },

  set_ipv4_allowed: (call, self: string, value: string[]) => setAllowed(call, 4, self, value),
  add_ipv4_allowed: (call, self: string, value: string) => addAllowed(call, 4, self, value),
  remove_ipv4_allowed: (call, self: string, value: string) => removeAllowed(call, 4, self, value),
  set_ipv6_allowed: (call, self: string, value: string[]) => setAllowed(call, 6, self, value),
  add_ipv6_allowed: (call, self: string, value: string) => addAllowed(call, 6, self, value),
  remove_ipv6_allowed: (call, self: string, value: string) => removeAllowed(call, 6, self, value),

  configure_ipv4: (call, self: string, mode: string, address = '', gateway = '') => configureIp(call, 4, self, mode, address, gateway),
  configure_ipv6: (call, self: string, mode: string, address = '', gateway = '') => configureIp(call, 6, self, mode, address, gateway),

  /** Xapi_vif.add_trunks: consed onto the list when new */
  async add_trunks(call, self: string, value: number) {
    const rec = vifRec(call, self);
    const tag = Number(value);
    assertValidVlanTag(tag);
    assertNetworkCompatibleWithTrunks(call.emu, String(rec.network));
    const current = (rec.trunks as unknown[]).map(Number);
    if (current.includes(tag)) return;
    call.emu.db.update('VIF', self, { trunks: [tag, ...current] });
    await refreshTrunks(call, self);
  },

  async remove_trunks(call, self: string, value: number) {
    const tag = Number(value);
    const current = (vifRec(call, self).trunks as unknown[]).map(Number);
    if (!current.includes(tag)) return;
    call.emu.db.update('VIF', self, { trunks: current.filter((t) => t !== tag) });
    await refreshTrunks(call, self);
  },

  async set_trunks(call, self: string, value: number[]) {
    const rec = vifRec(call, self);
    const tags = (value ?? []).map(Number);
    if (tags.length) assertNetworkCompatibleWithTrunks(call.emu, String(rec.network));
    const set = setify(tags);
    for (const t of set) assertValidVlanTag(t);
    call.emu.db.update('VIF', self, { trunks: set });
    await refreshTrunks(call, self);
  },
});
