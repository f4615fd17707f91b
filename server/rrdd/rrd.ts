// A round-robin database as xapi-rrd keeps one (ocaml/libs/xapi-rrd/lib/rrd.ml): data sources
// (gauge, absolute, derive) turned every step (5 s) into a primary data point (PDP), consolidated
// into archives (RRAs) of AVERAGE / MIN / MAX over 1, 12, 720 and 17280 steps, each a ring of rows.
// PDPs arrive in runs of equal values (a catch-up over a long quiet span costs one run, not one
// update per step), as rrd.ml's rra_update fills its secondary rows.

export type DsType = 'gauge' | 'absolute' | 'derive';
export type Cf = 'AVERAGE' | 'MIN' | 'MAX';

export interface DsDef {
  name: string;
  type: DsType;
  units: string;
  description: string;
  min: number;
  max: number;
  /** recorded unless asked (Ds.ds_default) */
  default: boolean;
}

export const STEP = 5;

/** xcp-rrdd's timescales (rrdd_monitor.ml): rows × steps per row */
export const TIMESCALES: [rows: number, pdpCnt: number][] = [
  [120, 1],
  [120, 12],
  [168, 720],
  [366, 17280],
];

export interface Rra {
  cf: Cf;
  rows: number;
  pdpCnt: number;
  xff: number;
  /** one ring per data source, newest at `head` */
  rings: Float64Array[];
  head: number;
  /** the CDP being prepared, per data source */
  cdp: { value: number; known: number; unknown: number }[];
}

/** create_rras: the single-step archive keeps only AVERAGE (xff 0.5), the others all three CFs (xff 1.0) */
function createRras(nds: number): Rra[] {
  const out: Rra[] = [];
  for (const [rows, pdpCnt] of TIMESCALES) {
    const cfs: Cf[] = pdpCnt > 1 ? ['AVERAGE', 'MIN', 'MAX'] : ['AVERAGE'];
    for (const cf of cfs) out.push(newRra(cf, rows, pdpCnt, pdpCnt > 1 ? 1.0 : 0.5, nds));
  }
  return out;
}

function newRra(cf: Cf, rows: number, pdpCnt: number, xff: number, nds: number): Rra {
  return {
    cf, rows, pdpCnt, xff, head: rows - 1,
    rings: Array.from({ length: nds }, () => new Float64Array(rows).fill(NaN)),
    cdp: Array.from({ length: nds }, () => ({ value: initOf(cf), known: 0, unknown: 0 })),
  };
}

const initOf = (cf: Cf): number => (cf === 'AVERAGE' ? 0 : cf === 'MIN' ? Infinity : -Infinity);

export class Rrd {
  /** seconds since the epoch of the last update */
  lastUpdated: number;
  dss: DsDef[];
  rras: Rra[];

  constructor(dss: DsDef[], timestamp: number) {
    this.dss = dss;
    this.rras = createRras(dss.length);
    this.lastUpdated = timestamp;
  }

  /** The PDP the RRD is at (the step `lastUpdated` falls in). */
  get pdpIndex(): number {
    return Math.floor(this.lastUpdated / STEP);
  }

  /** Adds a data source (rrd_add_ds): its archives are unknown so far. */
  addDs(ds: DsDef): void {
    if (this.dss.some((d) => d.name === ds.name)) return;
    this.dss.push(ds);
    const pdp = this.pdpIndex;
    for (const r of this.rras) {
      r.rings.push(new Float64Array(r.rows).fill(NaN));
      r.cdp.push({ value: initOf(r.cf), known: 0, unknown: pdp % r.pdpCnt });
    }
  }

  /** Forgets a data source with all its archives (rrd_remove_ds). */
  removeDs(name: string): boolean {
    const i = this.dss.findIndex((d) => d.name === name);
    if (i < 0) return false;
    this.dss.splice(i, 1);
    for (const r of this.rras) {
      r.rings.splice(i, 1);
      r.cdp.splice(i, 1);
    }
    return true;
  }

