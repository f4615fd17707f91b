// The master's side of pool.join ("the master adopts the joiner"): the joining instance's objects
// are created in the master's database as xapi's create_or_get_*_on_master and the metadata import
// do (xapi_pool.ml): an object the master already has (same uuid; a network on the same bridge) is
// used as it is, the others are created with the joiner's refs and uuids; shared SRs (the tools SR)
// get a PBD for the new host, as create_storage does when a member starts. The joiner's local SR
// contents are staged first (PUT, one file at a time), then the commit moves them in place and
// writes the records at once; a journal beside the staging lets the next start undo a commit the
// process did not finish (recoverAdoptions).
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { classes, model } from '../../schema/index.js';
import { NULL_REF, type Rec } from '../../storage/database.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { isPlainName, isUuid, srPath } from '../sm/paths.js';
import { bindXenopsHost } from '../api/xenops-sync.js';
import { updateAllowedOperations } from '../api/operations.js';
import { markAdopted } from './ejection.js';

/** What the joining instance sends: its records by class and ref, and its host's ref. */
export interface JoinBundle {
  host: string;
  records: Record<string, Record<string, Rec>>;
}

/** Classes a joining host brings (besides any object whose `host` is the joiner). */
export const JOINING_CLASSES = [
  'host', 'host_metrics', 'host_cpu', 'Certificate', 'network', 'PIF', 'PIF_metrics', 'SR', 'PBD', 'VDI',
  'VM', 'VM_metrics', 'VM_guest_metrics', 'VBD', 'VBD_metrics', 'VIF', 'VIF_metrics', 'console',
];

/** Pool-wide classes that stay the master's: never taken from the joiner. */
const POOL_CLASSES = new Set(['pool', 'SM', 'role', 'user', 'secret', 'subject', 'session', 'task', 'message', 'event', 'data_source', 'blob']);

export const stagingRoot = (emu: Emulator): string => join(emu.storageDir, 'pool-adopt');
const journalOf = (emu: Emulator, hostUuid: string) => join(stagingRoot(emu), `${hostUuid}.json`);
export const stagingOf = (emu: Emulator, hostUuid: string): string => join(stagingRoot(emu), hostUuid);

/** A staged file of the joiner's local SR. */
export function stagedFile(emu: Emulator, hostUuid: string, srUuid: string, name: string): string {
  if (!isUuid(hostUuid) || !isUuid(srUuid) || !isPlainName(name)) throw new XapiError('INVALID_VALUE', ['file', name]);
  const dir = join(stagingOf(emu, hostUuid), srUuid);
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}

// ref fields mirrored by a set on the other side, and those sets: created empty, related afterwards
const refSides = new Set<string>();
const setSides = new Set<string>();
for (const [a, fa, b, fb] of model.relations) {
  refSides.add(`${a}.${fa}`);
  setSides.add(`${b}.${fb}`);
}

interface Plan {
  /** joiner ref → master ref, for objects the master already has */
  map: Map<string, string>;
  /** joiner objects to create: ref → class */
  create: Map<string, string>;
}

function planAdoption(emu: Emulator, b: JoinBundle): Plan {
  const { db } = emu;
  const map = new Map<string, string>();
  const create = new Map<string, string>();
  const rec = (cls: string, ref: string) => b.records[cls]?.[ref];
  const hostRec = rec('host', b.host);
  if (!hostRec) throw new XapiError('INTERNAL_ERROR', ['the joining host is not in its own records']);
  // networks by bridge (create_or_get_network_on_master)
  const byBridge = new Map<string, string>();
  for (const [ref, row] of db.table('network')) byBridge.set(String(row.rec.bridge), ref);
  // SRs: the joiner's local ones come over; its shared ones (the tools SR) are the pool's
  const toolsSr = [...db.table('SR')].find(([, r]) => r.rec.is_tools_sr === true)?.[0];
  const keptSrs = new Set<string>();
  for (const [cls, rows] of Object.entries(b.records)) {
    if (POOL_CLASSES.has(cls) || !classes.has(cls)) continue;
    for (const [ref, r] of Object.entries(rows)) {
      const existing = typeof r.uuid === 'string' ? db.refByUuid(cls, r.uuid) : undefined;
      if (existing) map.set(ref, existing);
      else if (cls === 'network' && byBridge.has(String(r.bridge))) map.set(ref, byBridge.get(String(r.bridge))!);
      else if (cls === 'SR' && (r.shared === true || r.is_tools_sr === true)) {
        if (r.is_tools_sr === true && toolsSr) map.set(ref, toolsSr);
      } else if (cls === 'SR') keptSrs.add(ref);
    }
  }
  for (const [cls, rows] of Object.entries(b.records)) {
    if (POOL_CLASSES.has(cls) || !classes.has(cls)) continue;
    for (const [ref, r] of Object.entries(rows)) {
      if (map.has(ref) || cls === 'SR' && !keptSrs.has(ref)) continue;
      if (cls === 'network') create.set(ref, cls);
      else if ((cls === 'VDI' || cls === 'PBD') && !keptSrs.has(String(r.SR))) {
        // an ISO of the tools SR: the master's copy of it
        if (cls === 'VDI' && toolsSr && map.get(String(r.SR)) === toolsSr) {
          const same = [...db.table('VDI')].find(([, v]) => v.rec.SR === toolsSr && v.rec.location === r.location)?.[0];
          if (same) map.set(ref, same);
        }
      } else if (cls === 'VM' && r.is_default_template === true) continue;
      else create.set(ref, cls);
    }
  }
  return { map, create };
}

