// pool.join across emulator instances: two instances in this process on their own loopback
// addresses (A the master on 127.0.0.1, B a standalone pool on 127.0.1.1), B joined to A by Python
// XenAPI and by JSON-RPC; the merged inventory, a VM of B started on host B through A, B's address
// answering as a pool member, and the errors of xapi's pre-join checks.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startServer, type RunningServer } from '../../server/app.js';
import { controlClient } from '../../server/control/client.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { localStorage, xenbr0 } from './helpers/pool.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PYTHON = '/usr/bin/python3';
const XENAPI_DIR = '/usr/lib/python3/dist-packages/os_xenapi/client';
const PASSWORD = 'join-test';
const dirs: string[] = [];
const servers: RunningServer[] = [];

const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'xapi-emu-join-'));
  dirs.push(d);
  return d;
};

async function instance(host: string, dataDir?: string): Promise<{ srv: RunningServer; x: Client }> {
  const srv = await startServer({ host, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, ...(dataDir ? { dataDir } : { memory: true }) });
  servers.push(srv);
  return { srv, x: await connect(srv.urls[0], 'root', PASSWORD) };
}

const portOf = (srv: RunningServer) => Number(new URL(srv.urls[0]).port);

/** A halted VM of B with a disk on its local SR (written with bytes) and a NIC on xenbr0. */
async function vmWithDisk(x: Client, name: string): Promise<{ vm: string; vdi: string }> {
  const vm: string = await x.call('VM.create', vmArgs(name));
  const vdi: string = await x.call('VDI.create', vdiArgs(await localStorage(x), 4 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
  return { vm, vdi };
}

/** pool.join through Python's XenAPI, as `xe pool-join` or a script would call it. */
async function pythonJoin(bUrl: string, master: string): Promise<string[] | 'ok'> {
  const script = [
    'import sys, json', `sys.path.insert(0, ${JSON.stringify(XENAPI_DIR)})`, 'import XenAPI',
    's = XenAPI.Session(sys.argv[1])', 's.xenapi.login_with_password("root", sys.argv[3], "1.0", "test")',
    'try:', '    s.xenapi.pool.join(sys.argv[2], "root", sys.argv[3]); print(json.dumps("ok"))',
    'except XenAPI.Failure as f:', '    print(json.dumps(f.details))',
  ].join('\n');
  const { stdout } = await promisify(execFile)(PYTHON, ['-c', script, bUrl, master, PASSWORD], { timeout: 30_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
  return JSON.parse(stdout);
}

/** Waits (polling, no sleep) until logins at `url` are answered as by a pool member. */
async function untilMember(url: string): Promise<string[]> {
  let fault: string[] = [];
  for (let i = 0; i < 1000 && fault[0] !== 'HOST_IS_SLAVE'; i++) fault = await faultOf(connect(url, 'root', PASSWORD)).catch(() => []);
  return fault;
}

afterAll(async () => {
  for (const s of servers.reverse()) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('pool.join of another instance', () => {
  let a: { srv: RunningServer; x: Client };
  let b: { srv: RunningServer; x: Client };
  let bDir: string;
  let bVm: { vm: string; vdi: string };
  let bHost: string;
  let bHostUuid: string;

  beforeAll(async () => {
    a = await instance('127.0.0.1');
    bDir = tempDir();
    b = await instance('127.0.1.1', bDir);
    bVm = await vmWithDisk(b.x, 'b-vm');
    bHost = b.srv.emu.master;
    bHostUuid = await b.x.call('host.get_uuid', bHost);
    if (!existsSync(PYTHON)) throw new Error(`${PYTHON} with os_xenapi is needed`);
    const master = `127.0.0.1:${portOf(a.srv)}`;
    expect(await pythonJoin(b.srv.urls[0], master)).toBe('ok');
    // the joiner hands over once xapi's fuse has burnt (10 simulated seconds: at once at scale 0)
    await untilMember(b.srv.urls[0]);
  });

  it('derives the host addresses from --host', async () => {
    expect(await a.x.call('host.get_address', bHost)).toBe('127.0.1.1');
  });

  it("merges the joiner's host, PIFs, local SR, VMs and disks into the master's database", async () => {
    const hosts: string[] = await a.x.call('host.get_all');
    expect(hosts).toHaveLength(2);
    expect(hosts).toContain(bHost);
    expect(await a.x.call('host.get_uuid', bHost)).toBe(bHostUuid);
    // PIFs merged onto the master's networks by bridge
    const net = await xenbr0(a.x);
    const pifs: string[] = await a.x.call('network.get_PIFs', net);
    const pifHosts = await Promise.all(pifs.map((p) => a.x.call('PIF.get_host', p)));
    expect(pifHosts.sort()).toEqual(hosts.sort());
    expect(await a.x.call('network.get_all_where', 'field "bridge" = "xenbr0"')).toHaveLength(1);
    // the VM with its disk, its drive and its NIC (on the master's xenbr0)
    const vm = await a.x.call('VM.get_record', bVm.vm);
    expect(vm.name_label).toBe('b-vm');
    expect(vm.power_state).toBe('Halted');
    expect(vm.VBDs).toHaveLength(1);
    const vif = await a.x.call('VIF.get_record', vm.VIFs[0]);
    expect(vif.network).toBe(net);
    const vdi = await a.x.call('VDI.get_record', bVm.vdi);
    const sr = await a.x.call('SR.get_record', vdi.SR);
    expect(sr.name_label).toBe('Local storage');
    const pbd = await a.x.call('PBD.get_record', sr.PBDs[0]);
    expect(pbd.host).toBe(bHost);
    // the disk's file is in the master's storage now
    expect(readdirSync(join(a.srv.emu.storageDir, 'sr', sr.uuid))).toContain(`${vdi.uuid}.vhd`);
    // the tools SR of the pool has a PBD for the new host
    const tools = (await a.x.call('SR.get_all_records_where', 'field "is_tools_sr" = "true"')) as Record<string, any>;
    expect(Object.keys(tools)).toHaveLength(1);
    const toolsPbdHosts = await Promise.all(Object.values(tools)[0].PBDs.map((p: string) => a.x.call('PBD.get_host', p)));
    expect(toolsPbdHosts.sort()).toEqual(hosts.sort());
    // the pool's CPUs count the new host's
    const pool = (await a.x.call('pool.get_all'))[0];
    expect((await a.x.call('pool.get_cpu_info', pool)).cpu_count).toBe('16');
  });

  it("answers HOST_IS_SLAVE with the master's address at B's address and port", async () => {
    expect(await faultOf(connect(b.srv.urls[0], 'root', PASSWORD))).toEqual(['HOST_IS_SLAVE', '127.0.0.1']);
  });

  it("starts the joiner's VM on host B through the master", async () => {
    await a.x.call('VM.start_on', bVm.vm, bHost, false, false);
    expect(await a.x.call('VM.get_power_state', bVm.vm)).toBe('Running');
    expect(await a.x.call('VM.get_resident_on', bVm.vm)).toBe(bHost);
    await a.x.call('VM.hard_shutdown', bVm.vm);
  });

  it('comes back as the door after a restart of B', async () => {
    await b.srv.close();
    const again = await startServer({ host: '127.0.1.1', port: portOf(b.srv), nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, dataDir: bDir });
    servers.push(again);
    expect(await faultOf(connect(again.urls[0], 'root', PASSWORD))).toEqual(['HOST_IS_SLAVE', '127.0.0.1']);
  });

  it('refuses to eject the master, or a host with a VM running on it', async () => {
    expect(await faultOf(a.x.call('pool.eject', a.srv.emu.master))).toEqual(['INTERNAL_ERROR', 'Xapi_pool.Cannot_eject_master']);
    await a.x.call('VM.start_on', bVm.vm, bHost, false, false);
    expect(await faultOf(a.x.call('pool.eject', bHost))).toEqual(['OPERATION_NOT_ALLOWED', 'VM resident on host']);
    await a.x.call('VM.hard_shutdown', bVm.vm);
    expect(await a.x.call('host.get_all')).toHaveLength(2);
  });

  it('ejects B: its objects leave the master, and B serves a fresh pool of its own again', async () => {
    const srUuid = await a.x.call('SR.get_uuid', await a.x.call('VDI.get_SR', bVm.vdi));
    await a.x.call('pool.eject', bHost);
    expect(await a.x.call('host.get_all')).toEqual([a.srv.emu.master]);
    expect((await faultOf(a.x.call('VM.get_record', bVm.vm)))[0]).toBe('HANDLE_INVALID');
    expect((await faultOf(a.x.call('SR.get_by_uuid', srUuid)))[0]).toBe('UUID_INVALID');
    expect(await a.x.call('PIF.get_all')).toHaveLength(1);
    expect((await a.x.call('pool.get_cpu_info', (await a.x.call('pool.get_all'))[0])).cpu_count).toBe('8');
    expect(existsSync(join(a.srv.emu.storageDir, 'sr', srUuid))).toBe(false);
    // B's address and port: a pool of one host, not the one that joined, without B's VM
    const y = await connect(`http://127.0.1.1:${portOf(b.srv)}/`, 'root', PASSWORD);
    const hosts: string[] = await y.call('host.get_all');
    expect(hosts).toHaveLength(1);
    expect(await y.call('host.get_uuid', hosts[0])).not.toBe(bHostUuid);
    expect(await y.call('host.get_address', hosts[0])).toBe('127.0.1.1');
    expect(await y.call('VM.get_by_name_label', 'b-vm')).toEqual([]);
    expect(existsSync(join(bDir, 'pool-member.json'))).toBe(false);
  });
});

describe('pool.eject of a host of a --hosts pool', () => {
  it('serves the ejected host as a standalone pool of its own in the same process', async () => {
    const srv = await startServer({ host: '127.0.7.1', hosts: 2, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, memory: true });
    servers.push(srv);
    const x = await connect(srv.urls[0], 'root', PASSWORD);
    const member = srv.emu.hosts[1];
    expect(await faultOf(connect(`http://127.0.7.2:${portOf(srv)}/`, 'root', PASSWORD))).toEqual(['HOST_IS_SLAVE', '127.0.7.1']);
    await x.call('pool.eject', member);
    expect(await x.call('host.get_all')).toHaveLength(1);
    const y = await connect(`http://127.0.7.2:${portOf(srv)}/`, 'root', PASSWORD);
    const hosts: string[] = await y.call('host.get_all');
    expect(hosts).toHaveLength(1);
    expect(hosts[0]).not.toBe(member);
    expect(await y.call('host.get_address', hosts[0])).toBe('127.0.7.2');
  });
});

describe('host addresses', () => {
  it("are --host's last octet plus the host's index", async () => {
    const srv = await startServer({ host: '127.0.2.1', hosts: 2, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, memory: true });
    servers.push(srv);
    const x = await connect(srv.urls[0], 'root', PASSWORD);
    const addresses = await Promise.all((await x.call('host.get_all')).map((h: string) => x.call('host.get_address', h)));
    expect(addresses.sort()).toEqual(['127.0.2.1', '127.0.2.2']);
    expect(srv.urls.map((u) => new URL(u).hostname)).toEqual(['127.0.2.1', '127.0.2.2']);
    await srv.close();
  });
});

describe('pool.join checks', () => {
  let a: { srv: RunningServer; x: Client };
  let master: string;
  const opened: RunningServer[] = [];
  let next = 10;

  beforeAll(async () => {
    a = await instance('127.0.3.1');
    master = `127.0.3.1:${portOf(a.srv)}`;
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });

  /** A fresh standalone instance on its own address. */
  async function joiner(opts: { hosts?: number } = {}) {
    const srv = await startServer({ host: `127.0.3.${next++}`, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, memory: true, ...opts });
    opened.push(srv);
    return { srv, x: await connect(srv.urls[0], 'root', PASSWORD) };
  }

  it('fails with JOINING_HOST_CONNECTION_FAILED when nothing answers at the address', async () => {
    const b = await joiner();
    expect(await faultOf(b.x.call('pool.join', '127.0.3.250:1', 'root', PASSWORD))).toEqual(['JOINING_HOST_CONNECTION_FAILED']);
    expect(await b.x.call('host.get_all')).toHaveLength(1);
  });

  it("passes on the master's authentication failure", async () => {
    const b = await joiner();
    expect((await faultOf(b.x.call('pool.join', master, 'root', 'wrong')))[0]).toBe('SESSION_AUTHENTICATION_FAILED');
  });

  it('refuses a host that would join itself', async () => {
    const b = await joiner();
    const self = new URL(b.srv.urls[0]).host;
    expect(await faultOf(b.x.call('pool.join', self, 'root', PASSWORD))).toEqual(['OPERATION_NOT_ALLOWED', 'Host cannot become slave of itself']);
  });

  it('refuses a joiner with other hosts, running VMs or shared SRs', async () => {
    const two = await joiner({ hosts: 2 });
    expect(await faultOf(two.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS']);

    const running = await joiner();
    const { vm } = await vmWithDisk(running.x, 'running');
    await running.x.call('VM.start', vm, false, false);
    expect(await faultOf(running.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['JOINING_HOST_CANNOT_HAVE_RUNNING_VMS']);

    const shared = await joiner();
    const host = shared.srv.emu.master;
    await shared.x.call('SR.create', host, { location: join(shared.srv.emu.storageDir, 'shared') }, 0, 'Shared', '', 'file', 'user', true, {});
    expect(await faultOf(shared.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS']);
    // nothing reached the master
    expect(await a.x.call('host.get_all')).toHaveLength(1);
  });

  it('refuses other CPUs with HOSTS_NOT_HOMOGENEOUS, which join_force lets through', async () => {
    const b = await joiner();
    // the joiner's machine: another CPU vendor (what a fixture of other hardware would say)
    const host = b.srv.emu.master;
    b.srv.emu.db.update('host', host, { cpu_info: { ...(b.srv.emu.db.get('host', host)!.cpu_info as object), vendor: 'AuthenticAMD' } });
    expect(await faultOf(b.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['HOSTS_NOT_HOMOGENEOUS', 'CPUs differ']);
    await b.x.call('pool.join_force', master, 'root', PASSWORD);
    expect(await a.x.call('host.get_all')).toContain(host);
  });

  it("runs as a task with progress; the joiner becomes a member after xapi's fuse time", async () => {
    const b = await joiner();
    const clock = controlClient({ url: b.srv.urls[0], username: 'root', password: PASSWORD }).clock;
    await clock.set({ frozen: true });
    const task = await b.x.call('Async.pool.join', master, 'root', PASSWORD);
    let status = 'pending';
    for (let i = 0; i < 1000 && status === 'pending'; i++) status = await b.x.call('task.get_status', task);
    expect(status).toBe('success');
    expect(await b.x.call('task.get_progress', task)).toBe(1);
    // the host is the master's, and until the fuse burns the joiner still answers as it was
    expect(await a.x.call('host.get_all')).toContain(b.srv.emu.master);
    expect(await b.x.call('host.get_all')).toHaveLength(1);
    await clock.advance({ seconds: 10 });
    expect(await untilMember(b.srv.urls[0])).toEqual(['HOST_IS_SLAVE', '127.0.3.1']);
  });

  it('refuses another product or API version', async () => {
    const b = await joiner();
    const host = b.srv.emu.master;
    const sv = b.srv.emu.db.get('host', host)!.software_version as Record<string, string>;
    b.srv.emu.db.update('host', host, { software_version: { ...sv, platform_version: '3.2.1' } });
    expect(await faultOf(b.x.call('pool.join_force', master, 'root', PASSWORD))).toEqual(['HOSTS_NOT_COMPATIBLE']);
    b.srv.emu.db.update('host', host, { software_version: sv, API_version_minor: 20 });
    expect(await faultOf(b.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION', '2.20', '2.21']);
  });

  it('is refused by a pool with HA enabled, and to an unlicensed joiner', async () => {
    const b = await joiner();
    const [pool] = b.srv.emu.db.table('pool').keys();
    const restrictions = b.srv.emu.db.get('pool', pool)!.restrictions as Record<string, string>;
    b.srv.emu.db.update('pool', pool, { restrictions: { ...restrictions, restrict_pooling: 'true' } });
    expect(await faultOf(b.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['LICENCE_RESTRICTION']);
    b.srv.emu.db.update('pool', pool, { restrictions });
    a.srv.emu.db.update('pool', a.srv.emu.pool, { ha_enabled: true });
    try {
      expect(await faultOf(b.x.call('pool.join', master, 'root', PASSWORD))).toEqual(['HA_IS_ENABLED']);
    } finally {
      a.srv.emu.db.update('pool', a.srv.emu.pool, { ha_enabled: false });
    }
  });
});
