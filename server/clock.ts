// The emulator's clock. Simulated work takes `seconds * scale` of wall time: scale 0 (the default
// for tests and CI) makes every simulated duration instant; 1 is realistic.
export class Clock {
  constructor(public scale = 0) {}

  /** Wall-clock now, in ms. */
  now(): number {
    return Date.now();
  }

  /** Waits a simulated duration. */
  sleep(seconds: number): Promise<void> {
    const ms = seconds * this.scale * 1000;
    if (ms <= 0) return new Promise((r) => setImmediate(r));
    return new Promise((r) => setTimeout(r, ms));
  }
}

/** XAPI's datetime form: YYYYMMDDTHH:MM:SSZ. */
export function xapiDate(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}Z`;
}
