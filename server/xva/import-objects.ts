// The objects of an imported XVA (xapi's import.ml): ova.xml decoded into its version header and
// objects, the version checked against this host's, then each class handled in xapi's order (host,
// SR, VDI, VM, network, VBD, VIF), every object made through the API on the importer's session,
// with its external id ("Ref:<n>") mapped to the new ref. Every creation pushes its undoing on a
// cleanup stack, run when the import fails (unless forced, as xapi).
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { dispatch } from '../dispatch/dispatch.js';
import { compileParam } from '../dispatch/validate.js';
import { decodeMethodCall } from '../transport/xmlrpc-codec.js';
import { updateAllowedOperations } from '../api/operations.js';
import { NULL_REF, type Rec } from '../../storage/database.js';
import { importFailure } from './read-archive.js';
import { importMade } from './import-journal.js';

export interface ImportObject {
  cls: string;
  id: string;
  snapshot: unknown;
}

export interface XvaVersion {
  xapiMajor: number;
  xapiMinor: number;
  exportVsn: number;
}

export interface XvaHeader {
  version: XvaVersion;
  objects: ImportObject[];
}

export interface ImportConfig {
  /** Full_import: the disks come along, into new VDIs of `sr`; Metadata_import: the VDIs exist
   * already (found through `vdiMap`, source uuid → destination uuid, or by SR and location) and
   * `dryRun` only checks that everything would be found */
  mode: { kind: 'full'; sr: string } | { kind: 'metadata'; vdiMap: Map<string, string>; dryRun: boolean };
  /** keep uuids and MACs (restore=true) */
  fullRestore: boolean;
  force: boolean;
}

export interface ImportCtx {
  emu: Emulator;
  session: string;
  host: string;
  task: string;
}

/** A disk to receive: its external id (the chunk prefix), the new VDI, its size. */
export interface DiskToReceive {
  id: string;
  vdi: string;
  size: number;
}

export interface ImportState {
  /** external id → new (or found) ref, per class */
  table: Map<string, string>;
  createdVms: string[];
  /** the VMs made by this import (not the default templates standing for themselves) */
  made: Set<string>;
  cleanup: (() => Promise<void>)[];
  disks: DiskToReceive[];
}

const asStruct = (v: unknown): Record<string, unknown> => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw importFailure('Failure("Expected Dictionary")');
  return v as Record<string, unknown>;
};

const intOf = (v: unknown): number => {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw importFailure('Failure("Expected Int")');
  return n;
};

/** Import.header_of_rpc over ova.xml (a bare XML-RPC <value>). */
export function parseHeader(xml: string): XvaHeader {
  const body = xml.replace(/^\s*<\?xml[^>]*\?>/, '');
  let value: unknown;
  try {
    value = decodeMethodCall(`<methodCall><methodName>ova</methodName><params><param>${body}</param></params></methodCall>`).params[0];
  } catch (e) {
    throw importFailure(`Failure("${String((e as Error).message ?? e).replace(/"/g, '\\"')}")`);
  }
  const top = asStruct(value);
  const v = asStruct(top.version);
  const objects = top.objects;
  if (!Array.isArray(objects)) throw importFailure('Failure("Expected Array")');
  return {
    version: { xapiMajor: intOf(v.xapi_major), xapiMinor: intOf(v.xapi_minor), exportVsn: v.export_vsn === undefined ? 0 : intOf(v.export_vsn) },
    objects: objects.map((o) => {
      const s = asStruct(o);
      if (typeof s.class !== 'string' || typeof s.id !== 'string') throw importFailure('Failure("Expected String")');
      return { cls: s.class, id: s.id, snapshot: s.snapshot };
    }),
  };
}

