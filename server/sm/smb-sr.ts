// The smb SR type (SM's SMBSR): VHD files in <share>/<sr-uuid> on an SMB server of the fabric.
// device_config: server (required, \\host\share or //host/share[/dir]), username, password. A
// server that does not answer, a share it does not have, or credentials it refuses fail the mount
// (SMBMount, mount.cifs's return code).
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { smError, type SrCtx } from './driver.js';
import { isUuid } from './paths.js';
import { isDir, linkedDriver, makeSrDirIn } from './linked-sr.js';
import { pathComponents, smbShareDir } from './fabric/contents.js';
import { DEFAULT_SIZE, reachable, smbService } from './fabric/servers.js';
import { srListXml } from './file-sr.js';
import type { Emulator } from '../emulator.js';

const mountFailed = (code = 32) => smError('SMBMount', `mount failed with return code ${code}`);

/** SMBSR.load and the UNC path: host, then share and subdirectories. */
function load(dconf: Record<string, string>): { host: string; parts: string[] } {
  if (!dconf.server) throw smError('ConfigServerMissing');
  const unc = dconf.server.replace(/\\/g, '/');
  const parts = unc.startsWith('//') ? pathComponents(unc.slice(2)) : null;
  if (!parts || parts.length < 2) throw mountFailed();
  return { host: parts[0], parts: parts.slice(1) };
}

/** mount.cifs of the share: its directory and size. */
async function mountShare(emu: Emulator, dconf: Record<string, string>): Promise<{ dir: string; size: number }> {
  const { host, parts } = load(dconf);
  const s = reachable(emu, host) ? smbService(emu, host) : null;
  if (!s) throw mountFailed();
  let size = DEFAULT_SIZE;
  if (s.shares) {
    const share = s.shares.find((x) => x.name === parts[0]);
    if (!share) throw mountFailed();
    // EACCES from the server: mount error(13)
    if (share.username !== undefined && (dconf.username !== share.username || (dconf.password ?? '') !== (share.password ?? ''))) throw mountFailed(13);
    size = share.size;
    await mkdir(smbShareDir(emu, host, [parts[0]]), { recursive: true });
  }
  const dir = smbShareDir(emu, host, parts);
  if (!s.shares) await mkdir(dir, { recursive: true });
  if (!(await isDir(dir))) throw mountFailed();
  return { dir, size };
}

function contents(ctx: SrCtx): string {
  const { host, parts } = load(ctx.dconf);
  return join(smbShareDir(ctx.emu, host, parts), ctx.uuid);
}

linkedDriver({
  types: ['smb'],
  contents,
  async reach(ctx) {
    await mountShare(ctx.emu, ctx.dconf);
  },
  alive(ctx) {
    if (!reachable(ctx.emu, load(ctx.dconf).host)) throw smError('SRUnavailable', `SMB server ${ctx.dconf.server} not responding`);
  },

  async create(ctx) {
    load(ctx.dconf);
    if (await isDir(ctx.path)) throw smError('SMBAttached');
    const { dir } = await mountShare(ctx.emu, ctx.dconf);
    await makeSrDirIn(dir, ctx.uuid);
  },

  async probe(emu, _type, dconf) {
    const { dir } = await mountShare(emu, dconf);
    const uuids = (await readdir(dir)).filter(isUuid).sort();
    return srListXml(uuids.map((uuid) => ({ uuid })));
  },

  async deviceSize(ctx) {
    const { host, parts } = load(ctx.dconf);
    return smbService(ctx.emu, host)?.shares?.find((x) => x.name === parts[0])?.size ?? DEFAULT_SIZE;
  },
});
