// A guest's text console for one boot of its domain: the boot lines as they come due on the
// emulator's clock, then a login prompt that echoes what is typed (a login name, then a password
// that is not echoed; every login is refused, since there is no shell behind it). One per running
// domain, shared by all its console connections as a real guest's tty is: what one client types,
// every client sees. The RFB screen draws its last rows; the vt100 stream sends its output bytes.
import type { BootScript } from './boot-text.js';

export const COLS = 80;
export const ROWS = 25;
/** lines kept after the boot (a terminal's scrollback) */
const LOG_LINES = 200;

type Mode = 'login' | 'password';

export class GuestTerminal {
  private shown = 0;
  private prompted = false;
  private readonly log: string[] = [];
  private mode: Mode;
  private typed = '';
  /** bumped on every change of what the screen shows */
  version = 0;
  private readonly listeners = new Set<(out: string) => void>();

  constructor(
    readonly script: BootScript,
    /** ms of the emulator's clock when the domain started */
    readonly startTime: number,
  ) {
    this.mode = script.windows ? 'password' : 'login';
  }

  /** Output from now on (vt100 bytes, the RFB screen's changes); returns the unsubscriber. */
  subscribe(fn: (out: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get watched(): boolean {
    return this.listeners.size > 0;
  }

  /** Seconds from the domain's start to the next line to come (null: nothing more comes). */
  nextDue(): number | null {
    const next = this.script.lines[this.shown];
    if (next) return next.at;
    if (!this.prompted && this.script.promptAt !== null) return this.script.promptAt;
    return null;
  }

  /** Brings the console up to `elapsed` seconds after the domain's start. */
  advanceTo(elapsed: number): void {
    let out = '';
    const lines = this.script.lines;
    while (this.shown < lines.length && lines[this.shown].at <= elapsed) out += `${lines[this.shown++].text}\r\n`;
    if (!this.prompted && this.shown === lines.length && this.script.promptAt !== null && this.script.promptAt <= elapsed) {
      this.prompted = true;
      out += this.prompt();
    }
    this.emit(out);
  }

  /** Keyboard input: a character, '\r' (Enter) or '\b' (Backspace). Ignored until the prompt. */
  key(ch: string): void {
    if (!this.prompted) return;
    if (ch === '\r' || ch === '\n') return this.enter();
    if (ch === '\b' || ch === '\x7f') {
      if (this.typed.length === 0) return;
      this.typed = this.typed.slice(0, -1);
      return this.emit(this.echoes() ? '\b \b' : '', true);
    }
    if (ch < ' ' || ch > '~' || this.typed.length >= 255) return;
    this.typed += ch;
    this.emit(this.echoes() ? (this.mode === 'password' ? '*' : ch) : '', true);
  }

  /** The screen: the last ROWS lines, wrapped at COLS columns, and where the cursor is. */
  screen(): { rows: string[]; cursor: { row: number; col: number } | null } {
    const all = [...this.script.lines.slice(0, this.shown).map((l) => l.text), ...this.log];
    if (this.prompted) all.push(this.prompt() + this.visibleTyped());
    const wrapped: string[] = [];
    for (const l of all) {
      if (l.length <= COLS) wrapped.push(l);
      else for (let i = 0; i < l.length; i += COLS) wrapped.push(l.slice(i, i + COLS));
    }
    const rows = wrapped.slice(-ROWS);
    let cursor: { row: number; col: number } | null = null;
    if (this.prompted && rows.length > 0) {
      const last = rows[rows.length - 1];
      if (last.length < COLS) cursor = { row: rows.length - 1, col: last.length };
    }
    return { rows, cursor };
  }

  /** Everything shown so far, as the byte stream a vt100 client gets when it connects. */
  transcript(): string {
    const lines = [...this.script.lines.slice(0, this.shown).map((l) => l.text), ...this.log];
    return lines.map((l) => `${l}\r\n`).join('') + (this.prompted ? this.prompt() + this.visibleTyped() : '');
  }

  private prompt(): string {
    if (this.script.windows) return 'Password: ';
    return this.mode === 'login' ? `${this.script.hostName} login: ` : 'Password: ';
  }

  private echoes(): boolean {
    return this.mode === 'login' || this.script.windows;
  }

  private visibleTyped(): string {
    if (this.mode === 'login') return this.typed;
    return this.script.windows ? '*'.repeat(this.typed.length) : '';
  }

  private enter(): void {
    const line = this.prompt() + this.visibleTyped();
    this.push(line);
    let out = '\r\n';
    if (this.script.windows) {
      if (this.typed !== '') {
        this.push('The password is incorrect. Try again.');
        out += 'The password is incorrect. Try again.\r\n';
      }
    } else if (this.mode === 'login') {
      if (this.typed !== '') this.mode = 'password';
    } else {
      this.push('');
      this.push('Login incorrect');
      out += '\r\nLogin incorrect\r\n';
      this.mode = 'login';
    }
    this.typed = '';
    this.emit(out + this.prompt(), true);
  }

  private push(line: string): void {
    this.log.push(line);
    if (this.log.length > LOG_LINES) this.log.splice(0, this.log.length - LOG_LINES);
  }

  private emit(out: string, changed = false): void {
    if (out === '' && !changed) return;
    this.version++;
    for (const f of [...this.listeners]) f(out);
  }
}
