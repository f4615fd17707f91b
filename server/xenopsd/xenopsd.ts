// The emulated xenopsd of one host: the domains it runs, the metadata xapi pushed for each VM, a
// queue per VM (operations on one VM run one after the other, on different VMs in parallel, as
// xenops_server's per-VM queues), the atomic operations (VM_create, VM_build, VBD_attach ...) that
// the operations (VM_start, VM_shutdown, VM_reboot, hotplug ...) are made of, and the UPDATES
// channel through which the API layer learns what changed. It never touches the API database.
import type { Clock } from '../clock.js';
import { Blktap, Tapdisk } from './tapdisk.js';
import { Updates } from './updates.js';
import {
  XenopsError, type DomainType, type StorageBackend, type VbdSpec, type VbdState, type VifIpConfiguration, type VifLockingMode, type VifSpec,
  type VifState, type VmSpec, type VmState,
} from './types.js';

/** Simulated seconds each atomic operation takes at time scale 1 (our own model: the sources give
 * only timeouts). A start of a VM with one disk and one NIC takes about 4 s, a clean shutdown 6 s. */
export const DURATIONS = {
  VM_create: 0.3,
  VM_build: 1.2,
  VBD_attach: 0.4,
  VBD_activate: 0.1,
  VIF_plug: 0.2,
  VM_create_device_model: 0.8,
  VM_unpause: 0.05,
  VM_pause: 0.05,
  /** the guest's own shutdown after it acknowledged the request (PV drivers) */
  VM_shutdown_domain_guest: 3,
  /** an HVM guest without PV drivers is shut down by Xen at once (no acknowledgement expected) */
  VM_shutdown_domain_forced: 0.2,
  VM_destroy_device_model: 0.3,
  VBD_deactivate: 0.1,
  VBD_detach: 0.3,
  VIF_unplug: 0.1,
  VM_destroy: 0.5,
  /** VM_save / VM_restore: writing or reading the memory image, per GiB of guest memory, plus a fixed part */
  VM_save_per_GiB: 1,
  VM_restore_per_GiB: 1,
  VM_save_fixed: 0.5,
};

/** The first sector of a suspend image written by the emulated VM_save. */
export const SUSPEND_IMAGE_MAGIC = 'xapi-emu suspend image';
const GiB = 1024 ** 3;

export interface HostSpec {
  uuid: string;
  /** bytes of RAM */
  totalMemory: number;
  /** bytes used by Xen and dom0 */
  dom0Memory: number;
}

export interface XenopsdEnv {
  clock: Clock;
  storage: StorageBackend;
}

export interface VbdRuntime {
  spec: VbdSpec;
  plugged: boolean;
  active: boolean;
  tapdisk: Tapdisk | null;
}

export interface VifRuntime {
  spec: VifSpec;
  plugged: boolean;
  active: boolean;
}

export interface Domain {
  domid: number;
  domainType: DomainType;
  paused: boolean;
  built: boolean;
  qemu: boolean;
  memory: number;
  memoryTarget: number;
  vcpus: number;
  createTime: number;
  pvDrivers: boolean;
  vbds: Map<string, VbdRuntime>;
  vifs: Map<string, VifRuntime>;
}

export type Progress = (fraction: number) => void;

/** A xenopsd's state as a state snapshot keeps it (plain data). */
export interface XenopsdState {
  nextDomid: number;
  metadata: VmSpec[];
  suspended: string[];
  domains: (Omit<Domain, 'vbds' | 'vifs'> & {
    id: string;
    vbds: { spec: VbdSpec; plugged: boolean; active: boolean; tapdisk: boolean }[];
    vifs: { spec: VifSpec; plugged: boolean; active: boolean }[];
  })[];
}

export interface XenopsdInternals {
  clock: Clock;
  domains: Map<string, Domain>;
  metadata: Map<string, VmSpec>;
  suspended: Set<string>;
  allocDomid(): number;
  queued<T>(id: string, fn: () => Promise<T>): Promise<T>;
  changedVm(id: string): void;
  vbdPlug(id: string, d: Domain, v: VbdRuntime, steps: Steps): Promise<void>;
  vbdUnplug(id: string, v: VbdRuntime, steps: Steps): Promise<void>;
  vifPlug(id: string, v: VifRuntime, steps: Steps): Promise<void>;
  vifUnplug(id: string, v: VifRuntime, steps: Steps): Promise<void>;
  unpause(id: string, steps: Steps): Promise<void>;
  saveCost(memory: number): number;
  storage: () => StorageBackend;
  updates: Updates;
}

