// Crash safety of file SRs: operations cut at any point (the journal and temporary files a kill
// leaves, made by hand; and a real SIGKILL of the CLI under a mixed storage load) are resolved when
// the emulator starts again on its data directory, leaving every SR consistent (fileSrProblems).
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, linkSync, watch, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { startServer, type RunningServer } from '../../server/app.js';
import { defaultConf } from '../../server/config.js';
import { fileSrProblems, openVdi, runSrGc, smReady } from '../../server/sm/index.js';
import { Vhd, coalesce } from '../../storage/vhd/index.js';
import { connect, type Client } from './helpers/jsonrpc.js';
import { MiB, vdiArgs } from './helpers/records.js';
import { exited, scratch } from './helpers/cli.js';

const PASSWORD = 'storage-crash-test';

const { dir: tmp, spawnCli } = scratch('crash');
const servers: RunningServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(dataDir: string): Promise<{ srv: RunningServer; x: Client; local: string; dir: string }> {
  // no background GC: what start-up alone repairs is what is checked
  const srv = await startServer({ port: 0, dataDir, password: PASSWORD, authFailDelay: 0, closeGrace: 0, conf: { ...defaultConf(), sr_gc_auto: 0 } });
  servers.push(srv);
  await smReady(srv.emu); // start-up reconciliation done
  const x = await connect(srv.urls[0], 'root', PASSWORD);
  const master = (await x.call('pool.get_record', (await x.call('pool.get_all'))[0])).master;
  const srs = await x.call('SR.get_all_records');
  const local = Object.keys(srs).find((r) => srs[r].name_label === 'Local storage' && srs[r].PBDs.some((p: string) => srv.emu.db.get('PBD', p)?.host === master))!;
  return { srv, x, local, dir: join(srv.emu.srRoot, srs[local].uuid) };
}

/** Stops the server without its clean-up of storage: the state a kill leaves is what is on disk. */
async function stop(srv: RunningServer): Promise<void> {
  servers.splice(servers.indexOf(srv), 1);
  await srv.close();
}

async function problemsOfAll(srv: RunningServer): Promise<string[]> {
  const out: string[] = [];
  for (const [ref] of srv.emu.db.table('SR')) out.push(...(await fileSrProblems(srv.emu, ref)));
  return out;
}

const smLogOf = (dataDir: string) => readFileSync(join(dataDir, 'SMlog'), 'utf8');

