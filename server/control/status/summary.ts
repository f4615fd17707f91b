// The pool at a glance, read from the database and the hosts' xenopsds in one pass: what the
// status page renders and GET /xapi-emu/status answers.
import type { z } from 'zod';
import type { Emulator } from '../../emulator.js';
import type { Rec } from '../../../storage/database.js';
import { NULL_REF } from '../../../storage/database.js';
import { xenopsOf } from '../../api/xenops-sync.js';
import { failoverPending } from '../../api/ha-failover.js';
import { introspect } from '../../xenopsd/guest.js';
import type { statusDatapath, statusEvent, statusHost, statusSr, statusSummary, statusTask, statusVdi, statusVm } from '../contract/status.js';

export type StatusSummary = z.output<typeof statusSummary>;

/** The guest profile keys (pool-wide default, per VM override, and the older per VM switch). */
export const GUEST_PROFILE_KEY = 'xapi-emu-guest-profile';
export const PV_DRIVERS_KEY = 'xapi-emu-pv-drivers';
export const DEFAULT_GUEST_PROFILE = 'agent';

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v) || 0);
const bool = (v: unknown): boolean => v === true;
const refs = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : []);
const map = (v: unknown): Record<string, string> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, string>) : {});

/** The profile a VM's guest runs: its own key, else the older switch, else the pool's default. */
export function guestProfileOf(vm: Rec, poolDefault: string): string {
  const oc = map(vm.other_config);
  if (oc[GUEST_PROFILE_KEY]) return oc[GUEST_PROFILE_KEY];
  if (oc[PV_DRIVERS_KEY] === 'true') return 'pv-drivers';
  if (oc[PV_DRIVERS_KEY] === 'false') return 'no-drivers';
  return poolDefault;
}

export interface SummaryOptions {
  events: number;
  tasks: number;
  /** implemented GET routes of the control API */
  routes: string[];
}

