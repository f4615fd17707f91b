// What pool membership asks of the running server around an emulator: its port, serving one more
// host's address (the master, for a host it adopted), and handing itself over (the joiner).
import type { Emulator } from '../emulator.js';
import type { MemberMarker } from './marker.js';

export interface PoolRuntime {
  /** the port the pool's hosts listen on */
  port(): number;
  /** the data directory (null: in memory) */
  dataDir: string | null;
  /** The master: listen on an adopted host's address too (at our port); answers the port. */
  listenHost(address: string): Promise<number>;
  /** The master, after pool.eject of a host: its address is no longer served (an adopted host's
   * instance notices and serves again; a host of this process comes back as a pool of its own). */
  hostLeft(address: string, adopted: boolean): Promise<void>;
  /** The joiner, once the master committed: stop serving and forward to the master (run after the
   * join's answer has left). */
  becomeMember(m: MemberMarker): Promise<void>;
}

const runtimes = new WeakMap<Emulator, PoolRuntime>();

export function setPoolRuntime(emu: Emulator, r: PoolRuntime): void {
  runtimes.set(emu, r);
}

export function poolRuntime(emu: Emulator): PoolRuntime | undefined {
  return runtimes.get(emu);
}
