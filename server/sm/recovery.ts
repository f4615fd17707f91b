// What a file SR's journals and directory say after an operation was cut, and how it is resolved:
//  - resolveJournal: one interrupted operation, rolled forward when its records were committed
//    (they are committed only once the files are whole) and back otherwise, from the files and
//    records alone, so that it is right whenever the cut came;
//  - reconcileSr: at start-up, each journal resolved, leftover temporary files removed, then the
//    directory listing compared to the VDI records, as SM's scan would find them: a disk file
//    without record is introduced (an invalid one is reported and left alone, a hidden leaf left to
//    the GC), a record without file is forgotten (xapi's update_vdis forgets it whatever uses it).
//    Headers are read only where the listing and the records disagree, so start-up stays cheap.
// Every action is one line of the SM log.
import { readdir, rm, stat } from 'node:fs/promises';
import type { Rec } from '../../storage/database.js';
import { setParent } from '../../storage/vhd/index.js';
import type { SrCtx } from './driver.js';
import {
  DISK_NAME, diskInfo, listDisks, rawName, readDisk, resizeTmpSuffix, setHidden, snapshotTmpName, undoSnapshot, vhdName, type DiskFile,
} from './file-sr.js';
import { fsyncPath, renameDurably, unlinkDurably } from './durable.js';
import { journalRemove, journalsOf, parseJournalName, type Journal } from './journal.js';
import { isUuid, srFile } from './paths.js';
import { dbForget, dbIntroduce, dbUpdate, vdiByLocation } from './sm.js';
import { smLog } from './smlog.js';

/** The name of a leaf being leaf-coalesced, while its parent takes its place (cleanup.py). */
export const OLD_PREFIX = 'OLD_';

/** Temporary files of SR operations: a disk being made (`.tmp`, the HTTP imports' staging files
 * among them), a snapshot's new leaf (`.vhd.new`), a VHD being grown (`.vhd.resize`). */
export const isTemporaryName = (name: string) => name.endsWith('.tmp') || name.endsWith('.vhd.new') || name.endsWith(`.vhd${resizeTmpSuffix}`);

const fileOf = (ctx: SrCtx, uuid: string) => srFile(ctx.emu, ctx.uuid, vhdName(uuid));
const exists = async (p: string) => Boolean(await stat(p).catch(() => null));

async function readVhd(ctx: SrCtx, uuid: string): Promise<DiskFile | null> {
  return readDisk(fileOf(ctx, uuid), uuid, 'vhd').catch(() => null);
}

/**
 * Resolves one journaled operation and removes its journal; the same whether the operation has
 * just failed in this process or was found at start-up. Returns what was done, in words.
 */
export async function resolveJournal(ctx: SrCtx, j: Journal): Promise<string> {
  const { emu, sr } = ctx;
  let done: string;
  switch (j.type) {
    case 'create': {
      // the record is committed only once the file is whole
      if (vdiByLocation(emu, sr, j.id)) {
        done = 'rolled forward (its record is committed)';
      } else {
        for (const name of [vhdName(j.id), rawName(j.id)]) {
          await rm(srFile(emu, ctx.uuid, name), { force: true });
          await rm(srFile(emu, ctx.uuid, `${name}.tmp`), { force: true });
        }
        await fsyncPath(ctx.path);
        done = 'rolled back (no record: its file is removed)';
      }
      break;
    }
    case 'delete': {
      const ref = vdiByLocation(emu, sr, j.id);
      const vhd = await readVhd(ctx, j.id);
      const gone = !vhd && !(await exists(fileOf(ctx, j.id))) && !(await exists(srFile(emu, ctx.uuid, rawName(j.id))));
      if (gone || vhd?.hidden) {
        if (ref) dbForget(emu, ref);
        done = `rolled forward (the file is ${gone ? 'gone' : 'hidden'}: its record is forgotten)`;
      } else {
        done = 'rolled back (the file is intact: the VDI stays)';
      }
      break;
    }
    case 'clone': {
      const base = j.value.base;
      const dst = j.value.dst || null;
      if (!isUuid(base) || (dst && !isUuid(dst))) {
        done = 'dropped (cut before it began)';
        break;
      }
      if (vdiByLocation(emu, sr, dst ?? base)) {
        await rm(srFile(emu, ctx.uuid, snapshotTmpName(j.id)), { force: true });
        const b = await readVhd(ctx, base);
        if (b && !b.hidden) {
          await setHidden(b.file, true);
          await fsyncPath(b.file);
        }
        done = 'rolled forward (its records are committed)';
      } else {
        await undoSnapshot(ctx, j.id, base, dst);
        for (const u of [base, dst]) {
          const r = u ? vdiByLocation(emu, sr, u) : undefined;
          if (r) dbForget(emu, r);
        }
        done = 'rolled back (the source is its original file again)';
      }
      break;
    }
    case 'resize': {
      await rm(`${fileOf(ctx, j.id)}${resizeTmpSuffix}`, { force: true });
      const ref = vdiByLocation(emu, sr, j.id);
      const d = await readVhd(ctx, j.id);
      const rec = ref ? emu.db.get('VDI', ref) : undefined;
      if (ref && rec && d && Number(rec.virtual_size) !== d.virtualSize) {
        dbUpdate(emu, ref, diskInfo(d, { read_only: Boolean(rec.read_only) }));
      }
      done = `resolved (the record follows the file: ${d ? d.virtualSize : 'no file'})`;
      break;
    }
    case 'relink': {
      done = await finishRelink(ctx, j.id, j.value.parent);
      break;
    }
    case 'leaf': {
      done = await resolveLeafCoalesce(ctx, j.id, j.value.parent);
      break;
    }
  }
  await journalRemove(ctx.path, j.type, j.id);
  return done;
}

