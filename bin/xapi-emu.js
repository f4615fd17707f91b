#!/usr/bin/env node
// `xapi-emu`: runs the CLI from dist/ (the sources transpiled by `npm run build`, which `npm ci`
// runs) when that build is newer than every source file, and from the TypeScript sources through
// tsx otherwise, so that an edited tree never runs stale code. An installed package ships dist/
// without the sources.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

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

function builtAndFresh() {
  if (!existsSync(join(root, 'server'))) return true;
  try {
    const built = statSync(join(root, 'dist', 'BUILT')).mtimeMs;
    return ['server', 'schema', 'storage'].every((d) => newestSource(join(root, d)) <= built) && statSync(join(root, 'package.json')).mtimeMs <= built;
  } catch {
    return false;
  }
}

if (process.env.XAPI_EMU_FROM_SOURCE !== '1' && builtAndFresh()) {
  const { run } = await import('../dist/server/cli.js');
  await run();
} else {
  const { register } = await import('tsx/esm/api');
  register();
  const { run } = await import('../server/cli.ts');
  await run();
}
