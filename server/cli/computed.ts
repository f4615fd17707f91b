// Fields of xapi's CLI records that are not a field of the object's API record: xapi computes
// them with further API calls, and so do we (the calls go through the API, so a message that is
// not implemented fails the field as it would fail a client).
import { XapiError } from '../dispatch/errors.js';
import type { CliField } from './record-spec.js';
import { NOT_IN_DATABASE, uuidOfRef, type RecordIo } from './records.js';

type Rec = { [field: string]: unknown };

/** A computed value: its printed text, and members for a set or map field. */
export interface Computed {
  text: string;
  members?: string[];
  entries?: [string, string][];
}

type Compute = (io: RecordIo, ref: string, rec: Rec) => Promise<Computed>;

const set = (xs: string[], sep = '; '): Computed => ({ text: xs.join(sep), members: xs });
const map = (m: Rec): Computed => {
  const entries = Object.entries(m).map(([k, v]) => [k, String(v)] as [string, string]);
  return { text: entries.map(([k, v]) => `${k}: ${v}`).join('; '), entries };
};

/** By `<records.ml record>.<CLI field>`. */
const COMPUTED: { [key: string]: Compute } = {
  // the host of an SR's only PBD, "<shared>" with several
  'sr.host': async (io, _ref, rec) => {
    const pbds = (rec.PBDs as string[]) ?? [];
    if (pbds.length > 1) return { text: '<shared>' };
    if (pbds.length === 0) return { text: NOT_IN_DATABASE };
    const host = (await io.call('PBD.get_host', pbds[0])) as string;
    const name = io.emu.db.get('host', host)?.name_label;
    return { text: typeof name === 'string' ? name : NOT_IN_DATABASE };
  },
  'vm.possible-hosts': async (io, ref) => set(((await io.call('VM.get_possible_hosts', ref)) as string[]).map((h) => uuidOfRef(io.emu, h))),
  // a failure shows as no device, as in xapi
  'vm.allowed-VBD-devices': async (io, ref) => set(((await io.call('VM.get_allowed_VBD_devices', ref).catch(() => [])) as string[])),
  'vm.allowed-VIF-devices': async (io, ref) => set(((await io.call('VM.get_allowed_VIF_devices', ref).catch(() => [])) as string[])),
  'vm.cooperative': async (io, ref) => ({ text: String(await io.call('VM.get_cooperative', ref).catch(() => true)) }),
  'vbd.attachable': async (io, ref) => {
    try {
      await io.call('VBD.assert_attachable', ref);
      return { text: 'true' };
    } catch (e) {
      const d = e instanceof XapiError ? `Server_error(${e.code}, [ ${e.params.map((p) => `${p}; `).join('')}])` : String(e);
      return { text: `false (error: ${d})` };
    }
  },
  // xapi shows 0 for a VM that is not running, and "<unknown>" for any other failure
  'vm.memory-target': async (io, ref) => {
    try {
      return { text: String(Math.trunc((await io.call('VM.query_data_source', ref, 'memory_target')) as number)) };
    } catch (e) {
      return { text: e instanceof XapiError && e.code === 'VM_BAD_POWER_STATE' ? '0' : '<unknown>' };
    }
  },
  // one data source per vCPU; any failure shows as nothing, as in xapi
  'vm.VCPUs-utilisation': async (io, ref, rec) => {
    try {
      const metrics = (await io.call('VM_metrics.get_record', rec.metrics)) as Rec;
      const out: Rec = {};
      for (let i = 0; i < Number(metrics.VCPUs_number ?? 0); i++) out[String(i)] = ((await io.call('VM.query_data_source', ref, `cpu${i}`)) as number).toFixed(3);
      return map(out);
    } catch {
      return { text: '', entries: [] };
    }
  },
  'host.patches': async (io, _ref, rec) => {
    const uuids: string[] = [];
    for (const hp of (rec.patches as string[]) ?? []) uuids.push(uuidOfRef(io.emu, await io.call('host_patch.get_pool_patch', hp)));
    return set(uuids, ', ');
  },
  'host.updates': async (io, _ref, rec) => set(((rec.updates as string[]) ?? []).map((u) => uuidOfRef(io.emu, u)), ', '),
  'host.memory-free-computed': async (io, ref) => ({ text: String(await io.call('host.compute_free_memory', ref)) }),
  'pool.supported-sr-types': async (io) => set((await io.call('SR.get_supported_types')) as string[]),
  'pool.license-state': async (io, ref) => map((await io.call('pool.get_license_state', ref)) as Rec),
  'pool.https-only': async (io) => {
    const hosts = (await io.call('host.get_all')) as string[];
    let all = true;
    for (const h of hosts) all = ((await io.call('host.get_https_only', h)) as boolean) && all;
    return { text: String(all) };
  },
  'vdi.metadata-of-pool': async (io, ref, rec) => {
    const pools = (await io.call('pool.get_all')) as string[];
    if (pools[0] === rec.metadata_of_pool) return { text: uuidOfRef(io.emu, pools[0]) };
    const uuid = (await io.call('VDI.read_database_pool_uuid', ref)) as string;
    return { text: uuid === '' ? NOT_IN_DATABASE : uuid };
  },
};

const scalarText = (v: unknown): string => (typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string' ? String(v) : JSON.stringify(v));

/** How to compute `field` of `record`, or undefined when it is not known here. */
export function computeOf(record: string, field: CliField): Compute | undefined {
  const c = COMPUTED[`${record}.${field.name}`];
  if (c) return c;
  const hostField = field.hosts;
  if (hostField !== undefined) {
    // every host's value, shown when they agree (get_consistent_field_or_default)
    return async (io) => {
      const hosts = (await io.call('host.get_all')) as string[];
      let value: string | undefined;
      for (const h of hosts) {
        const v = scalarText(await io.call(`host.get_${hostField}`, h));
        if (value !== undefined && v !== value) return { text: '<inconsistent>' };
        value = v;
      }
      return { text: value ?? '<inconsistent>' };
    };
  }
  return undefined;
}
