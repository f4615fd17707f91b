// A vt100 console (a PV guest's hvc0, a host's dom0 console): the guest's output as bytes, from
// what the screen already shows, and the client's bytes as typed keys.
import type { ConsolePipe } from './rfb.js';
import type { GuestTerminal } from './terminal.js';

export class Vt100Server {
  private closed = false;
  private lastCr = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly pipe: ConsolePipe,
    private readonly terminal: GuestTerminal,
    private readonly sync: () => void,
  ) {
    this.unsubscribe = terminal.subscribe((out) => {
      if (out !== '' && !this.closed) pipe.write(Buffer.from(out, 'utf8'));
    });
    const now = terminal.transcript();
    if (now !== '') pipe.write(Buffer.from(now, 'utf8'));
  }

  receive(data: Buffer): void {
    if (this.closed) return;
    this.sync();
    for (const byte of data) {
      // a terminal sends CR for Enter; a CR LF pair is one Enter
      if (byte === 0x0a && this.lastCr) {
        this.lastCr = false;
        continue;
      }
      this.lastCr = byte === 0x0d;
      this.terminal.key(String.fromCharCode(byte));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.pipe.close();
  }
}
