// xapi.conf-style configuration (`key = value`, `#` comments), as /etc/xapi.conf on a host.
import { readFileSync } from 'node:fs';

export interface XapiConf {
  /** seconds a task may stay pending before the GC fails and removes it (xapi: 86400) */
  pending_task_timeout: number;
  /** seconds a finished task is kept (xapi: 3900) */
  completed_task_timeout: number;
  /** the GC keeps at most about this many tasks (xapi: 200) */
  max_tasks: number;
  /** seconds of inactivity after which a session is removed (xapi: 86400) */
  inactive_session_timeout: number;
  /** seconds between two runs of the GC (xapi's db_gc: 240) */
  gc_interval: number;
  /** simulated seconds the storage GC (SM's cleanup.py) stays quiet after being kicked before it
   * deletes unused base copies and coalesces chains (SM's GCPAUSE_DEFAULT_SLEEP: 300); also the
   * wall-clock period of the background pass that kicks every attached SR (0: no background pass) */
  sr_gc_interval: number;
  /** 1: VDI operations kick the storage GC as SM does; 0: it runs only when triggered explicitly */
  sr_gc_auto: number;
  /** seconds allowed between two reads of a request's headers (xapi: 10); 0: no limit */
  header_read_timeout_tcp: number;
  /** seconds allowed to receive a request's headers (xapi: 60); 0: no limit */
  header_total_timeout_tcp: number;
  /** the emulator's own: seconds a connection may wait on the client (a request body that stops
   * coming, an answer it stops reading, a kept-alive connection with no new request) before it is
   * closed; 0: no limit */
  idle_timeout_tcp: number;
  /** every key of the file, including the ones the emulator does not use */
  raw: Record<string, string>;
}

export function defaultConf(): XapiConf {
  return {
    pending_task_timeout: 86400,
    completed_task_timeout: 3900,
    max_tasks: 200,
    inactive_session_timeout: 86400,
    gc_interval: 240,
    sr_gc_interval: 300,
    sr_gc_auto: 1,
    header_read_timeout_tcp: 10,
    header_total_timeout_tcp: 60,
    idle_timeout_tcp: 300,
    raw: {},
  };
}

export function parseConf(text: string): XapiConf {
  const conf = defaultConf();
  for (const line of text.split(/\r?\n/)) {
    const t = line.replace(/#.*$/, '').trim();
    if (!t) continue;
    const eq = t.indexOf('=');
    if (eq <= 0) throw new Error(`xapi.conf: cannot parse line "${line}"`);
    const key = t.slice(0, eq).trim();
    const value = t.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    conf.raw[key] = value;
    if (key in conf && key !== 'raw') {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) throw new Error(`xapi.conf: ${key} must be a non-negative number`);
      (conf as unknown as Record<string, number>)[key] = n;
    }
  }
  return conf;
}

export function readConf(file: string): XapiConf {
  return parseConf(readFileSync(file, 'utf8'));
}
