// The cache of encoded records (storage/encoded-cache.ts): a stored record's XML-RPC and JSON-RPC
// encodings are reused while it is unchanged, and never once it has changed, whichever way the
// database changed it; other values are never cached; memory stays within the budget.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Ty } from '../../schema/index.js';
import { Database, type Rec } from '../../storage/database.js';
import { cacheUsage, entryOf, setCacheBudget } from '../../storage/encoded-cache.js';
import * as xml from '../../server/transport/xmlrpc-codec.js';
import * as json from '../../server/transport/jsonrpc-codec.js';
import { Typed } from '../../server/transport/typed.js';

/** A deep copy of plain data: a new object, unknown to the cache, so encoded afresh. */
const copy = <T>(v: T): T =>
  Array.isArray(v) ? (v.map(copy) as T)
    : v !== null && typeof v === 'object' ? (Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copy(x)])) as T)
      : v;

const VM: Ty = { k: 'record', class: 'VM' };
const VIF: Ty = { k: 'record', class: 'VIF' };
const network: Ty = { k: 'record', class: 'network' };
const VMs: Ty = { k: 'map', key: { k: 'ref', class: 'VM' }, value: VM };

/** Encodings of an untracked deep copy: what an uncached encoder writes for the record now. */
const fresh = (rec: Rec, ty: Ty) => ({ xml: xml.encodeSuccess(copy(rec), ty), json: JSON.stringify(copy(rec)) });

const bytesOf = (body: string | readonly (string | Buffer)[]): string =>
  typeof body === 'string' ? body : Buffer.concat(body.map((c) => (typeof c === 'string' ? Buffer.from(c) : c))).toString('utf8');

/** Every way a response can carry the record, compared with the uncached encoding of its copy. */
function expectCurrent(db: Database, cls: string, ref: string): void {
  const rec = db.get(cls, ref)!;
  const ty: Ty = { k: 'record', class: cls };
  const want = fresh(rec, ty);
  for (let i = 0; i < 2; i++) { // the second time from the cache
    expect(xml.encodeSuccess(rec, ty)).toBe(want.xml);
    expect(bytesOf(xml.encodeSuccessBody(rec, ty))).toBe(want.xml);
    expect(json.encodeResult(rec, ty)).toBe(want.json);
    expect(bytesOf(json.encodeSuccessBody(2, 7, rec, ty))).toBe(`{"jsonrpc":"2.0","result":${want.json},"id":7}`);
    expect(bytesOf(json.encodeSuccessBody(1, 'x', rec, ty))).toBe(`{"result":${want.json},"error":null,"id":"x"}`);
    expect(xml.encodeSuccess(new Typed(ty, rec), null)).toBe(want.xml); // event snapshots
  }
}

function withVm(): { db: Database; vm: string; net: string } {
  const db = new Database({ file: null });
  db.create('network', 'OpaqueRef:net', { uuid: 'n-1', name_label: 'net' });
  db.create('VM', 'OpaqueRef:vm', { uuid: 'v-1', name_label: 'a', other_config: { k: 'v' } });
  return { db, vm: 'OpaqueRef:vm', net: 'OpaqueRef:net' };
}

afterEach(() => setCacheBudget());

