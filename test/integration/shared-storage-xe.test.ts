// Shared storage through our `xe` (bin/xe.js) as a user runs it: sr-create type=nfs on a server
// nothing declared, then sr-probe of the export, and an SM error as xe prints it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunningServer } from '../../server/app.js';
import type { Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';

const PASSWORD = 'shared-storage-xe';
const XE = fileURLToPath(new URL('../../bin/xe.js', import.meta.url));

let srv: RunningServer;
let x: Client;
let dir: string;

function xe(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  const port = new URL(srv.urls[0]).port;
  return new Promise((resolve) => {
    execFile(process.execPath, [XE, '-s', '127.0.0.1', '-p', port, '-u', 'root', '-pw', PASSWORD, ...args], { cwd: dir, env: { PATH: process.env.PATH, HOME: dir } },
      (err, stdout, stderr) => resolve({ stdout, stderr, code: err ? Number((err as { code?: number }).code ?? -1) : 0 }));
  });
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 }));
  dir = mkdtempSync(join(tmpdir(), 'shared-storage-xe-'));
});

afterAll(async () => {
  await srv?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('xe on the storage fabric', () => {
  it('sr-create type=nfs shared: an SR plugged on every host; sr-probe lists it', async () => {
    const r = await xe(['sr-create', 'type=nfs', 'name-label=NFS', 'shared=true', 'content-type=user',
      'device-config:server=10.1.2.3', 'device-config:serverpath=/exports/xe']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const uuid = r.stdout.trim();
    const sr: string = await x.call('SR.get_by_uuid', uuid);
    const pbds: string[] = await x.call('SR.get_PBDs', sr);
    expect(pbds).toHaveLength(2);
    for (const p of pbds) expect(await x.call('PBD.get_currently_attached', p)).toBe(true);
    const probe = await xe(['sr-probe', 'type=nfs', 'device-config:server=10.1.2.3', 'device-config:serverpath=/exports/xe']);
    expect(probe.code).toBe(0);
    expect(probe.stdout).toContain(`<UUID>${uuid}</UUID>`);
  });

  it('prints the SM error of a missing key', async () => {
    const r = await xe(['sr-create', 'type=nfs', 'name-label=bad', 'shared=true', 'device-config:serverpath=/x']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('The request is missing the server parameter');
  });
});
