// Shared storage through Python's XenAPI (Debian's python3-os-xenapi): an nfs SR created on a
// server nothing declared, shared by both hosts, and the iSCSI discovery a client does through
// SR.probe's failure details (the target IQNs, then the LUNs, as SM prints them).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { startServer, type RunningServer } from '../../server/app.js';

const PYTHON = '/usr/bin/python3';
const XENAPI = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const PASSWORD = 'shared-storage-python';

const SCRIPT = `
import json, sys, re
from os_xenapi.client import XenAPI
s = XenAPI.Session(sys.argv[1])
s.xenapi.login_with_password('root', sys.argv[2], '1.0', 'shared-storage-test')
x = s.xenapi
out = {}
host = x.pool.get_master(x.pool.get_all()[0])
sr = x.SR.create(host, {'server': '192.168.77.10', 'serverpath': '/exports/vms'}, '0', 'NFS VMs', '', 'nfs', 'user', True, {})
rec = x.SR.get_record(sr)
out['sr'] = {'type': rec['type'], 'shared': rec['shared'], 'pbds': [x.PBD.get_currently_attached(p) for p in rec['PBDs']]}
vdi = x.VDI.create({'SR': sr, 'name_label': 'd', 'name_description': '', 'virtual_size': str(64 << 20), 'type': 'user',
  'sharable': False, 'read_only': False, 'other_config': {}, 'xenstore_data': {}, 'sm_config': {}, 'tags': []})
out['vdi_size'] = x.VDI.get_virtual_size(vdi)
def failure(f):
    try:
        f()
    except XenAPI.Failure as e:
        return e.details
iqns = failure(lambda: x.SR.probe(host, {'target': '192.168.77.20'}, 'lvmoiscsi', {}))
out['iqns'] = iqns[:3] + [re.findall(r'<TargetIQN>([^<]+)</TargetIQN>', iqns[3])]
iqn = out['iqns'][3][0]
luns = failure(lambda: x.SR.probe(host, {'target': '192.168.77.20', 'targetIQN': iqn}, 'lvmoiscsi', {}))
scsi = re.findall(r'<SCSIid>([^<]+)</SCSIid>', luns[3])
out['luns'] = [luns[0], len(scsi)]
isr = x.SR.create(host, {'target': '192.168.77.20', 'targetIQN': iqn, 'SCSIid': scsi[0]}, '0', 'iSCSI', '', 'lvmoiscsi', 'user', True, {})
out['probe'] = x.SR.probe(host, {'target': '192.168.77.20', 'targetIQN': iqn, 'SCSIid': scsi[0]}, 'lvmoiscsi', {})
out['isr_uuid'] = x.SR.get_uuid(isr)
s.xenapi.session.logout()
print(json.dumps(out))
`;

let srv: RunningServer;
let out: any;

beforeAll(async () => {
  if (!existsSync(PYTHON) || !existsSync(XENAPI)) throw new Error(`${PYTHON} with os_xenapi is needed (apt-get install python3-os-xenapi)`);
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, hosts: 2, closeGrace: 0 });
  const { stdout } = await promisify(execFile)(PYTHON, ['-c', SCRIPT, srv.urls[0], PASSWORD], { timeout: 20_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
  out = JSON.parse(stdout);
});

afterAll(async () => {
  await srv?.close();
});

describe('Python XenAPI on the storage fabric', () => {
  it('creates a shared nfs SR plugged on both hosts, and a disk on it', () => {
    expect(out.sr).toEqual({ type: 'nfs', shared: true, pbds: [true, true] });
    expect(out.vdi_size).toBe(String(64 << 20));
  });

  it('discovers iSCSI targets and LUNs through the probe failures, then finds the SR made on the LUN', () => {
    expect(out.iqns.slice(0, 3)).toEqual(['SR_BACKEND_FAILURE_96', '', 'The request is missing or has an incorrect target IQN parameter']);
    expect(out.iqns[3]).toHaveLength(2);
    expect(out.iqns[3][1]).toBe('*');
    expect(out.luns).toEqual(['SR_BACKEND_FAILURE_107', 1]);
    expect(out.probe).toContain(`<UUID>${out.isr_uuid}</UUID>`);
  });
});
