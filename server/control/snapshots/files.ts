// The SR files of a state snapshot: every file under the storage root's directories (the SR mount
// points in sr/, file SRs' locations elsewhere in the root), copied into the snapshot, as
// copy-on-write clones where the filesystem has them. A restore copies back only the files that
// changed since the snapshot or the last restore left them, and removes those the snapshot does
// not have, so that restoring a pool whose disks did not change costs a directory walk.
import { constants, copyFileSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, utimesSync, type BigIntStats } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Emulator } from '../../emulator.js';
import { isUsableLocation } from '../../sm/paths.js';

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
  /** the directories walked, relative to the storage root: sr/ and file SRs' locations */
  roots: string[];
  /** relative paths (with /) of the files, and of the directories (with a trailing /) */
  entries: string[];
  /** symbolic links (a file SR's mount point is one, to its location), by relative path */
  links: Record<string, string>;
  bytes: number;
}

/** Seconds before "now" under which an mtime is racy. */
const RACY_S = 2;

const fromRel = (root: string, rel: string) => join(root, ...rel.split('/').filter(Boolean));

/** The directories of the storage root that hold SR contents: the mount points' sr/, and the
 * locations of file and ISO SRs inside the root. Nothing else of the root (the database, the
 * snapshots, what a user keeps there) is ever walked. */
export function contentRoots(emu: Emulator): string[] {
  const roots = new Set(['sr', 'fabric']);
  for (const row of emu.db.table('PBD').values()) {
    const loc = (row.rec.device_config as Record<string, string> | undefined)?.location;
    if (typeof loc === 'string' && isAbsolute(loc) && isUsableLocation(emu, loc)) roots.add(relative(emu.storageDir, resolve(loc)).split(sep).join('/'));
  }
  return [...roots].sort();
}

type Entry = BigIntStats | null | { link: string };

/** Files, directories and links under the roots, by relative path. */
function walk(root: string, roots: string[]): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const visit = (rel: string) => {
    let names: string[];
    try {
      names = readdirSync(fromRel(root, rel));
    } catch {
      return;
    }
    out.set(`${rel}/`, null);
    for (const name of names) {
      const r = `${rel}/${name}`;
      const st = lstatSync(fromRel(root, r), { bigint: true, throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) visit(r);
      else if (st.isFile()) out.set(r, st);
      else if (st.isSymbolicLink()) out.set(r, { link: readlinkSync(fromRel(root, r)) });
    }
  };
  for (const r of roots) visit(r);
  return out;
}

function known(st: BigIntStats, nowNs: bigint): KnownFile {
  return { size: Number(st.size), mtimeNs: String(st.mtimeNs), ino: Number(st.ino), racy: st.mtimeNs > nowNs - BigInt(RACY_S) * 1_000_000_000n };
}

const same = (st: BigIntStats, k: KnownFile | undefined): boolean =>
  !!k && !k.racy && Number(st.size) === k.size && String(st.mtimeNs) === k.mtimeNs && Number(st.ino) === k.ino;

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

const isStats = (e: Entry | undefined): e is BigIntStats => !!e && !('link' in e);

/** A previous snapshot's copies (files/ of it), and how the live files looked when it had them:
 * a live file that still looks so has the content of that copy, which is linked, not copied
 * (snapshot copies are never written to, so they can share their data). */
export interface Reuse {
  dir: string;
  seen: Map<string, KnownFile>;
}

function tryLink(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch {
    return false;
  }
}

/** Copies the root's SR files into `dest`. Answers what it copied and how each live file looked. */
export function saveFiles(root: string, roots: string[], dest: string, reuse?: Reuse): { set: FileSet; known: Map<string, KnownFile> } {
  const now = nowNs();
  const entries: string[] = [];
  const links: Record<string, string> = {};
  const seen = new Map<string, KnownFile>();
  let bytes = 0;
  mkdirSync(dest, { recursive: true });
  for (const [rel, st] of walk(root, roots)) {
    if (st && 'link' in st) {
      links[rel] = st.link;
      continue;
    }
    entries.push(rel);
    if (!st) {
      mkdirSync(fromRel(dest, rel), { recursive: true });
      continue;
    }
    const target = fromRel(dest, rel);
    mkdirSync(dirname(target), { recursive: true });
    if (!(reuse && same(st, reuse.seen.get(rel)) && tryLink(fromRel(reuse.dir, rel), target))) {
      copyFileSync(fromRel(root, rel), target, constants.COPYFILE_FICLONE);
    }
    bytes += Number(st.size);
    seen.set(rel, known(st, now));
  }
  return { set: { roots, entries, links, bytes }, known: seen };
}

/**
 * Makes the root's SR files those of the snapshot in `src`: files it lacks are removed, files that
 * differ from what `seen` recorded (or that it did not record) are copied back, others are left
 * alone. A copied file gets an mtime in the past, so that its next change is seen. Updates `seen`.
 */
export function restoreFiles(root: string, liveRoots: string[], src: string, set: FileSet, seen: Map<string, KnownFile>): { copied: number; removed: number } {
  const wanted = new Set(set.entries);
  const live = walk(root, [...new Set([...set.roots, ...liveRoots])]);
  let copied = 0;
  let removed = 0;
  // files and links first, then directories deepest first
  for (const [rel, st] of live) {
    if (st === null) continue;
    if ('link' in st) {
      if (set.links[rel] !== st.link) unlinkSync(fromRel(root, rel));
    } else if (!wanted.has(rel)) {
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
    if (isStats(st) && same(st, seen.get(rel))) continue;
    mkdirSync(dirname(target), { recursive: true });
    // a new file renamed into place: another name of the old one (SM's hard links) keeps its data
    const tmp = `${target}.restoring`;
    copyFileSync(fromRel(src, rel), tmp, constants.COPYFILE_FICLONE);
    utimesSync(tmp, stamp, stamp);
    renameSync(tmp, target);
    seen.set(rel, known(statSync(target, { bigint: true }), now));
    copied++;
  }
  for (const [rel, to] of Object.entries(set.links)) {
    const st = live.get(rel);
    if (st && 'link' in st && st.link === to) continue;
    const target = fromRel(root, rel);
    mkdirSync(dirname(target), { recursive: true });
    rmSync(target, { recursive: true, force: true });
    symlinkSync(to, target);
  }
  return { copied, removed };
}
