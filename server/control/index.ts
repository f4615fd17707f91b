// The emulator's own control plane under /xapi-emu/ (no real host has it): registered on every app.
import { registerHttpPlugin } from '../app.js';
import { controlPlugin } from './plugin.js';
// the status page and its event stream (not JSON: a plugin of their own)
import './status/index.js';

registerHttpPlugin(controlPlugin);
