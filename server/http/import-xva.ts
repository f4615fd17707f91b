// PUT /import?sr_id=<SR>[&restore=true][&force=true] (xapi's Import.handler): a whole VM from an
// XVA (plain, gzip or zstd; server/xva/) into new objects, its disks into new VDIs of the SR (the
// pool's default SR when none is named). As xapi, the 200 answer (with task-id) goes out before
// the body is read; what fails after it reaches the task only, and whatever the import had made is
// destroyed (unless `force`, as xapi). The task's result is the imported VMs, an XML-RPC array.
// PUT /import_metadata: the same without disks, the VDIs being found in the pool.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { NULL_REF } from '../../storage/database.js';
import { importMetadataStream, importXvaStream } from '../xva/import-vm.js';
import { Body, bodiesToStream, withBody } from './body.js';
import { HttpError, runHttpHandler, okHeaders, type HttpCall, type HttpOutcome } from './auth.js';
import { progressOf, redirect, srLocation } from './vdi.js';

/** Import.find_query_flag: only "true" sets a flag. */
const flag = (call: HttpCall, name: string) => call.params.get(name) === 'true';

/** Importexport.sr_of_req, else Importexport.get_default_sr. */
function srOfImport(call: HttpCall): string {
  const { emu, params } = call;
  const id = params.auth('sr_id');
  if (id !== undefined) {
    if (!emu.db.has('SR', id)) throw new XapiError('HANDLE_INVALID', ['SR', id]);
    return id;
  }
  const uuid = params.auth('sr_uuid');
  if (uuid !== undefined) {
    const ref = emu.db.refByUuid('SR', uuid);
    if (ref === undefined) throw new XapiError('UUID_INVALID', ['SR', uuid]);
    return ref;
  }
  const pool = emu.db.table('pool').keys().next().value as string | undefined;
  const sr = String((pool && emu.db.get('pool', pool)?.default_SR) ?? NULL_REF);
  if (!emu.db.has('SR', sr)) throw new XapiError('DEFAULT_SR_NOT_FOUND', [sr]);
  return sr;
}

const importXva = (call: HttpCall): Promise<HttpOutcome> => withBody(call, (body) => importInto(call, body));

async function importInto(call: HttpCall, body: Body): Promise<HttpOutcome> {
  const { emu } = call;
  const fullRestore = flag(call, 'restore');
  const force = flag(call, 'force');
  const sr = srOfImport(call);
  const where = srLocation(call, sr);
  if (where !== 'local') {
    redirect(call, where.address);
    return { redirected: true };
  }
  emu.db.update('task', call.task, { progress: 0 });
  // an ISO library takes no VM
  if (emu.db.get('SR', sr)!.content_type === 'iso') throw new HttpError(400, new XapiError('SR_OPERATION_NOT_SUPPORTED', []));
  if (call.req.raw.headers['transfer-encoding'] !== undefined) {
    throw new HttpError(403, new XapiError('IMPORT_ERROR_CANNOT_HANDLE_CHUNKED', []));
  }
  call.res.writeHead(200, okHeaders(call.task, { 'content-type': 'application/octet-stream' }));
  call.res.flushHeaders();

  let progress: ((done: number) => void) | null = null;
  const vms = await importXvaStream(
    {
      emu, session: call.session, host: call.host, task: call.task, sr, fullRestore, force,
      check: () => call.assertNotCancelled(),
      progress: (done, total) => (progress ??= progressOf(call, total))(done),
      // (xapi's signal that the objects exist, for clients that remap networks meanwhile)
      objectsCreated: () => {
        const task = emu.db.get('task', call.task)!;
        emu.db.update('task', call.task, { other_config: { ...(task.other_config as Record<string, string>), object_creation: 'complete' } });
      },
    },
    body,
  );
  return { value: vms, ty: { k: 'set', of: { k: 'ref', class: 'VM' } } };
}

/** Import.read_map_params: the `<name>:<key>=<value>` query parameters as a map. */
function mapParams(call: HttpCall, name: string): Map<string, string> {
  const out = new Map<string, string>();
  const query = (call.req.query ?? {}) as Record<string, string | string[]>;
  for (const [k, v] of Object.entries(query)) {
    if (k.startsWith(`${name}:`) && k.length > name.length + 1) out.set(k.slice(name.length + 1), Array.isArray(v) ? v[0] : v);
  }
  return out;
}

/**
 * PUT /import_metadata[?restore=true][&force=true][&dry_run=true][&vdi:<uuid>=<uuid>...]
 * (Import.metadata_handler): the objects of an export_metadata archive, without disks: the VDIs
 * are those already in the pool. dry_run checks that everything would be found and makes nothing.
 */
function importMetadata(call: HttpCall): Promise<HttpOutcome> {
  return withBody(call, async (body) => {
    const { emu } = call;
    const fullRestore = flag(call, 'restore');
    const force = flag(call, 'force');
    const dryRun = flag(call, 'dry_run');
    const vdiMap = mapParams(call, 'vdi');
    call.res.writeHead(200, okHeaders(call.task, { 'content-type': 'application/octet-stream' }));
    call.res.flushHeaders();
    const vms = await importMetadataStream(
      { emu, session: call.session, host: call.host, task: call.task, fullRestore, force, check: () => call.assertNotCancelled() },
      body,
      { vdiMap, dryRun },
    );
    return { value: vms, ty: { k: 'set', of: { k: 'ref', class: 'VM' } } };
  });
}

export function importXvaPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  bodiesToStream(app);
  const handler = (req: FastifyRequest, reply: FastifyReply) =>
    runHttpHandler(ctx, req, reply, { action: 'put_import', label: 'VM.import' }, importXva);
  // xapi matches handlers by path prefix: XO sends /import/
  app.put('/import', handler);
  app.put('/import/*', handler);
  const metadata = (req: FastifyRequest, reply: FastifyReply) =>
    runHttpHandler(ctx, req, reply, { action: 'put_import_metadata', label: 'VM.metadata_import' }, importMetadata);
  app.put('/import_metadata', metadata);
  app.put('/import_metadata/*', metadata);
}
