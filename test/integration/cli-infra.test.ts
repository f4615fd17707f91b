// The storage, network, host, task, event, message and secret commands of the CLI, over real
// sockets with the thin-CLI protocol client: what each prints, what it changes (read back through
// the API), and its failures as xapi's CLI reports them.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { XapiFault, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { xe } from './helpers/thin-cli.js';
import { GiB, MiB, memory, PV_DRIVERS, vmArgs } from './helpers/records.js';

const PASSWORD = 'cli-infra';
let srv: RunningServer;
let x: Client;
let url: string;
let hostUuid: string;
const run = (args: string[]) => xe(url, args, { username: 'root', password: PASSWORD });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Runs a command that must succeed and returns what it printed, without the final newline. */
async function ok(args: string[]): Promise<string> {
  const r = await run(args);
  expect(r.stderr, `${args[0]}: ${r.stderr}`).toBe('');
  expect(r.code).toBe(0);
  return r.stdout.replace(/\n$/, '');
}

/** An OCaml Failure in a command, as xapi's CLI prints it. */
const internalFailure = (text: string) =>
  'The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem.\n' +
  `message: Failure: ${text}\n`;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  url = srv.urls[0];
  hostUuid = await x.call('host.get_uuid', (await x.call('host.get_all'))[0]);
});
afterAll(async () => {
  await srv?.close();
});

