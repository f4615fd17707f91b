// The default pool: a consistent object graph (refs, relations), deterministic, with the counts
// of a fresh XCP-ng 8.3 install.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { classes, model, type Ty } from '../../schema/index.js';
import { Database, NULL_REF, type Rec } from '../../storage/database.js';
import { Ids } from '../../storage/ids.js';
import { createDefaultPool } from '../../server/pool/default-pool.js';

const NOW = Date.UTC(2025, 5, 1, 12, 0, 0);

function build(hosts: number, seed = 'seed') {
  const db = new Database({ file: null });
  const ids = new Ids(seed);
  const res = createDefaultPool(db, ids, { hosts, now: NOW, hostAddress: (i) => `192.168.1.${10 + i}`, dataDir: null });
  return { db, ...res };
}

const all = (db: Database, cls: string): [string, Rec][] => [...db.table(cls)].map(([ref, row]) => [ref, row.rec]);
const byClass = (db: Database) => Object.fromEntries(model.classes.map((c) => [c.name, all(db, c.name)]));

/** Every ref found in a value of type `ty`, with the class it must belong to. */
function refsIn(ty: Ty, v: unknown, out: [string, string][]): void {
  switch (ty.k) {
    case 'ref':
      out.push([ty.class, v as string]);
      break;
    case 'set':
      for (const x of v as unknown[]) refsIn(ty.of, x, out);
      break;
    case 'option':
      if (v !== undefined) refsIn(ty.of, v, out);
      break;
    case 'map':
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        refsIn(ty.key, k, out);
        refsIn(ty.value, x, out);
      }
      break;
  }
}

const refList = (v: unknown): string[] => (Array.isArray(v) ? v : v === NULL_REF ? [] : [v as string]);

const templatesFile = JSON.parse(readFileSync(new URL('../../server/pool/data/templates.json', import.meta.url), 'utf8'));
const driversFile = JSON.parse(readFileSync(new URL('../../server/pool/data/sm_drivers.json', import.meta.url), 'utf8'));

