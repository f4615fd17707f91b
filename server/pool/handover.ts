// The joiner's side of the hand-over: its records and local SR files sent to the master over the
// pool-internal HTTP of adoption (server/http/pool-adopt.ts), with the pool secret the master gave.
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Rec } from '../../storage/database.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { srPath } from '../sm/paths.js';
import { JOINING_CLASSES, type JoinBundle } from './adoption.js';

/** The joiner's objects: those of the joining classes, and any other whose `host` is the joiner. */
export function collectBundle(emu: Emulator): JoinBundle {
  const host = emu.master;
  const records: Record<string, Record<string, Rec>> = {};
  const take = (cls: string, ref: string, rec: Rec) => ((records[cls] ??= {})[ref] = rec);
  for (const cls of JOINING_CLASSES) for (const [ref, row] of emu.db.table(cls)) take(cls, ref, row.rec);
  for (const cls of ['PCI', 'PGPU', 'PUSB', 'host_crashdump', 'host_patch', 'Feature', 'host_driver']) {
    try {
      for (const [ref, row] of emu.db.table(cls)) if (row.rec.host === host) take(cls, ref, row.rec);
    } catch {
      // not a class of this datamodel
    }
  }
  return { host, records };
}

const cookie = (secret: string) => ({ cookie: `pool_secret=${encodeURIComponent(secret)}` });

async function answer(res: Response): Promise<any> {
  const text = await res.text();
  let j: any;
  try {
    j = JSON.parse(text);
  } catch {
    j = undefined;
  }
  if (res.status !== 200) {
    const desc = Array.isArray(j?.error) ? (j.error as string[]) : ['JOINING_HOST_SERVICE_FAILED'];
    throw new XapiError(desc[0], desc.slice(1));
  }
  return j;
}

/** How long one pool-internal request may take (wall time: a network timeout): a file of a local
 * SR, or the commit of a large bundle, may take minutes; a master that stopped answering ends the
 * join rather than hang it. */
const REQUEST_TIMEOUT_MS = 15 * 60_000;

async function post(url: URL, secret: string, init: RequestInit): Promise<any> {
  let res: Response;
  try {
    res = await fetch(url, {
      ...init,
      headers: { ...cookie(secret), ...(init.headers as Record<string, string> | undefined) },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch {
    throw new XapiError('JOINING_HOST_CONNECTION_FAILED', []);
  }
  try {
    return await answer(res);
  } catch (e) {
    if (e instanceof XapiError) throw e;
    throw new XapiError('JOINING_HOST_SERVICE_FAILED', []);
  }
}

/** The local SRs' files, staged on the master one by one; progress(done bytes, total bytes). */
export async function pushSrFiles(emu: Emulator, b: JoinBundle, master: string, secret: string, progress: (f: number) => void): Promise<void> {
  const hostUuid = String(b.records.host[b.host].uuid);
  const files: { sr: string; name: string; path: string; size: number }[] = [];
  for (const r of Object.values(b.records.SR ?? {})) {
    if (r.shared === true || r.is_tools_sr === true) continue;
    const dir = srPath(emu, String(r.uuid));
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const st = statSync(path);
      if (st.isFile()) files.push({ sr: String(r.uuid), name, path, size: st.size });
    }
  }
  const total = files.reduce((n, f) => n + f.size, 0) || 1;
  let done = 0;
  for (const f of files) {
    const url = new URL('/pool_adopt/file', master);
    url.search = new URLSearchParams({ host: hostUuid, sr: f.sr, name: f.name }).toString();
    const body = Readable.toWeb(createReadStream(f.path)) as unknown as ReadableStream;
    await post(url, secret, { method: 'PUT', body, duplex: 'half', headers: { 'content-length': String(f.size) } } as RequestInit);
    done += f.size;
    progress(done / total);
  }
}

export async function commitOnMaster(b: JoinBundle, master: string, secret: string): Promise<string> {
  const j = await post(new URL('/pool_adopt/commit', master), secret, { method: 'POST', body: JSON.stringify(b), headers: { 'content-type': 'application/octet-stream' } });
  return String(j.host);
}

export async function adoptedOnMaster(hostUuid: string, master: string, secret: string): Promise<boolean> {
  const url = new URL('/pool_adopt/status', master);
  url.search = new URLSearchParams({ host: hostUuid }).toString();
  return (await post(url, secret, { method: 'GET' })).adopted === true;
}

/** Asks the master to answer on the adopted host's address; answers the master's port. */
export async function listenOnMaster(hostUuid: string, master: string, secret: string): Promise<number> {
  const url = new URL('/pool_adopt/listen', master);
  url.search = new URLSearchParams({ host: hostUuid }).toString();
  return Number((await post(url, secret, { method: 'POST' })).port);
}
