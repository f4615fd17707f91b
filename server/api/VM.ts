// VM: custom messages. Lifecycle operations come with xenopsd; until then they answer NOT_IMPLEMENTED.
import { registerProvider } from '../dispatch/registry.js';
import { generic } from './generic.js';

// Custom in the datamodel only because some map keys need other roles (RBAC checks them in
// dispatch); their semantics are the generic ones.
registerProvider('VM', {
  add_to_other_config: generic,
  remove_from_other_config: generic,
  set_other_config: generic,
  add_to_platform: generic,
  remove_from_platform: generic,
  set_platform: generic,
  add_to_blocked_operations: generic,
  remove_from_blocked_operations: generic,
  set_blocked_operations: generic,
  set_start_delay: generic,
  set_shutdown_delay: generic,
  set_order: generic,
});

// VM.create: the record plus its VM_metrics, as xapi_vm.ml creates them; a new VM is Halted.
registerProvider('VM', {
  create(call, args: Record<string, unknown>) {
    const { db, ids } = call.emu;
    const metrics = ids.ref();
    db.create('VM_metrics', metrics, { uuid: ids.uuid() });
    const ref = ids.ref();
    db.create('VM', ref, { ...args, uuid: ids.uuid(), metrics, power_state: 'Halted', domid: -1 });
    return ref;
  },
});
