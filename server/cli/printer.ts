// The record printer of xapi's CLI (cli_printer.ml): records as `key: value` lines with the keys
// aligned, lists one Print a line, or, with --minimal, one comma-joined line at the end.
import type { Command } from './protocol.js';

export type Record = [string, string][];
export type PrintValue =
  | { t: 'table'; records: Record[] }
  | { t: 'list'; lines: string[] }
  | { t: 'msg'; text: string }
  | { t: 'stderr'; text: string }
  /** sent as it is, --minimal or not (a command writing to the client directly) */
  | { t: 'raw'; text: string };

/** Key width = 4 + the longest key; the first key is padded on the right, the others on the left. */
export function formatRecord(r: Record): string {
  const width = 4 + r.reduce((m, [k]) => Math.max(m, k.length), 0);
  const lines = r.map(([k, v], i) => `${i === 0 ? k.padEnd(width) : k.padStart(width)}: ${v}`);
  return `${lines.join('\n')}\n`;
}

/** --minimal escapes the separator (and the escape). */
export const escapeCommas = (s: string): string => s.replace(/[\\,]/g, (c) => `\\${c}`);

export class Printer {
  /** --minimal: the pieces of the one line, in the order printed */
  private readonly buffer: string[] = [];
  constructor(
    private readonly send: (c: Command) => void,
    readonly minimal: boolean,
  ) {}

  print(v: PrintValue): void {
    if (v.t === 'raw') {
      this.send({ t: 'Print', text: v.text });
      return;
    }
    if (this.minimal) {
      // tables give the first field of each record; messages and stderr are left out
      if (v.t === 'table') {
        if (v.records.length > 0 && v.records.every((r) => r.length > 0)) this.buffer.push(v.records.map((r) => escapeCommas(r[0][1])).join(','));
      } else if (v.t === 'list') this.buffer.push(v.lines.map(escapeCommas).join(','));
      return;
    }
    switch (v.t) {
      case 'table':
        for (const r of v.records) this.send({ t: 'Print', text: `${formatRecord(r)}\n` });
        break;
      case 'list':
        for (const l of v.lines) this.send({ t: 'Print', text: l });
        break;
      case 'msg':
        this.send({ t: 'Print', text: v.text });
        break;
      case 'stderr':
        this.send({ t: 'PrintStderr', text: `${v.text}\n` });
        break;
    }
  }

  /** At the end of a command: --minimal prints its line (empty when nothing was printed). xapi
   * stacks the pieces, so several prints come out last first. */
  flush(): void {
    if (this.minimal) this.send({ t: 'Print', text: [...this.buffer].reverse().join(',') });
  }
}
