// The master's side of pool.eject (xapi_pool.ml eject / eject_self): the host's local SRs are
// forgotten (their contents were on the host's disk: they go with it), its PBDs on shared SRs
// unplugged and removed, its control domain and the VMs whose disks were on its local SRs
// destroyed, then its own objects (PIFs, host_cpu, metrics, certificates ...) and itself.
import { rmSync } from 'node:fs';
import { NULL_REF } from '../../storage/database.js';
import type { Emulator } from '../emulator.js';
import { srPath } from '../sm/paths.js';
import { unbindXenopsHost } from '../api/xenops-sync.js';
import { recomputePoolCpuInfo } from './adoption.js';

const ADOPTED = 'pool.adopted-hosts';
const adoptedInMemory = new WeakMap<Emulator, Set<string>>();

/** Hosts whose instance (a door elsewhere) was adopted by this master, by uuid. */
export function adoptedHosts(emu: Emulator): Set<string> {
  let s = adoptedInMemory.get(emu);
  if (!s) {
    s = new Set(JSON.parse(emu.db.getMeta(ADOPTED) ?? '[]') as string[]);
    adoptedInMemory.set(emu, s);
  }
  return s;
}

export function markAdopted(emu: Emulator, hostUuid: string, adopted: boolean): void {
  const s = adoptedHosts(emu);
  if (adopted) s.add(hostUuid);
  else s.delete(hostUuid);
  emu.db.setMeta(ADOPTED, JSON.stringify([...s]));
}

const vmDestroy = (emu: Emulator, vm: string) => {
  const { db } = emu;
  const r = db.get('VM', vm);
  if (!r) return;
  for (const b of [...(r.VBDs as string[])]) {
    const m = String(db.get('VBD', b)?.metrics ?? NULL_REF);
    db.destroy('VBD', b);
    db.destroy('VBD_metrics', m);
  }
  for (const v of [...(r.VIFs as string[])]) {
    const m = String(db.get('VIF', v)?.metrics ?? NULL_REF);
    db.destroy('VIF', v);
    db.destroy('VIF_metrics', m);
  }
  for (const c of [...((r.consoles as string[]) ?? [])]) db.destroy('console', c);
  db.destroy('VM_metrics', String(r.metrics));
  db.destroy('VM_guest_metrics', String(r.guest_metrics));
  db.destroy('VM', vm);
};

/** Removes the host and what was its own; answers the uuids of its local SRs (whose files went). */
export function removeHost(emu: Emulator, host: string, opts: { keepLocalSrs?: boolean } = {}): string[] {
  const { db } = emu;
  const h = db.get('host', host)!;
  const localSrs = opts.keepLocalSrs ? [] : [...db.table('SR')]
    .filter(([, r]) => (r.rec.PBDs as string[]).length > 0 && (r.rec.PBDs as string[]).every((p) => db.get('PBD', p)?.host === host))
    .map(([ref]) => ref);
  const local = new Set(localSrs);
  const onLocal = (vm: string) =>
    ((db.get('VM', vm)?.VBDs as string[]) ?? []).some((b) => local.has(String(db.get('VDI', String(db.get('VBD', b)?.VDI))?.SR)));
  for (const [vm, r] of [...db.table('VM')]) {
    const dom0 = r.rec.is_control_domain === true && r.rec.resident_on === host;
    if (dom0 || (r.rec.is_default_template !== true && onLocal(vm))) vmDestroy(emu, vm);
  }
  const uuids: string[] = [];
  for (const sr of localSrs) {
    const rec = db.get('SR', sr)!;
    uuids.push(String(rec.uuid));
    for (const p of [...(rec.PBDs as string[])]) db.destroy('PBD', p);
    for (const v of [...(rec.VDIs as string[])]) db.destroy('VDI', v);
    db.destroy('SR', sr);
  }
  for (const p of [...(h.PBDs as string[])]) db.destroy('PBD', p);
  for (const p of [...(h.PIFs as string[])]) {
    const m = String(db.get('PIF', p)?.metrics ?? NULL_REF);
    db.destroy('PIF', p);
    db.destroy('PIF_metrics', m);
  }
  // what else names the host as its own (host_cpu, Certificate, crashdumps, PCIs ...)
  for (const cls of ['host_cpu', 'Certificate', 'host_crashdump', 'host_patch', 'PCI', 'PGPU', 'PUSB', 'Feature']) {
    let rows;
    try {
      rows = [...emu.db.table(cls)];
    } catch {
      continue;
    }
    for (const [ref, r] of rows) if (r.rec.host === host) db.destroy(cls, ref);
  }
  // VMs that had it as their affinity keep no dangling ref
  for (const [vm, r] of [...db.table('VM')]) if (r.rec.affinity === host) db.update('VM', vm, { affinity: NULL_REF });
  db.destroy('host_metrics', String(h.metrics));
  db.destroy('host', host);
  const i = emu.hosts.indexOf(host);
  if (i >= 0) emu.hosts.splice(i, 1);
  unbindXenopsHost(emu, host);
  recomputePoolCpuInfo(emu);
  db.flush();
  for (const uuid of uuids) rmSync(srPath(emu, uuid), { recursive: true, force: true });
  return uuids;
}
