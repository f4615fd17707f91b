// Who has a VDI's file open, and pausing it, as SM pauses a VDI's tapdisk (tap_pause) before it
// changes the VDI's chain: a snapshot renames the leaf into a base copy, a resize replaces the file,
// the GC rewrites or renames files. Writers would then write into the wrong file, so those
// operations wait until the VDI has no writer and keep new ones waiting until they are done.
// Readers are harmless: an open file keeps its contents whatever happens to its name.
import type { Emulator } from '../emulator.js';

interface VdiState {
  writers: number;
  readers: number;
  /** pauses in progress (new writers wait for them) */
  paused: number;
  /** woken whenever the counts change */
  waiters: Set<() => void>;
}

const states = new WeakMap<Emulator, Map<string, VdiState>>();

function stateOf(emu: Emulator, uuid: string): VdiState {
  let m = states.get(emu);
  if (!m) states.set(emu, (m = new Map()));
  let s = m.get(uuid);
  if (!s) m.set(uuid, (s = { writers: 0, readers: 0, paused: 0, waiters: new Set() }));
  return s;
}

function wake(s: VdiState): void {
  for (const w of [...s.waiters]) w();
}

function until(s: VdiState, cond: () => boolean): Promise<void> {
  if (cond()) return Promise.resolve();
  return new Promise((resolve) => {
    const w = () => {
      if (!cond()) return;
      s.waiters.delete(w);
      resolve();
    };
    s.waiters.add(w);
  });
}

/** Registers an open handle on a VDI (by uuid); returns its release function. */
export async function attachVdi(emu: Emulator, uuid: string, write: boolean): Promise<() => void> {
  const s = stateOf(emu, uuid);
  if (write) await until(s, () => s.paused === 0);
  if (write) s.writers++;
  else s.readers++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (write) s.writers--;
    else s.readers--;
    wake(s);
  };
}

/** Whether a VDI has a writer now. */
export function hasWriter(emu: Emulator, uuid: string): boolean {
  return (states.get(emu)?.get(uuid)?.writers ?? 0) > 0;
}

/** Pauses VDIs: waits until none has a writer and keeps new writers out until resumed. */
export async function pauseVdis(emu: Emulator, uuids: string[]): Promise<() => void> {
  const ss = uuids.map((u) => stateOf(emu, u));
  for (const s of ss) s.paused++;
  for (const s of ss) await until(s, () => s.writers === 0);
  let resumed = false;
  return () => {
    if (resumed) return;
    resumed = true;
    for (const s of ss) {
      s.paused--;
      wake(s);
    }
  };
}

/** Pauses VDIs only if none has a writer (the GC does not wait for them). */
export function tryPauseVdis(emu: Emulator, uuids: string[]): (() => void) | null {
  const ss = uuids.map((u) => stateOf(emu, u));
  if (ss.some((s) => s.writers > 0)) return null;
  for (const s of ss) s.paused++;
  let resumed = false;
  return () => {
    if (resumed) return;
    resumed = true;
    for (const s of ss) {
      s.paused--;
      wake(s);
    }
  };
}
