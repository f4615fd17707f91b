// GET /export_raw_vdi?vdi=<ref|uuid>&format=raw|vhd[&base=<ref|uuid>] (xapi's export_raw_vdi.ml):
// the disk's contents, raw (every byte, unallocated blocks as zeros) or as a dynamic VHD carrying
// only the allocated blocks; with `base`, a differencing VHD of the blocks that differ from it.
// The task's result stays "" (xapi completes it with no value).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { HttpPluginContext } from '../app.js';
import { XapiError } from '../dispatch/errors.js';
import { withVdiFile } from '../sm/index.js';
import { withSrLock } from '../sm/driver.js';
import { exportRaw, exportVhd, VhdError } from '../../storage/vhd/index.js';
import { vdiIoFaults } from '../xenopsd/tapdisk.js';
import { runHttpHandler, okHeaders, type HttpCall, type HttpOutcome } from './auth.js';
import { CONTENT_TYPE, assertAttachable, formatOf, progressOf, redirect, srLocation, vdiIoError, vdiOf } from './vdi.js';

const isVhdFile = (path: string) => path.endsWith('.vhd');

async function exportRawVdi(call: HttpCall): Promise<HttpOutcome> {
  const { emu, params } = call;
  const given = params.get('vdi');
  if (given === undefined) throw new Error('Missing vdi query parameter');
  const vdi = vdiOf(emu, given);
  const rec = emu.db.get('VDI', vdi)!;
  const where = srLocation(call, String(rec.SR));
  if (where !== 'local') {
    redirect(call, where.address);
    return { redirected: true };
  }
  const format = formatOf(call);
  if (format === 'tar' || format === 'qcow2') {
    throw new XapiError('NOT_IMPLEMENTED', [`/export_raw_vdi with format=${format}`]);
  }
  const baseGiven = params.get('base');
  const base = baseGiven === undefined ? undefined : vdiOf(emu, baseGiven);
  assertAttachable(emu, vdi, false);
  if (base !== undefined) assertAttachable(emu, base, false);

  return withVdiFile(emu, vdi, { write: false }, async (path) => {
    let out: { stream: Readable; size: number };
    const srUuid = String(emu.db.get('SR', String(rec.SR))?.uuid);
    if (format === 'raw') {
      // a differential raw export is not a thing: `base` only shapes VHD streams
      out = isVhdFile(path) ? await withSrLock(emu, srUuid, () => exportRaw(path)) : await rawFile(path);
    } else {
      if (!isVhdFile(path)) throw new XapiError('NOT_IMPLEMENTED', ['/export_raw_vdi with format=vhd of a disk that is not a VHD']);
      const open = (basePath?: string) =>
        withSrLock(emu, srUuid, () => exportVhd(path, { base: basePath, uuid: String(rec.uuid) })).catch((e) => {
          if (e instanceof VhdError && e.code === 'BASE_NOT_IN_CHAIN') {
            throw new XapiError('INTERNAL_ERROR', [`base VDI ${base} shares no ancestor with VDI ${vdi}: cannot compute differences`]);
          }
          throw e;
        });
      out =
        base === undefined
          ? await open()
          : await withVdiFile(emu, base, { write: false }, async (basePath) => {
              if (!isVhdFile(basePath)) throw new XapiError('INTERNAL_ERROR', ['base VDI is not a vhd; cannot compute differences']);
              return open(basePath);
            });
    }
    await send(call, out, format, String(rec.uuid));
  }).catch((e) => {
    // a disk that cannot be read (bad VHD metadata, a broken chain): what vhd-tool's failure gives
    if (e instanceof VhdError) throw vdiIoError();
    throw e;
  });
}

async function rawFile(path: string): Promise<{ stream: Readable; size: number }> {
  const { size } = await stat(path);
  return { stream: createReadStream(path), size };
}

/** The 200 headers, then the stream; a failure after them cuts the connection (the length was
 * promised) and fails the task with VDI_IO_ERROR. */
function send(call: HttpCall, out: { stream: Readable; size: number }, format: 'raw' | 'vhd', uuid: string): Promise<void> {
  const { res, req } = call;
  const { stream, size } = out;
  res.writeHead(
    200,
    okHeaders(call.task, {
      'content-type': CONTENT_TYPE[format],
      'content-disposition': `attachment; filename="${uuid}.${format}"`,
      'content-length': size,
    }),
  );
  const progress = progressOf(call, size);
  let sent = 0;
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      // an unfinished stream holds the chain's files open
      if (!stream.readableEnded) stream.destroy();
      if (err === undefined) return resolve();
      reject(err instanceof XapiError ? err : vdiIoError());
    };
    call.onCancel(() => finish(new XapiError('TASK_CANCELLED', [call.task])));
    // the client went away (or half-closed) before every byte went out, maybe before the first
    if (call.clientGone.aborted) return finish(vdiIoError());
    call.clientGone.addEventListener('abort', () => finish(sent < size ? vdiIoError() : undefined), { once: true });
    stream.on('data', (chunk: Buffer) => {
      // a datapath fault: the disk fails to read from here on
      if (vdiIoFaults.fails !== null && vdiIoFaults.fails(uuid, chunk.length)) return finish(vdiIoError());
      sent += chunk.length;
      progress(sent);
      if (!res.write(chunk)) stream.pause();
    });
    res.on('drain', () => stream.resume());
    stream.on('error', (e) => finish(e));
    stream.on('end', () => res.end(() => finish()));
    // (a client that got every byte may close before the stream's own end, which waits for the
    // chain's files to be closed)
    res.on('close', () => finish(!res.writableFinished && sent < size ? vdiIoError() : undefined));
    req.raw.on('error', () => undefined);
  });
}

export function exportRawVdiPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  const handler = (req: Parameters<typeof runHttpHandler>[1], reply: Parameters<typeof runHttpHandler>[2]) =>
    runHttpHandler(ctx, req, reply, { action: 'get_export_raw_vdi', label: 'Exporting raw VDI' }, exportRawVdi);
  // xapi matches handlers by path prefix: XO asks for /export_raw_vdi/
  app.get('/export_raw_vdi', { exposeHeadRoute: false }, handler);
  app.get('/export_raw_vdi/*', { exposeHeadRoute: false }, handler);
}
