// Shared storage on the simulated fabric, with real clients over real sockets: an nfs SR made with
// nothing declared (the export appears on demand) shared by both hosts of a pool, its disk written
// by a guest on one host and read back by a guest on the other; SM's probe answers (exports,
// target IQNs, LUNs, SRs on a LUN); each error path as SM raises it (missing keys, unreachable
// servers, missing exports, versions, CHAP, SCSI ids in use, no space) and SR faults; LVHD
// physical_utilisation thick and thin (inflated while attached); the HA statefile checks; and a
// restart that keeps the fabric, the SRs and their disks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../server/app.js';
import { controlClient, type ControlClient } from '../../server/control/client.js';
import { connect, faultOf, type Client } from './helpers/jsonrpc.js';
import { startPool } from './helpers/pool.js';
import { GiB, MiB, PV_DRIVERS, memory, vbdArgs, vdiArgs, vmArgs } from './helpers/records.js';

const PASSWORD = 'shared-storage-test';
const TiB = 1024 * GiB;

// LVHD's sizes, as SM's lvhdutil and vhdutil compute them
const roundup = (unit: number, n: number) => Math.ceil(n / unit) * unit;
function overheadEmpty(size: number): number {
  const mb = Math.floor(size / MiB);
  return roundup(4096, roundup(512, 3 * 1024 + Math.floor(mb / 2) * 4) + Math.floor(Math.floor(mb / 2) / 8));
}
const MSIZE = 2 * TiB;
const sizeLV = (n: number) => roundup(4 * MiB, n);
const thickLV = (virt: number) => sizeLV(virt + overheadEmpty(MSIZE) + Math.ceil(virt / (2 * MiB)) * 4096);

let srv: RunningServer;
let x: Client;
let ctl: ControlClient;
let hosts: string[];

const q = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