describe('storage commands', () => {
  it('sr-create, vdi-create, vbd-create, vbd-plug on a running VM, vdi-snapshot, sr-scan, then cleanup', async () => {
    const location = join(srv.emu.storageDir, 'cli-file-sr');
    const srUuid = await ok(['sr-create', 'name-label=cli-sr', 'type=file', `device-config:location=${location}`, 'content-type=user']);
    expect(srUuid).toMatch(UUID);
    const sr = await x.call('SR.get_by_uuid', srUuid);
    expect(await x.call('SR.get_type', sr)).toBe('file');
    expect(await x.call('SR.get_content_type', sr)).toBe('user');
    const [pbd] = await x.call('SR.get_PBDs', sr);
    expect(await x.call('PBD.get_device_config', pbd)).toEqual({ location });
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(true);

    // sizes with xapi's suffixes
    const vdiUuid = await ok(['vdi-create', `sr-uuid=${srUuid}`, 'name-label=cli-disk', 'virtual-size=64MiB']);
    const vdi = await x.call('VDI.get_by_uuid', vdiUuid);
    expect(await x.call('VDI.get_virtual_size', vdi)).toBe(64 * MiB);
    expect(await x.call('VDI.get_type', vdi)).toBe('user');
    const small = await ok(['vdi-create', `sr-uuid=${srUuid}`, 'name-label=small', 'virtual-size=2 k', 'type=system', 'tags:a=', 'sm-config:k=v']);
    const smallRef = await x.call('VDI.get_by_uuid', small);
    expect((await x.call('VDI.get_record', smallRef)) as object).toMatchObject({ type: 'system', tags: ['a'], virtual_size: expect.any(Number) });
    expect(await x.call('VDI.get_virtual_size', smallRef)).toBeGreaterThanOrEqual(2048);

    const vm = await x.call('VM.create', vmArgs('cli-infra-vm', { ...memory(1 * GiB), other_config: PV_DRIVERS }));
    const vmUuid = await x.call('VM.get_uuid', vm);
    const vbdUuid = await ok(['vbd-create', `vm-uuid=${vmUuid}`, 'device=0', `vdi-uuid=${vdiUuid}`, 'bootable=true']);
    const vbd = await x.call('VBD.get_by_uuid', vbdUuid);
    expect(await x.call('VBD.get_record', vbd)).toMatchObject({ VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false });
    const cdUuid = await ok(['vbd-create', `vm-uuid=${vmUuid}`, 'device=3', 'type=cd', 'mode=ro']);
    expect(await x.call('VBD.get_record', await x.call('VBD.get_by_uuid', cdUuid))).toMatchObject({ type: 'CD', mode: 'RO', empty: true });

    await x.call('VM.start', vm, false, false);
    const hot = await ok(['vdi-create', `sr-uuid=${srUuid}`, 'name-label=hot', 'virtual-size=16MiB']);
    const hotVbdUuid = await ok(['vbd-create', `vm-uuid=${vmUuid}`, 'device=1', `vdi-uuid=${hot}`]);
    const hotVbd = await x.call('VBD.get_by_uuid', hotVbdUuid);
    expect(await x.call('VBD.get_currently_attached', hotVbd)).toBe(false);
    expect(await ok(['vbd-plug', `uuid=${hotVbdUuid}`])).toBe('');
    expect(await x.call('VBD.get_currently_attached', hotVbd)).toBe(true);
    expect(await ok(['vbd-unplug', `uuid=${hotVbdUuid}`])).toBe('');
    expect(await x.call('VBD.get_currently_attached', hotVbd)).toBe(false);

    const snapUuid = await ok(['vdi-snapshot', `uuid=${vdiUuid}`]);
    const snap = await x.call('VDI.get_by_uuid', snapUuid);
    expect(await x.call('VDI.get_is_a_snapshot', snap)).toBe(true);
    expect(await x.call('VDI.get_snapshot_of', snap)).toBe(vdi);
    const cloneUuid = await ok(['vdi-clone', `uuid=${vdiUuid}`, 'new-name-label=the clone', 'new-name-description=d']);
    const clone = await x.call('VDI.get_by_uuid', cloneUuid);
    expect(await x.call('VDI.get_name_label', clone)).toBe('the clone');
    expect(await x.call('VDI.get_name_description', clone)).toBe('d');
    expect(await ok(['vdi-resize', `uuid=${cloneUuid}`, 'disk-size=1GiB'])).toBe('');
    expect(await x.call('VDI.get_virtual_size', clone)).toBe(GiB);

    expect(await ok(['sr-scan', `uuid=${srUuid}`])).toBe('');
    const vdis: string[] = await x.call('SR.get_VDIs', sr);
    for (const v of [vdi, snap, clone, smallRef]) expect(vdis).toContain(v);

    // cleanup, each step read back
    await x.call('VM.hard_shutdown', vm);
    expect(await ok(['vbd-destroy', `uuid=${vbdUuid}`])).toBe('');
    await expect(x.call('VBD.get_record', vbd)).rejects.toThrow(/HANDLE_INVALID/);
    for (const v of [snapUuid, cloneUuid, small, vdiUuid, hot]) expect(await ok(['vdi-destroy', `uuid=${v}`])).toBe('');
    expect(await x.call('VDI.get_all_records_where', `field "uuid" = "${cloneUuid}"`)).toEqual({});
    await x.call('VM.destroy', vm);
    const pbdUuid = await x.call('PBD.get_uuid', pbd);
    expect(await ok(['pbd-unplug', `uuid=${pbdUuid}`])).toBe('');
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(false);
    expect(await ok(['pbd-plug', `uuid=${pbdUuid}`])).toBe('');
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(true);
    expect(await ok(['pbd-unplug', `uuid=${pbdUuid}`])).toBe('');
    expect(await ok(['sr-destroy', `uuid=${srUuid}`])).toBe('');
    expect(await x.call('SR.get_all_records_where', `field "uuid" = "${srUuid}"`)).toEqual({});
  });

  it('sr-create --minimal writes the uuid straight to the client, then the empty minimal line', async () => {
    const location = join(srv.emu.storageDir, 'cli-minimal-sr');
    const r = await run(['sr-create', 'name-label=m', 'type=file', `device-config:location=${location}`, '--minimal']);
    expect(r.code).toBe(0);
    const uuid = r.stdout.split('\n')[0];
    expect(uuid).toMatch(UUID);
    expect(r.stdout).toBe(`${uuid}\n\n`);
    const [pbd] = await x.call('SR.get_PBDs', await x.call('SR.get_by_uuid', uuid));
    // an attached SR is not forgotten
    const attached = await run(['sr-forget', `uuid=${uuid}`]);
    expect(attached.stderr).toBe(`The SR is still connected to a host via a PBD. It cannot be destroyed or forgotten.\nsr: ${uuid} (m)\n`);
    expect(await ok(['pbd-unplug', `uuid=${await x.call('PBD.get_uuid', pbd)}`])).toBe('');
    expect(await ok(['sr-forget', `uuid=${uuid}`])).toBe('');
    expect(await x.call('SR.get_all_records_where', `field "uuid" = "${uuid}"`)).toEqual({});
  });

  it('reports bad sizes, types and modes as xapi does', async () => {
    const sr = await x.call('SR.get_uuid', (await x.call('SR.get_by_name_label', 'Local storage'))[0]);
    const size = await run(['vdi-create', `sr-uuid=${sr}`, 'name-label=x', 'virtual-size=1QiB']);
    expect(size).toMatchObject({ code: 1, stdout: '' });
    expect(size.stderr).toBe("Error: Failed to parse field 'virtual-size': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '1QiB'\n");
    const neg = await run(['vdi-create', `sr-uuid=${sr}`, 'name-label=x', 'virtual-size=-5']);
    expect(neg.stderr).toContain("got '-5'");
    const type = await run(['vdi-create', `sr-uuid=${sr}`, 'name-label=x', 'virtual-size=1', 'type=foo']);
    expect(type.stderr).toBe(internalFailure('Unknown vdi type: foo'));
    const vm = await x.call('VM.get_uuid', await x.call('VM.create', vmArgs('cli-infra-errors')));
    const empty = await run(['vbd-create', `vm-uuid=${vm}`, 'device=1']);
    expect(empty.stderr).toBe(internalFailure('Empty VBDs can only be made for type=CD'));
    const mode = await run(['vbd-create', `vm-uuid=${vm}`, 'device=1', 'type=CD', 'mode=xx']);
    expect(mode.stderr).toBe(internalFailure('Unknown mode: xx (should be "ro" or "rw"'));
    const copy = await run(['vdi-copy', 'uuid=nope']);
    expect(copy.stderr).toBe('The uuid you supplied was invalid.\ntype: VDI\nuuid: nope\n');
    const missing = await run(['sr-create', 'name-label=x']);
    expect(missing.stderr).toBe("Required parameter not found: type\nFor usage run: 'xe help'\n");
    // a value to be read from a file on the client's side is not taken as a plain key
    const file = await run(['sr-create', 'name-label=f', 'type=file', 'device-config:location-filename=/tmp/x']);
    expect(file).toMatchObject({ code: 1, stderr: 'The function is not implemented\nfunction: sr-create device-config:location-filename\n' });
    expect(await x.call('SR.get_by_name_label', 'f')).toEqual([]);
    const destroy = await run(['sr-destroy', 'uuid=00000000-0000-0000-0000-000000000000']);
    expect(destroy).toMatchObject({ code: 1, stderr: 'The uuid you supplied was invalid.\ntype: SR\nuuid: 00000000-0000-0000-0000-000000000000\n' });
  });
});

