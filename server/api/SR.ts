// SR: custom messages (xapi_sr.ml, the SR part of message_forwarding.ml) and the SR's
// allowed_operations (xapi_sr_operations.ml). The storage work is done by server/sm.
import { registerProvider, type Call } from '../dispatch/registry.js';
import { recordOf } from './generic.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { NULL_REF } from '../../storage/database.js';
import { currentOperations, ocamlVariantHash, registerOperations, updateAllowedOperations, withOperation } from './operations.js';
import { featuresOf, smOf } from '../sm/capabilities.js';
import { choosePbd, driverOf, smSrAttach, smSrCreate, smSrDelete, smSrDetach, smSrProbe, smSrScan, smSrUpdate, srCtx } from '../sm/sm.js';
import { createPbd, plugPbd } from './PBD.js';
import { srDataSources } from '../rrdd/data-sources.js';

// ---- allowed_operations (Xapi_sr_operations.valid_operations) ----

const ALL_OPS = [
  'scan', 'destroy', 'forget', 'plug', 'unplug', 'vdi_create', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot',
  'vdi_mirror', 'vdi_enable_cbt', 'vdi_disable_cbt', 'vdi_data_destroy', 'vdi_list_changed_blocks', 'vdi_set_on_boot',
  'vdi_introduce', 'vdi_revert', 'update', 'pbd_create', 'pbd_destroy',
] as const;

/** operations an SM capability gates (sm_cap_table; clone is "faked" by xapi, so not gated) */
const SM_CAP: Record<string, string> = {
  vdi_create: 'VDI_CREATE', vdi_destroy: 'VDI_DELETE', vdi_resize: 'VDI_RESIZE', vdi_introduce: 'VDI_INTRODUCE',
  vdi_mirror: 'VDI_MIRROR', vdi_enable_cbt: 'VDI_CONFIG_CBT', vdi_disable_cbt: 'VDI_CONFIG_CBT',
  vdi_data_destroy: 'VDI_CONFIG_CBT', vdi_list_changed_blocks: 'VDI_CONFIG_CBT', vdi_set_on_boot: 'VDI_RESET_ON_BOOT',
  update: 'SR_UPDATE', vdi_revert: 'VDI_REVERT', vdi_snapshot: 'VDI_SNAPSHOT',
};

const hasOwn = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

function srCheck(emu: Emulator, ref: string, rec: Rec, op: string): XapiError | null {
  if (!(ALL_OPS as readonly string[]).includes(op)) return null;
  // check_sm_features (the tools SR offers no VDI create/delete)
  const cap = SM_CAP[op];
  if (cap) {
    const f = featuresOf(emu, String(rec.type));
    const blocked = rec.is_tools_sr === true && (cap === 'VDI_CREATE' || cap === 'VDI_DELETE');
    if (!hasOwn(f, cap) || blocked) return new XapiError('SR_OPERATION_NOT_SUPPORTED', [ref]);
  }
  const pbds = rec.PBDs as string[];
  // check_any_attached_pbds (CA-70294)
  if ((op === 'destroy' || op === 'forget') && pbds.some((p) => emu.db.get('PBD', p)?.currently_attached === true)) {
    return new XapiError('SR_HAS_PBD', [ref]);
  }
  if (op === 'destroy') {
    if (pbds.length === 0) return new XapiError('SR_HAS_NO_PBDS', [ref]);
    const managed = (rec.VDIs as string[]).some((v) => {
      const r = emu.db.get('VDI', v);
      return r?.managed === true && r.type !== 'rrd';
    });
    if (managed) return new XapiError('SR_NOT_EMPTY', []);
  }
  // check_parallel_ops: only plug runs alongside plug
  const ops = currentOperations(rec).sort(([, a], [, b]) => ocamlVariantHash(a) - ocamlVariantHash(b));
  if (ops.length) {
    if (op !== 'plug') return new XapiError('OTHER_OPERATION_IN_PROGRESS', ['SR', ref, ops[0][1], ops[0][0]]);
    const other = ops.find(([, o]) => o !== 'plug');
    if (other) return new XapiError('OTHER_OPERATION_IN_PROGRESS', ['SR', ref, other[1], other[0]]);
  }
  return null;
}

