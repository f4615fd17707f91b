#!/usr/bin/env node
// `xapi-emu`: runs the CLI from dist/ when that build is fresh, and from the TypeScript sources
// through tsx otherwise (bin/fresh.js).
import { builtAndFresh } from './fresh.js';

if (builtAndFresh(['server', 'schema', 'storage'], 'server/cli.js')) {
  const { run } = await import('../dist/server/cli.js');
  await run();
} else {
  const { register } = await import('tsx/esm/api');
  register();
  const { run } = await import('../server/cli.ts');
  await run();
}
