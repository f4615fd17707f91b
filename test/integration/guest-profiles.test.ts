// Guest profiles, seen through XenAPI as a client sees a guest: what VM_guest_metrics holds, what
// allowed_operations and hotplug allow, for each profile; the pool-wide default and the older
// other_config key; the boot timeline on a frozen clock (drivers first, the agent after the boot
// time) and a boot re-armed across a toolstack restart; a Windows template's guest.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { type Client, connect, faultOf } from './helpers/jsonrpc.js';
import { exited, scratch } from './helpers/cli.js';
import { localStorage, startPool, xenbr0 } from './helpers/pool.js';
import { MiB, NULL, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'guest-profiles';
let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let local: string;
let network: string;
let pool: string;

const rec = (cls: string, ref: string): Promise<any> => x.call(`${cls}.get_record`, ref);

/** A call retried once when its pooled connection was one the server had closed. */
async function once<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if ((e as Error).message !== 'fetch failed') throw e;
    return f();
  }
}

async function until<T>(what: string, check: () => Promise<T | undefined | null | false>): Promise<T> {
  let token = '';
  for (let i = 0; i < 50; i++) {
    const v = await check();
    if (v) return v;
    token = (await x.call('event.from', ['vm', 'vm_guest_metrics'], token, 5)).token;
  }
  throw new Error(`never: ${what}`);
}

/** A VM with a disk and a NIC. */
async function newVm(name: string, other_config: Record<string, string> = {}) {
  const vm: string = await x.call('VM.create', vmArgs(name, { other_config }));
  const vdi: string = await x.call('VDI.create', vdiArgs(local, 4 * MiB, `${name}-disk`));
  await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
  await x.call('VIF.create', vifArgs(vm, network));
  return { vm };
}

/** A running VM's new disk drive, not plugged yet. */
async function spareVbd(vm: string): Promise<string> {
  const spare: string = await x.call('VDI.create', vdiArgs(local, 4 * MiB, 'spare'));
  return x.call('VBD.create', vbdArgs(vm, spare, '1'));
}

/** Runs `p` on a frozen clock, moving time on in small steps until it settles (each step wakes the
 * simulated waits due by then; the next atom of the operation waits for the next step). */
async function whileAdvancing<T>(p: Promise<T>): Promise<T> {
  let done = false;
  const q = p.finally(() => {
    done = true;
  });
  for (let i = 0; i < 1000 && !done; i++) await ctl.clock.advance({ seconds: 0.1 });
  return q;
}

const gmOf = async (vm: string) => {
  const ref = (await rec('VM', vm)).guest_metrics;
  return ref === NULL ? null : rec('VM_guest_metrics', ref);
};

/** A VM made as `xe vm-install` does: clone of a default template, disks on the default SR, provision. */
async function fromTemplate(label: string, name: string): Promise<string> {
  const t = (await x.call('VM.get_by_name_label', label))[0];
  const vm: string = await x.call('VM.clone', t, name);
  const sr = await x.call('SR.get_uuid', (await rec('pool', pool)).default_SR);
  const disks = String((await rec('VM', vm)).other_config.disks).replaceAll('sr=""', `sr="${sr}"`);
  await x.call('VM.remove_from_other_config', vm, 'disks');
  await x.call('VM.add_to_other_config', vm, 'disks', disks);
  await x.call('VM.provision', vm);
  await x.call('VM.set_is_a_template', vm, false);
  await x.call('VIF.create', vifArgs(vm, network));
  return vm;
}

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { closeGrace: 0 }));
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  local = await localStorage(x);
  network = await xenbr0(x);
  pool = (await x.call('pool.get_all'))[0];
});

afterAll(async () => {
  await srv?.close();
});

