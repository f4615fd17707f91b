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
    const srv = await startServer({ host, port: 0, nbdPort: null, closeGrace: 0, authFailDelay: 0, password: PASSWORD, memory: true });
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
});
