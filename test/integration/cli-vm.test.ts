// The VM, template and snapshot commands of the CLI over real sockets, with a client speaking the
// thin-CLI protocol as xapi's `xe` does: the install → start → snapshot → revert → shutdown →
// uninstall workflow with each output exact, --multiple with filters, and the errors as xapi
// prints them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import type { Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool } from './helpers/pool.js';
import { xe, type XeResult } from './helpers/thin-cli.js';

const PASSWORD = 'cli-vm-test';
let srv: RunningServer;
let x: Client;
const run = (...args: string[]): Promise<XeResult> => xe(srv.urls[0], args, { username: 'root', password: PASSWORD });

type Rec = Record<string, any>;
const vmByUuid = async (uuid: string): Promise<[string, Rec]> => {
  const ref: string = await x.call('VM.get_by_uuid', uuid);
  return [ref, await x.call('VM.get_record', ref)];
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A template the default pool has, with disks to provision, by name. */
let template: { ref: string; name: string; disks: number };

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  const all: Record<string, Rec> = await x.call('VM.get_all_records');
  const withDisks = Object.entries(all).find(([, r]) => r.is_a_template && !r.is_a_snapshot && /<disk /.test(r.other_config.disks ?? ''));
  if (!withDisks) throw new Error('the default pool has no template with disks');
  template = { ref: withDisks[0], name: withDisks[1].name_label, disks: withDisks[1].other_config.disks.match(/<disk /g).length };
});
afterAll(async () => {
  await srv?.close();
});

