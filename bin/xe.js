#!/usr/bin/env node
// `xe`: the XAPI command line, from dist/ when that build is fresh, from the TypeScript sources
// through tsx otherwise (as bin/xapi-emu.js decides).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function newestSource(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

function builtAndFresh() {
  if (!existsSync(join(root, 'client'))) return true;
  try {
    const built = statSync(join(root, 'dist', 'BUILT')).mtimeMs;
    return ['client', join('server', 'cli')].every((d) => newestSource(join(root, d)) <= built) && existsSync(join(root, 'dist', 'client', 'xe', 'main.js'));
  } catch {
    return false;
  }
}

let main;
if (process.env.XAPI_EMU_FROM_SOURCE !== '1' && builtAndFresh()) {
  ({ main } = await import('../dist/client/xe/main.js'));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../client/xe/main.ts'));
}
// (the exit code is set once every output is flushed)
process.exitCode = await main(process.argv.slice(2), process.argv[1]);
