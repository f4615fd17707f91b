// The pool at a glance: what the status page shows, as one JSON document (scripts read it too).
import { z } from 'zod';
import { route } from './route.js';

const strMap = z.record(z.string(), z.string());
/** datapath records as introspection reports them (their counters vary with the device) */
const loose = z.array(z.record(z.string(), z.unknown()));

export const statusHost = z.object({
  ref: z.string(),
  uuid: z.string(),
  name_label: z.string(),
  address: z.string(),
  master: z.boolean(),
  enabled: z.boolean(),
  live: z.boolean().describe('host_metrics.live'),
  memory_total: z.number(),
  memory_free: z.number(),
  cpus: z.number().int(),
  resident_vms: z.number().int().describe('guests resident on it (control domain excluded)'),
});

export const statusVm = z.object({
  ref: z.string(),
  uuid: z.string(),
  name_label: z.string(),
  power_state: z.string(),
  resident_on: z.string().describe('host uuid, empty when not resident'),
  domid: z.number().int(),
  guest_profile: z.string().describe('other_config:xapi-emu-guest-profile, else the pool default, else agent'),
  current_operations: z.array(z.string()),
  guest_metrics: z
    .object({
      live: z.boolean(),
      pv_drivers_detected: z.boolean(),
      os_name: z.string(),
      networks: strMap.describe('VM_guest_metrics.networks: 0/ip, 0/ipv4/0, 0/ipv6/0 ...'),
      last_updated: z.string(),
    })
    .nullable(),
});

export const statusVdi = z.object({
  ref: z.string(),
  uuid: z.string(),
  name_label: z.string(),
  type: z.string(),
  virtual_size: z.number(),
  physical_utilisation: z.number(),
  managed: z.boolean(),
  is_a_snapshot: z.boolean(),
  parent: z.string().nullable().describe("uuid of the VHD parent (sm_config:vhd-parent)"),
  snapshot_of: z.string().nullable().describe('uuid of the VDI it is a snapshot of'),
  attached_to: z.array(z.string()).describe('name_label of the VMs whose VBD of it is currently_attached'),
});

export const statusSr = z.object({
  ref: z.string(),
  uuid: z.string(),
  name_label: z.string(),
  type: z.string(),
  shared: z.boolean(),
  physical_size: z.number(),
  physical_utilisation: z.number(),
  attached_hosts: z.number().int().describe('PBDs currently_attached'),
  vdis: z.array(statusVdi),
});

export const statusDatapath = z.object({
  host: z.string().describe('host uuid'),
  name_label: z.string(),
  tapdisks: loose,
  qemu_dm: loose,
  rings: loose,
});

export const statusEvent = z.object({
  id: z.number().int().describe('the database generation of the change'),
  class: z.string(),
  ref: z.string(),
  operation: z.enum(['add', 'mod', 'del']),
  name: z.string().describe('name_label, else uuid; empty for a deleted object'),
});

export const statusTask = z.object({
  ref: z.string(),
  uuid: z.string(),
  name_label: z.string(),
  status: z.string(),
  progress: z.number(),
  created: z.string(),
  finished: z.string(),
  error_info: z.array(z.string()),
});

export const statusSummary = z.object({
  generation: z.number().int().describe('the database generation this summary was read at'),
  pool: z.object({
    ref: z.string(), uuid: z.string(), name_label: z.string(), master: z.string(), guest_profile: z.string(),
    ha: z.object({
      enabled: z.boolean(),
      host_failures_to_tolerate: z.number().int(),
      plan_exists_for: z.number().int(),
      overcommitted: z.boolean(),
      restarts_pending: z.number().int().describe('HA restart passes asked for and not done (a failover under way)'),
    }),
  }),
  counts: z.object({ vms: z.number().int(), templates: z.number().int(), snapshots: z.number().int(), vdis: z.number().int(), tasks: z.number().int() }),
  hosts: z.array(statusHost),
  vms: z.array(statusVm).describe('guests: neither templates, snapshots nor control domains'),
  srs: z.array(statusSr),
  datapath: z.array(statusDatapath),
  events: z.array(statusEvent).describe('the latest changes, newest first'),
  tasks: z.array(statusTask).describe('the latest tasks, newest first'),
  routes: z.array(z.string()).describe('implemented GET routes of the control API (the page reads /faults only when present)'),
});

export const status = {
  get: route({
    method: 'GET',
    path: '/status',
    summary: 'Summarises the pool: hosts, VMs, SRs and VDI chains, datapath, latest events and tasks',
    input: z
      .object({
        events: z.coerce.number().int().min(0).max(1000).default(30),
        tasks: z.coerce.number().int().min(0).max(1000).default(20),
      }),
    output: statusSummary,
  }),
};
