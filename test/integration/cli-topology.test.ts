// The commands of a pool's shape over real sockets, with the thin-CLI protocol client and our `xe`
// for the commands that ask for a 'yes': HA on a shared SR and its failover planner, VIFs moved and
// addressed, the master role handed over (the old master then answering HOST_IS_SLAVE) and mended
// in emergency mode, a dead host forgotten, and a second instance joined to the pool and ejected.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';
import { xe } from './helpers/thin-cli.js';

const PASSWORD = 'cli-topology';
const XE = fileURLToPath(new URL('../../bin/xe.js', import.meta.url));
const servers: RunningServer[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const s of servers.reverse()) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const run = (url: string, args: string[]) => xe(url, args, { username: 'root', password: PASSWORD });

/** Runs a command that must succeed; what it printed, without the final newline. */
async function ok(url: string, args: string[]): Promise<string> {
  const r = await run(url, args);
  expect(r.stderr, `${args[0]}: ${r.stderr}`).toBe('');
  expect(r.code).toBe(0);
  return r.stdout.replace(/\n$/, '');
}

/** Runs a command that must fail; what it told on stderr. */
async function fails(url: string, args: string[]): Promise<string> {
  const r = await run(url, args);
  expect(r.code, `${args[0]}: ${r.stdout}`).toBe(1);
  return r.stderr;
}

/** An OCaml Failure in a command, as xapi's CLI prints it. */
const internalFailure = (text: string) =>
  'The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem.\n' +
  `message: Failure: ${text}\n`;

/** Our `xe` as a process, typing `input` at its prompt. */
function xeProcess(url: string, args: string[], input: string): Promise<{ stdout: string; stderr: string; code: number }> {
  const u = new URL(url);
  const home = mkdtempSync(join(tmpdir(), 'xapi-emu-topology-'));
  dirs.push(home);
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [XE, '-s', u.hostname, '-p', u.port, '--nossl', '-u', 'root', '-pw', PASSWORD, ...args], { env: { PATH: process.env.PATH, HOME: home } },
      (err, stdout, stderr) => resolve({ stdout, stderr, code: err ? Number((err as { code?: number }).code ?? -1) : 0 }));
    child.stdin?.end(input);
  });
}

