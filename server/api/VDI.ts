// VDI: custom messages. Disk operations come with the storage layer.
import { registerProvider } from '../dispatch/registry.js';
import { generic } from './generic.js';

registerProvider('VDI', {
  set_name_label: generic,
  set_name_description: generic,
});
