// Storage migrations cut by a stop of the emulator (Storage_migrate.killall at xapi's start): the
// VDIs a migration makes carry sm_config base_mirror until it ends (vdi-migrate.ts), so those still
// marked when the emulator starts belong to a migration nobody runs any more. As killall stops each
// mirror (its base snapshot destroyed) and cancels its receive (the destination VDI destroyed),
// they are destroyed; one a VBD already uses (the VM was switched to it just before the stop) is
// the disk now, and only loses the mark, as receive_finalize would have done.
import type { Emulator } from '../emulator.js';
import { dispatch } from '../dispatch/dispatch.js';
import { smReady } from '../sm/index.js';
import { createSession, destroySession } from './session.js';
import { BASE_MIRROR, receiveFinalize } from './vdi-migrate.js';

const repairing = new WeakMap<Emulator, Promise<void>>();

const isMarked = (sm: unknown) => typeof sm === 'object' && sm !== null && BASE_MIRROR in sm;

export function repairCutMigrations(emu: Emulator): void {
  const marked = [...emu.db.table('VDI')].filter(([, row]) => isMarked(row.rec.sm_config)).map(([ref]) => ref);
  if (marked.length === 0) return;
  // (once the SRs are up: VDI.destroy is an SM call)
  const done = smReady(emu).then(async () => {
    const session = createSession(emu, emu.master, { uname: 'root', superuser: true }, 'migration recovery');
    try {
      for (const vdi of marked) {
        const rec = emu.db.get('VDI', vdi);
        if (!rec || !isMarked(rec.sm_config)) continue;
        if ((rec.VBDs as string[]).some((b) => emu.db.has('VBD', b))) receiveFinalize(emu, vdi);
        else await dispatch(emu, 'VDI.destroy', [session, vdi], { host: emu.master }).catch(() => undefined);
      }
    } finally {
      destroySession(emu, session);
      emu.db.flush();
    }
  });
  repairing.set(emu, done.catch(() => undefined));
}

/** Resolves once the migrations cut by the last stop have been cleaned up. */
export function cutMigrationsRepaired(emu: Emulator): Promise<void> {
  return repairing.get(emu) ?? Promise.resolve();
}