describe('the VM lifecycle workflow', () => {
  it('vm-install → vm-start → vm-snapshot → snapshot-revert → vm-shutdown → vm-uninstall --force', async () => {
    const install = await run('vm-install', `template=${template.name}`, 'new-name-label=cli-wf');
    expect(install).toMatchObject({ code: 0, stderr: '' });
    const uuid = install.stdout.replace(/\n$/, '');
    expect(uuid).toMatch(UUID);
    const [vm, rec] = await vmByUuid(uuid);
    expect(rec).toMatchObject({ name_label: 'cli-wf', name_description: 'Installed via xe CLI', is_a_template: false, power_state: 'Halted' });
    // provisioned: one owned disk a <disk> of the template, on the pool's default SR
    expect(rec.VBDs).toHaveLength(template.disks);
    const pool = (await x.call('pool.get_all'))[0];
    const defaultSr = await x.call('pool.get_default_SR', pool);
    const disks: Rec[] = [];
    for (const vbd of rec.VBDs) {
      const b = await x.call('VBD.get_record', vbd);
      expect(b.other_config.owner).toBeDefined();
      disks.push({ ref: b.VDI, ...(await x.call('VDI.get_record', b.VDI)) });
    }
    for (const d of disks) expect(d.SR).toBe(defaultSr);

    expect(await run('vm-start', 'vm=cli-wf')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await x.call('VM.get_power_state', vm)).toBe('Running');

    const snap = await run('vm-snapshot', `uuid=${uuid}`, 'new-name-label=cli-wf-snap', 'new-name-description=before');
    expect(snap).toMatchObject({ code: 0, stderr: '' });
    const snapUuid = snap.stdout.replace(/\n$/, '');
    expect(snapUuid).toMatch(UUID);
    const [snapRef, snapRec] = await vmByUuid(snapUuid);
    expect(snapRec).toMatchObject({ is_a_snapshot: true, snapshot_of: vm, name_label: 'cli-wf-snap', name_description: 'before' });

    // a snapshot of a running VM has no memory: reverting to it leaves the VM halted
    expect(await run('snapshot-revert', `snapshot-uuid=${snapUuid}`)).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');

    expect((await run('vm-start', `vm=${uuid}`)).code).toBe(0);
    expect(await run('vm-shutdown', 'vm=cli-wf')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await x.call('VM.get_power_state', vm)).toBe('Halted');

    // a second shutdown: the API's error, as xapi prints it
    expect(await run('vm-shutdown', 'vm=cli-wf')).toEqual(expect.objectContaining({
      code: 1, stdout: '',
      stderr: "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, you attempted to start a VM that was already running. The parameters returned are the VM's handle, and the expected and actual VM state at the time of the call.\n"
        + `vm: ${uuid} (cli-wf)\nexpected: running\nactual: halted\n`,
    }));

    // the snapshot's disks are its own copies, owned too
    const snapDisks: Rec[] = [];
    for (const vbd of snapRec.VBDs) snapDisks.push(await x.call('VDI.get_record', await x.call('VBD.get_VDI', vbd)));
    // revert gave the VM new disks, cloned from the snapshot's
    const now: Rec[] = [];
    for (const vbd of await x.call('VM.get_VBDs', vm)) {
      const vdi = await x.call('VBD.get_VDI', vbd);
      now.push({ ref: vdi, ...(await x.call('VDI.get_record', vdi)) });
    }
    const un = await run('vm-uninstall', 'vm=cli-wf', '--force');
    expect(un).toMatchObject({ code: 0, stderr: '' });
    expect(un.stdout).toBe([
      'The following items are about to be destroyed',
      `VM : ${uuid} (cli-wf)`,
      ...now.map((d) => `VDI: ${d.uuid} (${d.name_label}) `),
      `VM : ${snapUuid} (cli-wf-snap)`,
      ...snapDisks.map((d) => `VDI: ${d.uuid} (${d.name_label}) `),
      'All objects destroyed',
      '',
    ].join('\n'));
    for (const ref of [vm, snapRef, ...now.map((d) => d.ref)]) {
      await expect(x.call(ref === vm || ref === snapRef ? 'VM.get_uuid' : 'VDI.get_uuid', ref)).rejects.toThrow(/HANDLE_INVALID/);
    }
  });

  it('vm-install --minimal prints the uuid alone; sr-uuid= copies the disks there; failures leave nothing behind', async () => {
    const pool = (await x.call('pool.get_all'))[0];
    const sr = await x.call('pool.get_default_SR', pool);
    const srUuid = await x.call('SR.get_uuid', sr);
    const r = await run('vm-install', `template=${await x.call('VM.get_uuid', template.ref)}`, 'new-name-label=cli-copy', `sr-uuid=${srUuid}`, '--minimal');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const [, rec] = await vmByUuid(r.stdout.trim());
    expect(rec.name_label).toBe('cli-copy');
    expect(rec.suspend_SR).toBe(sr);

    expect(await run('vm-install', 'template=no-such-template', 'new-name-label=x')).toMatchObject({ code: 1, stderr: 'Error: No templates matched\n' });
    expect(await run('vm-install', `template=${rec.uuid}`, 'new-name-label=x')).toMatchObject({ code: 1, stderr: 'Error: Can only install from templates\n' });
    expect(await run('vm-install', `template=${template.name}`, 'new-name-label=x', 'sr-name-label=no-such-sr'))
      .toMatchObject({ code: 1, stderr: 'Error: No SR with that name-label found\n' });
    // a step after the clone fails: the new VM is destroyed again
    const before = (await x.call('VM.get_all')).length;
    const host = (await x.call('host.get_all'))[0];
    const bios = await run('vm-install', `template=${template.name}`, 'new-name-label=cli-bios', `copy-bios-strings-from=${await x.call('host.get_uuid', host)}`);
    expect(bios.code).toBe(1);
    expect(bios.stdout).toBe('');
    expect((await x.call('VM.get_all')).length).toBe(before);
    expect(await x.call('VM.get_by_name_label', 'cli-bios')).toEqual([]);
  });
});

