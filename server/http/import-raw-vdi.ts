// PUT /import_raw_vdi?vdi=<ref|uuid>&format=raw|vhd (xapi's import_raw_vdi.ml): a disk image into an
// existing VDI, or with sr_id and no vdi (raw only) into a new "Imported VDI" of Content-Length
// bytes. As xapi, the 200 answer (with task-id) goes out before the body is read: XO's putResource
// waits for it before it sends or cuts anything. Failures while the body streams in reach the task
// only, as VDI_IO_ERROR ["Device I/O errors"] (vhd-tool's exit status).
//
// Unlike xapi, which writes as the bytes arrive, the data is staged and committed when complete, so
// a corrupt or truncated upload leaves the VDI as it was. One case commits and still fails: a raw
// body whose Content-Length is larger than the disk, cut by the client once the whole disk has
// arrived (XO's 1 PiB Content-Length for a stream of unknown length). xapi has written the disk by
// then and fails at the cut; XO ignores that VDI_IO_ERROR and counts on the data being there.
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { dispatch } from '../dispatch/dispatch.js';
import { withVdiFile, refreshVdi, vdiPath, markVdiChanged } from '../sm/index.js';
import { importRaw, importVhd, VhdError } from '../../storage/vhd/index.js';
import { HttpError, runHttpHandler, okHeaders, type HttpCall, type HttpOutcome } from './auth.js';
import { Body, bodiesToStream, withBody } from './body.js';
import { CONTENT_TYPE, assertAttachable, formatOf, progressOf, redirect, srLocation, vdiIoError, vdiOf } from './vdi.js';

/** Importexport.sr_of_req: sr_id (a ref, taken as given) or sr_uuid; cookies first. */
function srOfReq(call: HttpCall): string | undefined {
  const id = call.params.auth('sr_id');
  if (id !== undefined) return id;
  const uuid = call.params.auth('sr_uuid');
  if (uuid === undefined) return undefined;
  const ref = call.emu.db.refByUuid('SR', uuid);
  if (ref === undefined) throw new XapiError('UUID_INVALID', ['SR', uuid]);
  return ref;
}

const internal = (status: number, text: string) => new HttpError(status, new XapiError('INTERNAL_ERROR', [text]));

function contentLength(req: IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

// (a client that goes away while the VDI is made or found ends the input: an empty or short one,
// which fails the import)
const importRawVdi = (call: HttpCall): Promise<HttpOutcome> => withBody(call, (body) => importInto(call, body));

async function importInto(call: HttpCall, body: Body): Promise<HttpOutcome> {
  const { emu, params } = call;
  const raw = call.req.raw;
  const vdiGiven = params.get('vdi');
  let vdi = vdiGiven === undefined ? undefined : vdiOf(emu, vdiGiven);
  // Import_raw_vdi.import: what fails from here to the redirection is a 400 (fail_task_in_request)
  let where: ReturnType<typeof srLocation>;
  let sr: string | undefined;
  try {
    sr = vdi === undefined ? srOfReq(call) : String(emu.db.get('VDI', vdi)!.SR);
    // (xapi's VDI_MISSING here has no parameters)
    if (sr === undefined) throw new XapiError('VDI_MISSING', []);
    where = srLocation(call, sr);
  } catch (e) {
    throw new HttpError(400, e);
  }
  if (where !== 'local') {
    redirect(call, where.address);
    return { redirected: true };
  }

  // localhost_handler, inside the task
  const format = formatOf(call);
  const chunked = params.has('chunked');
  if (format !== 'raw' && chunked) throw internal(404, 'Cannot handle chunked VHD');
  const te = raw.headers['transfer-encoding'];
  if (te !== undefined) throw internal(404, `Cannot handle encoding: ${te}`);
  const length = contentLength(raw);
  if (vdi === undefined) {
    if (format === 'raw' && length !== undefined) vdi = await createImportedVdi(call, sr, length);
    else if (format === 'qcow2') throw internal(400, 'Importing a QCOW2 directly into an SR not yet supported');
    else if (format === 'vhd') throw internal(400, 'Importing a VHD directly into an SR not yet supported');
    else throw internal(400, 'Not enough info supplied to import');
  }
  if (format === 'tar' || format === 'qcow2') throw new XapiError('NOT_IMPLEMENTED', [`/import_raw_vdi with format=${format}`]);
  // vhd-tool's own "chunked" framing of sparse raw writes
  if (chunked) throw new XapiError('NOT_IMPLEMENTED', ['/import_raw_vdi with chunked']);
  const target = vdi;
  assertAttachable(emu, target, true);
  // raw images (ISO libraries, raw VDIs) and disks without files take no stream here
  if (!vdiPath(emu, target)?.endsWith('.vhd')) throw new XapiError('NOT_IMPLEMENTED', ['/import_raw_vdi into a disk that is not a VHD']);

  call.res.writeHead(200, okHeaders(call.task, { 'content-type': CONTENT_TYPE.raw }));
  call.res.flushHeaders();

  const rec = emu.db.get('VDI', target)!;
  body.vdi = String(rec.uuid);
  await withVdiFile(emu, target, { write: true }, async (path) => {
    try {
      if (format === 'raw') {
        // vhd-tool refuses a zero size ("Non-zero size required"): XO's empty probe PUT ends here
        if (!length) throw vdiIoError();
        const size = Math.min(length, Number(rec.virtual_size));
        body.limit = size;
        body.progress = progressOf(call, size);
        // the whole range is written: marked in the VDI's CBT log first
        await markVdiChanged(emu, target, 0, size);
        await importRaw(path, body, size);
        if (body.received < length) {
          // the whole disk came in and the client cut the rest of its declared length: written, as
          // xapi has written it, and failed as xapi fails at the cut
          await refresh(call, target);
          throw vdiIoError();
        }
      } else {
        if (length !== undefined) body.progress = progressOf(call, length);
        const cbt = emu.db.get('VDI', target)?.cbt_enabled === true;
        await importVhd(path, body, cbt ? { onChange: (o, n) => markVdiChanged(emu, target, o, n) } : {});
      }
    } catch (e) {
      if (e instanceof XapiError) throw e;
      if (e instanceof VhdError || body.failed) throw vdiIoError();
      throw e;
    }
    await refresh(call, target);
  });
  return { value: target, ty: { k: 'ref', class: 'VDI' } };
}

/** VDI.create on the caller's session (Client.VDI.create), as xapi makes the "Imported VDI". */
async function createImportedVdi(call: HttpCall, sr: string, size: number): Promise<string> {
  const record = {
    name_label: 'Imported VDI', name_description: '', SR: sr, virtual_size: size, type: 'user',
    sharable: false, read_only: false, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
  };
  const r = await dispatch(call.emu, 'VDI.create', [call.session, record], { host: call.host });
  if (!r.ok) throw new XapiError(r.error[0], r.error.slice(1));
  return r.value as string;
}

/** physical_utilisation and the SR's sizes after the write (best effort: the data is in). */
async function refresh(call: HttpCall, vdi: string): Promise<void> {
  try {
    await refreshVdi(call.emu, vdi);
  } catch {
    /* the next SR.scan corrects them */
  }
}

export function importRawVdiPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  bodiesToStream(app);
  const handler = (req: FastifyRequest, reply: FastifyReply) =>
    runHttpHandler(ctx, req, reply, { action: 'put_import_raw_vdi', label: 'Importing raw VDI' }, importRawVdi);
  // xapi matches handlers by path prefix: XO sends /import_raw_vdi/
  app.put('/import_raw_vdi', handler);
  app.put('/import_raw_vdi/*', handler);
}
