#!/usr/bin/env node
// `xapi-emu`: loads the TypeScript sources through tsx (no build step), then runs the CLI.
import { register } from 'tsx/esm/api';

register();
const { run } = await import('../server/cli.ts');
await run();
