// The HTTP handlers besides RPC (WIRE.md §7), each a Fastify plugin in its own scope. server/app.ts
// imports this module, so every app it builds serves them.
import { registerHttpPlugin } from '../app.js';
import { importRawVdiPlugin } from './import-raw-vdi.js';
import { exportRawVdiPlugin } from './export-raw-vdi.js';
import { guestPlugin } from './guest.js';
import { exportXvaPlugin } from './export-xva.js';
import { cliPlugin } from '../cli/plugin.js';
import { importXvaPlugin } from './import-xva.js';
import { rrdUpdatesPlugin } from './rrd-updates.js';
import { rrdDumpsPlugin } from './rrd-dumps.js';
import { rrdPutPlugin } from './rrd-put.js';
import { consolePlugin } from './console.js';
import { webrootPlugin } from './webroot.js';
import { servicesSmPlugin } from './services-sm.js';
import { adoptionPlugin } from './pool-adopt.js';

registerHttpPlugin(importRawVdiPlugin);
registerHttpPlugin(exportRawVdiPlugin);
registerHttpPlugin(guestPlugin);
registerHttpPlugin(exportXvaPlugin);
registerHttpPlugin(cliPlugin);
registerHttpPlugin(importXvaPlugin);
registerHttpPlugin(rrdUpdatesPlugin);
registerHttpPlugin(rrdDumpsPlugin);
registerHttpPlugin(rrdPutPlugin);
registerHttpPlugin(consolePlugin);
registerHttpPlugin(webrootPlugin);
registerHttpPlugin(servicesSmPlugin);
registerHttpPlugin((app, ctx) => adoptionPlugin(app, () => ctx.emu));