/** Importexport.this_version: the major/minor of this host's xapi. */
function thisVersion(emu: Emulator, host: string): { major: number; minor: number } {
  const sv = (emu.db.get('host', host)?.software_version ?? {}) as Record<string, string>;
  const [major, minor] = (sv.xapi_build ?? sv.xapi ?? '0.0').split('.').map((x) => Number.parseInt(x, 10) || 0);
  return { major: major ?? 0, minor: minor ?? 0 };
}

/** Importexport.assert_compatible: an export from a newer xapi is refused. */
export function assertCompatible(emu: Emulator, host: string, other: XvaVersion): void {
  const me = thisVersion(emu, host);
  if (me.major < other.xapiMajor || (me.major === other.xapiMajor && me.minor < other.xapiMinor)) {
    throw new XapiError('IMPORT_INCOMPATIBLE_VERSION', []);
  }
}

/** `<class>_t_of_rpc`: the snapshot as a typed record (defaults for missing fields). */
const converters = new Map<string, (v: unknown) => unknown>();
function recordOf(cls: string, snapshot: unknown): Rec {
  let f = converters.get(cls);
  if (!f) converters.set(cls, (f = compileParam({ k: 'record', class: cls })));
  try {
    return f(snapshot) as Rec;
  } catch (e) {
    if (e instanceof XapiError) throw importFailure(e.description.join(' '));
    throw importFailure(String((e as Error).message ?? e));
  }
}

const isDryRun = (c: ImportConfig) => c.mode.kind === 'metadata' && c.mode.dryRun;
/** handle_dry_run: the ref an object would have (made up, nothing is created) */
const dummyRef = () => `OpaqueRef:${globalThis.crypto.randomUUID()}`;

async function call(ctx: ImportCtx, method: string, params: unknown[]): Promise<unknown> {
  const r = await dispatch(ctx.emu, method, [ctx.session, ...params], { host: ctx.host });
  if (!r.ok) throw new XapiError(r.error[0], r.error.slice(1));
  return r.value;
}

const isExportRef = (r: unknown): r is string => typeof r === 'string' && r.startsWith('Ref:');

/** Import.lookup: the ref an external id was mapped to. */
function lookup(state: ImportState, id: unknown): string {
  const r = typeof id === 'string' ? state.table.get(id) : undefined;
  if (r === undefined) throw new XapiError('IMPORT_ERROR_FAILED_TO_FIND_OBJECT', [String(id)]);
  return r;
}

/** Xapi_globs keys an import writes. */
const IMPORT_TASK = 'import_task';
const MAC_SEED = 'mac_seed';
const DEFAULT_TEMPLATE = 'default_template';
const GRANT_API_ACCESS = 'grant_api_access';

const uuidv4 = () => globalThis.crypto.randomUUID();
const randomInt64 = () => BigInt.asUintN(63, globalThis.crypto.getRandomValues(new BigUint64Array(1))[0]).toString();
/** Xapi_vm_helpers.fresh_genid: a VM without a generation id keeps none. */
const freshGenid = (current: string) => (current === '' ? '' : `${randomInt64()}:${randomInt64()}`);

