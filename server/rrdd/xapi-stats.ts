// The figures xapi reports about itself on its host's RRD (xapi_stats.ml: its heap from the
// collector's statistics, and its open file descriptors), read here from this process: the heap
// V8 has reserved, what of it is free and what is live. Every host of a pool in one process
// reports the same process.
import { readdirSync } from 'node:fs';
import type { DsDef } from './rrd.js';
import type { Reading } from './sources.js';

const kibDs = (name: string, type: DsDef['type'], description: string, units = 'KiB'): DsDef => ({
  name, type, units, description, min: 0, max: Infinity, default: true,
});

/** Bytes allocated so far, as far as readings see it: the growth of the live heap between two
 * readings (what the collector freed in between is not seen, so this is a lower bound). */
let allocated = 0;
let lastUsed: number | undefined;

function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    // no /proc here: the source is not reported
    return undefined;
  }
}

export function xapiReadings(): Reading[] {
  const m = process.memoryUsage();
  if (lastUsed !== undefined) allocated += Math.max(0, m.heapUsed - lastUsed);
  lastUsed = m.heapUsed;
  const kib = (b: number) => Math.floor(b / 1024);
  const out: Reading[] = [
    { def: kibDs('xapi_memory_usage_kib', 'gauge', 'Total memory allocated used by xapi daemon'), at: () => kib(m.heapTotal) },
    { def: kibDs('xapi_free_memory_kib', 'gauge', 'Free memory available to the xapi daemon'), at: () => kib(m.heapTotal - m.heapUsed) },
    { def: kibDs('xapi_live_memory_kib', 'gauge', 'Live memory used by xapi daemon'), at: () => kib(m.heapUsed) },
    { def: kibDs('xapi_allocation_kib', 'derive', 'Memory allocation done by the xapi daemon'), counter: allocated / 1024 },
  ];
  const fds = openFds();
  if (fds !== undefined) out.push({ def: kibDs('xapi_open_fds', 'gauge', 'Number of open file descriptors held by xapi', 'file descriptors'), at: () => fds });
  return out;
}