registerOperations('SR', { allOps: ALL_OPS, check: (emu, ref, rec, op) => srCheck(emu, ref, rec, op) });

// ---- helpers ----

function srRec(call: Call, sr: string): Rec {
  return recordOf(call.emu, 'SR', sr);
}

/** Sm.assert_session_has_internal_sr_access: only the sessions SM plugins get may call these. */
export function assertSmSession(call: Call, sr: string): void {
  const oc = (call.emu.db.get('session', call.session)?.other_config ?? {}) as Record<string, string>;
  if (oc._sm_session !== sr) throw new XapiError('PERMISSION_DENIED', ['']);
}

/** SR.introduce: the record only (xapi_sr.introduce). */
export function introduceSr(emu: Emulator, a: { uuid: string; name_label: string; name_description: string; type: string; content_type: string; shared: boolean; sm_config: Record<string, string> }): string {
  const uuid = a.uuid === '' ? emu.ids.uuid() : a.uuid;
  if (emu.db.refByUuid('SR', uuid)) throw new XapiError('SR_UUID_EXISTS', [uuid]);
  const ref = emu.ids.ref();
  emu.db.create('SR', ref, {
    uuid, name_label: a.name_label, name_description: a.name_description, allowed_operations: [], current_operations: {},
    virtual_allocation: 0, physical_utilisation: -1, physical_size: -1, content_type: a.content_type,
    type: a.type.toLowerCase(), shared: a.shared, other_config: {}, default_vdi_visibility: true, sm_config: a.sm_config,
    blobs: {}, tags: [], local_cache_enabled: false, introduced_by: NULL_REF, clustered: false, is_tools_sr: false,
  });
  updateAllowedOperations(emu, 'SR', ref);
  return ref;
}

/** Xapi_sr.really_forget: the SR's PBDs, VDIs and itself leave the database. */
function reallyForget(emu: Emulator, sr: string): void {
  const rec = emu.db.get('SR', sr)!;
  for (const p of [...(rec.PBDs as string[])]) emu.db.destroy('PBD', p);
  for (const v of [...(rec.VDIs as string[])]) emu.db.destroy('VDI', v);
  emu.db.destroy('SR', sr);
}

function assertAllPbdsUnplugged(emu: Emulator, sr: string): void {
  const rec = emu.db.get('SR', sr)!;
  if ((rec.PBDs as string[]).some((p) => emu.db.get('PBD', p)?.currently_attached === true)) throw new XapiError('SR_HAS_PBD', [sr]);
}

// ---- HA statefile and metadata replication (xha_statefile.ml, xapi_sr.ml) ----

const MiB = 1024 * 1024;
/** Xha_statefile.minimum_statefile_size: a global section and one per host, for 64 hosts */
const MINIMUM_STATEFILE_SIZE = 4096 + 64 * 4096;
/** Redo_log.minimum_vdi_size: 4 GB in 4 MiB units, less two */
const REDO_LOG_MINIMUM_SIZE = (Math.floor(4_000_000_000 / (4 * MiB)) - 2) * 4 * MiB;
const roundTo = (align: number, n: number) => Math.ceil(n / align) * align;
/** Xha_statefile.minimum_sr_size */
const MINIMUM_SR_SIZE = roundTo(4 * MiB, MINIMUM_STATEFILE_SIZE) + roundTo(4 * MiB, REDO_LOG_MINIMUM_SIZE);

/** Every host has a PBD to the SR, and each is plugged (else SR_NO_PBDS). */
function assertPluggedOnEveryHost(emu: Emulator, sr: string, rec: Rec): void {
  const pbds = rec.PBDs as string[];
  const connected = new Set(pbds.map((p) => String(emu.db.get('PBD', p)?.host)));
  if (emu.hosts.some((h) => !connected.has(h))) throw new XapiError('SR_NO_PBDS', [sr]);
  if (pbds.some((p) => emu.db.get('PBD', p)?.currently_attached !== true)) throw new XapiError('SR_NO_PBDS', [sr]);
}

/** Xha_statefile.ha_fits_sr: a VDI of that type and size to reuse, or room for a new one. */
function haFitsSr(emu: Emulator, sr: string, rec: Rec, type: string, minimum: number): void {
  if ((rec.VDIs as string[]).some((v) => emu.db.get('VDI', v)?.type === type && Number(emu.db.get('VDI', v)?.virtual_size) >= minimum)) return;
  if (Number(rec.physical_size) - Number(rec.physical_utilisation) < MINIMUM_SR_SIZE) throw new XapiError('SR_SOURCE_SPACE_INSUFFICIENT', [sr]);
}

