// The whole RRD as xapi-rrd writes it (rrd.ml's xml_to_output and its Json module): rrdtool's XML
// dump format (version 0003), which `rrdtool restore` reads, or the same tree as JSON.
import { Rrd, STEP, fToS, type Cf, type DsType, type Rra } from './rrd.js';

const TYPE: Record<DsType, string> = { gauge: 'GAUGE', absolute: 'ABSOLUTE', derive: 'DERIVE' };
/** xcp-rrdd creates every data source with a heartbeat of 300 s (create_fresh_rrd) */
const MRHB = 300;

/** The CDP under way, as xapi keeps it: an average accumulates value/pdp_per_row. */
const cdpValue = (r: Rra, i: number): number => {
  const c = r.cdp[i];
  return r.cf === 'AVERAGE' ? c.value / r.pdpCnt : c.value;
};

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function rrdXml(rrd: Rrd): string {
  const o: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n<rrd><version>0003</version>'];
  o.push(`<step>${STEP}</step><lastupdate>${Math.trunc(rrd.lastUpdated)}</lastupdate>`);
  for (const d of rrd.dss) {
    o.push(`<ds><name>${esc(d.name)}</name><type>${TYPE[d.type]}</type><minimal_heartbeat>${fToS(MRHB)}</minimal_heartbeat>`);
    o.push(`<min>${fToS(d.min)}</min><max>${fToS(d.max)}</max><last_ds>0.0</last_ds><value>0.0</value><unknown_sec>0</unknown_sec></ds>`);
  }
  for (const r of rrd.rras) {
    o.push(`<rra><cf>${r.cf}</cf><pdp_per_row>${r.pdpCnt}</pdp_per_row><params><xff>${fToS(r.xff)}</xff></params><cdp_prep>`);
    for (let i = 0; i < rrd.dss.length; i++) {
      o.push(`<ds><primary_value>0.0</primary_value><secondary_value>0.0</secondary_value><value>${fToS(cdpValue(r, i))}</value>`);
      o.push(`<unknown_datapoints>${r.cdp[i].unknown}</unknown_datapoints></ds>`);
    }
    o.push('</cdp_prep><database>');
    // oldest row first
    if (rrd.dss.length > 0) {
      for (let row = 0; row < r.rows; row++) {
        o.push('<row>');
        for (let i = 0; i < rrd.dss.length; i++) o.push(`<v>${fToS(rrd.peek(r, i, r.rows - row - 1))}</v>`);
        o.push('</row>');
      }
    }
    o.push('</database></rra>');
  }
  o.push('</rrd>');
  return o.join('');
}

export function rrdJson(rrd: Rrd): string {
  const f = fToS;
  return JSON.stringify({
    version: '0003',
    step: String(STEP),
    lastupdate: f(rrd.lastUpdated),
    ds: rrd.dss.map((d) => ({
      name: d.name, type: TYPE[d.type], minimal_heartbeat: f(MRHB), min: f(d.min), max: f(d.max),
      last_ds: '0.0', value: '0.0', unknown_sec: '0.0', last_updated: f(rrd.lastUpdated),
    })),
    rra: rrd.rras.map((r) => ({
      cf: r.cf, pdp_per_row: String(r.pdpCnt), params: { xff: f(r.xff) },
      cdp_prep: { ds: rrd.dss.map((_, i) => ({ primary_value: '0.0', secondary_value: '0.0', value: f(cdpValue(r, i)), unknown_datapoints: String(r.cdp[i].unknown) })) },
      database: rrd.dss.length === 0 ? [] : Array.from({ length: r.rows }, (_, row) => rrd.dss.map((__, i) => f(rrd.peek(r, i, r.rows - row - 1)))),
    })),
  });
}

/** An RRD read back from rrdtool's XML dump (rrd.ml's from_xml, as xcp-rrdd reads a pushed RRD);
 * throws on anything that is not a whole dump of 5 s steps. */
export function parseRrdXml(xml: string): Rrd {
  const one = (s: string, tag: string): string => {
    const m = new RegExp(`<${tag}>\\s*([^<]*?)\\s*</${tag}>`).exec(s);
    if (!m) throw new Error(`no <${tag}>`);
    return m[1];
  };
  const num = (s: string): number => {
    const v = s === 'NaN' ? NaN : s === 'Infinity' || s === 'inf' ? Infinity : s === '-Infinity' || s === '-inf' ? -Infinity : Number(s);
    if (s === '' || (Number.isNaN(v) && s !== 'NaN')) throw new Error(`not a number: ${s}`);
    return v;
  };
  if (!/^\s*(<\?xml[^>]*\?>)?\s*<rrd>/.test(xml) || !/<\/rrd>\s*$/.test(xml)) throw new Error('not an RRD dump');
  if (num(one(xml, 'step')) !== STEP) throw new Error('not an RRD of 5 s steps');
  const lastUpdated = num(one(xml, 'lastupdate'));
  const firstRra = xml.indexOf('<rra>');
  const head = firstRra < 0 ? xml : xml.slice(0, firstRra);
  const types = Object.fromEntries(Object.entries(TYPE).map(([k, v]) => [v, k as DsType]));
  const dss = [...head.matchAll(/<ds>([\s\S]*?)<\/ds>/g)].map((m) => {
    const type = types[one(m[1], 'type')];
    if (!type) throw new Error('unknown data source type');
    return { name: one(m[1], 'name'), type, units: 'unknown', description: 'description not available', min: num(one(m[1], 'min')), max: num(one(m[1], 'max')), default: false };
  });
  if (new Set(dss.map((d) => d.name)).size !== dss.length) throw new Error('a data source twice');
  const rrd = new Rrd(dss, lastUpdated);
  const pdpIndex = Math.floor(lastUpdated / STEP);
  rrd.rras = [...xml.matchAll(/<rra>([\s\S]*?)<\/rra>/g)].map((m): Rra => {
    const body = m[1];
    const cf = one(body, 'cf') as Cf;
    if (cf !== 'AVERAGE' && cf !== 'MIN' && cf !== 'MAX') throw new Error('unknown consolidation function');
    const pdpCnt = num(one(body, 'pdp_per_row'));
    if (!(Number.isInteger(pdpCnt) && pdpCnt > 0)) throw new Error('bad pdp_per_row');
    const prep = [...(/<cdp_prep>([\s\S]*?)<\/cdp_prep>/.exec(body)?.[1] ?? '').matchAll(/<ds>([\s\S]*?)<\/ds>/g)];
    const rows = [...body.matchAll(/<row>([\s\S]*?)<\/row>/g)].map((r) => [...r[1].matchAll(/<v>\s*([^<]*?)\s*<\/v>/g)].map((v) => num(v[1])));
    if (prep.length !== dss.length || rows.length === 0 || rows.some((r) => r.length !== dss.length)) throw new Error('an archive that does not match its data sources');
    const done = pdpIndex % pdpCnt;
    return {
      cf, rows: rows.length, pdpCnt, xff: num(one(body, 'xff')), head: rows.length - 1,
      // oldest row first in the dump; the newest ends at head
      rings: dss.map((_, i) => Float64Array.from(rows, (r) => r[i])),
      cdp: prep.map((p) => {
        const unknown = num(one(p[1], 'unknown_datapoints'));
        const value = num(one(p[1], 'value'));
        return { value: cf === 'AVERAGE' ? value * pdpCnt : value, known: Math.max(0, done - unknown), unknown };
      }),
    };
  });
  if (rrd.rras.length === 0) throw new Error('an RRD without archives');
  return rrd;
}