/** The record as the master stores it: refs translated, relations left for the second pass. */
function translate(cls: string, r: Rec, plan: Plan): { first: Rec; related: Rec } {
  const c = classes.get(cls)!;
  const first: Rec = {};
  const related: Rec = {};
  const remap = (v: unknown): string => {
    const s = String(v);
    return plan.map.get(s) ?? (plan.create.has(s) ? s : NULL_REF);
  };
  for (const f of c.fields) {
    if (!(f.name in r)) continue;
    const v = r[f.name];
    const key = `${cls}.${f.name}`;
    if (f.ty.k === 'ref') {
      if (refSides.has(key)) {
        first[f.name] = NULL_REF;
        related[f.name] = remap(v);
      } else first[f.name] = remap(v);
    } else if (f.ty.k === 'set' && f.ty.of?.k === 'ref') {
      const refs = (Array.isArray(v) ? v : []).map(remap).filter((x) => x !== NULL_REF);
      // a set that mirrors a ref comes back by itself; both-sets relations are set from one side
      if (setSides.has(key) && !refSides.has(key)) continue;
      if (refSides.has(key)) related[f.name] = refs;
      else first[f.name] = refs;
    } else first[f.name] = v;
  }
  return { first, related };
}

/** Commits an adoption (idempotent: a host the pool has already is answered as it is). */
export function commitAdoption(emu: Emulator, b: JoinBundle): string {
  const { db } = emu;
  const hostRec = b.records.host?.[b.host];
  const hostUuid = String(hostRec?.uuid ?? '');
  if (!isUuid(hostUuid)) throw new XapiError('INVALID_VALUE', ['host', hostUuid]);
  const already = db.refByUuid('host', hostUuid);
  if (already) return already;
  const address = String(hostRec!.address ?? '');
  if (emu.hostByAddress(address)) throw new XapiError('OPERATION_NOT_ALLOWED', [`a host of the pool has the address ${address} already`]);
  const plan = planAdoption(emu, b);
  const srs = [...plan.create].filter(([, c]) => c === 'SR').map(([ref]) => String(b.records.SR[ref].uuid));
  // the journal first: a kill from here on is undone at the next start unless the host is in
  mkdirSync(stagingRoot(emu), { recursive: true });
  writeFileSync(journalOf(emu, hostUuid), JSON.stringify({ host: hostUuid, srs }));
  for (const uuid of srs) {
    const staged = join(stagingOf(emu, hostUuid), uuid);
    const dest = srPath(emu, uuid);
    rmSync(dest, { recursive: true, force: true });
    if (existsSync(staged)) renameSync(staged, dest);
    else mkdirSync(dest, { recursive: true });
  }
  const rows: [string, string, Rec][] = [];
  for (const [ref, cls] of plan.create) {
    const { first, related } = translate(cls, b.records[cls][ref], plan);
    db.create(cls, ref, first);
    rows.push([cls, ref, related]);
  }
  for (const [cls, ref, related] of rows) if (Object.keys(related).length) db.update(cls, ref, related);
  // what the joiner's storage and domains were: plugged local SRs, no domain but dom0 yet
  const host = b.host;
  for (const [ref, row] of [...db.table('SR')]) {
    if (row.rec.shared !== true) continue;
    if ((row.rec.PBDs as string[]).some((p) => db.get('PBD', p)?.host === host)) continue;
    const model = (row.rec.PBDs as string[]).map((p) => db.get('PBD', p)).find(Boolean);
    db.create('PBD', emu.ids.ref(), {
      uuid: emu.ids.uuid(), host, SR: ref, device_config: { ...((model?.device_config as Record<string, string>) ?? {}) },
      currently_attached: model?.currently_attached === true, other_config: {},
    });
  }
  const metrics = String(db.get('host', host)!.metrics);
  if (db.has('host_metrics', metrics)) db.update('host_metrics', metrics, { live: true });
  recomputePoolCpuInfo(emu);
  db.flush();
  markAdopted(emu, hostUuid, true);
  emu.hosts.push(host);
  bindXenopsHost(emu, host);
  updateAllowedOperations(emu, 'host', host);
  db.flush();
  rmSync(stagingOf(emu, hostUuid), { recursive: true, force: true });
  rmSync(journalOf(emu, hostUuid), { force: true });
  return host;
}

/** Create_misc.create_pool_cpuinfo: the pool's sockets and CPUs are its hosts'. */
export function recomputePoolCpuInfo(emu: Emulator): void {
  const { db } = emu;
  let sockets = 0;
  let cpus = 0;
  for (const h of emu.hosts.concat([...db.table('host').keys()].filter((h) => !emu.hosts.includes(h)))) {
    const ci = (db.get('host', h)?.cpu_info ?? {}) as Record<string, string>;
    sockets += Number(ci.socket_count) || 0;
    cpus += Number(ci.cpu_count) || 0;
  }
  const [pool] = db.table('pool').keys();
  const info = { ...((db.get('pool', pool)!.cpu_info as Record<string, string>) ?? {}), socket_count: String(sockets), cpu_count: String(cpus) };
  db.update('pool', pool, { cpu_info: info });
}

/** At start, before the API layer: an adoption cut before its records were written is undone (its
 * SR directories removed), and staging left over is dropped. */
export function recoverAdoptions(emu: Emulator): void {
  const root = stagingRoot(emu);
  if (!existsSync(root)) return;
  for (const name of readdirSync(root)) {
    if (!name.endsWith('.json')) continue;
    try {
      const j = JSON.parse(readFileSync(join(root, name), 'utf8')) as { host: string; srs: string[] };
      if (!emu.db.refByUuid('host', j.host)) {
        for (const uuid of j.srs) if (isUuid(uuid) && !emu.db.refByUuid('SR', uuid)) rmSync(srPath(emu, uuid), { recursive: true, force: true });
      }
    } catch {
      // an unreadable journal was being written: nothing was moved yet
    }
  }
  rmSync(root, { recursive: true, force: true });
}
