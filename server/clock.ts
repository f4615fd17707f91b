// The emulator's clock. Simulated work takes `seconds * scale` of wall time: scale 0 (the default
// for tests and CI) makes every simulated duration instant; 1 is realistic. The simulated time is
// the wall clock plus an offset: `advance` moves it forward (waking the simulated waits it passes),
// `freeze` stops it, so that every simulated wait then lasts until time is advanced past its end.
interface Sleeper {
  /** simulated time (ms) at which it wakes */
  deadline: number;
  wake: () => void;
  timer?: NodeJS.Timeout;
}

export interface ClockState {
  /** simulated now, in ms since the epoch */
  now: number;
  scale: number;
  frozen: boolean;
  /** simulated waits under way */
  sleeping: number;
}

export class Clock {
  private offset = 0;
  private frozenAt: number | null = null;
  private readonly sleepers = new Set<Sleeper>();
  private readonly advanced = new Set<(ms: number) => void>();

  constructor(private _scale = 0) {}

  get scale(): number {
    return this._scale;
  }

  set scale(v: number) {
    this.setScale(v);
  }

  /** Simulated now, in ms. */
  now(): number {
    return this.frozenAt ?? Date.now() + this.offset;
  }

  get frozen(): boolean {
    return this.frozenAt !== null;
  }

  state(): ClockState {
    return { now: this.now(), scale: this._scale, frozen: this.frozen, sleeping: this.sleepers.size };
  }

  /** Waits a simulated duration. */
  sleep(seconds: number): Promise<void> {
    if (!this.frozen && this._scale <= 0) return new Promise((r) => setImmediate(r));
    return new Promise((resolve) => {
      const s: Sleeper = {
        deadline: this.now() + Math.max(0, seconds) * 1000,
        wake: () => {
          if (s.timer) clearTimeout(s.timer);
          this.sleepers.delete(s);
          resolve();
        },
      };
      this.sleepers.add(s);
      this.schedule(s);
    });
  }

  setScale(scale: number): void {
    if (!Number.isFinite(scale) || scale < 0) throw new RangeError('the time scale is a non-negative number');
    this._scale = scale;
    this.reschedule();
  }

  /** Moves simulated time forward: the waits that end on the way wake, in order of their end. */
  advance(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) throw new RangeError('time only moves forward');
    const ms = seconds * 1000;
    if (this.frozenAt !== null) this.frozenAt += ms;
    else this.offset += ms;
    const now = this.now();
    const due = [...this.sleepers].filter((s) => s.deadline <= now).sort((a, b) => a.deadline - b.deadline);
    for (const s of due) s.wake();
    this.reschedule();
    for (const f of this.advanced) f(ms);
  }

  /** Stops simulated time where it is (until unfreeze); simulated waits then last until advance. */
  freeze(): void {
    if (this.frozenAt !== null) return;
    this.frozenAt = this.now();
    this.reschedule();
  }

  unfreeze(): void {
    if (this.frozenAt === null) return;
    this.offset = this.frozenAt - Date.now();
    this.frozenAt = null;
    this.reschedule();
  }

  /** Called after each advance with the milliseconds moved (periodic work catches up). */
  onAdvance(fn: (ms: number) => void): () => void {
    this.advanced.add(fn);
    return () => this.advanced.delete(fn);
  }

  private schedule(s: Sleeper): void {
    if (s.timer) clearTimeout(s.timer);
    s.timer = undefined;
    if (this.frozen) return;
    const left = s.deadline - this.now();
    if (left <= 0 || this._scale <= 0) {
      setImmediate(s.wake);
      return;
    }
    // (Node's timers take at most 2^31-1 ms)
    s.timer = setTimeout(s.wake, Math.min(left * this._scale, 2 ** 31 - 1));
  }

  private reschedule(): void {
    for (const s of this.sleepers) this.schedule(s);
  }
}

/** XAPI's datetime form: YYYYMMDDTHH:MM:SSZ. */
export function xapiDate(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}Z`;
}
