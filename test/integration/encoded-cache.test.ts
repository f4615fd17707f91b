// Responses built from the cache of encoded records (storage/encoded-cache.ts) over real sockets:
// after each kind of write — setter, add_to/remove_from, a relation mirrored by the database
// (creating a VIF changes VM.VIFs and network.VIFs), destroy and re-create — get_record,
// get_all_records and event.from show the change over XML-RPC and JSON-RPC, byte for byte what an
// uncached encoding of the stored record gives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';
import type { Ty } from '../../schema/index.js';
import * as xml from '../../server/transport/xmlrpc-codec.js';
import * as json from '../../server/transport/jsonrpc-codec.js';
import { vifArgs } from './helpers/records.js';

/** A deep copy of plain data: a new object, unknown to the cache, so encoded afresh. */
const copy = <T>(v: T): T =>
  Array.isArray(v) ? (v.map(copy) as T)
    : v !== null && typeof v === 'object' ? (Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copy(x)])) as T)
      : v;

const PASSWORD = 'cache-test';
let server: RunningServer;
let base: string;
let s: string;

const esc = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
function xv(v: unknown): string {
  if (typeof v === 'string') return `<value>${esc(v)}</value>`;
  if (typeof v === 'number') return `<value><double>${v}</double></value>`;
  if (Array.isArray(v)) return `<value><array><data>${v.map(xv).join('')}</data></array></value>`;
  const o = v as Record<string, unknown>;
  return `<value><struct>${Object.keys(o).map((k) => `<member><name>${esc(k)}</name>${xv(o[k])}</member>`).join('')}</struct></value>`;
}

async function xmlText(method: string, ...params: unknown[]): Promise<string> {
  const body = `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params.map((p) => `<param>${xv(p)}</param>`).join('')}</params></methodCall>`;
  const r = await fetch(base, { method: 'POST', body, headers: { 'content-type': 'text/xml' } });
  expect(r.status).toBe(200);
  const text = await r.text();
  expect(Number(r.headers.get('content-length'))).toBe(Buffer.byteLength(text));
  return text;
}
async function jsonText(method: string, ...params: unknown[]): Promise<string> {
  const r = await fetch(new URL('/jsonrpc', base), { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 3 }), headers: { 'content-type': 'application/json' } });
  expect(r.status).toBe(200);
  const text = await r.text();
  expect(Number(r.headers.get('content-length'))).toBe(Buffer.byteLength(text));
  return text;
}
async function ok(method: string, ...params: unknown[]): Promise<any> {
  const j = JSON.parse(await jsonText(method, ...params));
  if (j.error) throw new Error(`${method}: ${JSON.stringify(j.error)}`);
  return j.result;
}

/** The stored record, copied: a copy is not in the cache, so its encoding is done afresh. */
const copyOf = (cls: string, ref: string) => copy(server.emu.db.get(cls, ref)!);

/** get_record over both protocols, twice (the second answer from the cache), against the copy's encoding. */
async function expectServed(cls: string, ref: string): Promise<void> {
  const ty: Ty = { k: 'record', class: cls };
  for (let i = 0; i < 2; i++) {
    const rec = copyOf(cls, ref);
    expect(await xmlText(`${cls}.get_record`, s, ref)).toBe(xml.encodeSuccess(rec, ty));
    expect(await jsonText(`${cls}.get_record`, s, ref)).toBe(json.encodeSuccess(2, 3, rec));
  }
}

beforeAll(async () => {
  server = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0 });
  base = server.urls[0];
  s = await ok('session.login_with_password', 'root', PASSWORD);
});
afterAll(async () => {
  await server?.close();
});

