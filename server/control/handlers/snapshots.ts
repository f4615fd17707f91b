// The state snapshots' routes.
import type { AreaHandlers } from './index.js';
import { deleteSnapshot, listSnapshots, resetPool, restoreSnapshot, snapshotInfo, takeSnapshot } from '../snapshots/index.js';

export const snapshotsHandlers: AreaHandlers<'snapshots'> = {
  list: ({ emu }) => ({ snapshots: listSnapshots(emu) }),
  get: ({ emu }, input) => snapshotInfo(emu, input.name),
  take: ({ emu }, input) => takeSnapshot(emu, input.name, { replace: input.replace, wait: input.wait }),
  restore: ({ emu }, input) => restoreSnapshot(emu, input.name, { wait: input.wait }),
  delete: async ({ emu }, input) => {
    await deleteSnapshot(emu, input.name);
    return { name: input.name };
  },
  reset: ({ emu }, input) => resetPool(emu, { wait: input.wait }),
};