async function guestWrite(vm: string, offset: number, data: Buffer) {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset })}`, srv.urls[0]), {
    method: 'POST', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' },
  });
  expect(r.status).toBe(200);
}

async function guestRead(vm: string, offset: number, length: number): Promise<Buffer> {
  const r = await fetch(new URL(`/xapi-emu/guest/disk?${q({ session_id: x.session, vm, device: '0', offset, length })}`, srv.urls[0]));
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

const nfsCreate = (dconf: Record<string, string>, shared = true) =>
  x.call('SR.create', hosts[0], dconf, 0, 'nfs', '', 'nfs', 'user', shared, {}) as Promise<string>;

const srCount = async () => (await x.call('SR.get_all')).length as number;
const pbdCount = async () => (await x.call('PBD.get_all')).length as number;

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD, { hosts: 2, closeGrace: 0 }));
  ctl = controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD });
  hosts = await x.call('host.get_all');
});

afterAll(async () => {
  await srv?.close();
});

describe('nfs: the export made on demand, shared by the pool', () => {
  it('creates a shared SR on any server and path, plugged on both hosts, its disk seen from both', async () => {
    const sr = await nfsCreate({ server: '10.0.0.5', serverpath: '/exports/a' });
    const rec = await x.call('SR.get_record', sr);
    expect(rec).toMatchObject({ type: 'nfs', shared: true, physical_size: TiB, content_type: 'user' });
    expect(rec.PBDs).toHaveLength(2);
    const pbdHosts = await Promise.all(rec.PBDs.map((p: string) => x.call('PBD.get_host', p)));
    expect(new Set(pbdHosts)).toEqual(new Set(hosts));
    for (const p of rec.PBDs) expect(await x.call('PBD.get_currently_attached', p)).toBe(true);
    expect(await x.call('SR.get_live_hosts', sr)).toEqual(expect.arrayContaining(hosts));

    // the SR's directory sits on the export, where another instance sharing the fabric would find it
    expect(existsSync(join(srv.emu.storageDir, 'fabric', 'nfs', '10.0.0.5', 'exports', 'a', rec.uuid))).toBe(true);

    const vdi: string = await x.call('VDI.create', vdiArgs(sr, 16 * MiB, 'nfs-disk'));
    const vdiUuid: string = await x.call('VDI.get_uuid', vdi);
    expect(existsSync(join(srv.emu.storageDir, 'fabric', 'nfs', '10.0.0.5', 'exports', 'a', rec.uuid, `${vdiUuid}.vhd`))).toBe(true);

    const vm: string = await x.call('VM.create', vmArgs('nfs-guest', { ...memory(512 * MiB), other_config: PV_DRIVERS }));
    await x.call('VBD.create', vbdArgs(vm, vdi, '0'));
    const data = Buffer.alloc(300 * 1024, 0x5a);
    await x.call('VM.start_on', vm, hosts[0], false, false);
    expect(await x.call('VM.get_resident_on', vm)).toBe(hosts[0]);
    await guestWrite(vm, 2 * MiB, data);
    await x.call('VM.hard_shutdown', vm);
    await x.call('VM.start_on', vm, hosts[1], false, false);
    expect(await x.call('VM.get_resident_on', vm)).toBe(hosts[1]);
    expect((await guestRead(vm, 2 * MiB, data.length)).equals(data)).toBe(true);
    await x.call('VM.hard_shutdown', vm);

    // the probe of the export lists the SR
    const xml: string = await x.call('SR.probe', hosts[1], { server: '10.0.0.5', serverpath: '/exports/a' }, 'nfs', {});
    expect(xml).toBe(`<?xml version="1.0" ?>\n<SRlist>\n\t<SR>\n\t\t<UUID>${rec.uuid}</UUID>\n\t</SR>\n</SRlist>\n`);

    await x.call('SR.scan', sr);
    expect(await x.call('VDI.get_physical_utilisation', vdi)).toBeGreaterThan(data.length);
    expect(await x.call('SR.get_physical_utilisation', sr)).toBeGreaterThan(data.length);
  });

  it('destroys an SR: its directory leaves the export; a second SR of the export survives', async () => {
    const a = await nfsCreate({ server: '10.0.0.6', serverpath: '/srv' });
    const b = await nfsCreate({ server: '10.0.0.6', serverpath: '/srv' });
    const [ua, ub] = [await x.call('SR.get_uuid', a), await x.call('SR.get_uuid', b)];
    const probe = () => x.call('SR.probe', hosts[0], { server: '10.0.0.6', serverpath: '/srv' }, 'nfs', {}) as Promise<string>;
    expect(await probe()).toContain(`<UUID>${ua}</UUID>`);
    for (const p of await x.call('SR.get_PBDs', a)) await x.call('PBD.unplug', p);
    await x.call('SR.destroy', a);
    const after = await probe();
    expect(after).not.toContain(ua);
    expect(after).toContain(`<UUID>${ub}</UUID>`);
    // forget then introduce: the directory is found again and its SR plugs
    for (const p of await x.call('SR.get_PBDs', b)) await x.call('PBD.unplug', p);
    await x.call('SR.forget', b);
    const again: string = await x.call('SR.introduce', ub, 'back', '', 'nfs', 'user', true, {});
    const pbd: string = await x.call('PBD.create', { host: hosts[0], SR: again, device_config: { server: '10.0.0.6', serverpath: '/srv' }, other_config: {} });
    await x.call('PBD.plug', pbd);
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(true);
    await x.call('SR.scan', again);
  });

  it('refuses what NFSSR refuses, leaving no SR nor PBD behind', async () => {
    const before = [await srCount(), await pbdCount()];
    expect(await faultOf(nfsCreate({ serverpath: '/x' }))).toEqual(['SR_BACKEND_FAILURE_102', '', 'The request is missing the server parameter', '']);
    expect(await faultOf(nfsCreate({ server: '10.0.0.7', serverpath: '/x', nfsversion: '2' }))).toEqual(['SR_BACKEND_FAILURE_1200', '', 'Invalid nfsversion.', '']);

    await ctl.storage.putServer({ address: 'filer1', nfs: { versions: ['3'], exports: [{ path: '/vol/a', size: 100 * GiB }, { path: '/vol/b' }] } });
    // no serverpath: the export list on stderr
    const f = await faultOf(nfsCreate({ server: 'filer1' }));
    expect(f.slice(0, 3)).toEqual(['SR_BACKEND_FAILURE_101', '', 'The request is missing the serverpath parameter']);
    expect(f[3]).toBe('<?xml version="1.0" ?>\n<nfs-exports>\n'
      + '\t<Export>\n\t\t<Target>filer1</Target>\n\t\t<Path>/vol/a</Path>\n\t\t<Accesslist>*</Accesslist>\n\t</Export>\n'
      + '\t<Export>\n\t\t<Target>filer1</Target>\n\t\t<Path>/vol/b</Path>\n\t\t<Accesslist>*</Accesslist>\n\t</Export>\n</nfs-exports>\n\n');
    expect(await faultOf(nfsCreate({ server: 'filer1', serverpath: '/vol/c' }))).toEqual(['SR_BACKEND_FAILURE_73', '', 'NFS mount error [opterr=mount failed on server `filer1` with return code 32]', '']);
    expect(await faultOf(nfsCreate({ server: 'filer1', serverpath: '/vol/a', nfsversion: '4.1' }))).toEqual(['SR_BACKEND_FAILURE_72', '', 'Required NFS server version unsupported [opterr=Unsupported NFS version: 4.1]', '']);
    // a server with no NFS service, and one that answers nothing
    await ctl.storage.putServer({ address: 'iscsi-only', iscsi: {} });
    expect((await faultOf(nfsCreate({ server: 'iscsi-only', serverpath: '/x' })))[0]).toBe('SR_BACKEND_FAILURE_108');
    await ctl.storage.putServer({ address: 'down', reachable: false, nfs: {} });
    expect(await faultOf(nfsCreate({ server: 'down', serverpath: '/x' }))).toEqual(['SR_BACKEND_FAILURE_108', '', 'Unable to detect an NFS service on this target.', '']);
    expect((await faultOf(x.call('SR.probe', hosts[0], { server: 'down', serverpath: '/x' }, 'nfs', {})))[0]).toBe('SR_BACKEND_FAILURE_108');
    expect([await srCount(), await pbdCount()]).toEqual(before);

    // a declared export has its size; a directory under it must exist to be mounted
    expect((await faultOf(nfsCreate({ server: 'filer1', serverpath: '/vol/a/sub' })))[0]).toBe('SR_BACKEND_FAILURE_73');
    const sr = await nfsCreate({ server: 'filer1', serverpath: '/vol/a' });
    expect(await x.call('SR.get_physical_size', sr)).toBe(100 * GiB);
    const probed: string = await x.call('SR.probe', hosts[0], { server: 'filer1', serverpath: '/vol/a', probeversion: '' }, 'nfs', {});
    expect(probed).toContain('<SupportedVersions>\n\t\t<Version>3</Version>\n\t</SupportedVersions>');
  });

  it('fails PBD.plug while the server is unreachable, plugs again once it answers, and reports SR faults', async () => {
    await ctl.storage.putServer({ address: 'filer2', nfs: { versions: ['3', '4'], exports: [{ path: '/data' }] } });
    const sr = await nfsCreate({ server: 'filer2', serverpath: '/data' });
    const [pbd] = await x.call('SR.get_PBDs', sr);
    await ctl.storage.putServer({ address: 'filer2', reachable: false, nfs: { versions: ['3', '4'], exports: [{ path: '/data' }] } });
    // plugged, its SM calls find the server gone
    expect((await faultOf(x.call('SR.scan', sr)))[0]).toBe('SR_BACKEND_FAILURE_47');
    await x.call('PBD.unplug', pbd);
    expect((await faultOf(x.call('PBD.plug', pbd)))[0]).toBe('SR_BACKEND_FAILURE_108');
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(false);
    expect((await ctl.storage.get({})).servers.find((s) => s.address === 'filer2')?.reachable).toBe(false);
    await ctl.storage.deleteServer({ address: 'filer2' });
    await x.call('PBD.plug', pbd);
    expect(await x.call('PBD.get_currently_attached', pbd)).toBe(true);
    await x.call('SR.scan', sr);

    const rule = await ctl.faults.create({ match: { sr: await x.call('SR.get_uuid', sr) }, effect: { sr_backend_failure: { code: 73, reason: 'NFS mount error' } } });
    expect(await faultOf(x.call('VDI.create', vdiArgs(sr, 4 * MiB)))).toEqual(['SR_BACKEND_FAILURE_73', '', 'NFS mount error', '']);
    await ctl.faults.delete({ id: rule.id });
    await x.call('VDI.create', vdiArgs(sr, 4 * MiB));
  });

  it('checks HA statefile and database replication hosting as xapi does', async () => {
    const sr = await nfsCreate({ server: '10.0.0.8', serverpath: '/ha' });
    await x.call('SR.assert_can_host_ha_statefile', sr);
    const [pbd] = await x.call('SR.get_PBDs', sr);
    await x.call('PBD.unplug', pbd);
    expect(await faultOf(x.call('SR.assert_can_host_ha_statefile', sr))).toEqual(['SR_NO_PBDS', sr]);
    expect(await faultOf(x.call('SR.assert_supports_database_replication', sr))).toEqual(['SR_NO_PBDS', sr]);
    await x.call('PBD.plug', pbd);
    const [sm] = await x.call('SM.get_all_records_where', 'field "type" = "nfs"').then((r: Record<string, any>) => Object.values(r));
    const replication = x.call('SR.assert_supports_database_replication', sr);
    if ('SR_METADATA' in sm.features) await replication;
    else expect(await faultOf(replication)).toEqual(['SR_OPERATION_NOT_SUPPORTED', sr]);
    // a local SR lacks a PBD on the other host
    const local: string = (await x.call('SR.get_by_name_label', 'Local storage'))[0];
    expect(await faultOf(x.call('SR.assert_can_host_ha_statefile', local))).toEqual(['SR_NO_PBDS', local]);
  });
});

describe('hostile device_config', () => {
  it('never names a directory outside the fabric: bad names fail as SM fails them', async () => {
    const before = [await srCount(), await pbdCount()];
    expect((await faultOf(nfsCreate({ server: '../../sr', serverpath: '/x' })))[0]).toBe('SR_BACKEND_FAILURE_140');
    expect((await faultOf(nfsCreate({ server: '..', serverpath: '/x' })))[0]).toBe('SR_BACKEND_FAILURE_140');
    expect((await faultOf(nfsCreate({ server: '10.0.0.5', serverpath: '/../../sr' })))[0]).toBe('SR_BACKEND_FAILURE_73');
    expect((await faultOf(x.call('SR.create', hosts[0], { SCSIid: '../../sr' }, 0, 'h', '', 'lvmohba', 'user', true, {})))[0]).toBe('SR_BACKEND_FAILURE_107');
    expect((await faultOf(x.call('SR.create', hosts[0], { device: '/dev/../..' }, 0, 'l', '', 'lvm', 'user', false, {})))[0]).toBe('SR_BACKEND_FAILURE_91');
    expect((await faultOf(x.call('SR.create', hosts[0], { server: '//../x' }, 0, 's', '', 'smb', 'user', true, {})))[0]).toBe('SR_BACKEND_FAILURE_111');
    expect([await srCount(), await pbdCount()]).toEqual(before);
    expect(existsSync(join(srv.emu.storageDir, 'x'))).toBe(false);
  });
});

describe('fixtures', () => {
  it('declares servers with the storage_servers key, and refuses a bad declaration naming its path', async () => {
    await ctl.fixture.load({ fixture: { storage_servers: [{ address: 'fixture-nas', nfs: { versions: ['4.1'], exports: [{ path: '/only', size: 5 * GiB }] } }] } });
    expect((await ctl.storage.get({})).servers.find((s) => s.address === 'fixture-nas')).toEqual({
      address: 'fixture-nas', reachable: true, nfs: { versions: ['4.1'], exports: [{ path: '/only', size: 5 * GiB }] },
    });
    expect((await faultOf(nfsCreate({ server: 'fixture-nas', serverpath: '/only' })))[0]).toBe('SR_BACKEND_FAILURE_72');
    const sr = await nfsCreate({ server: 'fixture-nas', serverpath: '/only', nfsversion: '4.1' });
    expect(await x.call('SR.get_physical_size', sr)).toBe(5 * GiB);
    const bad = await ctl.fixture.load({ fixture: { storage_servers: [{ address: 'x', reachable: 'no' }] } }).then(() => null, (e: any) => e);
    expect(bad?.status).toBe(400);
    expect(JSON.stringify(bad?.body ?? bad?.message)).toContain('storage_servers');
  });
});

describe('smb', () => {
  it('creates on a share, and fails to mount a missing share or with wrong credentials', async () => {
    const sr: string = await x.call('SR.create', hosts[0], { server: '\\\\fs1\\vms' }, 0, 'smb', '', 'smb', 'user', true, {});
    expect(await x.call('SR.get_shared', sr)).toBe(true);
    await x.call('VDI.create', vdiArgs(sr, 8 * MiB));
    expect(await x.call('SR.probe', hosts[0], { server: '//fs1/vms' }, 'smb', {})).toContain(`<UUID>${await x.call('SR.get_uuid', sr)}</UUID>`);
    await ctl.storage.putServer({ address: 'fs2', smb: { shares: [{ name: 'vms', username: 'u', password: 'p' }] } });
    const mk = (dconf: Record<string, string>) => x.call('SR.create', hosts[0], dconf, 0, 'smb', '', 'smb', 'user', true, {});
    expect(await faultOf(mk({ server: '//fs2/other', username: 'u', password: 'p' }))).toEqual(['SR_BACKEND_FAILURE_111', '', 'SMB mount error [opterr=mount failed with return code 32]', '']);
    expect(await faultOf(mk({ server: '//fs2/vms', username: 'u', password: 'bad' }))).toEqual(['SR_BACKEND_FAILURE_111', '', 'SMB mount error [opterr=mount failed with return code 13]', '']);
    expect((await faultOf(mk({})))[0]).toBe('SR_BACKEND_FAILURE_102');
    await mk({ server: '//fs2/vms', username: 'u', password: 'p' });
  });
});

describe('lvmoiscsi: discovery, LUNs, LVHD sizes', () => {
  const iqn = 'iqn.2026-02.com.example:storage.lun-set';
  const base = { target: 'san1', targetIQN: iqn };
  const mk = (dconf: Record<string, string>) => x.call('SR.create', hosts[0], dconf, 0, 'iscsi', '', 'lvmoiscsi', 'user', true, {}) as Promise<string>;

  beforeAll(async () => {
    await ctl.storage.putServer({
      address: 'san1',
      iscsi: {
        targets: [
          { iqn, luns: [{ id: 0, scsi_id: '36001405aaaa', size: 100 * GiB }, { id: 1, scsi_id: '36001405bbbb', size: 100 * GiB }, { id: 2, scsi_id: '36001405cccc', size: GiB }] },
          { iqn: 'iqn.2026-02.com.example:chap', chap: { user: 'in', password: 'secret' }, luns: [{ id: 0, scsi_id: '36001405dddd' }] },
        ],
      },
    });
  });

  it('answers the probes as SM prints them: IQNs, then LUNs, then the SRs on a LUN', async () => {
    const noIqn = await faultOf(x.call('SR.probe', hosts[0], { target: 'san1' }, 'lvmoiscsi', {}));
    expect(noIqn.slice(0, 3)).toEqual(['SR_BACKEND_FAILURE_96', '', 'The request is missing or has an incorrect target IQN parameter']);
    expect(noIqn[3]).toBe('<?xml version="1.0" ?>\n<iscsi-target-iqns>\n'
      + `\t<TGT>\n\t\t<Index>0</Index>\n\t\t<IPAddress>san1</IPAddress>\n\t\t<TargetIQN>${iqn}</TargetIQN>\n\t</TGT>\n`
      + '\t<TGT>\n\t\t<Index>1</Index>\n\t\t<IPAddress>san1</IPAddress>\n\t\t<TargetIQN>iqn.2026-02.com.example:chap</TargetIQN>\n\t</TGT>\n'
      + '\t<TGT>\n\t\t<Index>2</Index>\n\t\t<IPAddress>san1</IPAddress>\n\t\t<TargetIQN>*</TargetIQN>\n\t</TGT>\n</iscsi-target-iqns>\n\n');
    const noLun = await faultOf(x.call('SR.probe', hosts[0], base, 'lvmoiscsi', {}));
    expect(noLun[0]).toBe('SR_BACKEND_FAILURE_107');
    const luns = [...noLun[3].matchAll(/<LUNid>(\d+)<\/LUNid>\n\t\t<size>(\d+)<\/size>\n\t\t<SCSIid>(\w+)<\/SCSIid>/g)].map((m) => [Number(m[1]), Number(m[2]), m[3]]);
    expect(luns).toEqual([[0, 100 * GiB, '36001405aaaa'], [1, 100 * GiB, '36001405bbbb'], [2, GiB, '36001405cccc']]);
    expect(await x.call('SR.probe', hosts[0], { ...base, SCSIid: '36001405bbbb' }, 'lvmoiscsi', {})).toBe('<?xml version="1.0" ?>\n<SRlist/>\n');
    const sr = await mk({ ...base, SCSIid: '36001405bbbb' });
    expect(await x.call('SR.probe', hosts[0], { ...base, SCSIid: '36001405bbbb' }, 'lvmoiscsi', {})).toBe('<?xml version="1.0" ?>\n<SRlist>\n'
      + `\t<SR>\n\t\t<UUID>${await x.call('SR.get_uuid', sr)}</UUID>\n\t\t<Devlist>/dev/disk/by-id/scsi-36001405bbbb</Devlist>\n\t\t<size>${100 * GiB}</size>\n\t</SR>\n</SRlist>\n`);
    // probe_ext is for SMAPIv3 plugins: an SMAPIv1 driver's raw answer is refused
    expect(await faultOf(x.call('SR.probe_ext', hosts[0], base, 'lvmoiscsi', {}))).toEqual(['SR_OPERATION_NOT_SUPPORTED']);
  });

  it('refuses missing keys, bad CHAP, unknown LUNs, a LUN in use, an unreachable target', async () => {
    const before = [await srCount(), await pbdCount()];
    expect((await faultOf(mk({ targetIQN: iqn, SCSIid: '36001405aaaa' })))[0]).toBe('SR_BACKEND_FAILURE_95');
    expect((await faultOf(mk({ ...base, SCSIid: '36001405aaaa', port: 'x' })))[0]).toBe('SR_BACKEND_FAILURE_142');
    expect((await faultOf(mk({ target: 'san1', targetIQN: 'iqn.2026-02.com.example:chap', SCSIid: '36001405dddd' })))[0]).toBe('SR_BACKEND_FAILURE_68');
    expect((await faultOf(mk({ target: 'san1', targetIQN: 'iqn.2026-02.com.example:chap', SCSIid: '36001405dddd', chapuser: 'in', chappassword: 'nope' })))[0]).toBe('SR_BACKEND_FAILURE_68');
    expect(await faultOf(mk({ ...base, SCSIid: '36001405ffff' }))).toEqual(['SR_BACKEND_FAILURE_107', '', 'The SCSIid parameter is missing or incorrect', '']);
    expect(await faultOf(mk({ ...base, SCSIid: '36001405bbbb' }))).toEqual(['SR_DEVICE_IN_USE']);
    await ctl.storage.putServer({ address: 'san-down', reachable: false, iscsi: { targets: [{ iqn }] } });
    expect((await faultOf(mk({ target: 'san-down', targetIQN: iqn, SCSIid: '1' })))[0]).toBe('SR_BACKEND_FAILURE_141');
    expect([await srCount(), await pbdCount()]).toEqual(before);
    await mk({ target: 'san1', targetIQN: 'iqn.2026-02.com.example:chap', SCSIid: '36001405dddd', chapuser: 'in', chappassword: 'secret' });
  });

  it('reports thick LVs of the whole disk, thin ones inflated only while attached, and refuses what does not fit', async () => {
    const thick = await mk({ ...base, SCSIid: '36001405aaaa' });
    expect((await x.call('SR.get_sm_config', thick)).allocation).toBe('thick');
    const size = 10 * GiB;
    const a: string = await x.call('VDI.create', vdiArgs(thick, size));
    expect(await x.call('VDI.get_physical_utilisation', a)).toBe(thickLV(size));
    await x.call('SR.scan', thick);
    expect(await x.call('SR.get_physical_utilisation', thick)).toBe(thickLV(size) + 4 * MiB);
    expect(await x.call('SR.get_physical_size', thick)).toBe(100 * GiB);

    // a thin SR on a LUN of 1 GiB: a disk larger than the LUN is made, but cannot be attached
    const thin = await mk({ ...base, SCSIid: '36001405cccc', allocation: 'thin' });
    expect((await x.call('SR.get_sm_config', thin)).allocation).toBe('thin');
    const big: string = await x.call('VDI.create', vdiArgs(thin, 2 * GiB));
    expect(await x.call('VDI.get_physical_utilisation', big)).toBe(sizeLV(overheadEmpty(MSIZE)));
    const bigVm: string = await x.call('VM.create', vmArgs('thin-big', { other_config: PV_DRIVERS }));
    await x.call('VBD.create', vbdArgs(bigVm, big, '0'));
    // (the attach's SM error, as the datapath reports it)
    expect((await faultOf(x.call('VM.start', bigVm, false, false))).join(' ')).toContain('There is insufficient space');
    expect(await x.call('VM.get_power_state', bigVm)).toBe('Halted');
    expect(await x.call('VDI.get_physical_utilisation', big)).toBe(sizeLV(overheadEmpty(MSIZE)));

    // one that fits is inflated while its VM runs, and deflated to what it holds after
    const t: string = await x.call('VDI.create', vdiArgs(thin, 256 * MiB));
    const vm: string = await x.call('VM.create', vmArgs('thin-guest', { other_config: PV_DRIVERS }));
    await x.call('VBD.create', vbdArgs(vm, t, '0'));
    await x.call('VM.start', vm, false, false);
    expect(await x.call('VDI.get_physical_utilisation', t)).toBe(thickLV(256 * MiB));
    await guestWrite(vm, 0, Buffer.alloc(8 * MiB, 1));
    await x.call('SR.scan', thin);
    expect(await x.call('VDI.get_physical_utilisation', t)).toBe(thickLV(256 * MiB));
    await x.call('VM.hard_shutdown', vm);
    const deflated = await x.call('VDI.get_physical_utilisation', t);
    expect(deflated).toBeGreaterThanOrEqual(sizeLV(overheadEmpty(MSIZE) + 8 * MiB));
    expect(deflated).toBeLessThan(thickLV(256 * MiB));
    await x.call('SR.scan', thin);
    expect(await x.call('VDI.get_physical_utilisation', t)).toBe(deflated);

    // thick: a disk larger than the free space of the LUN is SRNoSpace
    const small = await mk({ target: 'san1', targetIQN: 'iqn.2026-02.com.example:chap', SCSIid: '36001405dddd', chapuser: 'in', chappassword: 'secret' }).catch(() => null);
    expect(small).toBeNull(); // in use by the SR of the previous test
    await ctl.storage.putServer({ address: 'san2', iscsi: { targets: [{ iqn, luns: [{ id: 0, scsi_id: '36001405eeee', size: GiB }] }] } });
    const tiny = await mk({ target: 'san2', targetIQN: iqn, SCSIid: '36001405eeee' });
    expect(await faultOf(x.call('VDI.create', vdiArgs(tiny, 2 * GiB)))).toEqual(['SR_BACKEND_FAILURE_44', '', 'There is insufficient space', '']);
  });
});

describe('other drivers', () => {
  it('creates lvm, xfs, largeblock and zfs SRs on a local disk, lvmohba on an FC LUN, each with its missing-key error', async () => {
    const mk = (type: string, dconf: Record<string, string>, shared = false) => x.call('SR.create', hosts[1], dconf, 0, type, '', type, 'user', shared, {}) as Promise<string>;
    const lvm = await mk('lvm', { device: '/dev/sdb' });
    const v: string = await x.call('VDI.create', vdiArgs(lvm, GiB));
    expect(await x.call('VDI.get_physical_utilisation', v)).toBe(thickLV(GiB));
    expect(await faultOf(mk('lvm', { device: '/dev/sdb' }))).toEqual(['SR_DEVICE_IN_USE']);
    for (const [type, dconf, missing] of [['xfs', { device: '/dev/sdc' }, 90], ['largeblock', { device: '/dev/sdd' }, 90], ['zfs', { location: '/tank/sr' }, 94], ['lvm', { device: '/dev/sde' }, 90]] as const) {
      expect((await faultOf(mk(type, {})))[0]).toBe(`SR_BACKEND_FAILURE_${missing}`);
      const sr = type === 'lvm' ? lvm : await mk(type, dconf);
      await x.call('VDI.create', vdiArgs(sr, 8 * MiB));
      await x.call('SR.scan', sr);
      expect((await x.call('SR.get_VDIs', sr)).length).toBeGreaterThan(0);
    }
    // FC: the HBAs see the declared LUNs
    await ctl.storage.setFcLuns({ luns: [{ id: 3, scsi_id: '3600a0b80001', size: 50 * GiB }] });
    const devlist = await faultOf(x.call('SR.probe', hosts[0], {}, 'lvmohba', {}));
    expect(devlist[0]).toBe('SR_BACKEND_FAILURE_107');
    expect(devlist[3]).toContain('<SCSIid>3600a0b80001</SCSIid>');
    expect(devlist[3]).toContain(`<size>${50 * GiB}</size>`);
    const hba = await mk('lvmohba', { SCSIid: '3600a0b80001' }, true);
    expect(await x.call('SR.get_physical_size', hba)).toBe(50 * GiB);
    expect((await faultOf(mk('lvmohba', { SCSIid: '3600a0b80002' }, true)))[0]).toBe('SR_BACKEND_FAILURE_107');
  });
});

describe('restart', () => {
  it('keeps the declared fabric, the SRs plugged and their disks', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'xapi-emu-shared-storage-'));
    try {
      const opts = { port: 0, dataDir, password: PASSWORD, authFailDelay: 0, closeGrace: 0, hosts: 2 };
      let s = await startServer(opts);
      let c = await connect(s.urls[0], 'root', PASSWORD);
      const [h] = await c.call('host.get_all');
      await controlClient({ url: s.urls[0], username: 'root', password: PASSWORD }).storage.putServer({ address: 'nas', nfs: { exports: [{ path: '/pool', size: 2 * TiB }] } });
      const sr: string = await c.call('SR.create', h, { server: 'nas', serverpath: '/pool' }, 0, 'nfs', '', 'nfs', 'user', true, {});
      const iscsi: string = await c.call('SR.create', h, { target: 'san9', targetIQN: 'iqn.2026-03.x:y', SCSIid: (await faultOf(c.call('SR.probe', h, { target: 'san9', targetIQN: 'iqn.2026-03.x:y' }, 'lvmoiscsi', {})))[3].match(/<SCSIid>(\w+)</)![1], allocation: 'thin' }, 0, 'i', '', 'lvmoiscsi', 'user', true, {});
      const vdi: string = await c.call('VDI.create', vdiArgs(sr, 32 * MiB));
      const lv: string = await c.call('VDI.create', vdiArgs(iscsi, GiB));
      const lvUtil = await c.call('VDI.get_physical_utilisation', lv);
      await s.close();

      s = await startServer(opts);
      c = await connect(s.urls[0], 'root', PASSWORD);
      expect((await controlClient({ url: s.urls[0], username: 'root', password: PASSWORD }).storage.get({})).servers.map((x) => x.address)).toEqual(['nas']);
      for (const p of await c.call('SR.get_PBDs', sr)) expect(await c.call('PBD.get_currently_attached', p)).toBe(true);
      for (const p of await c.call('SR.get_PBDs', iscsi)) expect(await c.call('PBD.get_currently_attached', p)).toBe(true);
      expect(await c.call('SR.get_physical_size', sr)).toBe(2 * TiB);
      await c.call('SR.scan', sr);
      await c.call('SR.scan', iscsi);
      expect(await c.call('VDI.get_virtual_size', vdi)).toBe(32 * MiB);
      expect(await c.call('VDI.get_physical_utilisation', lv)).toBe(lvUtil);
      await s.close();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