describe('more storage commands', () => {
  it('sr-introduce, pbd-create with device-config, pbd-plug, pbd-destroy, sr-forget', async () => {
    const location = join(srv.emu.storageDir, 'cli-introduced-sr');
    // the storage exists first (made by an SR that is then forgotten)
    const made = await ok(['sr-create', 'name-label=made', 'type=file', `device-config:location=${location}`]);
    const [oldPbd] = await x.call('SR.get_PBDs', await x.call('SR.get_by_uuid', made));
    await ok(['pbd-unplug', `uuid=${await x.call('PBD.get_uuid', oldPbd)}`]);
    await ok(['sr-forget', `uuid=${made}`]);

    expect(await ok(['sr-introduce', `uuid=${made}`, 'name-label=back', 'type=file', 'content-type=user', 'shared=false'])).toBe(made);
    const sr = await x.call('SR.get_by_uuid', made);
    expect(await x.call('SR.get_name_label', sr)).toBe('back');
    expect(await x.call('SR.get_PBDs', sr)).toEqual([]);
    const pbdUuid = await ok(['pbd-create', `host-uuid=${hostUuid}`, `sr-uuid=${made}`, `device-config:location=${location}`]);
    const pbd = await x.call('PBD.get_by_uuid', pbdUuid);
    expect(await x.call('PBD.get_record', pbd)).toMatchObject({ SR: sr, device_config: { location }, currently_attached: false });
    expect(await ok(['pbd-plug', `uuid=${pbdUuid}`])).toBe('');
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(true);
    expect(await ok(['sr-update', `uuid=${made}`])).toBe('');
    expect(await ok(['pbd-unplug', `uuid=${pbdUuid}`])).toBe('');
    expect(await ok(['pbd-destroy', `uuid=${pbdUuid}`])).toBe('');
    await expect(x.call('PBD.get_record', pbd)).rejects.toThrow(/HANDLE_INVALID/);
    expect(await ok(['sr-forget', `uuid=${made}`])).toBe('');
  });

  it('CBT: vdi-enable-cbt, vdi-list-changed-blocks, vdi-data-destroy, vdi-disable-cbt; vdi-update, vdi-forget', async () => {
    const sr = await x.call('SR.get_uuid', (await x.call('SR.get_by_name_label', 'Local storage'))[0]);
    const uuid = await ok(['vdi-create', `sr-uuid=${sr}`, 'name-label=cbt', 'virtual-size=8MiB']);
    const vdi = await x.call('VDI.get_by_uuid', uuid);
    expect(await ok(['vdi-enable-cbt', `uuid=${uuid}`])).toBe('');
    expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(true);
    const s1 = await ok(['vdi-snapshot', `uuid=${uuid}`]);
    const s2 = await ok(['vdi-snapshot', `uuid=${uuid}`]);
    const [r1, r2] = [await x.call('VDI.get_by_uuid', s1), await x.call('VDI.get_by_uuid', s2)];
    const bitmap = await ok(['vdi-list-changed-blocks', `vdi-from-uuid=${s1}`, `vdi-to-uuid=${s2}`]);
    expect(bitmap).toBe(await x.call('VDI.list_changed_blocks', r1, r2));
    expect(await ok(['vdi-data-destroy', `uuid=${s1}`])).toBe('');
    expect(await x.call('VDI.get_type', r1)).toBe('cbt_metadata');
    expect(await ok(['vdi-disable-cbt', `uuid=${uuid}`])).toBe('');
    expect(await x.call('VDI.get_cbt_enabled', vdi)).toBe(false);
    expect(await ok(['vdi-update', `uuid=${uuid}`])).toBe('');
    expect(await ok(['vdi-forget', `uuid=${s2}`])).toBe('');
    await expect(x.call('VDI.get_record', r2)).rejects.toThrow(/HANDLE_INVALID/);
  });

  it('diagnostic-vdi-status shows the VDI, then its VBDs by whether attached', async () => {
    const sr = await x.call('SR.get_uuid', (await x.call('SR.get_by_name_label', 'Local storage'))[0]);
    const uuid = await ok(['vdi-create', `sr-uuid=${sr}`, 'name-label=diag', 'virtual-size=8MiB']);
    const vm = await x.call('VM.create', vmArgs('cli-infra-diag'));
    const vbd = await ok(['vbd-create', `vm-uuid=${await x.call('VM.get_uuid', vm)}`, `vdi-uuid=${uuid}`, 'device=1']);
    const out = await ok(['diagnostic-vdi-status', `uuid=${uuid}`]);
    expect(out).toBe(
      `uuid ( RO)            : ${uuid}\n      name-label ( RW): diag\n         sr-uuid ( RO): ${sr}\n` +
      '        sharable ( RO): false\n       read-only ( RO): false\n    storage-lock ( RO): false\n\n\n' +
      'no active VBDs.\ninactive VBDs:\n' +
      `uuid ( RO)            : ${vbd}\n           empty ( RO): false\n          device ( RO): \n      userdevice ( RW): 1\n` +
      '            mode ( RW): RW\n            type ( RW): Disk\n    storage-lock ( RO): false\n\n',
    );
  });

  it('sr-probe prints the driver\'s XML', async () => {
    const out = await ok(['sr-probe', 'type=ext', 'device-config:device=/dev/sdb']);
    const host = await x.call('host.get_by_uuid', hostUuid);
    expect(out).toBe(await x.call('SR.probe', host, { device: '/dev/sdb' }, 'ext', {}));
    expect(out).toContain('<SRlist>');
  });
});

