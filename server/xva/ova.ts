// ova.xml, the metadata of an XVA (xapi's export.ml): one XML-RPC struct with the exporting host's
// version and the exported objects, each {class, id, snapshot}, where `id` is an external ref
// "Ref:<n>" given in the order objects are found, and `snapshot` is the object's record as
// get_record encodes it, with references to objects outside the export made NULL.
import type { Emulator } from '../emulator.js';
import { encodeValue } from '../transport/xmlrpc-codec.js';
import { NULL_REF, type Rec } from '../../storage/database.js';

/** Xapi_globs.export_vsn: inline checksums, no end-of-tar checksum table */
export const EXPORT_VSN = 2;

export interface OvaOptions {
  /** the VM's power state and devices' attachment as they are (else Halted / detached) */
  preservePowerState: boolean;
  /** snapshots of the VMs, with their snapshot fields (export_metadata's export_snapshots) */
  withSnapshotMetadata: boolean;
  /** VDIs' sm_config vhd-parent chains (export_metadata's include_vhd_parents) */
  includeVhdParents: boolean;
  /** device classes left out (excluded_device_types): VIF, VBD, VGPU, VTPM */
  excludedDevices: ReadonlySet<string>;
}

/** internal ref → external id, in the order objects were added (make_id's counter) */
export type ExportTable = Map<string, string>;

const isValid = (emu: Emulator, cls: string, ref: unknown): ref is string =>
  typeof ref === 'string' && ref !== NULL_REF && emu.db.has(cls, ref);

/** Export.update_table: the VM and what it needs, each ref given the next id. */
function addVm(emu: Emulator, table: ExportTable, vm: string, o: OvaOptions, includeSnapshots: boolean): void {
  const add = (ref: unknown) => {
    const r = typeof ref === 'string' ? ref : NULL_REF;
    if (!table.has(r)) table.set(r, `Ref:${table.size}`);
  };
  const addVdi = (vdi: string) => {
    add(vdi);
    const rec = emu.db.get('VDI', vdi)!;
    add(rec.SR);
    if (!o.includeVhdParents) return;
    const parentUuid = (rec.sm_config as Record<string, string>)['vhd-parent'];
    const parent = parentUuid === undefined ? undefined : emu.db.refByUuid('VDI', parentUuid);
    if (parent !== undefined && !table.has(parent)) addVdi(parent);
  };
  if (!isValid(emu, 'VM', vm) || table.has(vm)) return;
  add(vm);
  const rec = emu.db.get('VM', vm)!;
  if (!o.excludedDevices.has('VIF')) {
    for (const vif of rec.VIFs as string[]) {
      if (!isValid(emu, 'VIF', vif)) continue;
      add(vif);
      add(emu.db.get('VIF', vif)!.network);
    }
  }
  if (!o.excludedDevices.has('VBD')) {
    for (const vbd of rec.VBDs as string[]) {
      if (!isValid(emu, 'VBD', vbd)) continue;
      add(vbd);
      const b = emu.db.get('VBD', vbd)!;
      if (b.empty !== true && isValid(emu, 'VDI', b.VDI)) addVdi(b.VDI);
    }
  }
  if (includeSnapshots) for (const snap of rec.snapshots as string[]) addVm(emu, table, snap, o, false);
  if (o.preservePowerState && rec.power_state === 'Suspended' && isValid(emu, 'VDI', rec.suspend_VDI)) addVdi(rec.suspend_VDI);
  add(rec.metrics);
  add(rec.guest_metrics);
  add(rec.resident_on);
  add(rec.affinity);
  if (includeSnapshots && isValid(emu, 'VM', rec.parent)) addVm(emu, table, rec.parent, o, false);
}

