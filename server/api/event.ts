// event: event.from (the token-based API every current client uses), event.inject, and the
// legacy register/next queue (xapi_event.ml).
import { classes, model, type Ty } from '../../schema/index.js';
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { Typed } from '../transport/typed.js';
import type { Emulator } from '../emulator.js';
import type { Row } from '../../storage/database.js';

type Sub = { all: true } | { cls: string; ref?: string };

function parseSubs(list: string[]): Sub[] {
  return list.map((s) => {
    if (s === '*') return { all: true };
    const i = s.indexOf('/');
    if (i < 0) return { cls: s.toLowerCase() };
    return { cls: s.slice(0, i).toLowerCase(), ref: s.slice(i + 1) };
  });
}

const eventClasses = new Set(model.classes.filter((c) => c.gen_events).map((c) => c.name));
const dbTables = model.classes.filter((c) => c.in_database).map((c) => c.name);

function matcher(subs: Sub[]): (cls: string, ref: string) => boolean {
  if (subs.some((s) => 'all' in s)) return (cls) => eventClasses.has(cls);
  return (cls, ref) => {
    if (!eventClasses.has(cls)) return false;
    const lower = cls.toLowerCase();
    return subs.some((s) => 'cls' in s && s.cls === lower && (s.ref === undefined || s.ref === ref));
  };
}

const pad = (n: number) => String(n).padStart(20, '0');

function parseToken(token: string): number {
  if (token === '') return 0;
  const parts = token.split(',');
  if (parts.length !== 2 || !parts.every((p) => /^\s*[+-]?\d+\s*$/.test(p))) {
    throw new XapiError('EVENT_FROM_TOKEN_PARSE_FAILURE', [token]);
  }
  return Number(parts[0]);
}

interface Event { id: string; timestamp: string; class: string; operation: string; ref: string; snapshot?: Typed }

function eventOf(row: Row, op: 'add' | 'mod', id: number, timestamp: string): Event {
  return {
    id: String(id), timestamp, class: row.cls.toLowerCase(), operation: op, ref: row.ref,
    snapshot: new Typed({ k: 'record', class: row.cls }, row.rec),
  };
}

/** The events since a generation: adds, then mods, then dels; one per object. With `messagesFirst`
 * (event.from), message events lead, with id "0": xapi keeps messages outside its database and
 * lists them before the database events (xapi_event.ml from_inner). */
function collect(emu: Emulator, since: number, match: (cls: string, ref: string) => boolean, timestamp: () => string, messagesFirst = false): { events: Event[]; gen: number } {
  const ch = emu.db.changesSince(since, match);
  const adds: Event[] = [];
  const mods: Event[] = [];
  for (const row of ch.rows) {
    if (row.created > since) adds.push(eventOf(row, 'add', row.created, timestamp()));
    else mods.push(eventOf(row, 'mod', row.modified, timestamp()));
  }
  const dels: Event[] = ch.deleted.map((d) => ({ id: String(d.gen), timestamp: timestamp(), class: d.cls.toLowerCase(), operation: 'del', ref: d.ref }));
  const events = [...adds, ...mods, ...dels];
  if (!messagesFirst) return { events, gen: ch.gen };
  const messages = events.filter((e) => e.class === 'message').map((e) => ({ ...e, id: '0' }));
  return { events: messages.length ? [...messages, ...events.filter((e) => e.class !== 'message')] : events, gen: ch.gen };
}

/** Sessions' pending waits, so that a logout can wake them with SESSION_INVALID. */
const waiters = new WeakMap<Emulator, Map<string, Set<() => void>>>();

function sessionWaiters(emu: Emulator): Map<string, Set<() => void>> {
  let m = waiters.get(emu);
  if (!m) waiters.set(emu, (m = new Map()));
  return m;
}

export function wakeSessionWaiters(emu: Emulator, session: string): void {
  for (const wake of sessionWaiters(emu).get(session) ?? []) wake();
}

