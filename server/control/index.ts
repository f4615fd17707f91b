// The emulator's own control plane under /xapi-emu/ (no real host has it): registered on every app.
import { registerHttpPlugin } from '../app.js';
import { controlPlugin } from './plugin.js';

registerHttpPlugin(controlPlugin);
