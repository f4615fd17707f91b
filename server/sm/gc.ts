// The storage garbage collector (SM's cleanup.py, one per VHD-based SR). Each pass, under the SR
// lock, looks at the VHD trees on disk and does one thing:
//  - garbage: hidden disks with no visible descendant (base copies whose leaves were all destroyed)
//    are deleted, with their records;
//  - coalesce: a hidden disk that is the only child of a hidden parent and has children of its own
//    is merged into that parent, its children relinked to the parent, and it is deleted;
//  - leaf-coalesce: a visible leaf that is the only child of a hidden parent is merged into the
//    parent, which then takes the leaf's name (uuid), so the VDI keeps its identity and its bytes
//    and the base copy record goes.
// The data a VDI reads never changes. The steps after a merge (relinking children, the renames of
// a leaf-coalesce) are journaled, so that a run cut at any point is finished or undone at start-up
// (recovery.ts). An SR holding a VHD that cannot be read is left alone, as cleanup.py stops on a
// scan error. SM's switches are honoured: SR other_config gc=false,
// coalesce=false, leaf-coalesce=false, and VDI other_config leaf-coalesce=false.
// A VDI operation (vdi_delete, sr_scan) kicks the GC, which stays quiet for sr_gc_interval simulated
// seconds (GCPAUSE_DEFAULT_SLEEP) and then works until nothing is left to do; runSrGc runs it now.
import { rename } from 'node:fs/promises';
import type { Emulator } from '../emulator.js';
import { coalesce, setParent } from '../../storage/vhd/index.js';
import { withSrLock, type SrCtx } from './driver.js';
import { growVhd, readDisk, scanDisks, setHidden, type DiskFile } from './file-sr.js';
import { fsyncPath, renameDurably, unlinkDurably } from './durable.js';
import { OLD_PREFIX } from './recovery.js';
import { smLog } from './smlog.js';
import { srFile } from './paths.js';
import { choosePbd, dbForget, dbUpdate, driverOf, setSrStat, srCtx, vdiByLocation, withJournal } from './sm.js';
import { hasWriter, tryPauseVdis } from './attachments.js';
import { completeTask, createTask } from '../api/task-runner.js';

export interface GcResult {
  /** disks deleted as garbage */
  deleted: string[];
  /** hidden disks coalesced into their parent */
  coalesced: string[];
  /** leaves coalesced into their parent */
  leafCoalesced: string[];
}

type Action =
  | { kind: 'garbage'; disks: DiskFile[] }
  | { kind: 'coalesce'; disk: DiskFile; parent: DiskFile; children: DiskFile[] }
  | { kind: 'leaf'; disk: DiskFile; parent: DiskFile };

function plan(ctx: SrCtx, disks: Map<string, DiskFile>): Action | null {
  const oc = (ctx.emu.db.get('SR', ctx.sr)?.other_config ?? {}) as Record<string, string>;
  const children = new Map<string, DiskFile[]>();
  for (const d of disks.values()) {
    if (d.parent && disks.has(d.parent)) children.set(d.parent, [...(children.get(d.parent) ?? []), d]);
  }
  const kids = (d: DiskFile) => children.get(d.uuid) ?? [];

  // garbage: cleanup.VDI.getAllPrunable over each tree
  const prunable = (d: DiskFile): DiskFile[] => {
    const ks = kids(d);
    if (ks.length === 0) return d.hidden && d.kind === 'vhd' ? [d] : [];
    const out: DiskFile[] = [];
    let all = true;
    for (const k of ks) {
      const p = prunable(k);
      out.push(...p);
      if (!p.includes(k)) all = false;
    }
    if (all && d.hidden) out.push(d);
    return out;
  };
  const garbage: DiskFile[] = [];
  for (const d of disks.values()) if (!d.parent || !disks.has(d.parent)) garbage.push(...prunable(d));
  if (garbage.length) return { kind: 'garbage', disks: garbage };

  if (oc.coalesce !== 'false') {
    for (const d of disks.values()) {
      const parent = d.parent ? disks.get(d.parent) : undefined;
      if (!parent || !parent.hidden || !d.hidden || kids(parent).length !== 1 || kids(d).length === 0) continue;
      if (kids(d).some((c) => hasWriter(ctx.emu, c.uuid))) continue;
      return { kind: 'coalesce', disk: d, parent, children: kids(d) };
    }
  }

  if (oc.coalesce !== 'false' && oc['leaf-coalesce'] !== 'false') {
    for (const d of disks.values()) {
      const parent = d.parent ? disks.get(d.parent) : undefined;
      if (!parent || !parent.hidden || d.hidden || d.kind !== 'vhd' || kids(parent).length !== 1 || kids(d).length > 0) continue;
      const ref = vdiByLocation(ctx.emu, ctx.sr, d.uuid);
      const rec = ref ? ctx.emu.db.get('VDI', ref) : undefined;
      if (rec) {
        const voc = rec.other_config as Record<string, string>;
        if (voc['leaf-coalesce'] === 'false' || rec.on_boot === 'reset' || rec.allow_caching === true) continue;
      }
      if (hasWriter(ctx.emu, d.uuid)) continue;
      return { kind: 'leaf', disk: d, parent };
    }
  }
  return null;
}

