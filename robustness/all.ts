// All the robustness harnesses in turn, with their full-run defaults (flags are passed to each).
//   npm run robust -- [--seed 1] ...
import { main as fuzz } from './fuzz.js';
import { main as crash } from './crash.js';
import { main as race } from './race.js';
import { main as rbac } from './rbac.js';

let failed = 0;
for (const run of [fuzz, crash, race, rbac]) failed += (await run()) === 0 ? 0 : 1;
process.exit(failed > 0 ? 1 : 0);