describe('operations cut by a kill, resolved at start-up', () => {
  it('an interrupted VDI.create leaves neither its file nor a record; an unjournaled orphan is introduced as scan would', async () => {
    const data = tmp();
    let { srv, x, local, dir } = await start(data);
    const n = (await x.call('SR.get_VDIs', local)).length;
    await stop(srv);

    // a create cut after its file was renamed into place, before its record was committed
    const cut = randomUUID();
    await (await Vhd.create(join(dir, `${cut}.vhd`), { uuid: cut, size: 4 * MiB })).close();
    writeFileSync(join(dir, `create_${cut}`), '{}\n');
    // one cut while its file was being written: a partial temporary file
    const early = randomUUID();
    writeFileSync(join(dir, `${early}.vhd.tmp`), Buffer.alloc(1000));
    writeFileSync(join(dir, `create_${early}`), '');
    // a VHD put there by hand while the emulator was down: no journal, so it is introduced
    const byHand = randomUUID();
    await (await Vhd.create(join(dir, `${byHand}.vhd`), { uuid: byHand, size: 6 * MiB })).close();

    ({ srv, x } = await start(data));
    expect(existsSync(join(dir, `${cut}.vhd`))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes(early) || f.startsWith('create_'))).toEqual([]);
    const introduced = await x.call('VDI.get_by_uuid', byHand);
    expect(await x.call('VDI.get_record', introduced)).toMatchObject({ location: byHand, SR: local, virtual_size: 6 * MiB, managed: true });
    expect((await x.call('SR.get_VDIs', local)).length).toBe(n + 1);
    expect(await problemsOfAll(srv)).toEqual([]);
    const log = smLogOf(data);
    expect(log).toContain(`interrupted create of ${cut} rolled back`);
    expect(log).toContain(`${byHand}.vhd without record introduced`);
  });

  it('an interrupted VDI.destroy leaves no record without a file; one cut before the unlink keeps the VDI', async () => {
    const data = tmp();
    let { srv, x, local, dir } = await start(data);
    const gone = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'gone'));
    const kept = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'kept'));
    const lost = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'lost'));
    const [goneUuid, keptUuid, lostUuid] = await Promise.all([gone, kept, lost].map((v) => x.call('VDI.get_uuid', v)));
    await stop(srv);

    // cut after the unlink, before the record was forgotten
    rmSync(join(dir, `${goneUuid}.vhd`));
    writeFileSync(join(dir, `delete_${goneUuid}`), '{}\n');
    // cut before the unlink
    writeFileSync(join(dir, `delete_${keptUuid}`), '{}\n');
    // a file removed by hand, no journal: the record is forgotten as SR.scan would
    rmSync(join(dir, `${lostUuid}.vhd`));

    ({ srv, x } = await start(data));
    const vdis = await x.call('SR.get_VDIs', local);
    expect(vdis).not.toContain(gone);
    expect(vdis).not.toContain(lost);
    expect(vdis).toContain(kept);
    expect(existsSync(join(dir, `${keptUuid}.vhd`))).toBe(true);
    await x.call('VDI.destroy', kept);
    expect(await problemsOfAll(srv)).toEqual([]);
    expect(smLogOf(data)).toContain(`VDI ${lostUuid} (${lost}) without file forgotten`);
  });

  it('an interrupted snapshot is rolled back to the original file, data intact; temporary and staging files go', async () => {
    const data = tmp();
    let { srv, x, local, dir } = await start(data);
    const v = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'origin'));
    const uuid = await x.call('VDI.get_uuid', v);
    const io = await openVdi(srv.emu, v, { readOnly: false });
    const data1 = Buffer.alloc(64 * 1024, 7);
    await io.write(MiB, data1);
    await io.close();
    await stop(srv);

    // FileSR._snapshot cut after the source was replaced by its new child, before the records
    const base = randomUUID();
    const dst = randomUUID();
    writeFileSync(join(dir, `clone_${uuid}`), `${JSON.stringify({ base, dst })}\n`);
    const src = join(dir, `${uuid}.vhd`);
    linkSync(src, join(dir, `${base}.vhd`));
    await (await Vhd.create(join(dir, `${uuid}.vhd.new`), { uuid: randomUUID(), parent: join(dir, `${base}.vhd`) })).close();
    renameSync(join(dir, `${uuid}.vhd.new`), src);
    await (await Vhd.create(join(dir, `${dst}.vhd`), { uuid: dst, parent: join(dir, `${base}.vhd`) })).close();
    // leftovers of other cut operations: a resize's new file, an import's staging file
    writeFileSync(join(dir, `${uuid}.vhd.resize`), 'partial');
    writeFileSync(join(dir, `.${uuid}.vhd.import-0a1b2c.tmp`), 'partial');

    ({ srv, x } = await start(data));
    expect(await x.call('SR.get_VDIs', local)).toEqual([v]);
    expect(readdirSync(dir).sort()).toEqual([`${uuid}.vhd`]);
    const r = await Vhd.open(src, { readOnly: true });
    expect(r.isDifferencing).toBe(false);
    expect(r.hidden).toBe(false);
    await r.close();
    const io2 = await openVdi(srv.emu, v, { readOnly: true });
    expect((await io2.read(MiB, data1.length)).equals(data1)).toBe(true);
    await io2.close();
    expect(await problemsOfAll(srv)).toEqual([]);
    // and the VDI snapshots again
    const s = await x.call('VDI.snapshot', v, {});
    expect(await x.call('VDI.get_snapshot_of', s)).toBe(v);
    expect(await problemsOfAll(srv)).toEqual([]);
  });
});

