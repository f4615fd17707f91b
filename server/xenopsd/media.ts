// VBD_insert / VBD_eject: the media of an emulated CD drive of a running domain changes (xenopsd's
// VBD.insert / VBD.eject, which qemu sees for an HVM guest). The drive stays plugged; an inserted
// disk gets a read-only tapdisk on this host, an ejected one loses it.
import { Tapdisk } from './tapdisk.js';
import { Steps, type Xenopsd } from './xenopsd.js';
import { XenopsError } from './types.js';

/** simulated seconds qemu takes to change the medium */
export const MEDIA_CHANGE = 0.1;

export function vbdInsert(x: Xenopsd, id: string, dev: string, disk: { sr: string; vdi: string }): Promise<void> {
  const i = x.internals();
  return i.queued(id, async () => {
    const d = i.domains.get(id);
    if (!d) throw new XenopsError('Bad_power_state', ['Halted', 'Running']);
    const v = d.vbds.get(dev);
    if (!v) throw new XenopsError('Does_not_exist', ['VBD', `${id}.${dev}`]);
    if (v.spec.backend) throw new XenopsError('Internal_error', ['Media_present']);
    let t: Tapdisk;
    try {
      t = await Tapdisk.create(x.blktap, i.storage, disk.sr, disk.vdi, true);
    } catch (e) {
      throw new XenopsError('Storage_backend_error', (e as { description?: string[] }).description ?? ['INTERNAL_ERROR', (e as Error).message]);
    }
    await new Steps(i.clock, 0).run(MEDIA_CHANGE);
    v.spec = { ...v.spec, backend: disk, mode: 'RO' };
    v.tapdisk = t;
    i.updates.add(`VBD/${id}/${dev}`);
  });
}

export function vbdEject(x: Xenopsd, id: string, dev: string): Promise<void> {
  const i = x.internals();
  return i.queued(id, async () => {
    const d = i.domains.get(id);
    if (!d) throw new XenopsError('Bad_power_state', ['Halted', 'Running']);
    const v = d.vbds.get(dev);
    if (!v) throw new XenopsError('Does_not_exist', ['VBD', `${id}.${dev}`]);
    if (!v.spec.backend) throw new XenopsError('Internal_error', ['Media_not_present']);
    await new Steps(i.clock, 0).run(MEDIA_CHANGE);
    const t = v.tapdisk;
    v.tapdisk = null;
    v.spec = { ...v.spec, backend: null };
    await t?.destroy();
    i.updates.add(`VBD/${id}/${dev}`);
  });
}
