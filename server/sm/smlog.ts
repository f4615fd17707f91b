// The SM log (SM's /var/log/SMlog): one line per thing storage found or repaired by itself (an
// invalid VHD skipped by a scan, an interrupted operation resolved, an orphan file introduced),
// appended to <storage>/SMlog, where an operator looks when an SR behaves oddly.
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Emulator } from '../emulator.js';

/** Appends one line, `<ISO time> SM: <message>`. Never throws: logging must not fail an operation. */
export function smLog(emu: Emulator, message: string): void {
  try {
    appendFileSync(join(emu.storageDir, 'SMlog'), `${new Date().toISOString()} SM: ${message.replace(/\n/g, ' ')}\n`);
  } catch {
    /* a missing storage directory (the emulator being torn down) */
  }
}
