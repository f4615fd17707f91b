// The dummy SR type (SM's DummySR): no storage at all. VDIs exist only as records: create gives
// a VDI whose utilisation is its size, snapshots and clones are empty VDIs of size 0, as DummySR
// reports them. No bytes can be read or written.
import { randomUUID } from 'node:crypto';
import { registerDriver, smError, type DiskInfo, type SrDriver } from './driver.js';
import { srListXml } from './file-sr.js';

function info(uuid: string, size: number, extra: Partial<DiskInfo> = {}): DiskInfo {
  return {
    uuid, location: uuid, name_label: '', name_description: '', virtual_size: size, physical_utilisation: size,
    read_only: false, managed: true, hidden: false, parent: null, sm_config: {}, ...extra,
  };
}

const dummySr: SrDriver = {
  types: ['dummy'],
  vhdBased: false,
  async create() {},
  async delete() {},
  async attach() {},
  async detach() {},
  async probe() {
    return srListXml([{ uuid: randomUUID(), size: 1024 }]);
  },
  async scan(ctx) {
    // the list of VDIs comes from the database: DummySR has no state
    const disks: DiskInfo[] = [];
    for (const v of ctx.rec.VDIs as string[]) {
      const r = ctx.emu.db.get('VDI', v);
      if (r) disks.push(info(String(r.uuid), Number(r.virtual_size), { location: String(r.location), physical_utilisation: Number(r.physical_utilisation), read_only: Boolean(r.read_only), managed: Boolean(r.managed), name_label: String(r.name_label), name_description: String(r.name_description) }));
    }
    return { disks, stat: { physical_size: 2_000_000_000_000, physical_utilisation: 0, virtual_allocation: 0 } };
  },
  async update() {
    return { physical_size: 2_000_000_000_000, physical_utilisation: 0, virtual_allocation: 0 };
  },
  async vdiCreate(ctx, { uuid, size }) {
    for (const v of ctx.rec.VDIs as string[]) if (ctx.emu.db.get('VDI', v)?.uuid === uuid) throw smError('VDIExists');
    return info(uuid, size, { sm_config: { samplekey: 'This is a dummy SR VDI' } });
  },
  async vdiDelete() {},
  async vdiSnapshot(_ctx, vdi, { clone }, newUuid) {
    const uuid = newUuid();
    const result = info(uuid, 0, { read_only: !clone });
    return { result, base: null, source: info(String(vdi.uuid), Number(vdi.virtual_size), { location: String(vdi.location) }) };
  },
  async vdiResize(_ctx, vdi, size) {
    return info(String(vdi.uuid), size, { location: String(vdi.location) });
  },
  async vdiIntroduce(ctx, { uuid, location }) {
    for (const v of ctx.rec.VDIs as string[]) if (ctx.emu.db.get('VDI', v)?.uuid === uuid) throw smError('VDIExists');
    return info(uuid, 0, { location });
  },
  async vdiStat(_ctx, vdi) {
    return info(String(vdi.uuid), Number(vdi.virtual_size), { location: String(vdi.location), physical_utilisation: Number(vdi.physical_utilisation), read_only: Boolean(vdi.read_only) });
  },
  vdiPath() {
    return null;
  },
  async openVdi() {
    throw smError('VDIUnavailable');
  },
};

registerDriver(dummySr);
export default dummySr;