describe('a GC leaf-coalesce cut by a kill', () => {
  /** A VDI with data and a hidden base copy holding part of it (a snapshot, then destroyed). */
  async function leafOnBase(x: Client, srv: RunningServer, local: string) {
    const v = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'leaf'));
    const A = Buffer.alloc(4096, 1);
    const B = Buffer.alloc(4096, 2);
    let io = await openVdi(srv.emu, v, { readOnly: false });
    await io.write(0, A);
    await io.close();
    await x.call('VDI.destroy', await x.call('VDI.snapshot', v, {}));
    io = await openVdi(srv.emu, v, { readOnly: false });
    await io.write(MiB, B);
    await io.close();
    const rec = await x.call('VDI.get_record', v);
    return { v, uuid: rec.uuid as string, base: rec.sm_config['vhd-parent'] as string, A, B };
  }
  async function readBack(srv: RunningServer, v: string, A: Buffer, B: Buffer) {
    const io = await openVdi(srv.emu, v, { readOnly: true });
    expect((await io.read(0, A.length)).equals(A)).toBe(true);
    expect((await io.read(MiB, B.length)).equals(B)).toBe(true);
    await io.close();
  }

  it('is undone while the parent has its own name, and finished once it has the leaf\'s', async () => {
    const data = tmp();
    let { srv, x, local, dir } = await start(data);
    const one = await leafOnBase(x, srv, local);
    const two = await leafOnBase(x, srv, local);
    expect(one.base).toMatch(/^[0-9a-f-]{36}$/);
    await stop(srv);

    // one: cut between its two renames (the leaf is OLD_, the parent still has its own name)
    await coalesce(join(dir, `${one.uuid}.vhd`));
    writeFileSync(join(dir, `leaf_${one.uuid}`), `${JSON.stringify({ parent: one.base })}\n`);
    const p1 = await Vhd.open(join(dir, `${one.base}.vhd`), { readOnly: false, parents: false });
    await p1.setHidden(false);
    await p1.close();
    renameSync(join(dir, `${one.uuid}.vhd`), join(dir, `OLD_${one.uuid}.vhd`));
    // two: cut after both renames, before the records were updated
    await coalesce(join(dir, `${two.uuid}.vhd`));
    writeFileSync(join(dir, `leaf_${two.uuid}`), `${JSON.stringify({ parent: two.base })}\n`);
    const p2 = await Vhd.open(join(dir, `${two.base}.vhd`), { readOnly: false, parents: false });
    await p2.setHidden(false);
    await p2.close();
    renameSync(join(dir, `${two.uuid}.vhd`), join(dir, `OLD_${two.uuid}.vhd`));
    renameSync(join(dir, `${two.base}.vhd`), join(dir, `${two.uuid}.vhd`));

    ({ srv, x } = await start(data));
    expect(await problemsOfAll(srv)).toEqual([]);
    // one: back on its hidden parent; two: a single file, its base copy record gone
    expect((await x.call('VDI.get_record', one.v)).sm_config['vhd-parent']).toBe(one.base);
    expect(await x.call('VDI.get_by_uuid', one.base)).toMatch(/^OpaqueRef:/);
    expect((await x.call('VDI.get_record', two.v)).sm_config['vhd-parent']).toBeUndefined();
    expect(await x.call('VDI.get_by_uuid', two.base).catch(() => null)).toBeNull();
    await readBack(srv, one.v, one.A, one.B);
    await readBack(srv, two.v, two.A, two.B);
    const log = smLogOf(data);
    expect(log).toContain(`interrupted leaf of ${one.uuid} rolled back`);
    expect(log).toContain(`interrupted leaf of ${two.uuid} rolled forward`);
    // the GC, run now, does the leaf-coalesce that was undone
    expect((await runSrGc(srv.emu, local)).leafCoalesced).toEqual([one.uuid]);
    await readBack(srv, one.v, one.A, one.B);
    expect(await problemsOfAll(srv)).toEqual([]);
  });
});


describe('SIGKILL under a storage load', () => {
  it('leaves every file SR consistent after restart, with every acknowledged VDI there', async () => {
    const data = tmp();
    const rounds = 4;
    const acknowledged = new Set<string>();
    const destroyed = new Set<string>();
    const killedOn: string[] = [];
    for (let round = 0; round < rounds; round++) {
      const cli = await spawnCli(PASSWORD, ['--data', data]);
      const x = await connect(cli.url, 'root', PASSWORD);
      const srs = await x.call('SR.get_all_records');
      const local = Object.keys(srs).find((r) => srs[r].name_label === 'Local storage')!;
      // after `acks` answers, the kill comes with the next change in the SR directory: in the
      // middle of whichever create, snapshot or destroy is touching its files
      const acks = 5 + round * 4;
      let answered = 0;
      let killed = false;
      const watcher = watch(join(data, 'sr', srs[local].uuid), (_event, name) => {
        if (killed || answered < acks) return;
        killed = true;
        cli.child.kill('SIGKILL');
        killedOn.push(String(name));
      });
      const client = async (i: number) => {
        const mine: string[] = [];
        for (let k = 0; !killed; k++) {
          try {
            if (k % 3 === 2 && mine.length) {
              const v = mine.shift()!;
              // a destroy cut by the kill may or may not be done after restart
              acknowledged.delete(v);
              await x.call('VDI.destroy', v);
              destroyed.add(v);
            } else if (k % 3 === 1 && mine.length) {
              const s = await x.call('VDI.snapshot', mine[0], {});
              acknowledged.add(s);
              mine.push(s);
            } else {
              const v = await x.call('VDI.create', vdiArgs(local, (2 + i) * MiB, `load-${round}-${i}-${k}`));
              acknowledged.add(v);
              mine.push(v);
            }
            answered++;
          } catch {
            break; // the connection dies with the process
          }
        }
      };
      await Promise.all([0, 1, 2, 3].map(client));
      await exited(cli.child);
      watcher.close();
    }
    expect(killedOn.length).toBe(rounds);
    const { srv, x } = await start(data);
    expect(await problemsOfAll(srv)).toEqual([]);
    const all = new Set(await x.call('VDI.get_all'));
    for (const v of acknowledged) expect(all.has(v), `acknowledged VDI ${v}`).toBe(true);
    for (const v of destroyed) expect(all.has(v), `destroyed VDI ${v}`).toBe(false);
    expect(acknowledged.size).toBeGreaterThan(0);
  }, 120_000);
});
