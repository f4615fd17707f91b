// VBD: create, destroy, plug and unplug (xapi_vbd.ml, xapi_vbd_helpers.ml), hotplug through
// xenopsd, and the VBD's allowed_operations (Xapi_vbd_helpers.valid_operations).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { genericHandler } from './generic.js';
import { messages } from '../../schema/index.js';
import { currentOperations, ocamlSetOrder, registerOperations, updateAllowedOperations, withOperation } from './operations.js';
import { domainTypeOf, linuxDevice, toXapiFromXenops, vmSpec, withEventsSuppressed, xenopsOf } from './xenops-sync.js';
import { assertDeviceListSettled, diskNumber, usedVbdDevices } from './vm-settings.js';

const ALL_OPS = ['attach', 'eject', 'insert', 'plug', 'unplug', 'unplug_force', 'pause', 'unpause'];
const SAFE_TO_PARALLELISE = ['pause', 'unpause'];

/** The error of each operation that is not allowed (the table of valid_operations, without the
 * expensive sharing checks). */
function vbdErrors(emu: Emulator, ref: string, rec: Rec): Map<string, XapiError> {
  const t = new Map<string, XapiError>();
  const set = (e: XapiError, ops: string[]) => {
    for (const o of ops) if (!t.has(o)) t.set(o, e);
  };
  const { db } = emu;
  const cur = currentOperations(rec);
  const busy = (c: [string, string]) => new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VBD', ref, c[1], c[0]]);
  if (cur.length) set(busy(cur[0]), ALL_OPS.filter((o) => !SAFE_TO_PARALLELISE.includes(o)));
  const nonPar = cur.find(([, o]) => !SAFE_TO_PARALLELISE.includes(o));
  if (nonPar) set(busy(nonPar), ['pause']);
  const other = cur.find(([, o]) => !['attach', ...SAFE_TO_PARALLELISE].includes(o));
  if (other) set(busy(other), ['unpause']);
  if (rec.unpluggable !== true) set(new XapiError('VBD_NOT_UNPLUGGABLE', [ref]), ['unplug', 'unplug_force']);
  if (rec.type !== 'CD') set(new XapiError('VBD_NOT_REMOVABLE_MEDIA', [ref]), ['insert', 'eject']);
  const empty = rec.empty === true;
  if (empty) set(new XapiError('VBD_IS_EMPTY', [ref]), ['eject']);
  else set(new XapiError('VBD_NOT_EMPTY', [ref]), ['insert']);
  const vm = String(rec.VM);
  const vmRec = db.get('VM', vm) ?? {};
  const ps = String(vmRec.power_state ?? 'Halted');
  const plugged = rec.currently_attached === true;
  if (ps === 'Running' && plugged) set(new XapiError('DEVICE_ALREADY_ATTACHED', [ref]), ['plug']);
  else if (ps === 'Running') set(new XapiError('DEVICE_ALREADY_DETACHED', [ref]), ['unplug', 'unplug_force']);
  else {
    const bad = ps === 'Paused' ? ['plug', 'unplug', 'unplug_force'] : ['pause', 'unpause', 'plug', 'unplug', 'unplug_force'];
    set(new XapiError('VM_BAD_POWER_STATE', [vm, 'running', ps.toLowerCase()]), bad);
  }
  for (const [, op] of currentOperations(vmRec)) {
    if (['clean_shutdown', 'hard_shutdown', 'suspend', 'pause'].includes(op)) {
      set(new XapiError('OPERATION_NOT_ALLOWED', [`Current operation on VM:${vm} is ${op}`]), ['plug', 'unplug']);
    }
  }
  if (ps === 'Running' && domainTypeOf(vmRec) === 'hvm') {
    const plugOps = ['plug', 'unplug', 'unplug_force'];
    const gm = db.get('VM_guest_metrics', String(vmRec.guest_metrics));
    // the drivers' explicit claim wins; when unspecified, PV drivers are enough
    const hotplug = gm?.can_use_hotplug_vbd;
    if (hotplug === 'no') set(new XapiError('OPERATION_NOT_ALLOWED', ['VM states it does not support VBD hotplug.']), plugOps);
    else if (hotplug !== 'yes' && gm?.PV_drivers_detected !== true) set(new XapiError('VM_MISSING_PV_DRIVERS', [vm]), plugOps);
    if (rec.type === 'CD') set(new XapiError('OPERATION_NOT_ALLOWED', ['HVM CDROMs cannot be hotplugged/unplugged, only inserted or ejected']), plugOps);
  }
  if (rec.type === 'CD' && ps === 'Suspended') set(new XapiError('VM_BAD_POWER_STATE', [vm, 'halted, running', 'suspended']), ['insert', 'eject']);
  if (!empty) {
    const vdi = String(rec.VDI);
    const v = db.get('VDI', vdi);
    if (v) {
      if (v.managed !== true) set(new XapiError('VDI_NOT_MANAGED', [ref]), ALL_OPS);
      const vop = currentOperations(v).find(([, o]) => o !== 'mirror' && o !== 'copy');
      if (vop) set(new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VDI', vdi, vop[1], vop[0]]), ['attach', 'plug', 'insert']);
    }
  }
  return t;
}

registerOperations('VBD', {
  allOps: ALL_OPS,
  check: (emu, ref, rec, op) => vbdErrors(emu, ref, rec).get(op) ?? null,
  order: ocamlSetOrder,
});

function vbdRec(call: Call, vbd: string): Rec {
  return recordOf(call.emu, 'VBD', vbd);
}

/** Xapi_vbd.plug / unplug: hotplug through the xenopsd of the VM's host. */
async function hotplug(call: Call, vbd: string, plug: boolean, force: boolean): Promise<void> {
  const { emu } = call;
  const rec = vbdRec(call, vbd);
  const vm = String(rec.VM);
  const vmRec = recordOf(emu, 'VM', vm);
  const host = String(vmRec.resident_on);
  const uuid = String(vmRec.uuid);
  const x = xenopsOf(emu, host);
  x.add(vmSpec(emu, vm));
  const dev = linuxDevice(vmRec, rec);
  try {
    await withEventsSuppressed(emu, host, uuid, () => (plug ? x.vbdPlug(uuid, dev) : x.vbdUnplug(uuid, dev, force)));
  } catch (e) {
    throw toXapiFromXenops(e, vm);
  }
}

const genericCreate = genericHandler(messages.get('VBD.create')!)!;

registerProvider('VBD', {
  /** Xapi_vbd.create: userdevice "autodetect" takes the first free number; a taken one (under any
   * of its names: 0, hda, xvda, sda) is DEVICE_ALREADY_EXISTS. The check, the choice and the
   * record are made in one synchronous step, so racing creates cannot share a number. */
  create(call, args: Rec) {
    const { db } = call.emu;
    const vm = db.get('VM', String(args.VM));
    if (!vm) throw new XapiError('HANDLE_INVALID', ['VM', String(args.VM)]);
    assertDeviceListSettled(call, String(args.VM), vm);
    const used = usedVbdDevices(call.emu, vm);
    let userdevice = String(args.userdevice ?? '');
    if (userdevice === 'autodetect') {
      let n = 0;
      while (used.has(n)) n++;
      userdevice = String(n);
    } else if (diskNumber(userdevice) === null) {
      throw new XapiError('INVALID_DEVICE', [userdevice]);
    }
    if (used.has(diskNumber(userdevice)!)) throw new XapiError('DEVICE_ALREADY_EXISTS', [userdevice]);
    const ref = genericCreate(call, { ...args, userdevice, currently_attached: false }) as string;
    updateAllowedOperations(call.emu, 'VBD', ref);
    return ref;
  },

  /** Xapi_vbd_helpers.destroy: refused while attached; with its metrics. Also refused while one of
   * its own operations (a plug) or a VM operation reading the device list is in progress. */
  destroy(call, self: string) {
    const { db } = call.emu;
    const rec = vbdRec(call, self);
    if (rec.currently_attached === true || rec.reserved === true) {
      const vmUuid = String(db.get('VM', String(rec.VM))?.uuid ?? '');
      throw new XapiError('OPERATION_NOT_ALLOWED', [`VBD '${rec.uuid}' still attached to '${vmUuid}'`]);
    }
    const [busy] = currentOperations(rec);
    if (busy) throw new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VBD', self, busy[1], busy[0]]);
    const vm = db.get('VM', String(rec.VM));
    if (vm) assertDeviceListSettled(call, String(rec.VM), vm);
    if (db.has('VBD_metrics', String(rec.metrics))) db.destroy('VBD_metrics', String(rec.metrics));
    db.destroy('VBD', self);
  },

  plug: (call, self: string) => withOperation(call, 'VBD', self, 'plug', () => hotplug(call, self, true, false)),
  unplug: (call, self: string) => withOperation(call, 'VBD', self, 'unplug', () => hotplug(call, self, false, false)),
  unplug_force: (call, self: string) => withOperation(call, 'VBD', self, 'unplug_force', () => hotplug(call, self, false, true)),
});
