// The storage fabric: the NFS, SMB and iSCSI servers and the FC LUNs the pool's SRs live on.
// Undeclared servers answer as healthy ones whose exports, shares, targets and LUNs exist (made on
// demand); a declared server has exactly what it declares, and can be made unreachable.
import { z } from 'zod';
import { route } from './route.js';

const size = z.number().int().min(0).describe('bytes');
const lunInput = z.object({
  id: z.number().int().min(0).max(16383).describe('LUN id on its target'),
  scsi_id: z.string().regex(/^[0-9A-Za-z_-]{1,64}$/).optional().describe('SCSI id (default: derived from the LUN\'s place in the fabric)'),
  size: size.optional().describe('bytes (default 1 TiB)'),
  vendor: z.string().max(64).optional(),
  serial: z.string().max(64).optional(),
}).strict();
const lun = z.object({ id: z.number(), scsi_id: z.string(), size: z.number(), vendor: z.string(), serial: z.string() });

const nfsInput = z.object({
  versions: z.array(z.enum(['3', '4', '4.0', '4.1'])).min(1).default(['3', '4']).describe('NFS versions the server speaks'),
  exports: z.array(z.object({ path: z.string().regex(/^\/[^\0]*$/).max(1024), size: size.optional() }).strict()).default([])
    .describe('its exports: any other path is missing (mount fails)'),
}).strict();
const smbInput = z.object({
  shares: z.array(z.object({
    name: z.string().regex(/^[^/\\\0]{1,80}$/), size: size.optional(), username: z.string().optional(), password: z.string().optional(),
  }).strict()).default([]),
}).strict();
const iscsiInput = z.object({
  port: z.number().int().min(1).max(65535).default(3260),
  targets: z.array(z.object({
    iqn: z.string().min(1).max(223),
    chap: z.object({ user: z.string(), password: z.string() }).strict().optional().describe('CHAP credentials the target requires'),
    luns: z.array(lunInput).default([{ id: 0 }]),
  }).strict()).default([]),
}).strict();

const address = z.string().regex(/^[A-Za-z0-9._:-]{1,253}$/).describe('host name or IP address, as device_config names it');

export const storageServerInput = z.object({
  address,
  reachable: z.boolean().default(true).describe('false: nothing answers (SM: NFSTarget, ISCSITarget, SMBMount)'),
  nfs: nfsInput.optional().describe('absent: no NFS service'),
  smb: smbInput.optional().describe('absent: no SMB service'),
  iscsi: iscsiInput.optional().describe('absent: no iSCSI service'),
}).strict();

export const storageServer = z.object({
  address: z.string(),
  reachable: z.boolean(),
  nfs: z.object({ versions: z.array(z.string()), exports: z.array(z.object({ path: z.string(), size: z.number() })) }).optional(),
  smb: z.object({ shares: z.array(z.object({ name: z.string(), size: z.number(), username: z.string().optional(), password: z.string().optional() })) }).optional(),
  iscsi: z.object({ port: z.number(), targets: z.array(z.object({ iqn: z.string(), chap: z.object({ user: z.string(), password: z.string() }).optional(), luns: z.array(lun) })) }).optional(),
});

export const storageState = z.object({
  servers: z.array(storageServer).describe('declared servers (any other address answers with what is asked of it)'),
  fc_luns: z.array(lun).nullable().describe('the FC LUNs the HBAs see; null: any SCSI id asked for exists'),
});

export const storage = {
  get: route({ method: 'GET', path: '/storage', summary: 'The storage fabric: declared servers and FC LUNs', input: z.object({}), output: storageState }),
  putServer: route({
    method: 'PUT', path: '/storage/servers/:address',
    summary: 'Declares a storage server (or replaces its declaration): its services, exports, shares, targets, LUNs, reachability',
    input: storageServerInput, output: storageServer,
  }),
  deleteServer: route({
    method: 'DELETE', path: '/storage/servers/:address',
    summary: 'Forgets a declaration: the address answers as an undeclared server again (contents stay)',
    input: z.object({ address }).strict(), output: z.object({ removed: z.string() }),
  }),
  setFcLuns: route({
    method: 'PUT', path: '/storage/fc-luns', summary: 'Declares the FC LUNs the hosts\' HBAs see (null: any SCSI id asked for exists)',
    input: z.object({ luns: z.array(lunInput.extend({ scsi_id: z.string().regex(/^[0-9A-Za-z_-]{1,64}$/) })).nullable() }).strict(),
    output: storageState,
  }),
};
