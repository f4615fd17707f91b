// What an SR type can do, from its SM record (xapi's Xapi_sr_operations.features_of_sr: the SM
// object of that type, its `features` map). An SR type without an SM record has no features.
import type { Emulator } from '../emulator.js';

/** Smint.Feature capability names, as SM.features keys. */
export type Feature =
  | 'SR_PROBE' | 'SR_UPDATE' | 'SR_SUPPORTS_LOCAL_CACHING' | 'SR_METADATA' | 'SR_TRIM' | 'SR_CACHING' | 'SR_STATS'
  | 'VDI_CREATE' | 'VDI_DELETE' | 'VDI_ATTACH' | 'VDI_DETACH' | 'VDI_MIRROR' | 'VDI_RESIZE' | 'VDI_RESIZE_ONLINE'
  | 'VDI_CLONE' | 'VDI_SNAPSHOT' | 'VDI_ACTIVATE' | 'VDI_DEACTIVATE' | 'VDI_UPDATE' | 'VDI_INTRODUCE'
  | 'VDI_GENERATE_CONFIG' | 'VDI_RESET_ON_BOOT' | 'VDI_CONFIG_CBT' | 'VDI_REVERT' | 'THIN_PROVISIONING'
  | 'VDI_READ_CACHING' | 'LARGE_VDI';

/** The SM record of an SR type (SM.type is lower case, as xapi registers drivers). */
export function smOf(emu: Emulator, type: string): { ref: string; rec: Record<string, unknown> } | undefined {
  const t = type.toLowerCase();
  for (const [ref, row] of emu.db.table('SM')) if (row.rec.type === t) return { ref, rec: row.rec };
  return undefined;
}

/** The features of an SR type: capability -> version. */
export function featuresOf(emu: Emulator, type: string): Record<string, number> {
  return (smOf(emu, type)?.rec.features ?? {}) as Record<string, number>;
}

/** Smint.Feature.has_capability. */
export function hasCapability(emu: Emulator, type: string, f: Feature): boolean {
  return Object.prototype.hasOwnProperty.call(featuresOf(emu, type), f);
}
