// Faults on API calls: method rules (an XAPI error, latency, a hang, a cut connection, a toolstack
// restart after the answer), and what failed hosts and SRs do to the calls that need them.
//
// An Async.X call matches a rule written for X (and one written for "Async.X"); the rule's error,
// latency or hang happen inside its task, so the client gets a task ref and the task fails with
// the error, as a failure inside xapi's implementation does. A drop cuts the Async call's own
// connection before any task exists.
import { model, type MessageMeta, type Ty } from '../../../schema/index.js';
import type { Emulator } from '../../emulator.js';
import type { Call } from '../../dispatch/registry.js';
import { DropConnection, type CallFault, type CallFaultHooks, type CallOrigin } from '../../dispatch/dispatch.js';
import { XapiError } from '../../dispatch/errors.js';
import { engineOf } from './index.js';
import type { FaultEngine, Rule } from './engine.js';
import { hostFault } from './hosts.js';
import { followedMaster } from '../../pool/master-role.js';

/** Custom messages that only read or write the database: the master answers them alone. */
const DB_ONLY = /^(get_|set_|add_|remove_|assert_|retrieve_|compute_|record_|create|destroy|forget|introduce|db_|power_state_reset$)/;
/** Messages a dead host does not stop (they are for that case), or that check liveness themselves. */
const FOR_DEAD_HOSTS = new Set(['host.declare_dead', 'host.destroy', 'host.power_on', 'host.enable', 'VM.power_state_reset']);
/** What a slave that lost its master still answers (Datamodel.emergency_calls). */
const EMERGENCY_CALLS = new Set([
  'pool.slave_reset_master', 'pool.transition_to_master', 'pool.ping_slave', 'session.slave_local_login',
  'session.slave_local_login_with_password', 'session.local_logout', 'host.propose_new_master', 'host.commit_new_master',
  'host.abort_new_master', 'host.local_assert_healthy', 'host.signal_networking_change', 'host.local_management_reconfigure',
  'host.ha_xapi_healthcheck', 'host.emergency_ha_disable', 'host.management_disable', 'host.get_system_status_capabilities',
  'host.is_in_emergency_mode', 'host.shutdown_agent', 'host.emergency_reset_server_certificate', 'system.listMethods',
  ...model.emergency_calls,
]);
/** VM operations that attach the VM's disks (SM's vdi_attach / vdi_snapshot ...). */
const VM_STORAGE_OPS = new Set(['start', 'start_on', 'resume', 'resume_on', 'snapshot', 'checkpoint', 'clone', 'copy', 'suspend', 'revert', 'snapshot_with_quiesce']);

/** The refs among a call's arguments, with their classes (refs, sets of refs). */
function refArgs(msg: MessageMeta, args: unknown[]): [string, string][] {
  const out: [string, string][] = [];
  const add = (ty: Ty, v: unknown) => {
    if (ty.k === 'ref' && typeof v === 'string') out.push([ty.class, v]);
    else if (ty.k === 'set' && Array.isArray(v)) for (const x of v) add(ty.of, x);
  };
  for (let i = 0; i < msg.params.length; i++) add(msg.params[i].ty, args[i]);
  return out;
}

function argsMatch(emu: Emulator, rule: Rule, msg: MessageMeta, args: unknown[]): boolean {
  const want = rule.input.match.args;
  if (!want) return true;
  const refs = refArgs(msg, args);
  const strings = args.filter((a): a is string => typeof a === 'string');
  const named = (test: (cls: string, ref: string) => boolean) => refs.some(([cls, ref]) => test(cls, ref));
  if (want.ref !== undefined && !strings.includes(want.ref) && !named((_c, r) => r === want.ref)) return false;
  if (want.uuid !== undefined && !strings.includes(want.uuid) && !named((c, r) => emu.db.get(c, r)?.uuid === want.uuid)) return false;
  if (want.name_label !== undefined && !strings.includes(want.name_label) && !named((c, r) => emu.db.get(c, r)?.name_label === want.name_label)) return false;
  return true;
}

