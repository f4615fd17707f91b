/**
 * Chain-level operations used by SM and its GC: list a chain, coalesce a
 * child into its parent, and point a child at a new parent.
 */
import { stat } from 'node:fs/promises';
import { VhdError } from './errors.js';
import { BLOCK_SIZE, MAX_CHAIN_SIZE } from './format.js';
import { Vhd, type RawBlock } from './vhd.js';

/** Canonical paths of the chain, leaf first, root last. */
export async function chainOf(path: string): Promise<string[]> {
  const v = await Vhd.open(path, { readOnly: true });
  try {
    return v.chain().map((x) => x.path);
  } finally {
    await v.close();
  }
}

export interface CoalesceResult {
  /** Blocks copied from the child. */
  blocks: number;
  /** Their size in bytes (2 MiB each). */
  bytes: number;
  parentPath: string;
}

/**
 * Copy the child's allocated sectors into its parent (vhd-util coalesce).
 * The child is left unchanged; the caller then relinks the child's children
 * (setParent) and deletes the child. The parent must be at least as large as
 * the child (SM resizes it first).
 */
export async function coalesce(childPath: string): Promise<CoalesceResult> {
  const child = await Vhd.open(childPath, { readOnly: true, parents: false });
  let parent: Vhd | null = null;
  try {
    if (!child.isDifferencing) throw new VhdError('NOT_DIFFERENCING', 'not a differencing disk', { path: child.path });
    if (!child.parentPath) throw new VhdError('PARENT_NOT_FOUND', `parent ${child.parentName} not found`, { path: child.path });
    parent = await Vhd.open(child.parentPath, { readOnly: false, parents: false });
    if (child.parentUuid && parent.uuid !== child.parentUuid) {
      throw new VhdError('PARENT_MISMATCH', `parent ${parent.path} has uuid ${parent.uuid}, expected ${child.parentUuid}`, { path: child.path });
    }
    if (child.virtualSize > parent.virtualSize) {
      throw new VhdError('SIZE_MISMATCH', `child (${child.virtualSize}) larger than its parent (${parent.virtualSize})`, { path: child.path });
    }
    const blocks = child.allocatedBlocks();
    // read block i+1 while block i is being written into the parent
    let next: Promise<RawBlock | null> | null = blocks.length ? child.readBlock(blocks[0]) : null;
    let n = 0;
    for (let i = 0; i < blocks.length; i++) {
      const cur = await next!;
      next = i + 1 < blocks.length ? child.readBlock(blocks[i + 1]) : null;
      if (!cur) continue;
      try {
        await parent.mergeBlock(blocks[i], cur.bitmap, cur.data);
      } catch (e) {
        await next?.catch(() => undefined);
        throw e;
      }
      n++;
      if (n % 256 === 0) await parent.commit();
    }
    await parent.flush();
    return { blocks: n, bytes: n * BLOCK_SIZE, parentPath: parent.path };
  } finally {
    await parent?.close();
    await child.close();
  }
}

/**
 * Point a differencing disk at a new parent file (vhd-util modify -p):
 * rewrites the header's parent uuid, timestamp (the new parent's mtime) and
 * unicode name, and the three parent locators.
 */
export async function setParent(childPath: string, newParentPath: string): Promise<void> {
  const child = await Vhd.open(childPath, { readOnly: false, parents: false });
  try {
    if (!child.isDifferencing) throw new VhdError('NOT_DIFFERENCING', 'not a differencing disk', { path: child.path });
    const parent = await Vhd.open(newParentPath, { readOnly: true });
    try {
      const chain = parent.chain();
      if (chain.some((v) => v.path === child.path || v.uuid === child.uuid)) {
        throw new VhdError('INVALID_ARGUMENT', `${parent.path} descends from ${child.path}: that would make a loop`, { path: child.path });
      }
      if (chain.length + 1 > MAX_CHAIN_SIZE) {
        throw new VhdError('CHAIN_TOO_LONG', `chain would be longer than ${MAX_CHAIN_SIZE}`, { path: child.path });
      }
      if (parent.virtualSize > child.virtualSize) {
        throw new VhdError('SIZE_MISMATCH', `new parent (${parent.virtualSize}) larger than the child (${child.virtualSize})`, { path: child.path });
      }
      const st = await stat(parent.path);
      await child.reparent(parent.path, parent.uuid, st.mtimeMs);
    } finally {
      await parent.close();
    }
    await child.flush();
  } finally {
    await child.close();
  }
}
