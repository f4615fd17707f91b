// Start-up on a data directory whose VMs were Running when the emulator stopped (the domains went
// with the process): the start resyncs them to Halted before the first answer, writes that to disk
// in the background, and a SIGKILL of the real CLI right after its first answers leaves a data
// directory the next start finds consistent, with every acknowledged write kept.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Emulator } from '../../server/emulator.js';
import { startServer } from '../../server/app.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { scratch } from './helpers/cli.js';

const PASSWORD = 'startup-test';
const NULL = 'OpaqueRef:NULL';
const VMS = 1500;

const { dir: tmp, spawnCli } = scratch('startup');

/** A data directory of 4 hosts with VMS guests Running across them, as left by a stopped emulator. */
function runningPool(): { dir: string; vms: string[] } {
  const dir = tmp();
  const emu = new Emulator({ dataDir: dir, hosts: 4, password: PASSWORD });
  const vms: string[] = [];
  for (let i = 0; i < VMS; i++) {
    const ref = emu.ids.ref();
    emu.db.create('VM', ref, {
      uuid: emu.ids.uuid(), name_label: `guest-${i}`, power_state: 'Running', resident_on: emu.hosts[i % 4], domid: i + 1,
      HVM_boot_policy: 'BIOS order', domain_type: 'hvm', memory_static_max: 2 ** 30, VCPUs_max: 1, VCPUs_at_startup: 1,
      allowed_operations: ['hard_shutdown'],
    });
    vms.push(ref);
  }
  emu.close();
  return { dir, vms };
}

type Recs = Record<string, Record<string, any>>;

/** Each guest Halted with no domain (and `start` allowed, but allowed_operations are not stored);
 * each host's resident_VMs are the VMs resident on it. */
function expectResynced(vmRecs: Recs, hostRecs: Recs, guests: string[], stored = false): void {
  for (const vm of guests) {
    expect(vmRecs[vm]).toMatchObject({ power_state: 'Halted', resident_on: NULL, domid: -1 });
    if (!stored) expect(vmRecs[vm].allowed_operations).toContain('start');
  }
  for (const [host, h] of Object.entries(hostRecs)) {
    const resident = Object.keys(vmRecs).filter((vm) => vmRecs[vm].resident_on === host).sort();
    expect([...h.resident_VMs].sort()).toEqual(resident);
    expect(resident.every((vm) => vmRecs[vm].is_control_domain === true)).toBe(true);
  }
}

async function records(c: Client): Promise<{ vms: Recs; hosts: Recs }> {
  return { vms: await c.call('VM.get_all_records'), hosts: await c.call('host.get_all_records') };
}

describe('start-up after the domains are gone', () => {
  it('answers with the VMs Halted, and a kill right after leaves a consistent data directory', async () => {
    const { dir, vms } = runningPool();

    const cli = await spawnCli(PASSWORD, ['--data', dir]);
    let c = await connect(cli.url, 'root', PASSWORD);
    await c.call('VM.set_name_label', vms[5], 'acknowledged');
    cli.child.kill('SIGKILL');
    await new Promise((resolve) => cli.child.once('exit', resolve));

    const srv = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
    try {
      c = await connect(srv.urls[0], 'root', PASSWORD);
      const r = await records(c);
      expectResynced(r.vms, r.hosts, vms);
      expect(r.vms[vms[5]].name_label).toBe('acknowledged');
    } finally {
      await srv.close();
    }

    // after a clean stop, SQLite holds all of it
    const sql = new BetterSqlite3(join(dir, 'xapi.db'), { readonly: true });
    const stored = (cls: string): Recs =>
      Object.fromEntries((sql.prepare('SELECT ref, data FROM objects WHERE class = ?').all(cls) as { ref: string; data: string }[])
        .map((row) => [row.ref, JSON.parse(row.data)]));
    try {
      expectResynced(stored('VM'), stored('host'), vms, true);
    } finally {
      sql.close();
    }
  });
});