/** Import.handle_all: every object, class by class in xapi's order, then the snapshot links. */
export async function importObjects(ctx: ImportCtx, header: XvaHeader, config: ImportConfig): Promise<ImportState> {
  const state: ImportState = { table: new Map(), createdVms: [], made: new Set(), cleanup: [], disks: [] };
  const exported = new Map(header.objects.map((o) => [o.id, o]));
  const of = (cls: string) => header.objects.filter((o) => o.cls === cls);
  const exportedRecord = (cls: string, id: unknown): Rec | undefined => {
    const o = typeof id === 'string' ? exported.get(id) : undefined;
    return o && o.cls === cls ? recordOf(cls, o.snapshot) : undefined;
  };
  const snapshotLinks: { vm: string; snapshotOf: unknown; parent: unknown }[] = [];
  const { emu } = ctx;
  try {
    // HostHandler: a host is matched by uuid, never created
    for (const o of of('host')) {
      const uuid = asStruct(o.snapshot).uuid;
      const h = typeof uuid === 'string' ? emu.db.refByUuid('host', uuid) : undefined;
      if (h !== undefined) state.table.set(o.id, h);
    }
    // SRHandler: a full import puts every disk in the chosen SR (an ISO SR is not needed); a
    // metadata import finds the SR by uuid
    for (const o of of('SR')) {
      const s = asStruct(o.snapshot);
      if (config.mode.kind === 'full') {
        if (s.content_type !== 'iso') state.table.set(o.id, config.mode.sr);
      } else {
        const found = typeof s.uuid === 'string' ? emu.db.refByUuid('SR', s.uuid) : undefined;
        if (found !== undefined) state.table.set(o.id, found);
      }
    }
    for (const o of of('VDI')) await importVdi(ctx, state, o, config, exportedRecord);
    for (const o of of('VM')) await importVm(ctx, state, o, config, snapshotLinks);
    for (const o of of('network')) await importNetwork(ctx, state, o, config);
    for (const o of of('VBD')) await importVbd(ctx, state, o, config);
    for (const o of of('VIF')) await importVif(ctx, state, o, config);
    // the VMs are held until the import ends, so that nothing starts one whose disks are still
    // coming (marked once their devices exist: VBD.create refuses a VM busy with an operation)
    if (!config.force && !isDryRun(config)) {
      for (const vm of state.createdVms) {
        if (!state.made.has(vm)) continue;
        emu.db.update('VM', vm, { current_operations: { [ctx.task]: 'import' } });
        updateAllowedOperations(emu, 'VM', vm);
      }
    }
    // update_snapshot_and_parent_links: ids inside the archive become the new refs
    for (const l of isDryRun(config) ? [] : snapshotLinks) {
      const changes: Rec = {};
      if (isExportRef(l.snapshotOf)) changes.snapshot_of = lookup(state, l.snapshotOf);
      changes.parent = isExportRef(l.parent) ? (state.table.get(l.parent) ?? NULL_REF) : NULL_REF;
      emu.db.update('VM', l.vm, changes);
    }
    return state;
  } catch (e) {
    if (!config.force) await cleanup(state);
    throw e;
  }
}

/** Runs the cleanup stack, newest first; each step is best effort. */
export async function cleanup(state: ImportState): Promise<void> {
  const steps = state.cleanup.splice(0).reverse();
  for (const step of steps) {
    try {
      await step();
    } catch {
      /* the next steps still run */
    }
  }
}

async function importVdi(
  ctx: ImportCtx,
  state: ImportState,
  o: ImportObject,
  config: ImportConfig,
  exportedRecord: (cls: string, id: unknown) => Rec | undefined,
): Promise<void> {
  const { emu } = ctx;
  const rec = recordOf('VDI', o.snapshot);
  const originalSr = exportedRecord('SR', rec.SR);
  if (originalSr?.content_type === 'iso') {
    // best effort: an ISO of the same location in an ISO library of this pool, else the CD is ejected
    for (const [ref, row] of emu.db.table('VDI')) {
      const sr = emu.db.get('SR', String(row.rec.SR));
      if (row.rec.location === rec.location && sr?.content_type === 'iso' && sr.type !== 'udev') {
        state.table.set(o.id, ref);
        return;
      }
    }
    return;
  }
  if (config.mode.kind === 'metadata') return findVdi(ctx, state, o, rec, config, config.mode.vdiMap);
  const sr = lookup(state, rec.SR);
  const smConfig = { ...(rec.sm_config as Record<string, string>) };
  delete smConfig['vhd-parent'];
  smConfig[IMPORT_TASK] = ctx.task;
  const vdi = (await call(ctx, 'VDI.create', [{ ...rec, SR: sr, sm_config: smConfig, VBDs: [] }])) as string;
  importMade(emu, ctx.task, 'VDI', vdi);
  state.cleanup.push(async () => {
    await call(ctx, 'VDI.destroy', [vdi]);
  });
  state.table.set(o.id, vdi);
  state.disks.push({ id: o.id, vdi, size: Number(rec.virtual_size) });
}

