// The data sources xcp-rrdd and its plugins report (rrdp-cpu, rrdp-squeezed, rrdp-netdev,
// rrdp-iostat), with their names, units, types and ranges, and where the emulator reads each value:
// the domains and tapdisks of the host's xenopsd, and a deterministic load model for CPU and
// network (the guest's load knob, plus an idle jitter derived from the seed).
import type { Emulator } from '../emulator.js';
import type { Xenopsd } from '../xenopsd/index.js';
import { loadOf } from '../guest/events.js';
import { vifCarriesTraffic } from '../guest/link.js';
import type { Rec } from '../../storage/database.js';
import type { DsDef, DsType } from './rrd.js';
import { srActivity } from './sr-io.js';
import { xapiReadings } from './xapi-stats.js';

/** How a value is read: a cumulative counter (the rate is its difference over time), or a value
 * at a given PDP (gauges, and rates the load model gives directly). */
export type Reading = { def: DsDef; counter: number } | { def: DsDef; at: (pdp: number) => number };

const ds = (name: string, type: DsType, units: string, description: string, min = 0, max = Infinity, dflt = true): DsDef => ({
  name, type, units, description, min, max, default: dflt,
});

/** A number in [0, 1) from the seed, an object, a data source and a PDP: the idle jitter. */
export function jitter(seed: string, key: string, pdp: number): number {
  let h = 0x811c9dc5;
  const s = `${seed}|${key}|${pdp}`;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return (h >>> 0) / 2 ** 32;
}

/** What a running VM reports (rrdp-cpu's cpu<N> / cpu_usage, squeezed's memory figures, iostat's
 * vbd_<dev>_*, netdev's vif_<n>_*). */
export function vmReadings(emu: Emulator, seed: string, x: Xenopsd, vm: string, uuid: string): Reading[] {
  const d = x.internals().domains.get(uuid);
  if (!d) return [];
  const load = loadOf(emu, vm);
  const out: Reading[] = [];
  const busy = (key: string) => (pdp: number) =>
    Math.min(1, load.cpu > 0 ? load.cpu * (0.95 + 0.05 * jitter(seed, key, pdp)) : 0.001 + 0.004 * jitter(seed, key, pdp));
  for (let i = 0; i < d.vcpus; i++) {
    const key = `${uuid}:cpu${i}`;
    out.push({ def: ds(`cpu${i}`, 'derive', '(fraction)', `CPU${i} usage`, 0, 1), at: d.paused ? () => 0 : busy(key) });
  }
  const usage = busy(`${uuid}:cpu0`);
  out.push({ def: ds('cpu_usage', 'derive', '(fraction)', 'Domain CPU usage', 0, 1), at: d.paused ? () => 0 : usage });
  out.push({ def: ds('memory', 'gauge', 'B', 'Memory currently allocated to VM'), at: () => d.memory });
  out.push({ def: ds('memory_target', 'gauge', 'B', 'Target of VM balloon driver'), at: () => d.memoryTarget });
  const rec = emu.db.get('VM', vm);
  if (rec && emu.db.has('VM_guest_metrics', String(rec.guest_metrics))) {
    // what the guest agent reports as free: the part of its memory its load does not use
    const kib = d.memoryTarget / 1024;
    out.push({ def: ds('memory_internal_free', 'gauge', 'KiB', 'Memory used as reported by the guest agent'), at: () => Math.round(kib * (0.6 - 0.4 * load.cpu)) });
  }
  for (const [dev, v] of d.vbds) {
    const t = v.tapdisk;
    if (!t) continue;
    const s = t.stats;
    const p = `vbd_${dev}_`;
    out.push(
      { def: ds(`${p}read`, 'derive', 'B/s', `Reads from device ${dev} in bytes per second`), counter: s.rd_bytes },
      { def: ds(`${p}write`, 'derive', 'B/s', `Writes to device ${dev} in bytes per second`), counter: s.wr_bytes },
      { def: ds(`${p}read_latency`, 'gauge', 'μs', `Reads from device ${dev} latency`), at: () => (s.rd_reqs ? s.rd_usecs / s.rd_reqs : 0) },
      { def: ds(`${p}write_latency`, 'gauge', 'μs', `Writes to device ${dev} latency`), at: () => (s.wr_reqs ? s.wr_usecs / s.wr_reqs : 0) },
      { def: ds(`${p}io_throughput_read`, 'absolute', 'MiB/s', `Data read from the ${dev} device, in MiB/s`), counter: s.rd_bytes / 2 ** 20 },
      { def: ds(`${p}io_throughput_write`, 'absolute', 'MiB/s', `Data written to the ${dev} device, in MiB/s`), counter: s.wr_bytes / 2 ** 20 },
      { def: ds(`${p}io_throughput_total`, 'absolute', 'MiB/s', `All ${dev} device I/O, in MiB/s`), counter: (s.rd_bytes + s.wr_bytes) / 2 ** 20 },
      { def: ds(`${p}iops_read`, 'absolute', 'requests/s', 'Read requests per second'), counter: s.rd_reqs },
      { def: ds(`${p}iops_write`, 'absolute', 'requests/s', 'Write requests per second'), counter: s.wr_reqs },
      { def: ds(`${p}iops_total`, 'absolute', 'requests/s', 'I/O requests per second'), counter: s.rd_reqs + s.wr_reqs },
      { def: ds(`${p}inflight`, 'gauge', 'requests', 'Number of I/O requests currently in flight'), at: () => 0 },
    );
  }
  const nics = [...d.vifs.values()].filter((v) => v.active);
  // a NIC without a link, or whose switch port drops its traffic, moves nothing
  const flowing = nics.filter((v) => nicCarriesTraffic(emu, rec, v.spec.id));
  for (const v of nics) {
    // the guest's network load, shared by its NICs that carry traffic, half received and half sent
    const rate = flowing.includes(v) ? load.network / flowing.length / 2 : 0;
    const key = `${uuid}:vif${v.spec.id}`;
    const r = (dir: string) => (pdp: number) => (rate > 0 ? rate * (0.9 + 0.2 * jitter(seed, key + dir, pdp)) : 0);
    out.push(
      { def: ds(`vif_${v.spec.id}_rx`, 'derive', 'B/s', `Bytes per second received on virtual interface number '${v.spec.id}'`), at: r('rx') },
      { def: ds(`vif_${v.spec.id}_tx`, 'derive', 'B/s', `Bytes per second transmitted on virtual interface number '${v.spec.id}'`), at: r('tx') },
    );
  }
  return out;
}

