// Fixture documents: sizes with units, and validation errors that name the path of the bad key.
import { describe, expect, it } from 'vitest';
import { FixtureError, formatSize, parseFixtureText, parseSize, validateFixture } from '../../server/control/fixture/schema.js';

/** The problems a document has, as "path: message" lines. */
function problems(doc: unknown): string[] {
  try {
    validateFixture(doc);
  } catch (e) {
    expect(e).toBeInstanceOf(FixtureError);
    return (e as FixtureError).problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message));
  }
  throw new Error('the document was accepted');
}

describe('sizes', () => {
  it('takes bytes, binary units and decimal units', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize('10GiB')).toBe(10 * 1024 ** 3);
    expect(parseSize('10G')).toBe(10 * 1024 ** 3);
    expect(parseSize('512 MiB')).toBe(512 * 1024 ** 2);
    expect(parseSize('1.5TiB')).toBe(1.5 * 1024 ** 4);
    expect(parseSize('2GB')).toBe(2e9);
    expect(parseSize('12')).toBe(12);
    for (const bad of ['10 potatoes', '', '-1', 'GiB', -5, 1.5, '1e3', null, {}]) expect(parseSize(bad), String(bad)).toBeUndefined();
  });

  it('prints a size with the largest unit that divides it, and reads it back', () => {
    for (const n of [0, 1, 1023, 1024, 3 * 1024 ** 2, 10 * 1024 ** 3, 2 * 1024 ** 4, 1024 ** 3 + 1]) expect(parseSize(formatSize(n))).toBe(n);
    expect(formatSize(10 * 1024 ** 3)).toBe('10GiB');
    expect(formatSize(1536 * 1024 ** 2)).toBe('1536MiB');
  });
});

describe('validation', () => {
  it('accepts a full document and gives sizes in bytes', () => {
    const f = validateFixture({
      pool: { name: 'p', guest_profile: 'no-drivers' },
      hosts: [{ name: 'a', cpus: 4, memory: '16GiB' }],
      srs: [{ name: 'S', type: 'file', shared: true, default: true }],
      networks: [{ name: 'N', bridge: 'xenbr1', mtu: 9000, dhcp_subnet: '10.1.0.0/24' }],
      vms: [{
        name: 'v', vcpus: 2, memory: '1GiB', power_state: 'Running', tags: ['t'], other_config: { a: 1 },
        disks: [{ size: '4GiB', sr: 'S', content: { pattern: 'deadbeef', bytes: '1MiB' } }], vifs: [{ network: 'N' }], snapshots: ['s1'],
      }],
      users: [{ name: 'u', password: 'pw', role: 'vm-admin' }],
    });
    expect(f.hosts).toEqual([{ name: 'a', cpus: 4, memory: 16 * 1024 ** 3 }]);
    expect(f.vms![0].memory).toBe(1024 ** 3);
    expect(f.vms![0].disks![0]).toMatchObject({ size: 4 * 1024 ** 3, content: { pattern: 'deadbeef', bytes: 1024 ** 2 } });
    expect(f.vms![0].other_config).toEqual({ a: '1' });
  });

  it('names the path of a bad size', () => {
    const vms = [{ name: 'a' }, { name: 'b' }, { name: 'c', disks: [{ size: '10 potatoes' }] }];
    expect(problems({ vms })).toEqual(['vms[2].disks[0].size: expected a size like 10GiB (or a number of bytes)']);
  });

  it('names unknown keys, bad enums and missing keys where they are', () => {
    expect(problems({ vms: [{ name: 'a', cpus: 2 }] })).toEqual(['vms[0]: unknown key "cpus"']);
    expect(problems({ srs: [{ name: 's', type: 'nfs' }] })).toEqual(['srs[0].type: expected an SR type the emulator supports: ext, file, iso, dummy']);
    expect(problems({ vms: [{ name: 'a', power_state: 'running' }] })).toEqual(['vms[0].power_state: expected one of Halted, Running, Suspended, Paused']);
    expect(problems({ vms: [{ name: 'a', disks: [{}] }] })[0]).toMatch(/^vms\[0\]\.disks\[0\]\.size: /);
    expect(problems({ pool: { guest_profile: 'windows' } })).toEqual(['pool.guest_profile: expected one of agent, pv-drivers, no-drivers, no-os']);
    expect(problems({ hostz: 2 })).toEqual(['unknown key "hostz"']);
    expect(problems({ networks: [{ name: 'n', dhcp_subnet: '10.0.0.0' }] })).toEqual(['networks[0].dhcp_subnet: expected a CIDR subnet like 10.0.0.0/24']);
    expect(problems({ users: [{ name: 'u', password: 'p', role: 'god' }] })[0]).toMatch(/^users\[0\]\.role: /);
  });

  it('explains a bad disk content by its branch', () => {
    expect(problems({ vms: [{ name: 'a', disks: [{ size: 1, content: { pattern: 'xyz' } }] }] }))
      .toEqual(['vms[0].disks[0].content.pattern: expected 1 to 64 bytes in hex, e.g. "ab" or "deadbeef"']);
    expect(problems({ vms: [{ name: 'a', disks: [{ size: '1MiB', content: { pattern: 'ab', bytes: '2MiB' } }] }] }))
      .toEqual(['vms[0].disks[0].content.bytes: is larger than the disk']);
  });

  it('refuses names used twice and SR settings that cannot be', () => {
    expect(problems({ vms: [{ name: 'a' }, { name: 'a' }] })).toEqual(['vms[1].name: "a" is already the name of vms[0]']);
    expect(problems({ srs: [{ name: 's', type: 'file', size: '1GiB' }] })[0]).toMatch(/^srs\[0\]\.size: only an ext SR/);
    expect(problems({ srs: [{ name: 's', type: 'ext', shared: true }] })[0]).toMatch(/^srs\[0\]\.shared: /);
  });
});

describe('parsing', () => {
  it('reads YAML, and JSON by its name or its first character', () => {
    expect(parseFixtureText('pool:\n  name: y\n', 'f.yaml')).toEqual({ pool: { name: 'y' } });
    expect(parseFixtureText('{"pool": {"name": "j"}}', 'f.txt')).toEqual({ pool: { name: 'j' } });
    expect(parseFixtureText('{}', 'f.json')).toEqual({});
  });

  it('reports a syntax error as the whole document\'s problem', () => {
    expect(() => parseFixtureText('vms: [\n', 'f.yaml')).toThrow(/^not valid YAML: /);
    expect(() => parseFixtureText('{"vms": ', 'f.json')).toThrow(/^not valid JSON: /);
  });
});
