#!/usr/bin/env node
// `xe`: the XAPI command line, from dist/ when that build is fresh, from the TypeScript sources
// through tsx otherwise (bin/fresh.js).
import { builtAndFresh } from './fresh.js';

let main;
if (builtAndFresh(['client', 'server/cli'], 'client/xe/main.js')) {
  ({ main } = await import('../dist/client/xe/main.js'));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../client/xe/main.ts'));
}
// (the exit code is set once every output is flushed)
process.exitCode = await main(process.argv.slice(2), process.argv[1]);
