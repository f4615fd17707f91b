// RRD backups, as xcp-rrdd's backup_rrds writes them to the master (one gzipped file per host or
// VM uuid, here under the data directory's rrds/): what a new xcp-rrdd (the emulator's process
// started again) reads back. A pool without a data directory keeps none.
import { gzipSync, gunzipSync } from 'node:zlib';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { Rrd, type Rra } from './rrd.js';

const dirOf = (dataDir: string) => join(dataDir, 'rrds');

// NaN and infinities are not JSON
const num = (v: number): number | string => (Number.isFinite(v) ? v : String(v));
const unnum = (v: number | string): number => (typeof v === 'number' ? v : Number(v));

export interface Archived {
  rrd: Rrd;
  domainStart?: number;
}

function encode(a: Archived): Buffer {
  const r = a.rrd;
  return gzipSync(JSON.stringify({
    lastUpdated: r.lastUpdated,
    domainStart: a.domainStart,
    dss: r.dss.map((d) => ({ ...d, min: num(d.min), max: num(d.max) })),
    rras: r.rras.map((x) => ({
      cf: x.cf, rows: x.rows, pdpCnt: x.pdpCnt, xff: x.xff, head: x.head,
      rings: x.rings.map((ring) => Array.from(ring, num)),
      cdp: x.cdp.map((c) => ({ value: num(c.value), known: c.known, unknown: c.unknown })),
    })),
  }));
}

function decode(buf: Buffer): Archived {
  const j = JSON.parse(gunzipSync(buf).toString('utf8'));
  const rrd = new Rrd(j.dss.map((d: any) => ({ ...d, min: unnum(d.min), max: unnum(d.max) })), j.lastUpdated);
  rrd.rras = j.rras.map((x: any): Rra => ({
    cf: x.cf, rows: x.rows, pdpCnt: x.pdpCnt, xff: x.xff, head: x.head,
    rings: x.rings.map((ring: (number | string)[]) => Float64Array.from(ring, unnum)),
    cdp: x.cdp.map((c: any) => ({ value: unnum(c.value), known: c.known, unknown: c.unknown })),
  }));
  return { rrd, domainStart: j.domainStart };
}

/** Writes each RRD to its file: a new file renamed over the old one, so a crash leaves one whole. */
export function backup(dataDir: string, rrds: Map<string, Archived>): void {
  const dir = dirOf(dataDir);
  mkdirSync(dir, { recursive: true });
  for (const [uuid, a] of rrds) {
    const file = join(dir, `${uuid}.gz`);
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, encode(a));
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  }
}

/** The backed-up RRDs by uuid; a damaged file is skipped (its RRD starts again). */
export function restore(dataDir: string): Map<string, Archived> {
  const out = new Map<string, Archived>();
  let names: string[];
  try {
    names = readdirSync(dirOf(dataDir));
  } catch {
    return out;
  }
  for (const n of names) {
    if (!n.endsWith('.gz')) continue;
    try {
      out.set(n.slice(0, -3), decode(readFileSync(join(dirOf(dataDir), n))));
    } catch {
      // a partial write never replaces a whole file; anything else unreadable is dropped
    }
  }
  return out;
}
