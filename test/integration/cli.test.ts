// The CLI server at POST /cli, over real sockets with a client that speaks the thin-CLI protocol
// as xapi's `xe` does: the exchange (no HTTP status line, handshake both ways), the record
// printer's layout character for character, --minimal, params=, filters, the generated
// -param-* commands (writes go through the API), errors as xapi prints them, sessions.
import { connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../server/app.js';
import { encodeHandshake } from '../../server/cli/protocol.js';
import { connect, XapiFault, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { xe, type XeOptions } from './helpers/thin-cli.js';
import { GiB, memory, vmArgs } from './helpers/records.js';

const PASSWORD = 'cli-test';
let srv: RunningServer;
let x: Client;
let url: string;
const root: XeOptions = { username: 'root', password: PASSWORD };
const run = (args: string[], opts: XeOptions = root) => xe(url, args, opts);

/** The record printer's layout: keys right-aligned to 4 + the longest, the first left-aligned. */
function record(pairs: [string, string][]): string {
  const w = 4 + Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v], i) => `${i === 0 ? k.padEnd(w) : k.padStart(w)}: ${v}`).join('\n') + '\n';
}
/** What the client prints for a list of records: each Print is the record and a newline, and the
 * client adds its own. */
const printed = (records: [string, string][][]) => records.map((r) => `${record(r)}\n\n`).join('');

/** Non-template VMs as the API lists them (uuid, name_label, power_state). */
async function apiVms(): Promise<{ uuid: string; name_label: string; power_state: string; ref: string }[]> {
  const all: Record<string, any> = await x.call('VM.get_all_records');
  return Object.entries(all).filter(([, r]) => !r.is_a_template).map(([ref, r]) => ({ ref, ...r }));
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { users: [{ name: 'ro', password: 'ro-pw', role: 'read-only' }] }));
  url = srv.urls[0];
});
afterAll(async () => {
  await srv?.close();
});