  /** Appends `count` PDPs with the same values (one per data source, NaN unknown), which end at
   * `count` steps after the current one; `lastUpdated` becomes `timestamp`. */
  pushPdps(values: ArrayLike<number>, count: number, timestamp: number): void {
    if (count <= 0) return;
    const start = this.pdpIndex; // the last PDP already processed
    const pdps = Array.from({ length: this.dss.length }, (_, i) => {
      const v = values[i];
      const d = this.dss[i];
      // values out of the data source's range are unknown (rrd.ml's bounds check)
      return Number.isFinite(v) && v >= d.min && v <= d.max ? v : NaN;
    });
    for (const r of this.rras) {
      // PDP p ends at p × STEP; a CDP closes with the PDP whose index is a multiple of pdpCnt
      const pos = start % r.pdpCnt;
      const k = Math.min(count, r.pdpCnt - pos);
      this.accumulate(r, pdps, k);
      let left = count - k;
      if (pos + k < r.pdpCnt) continue;
      this.closeCdp(r);
      // whole CDPs of this run: the CF of equal values is the value
      const whole = Math.floor(left / r.pdpCnt);
      for (let n = 0; n < Math.min(whole, r.rows); n++) this.pushRow(r, pdps);
      left -= whole * r.pdpCnt;
      if (left > 0) this.accumulate(r, pdps, left);
    }
    this.lastUpdated = timestamp;
  }

  private accumulate(r: Rra, pdps: number[], k: number): void {
    if (k <= 0) return;
    for (let i = 0; i < pdps.length; i++) {
      const c = r.cdp[i];
      const v = pdps[i];
      if (Number.isNaN(v)) {
        c.unknown += k;
        continue;
      }
      c.known += k;
      if (r.cf === 'AVERAGE') c.value += v * k;
      else if (r.cf === 'MIN') c.value = Math.min(c.value, v);
      else c.value = Math.max(c.value, v);
    }
  }

  private closeCdp(r: Rra): void {
    r.head = (r.head + 1) % r.rows;
    for (let i = 0; i < r.cdp.length; i++) {
      const c = r.cdp[i];
      // too many unknown PDPs make the CDP unknown (xff); an average is over the known ones
      const ok = c.known > 0 && c.unknown <= Math.floor(r.xff * r.pdpCnt);
      r.rings[i][r.head] = ok ? (r.cf === 'AVERAGE' ? c.value / c.known : c.value) : NaN;
      c.value = initOf(r.cf);
      c.known = 0;
      c.unknown = 0;
    }
  }

  private pushRow(r: Rra, pdps: number[]): void {
    r.head = (r.head + 1) % r.rows;
    for (let i = 0; i < pdps.length; i++) r.rings[i][r.head] = pdps[i];
  }

  /** The i-th newest row of an archive for data source `ds` (Fring.peek). */
  peek(r: Rra, ds: number, i: number): number {
    return r.rings[ds][(r.head - i + r.rows * 2) % r.rows];
  }

  /** find_best_rras: the archives of `cf` (all when none) whose span holds `start` and whose step
   * is at least `pdpInterval`; else the longest ones. */
  bestRras(pdpInterval: number, cf: Cf | null, start: number): Rra[] {
    const rras = cf ? this.rras.filter((r) => r.cf === cf) : this.rras;
    if (rras.length === 0) return [];
    const lastPdp = this.pdpIndex * STEP;
    const contains = (t: number, r: Rra) => r.pdpCnt >= pdpInterval && t > lastPdp - STEP * r.rows * r.pdpCnt;
    const first = rras.find((r) => contains(start, r));
    if (first) return rras.filter((r) => r.rows === first.rows && r.pdpCnt === first.pdpCnt);
    const last = rras[rras.length - 1];
    const newStart = 1 + lastPdp - STEP * last.rows * last.pdpCnt;
    return rras.filter((r) => contains(newStart, r));
  }
}

/** Utils.f_to_s: %0.15g, NaN, Infinity, 0.0 */
export function fToS(f: number): string {
  if (Number.isNaN(f)) return 'NaN';
  if (!Number.isFinite(f)) return f > 0 ? 'Infinity' : '-Infinity';
  if (f === 0) return '0.0';
  return formatG15(f);
}

/** C's %.15g */
function formatG15(f: number): string {
  const exp = Math.floor(Math.log10(Math.abs(f)));
  if (exp < -4 || exp >= 15) {
    const [m, e] = f.toExponential(14).split('e');
    const mm = m.includes('.') ? m.replace(/0+$/, '').replace(/\.$/, '') : m;
    const n = Number(e);
    return `${mm}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  const s = f.toFixed(Math.max(0, 14 - exp));
  return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}
