/**
 * Parent locators: building the three entries blktap writes for a
 * differencing disk (MACX relative `file://./name`, W2KU absolute, W2RU
 * relative) and resolving a parent from them.
 */
import { access, constants, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { decodeLocatorData, encodeLocatorData, PLAT_MACX, PLAT_W2KU, PLAT_W2RU } from './format.js';

export interface LocatorData {
  code: number;
  data: Buffer;
}

/** Relative path from the child's directory to the parent, "./" prefixed as blktap does. */
export function relativeParentPath(childAbs: string, parentAbs: string): string {
  const rel = relative(dirname(childAbs), parentAbs);
  return rel.startsWith('../') || rel === '..' ? rel : `./${rel}`;
}

/** The three locators, in blktap's order. Paths must be absolute and canonical. */
export function buildLocators(childAbs: string, parentAbs: string): LocatorData[] {
  const rel = relativeParentPath(childAbs, parentAbs);
  return [
    { code: PLAT_MACX, data: encodeLocatorData(PLAT_MACX, rel) },
    { code: PLAT_W2KU, data: encodeLocatorData(PLAT_W2KU, parentAbs) },
    { code: PLAT_W2RU, data: encodeLocatorData(PLAT_W2RU, rel) },
  ];
}

async function readable(p: string): Promise<boolean> {
  try {
    await access(p, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Canonical directory of a (possibly not yet existing) file. */
export async function canonicalPath(p: string): Promise<string> {
  const abs = resolve(p);
  try {
    return await realpath(abs);
  } catch {
    try {
      return join(await realpath(dirname(abs)), basename(abs));
    } catch {
      return abs;
    }
  }
}

/**
 * Try each locator in slot order (relative ones against the child's
 * directory), then the parent's unicode name next to the child. Returns the
 * canonical path of the first readable candidate, or null.
 */
export async function resolveParent(childAbs: string, locators: LocatorData[], parentName: string): Promise<string | null> {
  const dir = dirname(await canonicalPath(childAbs));
  const candidates: string[] = [];
  for (const l of locators) {
    const p = decodeLocatorData(l.code, l.data);
    if (p) candidates.push(isAbsolute(p) ? p : join(dir, p));
  }
  if (parentName && !parentName.includes('/')) candidates.push(join(dir, parentName));
  for (const c of candidates) {
    if (await readable(c)) return canonicalPath(c);
  }
  return null;
}
