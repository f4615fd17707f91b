// The "XCP-ng Tools" SR's image, guest-tools.iso, as a host ships it in /opt/xensource/packages/iso:
// made at storage start-up when the SR's directory lacks it. The emulator has no tools to put in
// it: it is a small, valid ISO 9660 volume (labelled as the real one) holding a README, enough to
// be inserted in a VM's CD drive and read by anything that mounts it.
import { mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DiskInfo } from './driver.js';

export const TOOLS_ISO = 'guest-tools.iso';
const SECTOR = 2048;
const VOLUME_ID = 'XCP-NG_TOOLS';
const README = 'XCP-ng guest tools (simulated): the emulated hosts install no software in guests.\r\n';
/** a fixed date: the image is the same at every start */
const DATE = new Date(Date.UTC(2024, 9, 1, 0, 0, 0));

const both16 = (b: Buffer, off: number, v: number) => {
  b.writeUInt16LE(v, off);
  b.writeUInt16BE(v, off + 2);
};
const both32 = (b: Buffer, off: number, v: number) => {
  b.writeUInt32LE(v, off);
  b.writeUInt32BE(v, off + 4);
};
const text = (b: Buffer, off: number, len: number, s: string) => b.write(s.padEnd(len, ' ').slice(0, len), off, 'ascii');

/** a directory record (ECMA-119 9.1) */
function dirRecord(name: Buffer, extent: number, size: number, dir: boolean): Buffer {
  const len = 33 + name.length + (name.length % 2 === 0 ? 1 : 0);
  const r = Buffer.alloc(len);
  r[0] = len;
  both32(r, 2, extent);
  both32(r, 10, size);
  r[18] = DATE.getUTCFullYear() - 1900;
  r[19] = DATE.getUTCMonth() + 1;
  r[20] = DATE.getUTCDate();
  r[25] = dir ? 2 : 0;
  both16(r, 28, 1);
  r[32] = name.length;
  name.copy(r, 33);
  return r;
}

/** An ISO 9660 image: system area, primary descriptor, terminator, path tables, root, README. */
export function toolsIsoImage(): Buffer {
  const PVD = 16, TERM = 17, LPATH = 18, MPATH = 19, ROOT = 20, FILE = 21;
  const readme = Buffer.from(README, 'ascii');
  const sectors = FILE + Math.ceil(readme.length / SECTOR);
  const img = Buffer.alloc(sectors * SECTOR);
  const pvd = img.subarray(PVD * SECTOR, (PVD + 1) * SECTOR);
  pvd[0] = 1;
  pvd.write('CD001', 1, 'ascii');
  pvd[6] = 1;
  text(pvd, 8, 32, 'LINUX');
  text(pvd, 40, 32, VOLUME_ID);
  both32(pvd, 80, sectors);
  both16(pvd, 120, 1);
  both16(pvd, 124, 1);
  both16(pvd, 128, SECTOR);
  both32(pvd, 132, 10);
  pvd.writeUInt32LE(LPATH, 140);
  pvd.writeUInt32BE(MPATH, 148);
  dirRecord(Buffer.from([0]), ROOT, SECTOR, true).copy(pvd, 156);
  for (const [off, len] of [[190, 128], [318, 128], [446, 128], [574, 128], [702, 37], [739, 37], [776, 37]] as const) text(pvd, off, len, '');
  const stamp = DATE.toISOString().replace(/[-:T]/g, '').slice(0, 14) + '00';
  pvd.write(stamp, 813, 'ascii');
  pvd.write(stamp, 830, 'ascii');
  pvd.write('0000000000000000', 847, 'ascii');
  pvd.write(stamp, 864, 'ascii');
  pvd[881] = 1;
  const term = img.subarray(TERM * SECTOR);
  term[0] = 255;
  term.write('CD001', 1, 'ascii');
  term[6] = 1;
  // the one directory, the root: its own parent
  for (const [at, be] of [[LPATH, false], [MPATH, true]] as const) {
    const p = img.subarray(at * SECTOR);
    p[0] = 1;
    if (be) {
      p.writeUInt32BE(ROOT, 2);
      p.writeUInt16BE(1, 6);
    } else {
      p.writeUInt32LE(ROOT, 2);
      p.writeUInt16LE(1, 6);
    }
  }
  let off = ROOT * SECTOR;
  for (const r of [
    dirRecord(Buffer.from([0]), ROOT, SECTOR, true),
    dirRecord(Buffer.from([1]), ROOT, SECTOR, true),
    dirRecord(Buffer.from('README.TXT;1', 'ascii'), FILE, readme.length, false),
  ]) {
    r.copy(img, off);
    off += r.length;
  }
  readme.copy(img, FILE * SECTOR);
  return img;
}

/** Puts guest-tools.iso in the directory unless it is there; its size. */
export function ensureToolsIso(dir: string): number {
  const file = join(dir, TOOLS_ISO);
  const st = statSync(file, { throwIfNoEntry: false });
  if (st) return st.size;
  mkdirSync(dir, { recursive: true });
  const img = toolsIsoImage();
  // whole or not at all: a kill mid-write leaves no half image under the real name
  const tmp = `${file}.part`;
  writeFileSync(tmp, img);
  renameSync(tmp, file);
  return img.length;
}

/** The image as ISOSR's scan of the tools SR describes it (legacy mode: labelled by its kind). */
export function toolsIsoDisk(size: number): DiskInfo {
  return {
    uuid: '', location: TOOLS_ISO, name_label: TOOLS_ISO, name_description: '', virtual_size: size, physical_utilisation: size,
    read_only: true, managed: true, hidden: false, parent: null, sm_config: { 'xs-tools': 'true' }, type: 'user',
  };
}
