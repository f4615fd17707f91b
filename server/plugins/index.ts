// The plugins installed on every simulated host (each module installs its own).
import './updater.js';
import './storage.js';
import './system.js';

export { callPlugin, pluginNames } from './registry.js';
export { publish, withdraw, pendingOf, type PendingPackage } from './updates.js';