/** Xha_statefile.assert_sr_can_host_statefile (with the xhad cluster stack). */
export function assertSrCanHostStatefile(emu: Emulator, sr: string): void {
  const rec = recordOf(emu, 'SR', sr);
  assertPluggedOnEveryHost(emu, sr, rec);
  const f = featuresOf(emu, String(rec.type));
  if (!smOf(emu, String(rec.type))) throw new XapiError('INTERNAL_ERROR', [`SR does not have corresponding SM record: ${sr} ${String(rec.type)}`]);
  if (!hasOwn(f, 'VDI_GENERATE_CONFIG') && !hasOwn(f, 'VDI_ATTACH_OFFLINE')) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [sr]);
  haFitsSr(emu, sr, rec, 'ha_statefile', MINIMUM_STATEFILE_SIZE);
  haFitsSr(emu, sr, rec, 'redo_log', REDO_LOG_MINIMUM_SIZE);
}

registerProvider('SR', {
  assert_can_host_ha_statefile(call: Call, sr: string) {
    assertSrCanHostStatefile(call.emu, sr);
  },
  assert_supports_database_replication(call: Call, sr: string) {
    const { emu } = call;
    const rec = srRec(call, sr);
    assertPluggedOnEveryHost(emu, sr, rec);
    if (!smOf(emu, String(rec.type))) throw new XapiError('INTERNAL_ERROR', [`SR does not have corresponding SM record: ${sr} ${String(rec.type)}`]);
    if (!hasOwn(featuresOf(emu, String(rec.type)), 'SR_METADATA')) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [sr]);
  },
  /** Xapi_vm_helpers.possible_hosts with assert_can_see_specified_SRs: live hosts with the SR plugged */
  get_live_hosts(call: Call, sr: string) {
    const { emu } = call;
    const rec = srRec(call, sr);
    const plugged = new Set((rec.PBDs as string[]).filter((p) => emu.db.get('PBD', p)?.currently_attached === true).map((p) => String(emu.db.get('PBD', p)!.host)));
    return emu.hosts.filter((h) => {
      const m = emu.db.get('host', h)?.metrics;
      return plugged.has(h) && emu.db.get('host_metrics', String(m))?.live === true;
    });
  },
});

