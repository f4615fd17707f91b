// The storage layer (SM): SR drivers, the VHD GC, and what the API providers and HTTP handlers use.
//  - drivers: file-sr.ts (ext, file), iso-sr.ts, udev-sr.ts, dummy-sr.ts, behind driver.ts's SrDriver;
//  - sm.ts: SM calls with their database side (records, SR sizes), PBD choice, error mapping;
//  - gc.ts: garbage collection and coalescing (runSrGc, kickGc);
//  - I/O for the HTTP handlers: vdiPath, openVdi, withVdiFile, refreshVdi.
import { mkdirSync } from 'node:fs';
import type { Emulator } from '../emulator.js';
import { resetOperations } from '../api/operations.js';
import './file-sr.js';
import './iso-sr.js';
import './udev-sr.js';
import './dummy-sr.js';
import './nfs-sr.js';
import './smb-sr.js';
import './lvhd-sr.js';
import './local-fs-sr.js';
import { driverFor, withSrLock } from './driver.js';
import { reconcileSr } from './recovery.js';
import { smLog } from './smlog.js';
import { srBase, srPath } from './paths.js';
import { dbIntroduce, setReady, smSrAttach, srCtx, vdiByLocation } from './sm.js';
import { ensureToolsIso, toolsIsoDisk, TOOLS_ISO } from './tools-iso.js';
import { startSrGc } from './gc.js';

export { driverFor, registerDriver, smError, toXapiError, type SrDriver, type SrCtx, type DiskInfo, type VdiIo } from './driver.js';
export { vdiPath, openVdi, withVdiFile, refreshVdi, srCtx, choosePbd, smReady, afterStorageStartup, markVdiChanged } from './sm.js';
export { runSrGc, kickGc, gcPending, type GcResult } from './gc.js';
export { hasCapability, featuresOf } from './capabilities.js';
export { fileSrProblems } from './consistency.js';
export { srPath, srFile } from './paths.js';

/**
 * Brings storage up with the emulator: the SR mount points of attached PBDs (the default pool's
 * "Local storage" directories among them) are made as xapi re-plugs PBDs at start, each file SR
 * is reconciled with the database (recovery.ts), operations of tasks that did not survive a
 * restart are dropped and allowed_operations computed, and the GC's background pass starts. SM
 * calls wait for the attaches and reconciliations to finish.
 */
/** The tools SR holds the guest tools image, as a host's /opt/xensource/packages/iso does: there
 * before the first call is answered, as on a host fresh from its installation. */
function provideToolsIso(emu: Emulator): void {
  for (const [sr, row] of [...emu.db.table('SR')]) {
    if (row.rec.is_tools_sr !== true) continue;
    try {
      const size = ensureToolsIso(srPath(emu, String(row.rec.uuid)));
      if (!vdiByLocation(emu, sr, TOOLS_ISO)) dbIntroduce(emu, sr, toolsIsoDisk(size));
    } catch (e) {
      smLog(emu, `SR ${String(row.rec.uuid)}: no ${TOOLS_ISO}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

export function startSm(emu: Emulator): () => void {
  mkdirSync(srBase(emu), { recursive: true });
  provideToolsIso(emu);
  resetOperations(emu, ['SR', 'VDI']);
  setReady(emu, (async () => {
    const reconciled = new Set<string>();
    for (const [pbd, row] of [...emu.db.table('PBD')]) {
      if (row.rec.currently_attached !== true) continue;
      const sr = String(row.rec.SR);
      const rec = emu.db.get('SR', sr);
      const driver = driverFor(String(rec?.type ?? ''));
      if (!rec || !driver) continue;
      const ctx = srCtx(emu, sr, pbd);
      try {
        await smSrAttach(ctx, { startup: true });
      } catch {
        // as a PBD.plug failing at start: the PBD stays unplugged
        if (emu.db.has('PBD', pbd)) emu.db.update('PBD', pbd, { currently_attached: false });
        continue;
      }
      // once per SR, before any other SM call: operations cut by the last stop are resolved
      if (driver.vhdBased && !reconciled.has(sr)) {
        reconciled.add(sr);
        await withSrLock(emu, ctx.uuid, () => reconcileSr(ctx)).catch((e) => smLog(emu, `SR ${ctx.uuid}: reconciliation failed: ${e instanceof Error ? e.message : String(e)}`));
      }
    }
    resetOperations(emu, ['SR']);
    emu.db.flush();
  })());
  return startSrGc(emu);
}
