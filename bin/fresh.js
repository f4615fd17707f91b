// Whether dist/ (the sources transpiled by `npm run build`, which `npm ci` runs) may be run: it
// must be newer than every source file of `dirs`, so that an edited tree never runs stale code. An
// installed package ships dist/ without the sources: then it is always used.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));

function newestSource(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    // (.html, .css, .js: the status page's files, copied as they are)
    else if (/\.(ts|json|html|css|js)$/.test(e.name)) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/** True when `entry` (a path under dist/) is built and newer than the sources of `dirs`. */
export function builtAndFresh(dirs, entry) {
  if (process.env.XAPI_EMU_FROM_SOURCE === '1') return false;
  if (!existsSync(join(root, dirs[0]))) return true;
  try {
    const built = statSync(join(root, 'dist', 'BUILT')).mtimeMs;
    return (
      existsSync(join(root, 'dist', entry)) &&
      dirs.every((d) => newestSource(join(root, d)) <= built) &&
      statSync(join(root, 'package.json')).mtimeMs <= built
    );
  } catch {
    return false;
  }
}