describe('a pool of three hosts', () => {
  let srv: RunningServer;
  let x: Client;
  let ctl: ControlClient;
  let url: string;
  let hosts: string[];
  let hostUuids: string[];
  let shared: string;
  let sharedUuid: string;
  const vms: string[] = [];

  beforeAll(async () => {
    ({ srv, x } = await startPool(PASSWORD, { host: '127.0.12.1', hosts: 3, closeGrace: 0, nbdPort: null }));
    servers.push(srv);
    url = srv.urls[0];
    hosts = srv.urls.map((u) => srv.emu.hostByAddress(new URL(u).hostname)!);
    hostUuids = await Promise.all(hosts.map((h) => x.call('host.get_uuid', h)));
    ctl = controlClient({ url, username: 'root', password: PASSWORD });
    shared = await createSharedSr(x, srv, hosts[0]);
    sharedUuid = await x.call('SR.get_uuid', shared);
    // two protected VMs running on the second host, their disks on the shared SR
    for (const name of ['ha-a', 'ha-b']) {
      const vm: string = await x.call('VM.create', vmArgs(name, { ...memory(256 * MiB), other_config: {} }));
      const vdi: string = await x.call('VDI.create', vdiArgs(shared, 8 * MiB, `${name}-disk`));
      await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
      await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
      await x.call('VM.set_ha_restart_priority', vm, 'restart');
      await x.call('VM.start_on', vm, hosts[1], false, false);
      vms.push(vm);
    }
  });

  describe('HA', () => {
    it('pool-ha-enable on the shared SR with its configuration', async () => {
      expect(await ok(url, ['pool-ha-enable', `heartbeat-sr-uuids=${sharedUuid}`, 'ha-config:timeout=30'])).toBe('');
      const pool = await x.call('pool.get_record', srv.emu.pool);
      expect(pool).toMatchObject({ ha_enabled: true, ha_configuration: { timeout: '30' } });
      expect(await x.call('VDI.get_SR', pool.ha_statefiles[0])).toBe(shared);
      // a second time: the API's error, as the CLI prints it
      expect(await fails(url, ['pool-ha-enable', `heartbeat-sr-uuids=${sharedUuid}`])).toBe('The operation could not be performed because HA is enabled on the Pool\n');
    });

    it('pool-ha-compute-max-host-failures-to-tolerate and its hypothetical variant print what the planner answers', async () => {
      const max: number = await x.call('pool.ha_compute_max_host_failures_to_tolerate');
      expect(await ok(url, ['pool-ha-compute-max-host-failures-to-tolerate'])).toBe(String(max));
      const [a, b] = await Promise.all(vms.map((v) => x.call('VM.get_uuid', v)));
      const args = ['pool-ha-compute-hypothetical-max-host-failures-to-tolerate', `vm-uuid=${a}`, 'restart-priority=restart', `vm-uuid=${b}`, 'restart-priority=best-effort'];
      const hypothetical: number = await x.call('pool.ha_compute_hypothetical_max_host_failures_to_tolerate', { [vms[0]]: 'restart', [vms[1]]: 'best-effort' });
      expect(await ok(url, args)).toBe(String(hypothetical));
      expect(await fails(url, args.slice(0, 4))).toBe(internalFailure('Call requires an equal number of vm-uuid and restart-priority arguments'));
    });

    it('pool-ha-compute-vm-failover-plan: a table of each VM of the failed host and where it goes', async () => {
      const plan = (await x.call('pool.ha_compute_vm_failover_plan', [hosts[1]], vms)) as Record<string, { host?: string }>;
      const rows = await Promise.all(vms.map(async (vm) => {
        const dest = plan[vm].host!;
        return `${await x.call('VM.get_uuid', vm)} (${await x.call('VM.get_name_label', vm)}): ${await x.call('host.get_uuid', dest)} (${await x.call('host.get_name_label', dest)})`;
      }));
      const out = await ok(url, ['pool-ha-compute-vm-failover-plan', `host-uuids=${hostUuids[1]}`]);
      const lines = out.split('\n').filter((l) => l !== '');
      expect(lines[0]).toMatch(/^VM {4,}: Destination Host or Error$/);
      expect(lines.slice(1).map((l) => l.trim().replace(/ +: /, ': ')).sort()).toEqual(rows.sort());
      // hidden from help, as in xapi
      expect((await ok(url, ['help', '--minimal', '--all'])).split(',')).not.toContain('pool-ha-compute-vm-failover-plan');
    });

    it('pool-ha-prevent-restarts-for reads an Int64', async () => {
      expect(await ok(url, ['pool-ha-prevent-restarts-for', 'seconds=0x3c'])).toBe('');
      expect(await fails(url, ['pool-ha-prevent-restarts-for', 'seconds=soon'])).toBe(internalFailure('Int64.of_string'));
    });

    it('host-emergency-ha-disable runs on a member in a local session, and only with --force', async () => {
      expect(await fails(srv.urls[2], ['host-emergency-ha-disable'])).toBe(internalFailure('This operation is dangerous and may cause data loss. This operation must be forced (use --force).'));
      expect(await fails(srv.urls[2], ['host-emergency-ha-disable', 'soft=maybe', '--force'])).toBe(
        "Error: Failed to parse parameter 'soft': Expected 'true','t','yes','y','1','false','f','no','n','0' got maybe\n");
      // a regular command on the same member is still refused
      expect(await fails(srv.urls[2], ['host-list'])).toContain('Master IP address: 127.0.12.1');
    });

    it('pool-ha-disable', async () => {
      expect(await ok(url, ['pool-ha-disable'])).toBe('');
      expect(await x.call('pool.get_ha_enabled', srv.emu.pool)).toBe(false);
      expect(await fails(url, ['pool-ha-disable'])).toBe('The operation could not be performed because HA is not enabled on the Pool\n');
    });
  });

  describe('VIFs and networks', () => {
    it('vif-move puts a running VM\'s VIF on another network', async () => {
      const netUuid = await ok(url, ['network-create', 'name-label=moved-to']);
      const net = await x.call('network.get_by_uuid', netUuid);
      const [vif] = await x.call('VM.get_VIFs', vms[0]);
      const vifUuid = await x.call('VIF.get_uuid', vif);
      expect(await ok(url, ['vif-move', `uuid=${vifUuid}`, `network-uuid=${netUuid}`])).toBe('');
      expect(await x.call('VIF.get_network', vif)).toBe(net);
      expect(await fails(url, ['vif-move', `uuid=${vifUuid}`, 'network-uuid=nope'])).toBe('The uuid you supplied was invalid.\ntype: network\nuuid: nope\n');
    });

    it('vif-configure-ipv4 and -ipv6: the mode as the CLI reads it, an address required when static', async () => {
      // the guest's tools apply them: once they have reported
      const [vif] = await x.call('VM.get_VIFs', vms[1]);
      const uuid = await x.call('VIF.get_uuid', vif);
      let token = '';
      for (let i = 0; i < 50; i++) {
        const gm: string = await x.call('VM.get_guest_metrics', vms[1]);
        if (gm !== 'OpaqueRef:NULL' && (await x.call('VM_guest_metrics.get_other', gm))['feature-static-ip-setting'] === '1') break;
        token = (await x.call('event.from', ['vm', 'vm_guest_metrics'], token, 5)).token;
      }
      expect(await fails(url, ['vif-configure-ipv4', `uuid=${uuid}`, 'mode=static'])).toBe(internalFailure('Required parameter not found: address'));
      expect(await fails(url, ['vif-configure-ipv4', `uuid=${uuid}`, 'mode=bogus'])).toBe("Error: Expected one of 'None', 'Static', 'DHCP', got bogus\n");
      expect(await ok(url, ['vif-configure-ipv4', `uuid=${uuid}`, 'mode=Static', 'address=10.1.2.3/24', 'gateway=10.1.2.1'])).toBe('');
      expect(await x.call('VIF.get_record', vif)).toMatchObject({ ipv4_configuration_mode: 'Static', ipv4_addresses: ['10.1.2.3/24'], ipv4_gateway: '10.1.2.1' });
      expect(await ok(url, ['vif-configure-ipv6', `uuid=${uuid}`, 'mode=static', 'address=fd00::3/64'])).toBe('');
      expect(await x.call('VIF.get_record', vif)).toMatchObject({ ipv6_configuration_mode: 'Static', ipv6_addresses: ['fd00::3/64'] });
      expect(await ok(url, ['vif-configure-ipv4', `uuid=${uuid}`, 'mode=none'])).toBe('');
      expect(await x.call('VIF.get_ipv4_configuration_mode', vif)).toBe('None');
    });

    it('network-attach', async () => {
      const net = await xenbr0(x);
      const netUuid = await x.call('network.get_uuid', net);
      expect(await ok(url, ['network-attach', `uuid=${netUuid}`, `host-uuid=${hostUuids[2]}`])).toBe('');
      expect(await fails(url, ['network-attach', `uuid=${netUuid}`])).toBe("Required parameter not found: host-uuid\nFor usage run: 'xe help'\n");
    });
  });

  describe('storage', () => {
    it('vdi-pool-migrate moves a running VM\'s disk to the shared SR and prints the new VDI', async () => {
      const [pbd] = (await x.call('PBD.get_all_where', `field "host" = "${hosts[0]}"`)) as string[];
      const local: string = await x.call('PBD.get_SR', pbd);
      expect(await x.call('SR.get_shared', local)).toBe(false);
      const vm: string = await x.call('VM.create', vmArgs('moving-disk', { ...memory(128 * MiB), other_config: {} }));
      const vdi: string = await x.call('VDI.create', vdiArgs(local, 8 * MiB, 'moving'));
      const vbd: string = await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
      await x.call('VM.start_on', vm, hosts[0], false, false);
      const vdiUuid: string = await x.call('VDI.get_uuid', vdi);
      expect(await fails(url, ['vdi-pool-migrate', `uuid=${vdiUuid}`])).toBe("Required parameter not found: sr-uuid\nFor usage run: 'xe help'\n");
      const moved = await ok(url, ['vdi-pool-migrate', `uuid=${vdiUuid}`, `sr-uuid=${sharedUuid}`]);
      const now: string = await x.call('VBD.get_VDI', vbd);
      expect(moved).toBe(await x.call('VDI.get_uuid', now));
      expect(await x.call('VDI.get_SR', now)).toBe(shared);
      expect(await x.call('VM.get_power_state', vm)).toBe('Running');
      await x.call('VM.hard_shutdown', vm);
    });
  });

  describe('hosts', () => {
    it('host-power-on: the API\'s refusal for a live host', async () => {
      expect(await fails(url, ['host-power-on', `uuid=${hostUuids[2]}`])).toBe(
        `This operation cannot be completed because the server is still live.\nhost: ${hostUuids[2]} (${await x.call('host.get_name_label', hosts[2])})\n`);
    });

    it('host-forget asks first (typing anything but yes aborts), refuses a live host, forgets a dead one', async () => {
      const asked = await xeProcess(url, ['host-forget', `uuid=${hostUuids[2]}`], 'no\n');
      expect(asked.stdout).toContain('WARNING: A host should only be forgotten if it is physically unrecoverable;\n');
      expect(asked.stdout).toContain("Type 'yes' to continue");
      expect(asked.stdout).toContain('Aborted (you typed: ');
      expect(await x.call('host.get_all')).toHaveLength(3);
      expect(await fails(url, ['host-forget', `uuid=${hostUuids[2]}`, '--force'])).toBe(
        `This operation cannot be completed because the server is still live.\nhost: ${hostUuids[2]} (${await x.call('host.get_name_label', hosts[2])})\n`);
      const rule = await ctl.faults.create({ match: { host: hostUuids[2] }, effect: { host_down: true } });
      try {
        const said = await xeProcess(url, ['host-forget', `uuid=${hostUuids[2]}`], 'yes\n');
        expect(said.code, said.stderr).toBe(0);
        expect(await x.call('host.get_all')).toHaveLength(2);
      } finally {
        await ctl.faults.delete({ id: rule.id });
      }
    });

    it('pool-designate-new-master: the old master then answers HOST_IS_SLAVE; the emergency commands work on each side', async () => {
      expect(await ok(url, ['pool-designate-new-master', `host-uuid=${hostUuids[1]}`])).toBe('');
      const newMaster = srv.urls[1];
      const address = new URL(newMaster).hostname;
      expect(await fails(url, ['vm-list'])).toBe(
        `You cannot make regular API calls directly on a supporter. Please pass API calls via the coordinator host.\nMaster IP address: ${address}\n`);
      expect(await ok(newMaster, ['pool-emergency-transition-to-master'])).toBe("Host agent is already master. Use '--force' to execute the operation anyway.");
      expect(await ok(url, ['pool-emergency-reset-master', `master-address=${address}`])).toBe(`Host agent will restart and become slave of ${address} in 10. seconds...`);
      // every live member (the third host was forgotten): the old master
      expect(await ok(newMaster, ['pool-recover-slaves'])).toBe(hostUuids[0]);
      expect(await faultOf(connect(url, 'root', PASSWORD))).toEqual(['HOST_IS_SLAVE', address]);
    });
  });
});