describe('clone, copy, checkpoint and the snapshot commands', () => {
  it('print the new uuids, and refuse a VM that is not a snapshot', async () => {
    const base = (await run('vm-install', `template=${template.name}`, 'new-name-label=cli-base')).stdout.trim();
    const clone = await run('vm-clone', 'vm=cli-base', 'new-name-label=cli-clone', 'new-name-description=cloned');
    expect(clone).toMatchObject({ code: 0, stderr: '' });
    expect((await vmByUuid(clone.stdout.trim()))[1]).toMatchObject({ name_label: 'cli-clone', name_description: 'cloned', is_a_template: false });
    const copy = await run('vm-copy', `uuid=${base}`, 'new-name-label=cli-copy2');
    expect((await vmByUuid(copy.stdout.trim()))[1].name_label).toBe('cli-copy2');

    const snap = (await run('vm-snapshot', 'vm=cli-base', 'new-name-label=cli-base-s')).stdout.trim();
    const fromSnap = await run('snapshot-clone', `uuid=${snap}`, 'new-name-label=cli-from-snap');
    expect(fromSnap).toMatchObject({ code: 0, stderr: '' });
    expect((await vmByUuid(fromSnap.stdout.trim()))[1]).toMatchObject({ name_label: 'cli-from-snap', is_a_template: true });

    expect(await run('snapshot-revert', `snapshot-uuid=${base}`))
      .toMatchObject({ code: 1, stderr: `Error: This operation can only be performed on a VM snapshot. ${base} is not a VM snapshot.\n` });
    expect(await run('snapshot-revert')).toMatchObject({ code: 1, stderr: 'Error: Required parameter not found: snapshot-uuid or uuid.\n' });
    expect(await run('vm-snapshot', 'vm=cli-base')).toMatchObject({ code: 1, stderr: "Required parameter not found: new-name-label\nFor usage run: 'xe help'\n" });

    expect(await run('snapshot-destroy', `uuid=${snap}`)).toMatchObject({ code: 0, stdout: '' });
    await expect(x.call('VM.get_by_uuid', snap)).rejects.toThrow(/UUID_INVALID/);

    // a checkpoint of a running VM keeps its memory: reverting resumes it suspended
    expect((await run('vm-start', 'vm=cli-base')).code).toBe(0);
    const cp = (await run('vm-checkpoint', 'vm=cli-base', 'new-name-label=cli-cp')).stdout.trim();
    expect((await vmByUuid(cp))[1]).toMatchObject({ is_a_snapshot: true, power_state: 'Suspended' });

    // template-uninstall refuses a VM, then uninstalls the template made from the snapshot
    expect(await run('template-uninstall', `template-uuid=${base}`, '--force'))
      .toMatchObject({ code: 1, stderr: `Error: This operation can only be performed on a VM template. ${base} is not a VM template.\n` });
    const t = await run('template-uninstall', `template-uuid=${fromSnap.stdout.trim()}`, '--force');
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(/^The following items are about to be destroyed\nVM : \S+ \(cli-from-snap\)\n[^]*All objects destroyed\n$/);
  });

  it('vm-reset-powerstate and vm-destroy', async () => {
    expect(await run('vm-reset-powerstate', 'vm=cli-clone'))
      .toMatchObject({ code: 1, stderr: 'Error: This operation is dangerous and may cause data loss. This operation must be forced (use --force).\n' });
    const uuid = await x.call('VM.get_uuid', (await x.call('VM.get_by_name_label', 'cli-clone'))[0]);
    // a command whose message this server does not implement fails as that message does
    expect(await run('vm-compute-memory-overhead', 'vm=cli-clone'))
      .toMatchObject({ code: 1, stdout: '', stderr: 'The function is not implemented\nfunction: VM.compute_memory_overhead\n' });
    expect(await run('vm-destroy', `uuid=${uuid}`)).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await x.call('VM.get_by_name_label', 'cli-clone')).toEqual([]);
  });
});

describe('vm-memory-*-set', () => {
  it('read sizes with units, and refuse what is not a size', async () => {
    const uuid = (await run('vm-install', `template=${template.name}`, 'new-name-label=cli-mem')).stdout.trim();
    const [vm] = await vmByUuid(uuid);
    expect(await run('vm-memory-limits-set', 'vm=cli-mem', 'static-min=256MiB', 'static-max=2GiB', 'dynamic-min=512m', 'dynamic-max=1 GiB'))
      .toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await x.call('VM.get_record', vm)).toMatchObject({ memory_static_min: 256 * 2 ** 20, memory_static_max: 2 * 2 ** 30, memory_dynamic_min: 512 * 2 ** 20, memory_dynamic_max: 2 ** 30 });
    expect((await run('vm-memory-dynamic-range-set', `uuid=${uuid}`, 'min=768MiB', 'max=1536MiB')).code).toBe(0);
    expect(await x.call('VM.get_memory_dynamic_min', vm)).toBe(768 * 2 ** 20);
    expect(await run('vm-memory-set', 'vm=cli-mem', 'memory=lots'))
      .toMatchObject({ code: 1, stderr: "Error: Failed to parse field 'memory': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got 'lots'\n" });
    expect((await run('vm-memory-set', 'vm=cli-mem', 'memory=1GiB')).code).toBe(0);
    expect(await x.call('VM.get_record', vm)).toMatchObject({ memory_static_max: 2 ** 30, memory_dynamic_min: 2 ** 30, memory_dynamic_max: 2 ** 30 });
    expect((await run('vm-uninstall', 'vm=cli-mem', '--force')).code).toBe(0);
  });
});