describe('commands whose message fails', () => {
  /** The CLI's outcome is the API's: a success, or the same error. */
  async function sameAsApi(args: string[], method: string, ...params: unknown[]) {
    const api = await x.call(method, ...params).then(() => null, (e: XapiFault) => e.description);
    const r = await run(args);
    if (api === null) expect(r).toMatchObject({ code: 0, stderr: '' });
    else {
      expect(r.code).toBe(1);
      // the error's parameters are printed one a line, after its text
      for (const p of api.slice(1)) expect(r.stderr).toContain(`: ${p}\n`);
    }
    return { api, r };
  }

  it('pool-sync-database and pool-designate-new-master fail or succeed as their messages do', async () => {
    await sameAsApi(['pool-sync-database'], 'pool.sync_database');
    // the master already: nothing to do (Xapi_pool.designate_new_master)
    const { api } = await sameAsApi(['pool-designate-new-master', `host-uuid=${hostUuid}`], 'pool.designate_new_master', await x.call('host.get_by_uuid', hostUuid));
    expect(api).toBeNull();
  });

  it('sr-probe-ext reports the driver\'s refusal', async () => {
    const host = await x.call('host.get_by_uuid', hostUuid);
    const { api, r } = await sameAsApi(['sr-probe-ext', 'type=ext', 'device-config:device=/dev/sdb'], 'SR.probe_ext', host, { device: '/dev/sdb' }, 'ext', {});
    expect(api).toEqual(['SR_OPERATION_NOT_SUPPORTED']);
    // (the error names the SR, which a probe has none of)
    expect(r.stderr).toBe("The SR backend does not support the operation (check the SR's allowed operations)\nsr: <unknown>\n");
    const unknown = await run(['sr-probe-ext', 'type=nosuch']);
    expect(unknown.stderr).toContain('nosuch');
  });
});

