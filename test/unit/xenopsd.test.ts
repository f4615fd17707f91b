// The pure parts of the VM lifecycle: Linux device names and Xen device numbers (xapi-idl
// device_number.ml), the UPDATES channel's coalescing, and xenopsd's per-VM queue.
import { describe, expect, it } from 'vitest';
import { deviceNumber, linuxDevice } from '../../server/api/xenops-sync.js';
import { Updates, Xenopsd, XenopsError, type StorageBackend, type VmSpec } from '../../server/xenopsd/index.js';
import { Clock } from '../../server/clock.js';

describe('device names and numbers', () => {
  it('HVM: the first four disks are emulated IDE, the rest xvd', () => {
    const hvm = { domain_type: 'hvm' };
    expect(['0', '1', '2', '3', '4'].map((u) => linuxDevice(hvm, { userdevice: u }))).toEqual(['hda', 'hdb', 'hdc', 'hdd', 'xvde']);
    expect(linuxDevice({ domain_type: 'pv' }, { userdevice: '0' })).toBe('xvda');
    expect(linuxDevice({ domain_type: 'pv' }, { userdevice: '26' })).toBe('xvdaa');
  });

  it('Xen device numbers', () => {
    expect(['hda', 'hdb', 'hdc', 'hdd'].map(deviceNumber)).toEqual([768, 832, 5632, 5696]);
    expect(deviceNumber('xvda')).toBe(51712);
    expect(deviceNumber('xvdb')).toBe(51728);
    expect(deviceNumber('xvdq')).toBe((1 << 28) | (16 << 8));
  });
});

describe('UPDATES', () => {
  it('coalesces repeated changes of one id and wakes consumers once per turn', async () => {
    const u = new Updates();
    let wakes = 0;
    u.subscribe(() => wakes++);
    u.add('VM/a');
    u.add('VM/a');
    u.add('VM/b');
    await Promise.resolve();
    expect(wakes).toBe(1);
    const { ids, next } = u.get(0);
    expect(ids.sort()).toEqual(['VM/a', 'VM/b']);
    expect(u.get(next).ids).toEqual([]);
    u.add('VM/a');
    expect(u.get(next).ids).toEqual(['VM/a']);
  });
});

describe('xenopsd', () => {
  const storage: StorageBackend = {
    open: async () => ({ io: null, path: null, type: 'aio' }),
    hold: async () => () => {},
    fingerprint: async () => '',
  };
  const spec = (id: string, mem = 1024): VmSpec => ({
    id, name: id, domainType: 'hvm', vcpus: 1, memoryRequired: mem, memoryTarget: mem, pvDrivers: false,
    vbds: [{ id: 'hda', position: 0, mode: 'RW', backend: null, ty: 'Disk', unpluggable: true }], vifs: [],
  });

  it('serialises operations on one VM and reports errors as xenopsd does', async () => {
    const x = new Xenopsd({ uuid: 'h', totalMemory: 10_000, dom0Memory: 1000 }, { clock: new Clock(0), storage });
    x.add(spec('a'));
    const order: string[] = [];
    const p1 = x.start('a').then(() => order.push('start'));
    const p2 = x.shutdown('a', { clean: true }).then(() => order.push('shutdown'));
    await Promise.all([p1, p2]);
    expect(order).toEqual(['start', 'shutdown']);
    expect(x.stat('a').power_state).toBe('Halted');
    await expect(x.shutdown('a', { clean: true })).rejects.toEqual(new XenopsError('Bad_power_state', ['Halted', 'Running']));
    await x.shutdown('a', { clean: false }); // poweroff of a domain already gone
    x.add(spec('big', 20_000));
    await expect(x.start('big')).rejects.toMatchObject({ kind: 'Not_enough_memory' });
    expect(x.freeMemory()).toBe(9000);
  });

  it('hands out increasing domids; a start leaves the domain paused when asked', async () => {
    const x = new Xenopsd({ uuid: 'h', totalMemory: 10_000, dom0Memory: 1000 }, { clock: new Clock(0), storage });
    x.add(spec('a'));
    x.add(spec('b'));
    await Promise.all([x.start('a'), x.start('b', { paused: true })]);
    expect([x.stat('a').domid, x.stat('b').domid].sort()).toEqual([1, 2]);
    expect(x.stat('b').power_state).toBe('Paused');
    expect(x.vbdStat('a', 'hda')).toMatchObject({ plugged: true, active: true });
    await x.reboot('a', { clean: false });
    expect(x.stat('a').domid).toBe(3);
  });
});
