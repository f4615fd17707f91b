// Who may use the control API: pool-admin (and root), as the HTTP handlers check credentials:
// a session (session_id cookie or query parameter) or HTTP Basic. Basic credentials are checked
// without making a session, so that control calls leave no trace in the pool's database.
import type { FastifyRequest } from 'fastify';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { checkSession } from '../auth/access.js';
import { authenticate } from '../api/session.js';
import { checkHttpRbac, paramsOf } from '../http/auth.js';
import type { HttpAction } from '../../schema/index.js';

export const CONTROL_ROLES = ['pool-admin'];

/** The control API as an http_action of the emulator's own, for RBAC's error. */
export const CONTROL_ACTION: HttpAction = {
  name: 'xapi_emu_control', method: 'ANY', uri: '/xapi-emu/', in_sdk: false, query_args: [], roles: CONTROL_ROLES, sub_actions: {}, rbac_checked: true,
};

/** 401: no or bad credentials; 403: not a pool-admin. */
export class ControlAuthError extends Error {
  constructor(readonly status: 401 | 403, readonly error: XapiError) {
    super(error.message);
  }
}

/** Checks the request's credentials; returns the user name. */
export async function authorizeControl(emu: Emulator, req: FastifyRequest): Promise<string> {
  const given = paramsOf(req).auth('session_id');
  if (given !== undefined) {
    let session: string;
    try {
      session = checkSession(emu, given);
    } catch (e) {
      throw new ControlAuthError(401, e as XapiError);
    }
    try {
      checkHttpRbac(emu, session, CONTROL_ACTION);
    } catch (e) {
      throw new ControlAuthError(403, e as XapiError);
    }
    return String(emu.db.get('session', session)?.auth_user_name ?? 'root');
  }
  const authz = req.headers.authorization;
  if (!authz || !/^basic /i.test(authz)) throw new ControlAuthError(401, new XapiError('SESSION_AUTHENTICATION_FAILED', ['', 'No credentials']));
  const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  const uname = i < 0 ? decoded : decoded.slice(0, i);
  const pwd = i < 0 ? '' : decoded.slice(i + 1);
  let login;
  try {
    login = await authenticate(emu, uname, pwd);
  } catch (e) {
    throw new ControlAuthError(401, e as XapiError);
  }
  if (!login.superuser && !CONTROL_ROLES.includes(String(login.role))) {
    throw new ControlAuthError(403, new XapiError('RBAC_PERMISSION_DENIED', [
      `http/${CONTROL_ACTION.name}`, `No permission in user session. (Roles with this permission: ${CONTROL_ROLES.join(', ')})`,
    ]));
  }
  return uname;
}