/** cleanup.py's relink after a coalesce: every child of the coalesced disk moves onto its parent,
 * then the disk goes. */
async function finishRelink(ctx: SrCtx, uuid: string, parentUuid: string | undefined): Promise<string> {
  const { emu, sr } = ctx;
  if (!isUuid(parentUuid)) return 'dropped (cut before it began)';
  const parentFile = fileOf(ctx, parentUuid);
  if (!(await exists(parentFile))) throw new Error(`parent ${parentUuid} of coalesced ${uuid} not found`);
  for (const c of (await listDisks(ctx)).values()) {
    if (c.parent !== uuid) continue;
    await setParent(c.file, parentFile);
    await fsyncPath(c.file);
  }
  for (const v of emu.db.get('SR', sr)!.VDIs as string[]) {
    const sm = emu.db.get('VDI', v)!.sm_config as Record<string, string>;
    if (sm['vhd-parent'] === uuid) emu.db.update('VDI', v, { sm_config: { ...sm, 'vhd-parent': parentUuid } });
  }
  await unlinkDurably(fileOf(ctx, uuid));
  const ref = vdiByLocation(emu, sr, uuid);
  if (ref) dbForget(emu, ref);
  return 'rolled forward (children relinked to the parent, the coalesced disk removed)';
}

/** cleanup.py's _handleInterruptedCoalesceLeaf: while the parent still has its own name the
 * renames are undone; once it has the leaf's name, the leaf-coalesce is finished. */
async function resolveLeafCoalesce(ctx: SrCtx, uuid: string, parentUuid: string | undefined): Promise<string> {
  const { emu, sr } = ctx;
  if (!isUuid(parentUuid)) return 'dropped (cut before it began)';
  const leaf = fileOf(ctx, uuid);
  const old = srFile(emu, ctx.uuid, `${OLD_PREFIX}${vhdName(uuid)}`);
  const parent = fileOf(ctx, parentUuid);
  if (await exists(parent)) {
    if (!(await exists(leaf)) && (await exists(old))) await renameDurably(old, leaf);
    const p = await readVhd(ctx, parentUuid);
    if (p && !p.hidden) {
      await setHidden(parent, true);
      await fsyncPath(parent);
    }
    return 'rolled back (the leaf keeps its parent)';
  }
  await unlinkDurably(old);
  const baseRef = vdiByLocation(emu, sr, parentUuid);
  if (baseRef) dbForget(emu, baseRef);
  const leafRef = vdiByLocation(emu, sr, uuid);
  const d = await readVhd(ctx, uuid);
  if (leafRef && d) dbUpdate(emu, leafRef, diskInfo(d, { read_only: Boolean(emu.db.get('VDI', leafRef)!.read_only) }));
  return 'rolled forward (the parent took the leaf\'s name)';
}

/** An `OLD_<uuid>.vhd` with no journal (left by a leaf-coalesce of an earlier version): with the
 * leaf's name free the old leaf goes back, otherwise it is garbage. */
async function recoverOldLeaf(ctx: SrCtx, name: string): Promise<string> {
  const uuid = name.slice(OLD_PREFIX.length, -'.vhd'.length);
  const old = srFile(ctx.emu, ctx.uuid, name);
  const leaf = fileOf(ctx, uuid);
  if (await exists(leaf)) {
    await unlinkDurably(old);
    return 'removed (the leaf-coalesce had finished)';
  }
  await renameDurably(old, leaf);
  const d = await readVhd(ctx, uuid);
  const p = d?.parent ? await readVhd(ctx, d.parent) : null;
  if (p && !p.hidden) await setHidden(p.file, true);
  return 'renamed back (the leaf-coalesce is undone)';
}

/**
 * Start-up reconciliation of one attached file SR with the database (run under the SR lock,
 * before any other SM call). Returns the number of actions taken.
 */
