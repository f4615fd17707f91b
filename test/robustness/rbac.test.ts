// RBAC matrix on a sample (3 messages per class, every role): RBAC_PERMISSION_DENIED exactly when
// the datamodel does not give the message to the role, with the message's permission name.
import { expect, it } from 'vitest';
import { runRbac } from '../../robustness/rbac.js';

it('a sample of the RBAC matrix matches the datamodel', async () => {
  const r = await runRbac({ perClass: 3, seed: 11, timeoutMs: 10_000 });
  console.log(r.text);
  expect(r.calls).toBeGreaterThan(500);
  expect(r.mismatches).toEqual([]);
}, 90_000);
