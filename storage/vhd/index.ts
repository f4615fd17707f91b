/**
 * xapi-emu's VHD library: blktap-compatible dynamic and differencing VHDs.
 * See vhd.ts (one file), chain.ts (chains, coalesce, reparent),
 * stream-export.ts / stream-import.ts (HTTP raw/VHD transfers).
 */
export { VhdError, type VhdErrorCode } from './errors.js';
export {
  BLOCK_SIZE,
  MAX_CHAIN_SIZE,
  MAX_VHD_SIZE,
  MIN_VHD_SIZE,
  chsGeometry,
  roundVhdSize,
} from './format.js';
export { Vhd, type VhdCreateOptions, type VhdOpenOptions } from './vhd.js';
export { chainOf, coalesce, setParent, type CoalesceResult } from './chain.js';
export { exportRaw, exportVhd, type ExportStream, type ExportVhdOptions } from './stream-export.js';
export { importRaw, importVhd, type ImportOptions, type ImportResult, type ImportSource } from './stream-import.js';