/** Reports progress of an operation made of atoms of known durations. */
export class Steps {
  private done = 0;
  constructor(private readonly clock: Clock, private readonly total: number, private readonly progress?: Progress) {}
  async run(seconds: number): Promise<void> {
    await this.clock.sleep(seconds);
    this.done += seconds;
    if (this.progress && this.total > 0) this.progress(Math.min(0.99, this.done / this.total));
  }
}

export class Xenopsd {
  readonly updates = new Updates();
  readonly blktap = new Blktap();
  private readonly metadata = new Map<string, VmSpec>();
  private readonly domains = new Map<string, Domain>();
  private readonly queues = new Map<string, Promise<unknown>>();
  /** VMs this xenopsd suspended (their state is in the suspend image) */
  private readonly suspended = new Set<string>();
  /** Xen hands out domids in increasing order (dom0 is 0) */
  private nextDomid = 1;
  /** domains dropped for an import, announced when it is done */
  private readonly dropped = new Set<string>();

  constructor(readonly host: HostSpec, private env: XenopsdEnv) {}

  /** After a toolstack restart: the new API layer's clock and storage. */
  bind(env: XenopsdEnv): void {
    this.env = env;
  }

  private get clock(): Clock {
    return this.env.clock;
  }

  private readonly storage = (): StorageBackend => this.env.storage;

  // ---- queries (VM.stat, VBD.stat, VIF.stat, HOST.stat) ----

  /** VM.add / import_metadata: stores (or replaces) what xapi knows of a VM. Devices of a running
   * domain keep their state; new ones arrive unplugged. */
  add(spec: VmSpec): void {
    this.metadata.set(spec.id, spec);
    const d = this.domains.get(spec.id);
    if (!d) return;
    for (const v of spec.vbds) if (!d.vbds.has(v.id)) d.vbds.set(v.id, { spec: v, plugged: false, active: false, tapdisk: null });
    for (const v of spec.vifs) if (!d.vifs.has(v.id)) d.vifs.set(v.id, { spec: v, plugged: false, active: false });
  }

  /** VM.remove: forgets the metadata of a VM without a domain. */
  remove(id: string): void {
    if (this.domains.has(id)) throw new XenopsError('Bad_power_state', ['Running', 'Halted']);
    this.metadata.delete(id);
    this.suspended.delete(id);
  }

  has(id: string): boolean {
    return this.metadata.has(id);
  }

  /** ids of the VMs that have a domain */
  list(): string[] {
    return [...this.domains.keys()];
  }

  stat(id: string): VmState {
    const spec = this.metadata.get(id);
    const d = this.domains.get(id);
    if (!d) {
      return {
        power_state: this.suspended.has(id) ? 'Suspended' : 'Halted', domid: -1, memory_actual: 0, vcpus: 0, last_start_time: 0,
        hvm: spec?.domainType === 'hvm', domain_type: spec?.domainType ?? 'hvm', pv_drivers_detected: false,
      };
    }
    return {
      power_state: d.paused ? 'Paused' : 'Running', domid: d.domid, memory_actual: d.memoryTarget, vcpus: d.vcpus,
      last_start_time: d.createTime, hvm: d.domainType === 'hvm', domain_type: d.domainType,
      pv_drivers_detected: d.pvDrivers && d.built,
    };
  }

  vbdStat(id: string, dev: string): VbdState {
    const v = this.domains.get(id)?.vbds.get(dev);
    if (!v) return { plugged: false, active: false, tapdisk: null };
    return { plugged: v.plugged, active: v.active, tapdisk: v.tapdisk ? { pid: v.tapdisk.pid, minor: v.tapdisk.minor } : null };
  }

  vifStat(id: string, dev: string): VifState {
    const v = this.domains.get(id)?.vifs.get(dev);
    return { plugged: v?.plugged ?? false, active: v?.active ?? false };
  }

  /** The tapdisk serving a VM's disk, if attached. */
  tapdisk(id: string, dev: string): Tapdisk | null {
    return this.domains.get(id)?.vbds.get(dev)?.tapdisk ?? null;
  }

  /** bytes not used by Xen, dom0 or a domain */
  freeMemory(): number {
    let used = this.host.dom0Memory;
    for (const d of this.domains.values()) used += d.memory;
    return Math.max(0, this.host.totalMemory - used);
  }