describe('two instances', () => {
  let a: { srv: RunningServer; x: Client };
  let b: { srv: RunningServer; x: Client };

  async function instance(host: string): Promise<{ srv: RunningServer; x: Client }> {
    const dataDir = mkdtempSync(join(tmpdir(), 'xapi-emu-topology-'));
    dirs.push(dataDir);
    const srv = await startServer({ host, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, dataDir });
    servers.push(srv);
    return { srv, x: await connect(srv.urls[0], 'root', PASSWORD) };
  }

  beforeAll(async () => {
    a = await instance('127.0.14.1');
    b = await instance('127.0.15.1');
  });

  it('pool-join of an unreachable master is told as advice', async () => {
    expect(await ok(b.srv.urls[0], ['pool-join', 'master-address=127.0.15.9:1', 'master-username=root', `master-password=${PASSWORD}`])).toBe(
      'Host cannot contact destination host: connection refused.\nCheck destination host has services running and accessible from this host.');
  });

  it('pool-join, then pool-eject after the warnings and a yes', async () => {
    const master = `127.0.14.1:${new URL(a.srv.urls[0]).port}`;
    const bHost = b.srv.emu.master;
    const bUuid: string = await b.x.call('host.get_uuid', bHost);
    expect(await ok(b.srv.urls[0], ['pool-join', `master-address=${master}`, 'master-username=root', `master-password=${PASSWORD}`])).toBe(
      'Host agent will restart and attempt to join pool in 10. seconds...');
    let fault: string[] = [];
    for (let i = 0; i < 1000 && fault[0] !== 'HOST_IS_SLAVE'; i++) fault = await faultOf(connect(b.srv.urls[0], 'root', PASSWORD)).catch(() => []);
    expect(fault[0]).toBe('HOST_IS_SLAVE');
    expect(await a.x.call('host.get_all')).toHaveLength(2);

    const aborted = await xeProcess(a.srv.urls[0], ['pool-eject', `host-uuid=${bUuid}`], 'no\n');
    expect(aborted.stdout).toContain("WARNING: Ejecting a host from the pool will reinitialise that host's local SRs.\nWARNING: Any data contained with the local SRs will be lost.\n");
    expect(aborted.stdout).toContain('Aborted (you typed: ');
    expect(await a.x.call('host.get_all')).toHaveLength(2);
    const ejected = await xeProcess(a.srv.urls[0], ['pool-eject', `host-uuid=${bUuid}`], 'yes\n');
    expect(ejected.code, ejected.stderr).toBe(0);
    expect(ejected.stdout).toContain('Specified host will attempt to restart as a master of a new pool in 10. seconds...\n');
    expect(await a.x.call('host.get_all')).toHaveLength(1);
  });

  it('vm-migrate of a running VM to another instance, its disk copied to that pool\'s SR', async () => {
    const srA: string = await a.x.call('PBD.get_SR', (await a.x.call('host.get_PBDs', a.srv.emu.master))[0]);
    const vm: string = await a.x.call('VM.create', vmArgs('crossing', { ...memory(128 * MiB), other_config: {} }));
    const vdi: string = await a.x.call('VDI.create', vdiArgs(srA, 4 * MiB, 'crossing-disk'));
    await a.x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await a.x.call('VM.start', vm, false, false);
    const uuid: string = await a.x.call('VM.get_uuid', vm);
    const vdiUuid: string = await a.x.call('VDI.get_uuid', vdi);
    // a third instance (B, once ejected, is not relied on here)
    const c = await instance('127.0.17.1');
    const y = c.x;
    const srB: string = (await y.call('SR.get_by_name_label', 'Local storage'))[0];
    const srBUuid: string = await y.call('SR.get_uuid', srB);
    const out = await ok(a.srv.urls[0], ['vm-migrate', `uuid=${uuid}`, `remote-master=127.0.17.1:${new URL(c.srv.urls[0]).port}`, 'remote-username=root',
      `remote-password=${PASSWORD}`, `vdi:${vdiUuid}=${srBUuid}`, '--live']);
    expect(out.split('\n')).toEqual([
      "Performing a storage live migration. Your VM's VDIs will be migrated with the VM.",
      expect.stringMatching(/^Will migrate to remote host: .*, using remote network: .*\. Here is the VDI mapping:$/),
      `VDI ${vdiUuid} -> SR ${srBUuid}`,
    ]);
    const there: string = await y.call('VM.get_by_uuid', uuid);
    expect(await y.call('VM.get_power_state', there)).toBe('Running');
    expect(await y.call('VDI.get_SR', await y.call('VBD.get_VDI', (await y.call('VM.get_VBDs', there))[0]))).toBe(srB);
    expect(await faultOf(a.x.call('VM.get_by_uuid', uuid))).toEqual(['UUID_INVALID', 'VM', uuid]);
  });
});

