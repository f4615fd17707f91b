// Consoles of guest VMs, as xapi's update_vm writes them from xenopsd's state: created when the
// domain appears (HVM: rfb; PV: rfb and vt100), located at https://<resident host's address>/console?uuid=<uuid>,
// destroyed when the VM halts or suspends, recreated on the destination host by VM.pool_migrate.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import type { Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, PV_DRIVERS, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'consoles-test';

let srv: RunningServer;
let x: Client;
let hosts: string[];
let shared: string;
let network: string;

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);

async function newVm(name: string, extra: Record<string, unknown> = {}) {
  const vm: string = await x.call('VM.create', vmArgs(name, { other_config: PV_DRIVERS, ...extra }));
  const vdi: string = await x.call('VDI.create', vdiArgs(shared, 4 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  await x.call('VIF.create', vifArgs(vm, network));
  return vm;
}

async function consolesOf(vm: string): Promise<any[]> {
  const refs: string[] = (await rec('VM', vm)).consoles;
  return Promise.all(refs.map(async (r) => ({ ref: r, ...(await rec('console', r)) })));
}

const addressOf = async (host: string): Promise<string> => (await rec('host', host)).address;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 }));
  hosts = srv.emu.hosts;
  network = await xenbr0(x);
  shared = await createSharedSr(x, srv, hosts[0]);
});

afterAll(async () => {
  await srv?.close();
});

describe('guest consoles', () => {
  it('a halted VM has none; an HVM guest started gets one rfb console located on its host', async () => {
    const vm = await newVm('hvm');
    expect(await consolesOf(vm)).toEqual([]);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const cs = await consolesOf(vm);
    expect(cs.map((c) => c.protocol)).toEqual(['rfb']);
    const address = await addressOf(hosts[0]);
    expect(cs[0]).toMatchObject({ VM: vm, other_config: {}, location: `https://${address}/console?uuid=${cs[0].uuid}` });
    expect(await x.call('console.get_VM', cs[0].ref)).toBe(vm);

    await x.call('VM.hard_shutdown', vm);
    expect(await consolesOf(vm)).toEqual([]);
    expect((await x.call('console.get_all_records_where', `field "VM" = "${vm}"`))).toEqual({});
  });

  it('a PV guest gets rfb and vt100 consoles; suspend destroys them, resume recreates them', async () => {
    const vm = await newVm('pv', { domain_type: 'pv', HVM_boot_policy: '', PV_bootloader: 'pygrub' });
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const cs = await consolesOf(vm);
    expect(cs.map((c) => c.protocol).sort()).toEqual(['rfb', 'vt100']);
    await x.call('VM.suspend', vm);
    expect(await consolesOf(vm)).toEqual([]);
    await x.call('VM.resume', vm, false, false);
    expect((await consolesOf(vm)).map((c) => c.protocol).sort()).toEqual(['rfb', 'vt100']);
    await x.call('VM.clean_shutdown', vm);
    expect(await consolesOf(vm)).toEqual([]);
  });

  it('follows VM.pool_migrate: the consoles are located on the destination host', async () => {
    const vm = await newVm('mig');
    await x.call('VM.start_on', vm, hosts[0], false, false);
    const [before] = await consolesOf(vm);
    expect(before.location.startsWith(`https://${await addressOf(hosts[0])}/console?uuid=`)).toBe(true);
    await x.call('VM.pool_migrate', vm, hosts[1], { live: 'true' });
    const after = await consolesOf(vm);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ protocol: 'rfb', VM: vm, location: `https://${await addressOf(hosts[1])}/console?uuid=${after[0].uuid}` });
    expect(await x.call('console.get_all_records_where', `field "uuid" = "${before.uuid}"`)).toEqual({});
    await x.call('VM.hard_shutdown', vm);
    expect(await consolesOf(vm)).toEqual([]);
  });
});
