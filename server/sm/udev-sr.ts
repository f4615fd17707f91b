// The udev SR type (SM's udevSR): "DVD drives" and "Removable storage", whose VDIs are devices
// hot-plugged into the host (device_config:location, e.g. /dev/xapi/cd). An emulated host has no
// such device, so scans find nothing; VDI.introduce still makes a record, as udevSR does for a
// device that has gone.
import { registerDriver, smError, unimplemented, type DiskInfo, type SrCtx, type SrDriver } from './driver.js';

function requireLocation(ctx: SrCtx): void {
  if (!ctx.dconf.location) throw smError('ConfigLocationMissing');
}

const EMPTY = { physical_size: 0, physical_utilisation: 0, virtual_allocation: 0 };

function deviceInfo(uuid: string, location: string): DiskInfo {
  return {
    uuid, location, name_label: location, name_description: '', virtual_size: 0, physical_utilisation: 0,
    read_only: false, managed: true, hidden: false, parent: null, sm_config: {},
  };
}

const udevSr: SrDriver = {
  types: ['udev'],
  vhdBased: false,
  async create(ctx) {
    requireLocation(ctx);
  },
  async delete() {},
  async attach(ctx) {
    requireLocation(ctx);
  },
  async detach() {},
  async probe() {
    throw unimplemented();
  },
  async scan(ctx) {
    requireLocation(ctx);
    return { disks: [], stat: EMPTY };
  },
  async update(ctx) {
    requireLocation(ctx);
    return EMPTY;
  },
  async vdiCreate() {
    throw unimplemented();
  },
  async vdiDelete() {
    throw unimplemented();
  },
  async vdiSnapshot() {
    throw unimplemented();
  },
  async vdiResize() {
    throw unimplemented();
  },
  async vdiIntroduce(_ctx, { uuid, location }) {
    return deviceInfo(uuid, location);
  },
  async vdiStat(_ctx, vdi) {
    return { ...deviceInfo(String(vdi.uuid), String(vdi.location)), name_label: String(vdi.name_label) };
  },
  vdiPath() {
    return null;
  },
  async openVdi() {
    throw smError('VDIUnavailable');
  },
};

registerDriver(udevSr);
export default udevSr;
