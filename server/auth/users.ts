// Users who may log in: root (the local superuser) and extra users with one RBAC role each.
// On a real host extra users come from external authentication (AD/LDAP) as subjects with roles;
// here they are configured (--users) and get the same subject records.
import { z } from 'zod';
import { model } from '../../schema/index.js';
import type { Emulator } from '../emulator.js';

const roleNames = model.roles.filter((r) => !r.internal).map((r) => r.name) as [string, ...string[]];

export const userSpec = z.object({
  name: z.string().min(1).refine((n) => n !== 'root', 'root is the local superuser'),
  password: z.string(),
  role: z.enum(roleNames),
});
export type UserSpec = z.infer<typeof userSpec>;
export const userSpecs = z.array(userSpec);

/** The subject identifier given to a configured user (an AD-style SID, stable per name). */
export function subjectSid(name: string): string {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `S-1-5-21-${h}-${name.length}-1000`;
}

/** Keeps one subject record per configured user, with its role. */
export function ensureUsers(emu: Emulator): void {
  const roleRef = (name: string) => {
    for (const [ref, row] of emu.db.table('role')) if (row.rec.name_label === name) return ref;
    return undefined;
  };
  const wanted = new Map(emu.users.map((u) => [subjectSid(u.name), u]));
  for (const [ref, row] of emu.db.table('subject')) {
    const sid = row.rec.subject_identifier as string;
    if (sid.startsWith('S-1-5-21-') && (row.rec.other_config as Record<string, string>)['xapi-emu'] === 'true' && !wanted.has(sid)) {
      emu.db.destroy('subject', ref);
    }
  }
  for (const [sid, u] of wanted) {
    const roles = [roleRef(u.role)].filter((r): r is string => !!r);
    const existing = [...emu.db.table('subject')].find(([, row]) => row.rec.subject_identifier === sid);
    const other_config = { 'subject-name': u.name, 'subject-is-group': 'false', 'subject-account-disabled': 'false', 'xapi-emu': 'true' };
    if (existing) emu.db.update('subject', existing[0], { roles, other_config });
    else emu.db.create('subject', emu.ids.ref(), { uuid: emu.ids.uuid(), subject_identifier: sid, other_config, roles });
  }
}