/** Waits until `ready()` gives a value, the timeout (wall-clock seconds) passes, or the session ends. */
function waitFor<T>(call: Call, timeoutS: number, ready: () => T | undefined, onTimeout: () => T): Promise<T> {
  const emu = call.emu;
  const first = ready();
  if (first !== undefined) return Promise.resolve(first);
  return new Promise<T>((resolve, reject) => {
    const byS = sessionWaiters(emu);
    let set = byS.get(call.session);
    if (!set) byS.set(call.session, (set = new Set()));
    const done = () => {
      off();
      clearTimeout(timer);
      set!.delete(wakeOnLogout);
      if (set!.size === 0) byS.delete(call.session);
    };
    const wakeOnLogout = () => {
      done();
      reject(new XapiError('SESSION_INVALID', [call.session]));
    };
    const off = emu.db.onChange(() => {
      const v = ready();
      if (v !== undefined) {
        done();
        resolve(v);
      }
    });
    const timer = setTimeout(() => {
      done();
      resolve(onTimeout());
    }, Math.max(0, Math.min(timeoutS, 86400)) * 1000);
    set.add(wakeOnLogout);
  });
}

const int32Counts = (emu: Emulator) => {
  const out: Record<string, number> = {};
  for (const c of dbTables) out[c.toLowerCase()] = emu.db.count(c);
  return out;
};

/** event.from's result is a struct, not the `event record set` the datamodel declares. */
const eventTy: Ty = {
  k: 'struct',
  fields: {
    id: { k: 'string' }, timestamp: { k: 'string' }, class: { k: 'string' }, operation: { k: 'string' },
    ref: { k: 'string' }, snapshot: { k: 'option', of: { k: 'any' } },
  },
};
export const eventFromTy: Ty = {
  k: 'struct',
  fields: {
    events: { k: 'set', of: eventTy },
    valid_ref_counts: { k: 'map', key: { k: 'string' }, value: { k: 'int32' } },
    token: { k: 'string' },
  },
};
const eventSetTy: Ty = { k: 'set', of: eventTy };

/** Legacy event.register/next state of a session. */
interface Registration { subs: string[]; cursor: number }
const registrations = new WeakMap<Emulator, Map<string, Registration>>();
function regs(emu: Emulator): Map<string, Registration> {
  let m = registrations.get(emu);
  if (!m) registrations.set(emu, (m = new Map()));
  return m;
}

/** OCaml's string_of_float of a unix time: "1716200000." */
const ocamlTime = () => `${Math.floor(Date.now() / 1000)}.`;

registerProvider('event', {
  async from(call, classList: string[], token: string, timeout: number) {
    const subs = parseSubs(classList);
    const since = parseToken(token);
    const match = matcher(subs);
    const result = (events: Event[], gen: number) =>
      new Typed(eventFromTy, { events, valid_ref_counts: int32Counts(call.emu), token: `${pad(gen)},${pad(0)}` });
    return waitFor(
      call,
      timeout,
      () => {
        const { events, gen } = collect(call.emu, since, match, () => '0.0', true);
        return events.length ? result(events, gen) : undefined;
      },
      () => result([], call.emu.db.generation),
    );
  },
  inject(call, cls: string, ref: string) {
    if (!classes.has(cls) || !call.emu.db.has(cls, ref)) throw new XapiError('HANDLE_INVALID', [cls, ref]);
    const g = call.emu.db.generation;
    call.emu.db.touch(cls, ref);
    return `${pad(g - 1)},${pad(0)}`;
  },
  get_current_id(call) {
    return call.emu.db.generation + 1;
  },
  register(call, classList: string[]) {
    parseSubs(classList);
    const m = regs(call.emu);
    const r = m.get(call.session);
    if (r) r.subs = [...new Set([...r.subs, ...classList])];
    else m.set(call.session, { subs: [...classList], cursor: call.emu.db.generation });
  },
  unregister(call, classList: string[]) {
    const r = regs(call.emu).get(call.session);
    if (r) r.subs = r.subs.filter((s) => !classList.includes(s));
  },
  async next(call) {
    const r = regs(call.emu).get(call.session);
    if (!r) throw new XapiError('SESSION_NOT_REGISTERED', [call.session]);
    if (r.cursor < call.emu.db.forgottenUpTo) throw new XapiError('EVENTS_LOST', []);
    const match = matcher(parseSubs(r.subs));
    const events = await waitFor(
      call,
      86400,
      () => {
        const { events, gen } = collect(call.emu, r.cursor, match, ocamlTime);
        if (!events.length) return undefined;
        r.cursor = gen;
        return events;
      },
      () => [] as Event[],
    );
    return new Typed(eventSetTy, events);
  },
});

