// The data-source messages of host, VM and SR (xapi_host.ml / xapi_vm.ml / xapi_sr.ml handing
// them to xcp-rrdd's rrdd_server.ml): the possible data sources (those reported, enabled when the
// RRD records them, and those only archived), recording one, reading its latest average, and
// forgetting its archives. A name xcp-rrdd does not know fails with its Datasource_missing.
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { xenopsOf } from '../api/xenops-sync.js';
import { rrddOf } from './rrdd.js';
import type { Rrd } from './rrd.js';
import { hostReadings, vmReadings } from './sources.js';
import type { DsDef } from './rrd.js';

export interface DataSourceRecord {
  name_label: string;
  name_description: string;
  enabled: boolean;
  standard: boolean;
  units: string;
  min: number;
  max: number;
  value: number;
}

/** Rrd_interface.Rrdd_error (Datasource_missing name), as xapi passes an rrdd failure on */
const missing = (name: string) => new XapiError('INTERNAL_ERROR', [`Rrd_interface.Rrdd_error(Datasource_missing(${JSON.stringify(name)}))`]);

interface Owner {
  rrd: Rrd | undefined;
  live: DsDef[];
}

function hostOwner(emu: Emulator, host: string): Owner {
  const rrdd = rrddOf(emu);
  const rrd = rrdd.host(host);
  return { rrd, live: hostReadings(emu, rrdd.seed, xenopsOf(emu, host), host).map((r) => r.def) };
}

/** a VM's RRD is on the host it runs on; a VM running nowhere has none live */
function vmOwner(emu: Emulator, vm: string): Owner {
  const rec = emu.db.get('VM', vm)!;
  const host = String(rec.resident_on);
  const uuid = String(rec.uuid);
  if (!emu.hosts.includes(host) || (rec.power_state !== 'Running' && rec.power_state !== 'Paused')) return { rrd: undefined, live: [] };
  const rrdd = rrddOf(emu);
  return { rrd: rrdd.vm(host, vm, uuid), live: vmReadings(emu, rrdd.seed, xenopsOf(emu, host), vm, uuid).map((r) => r.def) };
}

/** query_possible_dss: the union of the reported sources and the archived ones */
function possible(o: Owner): DataSourceRecord[] {
  const enabled = new Set(o.rrd?.dss.map((d) => d.name) ?? []);
  const out = new Map<string, DataSourceRecord>();
  for (const d of o.live) {
    out.set(d.name, { name_label: d.name, name_description: d.description, enabled: enabled.has(d.name), standard: d.default, units: d.units, min: d.min, max: d.max, value: 0 });
  }
  for (const d of o.rrd?.dss ?? []) {
    if (!out.has(d.name)) {
      out.set(d.name, { name_label: d.name, name_description: 'description not available', enabled: false, standard: false, units: 'unknown', min: d.min, max: d.max, value: 0 });
    }
  }
  return [...out.values()].sort((a, b) => (a.name_label < b.name_label ? -1 : a.name_label > b.name_label ? 1 : 0));
}

function record(o: Owner, name: string): void {
  const d = o.live.find((x) => x.name === name);
  if (!o.rrd || !d) throw missing(name);
  o.rrd.addDs(d);
}

/** query_named_ds: the newest average of the finest archive */
function query(o: Owner, name: string): number {
  if (!o.rrd) throw missing(name);
  const i = o.rrd.dss.findIndex((d) => d.name === name);
  if (i < 0) throw missing(name);
  const rra = o.rrd.bestRras(0, 'AVERAGE', Math.floor(o.rrd.lastUpdated))[0];
  if (!rra) throw new XapiError('INTERNAL_ERROR', ['No_RRA_Available']);
  return o.rrd.peek(rra, i, 0);
}

function forget(o: Owner, name: string): void {
  o.rrd?.removeDs(name);
}

export const hostDataSources = {
  get: (emu: Emulator, host: string) => possible(hostOwner(emu, host)),
  record: (emu: Emulator, host: string, name: string) => record(hostOwner(emu, host), name),
  query: (emu: Emulator, host: string, name: string) => query(hostOwner(emu, host), name),
  forget: (emu: Emulator, host: string, name: string) => forget(hostOwner(emu, host), name),
};

export const vmDataSources = {
  get: (emu: Emulator, vm: string) => possible(vmOwner(emu, vm)),
  record: (emu: Emulator, vm: string, name: string) => record(vmOwner(emu, vm), name),
  query: (emu: Emulator, vm: string, name: string) => query(vmOwner(emu, vm), name),
  forget: (emu: Emulator, vm: string, name: string) => forget(vmOwner(emu, vm), name),
};

/** SRs: no SR plugin reports here, so an SR has no data source */
export const srDataSources = {
  get: (): DataSourceRecord[] => [],
  record: (_emu: Emulator, _sr: string, name: string): void => {
    throw missing(name);
  },
  query: (_emu: Emulator, _sr: string, name: string): number => {
    throw missing(name);
  },
  forget: (): void => {},
};
