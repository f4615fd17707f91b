// Wire encodings of stored records, kept between calls: a record read again and again without
// changing (VM.get_record polling, get_all_records, event.from snapshots) is encoded once per
// protocol instead of once per call.
//
// The database registers every record object it stores (`track`) and drops the record's encodings
// on every change of it (`changed`, `untrack`); records are only ever changed through the database.
// The codecs ask `entryOf(value)`: an object the database did not register (a record built by a
// handler, a struct, …) has no entry and is always encoded afresh. The codecs know nothing of the
// database, and the database nothing of the wire formats.
//
// Memory is bounded: past `budget` characters of text plus bytes, the entries cached first are
// dropped (FIFO); they are encoded again when next asked for.

export interface Encoded {
  /** XML-RPC `<value>…</value>` fragment, and the encoder that wrote it (one per record class) */
  xml: string | undefined;
  xmlBy: unknown;
  /** its UTF-8 bytes, kept once the record has been a whole response */
  xmlBytes: Buffer | undefined;
  /** JSON text (JSON.stringify of the record), and its UTF-8 bytes */
  json: string | undefined;
  jsonBytes: Buffer | undefined;
  /** in the FIFO of cached entries */
  queued: boolean;
}

const entries = new WeakMap<object, Encoded>();

const DEFAULT_BUDGET = 32 * 1024 * 1024;
let budget = DEFAULT_BUDGET;
/** characters and bytes held by all entries */
let used = 0;
/** entries holding something; the FIFO also holds emptied ones (changed or destroyed records) */
let holding = 0;
let fifo: Encoded[] = [];
let head = 0;

const sizeOf = (e: Encoded): number =>
  (e.xml?.length ?? 0) + (e.xmlBytes?.length ?? 0) + (e.json?.length ?? 0) + (e.jsonBytes?.length ?? 0);

/** A record object the database now holds. */
export function track(rec: object): void {
  entries.set(rec, { xml: undefined, xmlBy: undefined, xmlBytes: undefined, json: undefined, jsonBytes: undefined, queued: false });
}

/** The record changed (or is about to): its encodings are stale. */
export function changed(rec: object): void {
  const e = entries.get(rec);
  if (e) drop(e);
}

/** The database no longer holds the record. */
export function untrack(rec: object): void {
  const e = entries.get(rec);
  if (!e) return;
  drop(e);
  entries.delete(rec);
}

/** The cache entry of a stored record; undefined for any other value. */
export function entryOf(v: unknown): Encoded | undefined {
  return typeof v === 'object' && v !== null ? entries.get(v) : undefined;
}

/** Keeps the XML fragment written by `by` (the class's record encoder). */
export function storeXml(e: Encoded, by: unknown, xml: string): void {
  // Flattened here, once: the encoder's result is a rope of hundreds of pieces that every response
  // holding it would otherwise walk again (V8 flattens a string in place to measure it).
  Buffer.byteLength(xml);
  store(e, () => {
    e.xml = xml;
    e.xmlBy = by;
    e.xmlBytes = undefined;
  });
}

/** The UTF-8 bytes of `xml`, the entry's fragment: kept with it while it is current. */
export function xmlBytesOf(e: Encoded, xml: string): Buffer {
  if (e.xmlBytes !== undefined && e.xml === xml) return e.xmlBytes;
  const b = Buffer.from(xml, 'utf8');
  if (e.xml === xml) store(e, () => (e.xmlBytes = b));
  return b;
}

export function storeJson(e: Encoded, json: string): void {
  store(e, () => {
    e.json = json;
    e.jsonBytes = undefined;
  });
}

/** The UTF-8 bytes of `json`, the entry's text: kept with it while it is current. */
export function jsonBytesOf(e: Encoded, json: string): Buffer {
  if (e.jsonBytes !== undefined && e.json === json) return e.jsonBytes;
  const b = Buffer.from(json, 'utf8');
  if (e.json === json) store(e, () => (e.jsonBytes = b));
  return b;
}

function store(e: Encoded, set: () => void): void {
  const before = sizeOf(e);
  set();
  const after = sizeOf(e);
  used += after - before;
  if (before === 0 && after > 0) holding++;
  if (!e.queued) {
    e.queued = true;
    fifo.push(e);
  }
  evict();
  // the FIFO keeps emptied entries until their turn: rebuilt when they are most of it
  if (fifo.length - head > 2 * holding + 1024) {
    const kept: Encoded[] = [];
    for (let i = head; i < fifo.length; i++) {
      const x = fifo[i];
      if (sizeOf(x) > 0) kept.push(x);
      else x.queued = false;
    }
    fifo = kept;
    head = 0;
  }
}

function drop(e: Encoded): void {
  const size = sizeOf(e);
  if (size > 0) {
    holding--;
    used -= size;
  }
  e.xml = e.xmlBy = e.xmlBytes = e.json = e.jsonBytes = undefined;
}

function evict(): void {
  while (used > budget && head < fifo.length) {
    const old = fifo[head];
    fifo[head++] = undefined as unknown as Encoded;
    old.queued = false;
    drop(old);
  }
  if (head > 1024 && head * 2 > fifo.length) {
    fifo = fifo.slice(head);
    head = 0;
  }
}

/** Characters and bytes cached now, and the limit (tests, diagnostics). */
export function cacheUsage(): { used: number; budget: number; holding: number; queued: number } {
  return { used, budget, holding, queued: fifo.length - head };
}

/** Sets the limit in characters + bytes (0 disables caching); drops what is over it. */
export function setCacheBudget(chars: number = DEFAULT_BUDGET): void {
  budget = chars;
  evict();
}
