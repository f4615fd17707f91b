// VM_migrate between two emulated xenopsds (xenops_server's VM_migrate on the sender and
// VM_receive_memory on the receiver), or within one (a localhost migration). Our model of it:
//  1. the receiver gets the metadata and creates an empty domain (a new domid) for the memory it
//     will receive; the sender's domain keeps running while its memory is copied (the memory of
//     the VM is counted on both hosts during the copy, as Xen does);
//  2. the sender pauses the guest for the last round, then deactivates and detaches its disks
//     (the tapdisks on the source close: one writer at a time) and unplugs its NICs;
//  3. the receiver attaches and activates the disks (new tapdisks on the destination), plugs the
//     NICs and, for HVM, starts qemu; the sender destroys its domain and forgets the VM's metadata
//     (Xenopsd_metadata.delete); the receiver unpauses the guest unless it was paused before.
// A failure before step 2 leaves the VM running on the source; one after it leaves the VM halted
// (its domain gone from both hosts), as a real migration failing after the suspend does.
import { Steps, type Domain, type Progress, type Xenopsd } from './xenopsd.js';
import { DURATIONS } from './xenopsd.js';
import { XenopsError, type VmSpec } from './types.js';

export class MigrationError extends Error {
  constructor(readonly stage: 'before_suspend' | 'after_suspend', readonly cause: unknown) {
    super(`VM_migrate failed ${stage.replace('_', ' ')}: ${(cause as Error)?.message ?? String(cause)}`);
  }
}

const ordered = <T extends { spec: { mode: string; position: number } }>(vbds: Iterable<T>): T[] =>
  [...vbds].sort((a, b) => (a.spec.mode === b.spec.mode ? a.spec.position - b.spec.position : a.spec.mode === 'RW' ? -1 : 1));

export interface MigrateOptions {
  progress?: Progress;
  /** runs once the source's tapdisks have closed, before the destination's open: a storage
   * migration copies there what the guest wrote during the mirror (`spec`'s disks are then the
   * destination's VDIs, xenopsd's vdi_map) */
  beforeAttach?: () => Promise<void>;
}

/**
 * Moves the domain of VM `spec.id` from `src` to `dst` (the same xenopsd for a localhost
 * migration). Runs on the VM's queue of both xenopsds. Errors: Bad_power_state when the VM has no
 * domain on `src`, Not_enough_memory when `dst` cannot hold a second copy, MigrationError wrapping
 * any failure of the move itself.
 */
export function migrateVm(src: Xenopsd, dst: Xenopsd, spec: VmSpec, opts: MigrateOptions = {}): Promise<void> {
  const s = src.internals();
  const r = dst.internals();
  const id = spec.id;
  const local = src === dst;
  const body = async () => {
    const d = s.domains.get(id);
    if (!d) throw new XenopsError('Bad_power_state', ['Halted', 'Running']);
    if (!d.built) throw new XenopsError('Domain_not_built');
    const wasPaused = d.paused;
    const restore = s.saveCost(d.memory);
    const total = 2 * restore + d.vbds.size * (DURATIONS.VBD_deactivate + DURATIONS.VBD_detach + DURATIONS.VBD_attach + DURATIONS.VBD_activate)
      + d.vifs.size * (DURATIONS.VIF_unplug + DURATIONS.VIF_plug) + (d.qemu ? DURATIONS.VM_destroy_device_model + DURATIONS.VM_create_device_model : 0)
      + DURATIONS.VM_create + DURATIONS.VM_destroy + (wasPaused ? 0 : DURATIONS.VM_unpause);
    const steps = new Steps(s.clock, total, opts.progress);

    // 1. VM_receive_memory: the metadata, an empty domain, the memory copied while the guest runs
    if (spec.memoryRequired > dst.freeMemory()) throw new XenopsError('Not_enough_memory', [String(spec.memoryRequired)]);
    // a localhost migration updates the VM's metadata in place (its disks may change)
    const before = r.metadata.get(id);
    r.metadata.set(id, spec);
    const nd: Domain = {
      domid: r.allocDomid(), domainType: d.domainType, paused: true, built: false, qemu: false,
      memory: spec.memoryRequired, memoryTarget: d.memoryTarget, vcpus: d.vcpus, createTime: d.createTime, pvDrivers: d.pvDrivers,
      vbds: new Map(spec.vbds.map((v) => [v.id, { spec: v, plugged: false, active: false, tapdisk: null }])),
      vifs: new Map(spec.vifs.map((v) => [v.id, { spec: v, plugged: false, active: false }])),
    };
    // a localhost migration's second domain enters the table under the VM's id at the swap (the
    // memory check above counted the first one as used)
    if (!local) r.domains.set(id, nd);
    const undoReceive = () => {
      if (local && before && r.metadata.get(id) === spec && r.domains.has(id)) r.metadata.set(id, before);
      if (!local && r.domains.get(id) === nd) {
        r.domains.delete(id);
        r.metadata.delete(id);
        r.changedVm(id);
      }
    };
    try {
      await steps.run(DURATIONS.VM_create);
      if (!s.domains.has(id)) throw new XenopsError('Bad_power_state', ['Halted', 'Running']);
      await steps.run(restore);
    } catch (e) {
      undoReceive();
      throw e instanceof XenopsError ? e : new MigrationError('before_suspend', e);
    }

    // 2. the last round: the guest is paused, its devices leave the source
    try {
      d.paused = true;
      s.changedVm(id);
      await steps.run(restore);
      if (d.qemu) {
        await steps.run(DURATIONS.VM_destroy_device_model);
        d.qemu = false;
      }
      for (const v of d.vbds.values()) if (v.plugged || v.active || v.tapdisk) await s.vbdUnplug(id, v, steps);
      for (const v of d.vifs.values()) if (v.plugged) await s.vifUnplug(id, v, steps);
      await steps.run(DURATIONS.VM_destroy);
      s.domains.delete(id);
      if (!local) {
        s.metadata.delete(id);
        s.suspended.delete(id);
      }
      s.changedVm(id);
    } catch (e) {
      // the source domain is torn down whatever happens: the VM is halted
      s.domains.delete(id);
      s.changedVm(id);
      undoReceive();
      throw new MigrationError('after_suspend', e);
    }

    // 3. the devices on the destination, then the guest runs again
    try {
      await opts.beforeAttach?.();
    } catch (e) {
      undoReceive();
      throw new MigrationError('after_suspend', e);
    }
    if (local) r.domains.set(id, nd);
    try {
      nd.built = true;
      for (const v of ordered(nd.vbds.values())) await r.vbdPlug(id, nd, v, steps);
      for (const v of [...nd.vifs.values()].sort((a, b) => a.spec.position - b.spec.position)) await r.vifPlug(id, v, steps);
      if (nd.domainType === 'hvm') {
        await steps.run(DURATIONS.VM_create_device_model);
        nd.qemu = true;
      }
      r.changedVm(id);
      if (!wasPaused) await r.unpause(id, steps);
    } catch (e) {
      for (const v of nd.vbds.values()) await v.tapdisk?.destroy().catch(() => undefined);
      if (r.domains.get(id) === nd) r.domains.delete(id);
      r.changedVm(id);
      throw new MigrationError('after_suspend', e);
    }
  };
  // the VM's queue on both hosts (one queue for a localhost migration)
  return local ? s.queued(id, body) : s.queued(id, () => r.queued(id, body));
}
