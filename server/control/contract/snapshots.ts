// State snapshots: save the whole pool under a name, restore it, list, delete, reset to the start.
import { z } from 'zod';
import { route } from './route.js';

/** A snapshot's name: letters, digits, '.', '_' and '-', not starting with a dot. */
export const snapshotName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'a snapshot name is 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit');

/** How long to wait for work in flight (tasks, xenopsd operations, storage GC) before giving up with BUSY. */
const wait = z.number().min(0).max(600).optional().describe('wall seconds to wait for work in flight to end (default 5); then 409 BUSY');

export const snapshotInfo = z.object({
  name: z.string(),
  created: z.string().describe('when it was taken (wall clock, ISO 8601)'),
  size: z.number().int().describe('bytes on disk: SR files and state'),
  objects: z.record(z.string(), z.number().int()).describe('objects by class'),
  vms: z.number().int().describe('VMs that are neither templates, snapshots nor control domains'),
  domains: z.number().int().describe('running domains on the hosts'),
});

export const restoreResult = z.object({
  name: z.string(),
  objects_changed: z.number().int().describe('objects created, replaced or destroyed'),
  sessions_ended: z.number().int(),
  files_copied: z.number().int().describe('SR files copied back (the others had not changed)'),
  files_removed: z.number().int(),
  domains: z.number().int().describe('running domains after the restore'),
  ms: z.number().describe('wall milliseconds the restore took'),
});

export const snapshots = {
  list: route({
    method: 'GET',
    path: '/snapshots',
    summary: 'Lists the state snapshots',
    input: z.object({}),
    output: z.object({ snapshots: z.array(snapshotInfo) }),
  }),
  get: route({
    method: 'GET',
    path: '/snapshots/:name',
    summary: 'Reads a state snapshot',
    input: z.object({ name: snapshotName }),
    output: snapshotInfo,
  }),
  take: route({
    method: 'POST',
    path: '/snapshots',
    summary: 'Saves the whole pool (database, SR files, running domains) under a name; waits for work in flight to end',
    input: z.object({ name: snapshotName, replace: z.boolean().optional().describe('replace a snapshot of that name'), wait }).strict(),
    output: snapshotInfo,
  }),
  restore: route({
    method: 'POST',
    path: '/snapshots/:name/restore',
    summary: 'Puts the pool back as the snapshot has it; every session ends (SESSION_INVALID)',
    input: z.object({ name: snapshotName, wait }).strict(),
    output: restoreResult,
  }),
  delete: route({
    method: 'DELETE',
    path: '/snapshots/:name',
    summary: 'Deletes a state snapshot',
    input: z.object({ name: snapshotName }).strict(),
    output: z.object({ name: z.string() }),
  }),
  reset: route({
    method: 'POST',
    path: '/reset',
    summary: 'Puts the pool back as it was at start (or when its fixture was loaded)',
    input: z.object({ wait }).strict(),
    output: restoreResult,
  }),
};