describe('cache of encoded records', () => {
  it('holds the encodings of stored records only', () => {
    const { db, vm } = withVm();
    const rec = db.get('VM', vm)!;
    expect(entryOf(rec)).toBeDefined();
    expect(entryOf(copy(rec))).toBeUndefined();
    expect(entryOf({})).toBeUndefined();
    expect(entryOf('OpaqueRef:vm')).toBeUndefined();
    expectCurrent(db, 'VM', vm);
    const e = entryOf(rec)!;
    expect(e.xml).toBeDefined();
    expect(e.json).toBeDefined();
    // the cached forms are what is served
    expect(xml.encodeSuccess(rec, VM)).toContain(e.xml!);
  });

  it('drops them on every change: update, set/map writes, relation mirroring, destroy and re-create', () => {
    const { db, vm, net } = withVm();
    expectCurrent(db, 'VM', vm);
    expectCurrent(db, 'network', net);

    db.update('VM', vm, { name_label: 'b' });
    expectCurrent(db, 'VM', vm);
    expect(xml.encodeSuccess(db.get('VM', vm), VM)).toContain('<member><name>name_label</name><value>b</value></member>');

    db.update('VM', vm, { other_config: { ...(db.get('VM', vm)!.other_config as object), k2: 'v2' } });
    expectCurrent(db, 'VM', vm);
    expect(json.encodeResult(db.get('VM', vm), VM)).toContain('"other_config":{"k":"v","k2":"v2"}');

    db.update('VM', vm, { tags: ['t1'] }); // a set
    expectCurrent(db, 'VM', vm);

    // an unchanged write keeps the entry; touch changes no field
    const before = entryOf(db.get('VM', vm))!.xml;
    db.update('VM', vm, { name_label: 'b' });
    db.touch('VM', vm);
    expect(entryOf(db.get('VM', vm))!.xml).toBe(before);

    // a VIF names the VM and the network: their VIFs sets follow (Database.bumpSet)
    db.create('VIF', 'OpaqueRef:vif', { uuid: 'f-1', VM: vm, network: net, device: '0' });
    expect(db.get('VM', vm)!.VIFs).toEqual(['OpaqueRef:vif']);
    expectCurrent(db, 'VM', vm);
    expectCurrent(db, 'network', net);
    expect(json.encodeResult(db.get('network', net), network)).toContain('"VIFs":["OpaqueRef:vif"]');
    expectCurrent(db, 'VIF', 'OpaqueRef:vif');

    // moving the VIF to another network changes both networks
    db.create('network', 'OpaqueRef:net2', { uuid: 'n-2' });
    expectCurrent(db, 'network', 'OpaqueRef:net2');
    db.update('VIF', 'OpaqueRef:vif', { network: 'OpaqueRef:net2' });
    expectCurrent(db, 'network', net);
    expectCurrent(db, 'network', 'OpaqueRef:net2');
    expect(db.get('network', net)!.VIFs).toEqual([]);

    // destroy: the VM's set shrinks; a new object under the same ref is encoded afresh
    const oldVif = db.get('VIF', 'OpaqueRef:vif')!;
    db.destroy('VIF', 'OpaqueRef:vif');
    expect(entryOf(oldVif)).toBeUndefined();
    expectCurrent(db, 'VM', vm);
    expect(json.encodeResult(db.get('VM', vm), VM)).toContain('"VIFs":[]');
    db.create('VIF', 'OpaqueRef:vif', { uuid: 'f-2', VM: vm, network: net, device: '1' });
    expectCurrent(db, 'VIF', 'OpaqueRef:vif');
    expect(xml.encodeSuccess(db.get('VIF', 'OpaqueRef:vif'), VIF)).toContain('<value>f-2</value>');
    expectCurrent(db, 'VM', vm);
  });

  it('maps of records (get_all_records) use the cache and follow changes', () => {
    const { db, vm } = withVm();
    db.create('VM', 'OpaqueRef:vm2', { uuid: 'v-2', name_label: 'second' });
    const all = () => Object.fromEntries([...db.table('VM')].map(([ref, row]) => [ref, row.rec]));
    const check = () => {
      const want = JSON.stringify(copy(all()));
      expect(json.encodeResult(all(), VMs)).toBe(want);
      expect(json.encodeSuccess(1, 1, all(), VMs)).toBe(`{"result":${want},"error":null,"id":1}`);
      expect(xml.encodeSuccess(all(), VMs)).toBe(xml.encodeSuccess(copy(all()), VMs));
    };
    check();
    check();
    db.update('VM', vm, { name_label: 'renamed' });
    check();
    expect(json.encodeResult(all(), VMs)).toContain('"name_label":"renamed"');
    // a map mixing stored and other values, and undefined entries, as JSON.stringify writes it
    const mixed = { a: db.get('VM', vm), b: copy(db.get('VM', vm)), c: undefined };
    expect(json.encodeResult(mixed, VMs)).toBe(JSON.stringify(mixed));
  });

  it('tracks the records loaded from SQLite', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-emu-cache-'));
    try {
      const file = join(dir, 'db.sqlite');
      const first = new Database({ file });
      first.create('network', 'OpaqueRef:n', { uuid: 'n-1', name_label: 'persisted', other_config: {} });
      first.close();
      const db = new Database({ file });
      const rec = db.get('network', 'OpaqueRef:n')!;
      expect(entryOf(rec)).toBeDefined();
      expectCurrent(db, 'network', 'OpaqueRef:n');
      db.update('network', 'OpaqueRef:n', { name_label: 'changed' });
      expectCurrent(db, 'network', 'OpaqueRef:n');
      expect(json.encodeResult(rec, network)).toContain('"name_label":"changed"');
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stays within its budget, and answers the same when records are evicted', () => {
    const db = new Database({ file: null });
    for (let i = 0; i < 50; i++) db.create('VM', `OpaqueRef:${i}`, { uuid: `u-${i}`, name_label: `vm ${i}` });
    const one = xml.encodeValue(db.get('VM', 'OpaqueRef:0'), VM).length;
    setCacheBudget(one * 10);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 50; i++) {
        expectCurrent(db, 'VM', `OpaqueRef:${i}`);
        expect(cacheUsage().used).toBeLessThanOrEqual(one * 10);
      }
    }
    setCacheBudget(0);
    expect(cacheUsage().used).toBe(0);
    expectCurrent(db, 'VM', 'OpaqueRef:7');
    expect(cacheUsage().used).toBe(0);
  });

  it('does not keep an entry per destroyed record', () => {
    const db = new Database({ file: null });
    const start = cacheUsage();
    for (let i = 0; i < 5000; i++) {
      const ref = `OpaqueRef:t${i}`;
      db.create('task', ref, { uuid: `t-${i}`, name_label: 'x' });
      json.encodeResult(db.get('task', ref), { k: 'record', class: 'task' });
      db.destroy('task', ref);
    }
    const end = cacheUsage();
    expect(end.holding).toBe(start.holding);
    expect(end.queued).toBeLessThanOrEqual(start.queued + 2 * start.holding + 1025);
  });
});
