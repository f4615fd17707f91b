// The invariant checker itself: a fresh pool is clean; a hand-broken database (dangling ref,
// one-sided relation, VDI without its file, invalid file, Suspended VM without suspend VDI,
// duplicate userdevice) is reported, in-process and by `xapi-emu check`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, type RunningServer } from '../../server/app.js';
import { smReady } from '../../server/sm/sm.js';
import { checkInvariants } from '../../server/check/invariants.js';
import { loginAs, localSr, vdiArgs, vbdArgs, vmArgs, MiB, type Session } from '../../robustness/lib.js';

const BIN = fileURLToPath(new URL('../../bin/xapi-emu.js', import.meta.url));
const PASSWORD = 'check-test';
let dir: string;
let server: RunningServer;
let s: Session;

const cli = (...args: string[]) =>
  new Promise<{ code: number; out: string; err: string }>((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 60_000 }, (e, out, err) => resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, out, err }));
  });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xapi-emu-check-'));
  server = await startServer({ port: 0, dataDir: dir, password: PASSWORD, authFailDelay: 0 });
  await smReady(server.emu);
  s = await loginAs(server.urls[0], 'root', PASSWORD);
});
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('checkInvariants', () => {
  it('finds nothing wrong in a fresh default pool', async () => {
    expect(await checkInvariants(server.emu)).toEqual([]);
  });

  it('reports a dangling ref, a one-sided relation, a Suspended VM without suspend_VDI and a shared userdevice', async () => {
    const sr = await localSr(s);
    const vm: string = await s.call('VM.create', vmArgs('broken'));
    const other: string = await s.call('VM.create', vmArgs('other'));
    const vdi: string = await s.call('VDI.create', vdiArgs(sr, 4 * MiB));
    const vbd: string = await s.call('VBD.create', vbdArgs(vm, vdi, '0'));
    const vbd2: string = await s.call('VBD.create', vbdArgs(other, vdi, '0'));
    const { db } = server.emu;
    db.update('VM', vm, { suspend_SR: 'OpaqueRef:gone' }); // dangling
    db.row('VBD', vbd2)!.rec.VM = vm; // VBD.VM moved without its mirror: VM.VBDs of `other` still lists it
    db.update('VM', other, { power_state: 'Suspended' });
    const kinds = (await checkInvariants(server.emu)).map((v) => `${v.kind} ${v.ref}`);
    expect(kinds).toContain(`ref ${vm}`);
    expect(kinds).toContain(`relation ${vbd2}`);
    expect(kinds).toContain(`relation ${other}`);
    expect(kinds).toContain(`suspend ${other}`);
    // VM.VBDs of `vm` does not list vbd2, so no shared userdevice yet; list it to make one
    db.row('VM', vm)!.rec.VBDs = [vbd, vbd2];
    expect((await checkInvariants(server.emu)).map((v) => `${v.kind} ${v.ref}`)).toContain(`userdevice ${vm}`);
    // repair for the next cases
    db.row('VM', vm)!.rec.VBDs = [vbd];
    db.row('VBD', vbd2)!.rec.VM = other;
    db.update('VM', vm, { suspend_SR: 'OpaqueRef:NULL' });
    db.update('VM', other, { power_state: 'Halted' });
    expect(await checkInvariants(server.emu)).toEqual([]);
  });

  it('reports a VDI without its file and a file that is not a VHD, in-process and by xapi-emu check', async () => {
    const sr = await localSr(s);
    const vdi: string = await s.call('VDI.create', vdiArgs(sr, 4 * MiB, 'fileless'));
    const uuid: string = await s.call('VDI.get_uuid', vdi);
    const srUuid: string = await s.call('SR.get_uuid', sr);
    unlinkSync(join(dir, 'sr', srUuid, `${uuid}.vhd`));
    const junk = '0a0a0a0a-0000-4000-8000-000000000001';
    writeFileSync(join(dir, 'sr', srUuid, `${junk}.vhd`), '');
    const messages = (await checkInvariants(server.emu)).map((v) => v.message);
    expect(messages.some((m) => m.includes(`VDI ${uuid}`) && m.includes('has no file'))).toBe(true);
    expect(messages.some((m) => m.includes(`${junk}.vhd is not a valid disk`))).toBe(true);

    // the command refuses while an emulator runs on the directory (its pid file names a live process)
    writeFileSync(join(dir, 'xapi-emu.pid'), `${process.pid}\n`);
    const refused = await cli('check', '--data', dir);
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/is running/);
    unlinkSync(join(dir, 'xapi-emu.pid'));

    server.emu.db.flush();
    const r = await cli('check', '--data', dir);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(new RegExp(`file: SR ${srUuid}: VDI ${uuid} .* has no file`));
    expect(r.out).toContain(`${junk}.vhd is not a valid disk`);

    unlinkSync(join(dir, 'sr', srUuid, `${junk}.vhd`));
    await s.call('VDI.forget', vdi).catch(() => server.emu.db.destroy('VDI', vdi));
    server.emu.db.flush();
    const clean = await cli('check', '--data', dir);
    expect(clean.out).toBe('');
    expect(clean.code).toBe(0);
  }, 120_000); // three processes of xapi-emu check: slow on a loaded machine
});