async function importVm(
  ctx: ImportCtx,
  state: ImportState,
  o: ImportObject,
  config: ImportConfig,
  links: { vm: string; snapshotOf: unknown; parent: unknown }[],
): Promise<void> {
  const { emu } = ctx;
  let rec = recordOf('VM', o.snapshot);
  const oc0 = rec.other_config as Record<string, string>;
  const isDefaultTemplate = rec.is_default_template === true || (rec.is_a_template === true && oc0[DEFAULT_TEMPLATE] === 'true');
  if (isDefaultTemplate) {
    // a default template is never duplicated: the one of the same name stands for it
    for (const [ref, row] of emu.db.table('VM')) {
      if (row.rec.name_label === rec.name_label) {
        state.table.set(o.id, ref);
        state.createdVms.push(ref);
        return;
      }
    }
  }
  if (config.fullRestore) {
    const existing = emu.db.refByUuid('VM', String(rec.uuid));
    if (existing !== undefined) {
      const ex = emu.db.get('VM', existing)!;
      if (ex.power_state !== 'Halted') {
        if (config.force) return; // skipped
        throw new XapiError('VM_BAD_POWER_STATE', [existing, 'halted', String(ex.power_state).toLowerCase()]);
      }
      if (Number(ex.version) >= Number(rec.version) && !config.force) {
        throw new XapiError('VM_TO_IMPORT_IS_NOT_NEWER_VERSION', [existing, String(ex.version), String(rec.version)]);
      }
      // Replace: the VM gives way (with its devices, not its disks)
      if (!isDryRun(config)) await call(ctx, 'VM.destroy', [existing]);
    }
  } else if (!config.force) {
    const oc = { ...oc0 };
    delete oc[DEFAULT_TEMPLATE];
    rec = { ...rec, is_default_template: false, other_config: oc };
  }
  const otherConfig = { ...(rec.other_config as Record<string, string>) };
  delete otherConfig[GRANT_API_ACCESS];
  // a fresh MAC seed unless restoring
  if (!config.fullRestore) otherConfig[MAC_SEED] = uuidv4();
  otherConfig[IMPORT_TASK] = ctx.task;
  let haPriority = rec.ha_restart_priority as string;
  let order = rec.order;
  if (['0', '1', '2', '3'].includes(haPriority)) {
    order = Number(haPriority);
    haPriority = 'restart';
  }
  const value: Rec = {
    ...rec,
    other_config: otherConfig,
    // a fresh generation id for an ordinary VM (templates are not started)
    generation_id: rec.is_a_template === true ? rec.generation_id : freshGenid(String(rec.generation_id)),
    version: config.fullRestore ? Number(rec.version) + 1 : 0,
    appliance: NULL_REF,
    protection_policy: NULL_REF,
    ha_restart_priority: haPriority,
    order,
    suspend_VDI: NULL_REF,
    power_state: 'Halted',
    affinity: NULL_REF,
    VBDs: [],
    VIFs: [],
  };
  if (isDryRun(config)) {
    state.table.set(o.id, dummyRef());
    return;
  }
  const vm = (await call(ctx, 'VM.create', [value])) as string;
  importMade(emu, ctx.task, 'VM', vm);
  state.cleanup.push(async () => {
    emu.db.update('VM', vm, { current_operations: {}, power_state: 'Halted', suspend_VDI: NULL_REF });
    await call(ctx, 'VM.destroy', [vm]);
  });
  const changes: Rec = {
    last_booted_record: rec.last_booted_record,
    last_boot_CPU_flags: rec.last_boot_CPU_flags,
    is_control_domain: rec.is_control_domain,
    affinity: (isExportRef(rec.affinity) && state.table.get(rec.affinity)) || NULL_REF,
    is_a_snapshot: rec.is_a_snapshot,
    snapshot_info: rec.snapshot_info,
    snapshot_time: rec.snapshot_time,
    transportable_snapshot_id: rec.transportable_snapshot_id,
    bios_strings: rec.bios_strings,
    power_state: 'Halted',
  };
  if (config.fullRestore) changes.uuid = rec.uuid;
  if (!emu.db.has('SR', String(rec.suspend_SR))) changes.suspend_SR = NULL_REF;
  if (rec.power_state === 'Suspended') {
    // a suspended VM keeps its state when its suspend image came along (else only if forced)
    const image = isExportRef(rec.suspend_VDI) ? state.table.get(rec.suspend_VDI) : undefined;
    if (image !== undefined) Object.assign(changes, { power_state: 'Suspended', suspend_VDI: image });
    else if (!config.force) throw new XapiError('IMPORT_ERROR_FAILED_TO_FIND_OBJECT', [String(rec.suspend_VDI)]);
  }
  emu.db.update('VM', vm, changes);
  updateAllowedOperations(emu, 'VM', vm);
  links.push({ vm, snapshotOf: rec.snapshot_of, parent: rec.parent });
  state.table.set(o.id, vm);
  state.createdVms.push(vm);
  state.made.add(vm);
}