async function act(ctx: SrCtx, a: Action, res: GcResult): Promise<void> {
  const { emu, sr } = ctx;
  if (a.kind === 'garbage') {
    for (const d of a.disks) {
      await unlinkDurably(d.file).catch(() => undefined);
      const ref = vdiByLocation(emu, sr, d.uuid);
      if (ref) dbForget(emu, ref);
      res.deleted.push(d.uuid);
    }
    return;
  }
  if (a.kind === 'coalesce') {
    const resume = tryPauseVdis(emu, a.children.map((c) => c.uuid));
    if (!resume) return;
    try {
      if (a.parent.virtualSize < a.disk.virtualSize) await growVhd(a.parent.file, a.disk.virtualSize);
      // the merge changes nothing any child reads (the disk still covers what it wrote)
      await coalesce(a.disk.file);
      await fsyncPath(a.parent.file);
      // the relink is journaled (JRN_RELINK): once begun it is finished, at start-up if need be
      await withJournal(ctx, { type: 'relink', id: a.disk.uuid, value: { parent: a.parent.uuid } }, async () => {
        for (const c of a.children) {
          await setParent(c.file, a.parent.file);
          await fsyncPath(c.file);
          const ref = vdiByLocation(emu, sr, c.uuid);
          if (ref) emu.db.update('VDI', ref, { sm_config: { ...(emu.db.get('VDI', ref)!.sm_config as object), 'vhd-parent': a.parent.uuid } });
        }
        await unlinkDurably(a.disk.file);
        const ref = vdiByLocation(emu, sr, a.disk.uuid);
        if (ref) dbForget(emu, ref);
      });
      res.coalesced.push(a.disk.uuid);
    } finally {
      resume();
    }
    return;
  }
  // leaf-coalesce (_doCoalesceLeaf): the parent takes the leaf's data and then its name
  const resume = tryPauseVdis(emu, [a.disk.uuid]);
  if (!resume) return;
  try {
    const leaf = a.disk;
    const parent = a.parent;
    if (parent.virtualSize < leaf.virtualSize) await growVhd(parent.file, leaf.virtualSize);
    await coalesce(leaf.file);
    await fsyncPath(parent.file);
    // the renames are journaled (JRN_LEAF): undone while the parent has its own name, finished after
    await withJournal(ctx, { type: 'leaf', id: leaf.uuid, value: { parent: parent.uuid } }, async () => {
      await setHidden(parent.file, false);
      const tmp = srFile(emu, ctx.uuid, `${OLD_PREFIX}${leaf.uuid}.vhd`);
      await rename(leaf.file, tmp);
      await renameDurably(parent.file, leaf.file);
      const baseRef = vdiByLocation(emu, sr, parent.uuid);
      if (baseRef) dbForget(emu, baseRef);
      const leafRef = vdiByLocation(emu, sr, leaf.uuid);
      if (leafRef) {
        const now = await readDisk(leaf.file, leaf.uuid, 'vhd');
        if (now) {
          const r = emu.db.get('VDI', leafRef)!;
          dbUpdate(emu, leafRef, {
            uuid: leaf.uuid, location: leaf.uuid, name_label: '', name_description: '', virtual_size: now.virtualSize,
            physical_utilisation: now.size, read_only: Boolean(r.read_only), managed: true, hidden: false, parent: now.parent,
            sm_config: { 'vhd-parent': now.parent },
          });
        }
      }
      emu.db.flush();
      await unlinkDurably(tmp);
    });
    res.leafCoalesced.push(leaf.uuid);
  } finally {
    resume();
  }
}

/** One GC run on an SR, until there is nothing left to do (cleanup.py's _gcLoop, without its quiet
 * period). Does nothing on an SR that is not attached, not VHD-based, or has other_config gc=false. */
