// The README's in-process example, as a user would write it: a pool from a fixture, reset before
// every test, XO's xen-api client against it. The second test sees the VM the first destroyed.
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import { startEmulator, type EmulatorHandle } from '../../server/index.js';

let pool: EmulatorHandle;
let xapi: Xapi;

beforeAll(async () => {
  pool = await startEmulator({ fixture: 'fixtures/minimal.yaml', seed: 'ci' });
});
afterAll(() => pool?.stop());
beforeEach(async () => {
  // every test starts from the pool as it was loaded; sessions from before are gone
  await pool.control.snapshots.reset();
  xapi = createClient({ url: pool.url, auth: { user: pool.username, password: pool.password }, allowUnauthorized: true });
  await xapi.connect();
  return () => xapi.disconnect();
});

/** The guest agent's address of VIF 0, once it reports (at time scale 0 its boot takes no time). */
async function addressOf(vm: string): Promise<string | undefined> {
  for (let i = 0; i < 200; i++) {
    const gm = await xapi.call<string>('VM.get_guest_metrics', vm);
    if (gm !== 'OpaqueRef:NULL') {
      const networks = await xapi.call<Record<string, string>>('VM_guest_metrics.get_networks', gm);
      if (networks['0/ip']) return networks['0/ip'];
    }
  }
  return undefined;
}

it('starts the fixture VM and sees its address', async () => {
  const [vm] = await xapi.call<string[]>('VM.get_by_name_label', 'vm1');
  await xapi.call('VM.start', vm, false, false);
  expect(await xapi.call('VM.get_power_state', vm)).toBe('Running');
  expect(await addressOf(vm)).toMatch(/^10\.0\.\d+\.\d+$/);
  await xapi.call('VM.hard_shutdown', vm);
  await xapi.call('VM.destroy', vm);
  expect(await xapi.call('VM.get_by_name_label', 'vm1')).toEqual([]);
});

it('finds the pool as loaded again, with the same refs', async () => {
  const [vm] = await xapi.call<string[]>('VM.get_by_name_label', 'vm1');
  expect(vm).toMatch(/^OpaqueRef:/);
  expect(await xapi.call('VM.get_power_state', vm)).toBe('Halted');
  expect(await xapi.call('VM.get_guest_metrics', vm)).toBe('OpaqueRef:NULL');
});
