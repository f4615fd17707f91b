// Calls Xen Orchestra's backup engine makes on every run, through XO's own client: the hidden
// VM.update_allowed_operations and VM.set_is_default_template, and VDI.get_nbd_info, which is []
// in a pool without an NBD network (xapi's answer for a fresh pool).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import { startEmulator, type EmulatorHandle } from '../../server/index.js';
import { connect, XapiFault } from './helpers/jsonrpc.js';
import { MiB, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

let pool: EmulatorHandle;
let xapi: Xapi;
beforeAll(async () => {
  pool = await startEmulator({ seed: 'xo-backup-calls', users: [{ name: 'ro', password: 'ro', role: 'read-only' }] });
  xapi = createClient({ url: pool.url, auth: { user: pool.username, password: pool.password }, allowUnauthorized: true });
  await xapi.connect();
});
afterAll(async () => {
  await xapi?.disconnect();
  await pool?.stop();
});

async function newVm(name: string) {
  const [sr] = await xapi.call<string[]>('SR.get_by_name_label', 'Local storage');
  const [net] = await xapi.call<string[]>('network.get_all_where', 'field "bridge" = "xenbr0"');
  const vm = await xapi.call<string>('VM.create', vmArgs(name));
  const vdi = await xapi.call<string>('VDI.create', vdiArgs(sr, 4 * MiB, `${name}-disk`));
  const vbd = await xapi.call<string>('VBD.create', vbdArgs(vm, vdi, '0'));
  const vif = await xapi.call<string>('VIF.create', vifArgs(vm, net));
  return { vm, vdi, vbd, vif };
}

it('VM.update_allowed_operations recomputes the VM\'s and its devices\' allowed_operations', async () => {
  const { vm, vdi, vbd, vif } = await newVm('backup-source');
  const before = {
    vm: await xapi.call<string[]>('VM.get_allowed_operations', vm),
    vdi: await xapi.call<string[]>('VDI.get_allowed_operations', vdi),
    vbd: await xapi.call<string[]>('VBD.get_allowed_operations', vbd),
    vif: await xapi.call<string[]>('VIF.get_allowed_operations', vif),
  };
  expect(before.vm).toContain('start');
  // stale lists, as a crash between a change and its recomputation would leave them
  for (const [cls, ref] of [['VM', vm], ['VDI', vdi], ['VBD', vbd], ['VIF', vif]]) pool.emu.db.update(cls, ref, { allowed_operations: [] });
  await xapi.call('VM.update_allowed_operations', vm);
  expect(await xapi.call('VM.get_allowed_operations', vm)).toEqual(before.vm);
  expect(await xapi.call('VDI.get_allowed_operations', vdi)).toEqual(before.vdi);
  expect(await xapi.call('VBD.get_allowed_operations', vbd)).toEqual(before.vbd);
  expect(await xapi.call('VIF.get_allowed_operations', vif)).toEqual(before.vif);
});

it('VM.set_is_default_template writes the flag; a read-only user may not', async () => {
  const { vm } = await newVm('default-template');
  await xapi.call('VM.set_is_default_template', vm, true);
  expect(await xapi.call('VM.get_is_default_template', vm)).toBe(true);
  await xapi.call('VM.set_is_default_template', vm, false);
  expect(await xapi.call('VM.get_is_default_template', vm)).toBe(false);
  const ro = await connect(pool.url, 'ro', 'ro');
  await expect(ro.call('VM.set_is_default_template', vm, true)).rejects.toSatisfy((e: XapiFault) => e.description[0] === 'RBAC_PERMISSION_DENIED');
  await expect(xapi.call('VM.set_is_default_template', 'OpaqueRef:nope', true)).rejects.toMatchObject({ code: 'HANDLE_INVALID' });
});

it('VDI.get_nbd_info is [] in a pool without an NBD network', async () => {
  const { vdi } = await newVm('nbd-less');
  expect(await xapi.call('VDI.get_nbd_info', vdi)).toEqual([]);
  await expect(xapi.call('VDI.get_nbd_info', 'OpaqueRef:nope')).rejects.toMatchObject({ code: 'HANDLE_INVALID' });
});

// Continuous replication updates the existing copy with one setter per field (XO's
// importIncrementalVm, setFields on the target VM): the setters xapi overrides must answer as xapi's.
it('the setters XO writes on a replicated VM: domain_type and HVM_boot_policy kept consistent, the others checked', async () => {
  const { vm } = await newVm('replica');
  await xapi.call('VM.set_domain_type', vm, 'pv');
  expect([await xapi.call('VM.get_domain_type', vm), await xapi.call('VM.get_HVM_boot_policy', vm)]).toEqual(['pv', '']);
  await xapi.call('VM.set_domain_type', vm, 'hvm');
  expect([await xapi.call('VM.get_domain_type', vm), await xapi.call('VM.get_HVM_boot_policy', vm)]).toEqual(['hvm', 'BIOS order']);
  await xapi.call('VM.set_HVM_boot_policy', vm, '');
  expect([await xapi.call('VM.get_domain_type', vm), await xapi.call('VM.get_HVM_boot_policy', vm)]).toEqual(['pv', '']);
  await xapi.call('VM.set_HVM_boot_policy', vm, 'BIOS order');
  expect(await xapi.call('VM.get_domain_type', vm)).toBe('hvm');
  await expect(xapi.call('VM.set_domain_type', vm, 'unspecified')).rejects.toMatchObject({ code: 'INVALID_VALUE', params: ['domain_type', 'unspecified'] });

  await xapi.call('VM.set_HVM_shadow_multiplier', vm, 2.5);
  expect(await xapi.call('VM.get_HVM_shadow_multiplier', vm)).toBe(2.5);
  await expect(xapi.call('VM.set_HVM_shadow_multiplier', vm, 0.5)).rejects.toMatchObject({ code: 'INVALID_VALUE', params: ['multiplier', '0.5'] });

  const version = await xapi.call<number>('VM.get_hardware_platform_version', vm);
  await xapi.call('VM.set_has_vendor_device', vm, true);
  expect(await xapi.call('VM.get_has_vendor_device', vm)).toBe(true);
  expect(await xapi.call('VM.get_hardware_platform_version', vm)).toBe(Math.max(version, 2));

  await xapi.call('VM.set_ha_restart_priority', vm, 'best-effort');
  expect(await xapi.call('VM.get_ha_restart_priority', vm)).toBe('best-effort');
  await expect(xapi.call('VM.set_ha_restart_priority', vm, 'always')).rejects.toMatchObject({ code: 'INVALID_VALUE', params: ['ha_restart_priority', 'always'] });

  // a running VM: the vendor device and the shadow multiplier wait for a halt; HA protection follows
  await xapi.call('VM.start', vm, false, false);
  await expect(xapi.call('VM.set_has_vendor_device', vm, false)).rejects.toMatchObject({ code: 'VM_BAD_POWER_STATE', params: [vm, 'halted', 'running'] });
  await expect(xapi.call('VM.set_HVM_shadow_multiplier', vm, 1)).rejects.toMatchObject({ code: 'VM_BAD_POWER_STATE' });
  await xapi.call('VM.set_ha_restart_priority', vm, 'restart');
  expect(await xapi.call('VM.get_ha_always_run', vm)).toBe(true);
  await xapi.call('VM.set_ha_restart_priority', vm, '');
  expect(await xapi.call('VM.get_ha_always_run', vm)).toBe(false);
  await xapi.call('VM.hard_shutdown', vm);
});
