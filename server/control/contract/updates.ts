// Updates the hosts' yum repositories offer (updater.py check_update): a fresh host has none;
// publish some to exercise a client's patches view, and its update action.
import { z } from 'zod';
import { route } from './route.js';

export const pendingPackage = z.object({
  name: z.string().min(1).regex(/^[A-Za-z0-9._+-]+$/, 'an RPM name'),
  version: z.string().min(1),
  release: z.string().min(1),
  description: z.string().default(''),
  changelog: z.object({ date: z.string(), author: z.string(), description: z.string() }).nullable().default(null)
    .describe("the newest changelog entry (date as yum gives it, e.g. '1700000000')"),
  url: z.string().default(''),
  size: z.number().int().min(0).default(0).describe('bytes'),
  license: z.string().default('GPLv2'),
});

const hostUpdates = z.object({ host: z.string().describe('host uuid'), name_label: z.string(), packages: z.array(pendingPackage) });
const state = z.object({ hosts: z.array(hostUpdates) });
const hosts = z.array(z.string().min(1)).optional().describe('hosts by ref, uuid or name label (default: every host)');

export const updates = {
  get: route({ method: 'GET', path: '/updates', summary: 'The updates each host is offered', input: z.object({}), output: state }),
  publish: route({
    method: 'POST',
    path: '/updates',
    summary: 'Offers packages to hosts (a package of the same name replaces the one offered before)',
    input: z.object({ hosts, packages: z.array(pendingPackage).min(1) }).strict(),
    output: state,
  }),
  withdraw: route({
    method: 'DELETE',
    path: '/updates',
    summary: 'Withdraws offered packages (all of them without names)',
    input: z.object({ hosts, names: z.array(z.string().min(1)).optional() }).strict(),
    output: state,
  }),
};
