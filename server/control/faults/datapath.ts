// Datapath faults: a VDI whose disk goes bad. The rule gives the bytes its datapath may still move
// (guest I/O through tapdisk, /export_raw_vdi, /import_raw_vdi of it, all counted together); the
// request that would go past them fails, and so does every request after it: the guest's blkif
// gets BLKIF_RSP_ERROR, an export or import VDI_IO_ERROR ["Device I/O errors"].
import { allRules } from './index.js';

export function datapathFails(vdi: string, bytes: number): boolean {
  for (const r of allRules()) {
    if (r.kind !== 'vdi' || r.uuid !== vdi) continue;
    r.total++;
    if (!r.exhausted && bytes <= r.bytesLeft) {
      r.bytesLeft -= bytes;
      return false;
    }
    r.exhausted = true;
    r.bytesLeft = 0;
    r.fired++;
    return true;
  }
  return false;
}
