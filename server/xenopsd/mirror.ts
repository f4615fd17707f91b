// The mirror of a storage migration, on the tapdisk serving the disk (blktap's mirror mode, which
// storage_smapiv1_migrate.ml starts with tap-ctl pause / unpause -2 <secondary>). The real tapdisk
// sends every write to the secondary as well; the emulated one logs which chunks of the disk were
// written from the moment the mirror starts. The copy of the snapshot taken after that moment
// carries everything older; the chunks in the log are copied again from the source once its tapdisk
// has closed (the guest can write no more), just before the destination's tapdisk opens: together
// they hold every write the guest made, whenever it made it.
import type { Tapdisk } from './tapdisk.js';

/** granularity of the dirty log: a write marks every chunk it touches */
export const MIRROR_CHUNK = 64 * 1024;

export class Mirror {
  private readonly dirty = new Set<number>();
  private active = true;

  private constructor(readonly tapdisk: Tapdisk) {}

  /**
   * Starts logging the writes of `tapdisk`. Returns once the writes it accepted before are in the
   * image (a flush queues behind them), so that a snapshot taken next holds them.
   */
  static async start(tapdisk: Tapdisk): Promise<Mirror> {
    if (tapdisk.mirror) throw new Error(`tapdisk ${tapdisk.pid}: already mirrored`);
    const m = new Mirror(tapdisk);
    tapdisk.mirror = m;
    try {
      await tapdisk.flush();
    } catch (e) {
      m.stop();
      throw e;
    }
    return m;
  }

  /** called by the tapdisk for each write it accepts */
  written(offset: number, length: number): void {
    if (!this.active || length <= 0) return;
    const last = Math.floor((offset + length - 1) / MIRROR_CHUNK);
    for (let c = Math.floor(offset / MIRROR_CHUNK); c <= last; c++) this.dirty.add(c);
  }

  /** the byte ranges written since the mirror started, in order, adjacent chunks merged */
  ranges(virtualSize: number): [number, number][] {
    const out: [number, number][] = [];
    for (const c of [...this.dirty].sort((a, b) => a - b)) {
      const start = c * MIRROR_CHUNK;
      if (start >= virtualSize) continue;
      const end = Math.min(start + MIRROR_CHUNK, virtualSize);
      const prev = out[out.length - 1];
      if (prev && prev[0] + prev[1] === start) prev[1] += end - start;
      else out.push([start, end - start]);
    }
    return out;
  }

  get dirtyBytes(): number {
    return this.dirty.size * MIRROR_CHUNK;
  }

  /** the mirror ends (tap-ctl unpause without a secondary) */
  stop(): void {
    this.active = false;
    if (this.tapdisk.mirror === this) this.tapdisk.mirror = null;
  }
}