/** Net: matched by name_label, then by bridge; else made. */
async function importNetwork(ctx: ImportCtx, state: ImportState, o: ImportObject, config: ImportConfig): Promise<void> {
  const { emu } = ctx;
  const rec = recordOf('network', o.snapshot);
  let found: string | undefined;
  for (const [ref, row] of emu.db.table('network')) {
    if (row.rec.name_label === rec.name_label) {
      found = ref;
      break;
    }
  }
  if (found === undefined) {
    for (const [ref, row] of emu.db.table('network')) {
      if (row.rec.bridge === rec.bridge) {
        found = ref;
        break;
      }
    }
  }
  if (found !== undefined) {
    state.table.set(o.id, found);
    return;
  }
  if (isDryRun(config)) {
    state.table.set(o.id, dummyRef());
    return;
  }
  const oc = { ...(rec.other_config as Record<string, string>), [IMPORT_TASK]: ctx.task };
  const net = (await call(ctx, 'network.create', [{ ...rec, other_config: oc }])) as string;
  importMade(emu, ctx.task, 'network', net);
  state.cleanup.push(async () => {
    await call(ctx, 'network.destroy', [net]);
  });
  state.table.set(o.id, net);
}

async function importVbd(ctx: ImportCtx, state: ImportState, o: ImportObject, config: ImportConfig): Promise<void> {
  const { emu } = ctx;
  const rec = recordOf('VBD', o.snapshot);
  const vmId = rec.VM;
  if (!isExportRef(vmId) || !state.table.has(vmId)) {
    // the VM was skipped (a forced restore over a running VM): so are its devices
    if (config.force) return;
  }
  const vm = lookup(state, vmId);
  const hasVdi = isExportRef(rec.VDI) && state.table.has(rec.VDI);
  let value: Rec;
  if (!hasVdi) {
    if (rec.type === 'Disk') return; // a disk without its VDI is left out
    value = { ...rec, VDI: NULL_REF, empty: true };
  } else value = { ...rec, VDI: lookup(state, rec.VDI) };
  if (isDryRun(config)) {
    state.table.set(o.id, dummyRef());
    return;
  }
  const vbd = (await call(ctx, 'VBD.create', [{ ...value, VM: vm, device: '', currently_attached: false }])) as string;
  state.cleanup.push(async () => {
    await call(ctx, 'VBD.destroy', [vbd]);
  });
  if (config.fullRestore && !emu.db.refByUuid('VBD', String(rec.uuid))) emu.db.update('VBD', vbd, { uuid: rec.uuid });
  state.table.set(o.id, vbd);
}