/** The classes written, in make_all's order, each with how its record is trimmed. */
type Trim = (rec: Rec, lookup: (r: unknown) => string, filter: (rs: unknown) => string[], o: OvaOptions) => Rec;
const CLASSES: [string, Trim][] = [
  [
    'host',
    (h, lookup, filter) => ({
      ...h,
      PIFs: [], PBDs: [], PGPUs: [], PCIs: [], host_CPUs: [], license_params: {}, blobs: {},
      external_auth_type: '', external_auth_service_name: '', external_auth_configuration: {},
      metrics: NULL_REF, patches: [], crashdumps: [], logging: {}, supported_bootloaders: [],
      cpu_configuration: {}, other_config: {}, capabilities: [], software_version: {}, sched_policy: '',
      ha_statefiles: [], ha_network_peers: [], tags: [],
      crash_dump_sr: lookup(h.crash_dump_sr), suspend_image_sr: lookup(h.suspend_image_sr),
      resident_VMs: filter(h.resident_VMs),
    }),
  ],
  [
    'VM',
    (vm, lookup, filter, o) => {
      const snap = o.withSnapshotMetadata;
      return {
        ...vm,
        power_state: o.preservePowerState ? vm.power_state : 'Halted',
        suspend_VDI: o.preservePowerState ? lookup(vm.suspend_VDI) : NULL_REF,
        is_a_snapshot: snap ? vm.is_a_snapshot : false,
        snapshot_of: snap ? lookup(vm.snapshot_of) : NULL_REF,
        // (the snapshots' internal refs, as xapi writes them: the importer ignores this field)
        snapshots: snap ? vm.snapshots : [],
        snapshot_time: snap ? vm.snapshot_time : '19700101T00:00:00Z',
        transportable_snapshot_id: snap ? vm.transportable_snapshot_id : '',
        parent: snap ? lookup(vm.parent) : NULL_REF,
        current_operations: {},
        allowed_operations: [],
        VIFs: filter(vm.VIFs),
        VBDs: filter(vm.VBDs),
        VGPUs: filter(vm.VGPUs),
        crash_dumps: [],
        VTPMs: filter(vm.VTPMs),
        resident_on: lookup(vm.resident_on),
        affinity: lookup(vm.affinity),
        consoles: [],
        metrics: lookup(vm.metrics),
        guest_metrics: lookup(vm.guest_metrics),
        protection_policy: NULL_REF,
        blobs: {},
      };
    },
  ],
  ['VM_metrics', (r) => r],
  ['VM_guest_metrics', (r) => r],
  [
    'VBD',
    (b, lookup, _f, o) => ({
      ...b,
      currently_attached: o.preservePowerState ? b.currently_attached : false,
      VDI: lookup(b.VDI),
      VM: lookup(b.VM),
      metrics: NULL_REF,
      current_operations: {},
      allowed_operations: [],
    }),
  ],
  [
    'VIF',
    (v, lookup, _f, o) => ({
      ...v,
      currently_attached: o.preservePowerState ? v.currently_attached : false,
      network: lookup(v.network),
      VM: lookup(v.VM),
      metrics: NULL_REF,
      current_operations: {},
      allowed_operations: [],
    }),
  ],
  ['network', (n, _l, filter) => ({ ...n, VIFs: filter(n.VIFs), PIFs: [], current_operations: {}, allowed_operations: [] })],
  [
    'VDI',
    (d, lookup, filter) => ({ ...d, VBDs: filter(d.VBDs), crash_dumps: [], SR: lookup(d.SR), current_operations: {}, allowed_operations: [] }),
  ],
  ['SR', (s, _l, filter) => ({ ...s, VDIs: filter(s.VDIs), PBDs: [], current_operations: {}, allowed_operations: [] })],
];

const str = (s: string) => `<value>${s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</value>`;
const member = (name: string, value: string) => `<member><name>${name}</name>${value}</member>`;
const int = (n: number) => `<value><i4>${n}</i4></value>`;

/** Importexport.this_version: the receiving host's software version. */
function versionXml(emu: Emulator, host: string): string {
  const sv = (emu.db.get('host', host)?.software_version ?? {}) as Record<string, string>;
  const [major, minor] = (sv.xapi_build ?? sv.xapi ?? '0.0').split('.').map((x) => Number.parseInt(x, 10) || 0);
  return (
    '<value><struct>' +
    member('hostname', str(sv.hostname ?? '')) +
    member('date', str(sv.date ?? '')) +
    member('product_version', str(sv.product_version ?? '')) +
    member('product_brand', str(sv.product_brand ?? '')) +
    member('build_number', str(sv.build_number ?? '')) +
    member('xapi_major', int(major ?? 0)) +
    member('xapi_minor', int(minor ?? 0)) +
    member('export_vsn', int(EXPORT_VSN)) +
    '</struct></value>'
  );
}

/** Export.vm_metadata: the table of exported objects and ova.xml. */
export function vmMetadata(emu: Emulator, host: string, vms: string[], o: OvaOptions): { table: ExportTable; xml: string } {
  const table: ExportTable = new Map();
  for (const vm of vms) addVm(emu, table, vm, o, o.withSnapshotMetadata);
  const lookup = (r: unknown) => (typeof r === 'string' ? table.get(r) : undefined) ?? NULL_REF;
  const filter = (rs: unknown) => ((rs as string[] | undefined) ?? []).map(lookup).filter((x) => x !== NULL_REF);
  let objects = '';
  for (const [cls, trim] of CLASSES) {
    for (const [ref, row] of emu.db.table(cls)) {
      const id = table.get(ref);
      if (id === undefined) continue;
      const snapshot = encodeValue(trim(row.rec, lookup, filter, o), { k: 'record', class: cls });
      objects += '<value><struct>' + member('class', str(cls)) + member('id', str(id)) + member('snapshot', snapshot) + '</struct></value>';
    }
  }
  const xml =
    '<value><struct>' + member('version', versionXml(emu, host)) + member('objects', `<value><array><data>${objects}</data></array></value>`) + '</struct></value>';
  return { table, xml };
}
