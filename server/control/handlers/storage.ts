// The storage fabric's routes: declarations are kept by server/sm/fabric.
import type { z } from 'zod';
import type { AreaHandlers } from './index.js';
import { ControlError } from '../errors.js';
import type { storageServerInput } from '../contract/storage.js';
import { declareServer, fabricState, removeServer, setFcLuns } from '../../sm/fabric/index.js';

export const storageHandlers: AreaHandlers<'storage'> = {
  get: ({ emu }) => fabricState(emu),
  putServer: ({ emu }, input: z.output<typeof storageServerInput>) => declareServer(emu, input),
  deleteServer: ({ emu }, { address }) => {
    if (!removeServer(emu, address)) throw new ControlError(404, 'NOT_FOUND', `no storage server ${address} declared`, [address]);
    return { removed: address };
  },
  setFcLuns: ({ emu }, { luns }) => {
    setFcLuns(emu, luns);
    return fabricState(emu);
  },
};