describe('each profile', () => {
  it('agent: drivers, OS, addresses; clean ops, suspend, migration and hotplug allowed', async () => {
    const { vm } = await newVm('p-agent');
    await x.call('VM.start', vm, false, false);
    const vbd = await spareVbd(vm);
    const gm = await until('agent report', async () => {
      const g = await gmOf(vm);
      return g?.networks['0/ip'] ? g : null;
    });
    expect(gm).toMatchObject({ PV_drivers_detected: true, PV_drivers_up_to_date: true, live: true, memory: {}, disks: {} });
    expect(Object.keys(gm.networks).sort()).toEqual(['0/ip', '0/ipv4/0', '0/ipv6/0']);
    expect(gm.os_version.distro).toBe('debian');
    expect(gm.PV_drivers_version).toMatchObject({ major: '8', minor: '4', micro: '0' });
    const ops = (await rec('VM', vm)).allowed_operations;
    expect(ops).toEqual(expect.arrayContaining(['clean_shutdown', 'clean_reboot', 'suspend', 'pool_migrate', 'changing_VCPUs_live']));
    expect((await rec('VBD', vbd)).allowed_operations).toContain('plug');
    expect((await ctl.guests.get({ vm })).agent).toBe('running');
    await x.call('VBD.plug', vbd);
    expect((await rec('VBD', vbd)).currently_attached).toBe(true);
    await x.call('VM.clean_shutdown', vm);
  });

  it('pv-drivers: drivers and their features, no OS report and no address, ever', async () => {
    const { vm } = await newVm('p-drivers', { 'xapi-emu-guest-profile': 'pv-drivers' });
    await x.call('VM.start', vm, false, false);
    const vbd = await spareVbd(vm);
    await ctl.clock.advance({ seconds: 120 });
    const gm = await gmOf(vm);
    expect(gm).toMatchObject({ PV_drivers_detected: true, os_version: {}, PV_drivers_version: {}, networks: {}, can_use_hotplug_vbd: 'unspecified' });
    expect(gm.other).toMatchObject({ 'feature-suspend': '1', 'feature-poweroff': '1', 'feature-reboot': '1' });
    const ops = (await rec('VM', vm)).allowed_operations;
    // the features the drivers advertise, and not the ones they do not (no tools version: nothing implicit)
    expect(ops).toEqual(expect.arrayContaining(['clean_shutdown', 'clean_reboot', 'suspend', 'pool_migrate']));
    expect(ops).not.toContain('changing_VCPUs_live');
    // PV drivers are enough for hotplug
    expect((await rec('VBD', vbd)).allowed_operations).toContain('plug');
    expect((await ctl.guests.get({ vm })).agent).toBe('none');
    await x.call('VM.clean_shutdown', vm);
  });

  it('no-drivers and no-os: no guest metrics, no clean ops, no hotplug (VM_MISSING_PV_DRIVERS)', async () => {
    for (const profile of ['no-drivers', 'no-os']) {
      const { vm } = await newVm(`p-${profile}`, { 'xapi-emu-guest-profile': profile });
      await x.call('VM.start', vm, false, false);
      const vbd = await spareVbd(vm);
      await ctl.clock.advance({ seconds: 120 });
      const r = await rec('VM', vm);
      expect(r.guest_metrics).toBe(NULL);
      expect(r.allowed_operations).not.toContain('clean_shutdown');
      expect(r.allowed_operations).not.toContain('suspend');
      expect(r.allowed_operations).not.toContain('pool_migrate');
      expect(r.allowed_operations).toContain('hard_shutdown');
      expect(await faultOf(x.call('VBD.plug', vbd))).toEqual(['VM_MISSING_PV_DRIVERS', vm]);
      expect(await ctl.guests.get({ vm })).toMatchObject({ profile, pv_drivers: false, agent: 'none', networks: {} });
      await x.call('VM.hard_shutdown', vm);
    }
  });
});

describe('choosing the profile', () => {
  it('the pool default, the VM key over it, and the older xapi-emu-pv-drivers key', async () => {
    const profileOf = async (oc: Record<string, string>) => (await ctl.guests.get({ vm: (await newVm('choose', oc)).vm })).profile;
    expect(await profileOf({})).toBe('agent');
    expect(await profileOf({ 'xapi-emu-pv-drivers': 'false' })).toBe('no-drivers');
    expect(await profileOf({ 'xapi-emu-pv-drivers': 'true' })).toBe('agent');
    await x.call('pool.add_to_other_config', pool, 'xapi-emu-guest-profile', 'no-drivers');
    try {
      expect(await profileOf({})).toBe('no-drivers');
      expect(await profileOf({ 'xapi-emu-pv-drivers': 'true' })).toBe('pv-drivers');
      expect(await profileOf({ 'xapi-emu-guest-profile': 'agent' })).toBe('agent');
      // an unknown value is ignored
      expect(await profileOf({ 'xapi-emu-guest-profile': 'bogus' })).toBe('no-drivers');
    } finally {
      await x.call('pool.remove_from_other_config', pool, 'xapi-emu-guest-profile');
    }
  });

  it('--guest-profile sets the default of a pool that names none', async () => {
    const other = await startPool(PASSWORD, { closeGrace: 0, guestProfile: 'pv-drivers' });
    try {
      const c = controlClient({ url: other.srv.urls[0], username: 'root', password: PASSWORD });
      const vm: string = await other.x.call('VM.create', vmArgs('flag', { other_config: {} }));
      expect((await c.guests.get({ vm })).profile).toBe('pv-drivers');
    } finally {
      await other.srv.close();
    }
  });
});

