// Transpiles the emulator's TypeScript sources, file by file, into dist/ (same tree, with the data
// files they read beside them), so that `xapi-emu` starts without compiling on the fly. Run by
// `npm run build` and by npm's `prepare` (npm ci). bin/xapi-emu.js uses dist/ only while it is newer
// than every source file, and the sources through tsx otherwise: an edit never runs stale code.
import { build } from 'esbuild';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist');
export const SOURCE_DIRS = ['server', 'schema', 'storage', 'client'];

function tsFiles(dir) {
  const files = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) files.push(...tsFiles(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) files.push(p);
  }
  return files;
}

// (a Docker layer installs the dependencies before the sources are copied in)
if (!SOURCE_DIRS.every((d) => existsSync(join(root, d)))) {
  console.log('xapi-emu build: no sources here yet, nothing to build');
  process.exit(0);
}
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: SOURCE_DIRS.flatMap((d) => tsFiles(join(root, d))),
  outdir: out,
  outbase: root,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  bundle: false,
  logLevel: 'warning',
});
// what the sources read relative to themselves (and the status page's files, served as they are)
for (const f of ['schema/generated/model.json', 'server/pool/data', 'server/control/status/static', 'package.json']) {
  mkdirSync(join(out, relative(root, join(root, f, '..'))), { recursive: true });
  cpSync(join(root, f), join(out, f), { recursive: true });
}
// written last: its time says when the build was complete
writeFileSync(join(out, 'BUILT'), `${new Date().toISOString()}\n`);
