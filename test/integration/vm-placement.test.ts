// The placement questions a client asks before starting or moving a VM, over JSON-RPC and Python's
// XenAPI: VM.get_possible_hosts, assert_can_boot_here, assert_agile, on a 2-host pool with a
// shared SR and each host's local storage.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { faultOf, type Client } from './helpers/jsonrpc.js';
import { createSharedSr, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'vm-placement-test';
let srv: RunningServer;
let x: Client;
let hosts: string[];
let shared: string;
let local1: string;

async function vmWithDisk(name: string, sr: string): Promise<string> {
  const vm: string = await x.call('VM.create', vmArgs(name));
  const vdi: string = await x.call('VDI.create', vdiArgs(sr, 4 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  await x.call('VIF.create', vifArgs(vm, await xenbr0(x)));
  return vm;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0, seed: 'vm-placement' }));
  hosts = srv.emu.hosts;
  shared = await createSharedSr(x, srv, hosts[0]);
  const locals: string[] = await x.call('SR.get_all_where', 'field "name__label" = "Local storage"');
  for (const sr of locals) {
    const pbd = (await x.call('SR.get_PBDs', sr))[0];
    if ((await x.call('PBD.get_host', pbd)) === hosts[1]) local1 = sr;
  }
});

afterAll(async () => {
  await srv?.close();
});

it('a VM on shared storage can boot on every host and is agile; a disabled host is left out', async () => {
  const vm = await vmWithDisk('agile', shared);
  expect((await x.call('VM.get_possible_hosts', vm)).sort()).toEqual([...hosts].sort());
  await x.call('VM.assert_agile', vm);
  await x.call('VM.assert_can_boot_here', vm, hosts[1]);
  await x.call('host.disable', hosts[1]);
  try {
    expect(await x.call('VM.get_possible_hosts', vm)).toEqual([hosts[0]]);
    expect(await faultOf(x.call('VM.assert_can_boot_here', vm, hosts[1]))).toEqual(['HOST_DISABLED', hosts[1]]);
  } finally {
    await x.call('host.enable', hosts[1]);
  }
});

it("a VM on a host's local storage boots only there and is not agile", async () => {
  const vm = await vmWithDisk('local', local1);
  expect(await x.call('VM.get_possible_hosts', vm)).toEqual([hosts[1]]);
  expect(await faultOf(x.call('VM.assert_can_boot_here', vm, hosts[0]))).toEqual(['VM_REQUIRES_SR', vm, local1]);
  expect(await faultOf(x.call('VM.assert_agile', vm))).toEqual(['HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED', local1]);
});

it('answers too big a VM with HOST_NOT_ENOUGH_FREE_MEMORY and bad handles with HANDLE_INVALID (Python XenAPI)', async () => {
  const vm = await vmWithDisk('huge', shared);
  const tib = String(1024 ** 4);
  await x.call('VM.set_memory_limits', vm, tib, tib, tib, tib);
  expect(await x.call('VM.get_possible_hosts', vm)).toEqual([]);
  const { hostname, port } = new URL(srv.urls[0]);
  const py = `
import sys, XenAPI
s = XenAPI.Session('http://${hostname}:${port}')
s.xenapi.login_with_password('root', '${PASSWORD}')
for args in [('${vm}', '${hosts[0]}'), ('OpaqueRef:NULL', '${hosts[0]}')]:
    try:
        s.xenapi.VM.assert_can_boot_here(*args)
        print('ok')
    except XenAPI.Failure as f:
        print(f.details[0])
`;
  const { stdout } = await promisify(execFile)('python3', ['-c', py], { env: { ...process.env, PYTHONPATH: '/usr/lib/python3/dist-packages/os_xenapi/client' } });
  expect(stdout.trim().split('\n')).toEqual(['HOST_NOT_ENOUGH_FREE_MEMORY', 'HANDLE_INVALID']);
});
