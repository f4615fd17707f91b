// GET /export?ref=<VM ref>|uuid=<VM uuid>[&use_compression=true|gzip|zstd][&preserve_power_state=true]
// (xapi's export.ml handler): the VM as an XVA, a tar stream of ova.xml then each disk in 1 MiB
// chunks with their checksums (server/xva/). Like xapi, the answer has no Content-Length (it is
// streamed as the disks are read) and the VM is marked with the `export` operation meanwhile.
// use_compression=zstd uses Node's zstd where it has one, else the zstd program (as xapi does).
// GET /export_metadata: the same ova.xml without disks, for one VM and its snapshots or for all.
import type { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import type { Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { withOperation, withOperations, POLICY_FAIL_QUICKLY } from '../api/operations.js';
import { openVdi } from '../sm/index.js';
import { NULL_REF } from '../../storage/database.js';
import { vmMetadata } from '../xva/ova.js';
import { sendVdi, type TarSink } from '../xva/stream-vdi.js';
import { tarEnd, tarHeader, tarPadding } from '../xva/tar.js';
import { compressor, type Compressor } from '../xva/compression.js';
import { HttpError, runHttpHandler, okHeaders, type HttpCall, type HttpOutcome } from './auth.js';
import { assertAttachable, redirect, srLocation } from './vdi.js';

type Compression = 'none' | 'gzip' | 'zstd';

/** use_compression: true/gzip and zstd compress; any other value (false, absent) does not. */
function compressionOf(call: HttpCall): Compression {
  const v = call.params.get('use_compression');
  if (v === 'true' || v === 'gzip') return 'gzip';
  if (v === 'zstd') return 'zstd';
  return 'none';
}

/** xapi's bool_of_string: "true" / "false", anything else is a failure. */
function boolParam(call: HttpCall, name: string, dflt: boolean): boolean {
  const v = call.params.get(name);
  if (v === undefined) return dflt;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new XapiError('INTERNAL_ERROR', [`Invalid_argument("bool_of_string") for ${name}=${v}`]);
}

/** Export.vm_from_request: `ref`, else `uuid` (VM.get_by_uuid). */
export function vmOfRequest(call: HttpCall): string {
  const { emu, params } = call;
  const ref = params.get('ref');
  if (ref !== undefined) {
    if (!emu.db.has('VM', ref)) throw new XapiError('HANDLE_INVALID', ['VM', ref]);
    return ref;
  }
  const uuid = params.get('uuid');
  if (uuid === undefined) throw new HttpError(400, new XapiError('INTERNAL_ERROR', ['missing ref or uuid query parameter']));
  const vm = emu.db.refByUuid('VM', uuid);
  if (vm === undefined) throw new XapiError('UUID_INVALID', ['VM', uuid]);
  return vm;
}

/** The disks streamed (Export.export): the VM's non-CD VBDs' VDIs, the suspend image when the power
 * state is kept, none on an ISO SR; sorted by their id in the archive. */
function disksOf(call: HttpCall, vm: string, table: Map<string, string>, preserve: boolean): { prefix: string; vdi: string; size: number }[] {
  const { emu } = call;
  const rec = emu.db.get('VM', vm)!;
  const vdis: string[] = [];
  if (preserve && rec.power_state === 'Suspended') vdis.push(String(rec.suspend_VDI));
  for (const vbd of rec.VBDs as string[]) {
    const b = emu.db.get('VBD', vbd);
    if (b && b.type !== 'CD') vdis.push(String(b.VDI));
  }
  const out = [];
  for (const vdi of vdis) {
    const d = emu.db.get('VDI', vdi);
    const prefix = table.get(vdi);
    if (!d || vdi === NULL_REF || prefix === undefined) continue;
    if (emu.db.get('SR', String(d.SR))?.content_type === 'iso') continue;
    out.push({ prefix, vdi, size: Number(d.virtual_size) });
  }
  return out.sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
}

/** A sink writing into `out`, waiting for it to drain; fails once `stop` is aborted. */
function sinkOf(out: Writable, stop: AbortSignal): TarSink {
  return {
    write: (buf) =>
      new Promise<void>((resolve, reject) => {
        if (stop.aborted) return reject(stop.reason);
        if (out.write(buf)) return resolve();
        const done = (err?: unknown) => {
          out.off('drain', onDrain);
          stop.removeEventListener('abort', onAbort);
          if (err === undefined) resolve();
          else reject(err);
        };
        const onDrain = () => done();
        const onAbort = () => done(stop.reason);
        out.on('drain', onDrain);
        stop.addEventListener('abort', onAbort, { once: true });
      }),
  };
}

async function exportXva(call: HttpCall): Promise<HttpOutcome> {
  const { emu, res } = call;
  const compression = compressionOf(call);
  const vm = vmOfRequest(call);
  const preserve = boolParam(call, 'preserve_power_state', false);
  // (the version header and records are those of the moment the export starts)
  const { table, xml } = vmMetadata(emu, call.host, [vm], {
    preservePowerState: preserve,
    withSnapshotMetadata: false,
    includeVhdParents: false,
    excludedDevices: new Set(),
  });
  const disks = disksOf(call, vm, table, preserve);
  // Export.check_vm_host_SRs: served by a host that sees every disk's SR, else redirected there
  for (const d of disks) {
    const where = srLocation(call, String(emu.db.get('VDI', d.vdi)!.SR));
    if (where !== 'local') {
      redirect(call, where.address);
      return { redirected: true };
    }
  }
  const opCall = { emu, task: call.task, session: call.session, host: call.host, label: 'VM.export' } as unknown as Call;
  await withOperation(
    opCall,
    'VM',
    vm,
    'export',
    async () => {
      for (const d of disks) assertAttachable(emu, d.vdi, false);
      const z: Compressor | null = compression === 'none' ? null : await compressor(compression);
      if (compression !== 'none' && z === null) {
        throw new HttpError(501, new XapiError('NOT_IMPLEMENTED', [`/export with use_compression=${compression}: no zstd on this host`]));
      }
      emu.db.update('task', call.task, { progress: 0 });
      res.writeHead(
        200,
        okHeaders(call.task, { 'content-type': 'application/octet-stream', 'content-disposition': 'attachment; filename="export.xva"' }),
      );
      const stop = new AbortController();
      const gone = () => stop.abort(new XapiError('CLIENT_ERROR', ['the client closed the connection']));
      if (call.clientGone.aborted) gone();
      call.clientGone.addEventListener('abort', gone, { once: true });
      call.onCancel(() => stop.abort(new XapiError('TASK_CANCELLED', [call.task])));
      let out: Writable = res;
      if (z) {
        z.output.pipe(res);
        z.input.on('error', (e) => stop.abort(e));
        out = z.input;
      }
      try {
        await writeXva(call, sinkOf(out, stop.signal), xml, disks, () => {
          if (stop.signal.aborted) throw stop.signal.reason;
        });
        await new Promise<void>((resolve, reject) => {
          res.once('finish', resolve);
          res.once('close', () => (res.writableFinished ? resolve() : reject(new XapiError('CLIENT_ERROR', ['the client closed the connection']))));
          out.end();
        });
      } catch (e) {
        // an archive cut short must not look whole: the connection is dropped
        z?.abort();
        res.destroy();
        throw e;
      } finally {
        call.clientGone.removeEventListener('abort', gone);
      }
    },
    { policy: POLICY_FAIL_QUICKLY },
  );
}

/** Export.export: ova.xml, the disks, the end of the archive. */
async function writeXva(call: HttpCall, sink: TarSink, xml: string, disks: ReturnType<typeof disksOf>, check: () => void): Promise<void> {
  const { emu } = call;
  const ova = Buffer.from(xml, 'utf8');
  const now = Math.floor(emu.clock.now() / 1000);
  await sink.write(Buffer.concat([tarHeader('ova.xml', ova.length, now), ova, tarPadding(ova.length)]));
  const total = disks.reduce((t, d) => t + d.size, 0);
  let before = 0;
  let last = 0;
  const progress = (done: number) => {
    const pct = total > 0 ? Math.floor(((before + done) * 100) / total) : 0;
    if (pct <= last || pct >= 100) return;
    last = pct;
    const rec = emu.db.get('task', call.task);
    if (rec && rec.status === 'pending') emu.db.update('task', call.task, { progress: pct / 100 });
  };
  for (const d of disks) {
    check();
    const io = await openVdi(emu, d.vdi, { readOnly: true });
    try {
      await sendVdi(io, d.prefix, d.size, sink, progress, check);
    } finally {
      await io.close();
    }
    before += d.size;
  }
  // (no end-of-tar checksum table since export_vsn 2)
  await sink.write(tarEnd());
}

const DEVICE_TYPES = ['VIF', 'VBD', 'VGPU', 'VTPM'];

/** Devicetype.of_string over a comma-separated list ("" is none). */
function excludedDevicesOf(call: HttpCall): Set<string> {
  const v = call.params.get('excluded_device_types');
  const out = new Set<string>();
  if (v === undefined || v === '') return out;
  for (const x of v.split(',')) {
    const t = x.toUpperCase();
    if (!DEVICE_TYPES.includes(t)) {
      throw new XapiError('INTERNAL_ERROR', [`Type '${x}' not one of [${DEVICE_TYPES.map((d) => d.toLowerCase()).join('; ')}]`]);
    }
    out.add(t);
  }
  return out;
}

/** `all`: every VM but the default templates (and the control domains unless include_dom0). */
function metadataVms(call: HttpCall): string[] {
  const { emu } = call;
  if (!boolParam(call, 'all', false)) return [vmOfRequest(call)];
  const includeDom0 = boolParam(call, 'include_dom0', true);
  const out: string[] = [];
  for (const [ref, row] of emu.db.table('VM')) {
    const r = row.rec;
    const oc = r.other_config as Record<string, string>;
    const defaultTemplate = r.is_default_template === true || (r.is_a_template === true && oc.default_template === 'true');
    if (defaultTemplate || (r.is_control_domain === true && !includeDom0)) continue;
    out.push(ref);
  }
  return out;
}

/**
 * GET /export_metadata?uuid=|ref=|all=true[&export_snapshots][&include_vhd_parents]
 * [&include_dom0][&excluded_device_types=vif,vbd,...] (Export.metadata_handler): ova.xml alone,
 * with the VMs' snapshots unless export_snapshots=false, power states as they are. The archive is
 * small and made whole before it is sent, with its Content-Length, as xapi does.
 */
async function exportMetadata(call: HttpCall): Promise<HttpOutcome> {
  const { emu, res } = call;
  const includeVhdParents = boolParam(call, 'include_vhd_parents', false);
  const exportSnapshots = boolParam(call, 'export_snapshots', true);
  const excludedDevices = excludedDevicesOf(call);
  const vms = metadataVms(call);
  if (vms.length === 0) throw new XapiError('INTERNAL_ERROR', ['need to specify at least one VM']);
  const opCall = { emu, task: call.task, session: call.session, host: call.host, label: 'VM.export_metadata' } as unknown as Call;
  const marks = vms.map((ref) => ({ cls: 'VM', ref, op: 'metadata_export' }));
  const body = await withOperations(
    opCall,
    marks,
    () => {
      const { xml } = vmMetadata(emu, call.host, vms, { preservePowerState: true, withSnapshotMetadata: exportSnapshots, includeVhdParents, excludedDevices });
      const ova = Buffer.from(xml, 'utf8');
      const now = Math.floor(emu.clock.now() / 1000);
      return Buffer.concat([tarHeader('ova.xml', ova.length, now), ova, tarPadding(ova.length), tarEnd()]);
    },
    { policy: POLICY_FAIL_QUICKLY },
  );
  res.writeHead(
    200,
    okHeaders(call.task, {
      'content-type': 'application/octet-stream',
      'content-length': body.length,
      'content-disposition': 'attachment; filename="export.xva"',
    }),
  );
  await new Promise<void>((resolve) => res.end(body, resolve));
}

export function exportXvaPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  const handler = (req: Parameters<typeof runHttpHandler>[1], reply: Parameters<typeof runHttpHandler>[2]) =>
    runHttpHandler(ctx, req, reply, { action: 'get_export', label: 'VM.export' }, exportXva);
  // xapi matches handlers by path prefix: XO asks for /export/
  app.get('/export', { exposeHeadRoute: false }, handler);
  app.get('/export/*', { exposeHeadRoute: false }, handler);
  const metadata = (req: Parameters<typeof runHttpHandler>[1], reply: Parameters<typeof runHttpHandler>[2]) =>
    runHttpHandler(ctx, req, reply, { action: 'get_export_metadata', label: 'VM.export_metadata' }, exportMetadata);
  app.get('/export_metadata', { exposeHeadRoute: false }, metadata);
  app.get('/export_metadata/*', { exposeHeadRoute: false }, metadata);
}
