// PBD: create, destroy, plug and unplug (xapi_pbd.ml and the PBD part of message_forwarding.ml).
// Plugging attaches the SR through its SM driver; each of them marks the SR (plug, unplug,
// pbd_create, pbd_destroy in SR.current_operations).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { currentOperations, updateAllowedOperations, withOperation } from './operations.js';
import { smSrAttach, smSrDetach, smSrUpdate, srCtx } from '../sm/sm.js';
import { assertSmSession } from './SR.js';

function assertNoSrMasterKey(dconf: Record<string, string>): void {
  if (Object.prototype.hasOwnProperty.call(dconf, 'SRmaster')) {
    throw new XapiError('VALUE_NOT_SUPPORTED', ['SRmaster', dconf.SRmaster, 'This key is for internal use only']);
  }
}

/** Xapi_pbd.create_common: a new unplugged PBD (its other_config starts empty whatever is given). */
export function createPbd(emu: Emulator, sr: string, host: string, device_config: Record<string, string>): string {
  const existing = (emu.db.get('SR', sr)!.PBDs as string[]).find((p) => emu.db.get('PBD', p)?.host === host);
  if (existing) throw new XapiError('PBD_EXISTS', [sr, host, existing]);
  assertNoSrMasterKey(device_config);
  const ref = emu.ids.ref();
  emu.db.create('PBD', ref, { uuid: emu.ids.uuid(), host, SR: sr, device_config: { ...device_config }, currently_attached: false, other_config: {} });
  return ref;
}

function pbdRec(call: Call, pbd: string) {
  const r = call.emu.db.get('PBD', pbd);
  if (!r) throw new XapiError('HANDLE_INVALID', ['PBD', pbd]);
  return r;
}

/** PBD.plug: with the SR marked `plug`, attach it through the driver; then, for the master's PBD,
 * the SR's sizes are refreshed (SR.update). */
export async function plugPbd(call: Call, pbd: string): Promise<void> {
  const { emu } = call;
  const sr = String(pbdRec(call, pbd).SR);
  await withOperation(call, 'SR', sr, 'plug', async () => {
    const rec = pbdRec(call, pbd);
    if (rec.currently_attached === true) return;
    const srRec = emu.db.get('SR', sr)!;
    if (srRec.shared !== true) {
      // check_sharing_constraint: an unshared SR is attached to one host at a time
      const other = (srRec.PBDs as string[]).find((p) => p !== pbd && emu.db.get('PBD', p)?.currently_attached === true && emu.db.get('PBD', p)?.host !== rec.host);
      if (other) throw new XapiError('SR_NOT_SHARABLE', [sr, String(emu.db.get('PBD', other)!.host)]);
    }
    await smSrAttach(srCtx(emu, sr, pbd));
    emu.db.update('PBD', pbd, { currently_attached: true });
    updateAllowedOperations(emu, 'SR', sr);
  });
  if (emu.db.get('PBD', pbd)?.host === emu.master) await smSrUpdate(srCtx(emu, sr)).catch(() => undefined);
}

/** PBD.unplug: waits for the SR's VDI operations to end, marks the SR `unplug`, detaches. */
export async function unplugPbd(call: Call, pbd: string): Promise<void> {
  const { emu } = call;
  const sr = String(pbdRec(call, pbd).SR);
  const precheck = () => {
    for (const v of (emu.db.get('SR', sr)?.VDIs as string[]) ?? []) {
      const r = emu.db.get('VDI', v);
      const [first] = r ? currentOperations(r) : [];
      if (first) throw new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VDI', v, first[1], first[0]]);
    }
  };
  await withOperation(call, 'SR', sr, 'unplug', async () => {
    const rec = pbdRec(call, pbd);
    if (rec.currently_attached !== true) return;
    // VDIs in use by VMs resident on the PBD's host
    const inUse: string[] = [];
    for (const [, vm] of emu.db.table('VM')) {
      if (vm.rec.resident_on !== rec.host) continue;
      for (const vbd of vm.rec.VBDs as string[]) {
        const b = emu.db.get('VBD', vbd);
        if (!b || b.empty === true || !(b.currently_attached === true || b.reserved === true)) continue;
        const vdi = emu.db.get('VDI', String(b.VDI));
        if (vdi && vdi.SR === sr && vdi.type !== 'metadata') inUse.push(String(b.VDI));
      }
    }
    if (inUse.length) throw new XapiError('VDI_IN_USE', inUse);
    // every emulated host is this machine: the SR's mount point stays while another host has it
    const othersAttached = (emu.db.get('SR', sr)!.PBDs as string[]).some((p) => p !== pbd && emu.db.get('PBD', p)?.currently_attached === true);
    if (!othersAttached) await smSrDetach(srCtx(emu, sr, pbd));
    emu.db.update('PBD', pbd, { currently_attached: false });
    updateAllowedOperations(emu, 'SR', sr);
  }, { precheck });
}

registerProvider('PBD', {
  async create(call, args: { host: string; SR: string; device_config: Record<string, string> }) {
    const { emu } = call;
    for (const [cls, ref] of [['host', args.host], ['SR', args.SR]] as const) {
      if (!emu.db.has(cls, ref)) throw new XapiError('HANDLE_INVALID', [cls, ref]);
    }
    return withOperation(call, 'SR', args.SR, 'pbd_create', () => createPbd(emu, args.SR, args.host, args.device_config));
  },

  async destroy(call, self: string) {
    const sr = String(pbdRec(call, self).SR);
    await withOperation(call, 'SR', sr, 'pbd_destroy', () => {
      if (pbdRec(call, self).currently_attached === true) throw new XapiError('OPERATION_NOT_ALLOWED', ['PBD is currently attached']);
      call.emu.db.destroy('PBD', self);
    });
  },

  plug: (call, self: string) => plugPbd(call, self),
  unplug: (call, self: string) => unplugPbd(call, self),

  set_device_config(call, self: string, value: Record<string, string>) {
    assertSmSession(call, String(pbdRec(call, self).SR));
    assertNoSrMasterKey(value);
    call.emu.db.update('PBD', self, { device_config: value });
  },
});