describe('the --guest-profile flag', () => {
  const tmp = scratch('guest-cli');
  it('sets the pool default of the command line\'s pool, and refuses an unknown profile', async () => {
    const cli = await tmp.spawnCli(PASSWORD, ['--memory', '--guest-profile', 'no-drivers']);
    const c = await connect(cli.url, 'root', PASSWORD);
    const vm: string = await c.call('VM.create', vmArgs('cli', { other_config: {} }));
    const cc = controlClient({ url: cli.url, username: 'root', password: PASSWORD });
    expect((await cc.guests.get({ vm })).profile).toBe('no-drivers');
    cli.child.kill('SIGTERM');
    await exited(cli.child);
    const bad = await tmp.spawnCli(PASSWORD, ['--memory', '--guest-profile', 'windows']).then(() => '', (e: Error) => e.message);
    expect(bad).toContain('--guest-profile: "windows" is none of agent, pv-drivers, no-drivers, no-os');
  });
});

describe('the boot, in simulated time', () => {
  it('drivers come up with the domain, the agent reports after 20 s of a Linux boot', async () => {
    const vm = await fromTemplate('Debian Bookworm 12', 'timed-debian');
    await ctl.clock.set({ frozen: true });
    try {
      await whileAdvancing(x.call('VM.start', vm, false, false));
      const start = Date.parse((await rec('VM_metrics', (await rec('VM', vm)).metrics)).start_time.replace(/^(\d{4})(\d\d)(\d\d)T/, '$1-$2-$3T'));
      let gm = await gmOf(vm);
      expect(gm).toMatchObject({ PV_drivers_detected: true, networks: {}, os_version: {} });
      expect((await ctl.guests.get({ vm })).agent).toBe('booting');
      // the clock at 19 s after the domain's creation: still booting
      const now = (await ctl.clock.get()).now_ms;
      await ctl.clock.advance({ seconds: Math.max(0, (start + 19_000 - now) / 1000) });
      expect((await gmOf(vm)).networks).toEqual({});
      await ctl.clock.advance({ seconds: 2 });
      gm = await gmOf(vm);
      expect(gm.networks['0/ip']).toMatch(/^10\.0\./);
      expect(gm.os_version).toMatchObject({ name: 'Debian GNU/Linux 12 (bookworm)', distro: 'debian', major: '12' });
      await whileAdvancing(x.call('VM.hard_shutdown', vm));
    } finally {
      await ctl.clock.set({ frozen: false });
    }
  });

  it('a state restore taken mid-boot gives back the booting guest, whose agent reports once its boot time has passed', async () => {
    const vm = await fromTemplate('Debian Bookworm 12', 'restored-boot');
    await ctl.clock.set({ frozen: true });
    try {
      await whileAdvancing(x.call('VM.start', vm, false, false));
      expect((await ctl.guests.get({ vm })).agent).toBe('booting');
      await ctl.snapshots.take({ name: 'mid-boot', replace: true });
      await ctl.clock.advance({ seconds: 60 });
      expect((await gmOf(vm)).networks['0/ip']).toMatch(/^10\.0\./);
      await ctl.snapshots.restore({ name: 'mid-boot' });
      x = await connect(srv.urls[0], 'root', PASSWORD);
      // the snapshot's guest: drivers up, no report yet, its boot under way again
      expect((await ctl.guests.get({ vm })).agent).toBe('booting');
      expect((await gmOf(vm)).networks).toEqual({});
      await ctl.clock.advance({ seconds: 60 });
      expect((await gmOf(vm)).networks['0/ip']).toMatch(/^10\.0\./);
      await whileAdvancing(x.call('VM.hard_shutdown', vm));
    } finally {
      await ctl.clock.set({ frozen: false });
      await ctl.snapshots.delete({ name: 'mid-boot' }).catch(() => undefined);
    }
  });

  it('after a reboot the stale metrics stay until the new boot\'s agent reports; a stopped agent runs again', async () => {
    const { vm } = await newVm('reboot-timeline');
    await x.call('VM.start', vm, false, false);
    await until('first report', async () => (await ctl.guests.get({ vm })).agent === 'running');
    const gm = (await rec('VM', vm)).guest_metrics;
    const first = await rec('VM_guest_metrics', gm);
    await ctl.guests.agent({ vm, running: false });
    await ctl.clock.set({ frozen: true });
    try {
      await whileAdvancing(ctl.guests.reboot({ vm }));
      expect((await ctl.guests.get({ vm })).agent).toBe('booting');
      const stale = await rec('VM_guest_metrics', (await rec('VM', vm)).guest_metrics);
      expect(stale).toMatchObject({ uuid: first.uuid, networks: first.networks, live: false, last_updated: first.last_updated });
      await ctl.clock.advance({ seconds: 25 });
      const fresh = await rec('VM_guest_metrics', gm);
      expect(fresh).toMatchObject({ live: true, networks: first.networks });
      expect(fresh.last_updated).not.toBe(first.last_updated);
      expect((await ctl.guests.get({ vm })).agent).toBe('running');
      await whileAdvancing(x.call('VM.hard_shutdown', vm));
    } finally {
      await ctl.clock.set({ frozen: false });
    }
  });

  it('a resumed guest is the same guest: its agent is up at once', async () => {
    const { vm } = await newVm('resume-agent');
    await x.call('VM.start', vm, false, false);
    await until('first report', async () => (await ctl.guests.get({ vm })).agent === 'running');
    const before = await gmOf(vm);
    await ctl.clock.set({ frozen: true });
    try {
      await whileAdvancing(x.call('VM.suspend', vm));
      await whileAdvancing(x.call('VM.resume', vm, false, false));
      expect(await ctl.guests.get({ vm })).toMatchObject({ power_state: 'Running', agent: 'running', networks: before.networks });
      expect((await rec('VM', vm)).allowed_operations).toContain('suspend');
      await whileAdvancing(x.call('VM.hard_shutdown', vm));
    } finally {
      await ctl.clock.set({ frozen: false });
    }
  });

  it('a boot under way is re-armed after a toolstack restart', async () => {
    const { vm } = await newVm('restart-boot');
    await ctl.clock.set({ frozen: true });
    try {
      await whileAdvancing(x.call('VM.start', vm, false, false));
      expect((await ctl.guests.get({ vm })).agent).toBe('booting');
      await srv.toolstackRestart();
      // the restart closed the connections and ended the sessions: a client logs in again
      x = await once(() => connect(srv.urls[0], 'root', PASSWORD));
      expect((await once(() => ctl.guests.get({ vm }))).agent).toBe('booting');
      await ctl.clock.advance({ seconds: 30 });
      expect((await gmOf(vm)).networks['0/ip']).toBeDefined();
      expect((await ctl.guests.get({ vm })).agent).toBe('running');
      await whileAdvancing(x.call('VM.hard_shutdown', vm));
    } finally {
      await ctl.clock.set({ frozen: false });
    }
  });

  it('a Windows template\'s guest: the Windows tools, hotplug announced, netbios name', async () => {
    const vm = await fromTemplate('Windows Server 2022 (64-bit)', 'win2022');
    await x.call('VM.start', vm, false, false);
    expect((await ctl.guests.get({ vm })).boot_seconds).toBe(45);
    const gm = await until('windows agent', async () => {
      const g = await gmOf(vm);
      return g?.networks['0/ip'] ? g : null;
    });
    expect(gm.os_version).toMatchObject({ distro: 'windows', major: '10', minor: '0', spmajor: '0' });
    expect(gm.os_version.name).toMatch(/^Microsoft Windows Server 2022 Standard\|/);
    expect(gm.PV_drivers_version).toMatchObject({ major: '9', minor: '1' });
    expect(gm.other['feature-shutdown']).toBe('1');
    expect(gm).toMatchObject({ can_use_hotplug_vbd: 'yes', can_use_hotplug_vif: 'yes', netbios_name: { host_name: 'WIN2022' } });
    await x.call('VM.clean_shutdown', vm);
  });
});