export async function runSrGc(emu: Emulator, sr: string, opts: { ctx?: SrCtx } = {}): Promise<GcResult> {
  const res: GcResult = { deleted: [], coalesced: [], leafCoalesced: [] };
  if (stateOf(emu).stopped) return res;
  const rec = emu.db.get('SR', sr);
  if (!rec) return res;
  let ctx: SrCtx;
  try {
    if (!driverOf(emu, sr).vhdBased) return res;
    ctx = opts.ctx ?? srCtx(emu, sr, choosePbd(emu, sr));
  } catch {
    return res;
  }
  let task: string | null = null;
  let failed: unknown = null;
  for (let i = 0; i < 10_000; i++) {
    if (stateOf(emu).stopped || !emu.db.has('SR', sr)) break;
    if ((emu.db.get('SR', sr)!.other_config as Record<string, string>).gc === 'false') break;
    let done = false;
    try {
      done = await withSrLock(emu, ctx.uuid, async () => {
        const { disks, bad } = await scanDisks(ctx);
        if (bad.length) {
          // cleanup.py: a scan error stops the GC, which never works on a tree it cannot read
          smLog(emu, `SR ${ctx.uuid}: GC skipped, VHD scan error on ${bad.map((b) => b.file).join(', ')}`);
          return true;
        }
        const a = plan(ctx, disks);
        if (!a) return true;
        task ??= createTask(emu, { label: 'Garbage Collection', description: `Garbage collection for SR ${ctx.uuid}`, session: '', host: emu.master });
        const before = res.deleted.length + res.coalesced.length + res.leafCoalesced.length;
        await act(ctx, a, res);
        const s = await driverOf(emu, sr).update(ctx);
        setSrStat(emu, sr, { ...s, virtual_allocation: Number(emu.db.get('SR', sr)!.virtual_allocation) });
        // a candidate that could not be paused: leave it for a later run
        return res.deleted.length + res.coalesced.length + res.leafCoalesced.length === before;
      });
    } catch (e) {
      failed = e;
      done = true;
    }
    if (done) break;
  }
  if (task) {
    if (failed) emu.db.update('task', task, { status: 'failure', progress: 1 });
    else completeTask(emu, task, '', null);
  }
  emu.db.flush();
  if (failed) throw failed;
  return res;
}

// ---- kicking, and the background pass ----

interface GcState {
  stopped: boolean;
  /** per SR: a run scheduled or in progress, and whether another was asked for meanwhile */
  runs: Map<string, { again: boolean }>;
  timer?: NodeJS.Timeout;
}

const states = new WeakMap<Emulator, GcState>();

function stateOf(emu: Emulator): GcState {
  let s = states.get(emu);
  if (!s) states.set(emu, (s = { stopped: false, runs: new Map() }));
  return s;
}

/** Starts a GC on the SR after its quiet period, unless one is already on its way (cleanup.py's
 * start_gc_service). Only with sr_gc_auto. */
export function kickGc(emu: Emulator, sr: string): void {
  const st = stateOf(emu);
  if (st.stopped || !emu.conf.sr_gc_auto) return;
  const cur = st.runs.get(sr);
  if (cur) {
    cur.again = true;
    return;
  }
  const run = { again: false };
  st.runs.set(sr, run);
  void (async () => {
    try {
      do {
        run.again = false;
        await emu.clock.sleep(emu.conf.sr_gc_interval);
        await runSrGc(emu, sr).catch(() => undefined);
      } while (run.again && !st.stopped);
    } finally {
      st.runs.delete(sr);
    }
  })();
}

/** Whether a kicked GC is waiting or running on the SR. */
export function gcPending(emu: Emulator, sr: string): boolean {
  return stateOf(emu).runs.has(sr);
}

/** The background pass: every sr_gc_interval wall seconds, kicks every attached VHD-based SR. */
export function startSrGc(emu: Emulator): () => void {
  const st = stateOf(emu);
  st.stopped = false;
  if (emu.conf.sr_gc_auto && emu.conf.sr_gc_interval > 0) {
    st.timer = setInterval(() => {
      for (const [ref, row] of emu.db.table('SR')) {
        const attached = (row.rec.PBDs as string[]).some((p) => emu.db.get('PBD', p)?.currently_attached === true);
        if (!attached) continue;
        try {
          if (driverOf(emu, ref).vhdBased) kickGc(emu, ref);
        } catch {
          /* no driver */
        }
      }
    }, emu.conf.sr_gc_interval * 1000);
    st.timer.unref();
  }
  return () => {
    st.stopped = true;
    if (st.timer) clearInterval(st.timer);
    st.timer = undefined;
    st.runs.clear();
  };
}