describe('more host commands', () => {
  it('host-compute-free-memory and host-cpu-info print what the API answers', async () => {
    const host = await x.call('host.get_by_uuid', hostUuid);
    expect(await ok(['host-compute-free-memory'])).toBe(String(await x.call('host.compute_free_memory', host)));
    const info: Record<string, string> = await x.call('host.get_cpu_info', host);
    const out = await ok(['host-cpu-info', `uuid=${hostUuid}`]);
    const w = 4 + Math.max(...Object.keys(info).map((k) => k.length));
    const lines = Object.entries(info).map(([k, v], i) => `${i === 0 ? k.padEnd(w) : k.padStart(w)}: ${v}`);
    expect(out).toBe(`${lines.join('\n')}\n\n`);
    expect(await ok(['host-cpu-info'])).toBe(out);
  });
});

describe('network commands', () => {
  it('network-create then vif-create with mac=random, vif-destroy, network-destroy', async () => {
    const netUuid = await ok(['network-create', 'name-label=cli-net', 'name-description=n', 'MTU=9000']);
    const net = await x.call('network.get_by_uuid', netUuid);
    expect(await x.call('network.get_record', net)).toMatchObject({ name_label: 'cli-net', name_description: 'n', MTU: 9000, managed: true });
    const vm = await x.call('VM.create', vmArgs('cli-infra-net'));
    const vifUuid = await ok(['vif-create', `vm-uuid=${await x.call('VM.get_uuid', vm)}`, `network-uuid=${netUuid}`, 'device=0', 'mac=random']);
    const vif = await x.call('VIF.get_by_uuid', vifUuid);
    const rec = await x.call('VIF.get_record', vif);
    expect(rec).toMatchObject({ VM: vm, network: net, device: '0', MTU: 9000 });
    // xapi's random MAC: one byte repeated, the first locally administered and unicast
    const bytes = (rec.MAC as string).split(':').map((b) => parseInt(b, 16));
    expect(bytes).toHaveLength(6);
    expect(bytes[0] & 3).toBe(2);
    expect(new Set(bytes.slice(1)).size).toBe(1);
    expect(bytes[0]).toBe((bytes[1] | 2) & ~1);
    expect(await ok(['vif-destroy', `uuid=${vifUuid}`])).toBe('');
    expect(await x.call('network.get_VIFs', net)).toEqual([]);
    expect(await ok(['network-destroy', `uuid=${netUuid}`])).toBe('');
    expect(await x.call('network.get_all_records_where', `field "uuid" = "${netUuid}"`)).toEqual({});
    const bad = await run(['network-create', 'name-label=x', 'MTU=big']);
    expect(bad.stderr).toBe(internalFailure('Int64.of_string'));
  });

  it('pif-scan and pif-reconfigure-ip answer as their messages do', async () => {
    const r = await run(['pif-scan', `host-uuid=${hostUuid}`]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const pif = await x.call('PIF.get_uuid', (await x.call('PIF.get_all'))[0]);
    const bad = await run(['pif-reconfigure-ip', `uuid=${pif}`, 'mode=auto']);
    expect(bad.stderr).toBe("Error: Expected one of 'None', 'DHCP', 'Static', got auto\n");
    const ip = await run(['pif-reconfigure-ip', `uuid=${pif}`, 'mode=Static', 'IP=10.0.0.300', 'netmask=255.255.255.0']);
    expect(ip).toMatchObject({ code: 1, stderr: 'A required parameter contained an invalid IP address\nparameter: IP\n' });
  });
});

describe('host, task, message and secret commands', () => {
  it('host-disable and host-enable through the host selectors', async () => {
    const host = await x.call('host.get_by_uuid', hostUuid);
    expect(await ok(['host-disable', `uuid=${hostUuid}`])).toBe('');
    expect(await x.call('host.get_enabled', host)).toBe(false);
    await x.call('host.add_to_other_config', host, 'MAINTENANCE_MODE', 'true');
    expect(await ok(['host-enable'])).toBe('');
    expect(await x.call('host.get_enabled', host)).toBe(true);
    expect(await x.call('host.get_other_config', host)).not.toHaveProperty('MAINTENANCE_MODE');
    const none = await run(['host-disable', 'name-label=no-such-host']);
    expect(none).toMatchObject({ code: 1, stderr: 'Error: No matching hosts found\n' });
  });

  it('host-get-vms-which-prevent-evacuation prints each VM with its reason', async () => {
    const vm = await x.call('VM.create', vmArgs('cli-infra-blocker', { other_config: { 'xapi-emu-guest-profile': 'no-drivers' } }));
    await x.call('VM.start', vm, false, false);
    const expected: Record<string, string[]> = await x.call('host.get_vms_which_prevent_evacuation', await x.call('host.get_by_uuid', hostUuid));
    const out = await ok(['host-get-vms-which-prevent-evacuation', `uuid=${hostUuid}`]);
    expect(Object.keys(expected).length).toBeGreaterThan(0);
    for (const [ref, reason] of Object.entries(expected)) {
      const uuid = await x.call('VM.get_uuid', ref);
      expect(out).toContain(`uuid          : ${uuid}\n    name-label: cli-infra-blocker\n        reason: ${reason.join(',')}\n`);
    }
    await x.call('VM.hard_shutdown', vm);
  });

  it('task-cancel cancels a pending task; an unknown one is an invalid uuid', async () => {
    const task = await x.call('task.create', 'cli-task', '');
    const uuid = await x.call('task.get_uuid', task);
    expect(await ok(['task-cancel', `uuid=${uuid}`])).toBe('');
    expect(Object.values(await x.call('task.get_current_operations', task))).toEqual(['cancel']);
    const bad = await run(['task-cancel', 'uuid=nope']);
    expect(bad.stderr).toBe('The uuid you supplied was invalid.\ntype: task\nuuid: nope\n');
  });

  it('message-create and message-destroy', async () => {
    expect(await ok(['message-create', 'name=cli-hello', 'priority=3', 'body=hi', `host-uuid=${hostUuid}`])).toBe('');
    const all: Record<string, { name: string; uuid: string; priority: number; cls: string; obj_uuid: string }> = await x.call('message.get_all_records');
    const m = Object.values(all).find((v) => v.name === 'cli-hello');
    expect(m).toMatchObject({ priority: 3, cls: 'Host', obj_uuid: hostUuid });
    expect(await ok(['message-destroy', `uuid=${m!.uuid}`])).toBe('');
    expect(Object.values(await x.call('message.get_all_records')).some((v: any) => v.name === 'cli-hello')).toBe(false);
    expect((await run(['message-create', 'name=n', 'priority=x', 'body=b'])).stderr).toBe(internalFailure('Priority field should be an integer'));
    expect((await run(['message-create', 'name=n', 'priority=1', 'body=b'])).stderr).toBe('Error: Need one of: vm-uuid, host-uuid, sr-uuid or pool-uuid\n');
    expect((await run(['message-destroy'])).stderr).toBe('Error: Need one of uuid, uuids\n');
  });

  it('secret-create prints the uuid; secret-destroy removes it', async () => {
    const uuid = await ok(['secret-create', 'value=s3cret']);
    const ref = await x.call('secret.get_by_uuid', uuid);
    expect(await x.call('secret.get_value', ref)).toBe('s3cret');
    expect(await ok(['secret-destroy', `uuid=${uuid}`])).toBe('');
    await expect(x.call('secret.get_value', ref)).rejects.toThrow(/HANDLE_INVALID/);
  });
});

describe('event-wait', () => {
  it('returns at once when an object already matches', async () => {
    expect(await ok(['event-wait', 'class=host', `uuid=${hostUuid}`, 'enabled=true'])).toBe('');
  });

  it('returns when a field changes to the value (=) or away from it (=/=)', async () => {
    const vm = await x.call('VM.create', vmArgs('cli-wait-before'));
    const uuid = await x.call('VM.get_uuid', vm);
    let done = false;
    const waiting = run(['event-wait', 'class=vm', `uuid=${uuid}`, 'name-label=cli-wait-after']).then((r) => {
      done = true;
      return r;
    });
    // the wait holds until the change (several round trips of the event system in between)
    for (let i = 0; i < 5; i++) await x.call('VM.get_name_label', vm);
    expect(done).toBe(false);
    await x.call('VM.set_name_label', vm, 'cli-wait-after');
    expect(await waiting).toMatchObject({ code: 0, stdout: '', stderr: '' });

    const away = run(['event-wait', 'class=vm', `uuid=${uuid}`, 'name-label=/=cli-wait-after']);
    await x.call('VM.set_name_label', vm, 'cli-wait-later');
    expect(await away).toMatchObject({ code: 0, stderr: '' });
  });

  it('fails on an unknown class or field', async () => {
    expect((await run(['event-wait', 'class=foo'])).stderr).toBe(internalFailure("Cli listening for class 'foo' not currently implemented"));
    expect((await run(['event-wait', 'class=vm', 'nosuch=1'])).stderr).toBe(internalFailure('key missing: nosuch'));
  });
});

describe('help', () => {
  it('lists the new commands with their parameters', async () => {
    const out = await ok(['help', 'vdi-create']);
    expect(out).toContain('reqd params     : sr-uuid, name-label, virtual-size');
    expect(out).toContain('optional params : sm-config:, sharable, tags:, type');
  });
});