describe('POST /cli: the exchange', () => {
  it('answers with the protocol handshake, not an HTTP status line, and closes after Exit', async () => {
    const body = 'vm-list\n--minimal\nusername=root\npassword=' + PASSWORD;
    const u = new URL(url);
    const bytes = await new Promise<Buffer>((resolve, reject) => {
      const s = tcpConnect(Number(u.port), u.hostname, () => {
        s.write(`POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/0.2\r\noriginator: cli\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      });
      const parts: Buffer[] = [];
      let sent = false;
      s.on('data', (c) => {
        parts.push(c);
        if (!sent && Buffer.concat(parts).length >= 35) {
          sent = true;
          s.write(encodeHandshake());
        }
      });
      s.on('close', () => resolve(Buffer.concat(parts)));
      s.on('error', reject);
    });
    expect(bytes.subarray(0, 35)).toEqual(encodeHandshake(0, 2));
    // Print "<uuids>" then Exit 0, the connection closed by the server
    const vms = (await apiVms()).map((v) => v.uuid).join(',');
    const print = Buffer.alloc(16);
    print.writeInt32LE(12 + vms.length, 0);
    print.writeInt32LE(9, 4);
    print.writeInt32LE(0, 8);
    print.writeInt32LE(vms.length, 12);
    const exit = Buffer.from('0c000000090000000400000000000000', 'hex');
    expect(bytes.subarray(35)).toEqual(Buffer.concat([print, Buffer.from(vms), exit]));
  });

  it('closes on a client that answers no handshake, or garbage', async () => {
    const quick = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0, conf: { ...srv.emu.conf, idle_timeout_tcp: 0.2 } });
    try {
      const u = new URL(quick.urls[0]);
      const body = `vm-list\nusername=root\npassword=${PASSWORD}`;
      const exchange = (after: Buffer | null) => new Promise<Buffer>((resolve, reject) => {
        const s = tcpConnect(Number(u.port), u.hostname, () => s.write(`POST /cli HTTP/1.0\r\ncontent-length: ${body.length}\r\n\r\n${body}`));
        const parts: Buffer[] = [];
        s.on('data', (c) => {
          parts.push(c);
          if (after && Buffer.concat(parts).length >= 35) s.write(after);
        });
        s.on('close', () => resolve(Buffer.concat(parts)));
        s.on('error', reject);
      });
      // only our handshake went out, then the connection closed
      expect(await exchange(null)).toEqual(encodeHandshake());
      expect(await exchange(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toEqual(encodeHandshake());
    } finally {
      await quick.close();
    }
  });

  it('serves nothing to a client of another major version', async () => {
    const r = await run(['vm-list'], { ...root, major: 1 }).catch((e: Error) => e);
    expect(r).toBeInstanceOf(Error);
    expect((r as Error).message).toBe('Lost connection to the server.');
  });

  it('works over TLS, as the real client talks to port 443', async () => {
    const tls = await startServer({ port: 0, https: true, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0 });
    try {
      const https = tls.urls[0];
      expect(https.startsWith('https:')).toBe(true);
      // (the pool's own records: a fetch would refuse the self-signed certificate)
      const vms = [...tls.emu.db.table('VM').keys()].map((ref) => tls.emu.db.get('VM', ref)!).filter((r) => !r.is_a_template).map((r) => r.uuid);
      const r = await xe(https, ['vm-list', '--minimal'], root);
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(r.stdout).toBe(`${vms.join(',')}\n`);
    } finally {
      await tls.close();
    }
  });

  it('refuses a body larger than xapi\'s limit (200 KiB) with 413', async () => {
    const u = new URL(url);
    const body = 'x'.repeat(200 * 1024 + 1);
    const answer = await new Promise<string>((resolve, reject) => {
      const s = tcpConnect(Number(u.port), u.hostname, () => s.write(`POST /cli HTTP/1.0\r\ncontent-length: ${body.length}\r\n\r\n${body}`));
      let got = '';
      s.on('data', (c) => (got += c.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', (e) => (got ? resolve(got) : reject(e)));
    });
    expect(answer.startsWith('HTTP/1.1 413 ')).toBe(true);
  });

  it('a member refuses commands (no local socket to forward from), but answers help', async () => {
    const pool = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, hosts: 2, closeGrace: 0 });
    try {
      const master = pool.emu.db.get('host', pool.emu.master)!.address;
      const member = pool.urls[1];
      expect(await xe(member, ['vm-list'], root)).toMatchObject({
        code: 1, stdout: '', stderr: `You cannot make regular API calls directly on a supporter. Please pass API calls via the coordinator host.\nMaster IP address: ${master}\n`,
      });
      expect((await xe(member, ['help'], root)).code).toBe(0);
      expect((await xe(pool.urls[0], ['host-list', '--minimal'], root)).stdout.split(',')).toHaveLength(2);
    } finally {
      await pool.close();
    }
  });

  it('logs in for the command and out after it; a session_id line is used as it is', async () => {
    // (session has no get_all: the pool's own count)
    const sessions = async () => srv.emu.db.count('session');
    const before = await sessions();
    expect((await run(['vm-list', '--minimal'])).code).toBe(0);
    expect(await sessions()).toBe(before);

    const other = await connect(url, 'root', PASSWORD);
    const r = await run(['vm-list', '--minimal'], { sessionId: other.session });
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toBe(`${(await apiVms()).map((v) => v.uuid).join(',')}\n`);
    // the given session stays valid
    expect(await other.call('session.get_uuid', other.session)).toBeTypeOf('string');
    await other.call('session.logout');
    const gone = await run(['vm-list'], { sessionId: other.session });
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe(`You gave an invalid session reference. It may have been invalidated by a server restart, or timed out. You should get a new session handle, using one of the session.login_ calls. This error does not invalidate the current connection. The handle parameter echoes the bad value given.\nhandle: ${other.session}\n`);
  });

  it('tells a wrong password and missing credentials apart, as xe prints them', async () => {
    expect(await run(['vm-list'], { username: 'root', password: 'wrong' })).toMatchObject({
      code: 1, stdout: '', stderr: "Authentication failed\nFor usage run: 'xe help'\n",
    });
    expect(await run(['vm-list'], {})).toMatchObject({
      code: 1, stdout: '', stderr: "Username/password must be specified\nFor usage run: 'xe help'\n",
    });
  });
});

describe('vm-list and the record printer', () => {
  it('prints the default pool as xapi does: uuid, name-label, power-state', async () => {
    const vms = await apiVms();
    const r = await run(['vm-list']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toBe(printed(vms.map((v) => [['uuid ( RO)', v.uuid], ['name-label ( RW)', v.name_label], ['power-state ( RO)', v.power_state.toLowerCase()]])));
    // the control domain's record, character for character
    expect(r.stdout).toContain(`uuid ( RO)           : ${vms[0].uuid}\n     name-label ( RW): ${vms[0].name_label}\n    power-state ( RO): running\n`);
  });

  it('--minimal: the first field of each record, comma-joined and escaped', async () => {
    const vms = await apiVms();
    expect((await run(['vm-list', '--minimal'])).stdout).toBe(`${vms.map((v) => v.uuid).join(',')}\n`);
    const vm = vms[0];
    const old = vm.name_label;
    await x.call('VM.set_name_label', vm.ref, 'a,b\\c');
    try {
      expect((await run(['vm-list', '--minimal', 'params=name-label', `uuid=${vm.uuid}`])).stdout).toBe('a\\,b\\\\c\n');
    } finally {
      await x.call('VM.set_name_label', vm.ref, old);
    }
    // nothing selected: one empty line
    expect((await run(['vm-list', '--minimal', 'uuid=none'])).stdout).toBe('\n');
  });

  it('params= chooses the fields, printed in the record order; params=all prints every shown field', async () => {
    const [vm] = await apiVms();
    const r = await run(['vm-list', 'params=power-state,name-description,uuid', `uuid=${vm.uuid}`]);
    expect(r.stdout).toBe(printed([[['uuid ( RO)', vm.uuid], ['name-description ( RW)', (vm as any).name_description], ['power-state ( RO)', 'running']]]));
    const all = (await run(['vm-list', 'params=all', `uuid=${vm.uuid}`])).stdout;
    const keys = all.split('\n').filter((l) => l.includes(': ')).map((l) => l.slice(0, l.indexOf(': ')).trim());
    expect(keys.slice(0, 5)).toEqual(['uuid ( RO)', 'name-label ( RW)', 'name-description ( RW)', 'user-version ( RW)', 'is-a-template ( RW)']);
    expect(keys).toContain('other-config (MRW)');
    expect(keys).toContain('allowed-operations (SRO)');
    expect(keys).toContain('tags (SRW)');
    expect(keys).toContain('ha-always-run ( RW) [DEPRECATED]');
    // hidden fields are not shown, expensive ones not computed in a list
    expect(keys).not.toContain('transportable-snapshot-id ( RO)');
    expect(all).toContain('possible-hosts ( RO): <expensive field>');
    // every key ends in the same column
    const lines = all.split('\n').filter((l) => l.includes(': '));
    expect(new Set(lines.map((l) => l.indexOf(': '))).size).toBe(1);
  });

  it('filters on plain fields, map members and set members; template-list and snapshot-list are the same VMs filtered', async () => {
    const [vm] = await apiVms();
    expect((await run(['vm-list', 'power-state=halted', '--minimal'])).stdout).toBe('\n');
    expect((await run(['vm-list', 'power-state=running', '--minimal'])).stdout).toBe(`${vm.uuid}\n`);
    await x.call('VM.add_to_other_config', vm.ref, 'cli-test', 'yes');
    await x.call('VM.add_tags', vm.ref, 'cli-tag');
    try {
      expect((await run(['vm-list', 'other-config:cli-test=yes', '--minimal'])).stdout).toBe(`${vm.uuid}\n`);
      expect((await run(['vm-list', 'other-config:cli-test=no', '--minimal'])).stdout).toBe('\n');
      expect((await run(['vm-list', 'tags:contains=cli-tag', '--minimal'])).stdout).toBe(`${vm.uuid}\n`);
    } finally {
      await x.call('VM.remove_from_other_config', vm.ref, 'cli-test');
      await x.call('VM.remove_tags', vm.ref, 'cli-tag');
    }
    const templates: Record<string, any> = await x.call('VM.get_all_records_where', 'field "is_a_template" = "true" and field "is_a_snapshot" = "false"');
    const t = (await run(['template-list', '--minimal'])).stdout.trim().split(',');
    expect(t.sort()).toEqual(Object.values(templates).map((r) => r.uuid).sort());
    const bad = await run(['vm-list', 'no-such-field=1']);
    expect(bad).toMatchObject({ code: 1, stderr: "Error: Unknown field 'no-such-field'\n" });
  });

  it('sr-list shows the host of a local SR by name; host-list the default columns', async () => {
    const srs: Record<string, any> = await x.call('SR.get_all_records');
    const [ref, local] = Object.entries(srs).find(([, r]) => r.name_label === 'Local storage')!;
    const host = await x.call('PBD.get_host', local.PBDs[0]);
    const r = await run(['sr-list', `uuid=${local.uuid}`]);
    expect(ref).toMatch(/^OpaqueRef:/);
    expect(r.stdout).toBe(printed([[
      ['uuid ( RO)', local.uuid], ['name-label ( RW)', 'Local storage'], ['name-description ( RW)', local.name_description],
      ['host ( RO)', await x.call('host.get_name_label', host)], ['type ( RO)', local.type], ['content-type ( RO)', local.content_type],
    ]]));
  });
});

describe('the generated -param-* commands', () => {
  it('vm-param-get reads a field, a map member, and fails on a missing key', async () => {
    const [vm] = await apiVms();
    expect((await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=name-label'])).stdout).toBe(`${vm.name_label}\n`);
    expect((await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=power-state'])).stdout).toBe('running\n');
    await x.call('VM.add_to_other_config', vm.ref, 'k1', 'v1');
    try {
      expect((await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=other-config', 'param-key=k1'])).stdout).toBe('v1\n');
      expect(await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=other-config', 'param-key=nope'])).toMatchObject({ code: 1, stderr: 'Error: Key nope not found in map\n' });
    } finally {
      await x.call('VM.remove_from_other_config', vm.ref, 'k1');
    }
    // a field of no record: xapi's "Missing parameter", sent as an Error the client prints
    expect(await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=nonesuch'])).toMatchObject({
      code: 1, stderr: 'Error code: Missing parameter\nError parameters: nonesuch\n',
    });
  });

  it('vm-param-set goes through the API: fields, map members, type checks, read-only fields', async () => {
    const [vm] = await apiVms();
    const old = vm.name_label;
    try {
      const r = await run(['vm-param-set', `uuid=${vm.uuid}`, 'name-label=renamed by xe', 'other-config:a=1', 'other-config:b=2']);
      expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
      expect(await x.call('VM.get_name_label', vm.ref)).toBe('renamed by xe');
      expect(await x.call('VM.get_other_config', vm.ref)).toMatchObject({ a: '1', b: '2' });
      // a member set again is replaced
      await run(['vm-param-set', `uuid=${vm.uuid}`, 'other-config:a=3']);
      expect((await x.call('VM.get_other_config', vm.ref)).a).toBe('3');
      expect((await run(['vm-param-remove', `uuid=${vm.uuid}`, 'param-name=other-config', 'param-key=b'])).code).toBe(0);
      expect(await x.call('VM.get_other_config', vm.ref)).not.toHaveProperty('b');
      expect((await run(['vm-param-clear', `uuid=${vm.uuid}`, 'param-name=other-config'])).code).toBe(0);
      expect(await x.call('VM.get_other_config', vm.ref)).toEqual({});
      expect((await run(['vm-param-add', `uuid=${vm.uuid}`, 'param-name=tags', 'param-key=t1'])).code).toBe(0);
      expect(await x.call('VM.get_tags', vm.ref)).toEqual(['t1']);
      expect((await run(['vm-param-remove', `uuid=${vm.uuid}`, 'param-name=tags', 'param-key=t1'])).code).toBe(0);
      expect(await x.call('VM.get_tags', vm.ref)).toEqual([]);
    } finally {
      await x.call('VM.set_name_label', vm.ref, old);
    }
    expect(await run(['vm-param-set', `uuid=${vm.uuid}`, 'power-state=halted'])).toMatchObject({ code: 1, stderr: "Error: Field 'power-state' is read-only.\n" });
    expect(await run(['vm-param-set', `uuid=${vm.uuid}`, 'VCPUs-max=many'])).toMatchObject({ code: 1, stderr: "Error: Failed to parse parameter 'VCPUs-max': expecting an integer\n" });
    expect(await run(['vm-param-remove', `uuid=${vm.uuid}`, 'param-name=tags', 'param-key=absent'])).toMatchObject({ code: 1, stderr: 'Error: Key absent is not in the set\n' });
  });

  it('a read-only user gets the API\'s RBAC error from a setter', async () => {
    const [vm] = await apiVms();
    const r = await run(['vm-param-set', `uuid=${vm.uuid}`, 'name-description=x'], { username: 'ro', password: 'ro-pw' });
    expect(r.code).toBe(1);
    let expected: string[] = [];
    const ro = await connect(url, 'ro', 'ro-pw');
    try {
      await ro.call('VM.set_name_description', vm.ref, 'x');
    } catch (e) {
      expected = (e as XapiFault).description;
    }
    await ro.call('session.logout');
    expect(expected[0]).toBe('RBAC_PERMISSION_DENIED');
    expect(r.stderr).toBe(`RBAC permission denied.\npermission: ${expected[1]}\nmessage: ${expected[2]}\n`);
    // reading is allowed
    expect((await run(['vm-list', '--minimal'], { username: 'ro', password: 'ro-pw' })).code).toBe(0);
  });

  it('vm-param-list prints every shown field with the access suffixes', async () => {
    const [vm] = await apiVms();
    const r = await run(['vm-param-list', `uuid=${vm.uuid}`]);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => l.includes(': '));
    expect(lines[0].startsWith('uuid ( RO)')).toBe(true);
    expect(new Set(lines.map((l) => l.indexOf(': '))).size).toBe(1);
    expect(r.stdout).toContain(` name-label ( RW): ${vm.name_label}\n`);
    expect(r.stdout).toMatch(/ power-state \( RO\): running\n/);
    expect(r.stdout).toMatch(/ console-uuids \(SRO\): /);
    expect(r.stdout).toMatch(/ platform \(MRW\): /);
    expect(r.stdout).toMatch(/ VCPUs-number \( RO\): \d+\n/);
    // enums the CLI names its own way (record_util.ml): on_normal_exit is "Destroy" / "Restart"
    const onShutdown: string = await x.call('VM.get_actions_after_shutdown', vm.ref);
    expect(r.stdout).toContain(` actions-after-shutdown ( RW): ${{ destroy: 'Destroy', restart: 'Restart' }[onShutdown]}\n`);
    // and are read back under those names
    await run(['vm-param-set', `uuid=${vm.uuid}`, 'actions-after-crash=Core dump and restart']);
    expect(await x.call('VM.get_actions_after_crash', vm.ref)).toBe('coredump_and_restart');
    expect((await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=actions-after-crash'])).stdout).toBe('Core dump and restart\n');
  });

  it('errors as xapi prints them: the datamodel text, then one line per parameter, exit 1', async () => {
    const r = await run(['vm-param-get', 'uuid=00000000-0000-0000-0000-000000000000', 'param-name=name-label']);
    expect(r).toMatchObject({ code: 1, stdout: '', stderr: 'The uuid you supplied was invalid.\ntype: VM\nuuid: 00000000-0000-0000-0000-000000000000\n' });
    expect(await run(['vm-param-get', 'uuid=x'])).toMatchObject({ code: 1, stderr: "Required parameter not found: param-name\nFor usage run: 'xe help'\n" });
    expect(await run(['vm-lst'])).toMatchObject({ code: 1, stderr: "Unknown command: vm-lst\nFor usage run: 'xe help'\n" });
    expect(await run(['uuid=1'])).toMatchObject({ code: 1, stderr: "Syntax error: command name is missing\nFor usage run: 'xe help'\n" });
  });

  it('a field whose message is not implemented fails as that message does', async () => {
    const [vm] = await apiVms();
    let fault: string[] | null = null;
    let hosts: string[] = [];
    try {
      hosts = await x.call('VM.get_possible_hosts', vm.ref);
    } catch (e) {
      fault = (e as XapiFault).description;
    }
    const r = await run(['vm-param-get', `uuid=${vm.uuid}`, 'param-name=possible-hosts']);
    if (fault) expect(r).toMatchObject({ code: 1, stderr: `The function is not implemented\nfunction: ${fault[1]}\n` });
    else expect(r.stdout).toBe(`${await Promise.all(hosts.map((h) => x.call('host.get_uuid', h))).then((u) => u.join('; '))}\n`);
  });
});

describe('commands on the VMs chosen by selectors', () => {
  it('vm=<name or uuid>, filters, --multiple, and every failure of several reported', async () => {
    const a: string = await x.call('VM.create', vmArgs('cli-sel-a', memory(1 * GiB)));
    const b: string = await x.call('VM.create', vmArgs('cli-sel-b', memory(1 * GiB)));
    const [ua, ub] = [await x.call('VM.get_uuid', a), await x.call('VM.get_uuid', b)];
    await x.call('VM.start', a, false, false);
    await x.call('VM.start', b, false, false);
    try {
      expect(await run(['vm-pause', 'vm=cli-sel-a'])).toMatchObject({ code: 0, stdout: '', stderr: '' });
      expect(await x.call('VM.get_power_state', a)).toBe('Paused');
      expect((await run(['vm-unpause', `vm=${ua}`])).code).toBe(0);
      expect(await x.call('VM.get_power_state', a)).toBe('Running');
      // the control domain is never chosen: two running VMs match
      expect(await run(['vm-pause', 'power-state=running'])).toMatchObject({ code: 1, stderr: 'Error: Multiple matches VMs found. --multiple required to complete the operation\n' });
      expect((await run(['vm-pause', 'power-state=running', '--multiple'])).code).toBe(0);
      expect([await x.call('VM.get_power_state', a), await x.call('VM.get_power_state', b)]).toEqual(['Paused', 'Paused']);
      // pausing them again fails on each: one line (and its parameter lines) per VM on stdout
      let fault: string[] = [];
      try {
        await x.call('VM.pause', a);
      } catch (e) {
        fault = (e as XapiFault).description;
      }
      expect(fault[0]).toBe('VM_BAD_POWER_STATE');
      const r = await run(['vm-pause', 'power-state=paused', '--multiple']);
      expect(r.code).toBe(1);
      const failed = r.stdout.split('\n').filter((l) => l.startsWith('operation failed on '));
      expect(failed.map((l) => l.slice(20, 56)).sort()).toEqual([ua, ub].sort());
      // each message is the error's text, then its parameters, refs shown as uuid (name)
      expect(r.stdout).toContain(`vm: ${ua} (cli-sel-a)\n`);
      expect(failed[0]).toMatch(/^operation failed on [0-9a-f-]{36}: You attempted an operation on a VM that was not in an appropriate power state at the time;/);
      expect(await run(['vm-pause', 'vm=no-such-vm'])).toMatchObject({ code: 1, stderr: 'Error: No matching VMs found\n' });
    } finally {
      for (const vm of [a, b]) await x.call('VM.hard_shutdown', vm).catch(() => undefined);
      for (const vm of [a, b]) await x.call('VM.destroy', vm);
    }
    const help = await run(['help', 'vm-pause']);
    expect(help.stdout).toContain('optional params : <vm-selectors>\n');
    expect(help.stdout).toContain("The special pseudo-field 'vm' matches either of name-label or uuid.");
  });
});

describe('help', () => {
  it('lists the common commands, all of them with --all, and describes one', async () => {
    const common = await run(['help']);
    expect(common.code).toBe(0);
    expect(common.stdout).toContain('Usage:\n  xe <command>\n');
    expect(common.stdout).toMatch(/Common command list\n-------------------\n\n {4}[^]*\bvm-list\b/);
    const all = (await run(['help', '--all', '--minimal'])).stdout.trim().split(',');
    expect(all).toContain('vm-param-set');
    expect(all).toContain('sr-list');
    expect(all).toEqual([...all].sort());
    const one = await run(['help', 'vm-param-get']);
    expect(one.stdout).toBe(printed([[
      ['command name        ', 'vm-param-get'],
      ['reqd params     ', 'uuid, param-name'],
      ['optional params ', 'param-key, database:'],
      ['description     ', "Gets the parameter specified of the object. If the parameter is a map of key=value pairs, use 'param-key=<key>' to get the value associated with a particular key."],
    ]]));
  });
});