describe('responses from cached encodings follow every change', () => {
  it('setters, map and set writes, relations, destroy and re-create', async () => {
    const vms: Record<string, Record<string, unknown>> = await ok('VM.get_all_records', s);
    const vm = Object.keys(vms).find((r) => vms[r].is_a_template === true && (vms[r].VIFs as string[]).length === 0)!;
    const net: string = await ok('network.create', s, { name_label: 'cache-net', other_config: {} });
    await expectServed('VM', vm);
    await expectServed('network', net);

    // setter over XML-RPC, read over both
    await xmlText('VM.set_name_label', s, vm, 'renamed <by> XML');
    await expectServed('VM', vm);
    expect(await xmlText('VM.get_record', s, vm)).toContain('<member><name>name_label</name><value>renamed &lt;by&gt; XML</value></member>');
    await ok('VM.set_name_description', s, vm, 'described by JSON');
    await expectServed('VM', vm);
    expect(await jsonText('VM.get_record', s, vm)).toContain('"name_description":"described by JSON"');

    // map and set writes
    await ok('VM.add_to_other_config', s, vm, 'cache', 'x');
    await expectServed('VM', vm);
    expect(await xmlText('VM.get_record', s, vm)).toContain('<member><name>cache</name><value>x</value></member>');
    await ok('VM.remove_from_other_config', s, vm, 'cache');
    await expectServed('VM', vm);
    await ok('VM.add_tags', s, vm, 'tagged');
    await expectServed('VM', vm);
    expect(await jsonText('VM.get_record', s, vm)).toContain('"tags":["tagged"]');

    // a VIF: the database mirrors it into VM.VIFs and network.VIFs
    const vif: string = await ok('VIF.create', s, vifArgs(vm, net));
    await expectServed('VM', vm);
    await expectServed('network', net);
    await expectServed('VIF', vif);
    expect(await jsonText('VM.get_record', s, vm)).toContain(`"VIFs":["${vif}"]`);
    expect(await xmlText('network.get_record', s, net)).toContain(`<member><name>VIFs</name><value><array><data><value>${vif}</value></data></array></value></member>`);

    // destroy: the sets shrink, the record is gone
    await ok('VIF.destroy', s, vif);
    await expectServed('VM', vm);
    await expectServed('network', net);
    expect(await jsonText('VM.get_record', s, vm)).toContain('"VIFs":[]');
    expect(await jsonText('VIF.get_record', s, vif)).toContain('"HANDLE_INVALID"');
    expect(await xmlText('VIF.get_record', s, vif)).toContain('<value>HANDLE_INVALID</value>');

    // and a new one
    const vif2: string = await ok('VIF.create', s, vifArgs(vm, net, '1', { MAC: 'aa:bb:cc:dd:ee:ff', MTU: 9000 }));
    await expectServed('VIF', vif2);
    await expectServed('VM', vm);
    expect(await xmlText('VIF.get_record', s, vif2)).toContain('<value>aa:bb:cc:dd:ee:ff</value>');

    // get_all_records, a map of records
    const nets: Ty = { k: 'map', key: { k: 'ref', class: 'network' }, value: { k: 'record', class: 'network' } };
    const allNets = () => Object.fromEntries([...server.emu.db.table('network')].map(([ref, row]) => [ref, copy(row.rec)]));
    await ok('network.set_name_label', s, net, 'renamed net');
    for (let i = 0; i < 2; i++) {
      expect(await jsonText('network.get_all_records', s)).toBe(json.encodeSuccess(2, 3, allNets()));
      expect(await xmlText('network.get_all_records', s)).toBe(xml.encodeSuccess(allNets(), nets));
    }
    expect(await jsonText('network.get_all_records', s)).toContain('"name_label":"renamed net"');
  });

  it('event.from snapshots show the current record', async () => {
    const net: string = await ok('network.create', s, { name_label: 'watched', other_config: {} });
    const { token } = await ok('event.from', s, ['network'], '', 0);
    await expectServed('network', net); // cache it
    await ok('network.set_name_label', s, net, 'watched and changed');
    const j = JSON.parse(await jsonText('event.from', s, ['network'], token, 0));
    const ev = j.result.events.find((e: { ref: string }) => e.ref === net);
    expect(ev.snapshot).toEqual(copyOf('network', net));
    expect(ev.snapshot.name_label).toBe('watched and changed');
    const x = await xmlText('event.from', s, ['network'], token, 0);
    expect(x).toContain(xml.encodeValue(copyOf('network', net), { k: 'record', class: 'network' }));
  });
});
