// VM.import (xapi's Xapi_vm.import): the XVA fetched from a URL with GET, following up to five
// redirections, and imported as PUT /import would. Only URLs served by the pool's own hosts are
// fetched (the emulator's /export, say): any other is refused as not implemented, so that an API
// call cannot make the emulator reach out to arbitrary addresses.
import { Readable } from 'node:stream';
import type { Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { NULL_REF } from '../../storage/database.js';
import { importXvaStream } from './import-vm.js';
import { assertNotCancelling } from '../api/task-runner.js';

/** Xapi_vm.max_redirects */
const MAX_REDIRECTS = 5;

const generic = (msg: string) => new XapiError('IMPORT_ERROR', [msg]);

function assertServedByPool(call: Call, url: URL): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw generic(`Unsupported URI scheme: ${url.protocol}`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const addresses = new Set(['localhost']);
  for (const [, row] of call.emu.db.table('host')) addresses.add(String(row.rec.address));
  if (!addresses.has(host)) throw new XapiError('NOT_IMPLEMENTED', ['VM.import from a URL not served by this pool']);
}

export async function importFromUrl(call: Call, url: string, sr: string, fullRestore: boolean, force: boolean): Promise<string[]> {
  const { emu } = call;
  if (!emu.db.has('SR', sr)) throw new XapiError('HANDLE_INVALID', ['SR', sr]);
  if (emu.db.get('SR', sr)!.content_type === 'iso') throw new XapiError('SR_OPERATION_NOT_SUPPORTED', []);
  let target = url;
  for (let n = 0; ; n++) {
    if (n > MAX_REDIRECTS) throw generic('Maximum redirect limit reached');
    let parsed: URL;
    try {
      parsed = new URL(target);
    } catch {
      throw generic(`Invalid URI: ${target}`);
    }
    assertServedByPool(call, parsed);
    let res: Response;
    try {
      res = await fetch(parsed, { redirect: 'manual' });
    } catch {
      throw new XapiError('IMPORT_ERROR_PREMATURE_EOF', []);
    }
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel();
      const location = res.headers.get('location');
      if (location === null) throw generic('Redirect with no new location');
      target = new URL(location, parsed).toString();
      continue;
    }
    if (res.status !== 200 || res.body === null) {
      await res.body?.cancel();
      throw generic(`${res.status} ${res.statusText}`);
    }
    // a call without a task of its own still needs a key for the VMs' `import` operation
    const task = call.task !== NULL_REF ? call.task : `OpaqueRef:${globalThis.crypto.randomUUID()}`;
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    const chunks = (async function* () {
      for await (const c of body) yield Buffer.isBuffer(c) ? c : Buffer.from((c as Uint8Array).buffer, (c as Uint8Array).byteOffset, (c as Uint8Array).length);
    })();
    let last = 0;
    const progress = (done: number, total: number) => {
      const pct = total > 0 ? Math.floor((done * 100) / total) : 0;
      if (call.task === NULL_REF || pct <= last || pct >= 100) return;
      last = pct;
      if (emu.db.get('task', call.task)?.status === 'pending') emu.db.update('task', call.task, { progress: pct / 100 });
    };
    try {
      return await importXvaStream(
        {
          emu, session: call.session, host: call.host, task, sr, fullRestore, force,
          check: () => {
            if (call.task !== NULL_REF) assertNotCancelling(emu, call.task);
          },
          progress,
        },
        chunks,
      );
    } finally {
      body.destroy();
    }
  }
}
