// SR: custom messages. Drivers, scans and VDI operations come with the storage layer.
import { registerProvider } from '../dispatch/registry.js';
import { generic } from './generic.js';

// xapi passes the new names to the SM backend too; without one they are plain field updates.
registerProvider('SR', {
  set_name_label: generic,
  set_name_description: generic,
});
