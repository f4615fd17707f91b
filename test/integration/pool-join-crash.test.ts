// pool.join cut by a kill of either process: the joiner (a child process) killed while its files
// are on their way, or as its commit reaches the master; the master (a child process) killed while
// it stages the joiner's files. At their next start both sides agree: the host is the master's
// and the joiner a door to it, or the joiner is the standalone pool it was, with its VM and disk.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, watch } from 'node:fs';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../server/app.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { exited, scratch as scratchOf } from './helpers/cli.js';
import { localStorage, xenbr0 } from './helpers/pool.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'join-crash-test';
const { dir: dataDir, spawnCli } = scratchOf('pool-join-crash');
const servers: RunningServer[] = [];

afterAll(async () => {
  for (const s of servers.reverse()) await s.close();
});

async function inProcess(host: string, data: string, port = 0): Promise<{ srv: RunningServer; x: Client }> {
  const srv = await startServer({ host, port, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, dataDir: data });
  servers.push(srv);
  return { srv, x: await connect(srv.urls[0], 'root', PASSWORD) };
}

async function vmWithDisk(x: Client, name: string): Promise<{ vm: string; vdi: string }> {
  const vm: string = await x.call('VM.create', vmArgs(name));
  const vdi: string = await x.call('VDI.create', vdiArgs(await localStorage(x), 4 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
  return { vm, vdi };
}

/** Runs `f` when the master's listener receives a request whose path starts with `path`. */
function onRequestTo(srv: RunningServer, path: string, f: () => void): void {
  for (const s of srv.servers) s.prependListener('request', (req) => {
    if (req.url?.startsWith(path)) f();
  });
}

/** The joiner, restarted on its data directory: a standalone pool with its VM, or a door. */
async function joinerAgain(data: string, port: number): Promise<RunningServer> {
  const srv = await startServer({ host: '127.0.0.1', port, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, dataDir: data });
  servers.push(srv);
  return srv;
}

describe('a joiner killed mid-join', () => {
  for (const cut of ['/pool_adopt/file', '/pool_adopt/commit']) {
    it(`leaves both sides consistent (killed at ${cut})`, async () => {
      const a = await inProcess(`127.0.6.${cut.endsWith('file') ? 1 : 2}`, dataDir());
      const bData = dataDir();
      const cli = await spawnCli(PASSWORD, ['--data', bData, '--nbd-port', '0']);
      const bPort = Number(new URL(cli.url).port);
      const bx = await connect(cli.url, 'root', PASSWORD);
      const { vm, vdi } = await vmWithDisk(bx, 'survivor');
      const bHost = (await bx.call('host.get_all'))[0];
      onRequestTo(a.srv, cut, () => cli.child.kill('SIGKILL'));
      const master = `${new URL(a.srv.urls[0]).hostname}:${new URL(a.srv.urls[0]).port}`;
      const answer = faultOf(bx.call('pool.join', master, 'root', PASSWORD)).catch((e: Error) => [e.message]);
      await exited(cli.child);
      await answer;
      const b = await joinerAgain(bData, bPort);
      const adopted = (await a.x.call('host.get_all')).includes(bHost);
      if (adopted) {
        // the master has the host: the joiner is its door
        expect(await faultOf(connect(b.urls[0], 'root', PASSWORD))).toEqual(['HOST_IS_SLAVE', new URL(a.srv.urls[0]).hostname]);
        expect(await a.x.call('VM.get_name_label', vm)).toBe('survivor');
        expect(await a.x.call('VDI.get_virtual_size', vdi)).toBe(4 * MiB);
      } else {
        // the joiner is still its own pool, with its VM and disk; the master kept nothing of it
        const y = await connect(b.urls[0], 'root', PASSWORD);
        expect(await y.call('VM.get_name_label', vm)).toBe('survivor');
        expect(await y.call('VDI.get_virtual_size', vdi)).toBe(4 * MiB);
        const srUuid = await y.call('SR.get_uuid', await y.call('VDI.get_SR', vdi));
        expect((await faultOf(a.x.call('SR.get_by_uuid', srUuid)))[0]).toBe('UUID_INVALID');
        expect(existsSync(join(a.srv.emu.storageDir, 'sr', srUuid))).toBe(false);
        expect(existsSync(join(bData, 'pool-join.json'))).toBe(false);
      }
      // a kill before the commit was sent cannot have been adopted
      if (cut.endsWith('file')) expect(adopted).toBe(false);
    });
  }
});

describe('a master killed mid-join', () => {
  it('undoes the half-staged adoption at its next start; the joiner stays standalone', async () => {
    const aData = dataDir();
    const cli = await spawnCli(PASSWORD, ['--data', aData, '--nbd-port', '0']);
    const aPort = Number(new URL(cli.url).port);
    const bData = dataDir();
    const b = await inProcess('127.0.6.3', bData);
    const { vm } = await vmWithDisk(b.x, 'stays');
    // the master dies as soon as the joiner's files start to arrive
    const watcher = watch(aData, (_e, name) => {
      if (name === 'pool-adopt') cli.child.kill('SIGKILL');
    });
    const fault = await faultOf(b.x.call('pool.join', `127.0.0.1:${aPort}`, 'root', PASSWORD));
    watcher.close();
    await exited(cli.child);
    expect(fault[0]).toMatch(/^JOINING_HOST_(CONNECTION|SERVICE)_FAILED$/);
    // the joiner still answers as the master of its own pool
    expect(await b.x.call('VM.get_name_label', vm)).toBe('stays');
    const a = await inProcess('127.0.0.1', aData, aPort);
    expect(await a.x.call('host.get_all')).toHaveLength(1);
    expect(existsSync(join(aData, 'pool-adopt'))).toBe(false);
    const srUuids = await Promise.all((await a.x.call('SR.get_all')).map((s: string) => a.x.call('SR.get_uuid', s)));
    // every SR directory is one of the master's SRs: none of the joiner's was left behind
    const dirs = readdirSync(join(aData, 'sr'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    expect(dirs.length).toBeGreaterThan(0);
    for (const d of dirs) expect(srUuids).toContain(d);
    // the joiner's next start settles its journal with the master: not adopted, standalone
    const bPort = Number(new URL(b.srv.urls[0]).port);
    await b.srv.close();
    const again = await inProcess('127.0.6.3', bData, bPort);
    expect(await again.x.call('VM.get_name_label', vm)).toBe('stays');
    expect(existsSync(join(bData, 'pool-join.json'))).toBe(false);
  });
});
