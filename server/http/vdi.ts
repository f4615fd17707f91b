// What /import_raw_vdi and /export_raw_vdi share (xapi's importexport.ml): the VDI and base named
// by ref or uuid, the disk format, the host that can see the VDI's SR (else a 302 there), the
// checks xapi's dom0 VBD plug makes before a transfer, and progress reporting into the task.
// VDIs are found in the database only; their files come from the SM layer, never from a request.
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { normaliseAddress } from '../transport/rpc-plugin.js';
import { HttpError, type HttpCall } from './auth.js';

export type DiskFormat = 'raw' | 'vhd' | 'tar' | 'qcow2';

/** Importexport.Format: content types and file name extensions. */
export const CONTENT_TYPE: Record<DiskFormat, string> = {
  raw: 'application/octet-stream',
  vhd: 'application/vhd',
  tar: 'application/x-tar',
  qcow2: 'application/x-qemu-disk',
};

/** Importexport.Format.of_req: `format` (default raw), case-insensitive; an unknown one is 404 with
 * INTERNAL_ERROR ["Unknown format x"] in the task. */
export function formatOf(call: HttpCall): DiskFormat {
  const x = call.params.get('format');
  if (x === undefined) return 'raw';
  const f = x.toLowerCase();
  if (f === 'raw' || f === 'vhd' || f === 'tar' || f === 'qcow2') return f;
  throw new HttpError(404, new XapiError('INTERNAL_ERROR', [`Unknown format ${x}`]));
}

/** A VDI named by ref or uuid (Importexport.vdi_of_req / base_vdi_of_req). */
export function vdiOf(emu: Emulator, given: string): string {
  if (emu.db.has('VDI', given)) return given;
  const ref = emu.db.refByUuid('VDI', given);
  if (ref === undefined) throw new XapiError('UUID_INVALID', ['VDI', given]);
  return ref;
}

const isLive = (emu: Emulator, host: string): boolean => {
  const m = emu.db.get('host', host)?.metrics as string | undefined;
  return m !== undefined && emu.db.get('host_metrics', m)?.live === true;
};

/** Hosts with a plugged PBD of the SR (Xapi_vm_helpers.assert_can_see_specified_SRs). */
function hostsSeeing(emu: Emulator, sr: string): string[] {
  const out: string[] = [];
  for (const pbd of (emu.db.get('SR', sr)?.PBDs as string[] | undefined) ?? []) {
    const p = emu.db.get('PBD', pbd);
    if (p?.currently_attached === true) out.push(String(p.host));
  }
  return out;
}

/**
 * Importexport.check_sr_availability, then find_host_for_sr: 'local' when the receiving host sees
 * the SR, else the address of a live host that does (the caller answers 302 there), else
 * NO_HOSTS_AVAILABLE. When that host answers on the very address that received the request (one
 * listener for the whole pool), it is served here: a redirection to ourselves would loop.
 */
export function srLocation(call: HttpCall, sr: string): 'local' | { address: string } {
  const { emu } = call;
  const seeing = hostsSeeing(emu, sr);
  if (seeing.includes(call.host)) return 'local';
  const live = seeing.filter((h) => isLive(emu, h));
  if (!live.length) throw new XapiError('NO_HOSTS_AVAILABLE', []);
  // xapi picks one at random; the first one here, for determinism
  const address = String(emu.db.get('host', live[0])?.address ?? '');
  if (address === normaliseAddress(call.req.raw.socket.localAddress)) return 'local';
  return { address };
}

/** Importexport.return_302_redirect: the same path and query on the host's address. xapi always
 * says https on the default port; here the scheme and port are those of the receiving listener,
 * so that emulated hosts on other loopback addresses are reachable. */
export function redirect(call: HttpCall, address: string): void {
  const sock = call.req.raw.socket as { localPort?: number; encrypted?: boolean };
  const scheme = sock.encrypted ? 'https' : 'http';
  const port = sock.localPort;
  const hostPart = address.includes(':') ? `[${address}]` : address;
  const defaultPort = scheme === 'https' ? 443 : 80;
  const url = call.req.raw.url ?? '/';
  const location = `${scheme}://${hostPart}${port === undefined || port === defaultPort ? '' : `:${port}`}${url}`;
  call.res.writeHead(302, 'Found', { connection: 'close', 'cache-control': 'no-cache, no-store', location, 'content-length': '0' });
  call.res.end();
}

/**
 * What xapi's dom0 VBD plug (Sm_fs_ops.with_block_attached_device) refuses before a transfer
 * (Xapi_vbd_helpers.valid_operations for a control domain: no sharing checks): an unmanaged VDI,
 * an operation in progress other than copy/mirror, a read-only VDI for writing.
 */
export function assertAttachable(emu: Emulator, vdi: string, write: boolean): void {
  const rec = emu.db.get('VDI', vdi);
  if (!rec) throw new XapiError('HANDLE_INVALID', ['VDI', vdi]);
  if (rec.managed === false) throw new XapiError('VDI_NOT_MANAGED', [vdi]);
  for (const [task, op] of Object.entries((rec.current_operations ?? {}) as Record<string, string>)) {
    if (op !== 'copy' && op !== 'mirror') throw new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VDI', vdi, op, task]);
  }
  if (write && rec.read_only === true) throw new XapiError('VDI_READONLY', [vdi]);
}

/** The error every failed transfer reports (vhd-tool exiting non-zero, or EIO). */
export const vdiIoError = () => new XapiError('VDI_IO_ERROR', ['Device I/O errors']);

/** task.progress as a transfer goes (vhd-tool reports whole percents). */
export function progressOf(call: HttpCall, total: number): (done: number) => void {
  let last = 0;
  return (done) => {
    if (total <= 0) return;
    const pct = Math.min(100, Math.floor((done * 100) / total));
    if (pct <= last || pct >= 100) return;
    last = pct;
    const rec = call.emu.db.get('task', call.task);
    if (rec && rec.status === 'pending') call.emu.db.update('task', call.task, { progress: pct / 100 });
  };
}