export async function reconcileSr(ctx: SrCtx): Promise<number> {
  const { emu, sr } = ctx;
  let actions = 0;
  const log = (what: string) => {
    actions++;
    smLog(emu, `SR ${ctx.uuid}: ${what}`);
  };
  let names = await readdir(ctx.path);

  const journals = await journalsOf(ctx.path, names);
  for (const j of journals) {
    try {
      log(`interrupted ${j.type} of ${j.id} ${await resolveJournal(ctx, j)}`);
    } catch (e) {
      log(`interrupted ${j.type} of ${j.id} left journaled: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  if (journals.length) names = await readdir(ctx.path);

  for (const name of names) {
    if (name.startsWith(OLD_PREFIX) && DISK_NAME.test(name) && isUuid(name.slice(OLD_PREFIX.length, -'.vhd'.length))) {
      try {
        log(`${name} ${await recoverOldLeaf(ctx, name)}`);
      } catch (e) {
        log(`${name} left alone: ${e instanceof Error ? e.message : String(e)}`);
      }
    } else if (isTemporaryName(name) && !parseJournalName(name)) {
      await rm(srFile(emu, ctx.uuid, name), { force: true });
      log(`temporary file ${name} removed`);
    }
  }
  names = await readdir(ctx.path);

  // the listing against the records: nothing is read when they agree
  const files = new Map<string, 'vhd' | 'raw'>();
  for (const name of names) {
    const m = DISK_NAME.exec(name);
    if (m && isUuid(m[1]) && !(m[2] === 'raw' && files.has(m[1]))) files.set(m[1], m[2] as 'vhd' | 'raw');
  }
  const records = new Map<string, string>();
  const parents = new Set<string>();
  for (const v of emu.db.get('SR', sr)!.VDIs as string[]) {
    const r = emu.db.get('VDI', v) as Rec;
    records.set(String(r.location), v);
    const p = (r.sm_config as Record<string, string>)['vhd-parent'];
    if (p) parents.add(p);
  }
  const orphans = [...files.keys()].filter((u) => !records.has(u));
  // a cbt_metadata VDI (VDI.data_destroy) has only its CBT log: not missing while the log is there
  const onlyLog = (l: string) => emu.db.get('VDI', records.get(l)!)?.type === 'cbt_metadata' && names.includes(`${l}.cbtlog`);
  const missing = [...records.keys()].filter((l) => isUuid(l) && !files.has(l) && !onlyLog(l));
  if (orphans.length || missing.length) await reconcileListing(ctx, files, records, parents, orphans, missing, log);
  if (actions) {
    // as after SR.scan: the virtual allocation is that of the records
    let valloc = 0;
    for (const v of emu.db.get('SR', sr)!.VDIs as string[]) valloc += Number(emu.db.get('VDI', v)!.virtual_size);
    emu.db.update('SR', sr, { virtual_allocation: valloc });
    emu.db.flush();
  }
  return actions;
}

async function reconcileListing(
  ctx: SrCtx, files: Map<string, 'vhd' | 'raw'>, records: Map<string, string>, parents: Set<string>,
  orphans: string[], missing: string[], log: (what: string) => void,
): Promise<void> {
  const { emu, sr } = ctx;

  const found: DiskFile[] = [];
  for (const u of orphans) {
    const kind = files.get(u)!;
    const file = srFile(emu, ctx.uuid, kind === 'vhd' ? vhdName(u) : rawName(u));
    try {
      const d = await readDisk(file, u, kind);
      if (d) found.push(d);
    } catch (e) {
      log(`VHD scan error, ${file} left alone: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  for (const d of found) if (d.parent) parents.add(d.parent);
  for (const d of found) {
    const isParent = parents.has(d.uuid);
    if (d.hidden && !isParent) {
      log(`hidden leaf ${d.uuid} without record left to the GC`);
      continue;
    }
    dbIntroduce(emu, sr, diskInfo(d, { read_only: isParent }));
    log(`${d.kind === 'raw' ? rawName(d.uuid) : vhdName(d.uuid)} without record introduced`);
  }
  if (missing.length && files.size === 0) {
    // an emptied directory (a device not there): SR.scan decides, not start-up
    log(`no disk file at all: ${missing.length} VDI record(s) kept until SR.scan`);
  } else {
    for (const l of missing) {
      const ref = records.get(l)!;
      dbForget(emu, ref);
      log(`VDI ${l} (${ref}) without file forgotten`);
    }
  }
}

/** Whether the name is one of the SR operations' own (journals, temporaries, OLD_ leaves). */
export function isOperationLeftover(name: string): boolean {
  return Boolean(parseJournalName(name)) || isTemporaryName(name) || (name.startsWith(OLD_PREFIX) && name.endsWith('.vhd'));
}