function methodFault(engine: FaultEngine, call: Call, args: unknown[]): CallFault | null {
  const { emu, msg, label } = call;
  let before: (() => Promise<void>)[] | undefined;
  let after: (() => void) | undefined;
  let drop = false;
  for (const rule of engine.rules.values()) {
    if (rule.kind !== 'method') continue;
    if (!rule.pattern!.test(msg.wire) && (label === msg.wire || !rule.pattern!.test(label))) continue;
    if (!argsMatch(emu, rule, msg, args)) continue;
    if (!engine.fires(rule)) continue;
    const e = rule.input.effect;
    before ??= [];
    if (e.drop) drop = true;
    if (e.toolstack_restart) {
      const runtime = engine.runtime;
      // after the answer has gone out: the restart closes the listeners, waiting for calls in flight
      after = () => setImmediate(() => void runtime?.toolstackRestart());
    }
    if (e.latency) {
      const s = e.latency;
      before.push(() => emu.clock.sleep(s));
    }
    if (e.hang) before.push(() => engine.hang(rule));
    if (e.error) {
      const { code, params } = e.error;
      before.push(async () => {
        throw new XapiError(code, [...params]);
      });
    }
  }
  if (drop) return { drop: true };
  if (!before?.length && !after) return null;
  const steps = before ?? [];
  return {
    before: steps.length === 0 ? undefined : async () => {
      for (const b of steps) await b();
    },
    after,
  };
}

/** The hosts a call is forwarded to (message_forwarding.ml: the VM's resident host, the host
 * named, a PBD's host, the host of a local SR). */
function forwardedTo(emu: Emulator, msg: MessageMeta, args: unknown[]): string[] {
  const { db } = emu;
  const hosts: string[] = [];
  const residentOf = (vm: string) => {
    const r = db.get('VM', vm);
    if (r && (r.power_state === 'Running' || r.power_state === 'Paused')) hosts.push(String(r.resident_on));
  };
  const localSrHost = (sr: string) => {
    const s = db.get('SR', sr);
    if (!s || s.shared === true) return;
    const pbds = (s.PBDs as string[]).map((p) => String(db.get('PBD', p)?.host));
    if (pbds.length > 0 && pbds.every((h) => h === pbds[0])) hosts.push(pbds[0]);
  };
  for (const [cls, ref] of refArgs(msg, args)) {
    // (a host named as a destination, VM.start_on ..., is checked by the implementation: HOST_NOT_LIVE)
    if (cls === 'host') {
      if (msg.class === 'host') hosts.push(ref);
    } else if (cls === 'VM') residentOf(ref);
    else if (cls === 'VBD' || cls === 'VIF') residentOf(String(db.get(cls, ref)?.VM));
    else if (cls === 'PBD') hosts.push(String(db.get('PBD', ref)?.host));
    else if (cls === 'SR') localSrHost(ref);
    else if (cls === 'VDI') localSrHost(String(db.get('VDI', ref)?.SR));
  }
  return hosts;
}

/** The SRs whose backend a call reaches. */
function srsOf(emu: Emulator, msg: MessageMeta, args: unknown[]): string[] {
  const { db } = emu;
  const srs: string[] = [];
  const ofVdi = (vdi: string) => srs.push(String(db.get('VDI', vdi)?.SR));
  const ofVbd = (vbd: string) => {
    const v = db.get('VBD', vbd);
    if (v && v.empty !== true) ofVdi(String(v.VDI));
  };
  // a constructor (VDI.create, PBD.create ...) names its SR in the record
  if (msg.tag === 'create' && args[0] !== null && typeof args[0] === 'object' && typeof (args[0] as Record<string, unknown>).SR === 'string') {
    srs.push(String((args[0] as Record<string, unknown>).SR));
  }
  for (const [cls, ref] of refArgs(msg, args)) {
    if (cls === 'SR') srs.push(ref);
    else if (cls === 'VDI') ofVdi(ref);
    else if (cls === 'PBD') srs.push(String(db.get('PBD', ref)?.SR));
    else if (cls === 'VBD' && msg.class === 'VBD') ofVbd(ref);
    else if (cls === 'VM' && msg.class === 'VM' && VM_STORAGE_OPS.has(msg.name)) for (const b of (db.get('VM', ref)?.VBDs as string[]) ?? []) ofVbd(b);
  }
  return srs;
}

