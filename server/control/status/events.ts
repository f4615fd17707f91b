// GET /xapi-emu/events: a server-sent events stream of the pool's changes, for the status page
// (and any script that wants to know when to look again). It does not carry the records: each
// `change` event names the classes written since the last one, and the reader fetches the summary
// again. Changes are coalesced, at most one event per `throttle` window, so that a burst of
// writes (a fixture loading, a thousand VMs starting) costs the reader a handful of refetches.
//
//   event: hello      data: {"generation":N}                      once, at the start
//   event: change     data: {"generation":N,"changed":{"VM":2},"deleted":{"task":1},"clock":true}
//   event: heartbeat  data: {"generation":N}                      every `heartbeat` seconds
//
// A stream ends when its reader goes, and when the server closes (at once: a close does not wait
// on readers that would never leave by themselves).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { Emulator } from '../../emulator.js';

/** defaults: at most 10 change events a second; a heartbeat every 15 s (under proxies' idle cuts) */
export const THROTTLE_MS = 100;
export const HEARTBEAT_S = 15;

interface Stream {
  res: ServerResponse;
  end(): void;
}

/** open streams by emulator (what a test or a close looks at) */
const open = new Map<Emulator, Set<Stream>>();

/** How many event streams are open on an emulator. */
export function openEventStreams(emu: Emulator): number {
  return open.get(emu)?.size ?? 0;
}

const frame = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

function numberParam(v: unknown, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new RangeError(String(v));
  return n;
}

export interface StreamParams {
  /** ms between two change events */
  throttle: number;
  /** s between two heartbeats */
  heartbeat: number;
}

/** ?throttle=<ms 0..60000>&heartbeat=<s 0.01..3600>; a RangeError names a bad value */
export function streamParams(query: Record<string, unknown>): StreamParams {
  return {
    throttle: numberParam(query.throttle, THROTTLE_MS, 0, 60_000),
    heartbeat: numberParam(query.heartbeat, HEARTBEAT_S, 0.01, 3600),
  };
}

/** The streams opened through one app (its close ends them). */
export type StreamSet = Set<{ end(): void }>;

/** Takes over the reply and streams the emulator's changes until the reader or the server goes. */
export function streamEvents(emu: Emulator, req: FastifyRequest, reply: FastifyReply, p: StreamParams, ofApp: StreamSet): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
    // a stream's connection is its own: when the stream ends, so does the connection
    connection: 'close',
  });
  let since = emu.db.generation;
  const changed: Record<string, number> = {};
  const deleted: Record<string, number> = {};
  let clockMoved = false;
  let pending = false;
  let lastSent = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const cleanups: (() => void)[] = [];

  const write = (s: string) => {
    if (!ended) res.write(s);
  };
  const send = () => {
    timer = undefined;
    if (ended || !pending) return;
    // a reader that does not keep up gets one event when it has taken in the last
    if (res.writableNeedDrain) return;
    pending = false;
    lastSent = Date.now();
    const body: Record<string, unknown> = { generation: since, changed: { ...changed }, deleted: { ...deleted } };
    if (clockMoved) body.clock = true;
    for (const k of Object.keys(changed)) delete changed[k];
    for (const k of Object.keys(deleted)) delete deleted[k];
    clockMoved = false;
    write(frame('change', body));
  };
  const schedule = () => {
    pending = true;
    if (timer || ended) return;
    timer = setTimeout(send, Math.max(0, lastSent + p.throttle - Date.now()));
  };
  const onDbChange = () => {
    if (ended) return;
    const ch = emu.db.changesSince(since);
    since = ch.gen;
    for (const r of ch.rows) changed[r.cls] = (changed[r.cls] ?? 0) + 1;
    for (const d of ch.deleted) deleted[d.cls] = (deleted[d.cls] ?? 0) + 1;
    if (ch.rows.length > 0 || ch.deleted.length > 0) schedule();
  };
  const onClock = () => {
    clockMoved = true;
    schedule();
  };
  const offDb = emu.db.onChange(onDbChange);
  const offClock = emu.clock.onAdvance(onClock);
  // (none while the reader has not taken in what it was sent: its connection is busy, not idle)
  const heartbeat = setInterval(() => {
    if (!res.writableNeedDrain) write(frame('heartbeat', { generation: emu.db.generation }));
  }, p.heartbeat * 1000);
  const onDrain = () => {
    if (pending && !timer) timer = setTimeout(send, 0);
  };
  res.on('drain', onDrain);

  const streams = open.get(emu) ?? new Set<Stream>();
  open.set(emu, streams);
  const stream: Stream = {
    res,
    end() {
      if (ended) return;
      ended = true;
      offDb();
      offClock();
      clearInterval(heartbeat);
      if (timer) clearTimeout(timer);
      res.off('drain', onDrain);
      for (const c of cleanups) c();
      streams.delete(stream);
      ofApp.delete(stream);
      if (streams.size === 0 && open.get(emu) === streams) open.delete(emu);
      if (!res.writableEnded) res.end();
    },
  };
  streams.add(stream);
  ofApp.add(stream);
  // the reader went (or the connection was cut). The listeners let a client half-close its side
  // and still get its answer, so a reader's FIN alone does not close the response: a stream's
  // reader never sends anything after its request, and its FIN means it has gone.
  const socket = req.raw.socket;
  const gone = () => stream.end();
  res.on('close', gone);
  req.raw.on('error', gone);
  socket.on('end', gone);
  socket.on('close', gone);
  cleanups.push(() => {
    socket.off('end', gone);
    socket.off('close', gone);
  });
  // (gone already, while the request was being authorised)
  if (socket.destroyed || socket.readableEnded) return stream.end();
  // the reconnection delay EventSource uses after the stream ends
  write(`retry: 2000\n${frame('hello', { generation: since })}`);
}

/** A set for the streams of `app`, ended when it closes, before its listeners wait on them. */
export function streamsOf(app: FastifyInstance): StreamSet {
  const set: StreamSet = new Set();
  app.addHook('preClose', (done) => {
    for (const s of [...set]) s.end();
    done();
  });
  return set;
}