describe('networking on a pool of two hosts', () => {
  let srv: RunningServer;
  let x: Client;
  let ctl: ControlClient;
  let url: string;
  let master: string;
  let member: string;
  let memberUuid: string;

  /** The host's PIF of a device (not a VLAN). */
  async function pifOf(host: string, device: string): Promise<string> {
    const pifs: string[] = await x.call('PIF.get_all_where', `field "host" = "${host}" and field "device" = "${device}" and field "VLAN" = "-1"`);
    expect(pifs, `${device} on ${host}`).toHaveLength(1);
    return pifs[0];
  }
  const uuidOf = (cls: string, ref: string): Promise<string> => x.call(`${cls}.get_uuid`, ref);

  beforeAll(async () => {
    ({ srv, x } = await startPool(PASSWORD, { host: '127.0.16.1', hosts: 2, closeGrace: 0, nbdPort: null }));
    servers.push(srv);
    url = srv.urls[0];
    master = srv.emu.master;
    member = srv.emu.hosts[1];
    memberUuid = await uuidOf('host', member);
    ctl = controlClient({ url, username: 'root', password: PASSWORD });
    for (const host of [master, member]) {
      for (const device of ['eth1', 'eth2']) await ctl.nics.add({ host, device });
      await ctl.nics.add({ host, device: 'eth3', sriov_vfs: 4 });
      // (the command that was there before its message)
      expect(await ok(url, ['pif-scan', `host-uuid=${await uuidOf('host', host)}`])).toBe('');
    }
  });

  it('bond-create prints the bond; bond-set-mode reads the mode as xapi does; bond-destroy', async () => {
    const netUuid = await ok(url, ['network-create', 'name-label=bonded']);
    const [eth1, eth2] = [await pifOf(member, 'eth1'), await pifOf(member, 'eth2')];
    const bondUuid = await ok(url, ['bond-create', `network-uuid=${netUuid}`, `pif-uuids=${await uuidOf('PIF', eth1)},${await uuidOf('PIF', eth2)}`, 'mode=Active-Backup']);
    const bond = await x.call('Bond.get_by_uuid', bondUuid);
    const rec = await x.call('Bond.get_record', bond);
    expect(rec.mode).toBe('active-backup');
    expect([...rec.slaves].sort()).toEqual([eth1, eth2].sort());
    expect(await x.call('PIF.get_network', rec.master)).toBe(await x.call('network.get_by_uuid', netUuid));
    expect(await ok(url, ['bond-set-mode', `uuid=${bondUuid}`, 'mode=LACP'])).toBe('');
    expect(await x.call('Bond.get_mode', bond)).toBe('lacp');
    expect(await fails(url, ['bond-set-mode', `uuid=${bondUuid}`, 'mode=Round-Robin'])).toBe('Error: Invalid bond mode. Got round-robin\n');
    expect(await ok(url, ['bond-destroy', `uuid=${bondUuid}`])).toBe('');
    expect(await x.call('Bond.get_all')).toEqual([]);
    expect(await x.call('PIF.get_bond_slave_of', eth1)).toBe('OpaqueRef:NULL');
  });

  it('vlan-create prints the untagged PIF; vlan-destroy takes it (or the VLAN); pool-vlan-create makes one per host', async () => {
    const netUuid = await ok(url, ['network-create', 'name-label=vlan-42']);
    const net = await x.call('network.get_by_uuid', netUuid);
    const eth1Uuid = await uuidOf('PIF', await pifOf(master, 'eth1'));
    expect(await fails(url, ['vlan-create', `pif-uuid=${eth1Uuid}`, 'vlan=forty-two', `network-uuid=${netUuid}`])).toBe(internalFailure("Failed to parse parameter 'vlan': expecting an integer"));
    const pifUuid = await ok(url, ['vlan-create', `pif-uuid=${eth1Uuid}`, 'vlan=42', `network-uuid=${netUuid}`]);
    const pif = await x.call('PIF.get_by_uuid', pifUuid);
    expect(await x.call('PIF.get_record', pif)).toMatchObject({ VLAN: 42, network: net, host: master });
    const [vlan] = await x.call('VLAN.get_all');
    expect(await x.call('VLAN.get_untagged_PIF', vlan)).toBe(pif);
    // the untagged PIF's uuid is accepted for the VLAN
    expect(await ok(url, ['vlan-destroy', `uuid=${pifUuid}`])).toBe('');
    expect(await x.call('VLAN.get_all')).toEqual([]);

    const uuids = (await ok(url, ['pool-vlan-create', `pif-uuid=${eth1Uuid}`, 'vlan=43', `network-uuid=${netUuid}`])).split('\n');
    const pifs = await Promise.all(uuids.map((u) => x.call('PIF.get_by_uuid', u)));
    const recs = await Promise.all(pifs.map((p) => x.call('PIF.get_record', p)));
    expect(recs.map((r) => r.host).sort()).toEqual([master, member].sort());
    expect(recs.every((r) => r.VLAN === 43 && r.network === net)).toBe(true);
    for (const v of await x.call('VLAN.get_all')) expect(await ok(url, ['vlan-destroy', `uuid=${await uuidOf('VLAN', v)}`])).toBe('');
    expect(await x.call('VLAN.get_all')).toEqual([]);
    expect(await fails(url, ['vlan-destroy', 'uuid=nothing'])).toBe('The uuid you supplied was invalid.\ntype: VLAN\nuuid: nothing\n');
  });

  it('tunnel-create prints the access PIF; tunnel-destroy', async () => {
    const netUuid = await ok(url, ['network-create', 'name-label=overlay']);
    const eth2Uuid = await uuidOf('PIF', await pifOf(master, 'eth2'));
    await x.call('PIF.reconfigure_ip', await pifOf(master, 'eth2'), 'Static', '10.9.0.1', '255.255.255.0', '', '');
    expect(await fails(url, ['tunnel-create', `pif-uuid=${eth2Uuid}`, `network-uuid=${netUuid}`, 'protocol=ipip'])).toBe("Error: Expected one of 'gre', 'vxlan', got ipip\n");
    const accessUuid = await ok(url, ['tunnel-create', `pif-uuid=${eth2Uuid}`, `network-uuid=${netUuid}`, 'protocol=vxlan']);
    const [tunnel] = await x.call('tunnel.get_all');
    expect(await x.call('tunnel.get_record', tunnel)).toMatchObject({ protocol: 'vxlan', access_PIF: await x.call('PIF.get_by_uuid', accessUuid) });
    expect(await ok(url, ['tunnel-destroy', `uuid=${await uuidOf('tunnel', tunnel)}`])).toBe('');
    expect(await x.call('tunnel.get_all')).toEqual([]);
  });

  it('network-sriov-create prints the network-sriov; network-sriov-destroy', async () => {
    const netUuid = await ok(url, ['network-create', 'name-label=sriov']);
    const eth3 = await pifOf(member, 'eth3');
    const sriovUuid = await ok(url, ['network-sriov-create', `pif-uuid=${await uuidOf('PIF', eth3)}`, `network-uuid=${netUuid}`]);
    const sriov = await x.call('network_sriov.get_by_uuid', sriovUuid);
    expect(await x.call('network_sriov.get_physical_PIF', sriov)).toBe(eth3);
    expect(await ok(url, ['network-sriov-destroy', `uuid=${sriovUuid}`])).toBe('');
    expect(await x.call('network_sriov.get_all')).toEqual([]);
  });

  it('pif-reconfigure-ipv6, pif-set-primary-address-type, pif-forget, pif-introduce', async () => {
    const eth2 = await pifOf(member, 'eth2');
    const eth2Uuid = await uuidOf('PIF', eth2);
    expect(await ok(url, ['pif-reconfigure-ipv6', `uuid=${eth2Uuid}`, 'mode=static', 'ipv6=fd00:16::2/64', 'gateway=fd00:16::1'])).toBe('');
    expect(await x.call('PIF.get_record', eth2)).toMatchObject({ ipv6_configuration_mode: 'Static', IPv6: ['fd00:16::2/64'], ipv6_gateway: 'fd00:16::1' });
    expect(await ok(url, ['pif-set-primary-address-type', `uuid=${eth2Uuid}`, 'primary_address_type=ipv6'])).toBe('');
    expect(await x.call('PIF.get_primary_address_type', eth2)).toBe('IPv6');
    expect(await fails(url, ['pif-set-primary-address-type', `uuid=${eth2Uuid}`, 'primary_address_type=ipx'])).toBe("Error: Expected one of 'IPv4', 'IPv6', got ipx\n");
    const mac = await x.call('PIF.get_MAC', eth2);
    expect(await ok(url, ['pif-forget', `uuid=${eth2Uuid}`])).toBe('');
    expect((await faultOf(x.call('PIF.get_record', eth2)))[0]).toBe('HANDLE_INVALID');
    const back = await ok(url, ['pif-introduce', `host-uuid=${memberUuid}`, 'device=eth2', `mac=${mac}`]);
    expect(await x.call('PIF.get_record', await x.call('PIF.get_by_uuid', back))).toMatchObject({ device: 'eth2', MAC: mac, host: member, managed: true });
    expect(await fails(url, ['pif-introduce', `host-uuid=${memberUuid}`, 'device=eth2'])).toBe('A PIF with this specified device name already exists.\ndevice: eth2\n');
  });

  it('host-management-reconfigure moves the management interface; host-management-disable runs on the host itself', async () => {
    const eth1 = await pifOf(member, 'eth1');
    const eth0 = await pifOf(member, 'eth0');
    expect(await fails(url, ['host-management-reconfigure', `pif-uuid=${await uuidOf('PIF', eth1)}`])).toBe(
      `PIF has no IP configuration (mode currently set to 'none')\nPIF: ${await uuidOf('PIF', eth1)}\n`);
    await x.call('PIF.reconfigure_ip', eth1, 'Static', '10.16.0.7', '255.255.0.0', '', '');
    expect(await ok(url, ['host-management-reconfigure', `pif-uuid=${await uuidOf('PIF', eth1)}`])).toBe('');
    expect(await x.call('host.get_management_interface', member)).toBe(eth1);
    expect(await ok(url, ['host-management-reconfigure', `pif-uuid=${await uuidOf('PIF', eth0)}`])).toBe('');
    expect(await x.call('host.get_management_interface', member)).toBe(eth0);
    // a member keeps it (it reaches its master through it); the request went to the member itself
    expect(await fails(srv.urls[1], ['host-management-disable'])).toBe('The management interface on a supporter cannot be disabled because the supporter would enter emergency mode.\n');
    expect(await fails(srv.urls[1], ['host-emergency-management-reconfigure', 'interface=eth0'])).toBe('This pool is not in emergency mode.\n');
  });

  it('help lists the new commands (the hidden ones aside) and describes them', async () => {
    const all = (await ok(url, ['help', '--all', '--minimal'])).split(',');
    for (const c of ['bond-create', 'bond-set-mode', 'vlan-create', 'pool-vlan-create', 'tunnel-create', 'network-sriov-create', 'pif-introduce',
      'host-management-reconfigure', 'pool-join', 'pool-eject', 'pool-ha-enable', 'vif-move', 'vdi-pool-migrate']) expect(all).toContain(c);
    for (const c of ['pif-db-forget', 'network-attach', 'pool-ha-compute-vm-failover-plan', 'pool-ha-prevent-restarts-for']) expect(all).not.toContain(c);
    const help = await ok(url, ['help', 'vlan-create']);
    expect(help).toMatch(/reqd params\s+: pif-uuid, vlan, network-uuid\n/);
  });

  it('pool-management-reconfigure: the API\'s check of every host', async () => {
    const netUuid = await ok(url, ['network-create', 'name-label=nowhere']);
    const out = await fails(url, ['pool-management-reconfigure', `network-uuid=${netUuid}`]);
    const [first] = await x.call('host.get_all');
    expect(out).toBe(`This host has no PIF on the given network.\nhost: ${await uuidOf('host', first)} (${await x.call('host.get_name_label', first)})\nnetwork: ${netUuid} (nowhere)\n`);
  });
});
