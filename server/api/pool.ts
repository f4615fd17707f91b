// pool: custom messages.
import { registerProvider } from '../dispatch/registry.js';
import { generic } from './generic.js';

registerProvider('pool', {
  add_to_guest_agent_config: generic,
  remove_from_guest_agent_config: generic,
});
