// The SR files of a state snapshot: every file under the storage root's directories (the SR mount
// points in sr/, file SRs' locations elsewhere in the root), copied into the snapshot, as
// copy-on-write clones where the filesystem has them. A restore copies back only the files that
// changed since the snapshot or the last restore left them, and removes those the snapshot does
// not have, so that restoring a pool whose disks did not change costs a directory walk.
import { constants, copyFileSync, lstatSync, mkdirSync, readdirSync, rmSync, statSync, unlinkSync, utimesSync, type BigIntStats } from 'node:fs';
import { dirname, join } from 'node:path';

/** Top-level names of the storage root that are not SR contents: the snapshots themselves. The
 * root's files (database, certificate, SMlog, pid file) are not walked either. */
const NOT_CONTENT = new Set(['snapshots']);

/** A file as a restore left it, or as a snapshot found it. */
export interface KnownFile {
  size: number;
  /** nanoseconds, as a string (JSON has no 64-bit integers) */
  mtimeNs: string;
  ino: number;
  /** modified so shortly before it was seen that a later write may leave the same mtime
   * (filesystem timestamps are coarser than a nanosecond): its stat proves nothing */
  racy: boolean;
}

export interface FileSet {
  /** relative paths (with /) of the files, and of the directories (with a trailing /) */
  entries: string[];
  bytes: number;
}

/** Seconds before "now" under which an mtime is racy. */
const RACY_S = 2;

const fromRel = (root: string, rel: string) => join(root, ...rel.split('/').filter(Boolean));

/** Regular files and directories under the root's content directories, by relative path. */
function walk(root: string): Map<string, BigIntStats | null> {
  const out = new Map<string, BigIntStats | null>();
  const visit = (dir: string, rel: string) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (rel === '' && NOT_CONTENT.has(name)) continue;
      const p = join(dir, name);
      const st = lstatSync(p, { bigint: true, throwIfNoEntry: false });
      if (!st) continue;
      const r = rel + name;
      if (st.isDirectory()) {
        out.set(`${r}/`, null);
        visit(p, `${r}/`);
      } else if (st.isFile() && rel !== '') out.set(r, st);
    }
  };
  visit(root, '');
  return out;
}

function known(st: BigIntStats, nowNs: bigint): KnownFile {
  return { size: Number(st.size), mtimeNs: String(st.mtimeNs), ino: Number(st.ino), racy: st.mtimeNs > nowNs - BigInt(RACY_S) * 1_000_000_000n };
}

const same = (st: BigIntStats, k: KnownFile | undefined): boolean =>
  !!k && !k.racy && Number(st.size) === k.size && String(st.mtimeNs) === k.mtimeNs && Number(st.ino) === k.ino;

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

/** Copies the root's SR files into `dest`. Answers what it copied and how each live file looked. */
export function saveFiles(root: string, dest: string): { set: FileSet; known: Map<string, KnownFile> } {
  const now = nowNs();
  const entries: string[] = [];
  const seen = new Map<string, KnownFile>();
  let bytes = 0;
  mkdirSync(dest, { recursive: true });
  for (const [rel, st] of walk(root)) {
    entries.push(rel);
    if (!st) {
      mkdirSync(fromRel(dest, rel), { recursive: true });
      continue;
    }
    const target = fromRel(dest, rel);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(fromRel(root, rel), target, constants.COPYFILE_FICLONE);
    bytes += Number(st.size);
    seen.set(rel, known(st, now));
  }
  return { set: { entries, bytes }, known: seen };
}

/**
 * Makes the root's SR files those of the snapshot in `src`: files it lacks are removed, files that
 * differ from what `seen` recorded (or that it did not record) are copied back, others are left
 * alone. A copied file gets an mtime in the past, so that its next change is seen. Updates `seen`.
 */
export function restoreFiles(root: string, src: string, set: FileSet, seen: Map<string, KnownFile>): { copied: number; removed: number } {
  const wanted = new Set(set.entries);
  const live = walk(root);
  let copied = 0;
  let removed = 0;
  // files first, then directories deepest first
  for (const [rel, st] of live) {
    if (st && !wanted.has(rel)) {
      unlinkSync(fromRel(root, rel));
      seen.delete(rel);
      removed++;
    }
  }
  for (const rel of [...live.keys()].filter((r) => live.get(r) === null && !wanted.has(r)).sort((a, b) => b.length - a.length)) {
    rmSync(fromRel(root, rel), { recursive: true, force: true });
  }
  const stamp = new Date(Date.now() - 10_000);
  const now = nowNs();
  for (const rel of set.entries) {
    const target = fromRel(root, rel);
    if (rel.endsWith('/')) {
      if (!live.has(rel)) mkdirSync(target, { recursive: true });
      continue;
    }
    const st = live.get(rel);
    if (st && same(st, seen.get(rel))) continue;
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(fromRel(src, rel), target, constants.COPYFILE_FICLONE);
    utimesSync(target, stamp, stamp);
    seen.set(rel, known(statSync(target, { bigint: true }), now));
    copied++;
  }
  return { copied, removed };
}
