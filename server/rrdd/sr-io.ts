// The I/O of a host's tapdisks summed per SR, as rrdp-iostat sums its per-VDI figures to give the
// host's <key>_<first 8 chars of the SR uuid> data sources. Each tapdisk's counters are followed
// from one reading to the next, so a tapdisk that goes away (a VM stopped, a disk unplugged) keeps
// what it did in its SR's totals instead of sending them back (a counter that went back would
// make the whole span unknown).
import type { Tapdisk, Xenopsd } from '../xenopsd/index.js';

export interface SrIo {
  rd_reqs: number;
  rd_bytes: number;
  rd_usecs: number;
  wr_reqs: number;
  wr_bytes: number;
  wr_usecs: number;
}

const KEYS = ['rd_reqs', 'rd_bytes', 'rd_usecs', 'wr_reqs', 'wr_bytes', 'wr_usecs'] as const;
const zero = (): SrIo => ({ rd_reqs: 0, rd_bytes: 0, rd_usecs: 0, wr_reqs: 0, wr_bytes: 0, wr_usecs: 0 });

interface Followed {
  /** cumulative totals per SR uuid, including tapdisks gone since */
  totals: Map<string, SrIo>;
  /** each tapdisk's counters when last read */
  seen: WeakMap<Tapdisk, SrIo>;
}

const hosts = new WeakMap<Xenopsd, Followed>();

export interface SrActivity {
  /** cumulative counters of the SR on this host */
  total: SrIo;
  /** the SR's tapdisks running now */
  tapdisks: Tapdisk[];
}

/** The SRs with a tapdisk on the host now, with their cumulative counters. */
export function srActivity(x: Xenopsd): Map<string, SrActivity> {
  let f = hosts.get(x);
  if (!f) hosts.set(x, (f = { totals: new Map(), seen: new WeakMap() }));
  const out = new Map<string, SrActivity>();
  for (const t of x.blktap.list()) {
    let total = f.totals.get(t.sr);
    if (!total) f.totals.set(t.sr, (total = zero()));
    const last = f.seen.get(t) ?? zero();
    const now = { ...t.stats };
    for (const k of KEYS) total[k] += Math.max(0, now[k] - last[k]);
    f.seen.set(t, now);
    const a = out.get(t.sr);
    if (a) a.tapdisks.push(t);
    else out.set(t.sr, { total, tapdisks: [t] });
  }
  return out;
}