// SR data sources come from SR plugins in xcp-rrdd; none reports here (server/rrdd/)
registerProvider('SR', {
  get_data_sources(call: Call, sr: string) {
    if (!call.emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
    return srDataSources.get();
  },
  record_data_source(call: Call, sr: string, name: string) {
    if (!call.emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
    srDataSources.record(call.emu, sr, name);
  },
  query_data_source(call: Call, sr: string, name: string) {
    if (!call.emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
    return srDataSources.query(call.emu, sr, name);
  },
  forget_data_source_archives(call: Call, sr: string, _name: string) {
    if (!call.emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
    srDataSources.forget();
  },
});

// ---- messages ----

registerProvider('SR', {
  async create(call, host: string, device_config: Record<string, string>, physical_size: number, name_label: string,
    name_description: string, type: string, content_type: string, shared: boolean, sm_config: Record<string, string>) {
    const { emu } = call;
    if (hasOwn(device_config, 'SRmaster')) {
      throw new XapiError('VALUE_NOT_SUPPORTED', ['SRmaster', device_config.SRmaster, 'This key is for internal use only']);
    }
    const sr = introduceSr(emu, { uuid: '', name_label, name_description, type, content_type, shared, sm_config });
    // a shared SR gets a PBD on every host (the master's first), else one on `host`
    const hosts = shared ? emu.hosts : [host];
    const pbds = hosts.map((h) => createPbd(emu, sr, h, device_config));
    try {
      if (!smOf(emu, type)) throw new XapiError('SR_UNKNOWN_DRIVER', [type.toLowerCase()]);
      driverOf(emu, sr);
      await smSrCreate(srCtx(emu, sr, pbds[0]), physical_size);
    } catch (e) {
      emu.db.destroy('SR', sr);
      for (const p of pbds) emu.db.destroy('PBD', p);
      throw e;
    }
    // then every PBD is plugged (a failing plug leaves its PBD unplugged: SR.create still succeeds)
    for (const p of pbds) await plugPbd(call, p).catch(() => undefined);
    return sr;
  },

  introduce(call, uuid: string, name_label: string, name_description: string, type: string, content_type: string, shared: boolean, sm_config: Record<string, string>) {
    return introduceSr(call.emu, { uuid, name_label, name_description, type, content_type, shared, sm_config });
  },

  make() {
    throw new XapiError('MESSAGE_DEPRECATED', []);
  },

  async destroy(call, sr: string) {
    const { emu } = call;
    await withOperation(call, 'SR', sr, 'destroy', async () => {
      assertAllPbdsUnplugged(emu, sr);
      const oc = srRec(call, sr).other_config as Record<string, string>;
      if (oc.indestructible === 'true') throw new XapiError('SR_INDESTRUCTIBLE', [sr]);
      for (const h of emu.hosts) if (emu.db.get('host', h)?.local_cache_sr === sr) throw new XapiError('SR_IS_CACHE_SR', [h]);
      // Storage_access.destroy_sr: attach through the PBD, marked attached meanwhile, then sr_delete
      const pbd = choosePbd(emu, sr, true);
      const ctx = srCtx(emu, sr, pbd);
      await smSrAttach(ctx);
      emu.db.update('PBD', pbd, { currently_attached: true });
      try {
        await smSrDelete(ctx);
      } catch (e) {
        await smSrDetach(ctx).catch(() => undefined);
        throw e;
      } finally {
        if (emu.db.has('PBD', pbd)) emu.db.update('PBD', pbd, { currently_attached: false });
      }
      reallyForget(emu, sr);
    });
  },

  async forget(call, sr: string) {
    await withOperation(call, 'SR', sr, 'forget', () => {
      assertAllPbdsUnplugged(call.emu, sr);
      reallyForget(call.emu, sr);
    });
  },

  async update(call, sr: string) {
    // lock free (CA-27630): no marking
    await smSrUpdate(srCtx(call.emu, sr));
  },

  get_supported_types(call) {
    return [...call.emu.db.table('SM').values()].map((r) => String(r.rec.type));
  },

  async scan(call, sr: string) {
    await withOperation(call, 'SR', sr, 'scan', () => smSrScan(srCtx(call.emu, sr)));
  },

  probe(call, _host: string, device_config: Record<string, string>, type: string, sm_config: Record<string, string>) {
    return smSrProbe(call.emu, type, device_config, sm_config);
  },

  probe_ext(call, _host: string, _device_config: Record<string, string>, type: string) {
    // SMAPIv1 plugins answer probes with raw XML, which probe_ext refuses
    if (!smOf(call.emu, type)) throw new XapiError('SR_UNKNOWN_DRIVER', [type.toLowerCase()]);
    throw new XapiError('SR_OPERATION_NOT_SUPPORTED', []);
  },

  set_shared(call, sr: string, value: boolean) {
    const rec = srRec(call, sr);
    if (!value && (rec.PBDs as string[]).length > 1) throw new XapiError('SR_HAS_MULTIPLE_PBDS', rec.PBDs as string[]);
    call.emu.db.update('SR', sr, { shared: value });
  },

  // forwarded to a host with the SR attached, then passed to the SM backend (which stores it)
  set_name_label(call, sr: string, value: string) {
    choosePbd(call.emu, sr);
    call.emu.db.update('SR', sr, { name_label: value });
  },
  set_name_description(call, sr: string, value: string) {
    choosePbd(call.emu, sr);
    call.emu.db.update('SR', sr, { name_description: value });
  },

  // SM's own setters
  set_physical_size(call, sr: string, value: number) {
    assertSmSession(call, sr);
    call.emu.db.update('SR', sr, { physical_size: value });
  },
  set_virtual_allocation(call, sr: string, value: number) {
    assertSmSession(call, sr);
    call.emu.db.update('SR', sr, { virtual_allocation: value });
  },
  set_physical_utilisation(call, sr: string, value: number) {
    assertSmSession(call, sr);
    call.emu.db.update('SR', sr, { physical_utilisation: value });
  },
});