export function summarize(emu: Emulator, opts: SummaryOptions): StatusSummary {
  const { db } = emu;
  const get = (cls: string, ref: unknown): Rec | undefined => (typeof ref === 'string' && ref !== NULL_REF ? db.get(cls, ref) : undefined);
  const poolRec = db.get('pool', emu.pool)!;
  const poolProfile = map(poolRec.other_config)[GUEST_PROFILE_KEY] || DEFAULT_GUEST_PROFILE;
  const hostUuid = (ref: unknown) => str(get('host', ref)?.uuid);

  const hosts: z.output<typeof statusHost>[] = [];
  for (const ref of emu.hosts) {
    const h = db.get('host', ref);
    if (!h) continue;
    const m = get('host_metrics', h.metrics);
    hosts.push({
      ref,
      uuid: str(h.uuid),
      name_label: str(h.name_label),
      address: str(h.address),
      master: ref === emu.master,
      enabled: bool(h.enabled),
      live: bool(m?.live),
      memory_total: num(m?.memory_total),
      memory_free: num(m?.memory_free),
      cpus: refs(h.host_CPUs).length,
      resident_vms: refs(h.resident_VMs).filter((v) => !bool(db.get('VM', v)?.is_control_domain)).length,
    });
  }

  const vms: z.output<typeof statusVm>[] = [];
  let templates = 0;
  let snapshots = 0;
  for (const [ref, row] of db.table('VM')) {
    const v = row.rec;
    if (bool(v.is_a_template)) {
      if (bool(v.is_a_snapshot)) snapshots++;
      else templates++;
      continue;
    }
    if (bool(v.is_a_snapshot)) {
      snapshots++;
      continue;
    }
    if (bool(v.is_control_domain)) continue;
    const gm = get('VM_guest_metrics', v.guest_metrics);
    vms.push({
      ref,
      uuid: str(v.uuid),
      name_label: str(v.name_label),
      power_state: str(v.power_state),
      resident_on: hostUuid(v.resident_on),
      domid: num(v.domid),
      guest_profile: guestProfileOf(v, poolProfile),
      current_operations: Object.values(map(v.current_operations)).map(str),
      guest_metrics: gm
        ? {
            live: bool(gm.live),
            pv_drivers_detected: bool(gm.PV_drivers_detected),
            os_name: str(map(gm.os_version).name),
            networks: { ...map(gm.networks) },
            last_updated: str(gm.last_updated),
          }
        : null,
    });
  }
  vms.sort((a, b) => a.name_label.localeCompare(b.name_label) || a.uuid.localeCompare(b.uuid));

  const srs: z.output<typeof statusSr>[] = [];
  let vdiCount = 0;
  for (const [ref, row] of db.table('SR')) {
    const s = row.rec;
    const vdis: z.output<typeof statusVdi>[] = [];
    for (const vref of refs(s.VDIs)) {
      const d = db.get('VDI', vref);
      if (!d) continue;
      vdiCount++;
      const attachedTo: string[] = [];
      for (const b of refs(d.VBDs)) {
        const vbd = db.get('VBD', b);
        if (vbd && bool(vbd.currently_attached)) attachedTo.push(str(get('VM', vbd.VM)?.name_label));
      }
      vdis.push({
        ref: vref,
        uuid: str(d.uuid),
        name_label: str(d.name_label),
        type: str(d.type),
        virtual_size: num(d.virtual_size),
        physical_utilisation: num(d.physical_utilisation),
        managed: bool(d.managed),
        is_a_snapshot: bool(d.is_a_snapshot),
        parent: map(d.sm_config)['vhd-parent'] || null,
        snapshot_of: get('VDI', d.snapshot_of)?.uuid ? str(get('VDI', d.snapshot_of)!.uuid) : null,
        attached_to: attachedTo,
      });
    }
    srs.push({
      ref,
      uuid: str(s.uuid),
      name_label: str(s.name_label),
      type: str(s.type),
      shared: bool(s.shared),
      physical_size: num(s.physical_size),
      physical_utilisation: num(s.physical_utilisation),
      attached_hosts: refs(s.PBDs).filter((p) => bool(db.get('PBD', p)?.currently_attached)).length,
      vdis,
    });
  }
  srs.sort((a, b) => a.name_label.localeCompare(b.name_label) || a.uuid.localeCompare(b.uuid));

  const datapath: z.output<typeof statusDatapath>[] = [];
  for (const h of hosts) {
    let seen;
    try {
      seen = introspect(xenopsOf(emu, h.ref));
    } catch {
      continue; // no xenopsd bound for it (yet)
    }
    datapath.push({
      host: h.uuid,
      name_label: h.name_label,
      tapdisks: seen.tapdisks as Record<string, unknown>[],
      qemu_dm: seen.qemu_dm as Record<string, unknown>[],
      rings: seen.rings as Record<string, unknown>[],
    });
  }

  return {
    generation: db.generation,
    pool: {
      ref: emu.pool, uuid: str(poolRec.uuid), name_label: str(poolRec.name_label), master: hostUuid(emu.master), guest_profile: poolProfile,
      ha: {
        enabled: poolRec.ha_enabled === true, host_failures_to_tolerate: Number(poolRec.ha_host_failures_to_tolerate), plan_exists_for: Number(poolRec.ha_plan_exists_for),
        overcommitted: poolRec.ha_overcommitted === true, restarts_pending: failoverPending(emu),
      },
    },
    counts: { vms: vms.length, templates, snapshots, vdis: vdiCount, tasks: db.count('task') },
    hosts,
    vms,
    srs,
    datapath,
    events: latestEvents(emu, opts.events),
    tasks: latestTasks(emu, opts.tasks),
    routes: opts.routes,
  };
}

/** The last `limit` changes of the database (by generation), newest first. */
function latestEvents(emu: Emulator, limit: number): z.output<typeof statusEvent>[] {
  if (limit === 0) return [];
  const { db } = emu;
  // a window of `limit` generations holds fewer entries when objects changed again since:
  // widen it until it holds enough, or reaches back to the start
  let window = limit;
  let ch = db.changesSince(Math.max(0, db.generation - window));
  while (ch.rows.length + ch.deleted.length < limit && db.generation - window > 0) {
    window *= 4;
    ch = db.changesSince(Math.max(0, db.generation - window));
  }
  const out: z.output<typeof statusEvent>[] = [
    ...ch.rows.map((r) => ({
      id: r.modified,
      class: r.cls,
      ref: r.ref,
      operation: r.created === r.modified ? ('add' as const) : ('mod' as const),
      name: str(r.rec.name_label) || str(r.rec.uuid),
    })),
    ...ch.deleted.map((d) => ({ id: d.gen, class: d.cls, ref: d.ref, operation: 'del' as const, name: '' })),
  ];
  return out.sort((a, b) => b.id - a.id).slice(0, limit);
}

/** The `limit` most recently created tasks, newest first. */
function latestTasks(emu: Emulator, limit: number): z.output<typeof statusTask>[] {
  if (limit === 0) return [];
  const rows = [...emu.db.table('task').values()].sort((a, b) => b.created - a.created).slice(0, limit);
  return rows.map(({ ref, rec: t }) => ({
    ref,
    uuid: str(t.uuid),
    name_label: str(t.name_label),
    status: str(t.status),
    progress: num(t.progress),
    created: str(t.created),
    finished: str(t.finished),
    error_info: refs(t.error_info).map(str),
  }));
}
