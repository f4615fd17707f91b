// The pool secret: what members present to the master on pool-internal calls (xapi keeps it in
// /etc/xensource/ptoken and hands it to a joining host through pool.initial_auth). Made on first
// use and kept with the database, so that it survives restarts.
import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { Emulator } from '../emulator.js';

const KEY = 'pool.secret';
const inMemory = new WeakMap<Emulator, string>();

export function poolSecret(emu: Emulator): string {
  let s = inMemory.get(emu) ?? emu.db.getMeta(KEY);
  if (!s) {
    s = `${randomUUID()}/${randomUUID()}/${randomUUID()}`;
    emu.db.setMeta(KEY, s);
  }
  inMemory.set(emu, s);
  return s;
}

export function isPoolSecret(emu: Emulator, given: unknown): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given);
  const b = Buffer.from(poolSecret(emu));
  return a.length === b.length && timingSafeEqual(a, b);
}
