// The emulator's own command line (bin/xapi-emu.js) run as a child process, and the temporary data
// directories it or an in-process server is started on. What a test file made is cleaned up after
// its tests: processes still running are killed, directories removed.
import { afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BANNER = /XAPI\s+(http:\/\/127\.0\.0\.1:\d+\/)/;

export interface Cli {
  child: ChildProcess;
  /** the XAPI address the banner printed */
  url: string;
  /** everything the process wrote so far, stdout then stderr */
  output(): string;
  /** resolves once stdout matches `re`; rejects if the process exits first */
  waitFor(re: RegExp): Promise<void>;
}

export interface Scratch {
  /** a new empty directory */
  dir(): string;
  /** starts the CLI on an ephemeral port with `password` and `args`; resolves once its banner is printed */
  spawnCli(password: string, args: string[]): Promise<Cli>;
}

/** The directories and processes of one test file; call at the file's top level. */
export function scratch(prefix: string): Scratch {
  const dirs: string[] = [];
  const children = new Set<ChildProcess>();
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return {
    dir() {
      const d = mkdtempSync(join(tmpdir(), `xapi-emu-${prefix}-`));
      dirs.push(d);
      return d;
    },
    spawnCli(password, args) {
      const child = spawn(process.execPath, ['bin/xapi-emu.js', '--port', '0', '--password', password, '--auth-fail-delay', '0', ...args], {
        cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.add(child);
      return watch(child);
    },
  };
}

function watch(child: ChildProcess): Promise<Cli> {
  let out = '';
  let err = '';
  const watchers: { re: RegExp; resolve: () => void }[] = [];
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    out += c;
    for (const w of [...watchers]) if (w.re.test(out)) {
      watchers.splice(watchers.indexOf(w), 1);
      w.resolve();
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const waitFor = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      if (re.test(out)) return resolve();
      watchers.push({ re, resolve });
      child.once('exit', (code, sig) => reject(new Error(`xapi-emu exited (${code ?? sig}) before ${re}: ${out}${err}`)));
    });
  return waitFor(BANNER).then(() => ({ child, url: BANNER.exec(out)![1], output: () => out + err, waitFor }));
}

/** How a child process ended, once it has. */
export const exited = (c: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve({ code: c.exitCode, signal: c.signalCode });
    else c.once('exit', (code, signal) => resolve({ code, signal }));
  });