  // ---- the per-VM queue ----

  private queued<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const p = prev.then(fn, fn);
    const tail = p.catch(() => undefined);
    this.queues.set(id, tail);
    void tail.then(() => {
      if (this.queues.get(id) === tail) this.queues.delete(id);
    });
    return p;
  }

  private spec(id: string): VmSpec {
    const s = this.metadata.get(id);
    if (!s) throw new XenopsError('Does_not_exist', ['VM', id]);
    return s;
  }

  private domain(id: string, expected: 'Running' | 'Paused' = 'Running'): Domain {
    const d = this.domains.get(id);
    if (!d) throw new XenopsError('Bad_power_state', ['Halted', expected]);
    return d;
  }

  private changedVm(id: string): void {
    this.updates.add(`VM/${id}`);
    this.updates.add('HOST');
  }

  // ---- atomic operations ----

  private async vmCreate(id: string, steps: Steps): Promise<Domain> {
    const spec = this.spec(id);
    if (this.domains.has(id)) throw new XenopsError('Already_exists', ['domain', id]);
    if (spec.memoryRequired > this.freeMemory()) throw new XenopsError('Not_enough_memory', [String(spec.memoryRequired)]);
    const d: Domain = {
      domid: this.nextDomid++, domainType: spec.domainType, paused: true, built: false, qemu: false,
      memory: spec.memoryRequired, memoryTarget: spec.memoryTarget, vcpus: spec.vcpus, createTime: this.clock.now(),
      pvDrivers: spec.pvDrivers,
      vbds: new Map(spec.vbds.map((v) => [v.id, { spec: v, plugged: false, active: false, tapdisk: null }])),
      vifs: new Map(spec.vifs.map((v) => [v.id, { spec: v, plugged: false, active: false }])),
    };
    this.domains.set(id, d);
    await steps.run(DURATIONS.VM_create);
    this.changedVm(id);
    return d;
  }

  private async vmBuild(id: string, d: Domain, steps: Steps): Promise<void> {
    await steps.run(DURATIONS.VM_build);
    d.built = true;
    this.changedVm(id);
  }

  /** VBD_attach + VBD_activate: a tapdisk for the disk, then the backend is connected. */
  private async vbdPlugAtoms(id: string, d: Domain, v: VbdRuntime, steps: Steps): Promise<void> {
    if (v.spec.backend) {
      try {
        v.tapdisk = await Tapdisk.create(this.blktap, this.storage, v.spec.backend.sr, v.spec.backend.vdi, v.spec.mode === 'RO');
      } catch (e) {
        throw new XenopsError('Storage_backend_error', ['VDI.attach', (e as Error).message]);
      }
    }
    await steps.run(DURATIONS.VBD_attach);
    v.plugged = true;
    await steps.run(DURATIONS.VBD_activate);
    v.active = true;
    this.updates.add(`VBD/${id}/${v.spec.id}`);
  }

  private async vbdUnplugAtoms(id: string, v: VbdRuntime, steps: Steps): Promise<void> {
    await steps.run(DURATIONS.VBD_deactivate);
    v.active = false;
    await steps.run(DURATIONS.VBD_detach);
    const t = v.tapdisk;
    v.tapdisk = null;
    await t?.destroy();
    v.plugged = false;
    this.updates.add(`VBD/${id}/${v.spec.id}`);
  }

  private async vifPlugAtoms(id: string, v: VifRuntime, steps: Steps): Promise<void> {
    await steps.run(DURATIONS.VIF_plug);
    v.plugged = true;
    v.active = true;
    this.updates.add(`VIF/${id}/${v.spec.id}`);
  }

  private async vifUnplugAtoms(id: string, v: VifRuntime, steps: Steps): Promise<void> {
    await steps.run(DURATIONS.VIF_unplug);
    v.plugged = false;
    v.active = false;
    this.updates.add(`VIF/${id}/${v.spec.id}`);
  }

  /** VM_shutdown's device and domain teardown (after the guest is gone). */
  private async teardown(id: string, d: Domain, steps: Steps): Promise<void> {
    d.paused = true; // Best_effort VM_pause
    if (d.qemu) {
      await steps.run(DURATIONS.VM_destroy_device_model);
      d.qemu = false;
    }
    for (const v of d.vbds.values()) if (v.plugged || v.active || v.tapdisk) await this.vbdUnplugAtoms(id, v, steps);
    for (const v of d.vifs.values()) if (v.plugged) await this.vifUnplugAtoms(id, v, steps);
    await steps.run(DURATIONS.VM_destroy);
    this.domains.delete(id);
    this.changedVm(id);
  }

  private startCost(spec: VmSpec): number {
    const D = DURATIONS;
    return D.VM_create + D.VM_build + spec.vbds.length * (D.VBD_attach + D.VBD_activate) + spec.vifs.length * D.VIF_plug
      + (spec.domainType === 'hvm' ? D.VM_create_device_model : 0);
  }

  private shutdownCost(d: Domain, clean: boolean): number {
    const D = DURATIONS;
    return (clean ? (d.pvDrivers ? D.VM_shutdown_domain_guest : D.VM_shutdown_domain_forced) : 0) + (d.qemu ? D.VM_destroy_device_model : 0)
      + d.vbds.size * (D.VBD_deactivate + D.VBD_detach) + d.vifs.size * D.VIF_unplug + D.VM_destroy;
  }

  /** VM_start without the queue: the domain is left paused, as xenopsd leaves it. */
  private async startAtoms(id: string, steps: Steps): Promise<void> {
    const d = await this.vmCreate(id, steps);
    try {
      await this.vmBuild(id, d, steps);
      // RW disks before RO ones (xenops_server's VBD ordering), then NICs in position order
      const vbds = [...d.vbds.values()].sort((a, b) => (a.spec.mode === b.spec.mode ? a.spec.position - b.spec.position : a.spec.mode === 'RW' ? -1 : 1));
      for (const v of vbds) await this.vbdPlugAtoms(id, d, v, steps);
      for (const v of [...d.vifs.values()].sort((a, b) => a.spec.position - b.spec.position)) await this.vifPlugAtoms(id, v, steps);
      if (d.domainType === 'hvm') {
        await steps.run(DURATIONS.VM_create_device_model);
        d.qemu = true;
      }
      this.changedVm(id);
    } catch (e) {
      await this.teardown(id, d, new Steps(this.clock, 0)).catch(() => undefined);
      throw e;
    }
  }

  // ---- operations ----

  /** VM_start (domain paused), followed by VM_unpause unless `paused`. */
  start(id: string, opts: { paused?: boolean; progress?: Progress } = {}): Promise<void> {
    return this.queued(id, async () => {
      const spec = this.spec(id);
      if (this.domains.has(id)) throw new XenopsError('Bad_power_state', ['Running', 'Halted']);
      const steps = new Steps(this.clock, this.startCost(spec) + (opts.paused ? 0 : DURATIONS.VM_unpause), opts.progress);
      await this.startAtoms(id, steps);
      if (!opts.paused) await this.unpauseAtom(id, steps);
    });
  }

  private async unpauseAtom(id: string, steps: Steps): Promise<void> {
    const d = this.domain(id, 'Paused');
    if (!d.built) throw new XenopsError('Domain_not_built');
    await steps.run(DURATIONS.VM_unpause);
    d.paused = false;
    this.changedVm(id);
  }

  unpause(id: string): Promise<void> {
    return this.queued(id, () => this.unpauseAtom(id, new Steps(this.clock, 0)));
  }

  pause(id: string): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      if (!d.built) throw new XenopsError('Domain_not_built');
      await this.clock.sleep(DURATIONS.VM_pause);
      d.paused = true;
      this.changedVm(id);
    });
  }

  private async shutdownAtoms(id: string, clean: boolean, steps: Steps): Promise<void> {
    const d = this.domain(id);
    if (clean) {
      // VM_shutdown_domain: a guest with PV drivers acknowledges and shuts itself down; Xen shuts
      // down an HVM guest without them at once (Domain.shutdown_wait_for_ack)
      await steps.run(d.pvDrivers ? DURATIONS.VM_shutdown_domain_guest : DURATIONS.VM_shutdown_domain_forced);
    }
    await this.teardown(id, d, steps);
  }

  /** VM_shutdown: clean (the guest is asked) or hard (VM_poweroff). */
  shutdown(id: string, opts: { clean: boolean; progress?: Progress }): Promise<void> {
    return this.queued(id, async () => {
      // VM_poweroff of a domain already gone has nothing to do
      if (!opts.clean && !this.domains.has(id)) return;
      const d = this.domain(id);
      await this.shutdownAtoms(id, opts.clean, new Steps(this.clock, this.shutdownCost(d, opts.clean), opts.progress));
    });
  }

  /** VM_reboot: shutdown, then VM_start and VM_unpause (a new domain, a new domid). */
  reboot(id: string, opts: { clean: boolean; progress?: Progress }): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      const steps = new Steps(this.clock, this.shutdownCost(d, opts.clean) + this.startCost(this.spec(id)) + DURATIONS.VM_unpause, opts.progress);
      await this.shutdownAtoms(id, opts.clean, steps);
      await this.startAtoms(id, steps);
      await this.unpauseAtom(id, steps);
    });
  }

  private saveCost(memory: number): number {
    return DURATIONS.VM_save_fixed + (memory / GiB) * DURATIONS.VM_save_per_GiB;
  }

  /** VM_suspend: VM_save (the guest paused, its memory image written to the suspend disk), then
   * VM_shutdown. */
  suspend(id: string, disk: { sr: string; vdi: string }, opts: { progress?: Progress } = {}): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      const steps = new Steps(this.clock, this.saveCost(d.memory) + this.shutdownCost(d, false), opts.progress);
      d.paused = true;
      this.changedVm(id);
      let t: Tapdisk;
      try {
        t = await Tapdisk.create(this.blktap, this.storage, disk.sr, disk.vdi, false);
      } catch (e) {
        d.paused = false;
        throw new XenopsError('Storage_backend_error', (e as { description?: string[] }).description ?? ['INTERNAL_ERROR', (e as Error).message]);
      }
      try {
        const header = Buffer.alloc(512);
        header.write(JSON.stringify({ magic: SUSPEND_IMAGE_MAGIC, vm: id, vcpus: d.vcpus, memory: d.memoryTarget, saved: this.clock.now() }));
        await t.write(0, header);
        await steps.run(this.saveCost(d.memory));
      } catch (e) {
        d.paused = false;
        throw new XenopsError('Internal_error', [`VM_save: ${(e as Error).message}`]);
      } finally {
        await t.destroy();
      }
      this.suspended.add(id);
      await this.teardown(id, d, steps);
    });
  }

  /** VM_resume: VM_create, VM_restore (the image read back), the devices (RW disks, RO disks,
   * NICs, qemu), then VM_unpause unless `paused`. */
  resume(id: string, disk: { sr: string; vdi: string }, opts: { paused?: boolean; progress?: Progress } = {}): Promise<void> {
    return this.queued(id, async () => {
      const spec = this.spec(id);
      if (this.domains.has(id)) throw new XenopsError('Bad_power_state', ['Running', 'Suspended']);
      const restore = this.saveCost(spec.memoryRequired);
      const steps = new Steps(this.clock, this.startCost(spec) + restore + (opts.paused ? 0 : DURATIONS.VM_unpause), opts.progress);
      const d = await this.vmCreate(id, steps);
      try {
        const t = await Tapdisk.create(this.blktap, this.storage, disk.sr, disk.vdi, true).catch((e) => {
          throw new XenopsError('Storage_backend_error', (e as { description?: string[] }).description ?? ['INTERNAL_ERROR', (e as Error).message]);
        });
        try {
          const head = (await t.read(0, 512)).toString('utf8').replace(/\0+$/, '');
          let image: { magic?: string } = {};
          try {
            image = JSON.parse(head);
          } catch {
            // not an image
          }
          if (image.magic !== SUSPEND_IMAGE_MAGIC) throw new XenopsError('Internal_error', ['VM_restore: the suspend image is not valid']);
          await steps.run(restore);
        } finally {
          await t.destroy();
        }
        d.built = true;
        const vbds = [...d.vbds.values()].sort((a, b) => (a.spec.mode === b.spec.mode ? a.spec.position - b.spec.position : a.spec.mode === 'RW' ? -1 : 1));
        for (const v of vbds) await this.vbdPlugAtoms(id, d, v, steps);
        for (const v of [...d.vifs.values()].sort((a, b) => a.spec.position - b.spec.position)) await this.vifPlugAtoms(id, v, steps);
        if (d.domainType === 'hvm') {
          await steps.run(DURATIONS.VM_create_device_model);
          d.qemu = true;
        }
      } catch (e) {
        await this.teardown(id, d, new Steps(this.clock, 0)).catch(() => undefined);
        throw e;
      }
      this.suspended.delete(id);
      this.changedVm(id);
      if (!opts.paused) await this.unpauseAtom(id, steps);
    });
  }

  /** VBD_hotplug */
  vbdPlug(id: string, dev: string): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      const v = d.vbds.get(dev);
      if (!v) throw new XenopsError('Does_not_exist', ['VBD', `${id}.${dev}`]);
      if (v.plugged) throw new XenopsError('Device_is_connected');
      await this.vbdPlugAtoms(id, d, v, new Steps(this.clock, 0));
    });
  }

  /** VBD_hotunplug */
  vbdUnplug(id: string, dev: string, _force: boolean): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      const v = d.vbds.get(dev);
      if (!v || !v.plugged) throw new XenopsError('Device_not_connected');
      await this.vbdUnplugAtoms(id, v, new Steps(this.clock, 0));
    });
  }

  vifPlug(id: string, dev: string): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      const v = d.vifs.get(dev);
      if (!v) throw new XenopsError('Does_not_exist', ['VIF', `${id}.${dev}`]);
      if (v.plugged) throw new XenopsError('Device_is_connected');
      await this.vifPlugAtoms(id, v, new Steps(this.clock, 0));
    });
  }

  vifUnplug(id: string, dev: string): Promise<void> {
    return this.queued(id, async () => {
      const d = this.domain(id);
      const v = d.vifs.get(dev);
      if (!v || !v.plugged) throw new XenopsError('Device_not_connected');
      await this.vifUnplugAtoms(id, v, new Steps(this.clock, 0));
    });
  }

  /** VIF.move: the backend leaves its bridge for another one, without the guest noticing more
   * than a carrier flap (no hot-unplug in the guest). */
  vifMove(id: string, dev: string, bridge: string): Promise<void> {
    return this.vifChange(id, dev, { bridge });
  }

  /** VIF.set_locking_mode: the switch port's rules */
  vifSetLockingMode(id: string, dev: string, lockingMode: VifLockingMode): Promise<void> {
    return this.vifChange(id, dev, { lockingMode });
  }

  /** VIF.set_ipv4_configuration / set_ipv6_configuration: written for the guest's tools */
  vifSetIpConfiguration(id: string, dev: string, family: 4 | 6, conf: VifIpConfiguration): Promise<void> {
    return this.vifChange(id, dev, family === 4 ? { ipv4Configuration: conf } : { ipv6Configuration: conf });
  }

  /** VIF.set_trunks */
  vifSetTrunks(id: string, dev: string, trunks: number[]): Promise<void> {
    return this.vifChange(id, dev, { trunks });
  }

  /** A change to a plugged VIF's backend, kept in its metadata too (a migration or a reboot
   * takes it along), announced on the updates channel. */
  private vifChange(id: string, dev: string, change: Partial<VifSpec>): Promise<void> {
    return this.queued(id, async () => {
      const v = this.domains.get(id)?.vifs.get(dev);
      if (!v) throw new XenopsError('Does_not_exist', ['VIF', `${id}.${dev}`]);
      v.spec = { ...v.spec, ...change };
      const meta = this.metadata.get(id);
      if (meta) meta.vifs = meta.vifs.map((s) => (s.id === dev ? { ...s, ...change } : s));
      this.updates.add(`VIF/${id}/${dev}`);
    });
  }

  /** The parts of this xenopsd that VM_migrate / VM_receive_memory (migrate.ts) and the CD
   * media atoms (media.ts) are made of. */
  internals(): XenopsdInternals {
    return {
      clock: this.clock, domains: this.domains, metadata: this.metadata, suspended: this.suspended,
      allocDomid: () => this.nextDomid++,
      queued: (id, fn) => this.queued(id, fn),
      changedVm: (id) => this.changedVm(id),
      vbdPlug: (id, d, v, steps) => this.vbdPlugAtoms(id, d, v, steps),
      vbdUnplug: (id, v, steps) => this.vbdUnplugAtoms(id, v, steps),
      vifPlug: (id, v, steps) => this.vifPlugAtoms(id, v, steps),
      vifUnplug: (id, v, steps) => this.vifUnplugAtoms(id, v, steps),
      unpause: (id, steps) => this.unpauseAtom(id, steps),
      saveCost: (memory) => this.saveCost(memory),
      storage: this.storage,
      updates: this.updates,
    };
  }

  // ---- state snapshots ----

  /** Whether no operation is queued or running on any VM. */
  idle(): boolean {
    return this.queues.size === 0;
  }

  /** What a state snapshot keeps of this xenopsd: metadata, suspended VMs and domains with their
   * devices' states (a disk's tapdisk as a flag: tapdisks are processes, rebuilt on import). */
  exportState(): XenopsdState {
    return structuredClone({
      nextDomid: this.nextDomid,
      metadata: [...this.metadata.values()],
      suspended: [...this.suspended],
      domains: [...this.domains].map(([id, d]) => ({
        id, domid: d.domid, domainType: d.domainType, paused: d.paused, built: d.built, qemu: d.qemu, memory: d.memory,
        memoryTarget: d.memoryTarget, vcpus: d.vcpus, createTime: d.createTime, pvDrivers: d.pvDrivers,
        vbds: [...d.vbds.values()].map((v) => ({ spec: v.spec, plugged: v.plugged, active: v.active, tapdisk: v.tapdisk !== null })),
        vifs: [...d.vifs.values()].map((v) => ({ spec: v.spec, plugged: v.plugged, active: v.active })),
      })),
    });
  }

  /** The first half of an import: the domains go and their tapdisks close (their files are then
   * free to be replaced), without an update: the API layer hears of it once the import is done. */
  async dropDomains(): Promise<void> {
    for (const [id, d] of [...this.domains]) {
      for (const v of d.vbds.values()) {
        const t = v.tapdisk;
        v.tapdisk = null;
        await t?.destroy();
      }
      this.domains.delete(id);
      this.dropped.add(id);
    }
  }

  /**
   * Replaces this xenopsd's state with a snapshot's, at once (no simulated durations): the current
   * domains are dropped (dropDomains), the snapshot's are rebuilt and their attached disks
   * get new tapdisks on the (restored) files. Then one update per VM either side, so the API layer
   * resyncs. Answers the disks whose tapdisk could not be opened again (left unplugged).
   */
  async importState(s: XenopsdState): Promise<string[]> {
    await this.dropDomains();
    const vms = new Set(this.dropped);
    this.dropped.clear();
    this.metadata.clear();
    this.suspended.clear();
    for (const m of s.metadata) this.metadata.set(m.id, structuredClone(m));
    for (const id of s.suspended) this.suspended.add(id);
    this.nextDomid = s.nextDomid;
    const failed: string[] = [];
    const rebuilt: [string, Domain, { spec: VbdSpec; tapdisk: boolean }[]][] = [];
    for (const x of s.domains) {
      const d: Domain = {
        domid: x.domid, domainType: x.domainType, paused: x.paused, built: x.built, qemu: x.qemu, memory: x.memory,
        memoryTarget: x.memoryTarget, vcpus: x.vcpus, createTime: x.createTime, pvDrivers: x.pvDrivers,
        vbds: new Map(x.vbds.map((v) => [v.spec.id, { spec: structuredClone(v.spec), plugged: v.plugged, active: v.active, tapdisk: null }])),
        vifs: new Map(x.vifs.map((v) => [v.spec.id, { spec: structuredClone(v.spec), plugged: v.plugged, active: v.active }])),
      };
      this.domains.set(x.id, d);
      vms.add(x.id);
      rebuilt.push([x.id, d, x.vbds]);
    }
    for (const [id, d, vbds] of rebuilt) {
      for (const v of vbds) {
        const rt = d.vbds.get(v.spec.id)!;
        if (!v.tapdisk || !rt.spec.backend) continue;
        try {
          rt.tapdisk = await Tapdisk.create(this.blktap, this.storage, rt.spec.backend.sr, rt.spec.backend.vdi, rt.spec.mode === 'RO');
        } catch {
          rt.plugged = false;
          rt.active = false;
          failed.push(`${id}/${v.spec.id}`);
        }
      }
    }
    for (const id of vms) {
      this.changedVm(id);
      const d = this.domains.get(id);
      for (const v of d?.vbds.keys() ?? []) this.updates.add(`VBD/${id}/${v}`);
      for (const v of d?.vifs.keys() ?? []) this.updates.add(`VIF/${id}/${v}`);
    }
    return failed;
  }

  /** The host goes down: every domain is destroyed at once and the tapdisks close. */
  async destroyAll(): Promise<void> {
    for (const [id, d] of [...this.domains]) {
      for (const v of d.vbds.values()) await v.tapdisk?.destroy();
      this.domains.delete(id);
    }
  }
}
