// session: login, logout and the session getters (xapi_session.ml).
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { xapiDate } from '../clock.js';
import { permissionsOfRole, markLocalSession } from '../auth/access.js';
import { subjectSid } from '../auth/users.js';
import type { Emulator } from '../emulator.js';
import { wakeSessionWaiters } from './event.js';

/** xapi keeps at most this many sessions per originator and per user name, dropping the oldest. */
const MAX_SESSIONS = 500;

export interface Login { uname: string; superuser: boolean; role?: string }

/** Checks a user name and password (login_with_password, and HTTP Basic auth of the HTTP handlers). */
export async function authenticate(emu: Emulator, uname: string, pwd: string): Promise<Login> {
  if (uname === 'root' && pwd === emu.password) return { uname, superuser: true };
  const u = emu.users.find((x) => x.name === uname && x.password === pwd);
  if (u) return { uname, superuser: false, role: u.role };
  // xapi sleeps before answering a failed login, to slow down password guessing
  if (emu.authFailDelay > 0) await new Promise((r) => setTimeout(r, emu.authFailDelay * 1000));
  throw new XapiError('SESSION_AUTHENTICATION_FAILED', [uname, 'Authentication failure']);
}

function assertMaster(call: Call): void {
  if (call.host !== call.emu.master) {
    throw new XapiError('HOST_IS_SLAVE', [call.emu.db.get('host', call.emu.master)!.address as string]);
  }
}

export function createSession(emu: Emulator, host: string, login: Login, originator: string, opts: { pool?: boolean; local?: boolean } = {}): string {
  const ref = emu.ids.ref();
  let subject = 'OpaqueRef:NULL';
  let sid = '';
  if (!login.superuser) {
    sid = subjectSid(login.uname);
    subject = [...emu.db.table('subject')].find(([, r]) => r.rec.subject_identifier === sid)?.[0] ?? subject;
  }
  const now = xapiDate(emu.clock.now());
  emu.db.create('session', ref, {
    uuid: emu.ids.uuid(),
    this_host: host,
    this_user: 'OpaqueRef:NULL',
    last_active: now,
    validation_time: now,
    pool: opts.pool ?? false,
    is_local_superuser: login.superuser,
    subject,
    auth_user_sid: sid,
    auth_user_name: login.uname,
    rbac_permissions: login.superuser ? [] : permissionsOfRole(login.role!),
    parent: 'OpaqueRef:NULL',
    originator,
  });
  if (opts.local) markLocalSession(emu, ref, true);
  trimSessions(emu, (r) => r.originator === originator && originator !== '');
  trimSessions(emu, (r) => r.auth_user_name === login.uname);
  return ref;
}

function trimSessions(emu: Emulator, pred: (r: Record<string, unknown>) => boolean): void {
  const mine = [...emu.db.table('session').values()].filter((row) => pred(row.rec));
  if (mine.length <= MAX_SESSIONS) return;
  mine.sort((a, b) => a.created - b.created);
  for (const row of mine.slice(0, mine.length - MAX_SESSIONS)) destroySession(emu, row.ref);
}

export function destroySession(emu: Emulator, ref: string): void {
  emu.db.destroy('session', ref);
  markLocalSession(emu, ref, false);
  wakeSessionWaiters(emu, ref);
}

registerProvider('session', {
  async login_with_password(call, uname: string, pwd: string, _version: string, originator: string) {
    assertMaster(call);
    const login = await authenticate(call.emu, uname, pwd);
    return createSession(call.emu, call.host, login, originator);
  },
  // Emergency-mode login, valid on the host that received it only.
  async slave_local_login_with_password(call, uname: string, pwd: string) {
    const login = await authenticate(call.emu, uname, pwd);
    return createSession(call.emu, call.host, login, '', { local: true });
  },
  logout(call) {
    destroySession(call.emu, call.session);
  },
  local_logout(call) {
    destroySession(call.emu, call.session);
  },
  get_all_subject_identifiers(call) {
    return [...call.emu.db.table('subject').values()].map((r) => r.rec.subject_identifier as string);
  },
  logout_subject_identifier(call, sid: string) {
    for (const row of [...call.emu.db.table('session').values()]) {
      if (row.rec.auth_user_sid === sid && row.ref !== call.session) destroySession(call.emu, row.ref);
    }
  },
  change_password(call, oldPwd: string, newPwd: string) {
    const s = call.emu.db.get('session', call.session)!;
    if (!s.is_local_superuser) throw new XapiError('USER_IS_NOT_LOCAL_SUPERUSER', [s.auth_user_name as string]);
    if (oldPwd !== call.emu.password) throw new XapiError('CHANGE_PASSWORD_REJECTED', ['Authentication failure']);
    if (newPwd === '') throw new XapiError('CHANGE_PASSWORD_REJECTED', ['The new password cannot be empty']);
    call.emu.setPassword(newPwd);
  },
});
