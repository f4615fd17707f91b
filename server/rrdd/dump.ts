// The whole RRD as xapi-rrd writes it (rrd.ml's xml_to_output and its Json module): rrdtool's XML
// dump format (version 0003), which `rrdtool restore` reads, or the same tree as JSON.
import { Rrd, STEP, fToS, type DsType, type Rra } from './rrd.js';

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