/** Whether the guest's NIC `dev` carries traffic (server/guest/link.ts), from its address. */
function nicCarriesTraffic(emu: Emulator, rec: Rec | undefined, dev: string): boolean {
  if (!rec) return false;
  const vif = ((rec.VIFs as string[]) ?? []).find((v) => String(emu.db.get('VIF', v)?.device) === dev);
  if (!vif) return false;
  const networks = (emu.db.get('VM_guest_metrics', String(rec.guest_metrics))?.networks ?? {}) as Record<string, string>;
  return vifCarriesTraffic(emu, vif, networks[`${dev}/ip`] ?? networks[`${dev}/ipv6/0`]);
}

/** What a host reports: physical CPUs (dom0's idle jitter plus the guests' vCPUs spread over
 * them), memory, dom0's load, the domains running, its PIFs' traffic (its guests' network load). */
export function hostReadings(emu: Emulator, seed: string, x: Xenopsd, host: string): Reading[] {
  const rec = emu.db.get('host', host)!;
  const uuid = String(rec.uuid);
  const cpuCount = Math.max(1, Number((rec.cpu_info as Record<string, string> | undefined)?.cpu_count) || 1);
  let guestCpu = 0;
  let vcpus = 0;
  let net = 0;
  const domains = x.internals().domains;
  for (const [vmUuid, d] of domains) {
    vcpus += d.vcpus;
    const vm = emu.db.refByUuid('VM', vmUuid);
    if (!vm) continue;
    const l = loadOf(emu, vm);
    if (!d.paused) guestCpu += l.cpu * d.vcpus;
    net += l.network;
  }
  const share = guestCpu / cpuCount;
  const out: Reading[] = [];
  const cpu = (i: number) => (pdp: number) => Math.min(1, share + 0.01 + 0.02 * jitter(seed, `${uuid}:cpu${i}`, pdp));
  for (let i = 0; i < cpuCount; i++) out.push({ def: ds(`cpu${i}`, 'derive', '(fraction)', `Physical cpu usage for cpu ${i}`, 0, 1), at: cpu(i) });
  out.push({
    def: ds('cpu_avg', 'derive', '(fraction)', 'Average physical cpu usage', 0, 1),
    at: (pdp) => {
      let s = 0;
      for (let i = 0; i < cpuCount; i++) s += cpu(i)(pdp);
      return s / cpuCount;
    },
  });
  out.push({ def: ds('loadavg', 'gauge', '(fraction)', 'Domain0 loadavg', -Infinity), at: (pdp) => 0.05 + 0.1 * jitter(seed, `${uuid}:loadavg`, pdp) });
  out.push({ def: ds('running_vcpus', 'gauge', 'count', 'The total number of running vCPUs per host'), at: () => vcpus });
  out.push({ def: ds('running_domains', 'gauge', 'count', 'The total number of running domains per host'), at: () => domains.size + 1 });
  out.push({ def: ds('memory_total_kib', 'gauge', 'KiB', 'Total amount of memory in the host'), at: () => Math.floor(x.host.totalMemory / 1024) });
  out.push({ def: ds('memory_free_kib', 'gauge', 'KiB', 'Total amount of free memory'), at: () => Math.floor(x.freeMemory() / 1024) });
  // the guests' traffic goes out through the management interface
  const pifs = ((rec.PIFs as string[]) ?? []).map((p) => emu.db.get('PIF', p)).filter((p) => p && p.physical === true);
  const half = net / 2;
  const traffic = (key: string, on: boolean) => (pdp: number) => (on && half > 0 ? half * (0.9 + 0.2 * jitter(seed, key, pdp)) : 0);
  for (const p of pifs) {
    const dev = String(p!.device);
    const on = p!.management === true;
    out.push(
      { def: ds(`pif_${dev}_rx`, 'derive', 'B/s', `Bytes per second received on physical interface ${dev}`), at: traffic(`${uuid}:${dev}:rx`, on) },
      { def: ds(`pif_${dev}_tx`, 'derive', 'B/s', `Bytes per second sent on physical interface ${dev}`), at: traffic(`${uuid}:${dev}:tx`, on) },
    );
  }
  out.push(
    { def: ds('pif_aggr_rx', 'derive', 'B/s', 'Bytes per second received on all physical interfaces'), at: traffic(`${uuid}:aggr:rx`, pifs.length > 0) },
    { def: ds('pif_aggr_tx', 'derive', 'B/s', 'Bytes per second sent on all physical interfaces'), at: traffic(`${uuid}:aggr:tx`, pifs.length > 0) },
  );
  out.push(...srReadings(x), ...xapiReadings());
  return out;
}

