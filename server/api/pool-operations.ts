// The pool's allowed_operations / current_operations (xapi_pool_helpers.ml): the operations that
// change the whole pool (HA on or off, a new master, a cluster, updates ...) exclude each other,
// each failing with its own *_IN_PROGRESS error while another one runs; the others (certificate
// exchanges, eject ...) wait for them, and they for these, under OTHER_OPERATION_IN_PROGRESS.
import type { Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { currentOperations, registerOperations, withOperation } from './operations.js';

/** The operations that block the others, each with the error the others get while it runs. */
const BLOCKING: [string, string][] = [
  ['ha_enable', 'HA_ENABLE_IN_PROGRESS'],
  ['ha_disable', 'HA_DISABLE_IN_PROGRESS'],
  ['cluster_create', 'CLUSTER_CREATE_IN_PROGRESS'],
  ['designate_new_master', 'DESIGNATE_NEW_MASTER_IN_PROGRESS'],
  ['tls_verification_enable', 'TLS_VERIFICATION_ENABLE_IN_PROGRESS'],
  ['configure_repositories', 'CONFIGURE_REPOSITORIES_IN_PROGRESS'],
  ['sync_updates', 'SYNC_UPDATES_IN_PROGRESS'],
  ['sync_bundle', 'SYNC_BUNDLE_IN_PROGRESS'],
  ['apply_updates', 'APPLY_UPDATES_IN_PROGRESS'],
];
const BLOCKING_OPS = BLOCKING.map(([op]) => op);
/** The operations that wait while another one runs, and make the others wait. */
const WAITING_OPS = [
  'cert_refresh', 'exchange_certificates_on_join', 'exchange_ca_certificates_on_join', 'copy_primary_host_certs', 'eject',
  'get_updates', 'exchange_crls_on_join',
];
/** allowed_operations lists them in this order (a filter of this list, not a set) */
const ALL_OPS = [...BLOCKING_OPS, ...WAITING_OPS];

/** compute_valid_operations: the error of each operation that is not allowed now. */
function poolErrors(emu: Emulator, ref: string, rec: Rec): Map<string, XapiError> {
  const t = new Map<string, XapiError>();
  const set = (ops: string[], e: XapiError) => {
    for (const o of ops) if (!t.has(o)) t.set(o, e);
  };
  const cur = currentOperations(rec);
  const blocking = BLOCKING.find(([op]) => cur.some(([, c]) => c === op));
  const waiting = cur.find(([, c]) => WAITING_OPS.includes(c));
  const otherInProgress = new XapiError('OTHER_OPERATION_IN_PROGRESS', waiting ? ['pool', ref, waiting[1], waiting[0]] : ['pool', ref]);
  if (blocking) {
    set(BLOCKING_OPS, new XapiError(blocking[1], []));
    set(WAITING_OPS, otherInProgress);
    return t;
  }
  if (waiting) {
    set(ALL_OPS, otherInProgress);
    return t;
  }
  const haEnabled = rec.ha_enabled === true;
  if (haEnabled) set(['ha_enable', 'tls_verification_enable'], new XapiError('HA_IS_ENABLED', []));
  else set(['ha_disable'], new XapiError('HA_NOT_ENABLED', []));
  if ('rolling_upgrade_in_progress' in ((rec.other_config as object) ?? {})) {
    set(['cluster_create', 'tls_verification_enable'], new XapiError('NOT_SUPPORTED_DURING_UPGRADE', []));
  }
  if (emu.db.count('Cluster') > 0) set(['cluster_create'], new XapiError('CLUSTER_ALREADY_EXISTS', []));
  else if (haEnabled) set(['cluster_create'], new XapiError('INCOMPATIBLE_CLUSTER_STACK_ACTIVE', [String(rec.ha_cluster_stack ?? '')]));
  return t;
}

registerOperations('pool', {
  allOps: ALL_OPS,
  check(emu, ref, rec, op, strict) {
    // no pool operation may start while a pool secret rotation is pending (allowed_operations
    // does not say so)
    if (!strict && rec.is_psr_pending === true) return new XapiError('POOL_SECRET_ROTATION_PENDING', []);
    return poolErrors(emu, ref, rec).get(op) ?? null;
  },
});

/** with_pool_operation: the pool marked with `op` while fn runs; a blocking operation in progress
 * fails it at once, a waiting one makes it wait (Helpers.retry_with_global_lock). */
export function withPoolOperation<T>(call: Call, op: string, fn: () => Promise<T> | T): Promise<T> {
  return withOperation(call, 'pool', call.emu.pool, op, fn);
}
