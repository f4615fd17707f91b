// The emulator's control calls into the simulated guest of a running VM, and the datapath
// introspection (none of them is XAPI: they stand for what happens inside a guest and in dom0):
//
//   POST /xapi-emu/guest/disk?session_id=&vm=<ref|uuid>&device=<userdevice|device>&offset=N   body: bytes to write
//   POST /xapi-emu/guest/disk?…&op=flush | op=discard&offset=N&length=M                       → JSON {status …}
//   GET  /xapi-emu/guest/disk?…&offset=N&length=M                                               → the bytes
//   POST /xapi-emu/guest/pv-drivers?session_id=&vm=<ref|uuid>     the guest loads its PV drivers
//   GET  /xapi-emu/introspect?session_id=[&host=<ref|uuid>]        tapdisks, qemu-dm, blkif rings
//
// Guest I/O takes whichever path is live for the disk: qemu-dm's emulated IDE before PV drivers,
// blkfront → blkif ring → tapdisk after. Credentials and the task are xapi's HTTP ones
// (server/http/auth.ts). Roles: guest I/O and driver loading reach into a VM's disks as
// /import_raw_vdi and /export_raw_vdi do, so they take the same roles (pool-admin, pool-operator,
// vm-power-admin, vm-admin); introspection shows dom0's internals, as /system-status does, so it
// takes pool-admin or pool-operator.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpAction } from '../../schema/index.js';
import type { HttpPluginContext } from '../app.js';
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { linuxDevice, syncVm, toXapiFromXenops, xenopsOf } from '../api/xenops-sync.js';
import { GuestIoError, guestDiscard, guestFlush, guestRead, guestWrite, introspect, loadPvDrivers, statusName, withGuestDisk } from '../xenopsd/guest.js';
import { HttpError, okHeaders, runHttpHandler, type HttpCall, type HttpOutcome } from './auth.js';

const VM_ROLES = ['pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin'];
const action = (name: string, method: string, uri: string, roles: string[]): HttpAction => ({
  name, method, uri, in_sdk: false, query_args: [], roles, sub_actions: {}, rbac_checked: true,
});
export const GUEST_DISK_GET = action('get_xapi_emu_guest_disk', 'GET', '/xapi-emu/guest/disk', VM_ROLES);
export const GUEST_DISK_POST = action('post_xapi_emu_guest_disk', 'POST', '/xapi-emu/guest/disk', VM_ROLES);
export const GUEST_PV_DRIVERS = action('post_xapi_emu_guest_pv_drivers', 'POST', '/xapi-emu/guest/pv-drivers', VM_ROLES);
export const INTROSPECT = action('get_xapi_emu_introspect', 'GET', '/xapi-emu/introspect', ['pool-admin', 'pool-operator']);

const bad = (msg: string) => new HttpError(400, new XapiError('INTERNAL_ERROR', [msg]));

function refOf(emu: Emulator, cls: string, given: string | undefined): string {
  if (given === undefined) throw bad(`Missing ${cls === 'VM' ? 'vm' : cls} query parameter`);
  if (emu.db.has(cls, given)) return given;
  const ref = emu.db.refByUuid(cls, given);
  if (ref === undefined) throw new HttpError(404, new XapiError('UUID_INVALID', [cls, given]));
  return ref;
}

/** The running VM a call names, on the host it runs on. */
function runningVm(call: HttpCall): { vm: string; uuid: string; host: string } {
  const { emu } = call;
  const vm = refOf(emu, 'VM', call.params.get('vm'));
  const rec = emu.db.get('VM', vm)!;
  const ps = String(rec.power_state);
  if (ps !== 'Running') throw new XapiError('VM_BAD_POWER_STATE', [vm, 'running', ps.toLowerCase()]);
  return { vm, uuid: String(rec.uuid), host: String(rec.resident_on) };
}

/** `device`: a VBD's userdevice ("0") or device ("hda", "xvda") → xenopsd's device id */
function deviceOf(call: HttpCall, vm: string): string {
  const { emu } = call;
  const given = call.params.get('device');
  if (given === undefined) throw bad('Missing device query parameter');
  const rec = emu.db.get('VM', vm)!;
  for (const b of rec.VBDs as string[]) {
    const vbd = emu.db.get('VBD', b);
    if (!vbd) continue;
    const dev = linuxDevice(rec, vbd);
    if (String(vbd.userdevice) === given || String(vbd.device) === given || dev === given) return dev;
  }
  throw new HttpError(404, new XapiError('INTERNAL_ERROR', [`VM ${vm} has no disk ${given}`]));
}

function intParam(call: HttpCall, name: string, required: boolean): number {
  const v = call.params.get(name);
  if (v === undefined) {
    if (required) throw bad(`Missing ${name} query parameter`);
    return 0;
  }
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw bad(`${name} is not a non-negative integer: ${v}`);
  return Number(v);
}