describe.each([1, 3])('default pool of %i host(s)', (n) => {
  const { db, pool, master, hosts } = build(n);

  it('has every field of every record', () => {
    for (const c of model.classes) {
      for (const [, rec] of all(db, c.name)) for (const f of c.fields) expect(rec, `${c.name}.${f.name}`).toHaveProperty([f.name]);
    }
  });

  it('has only refs to existing objects of the right class, or NULL', () => {
    for (const c of model.classes) {
      for (const [ref, rec] of all(db, c.name)) {
        for (const f of c.fields) {
          const found: [string, string][] = [];
          refsIn(f.ty, rec[f.name], found);
          for (const [cls, r] of found) {
            if (r === NULL_REF) continue;
            expect(db.has(cls, r), `${c.name} ${ref} .${f.name} -> ${cls} ${r}`).toBe(true);
          }
        }
      }
    }
  });

  it('keeps every relation both ways', () => {
    for (const [a, fa, b, fb] of model.relations) {
      if (!classes.get(a)?.field.has(fa) || !classes.get(b)?.field.has(fb) || (a === b && fa === fb)) continue;
      for (const [ref, rec] of all(db, a)) {
        for (const target of refList(rec[fa])) expect(db.get(b, target)![fb], `${a}.${fa} of ${ref}`).toContain(ref);
      }
      for (const [ref, rec] of all(db, b)) {
        for (const src of rec[fb] as string[]) expect(refList(db.get(a, src)![fa]), `${b}.${fb} of ${ref}`).toContain(ref);
      }
    }
  });

  it('has the objects of a fresh install', () => {
    expect(db.count('pool')).toBe(1);
    expect(hosts).toHaveLength(n);
    expect(db.count('host')).toBe(n);
    expect(db.count('host_metrics')).toBe(n);
    expect(db.count('host_cpu')).toBe(8 * n);
    for (const h of hosts) expect(db.get('host', h)!.host_CPUs).toHaveLength(8);
    // 4 SRs per host, one of them shared
    expect(db.count('SR')).toBe(3 * n + 1);
    for (const [, sr] of all(db, 'SR')) expect(sr.PBDs).toHaveLength(sr.shared ? n : 1);
    expect(db.count('PBD')).toBe(4 * n);
    expect(db.count('PIF')).toBe(n);
    expect(db.count('network')).toBe(2);
    expect(db.count('console')).toBe(2 * n);
    expect(db.count('SM')).toBe(driversFile.drivers.length);
    const templates = all(db, 'VM').filter(([, v]) => v.is_a_template);
    const installed = templatesFile.templates.filter((t: { rpm_package: string }) => !t.rpm_package.endsWith('-data-pv'));
    expect(templates).toHaveLength(installed.length);
    expect(templates.length).toBe(39);
    expect(db.count('VM')).toBe(39 + n);
    expect(db.count('VM_metrics')).toBe(39 + n);
    expect(all(db, 'role').map(([, r]) => r.name_label).sort()).toEqual(model.roles.filter((r) => !r.internal).map((r) => r.name).sort());
  });

  it('has a running master with its dom0 and local storage as default SR', () => {
    const p = db.get('pool', pool)!;
    expect(p.master).toBe(master);
    expect(master).toBe(hosts[0]);
    const h = db.get('host', master)!;
    const dom0 = db.get('VM', h.control_domain as string)!;
    expect(dom0).toMatchObject({ power_state: 'Running', domid: 0, is_control_domain: true, resident_on: master });
    expect(db.get('VM_metrics', dom0.metrics as string)!.current_domain_type).toBe('pv');
    const sr = db.get('SR', p.default_SR as string)!;
    expect(sr).toMatchObject({ name_label: 'Local storage', type: 'ext', shared: false });
    expect(db.get('PBD', (sr.PBDs as string[])[0])!.host).toBe(master);
    expect(h.suspend_image_sr).toBe(p.default_SR);
    expect(db.get('host_metrics', h.metrics as string)!.live).toBe(true);
    expect(p.restrictions).toMatchObject({ restrict_vtpm: 'false', restrict_zstd_export: 'false' });
  });

  it('gives each host its own control domain, PIF and local SRs', () => {
    for (const [i, h] of hosts.entries()) {
      const rec = db.get('host', h)!;
      expect(rec.address).toBe(`192.168.1.${10 + i}`);
      expect(db.get('VM', rec.control_domain as string)!.resident_on).toBe(h);
      const [pif] = rec.PIFs as string[];
      expect(db.get('PIF', pif)).toMatchObject({ device: 'eth0', management: true, IP: rec.address });
      const names = (rec.PBDs as string[]).map((p) => db.get('SR', db.get('PBD', p)!.SR as string)!.name_label).sort();
      expect(names).toEqual(['DVD drives', 'Local storage', 'Removable storage', 'XCP-ng Tools']);
    }
  });

  it('follows the template memory rule', () => {
    for (const [, vm] of all(db, 'VM').filter(([, v]) => v.is_a_template)) {
      expect(vm).toMatchObject({ is_default_template: true, power_state: 'Halted', VBDs: [] });
      expect(vm.memory_static_max).toBe(2 * (vm.memory_static_min as number));
      expect(vm.memory_dynamic_min).toBe(vm.memory_static_max);
      expect(vm.memory_dynamic_max).toBe(vm.memory_static_max);
    }
  });

  it('is deterministic', () => {
    expect(JSON.stringify(byClass(build(n).db))).toBe(JSON.stringify(byClass(db)));
    expect(JSON.stringify(byClass(build(n, 'other').db))).not.toBe(JSON.stringify(byClass(db)));
  });
});

describe('default pool size', () => {
  it('builds 64 hosts', () => {
    const { db } = build(64);
    expect(db.count('host')).toBe(64);
    expect(db.count('host_cpu')).toBe(64 * 8);
  });

  it('refuses an empty pool', () => {
    expect(() => build(0)).toThrow();
  });
});