/** Field accessors and the like, which the master answers from its database. */
const ACCESSOR = /^(get_|set_|add_|remove_)/;

function storageOrForwarded(engine: FaultEngine, call: Call, args: unknown[]): void {
  const { emu, msg } = call;
  if (msg.tag !== 'custom' && msg.tag !== 'create' && msg.tag !== 'destroy') return;
  if (ACCESSOR.test(msg.name) && !msg.name.endsWith('_live')) return;
  const hostRules = engine.count.host > 0;
  const srRules = engine.count.sr > 0;
  if (hostRules && msg.tag === 'custom' && !DB_ONLY.test(msg.name) && !FOR_DEAD_HOSTS.has(msg.wire)) {
    // Message_forwarding.check_live: a call for a host that is not live
    for (const h of forwardedTo(emu, msg, args)) if (hostFault(engine, h, true)) throw new XapiError('HOST_OFFLINE', [h]);
  }
  if (srRules && ['SR', 'VDI', 'PBD', 'VBD', 'VM'].includes(msg.class)) {
    const srs = srsOf(emu, msg, args);
    for (const r of engine.rules.values()) {
      if (r.kind !== 'sr' || !srs.includes(r.ref)) continue;
      r.total++;
      r.fired++;
      const f = r.input.effect.sr_backend_failure!;
      // SM's XenError as xapi turns it into an API error (sm_exec.ml): SR_BACKEND_FAILURE_<code>
      throw new XapiError(`SR_BACKEND_FAILURE_${f.code}`, ['', f.reason, '']);
    }
  }
}

export const callFaultHooks: CallFaultHooks = {
  received(emu: Emulator, name: string, origin: CallOrigin): void {
    const engine = engineOf(emu);
    if (!engine || engine.count.host === 0) return;
    // a member whose master is down runs in emergency mode too
    const state = hostFault(engine, origin.host) ?? (origin.host !== emu.master && hostFault(engine, followedMaster(emu, origin.host)) === 'down' ? 'master_down' : undefined);
    if (state === undefined) return;
    // a host that is down answers nothing; a member cut off from its master runs in emergency
    // mode, refusing all but the emergency calls with its emergency-mode error
    if (state === 'down') {
      hostFault(engine, origin.host, true);
      throw new DropConnection();
    }
    const bare = name.startsWith('Async.') ? name.slice(6) : name;
    if (EMERGENCY_CALLS.has(bare)) return;
    if (state === 'isolated') hostFault(engine, origin.host, true);
    throw new XapiError('HOST_STILL_BOOTING', []);
  },
  call(call: Call, args: unknown[]): CallFault | null {
    const engine = engineOf(call.emu);
    if (!engine || engine.rules.size === 0) return null;
    const fault = engine.count.method > 0 ? methodFault(engine, call, args) : null;
    if (fault?.drop) return fault;
    const tag = call.msg.tag;
    if (engine.count.host + engine.count.sr === 0 || (tag !== 'custom' && tag !== 'create' && tag !== 'destroy')) return fault;
    // the liveness and storage checks run where the implementation would meet them: inside the task
    const check = async () => storageOrForwarded(engine, call, args);
    return { before: fault?.before ? async () => { await check(); await fault.before!(); } : check, after: fault?.after };
  },
};
