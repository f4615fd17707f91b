// Session validity and RBAC (xapi's session_check.ml and rbac.ml).
import { model, type MessageMeta } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { xapiDate } from '../clock.js';

/** last_active is refreshed at most this often (xapi's threshold_last_active) */
const LAST_ACTIVE_THRESHOLD_MS = 600_000;
const lastTouched = new WeakMap<object, number>();

/** Sessions made by session.slave_local_login*: valid on their own host only (xapi keeps them in
 * the host's local database, outside the pool's). */
const localSessions = new WeakMap<Emulator, Set<string>>();
export function markLocalSession(emu: Emulator, ref: string, local: boolean): void {
  let set = localSessions.get(emu);
  if (!set) localSessions.set(emu, (set = new Set()));
  if (local) set.add(ref);
  else set.delete(ref);
}

/** Returns the session ref, or throws SESSION_INVALID with the ref as given. `host` is the host
 * that received the call: on a pool member, a session that is neither a pool (slave_login) nor a
 * local session is HOST_IS_SLAVE [master address] (session_check.ml). */
export function checkSession(emu: Emulator, given: unknown, host?: string): string {
  const ref = typeof given === 'string' ? given : String(given);
  const rec = emu.db.get('session', ref);
  if (!rec) throw new XapiError('SESSION_INVALID', [ref]);
  if (host !== undefined) {
    const local = localSessions.get(emu)?.has(ref) ?? false;
    if (local && rec.this_host !== host) throw new XapiError('SESSION_INVALID', [ref]);
    if (!local && !rec.pool && host !== emu.master) {
      throw new XapiError('HOST_IS_SLAVE', [String(emu.db.get('host', emu.master)?.address ?? '')]);
    }
  }
  const now = emu.clock.now();
  if (now - (lastTouched.get(rec) ?? 0) > LAST_ACTIVE_THRESHOLD_MS) {
    lastTouched.set(rec, now);
    emu.db.update('session', ref, { last_active: xapiDate(now) });
  }
  return ref;
}

/** RBAC permission names are lower-cased wire names, with `/key:<key>` for guarded map keys. */
export function permissionOf(msg: MessageMeta, args: unknown[]): { permission: string; roles: string[] } {
  const action = msg.wire.toLowerCase();
  if (msg.map_keys_roles) {
    const i = msg.params.findIndex((p) => p.name === 'key');
    const key = i >= 0 ? args[i] : undefined;
    if (typeof key === 'string') {
      for (const [k, roles] of Object.entries(msg.map_keys_roles)) {
        const hit = k.endsWith('*') ? key.startsWith(k.slice(0, -1)) : key === k;
        if (hit) return { permission: `${action}/key:${k.toLowerCase()}`, roles };
      }
    }
  }
  return { permission: action, roles: msg.roles ?? ['pool-admin'] };
}

/** Permissions that name no message (Rbac_static, from the datamodel's extra permissions), with
 * their roles: `task.destroy/any` lets pool operators cancel or destroy other users' tasks. */
export const EXTRA_PERMISSIONS: Record<string, string[]> = { 'task.destroy/any': ['pool-admin', 'pool-operator'] };

/** Every permission of a role, as stored in session.rbac_permissions for a non-root session. */
const permissionsByRole = new Map<string, string[]>();
export function permissionsOfRole(role: string): string[] {
  let p = permissionsByRole.get(role);
  if (!p) {
    p = [];
    for (const c of model.classes) {
      for (const m of c.messages) {
        const action = m.wire.toLowerCase();
        if (m.roles?.includes(role)) p.push(action);
        for (const [k, roles] of Object.entries(m.map_keys_roles ?? {})) if (roles.includes(role)) p.push(`${action}/key:${k.toLowerCase()}`);
      }
    }
    for (const [perm, roles] of Object.entries(EXTRA_PERMISSIONS)) if (roles.includes(role)) p.push(perm);
    permissionsByRole.set(role, p);
  }
  return p;
}

const permissionSets = new WeakMap<object, Set<string>>();

export function checkRbac(emu: Emulator, sessionRef: string, msg: MessageMeta, args: unknown[]): void {
  const s = emu.db.get('session', sessionRef)!;
  if (s.is_local_superuser) return;
  const { permission, roles } = permissionOf(msg, args);
  let set = permissionSets.get(s);
  if (!set) permissionSets.set(s, (set = new Set(s.rbac_permissions as string[])));
  if (set.has(permission)) return;
  throw new XapiError('RBAC_PERMISSION_DENIED', [
    permission,
    `No permission in user session. (Roles with this permission: ${roles.join(', ')})`,
  ]);
}