async function importVif(ctx: ImportCtx, state: ImportState, o: ImportObject, config: ImportConfig): Promise<void> {
  const { emu } = ctx;
  const rec = recordOf('VIF', o.snapshot);
  if (config.fullRestore) {
    const existing = emu.db.refByUuid('VIF', String(rec.uuid));
    if (existing !== undefined) {
      state.table.set(o.id, existing);
      return;
    }
  }
  if ((!isExportRef(rec.VM) || !state.table.has(rec.VM)) && config.force) return;
  const vm = lookup(state, rec.VM);
  const network = lookup(state, rec.network);
  // not restoring: the MAC is blanked, so that a new one is made
  const value = { ...rec, VM: vm, network, MAC: config.fullRestore ? rec.MAC : '', currently_attached: false };
  if (isDryRun(config)) {
    state.table.set(o.id, dummyRef());
    return;
  }
  const vif = (await call(ctx, 'VIF.create', [value])) as string;
  state.cleanup.push(async () => {
    await call(ctx, 'VIF.destroy', [vif]);
  });
  if (config.fullRestore) emu.db.update('VIF', vif, { uuid: rec.uuid });
  state.table.set(o.id, vif);
}

/** Import.complete_import: the VMs lose their `import` operation; the task's result is the VMs
 * (the non-snapshots, or all of them when only snapshots came). */
export function completeImport(emu: Emulator, task: string, vms: string[]): string[] {
  const unique = [...new Set(vms)];
  for (const vm of unique) {
    const rec = emu.db.get('VM', vm);
    if (!rec) continue;
    const ops = { ...(rec.current_operations as Record<string, string>) };
    delete ops[task];
    emu.db.update('VM', vm, { current_operations: ops });
    updateAllowedOperations(emu, 'VM', vm);
  }
  const nonSnapshots = unique.filter((vm) => emu.db.get('VM', vm)?.is_a_snapshot !== true);
  return nonSnapshots.length ? nonSnapshots : unique;
}

/** VDI (Metadata_import): the disk exists already. Found through the VDI map (the source's uuid, or
 * its sm_config SCSIid, to a destination uuid or SCSIid), else in the SR of the same uuid by
 * location; else the import fails (VDI_LOCATION_MISSING / VDI_CONTENT_ID_MISSING) unless forced,
 * which leaves the disk out. */
function findVdi(ctx: ImportCtx, state: ImportState, o: ImportObject, rec: Rec, config: ImportConfig, vdiMap: Map<string, string>): void {
  const { emu } = ctx;
  const scsiidOf = (r: Rec) => (r.sm_config as Record<string, string> | undefined)?.SCSIid;
  const findBy = (pred: (r: Rec) => boolean): string | undefined => {
    for (const [ref, row] of emu.db.table('VDI')) if (pred(row.rec)) return ref;
    return undefined;
  };
  const scsiid = scsiidOf(rec);
  const destination = vdiMap.get(String(rec.uuid)) ?? (scsiid !== undefined ? vdiMap.get(scsiid) : undefined);
  let found: string | undefined;
  if (destination !== undefined) found = emu.db.refByUuid('VDI', destination) ?? findBy((r) => scsiidOf(r) === destination);
  else if (scsiid !== undefined) found = findBy((r) => scsiidOf(r) === scsiid);
  const sr = isExportRef(rec.SR) ? state.table.get(rec.SR) : undefined;
  if (found === undefined && sr !== undefined) found = findBy((r) => r.SR === sr && r.location === rec.location);
  if (found !== undefined) {
    state.table.set(o.id, found);
    return;
  }
  if (config.force) return;
  if (sr !== undefined) throw new XapiError('VDI_LOCATION_MISSING', [sr, String(rec.location)]);
  throw new XapiError('VDI_CONTENT_ID_MISSING', []);
}
