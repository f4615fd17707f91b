// Builds the CLI's data tables from xapi's sources, so that field names, their order, which are
// settable and the default list columns follow xapi's CLI server:
//   tsx server/cli/generator/generate.ts <records.ml> <cli_operations.ml> <record_util.ml> <errors.json>
// (the .ml files from ocaml/xapi-cli-server/, errors.json as compiled for the schema: code ->
// {params, doc}). Writes server/cli/generated/{records,error-docs}.ts.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { CliField, CliClass } from '../record-spec.js';

const [recordsMl, operationsMl, recordUtilMl, errorsJson] = process.argv.slice(2);
if (!recordsMl || !operationsMl || !recordUtilMl || !errorsJson) {
  console.error('usage: generate.ts <records.ml> <cli_operations.ml> <record_util.ml> <errors.json>');
  process.exit(2);
}
const out = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'generated');
mkdirSync(out, { recursive: true });

const lcfirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1);

// ── record_util.ml: the enums the CLI names its own way (`wire -> "name"` cases, or a table) ──
const util = readFileSync(recordUtilMl, 'utf8');
const customNames: Record<string, Record<string, string>> = {};
const defs = [...util.matchAll(/^let ([a-z_0-9]+)\b/gm)].map((m) => ({ at: m.index!, name: m[1] }));
for (let i = 0; i < defs.length; i++) {
  const m = /^([a-z_0-9]+)_to_string$/.exec(defs[i].name);
  if (!m) continue;
  let body = util.slice(defs[i].at, i + 1 < defs.length ? defs[i + 1].at : util.length);
  const table = /([a-z_0-9]+_table)\b/.exec(body);
  if (table) {
    const t = defs.find((d) => d.name === table[1]);
    if (t) body = util.slice(t.at, defs[defs.indexOf(t) + 1]?.at ?? util.length);
  }
  const pairs = [...body.matchAll(/`([A-Za-z_0-9]+)\s*(?:->|,)\s*"([^"]*)"/g)];
  if (pairs.length > 0) customNames[m[1]] = Object.fromEntries(pairs.map((p) => [p[1], p[2]]));
}

// ── records.ml: one `<x>_record` function per class, a list of make_field ──
const src = readFileSync(recordsMl, 'utf8');
const starts = [...src.matchAll(/^let ([a-z_0-9]+)_record rpc session_id/gm)].map((m) => ({ at: m.index!, fn: m[1] }));
const records: Record<string, { class: string; fields: CliField[] }> = {};
for (let i = 0; i < starts.length; i++) {
  const body = src.slice(starts[i].at, i + 1 < starts.length ? starts[i + 1].at : src.length);
  const main = /ToGet\s*\(?\s*fun \(\) ->\s*Client\.([A-Za-z_]+)\.get_record/.exec(body);
  if (!main) continue;
  const cls = main[1];
  const prefix = `${lcfirst(cls)}_`;
  const fields: CliField[] = [];
  for (const part of body.split(/make_field\b/).slice(1)) {
    const name = /~name:"([^"]+)"/.exec(part)?.[1];
    if (!name) continue;
    // the getter: up to the next labelled argument of make_field
    const getAt = part.indexOf('~get:');
    const rest = part.slice(getAt + 5);
    const nextLabel = rest.search(/\n\s*~(set|add_to_set|remove_from_set|add_to_map|remove_from_map|set_in_map|set_map|clear_map|get_set|get_map|expensive|hidden|deprecated|case_insensitive)\b/);
    const get = nextLabel < 0 ? rest : rest.slice(0, nextLabel);
    const f: CliField = { name };
    const direct = new RegExp(`\\(x \\(\\)\\)\\.API\\.${prefix}([A-Za-z0-9_]+)`).exec(get);
    const via = /m\.API\.([A-Za-z]+_(?:guest_)?metrics)_([A-Za-z0-9_]+)/.exec(get);
    if (direct && !/Client\.[A-Za-z_]+\.get_/.test(get.slice(0, direct.index))) f.field = direct[1];
    else if (via && /Option\.fold/.test(get)) {
      const viaCls = via[1].replace(/^[a-z]/, (c) => c.toUpperCase());
      f.via = viaCls.replace(/^VM_/, 'VM_').replace(/^Host_/, 'host_').replace(/^PIF_/, 'PIF_');
      f.field = via[2];
      const none = /~none:("[^"]*"|[a-z_]+)/.exec(get)?.[1];
      f.none = none === undefined ? undefined : none.startsWith('"') ? JSON.parse(none) : none === 'nid' ? '<not in database>' : none === 'unknown_time' ? '<unknown time>' : none;
    }
    // a pool field that shows a host field when every host agrees
    const consistent = /get_consistent_field_or_default[\s\S]*?~getter:Client\.Host\.get_([A-Za-z0-9_]+)/.exec(get);
    if (!f.field && consistent) f.hosts = consistent[1];
    if (/get_name_from_ref/.test(get)) f.fmt = 'name';
    else if (/concat_with_comma|map_and_concat_compat/.test(get)) f.fmt = 'comma';
    else if (/lowercase_string|String\.lowercase_ascii/.test(get)) f.fmt = 'lower';
    else if (/get_uuid_from_ref_or_null/.test(get)) f.fmt = 'uuid_or_null';
    // an enum printed by a conversion of its own (record_util.ml's custom names)
    const conv = /Record_util\.([a-z_0-9]+)_to_string/.exec(get);
    if (conv && customNames[conv[1]]) f.names = conv[1];
    const label = (l: string) => new RegExp(`~${l}:`).test(part);
    const msgOf = (l: string) => {
      const at = part.search(new RegExp(`~${l}:`));
      if (at < 0) return undefined;
      // the first call that is not a read (setters may look up a ref or the current map first)
      const m = [...part.slice(at).matchAll(/Client\.([A-Za-z_]+)\.([a-z_A-Z0-9]+)/g)].find((c) => !c[2].startsWith('get_'));
      return m ? `${m[1]}.${m[2]}` : '';
    };
    for (const [l, k] of [['set', 'set'], ['add_to_map', 'add_to_map'], ['remove_from_map', 'remove_from_map'], ['add_to_set', 'add_to_set'], ['remove_from_set', 'remove_from_set'], ['set_in_map', 'set_in_map'], ['set_map', 'set_map'], ['clear_map', 'clear_map']] as const) {
      const m = msgOf(l);
      if (m !== undefined) f[k] = m;
    }
    if (label('get_set')) f.is = 'set';
    else if (label('get_map')) f.is = 'map';
    if (/~hidden:true/.test(part)) f.hidden = true;
    if (/~deprecated:true/.test(part)) f.deprecated = true;
    if (/~expensive:true/.test(part)) f.expensive = true;
    if (/~case_insensitive:true/.test(part)) f.case_insensitive = true;
    fields.push(f);
  }
  records[starts[i].fn] = { class: cls, fields };
}

// ── cli_operations.ml gen_cmds: the CLI class names, default filters and list columns ──
const ops = readFileSync(operationsMl, 'utf8');
const gen = ops.slice(ops.indexOf('let gen_cmds rpc session_id'));
const strs = (s: string) => [...s.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
const classes: CliClass[] = [];
for (const m of gen.matchAll(/get_by_uuid\s+([a-z_0-9]+)_record\s+"([^"]+)"\s*(\[[^\]]*\])\s*(\[[^\]]*\])/g)) {
  const rec = records[m[1]];
  if (!rec) continue;
  const filters = [...m[3].matchAll(/\("([^"]+)",\s*"([^"]*)"\)/g)].map((f) => [f[1], f[2]] as [string, string]);
  classes.push({ cli: m[2], record: m[1], class: rec.class, filters, list: strs(m[4]) });
}

const header = '// Generated by server/cli/generator/generate.ts from xapi\'s CLI server: do not edit.\n';
writeFileSync(
  join(out, 'records.ts'),
  `${header}import type { CliField, CliClass } from '../record-spec.js';\n\n` +
    `/** Each record of the CLI by its records.ml name: the API class and its fields, in xapi's order. */\n` +
    `export const cliRecords: Record<string, { class: string; fields: CliField[] }> = ${JSON.stringify(records, null, 0).replace(/\],"/g, '],\n"').replace(/\{"class"/g, '\n{"class"')};\n\n` +
    `/** Enums the CLI names its own way: conversion -> wire value -> name. */\n` +
    `export const cliEnumNames: Record<string, Record<string, string>> = ${JSON.stringify(customNames).replace(/\},"/g, '},\n"')};\n\n` +
    `/** The classes with generated commands (<cli>-list, -param-get ...). */\n` +
    `export const cliClasses: CliClass[] = ${JSON.stringify(classes).replace(/\},\{/g, '},\n{')};\n`,
);

const errors = JSON.parse(readFileSync(errorsJson, 'utf8')).errors as Record<string, { params: string[] | null; doc: string; documented: boolean }>;
const docs: Record<string, [string, string[]]> = {};
for (const [code, e] of Object.entries(errors)) if (e.documented) docs[code] = [e.doc, e.params ?? []];
writeFileSync(
  join(out, 'error-docs.ts'),
  `${header}/** The datamodel's documented errors: code -> [text, parameter names]. */\n` +
    `export const errorDocs: Record<string, [string, string[]]> = ${JSON.stringify(docs).replace(/\],"/g, '],\n"')};\n`,
);
console.log(`${Object.keys(records).length} records, ${classes.length} classes, ${Object.keys(docs).length} errors`);