/** rrdp-iostat's per-SR sources on the host's RRD: the figures of the SR's tapdisks on the host,
 * named <key>_<first 8 chars of the SR uuid>; bytes, requests and wait times are summed, latencies
 * summed too (its Stats_value.accumulate), the overall latency the worst of them
 * (Iostats_value.accumulate). An SR without a tapdisk here reports nothing. */
export function srReadings(x: Xenopsd): Reading[] {
  const out: Reading[] = [];
  for (const [sr, { total: s, tapdisks }] of srActivity(x)) {
    const k = (key: string) => `${key}_${sr.slice(0, 8)}`;
    const avg = (usecs: number, reqs: number) => (reqs ? usecs / reqs : 0);
    const sum = (f: (t: (typeof tapdisks)[number]['stats']) => number) => () => tapdisks.reduce((a, t) => a + f(t.stats), 0);
    out.push(
      { def: ds(k('read'), 'derive', 'B/s', 'Reads from device SR, in B/s'), counter: s.rd_bytes },
      { def: ds(k('write'), 'derive', 'B/s', 'Writes from device SR, in B/s'), counter: s.wr_bytes },
      { def: ds(k('read_latency'), 'gauge', 'μs', 'Read latency from device SR, in microseconds'), at: sum((t) => avg(t.rd_usecs, t.rd_reqs)) },
      { def: ds(k('write_latency'), 'gauge', 'μs', 'Write latency from device SR, in microseconds'), at: sum((t) => avg(t.wr_usecs, t.wr_reqs)) },
      { def: ds(k('io_throughput_read'), 'absolute', 'MiB/s', 'Data read from the SR, in MiB/s'), counter: s.rd_bytes / 2 ** 20 },
      { def: ds(k('io_throughput_write'), 'absolute', 'MiB/s', 'Data written to the SR, in MiB/s'), counter: s.wr_bytes / 2 ** 20 },
      { def: ds(k('io_throughput_total'), 'absolute', 'MiB/s', 'All SR I/O, in MiB/s'), counter: (s.rd_bytes + s.wr_bytes) / 2 ** 20 },
      { def: ds(k('iops_read'), 'absolute', 'requests/s', 'Read requests per second'), counter: s.rd_reqs },
      { def: ds(k('iops_write'), 'absolute', 'requests/s', 'Write requests per second'), counter: s.wr_reqs },
      { def: ds(k('iops_total'), 'absolute', 'requests/s', 'I/O Requests per second'), counter: s.rd_reqs + s.wr_reqs },
      { def: ds(k('iowait'), 'absolute', 's/s', 'Total I/O wait time (all requests) per second'), counter: (s.rd_usecs + s.wr_usecs) / 1e6 },
      // requests run one after the other and are done when a reading is taken
      { def: ds(k('inflight'), 'gauge', 'requests', 'Number of I/O requests currently in flight'), at: () => 0 },
      {
        def: ds(k('latency'), 'gauge', 'μs', 'Average I/O latency'),
        at: () => Math.max(0, ...tapdisks.map((t) => avg(t.stats.rd_usecs + t.stats.wr_usecs, t.stats.rd_reqs + t.stats.wr_reqs))),
      },
    );
  }
  return out;
}