describe('disks, CD drives and VIFs', () => {
  it('vm-disk-add / -list / -remove, vm-cd-* and vm-vif-list', async () => {
    const uuid = (await run('vm-install', `template=${template.name}`, 'new-name-label=cli-dev')).stdout.trim();
    const [vm] = await vmByUuid(uuid);
    expect(await run('vm-disk-add', 'vm=cli-dev', 'disk-size=1GiB', 'device=3')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const vbds: string[] = await x.call('VM.get_VBDs', vm);
    const added = (await Promise.all(vbds.map(async (b) => ({ b, r: await x.call('VBD.get_record', b) })))).find(({ r }) => r.userdevice === '3')!;
    const vdi = await x.call('VDI.get_record', added.r.VDI);
    expect(vdi).toMatchObject({ name_label: 'Created by xe', name_description: 'Created by xe', virtual_size: 2 ** 30 });
    expect(added.r.other_config).toHaveProperty('owner');

    // each disk: "Disk n VBD:", its record, "Disk n VDI:", its record
    const list = await run('vm-disk-list', 'vm=cli-dev', 'vbd-params=userdevice', 'vdi-params=uuid,virtual-size');
    expect(list).toMatchObject({ code: 0, stderr: '' });
    const disks = [];
    for (const b of vbds) {
      const r = await x.call('VBD.get_record', b);
      if (r.type === 'Disk') disks.push({ dev: r.userdevice, vdi: await x.call('VDI.get_record', r.VDI) });
    }
    expect(list.stdout).toBe(disks.map((d, n) => `Disk ${n} VBD:\nuserdevice ( RW)    : ${d.dev}\n\n\nDisk ${n} VDI:\n`
      + `uuid ( RO)            : ${d.vdi.uuid}\n    virtual-size ( RO): ${d.vdi.virtual_size}\n\n\n`).join(''));

    expect(await run('vm-disk-remove', 'vm=cli-dev', 'device=3')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    await expect(x.call('VDI.get_uuid', added.r.VDI)).rejects.toThrow(/HANDLE_INVALID/);
    expect(await run('vm-disk-remove', 'vm=cli-dev', 'device=3')).toMatchObject({ code: 1, stderr: 'Error: Disk not found\n' });
    expect(await run('vm-disk-add', 'vm=cli-dev', 'disk-size=big', 'device=4'))
      .toMatchObject({ code: 1, stderr: "Error: Failed to parse field 'disk-size': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got 'big'\n" });

    expect(await run('vm-cd-add', 'vm=cli-dev', 'cd-name=no-such.iso', 'device=3')).toMatchObject({ code: 1, stderr: 'Error: CD no-such.iso not found!\n' });
    expect(await run('vm-cd-insert', 'vm=cli-dev', 'cd-name=no-such.iso')).toMatchObject({ code: 1, stderr: 'Error: CD no-such.iso not found\n' });
    const cds = (await Promise.all(((await x.call('VM.get_VBDs', vm)) as string[]).map((b) => x.call('VBD.get_type', b)))).filter((t) => t === 'CD');
    if (cds.length === 0) expect(await run('vm-cd-eject', 'vm=cli-dev')).toMatchObject({ code: 1, stderr: 'Error: No CDs found\n' });
    expect(await run('vm-cd-list', 'vm=cli-dev')).toMatchObject({ code: 0, stderr: '' });

    // a VM without VIFs lists none; one VIF is its record
    expect(await run('vm-vif-list', 'vm=cli-dev')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const net = (await x.call('network.get_all'))[0];
    const vif = await x.call('VIF.create', { device: '0', network: net, VM: vm, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} });
    const v = await x.call('VIF.get_record', vif);
    const vifs = await run('vm-vif-list', 'vm=cli-dev', 'params=uuid,device,MAC');
    expect(vifs).toMatchObject({ code: 0, stderr: '' });
    expect(vifs.stdout).toBe(`uuid ( RO)      : ${v.uuid}\n    device ( RO): 0\n       MAC ( RO): ${v.MAC}\n\n\n`);

    expect(await run('vm-vcpu-hotplug', 'vm=cli-dev', 'new-vcpus=two')).toMatchObject({ code: 1, stderr: "Error: Failed to parse parameter 'new-vcpus': expecting an integer\n" });
    expect((await run('vm-uninstall', 'vm=cli-dev', '--force')).code).toBe(0);
  });
});

describe('--multiple with filters', () => {
  it('vm-shutdown power-state=running needs --multiple for several VMs, then shuts every one down', async () => {
    for (const n of ['cli-m1', 'cli-m2']) {
      expect((await run('vm-install', `template=${template.name}`, `new-name-label=${n}`)).code).toBe(0);
      expect((await run('vm-start', `vm=${n}`)).code).toBe(0);
    }
    const running = async () => Object.values(await x.call('VM.get_all_records') as Record<string, Rec>)
      .filter((r) => r.power_state === 'Running' && !r.is_control_domain).length;
    expect(await running()).toBeGreaterThanOrEqual(2);
    expect(await run('vm-shutdown', 'power-state=running'))
      .toMatchObject({ code: 1, stderr: 'Error: Multiple matches VMs found. --multiple required to complete the operation\n' });
    expect(await run('vm-shutdown', '--multiple', 'power-state=running')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(await running()).toBe(0);
    // nothing left to match
    expect(await run('vm-shutdown', '--multiple', 'power-state=running')).toMatchObject({ code: 1, stderr: 'Error: No matching VMs found\n' });
  });
});

describe('vm-migrate within a pool of two hosts', () => {
  it('moves a running VM on shared storage to the host named, and refuses a migration to another pool', async () => {
    const { srv: two, x: x2 } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 });
    try {
      const run2 = (...args: string[]) => xe(two.urls[0], args, { username: 'root', password: PASSWORD });
      const hosts: string[] = await x2.call('host.get_all');
      const shared = await createSharedSr(x2, two, hosts[0]);
      const r = await run2('vm-install', `template=${template.name}`, 'new-name-label=cli-mig', `sr-uuid=${await x2.call('SR.get_uuid', shared)}`);
      expect(r.code).toBe(0);
      const vm = await x2.call('VM.get_by_uuid', r.stdout.trim());
      expect((await run2('vm-start', 'vm=cli-mig', `on=${await x2.call('host.get_name_label', hosts[0])}`)).code).toBe(0);
      expect(await x2.call('VM.get_resident_on', vm)).toBe(hosts[0]);

      expect(await run2('vm-migrate', 'vm=cli-mig')).toMatchObject({ code: 1, stderr: 'Error: No destination host specified\n' });
      expect(await run2('vm-migrate', 'vm=cli-mig', 'host=nowhere')).toMatchObject({ code: 1, stderr: 'Error: Host nowhere not found\n' });
      expect(await run2('vm-migrate', 'vm=cli-mig', `host-uuid=${await x2.call('host.get_uuid', hosts[1])}`, '--live')).toMatchObject({ code: 0, stdout: '', stderr: '' });
      expect(await x2.call('VM.get_resident_on', vm)).toBe(hosts[1]);
      expect(await x2.call('VM.get_power_state', vm)).toBe('Running');

      // a remote master that does not answer
      const sxm = await run2('vm-migrate', 'vm=cli-mig', 'remote-master=127.0.0.1:1', 'remote-username=root', 'remote-password=x');
      expect(sxm).toMatchObject({ code: 1, stdout: "Performing a storage live migration. Your VM's VDIs will be migrated with the VM.\n" });
      expect(sxm.stderr).toBe('Cannot forward messages because the server cannot be contacted. The server may be switched off or there may be network connectivity problems.\nhost: 127.0.0.1\n');
      expect(await run2('vm-migrate', 'vm=cli-mig', 'remote-master=192.0.2.1')).toMatchObject({ code: 1, stderr: "Error: Storage live migration requires remote-master, remote-username, and remote-password to be specified. Please see 'xe help vm-migrate' for help.\n" });
    } finally {
      await two.close();
    }
  });
});