/** The whole body; a client gone before its end fails the call (nothing is written). */
async function readBody(call: HttpCall): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of call.req.raw) chunks.push(c as Buffer);
  } catch {
    throw new XapiError('INTERNAL_ERROR', ['the request body was cut short']);
  }
  if (!call.req.raw.complete) throw new XapiError('INTERNAL_ERROR', ['the request body was cut short']);
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

function sendJson(call: HttpCall, value: unknown): HttpOutcome {
  const body = JSON.stringify(value);
  call.res.writeHead(200, okHeaders(call.task, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }));
  call.res.end(body);
}

/** xenopsd's errors as XenAPI ones; the guest's I/O errors as INTERNAL_ERROR with the blkif status */
function apiError(e: unknown, vm: string): unknown {
  if (e instanceof GuestIoError) return new XapiError('INTERNAL_ERROR', [e.message]);
  return toXapiFromXenops(e, vm);
}

async function guestDisk(call: HttpCall, method: 'GET' | 'POST'): Promise<HttpOutcome> {
  const { vm, uuid, host } = runningVm(call);
  const dev = deviceOf(call, vm);
  const x = xenopsOf(call.emu, host);
  const op = call.params.get('op') ?? (method === 'GET' ? 'read' : 'write');
  const offset = intParam(call, 'offset', op === 'read' || op === 'write' || op === 'discard');
  const data = method === 'POST' && op === 'write' ? await readBody(call) : null;
  try {
    return await withGuestDisk(x, uuid, dev, async (g) => {
      const size = g.tapdisk.virtualSize;
      const base = { vm, device: dev, path: g.path };
      if (method === 'GET') {
        if (op !== 'read') throw bad(`unknown op ${op}`);
        const length = intParam(call, 'length', true);
        if (offset + length > size) throw bad(`offset + length beyond the disk (${size} bytes)`);
        const b = await guestRead(g, offset, length);
        call.res.writeHead(200, okHeaders(call.task, { 'content-type': 'application/octet-stream', 'content-length': b.length, 'x-xapi-emu-datapath': g.path }));
        call.res.end(b);
        return;
      }
      switch (op) {
        case 'write': {
          if (offset + data!.length > size) throw bad(`offset + length beyond the disk (${size} bytes)`);
          await guestWrite(g, offset, data!);
          return sendJson(call, { ...base, op, offset, bytes: data!.length, status: 'OKAY' });
        }
        case 'flush':
          return sendJson(call, { ...base, op, status: statusName(await guestFlush(g)) });
        case 'discard': {
          const length = intParam(call, 'length', true);
          if (offset + length > size) throw bad(`offset + length beyond the disk (${size} bytes)`);
          return sendJson(call, { ...base, op, offset, length, status: statusName(await guestDiscard(g, offset, length)) });
        }
        default:
          throw bad(`unknown op ${op}`);
      }
    });
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw apiError(e, vm);
  }
}

async function pvDrivers(call: HttpCall): Promise<HttpOutcome> {
  const { vm, uuid, host } = runningVm(call);
  try {
    await loadPvDrivers(xenopsOf(call.emu, host), uuid);
  } catch (e) {
    throw apiError(e, vm);
  }
  // the guest agent's report reaches the database before the answer
  syncVm(call.emu, host, uuid);
  call.emu.db.flush();
  const rec = call.emu.db.get('VM', vm)!;
  return sendJson(call, { vm, pv_drivers: true, guest_metrics: rec.guest_metrics });
}

async function introspection(call: HttpCall): Promise<HttpOutcome> {
  const given = call.params.get('host');
  const host = given === undefined ? call.host : refOf(call.emu, 'host', given);
  return sendJson(call, introspect(xenopsOf(call.emu, host)));
}

export function guestPlugin(app: FastifyInstance, ctx: HttpPluginContext): void {
  // bodies are bytes for the guest's disk, read by the handler
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));
  const run = (spec: { action: HttpAction; label: string }, fn: (call: HttpCall) => Promise<HttpOutcome>) =>
    (req: FastifyRequest, reply: FastifyReply) => runHttpHandler(ctx, req, reply, spec, fn);
  app.get('/xapi-emu/guest/disk', { exposeHeadRoute: false }, run({ action: GUEST_DISK_GET, label: 'Guest disk read' }, (c) => guestDisk(c, 'GET')));
  app.post('/xapi-emu/guest/disk', run({ action: GUEST_DISK_POST, label: 'Guest disk I/O' }, (c) => guestDisk(c, 'POST')));
  app.post('/xapi-emu/guest/pv-drivers', run({ action: GUEST_PV_DRIVERS, label: 'Guest PV drivers' }, pvDrivers));
  app.get('/xapi-emu/introspect', { exposeHeadRoute: false }, run({ action: INTROSPECT, label: 'Datapath introspection' }, introspection));
}
