// The package's entry point for in-process use: `import { startEmulator } from 'xapi-emu'`.
export { startEmulator, type StartEmulatorOptions, type EmulatorHandle } from './embed.js';
export { startServer, type ServerOptions, type RunningServer } from './app.js';
export { controlClient, ControlApiError, type ControlClient, type ControlClientOptions } from './control/client.js';
export { contract, type ControlContract } from './control/contract/index.js';
export { loadFixture } from './control/fixture/load.js';
export type { FixtureOption } from './control/fixture/startup.js';
