// The nfs SR type (SM's NFSSR): VHD files in <serverpath>/<sr-uuid> on an NFS server of the
// fabric. device_config: server (required), serverpath (required, else the export list goes to
// stderr with ConfigServerPathMissing), nfsversion (3, 4, 4.x), probeversion (probe: the versions
// the server supports). The server must answer on the NFS port (NFSTarget), support the version
// asked (NFSVersion) and export the path (NFSMount).
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { smError, SmError, type SrCtx } from './driver.js';
import { isUuid } from './paths.js';
import { isDir, linkedDriver, makeSrDirIn } from './linked-sr.js';
import { isHostName, nfsExportDir, pathComponents } from './fabric/contents.js';
import { DEFAULT_SIZE, nfsService, reachable, type NfsService } from './fabric/servers.js';
import { prettyXml, record } from './probe-xml.js';
import type { Emulator } from '../emulator.js';

const DEFAULT_NFSVERSION = '3';

/** NFSSR.load: the server, the path, the version. */
function load(dconf: Record<string, string>): { server: string; serverpath?: string; version: string } {
  if (!dconf.server) throw smError('ConfigServerMissing');
  const version = dconf.nfsversion || DEFAULT_NFSVERSION;
  // nfs.validate_nfsversion raises a plain exception: SRCommand reports it as fault 1200
  if (!(version === '3' || version.startsWith('4'))) throw new SmError('', 1200, 'Invalid nfsversion.');
  return { server: dconf.server, serverpath: dconf.serverpath, version };
}

/** util._testHost on the NFS port. */
function testHost(emu: Emulator, server: string): NfsService {
  if (!isHostName(server)) throw smError('DNSError');
  const s = reachable(emu, server) ? nfsService(emu, server) : null;
  if (!s) throw smError('NFSTarget');
  return s;
}

/** The export list SM prints (nfs.scan_exports). */
function exportsXml(server: string, s: NfsService, on: string[]): string {
  const paths = s.exports ? s.exports.map((e) => e.path) : on;
  return prettyXml({ name: 'nfs-exports', children: paths.map((p) => record('Export', [['Target', server], ['Path', p], ['Accesslist', '*']])) });
}

/** The exports of an on-demand server that already hold something. */
async function knownExports(emu: Emulator, server: string): Promise<string[]> {
  const root = nfsExportDir(emu, server, []);
  const out: string[] = [];
  const walk = async (dir: string, rel: string[]) => {
    const names = await readdir(dir).catch(() => [] as string[]);
    if (names.some(isUuid)) out.push(`/${rel.join('/')}`);
    for (const n of names) if (!isUuid(n) && (await isDir(join(dir, n)))) await walk(join(dir, n), [...rel, n]);
  };
  await walk(root, []);
  return out.sort();
}

/** NFSSR.validate_remotepath. */
async function requirePath(emu: Emulator, server: string, serverpath: string | undefined, scan: boolean): Promise<string> {
  if (serverpath) return serverpath;
  let stderr = '';
  if (scan) {
    const s = reachable(emu, server) ? nfsService(emu, server) : null;
    if (s) stderr = `${exportsXml(server, s, await knownExports(emu, server))}\n`;
  }
  throw smError('ConfigServerPathMissing', undefined, stderr);
}

/** NFSSR.check_server: the version must be one the server speaks. */
function checkVersion(s: NfsService, version: string): void {
  if (!s.versions.some((v) => v[0] === version[0])) throw smError('NFSVersion', `Unsupported NFS version: ${version}`);
}

/** The mount of server:path: the export's directory and size, or NFSMount. */
async function mountExport(emu: Emulator, server: string, s: NfsService, serverpath: string): Promise<{ dir: string; size: number }> {
  const parts = pathComponents(serverpath);
  const fail = () => smError('NFSMount', `mount failed on server \`${server}\` with return code 32`);
  if (!parts) throw fail();
  let size = DEFAULT_SIZE;
  if (s.exports) {
    // a path at or below a declared export
    const e = s.exports.find((x) => {
      const ep = pathComponents(x.path) ?? [];
      return ep.length <= parts.length && ep.every((c, i) => parts[i] === c);
    });
    if (!e) throw fail();
    size = e.size;
    const ep = pathComponents(e.path) ?? [];
    await mkdir(nfsExportDir(emu, server, ep), { recursive: true });
  }
  const dir = nfsExportDir(emu, server, parts);
  if (!s.exports) await mkdir(dir, { recursive: true });
  if (!(await isDir(dir))) throw fail();
  return { dir, size };
}

function contents(ctx: SrCtx): string {
  const { server, serverpath } = load(ctx.dconf);
  if (!serverpath) throw smError('ConfigServerPathMissing');
  const parts = pathComponents(serverpath);
  if (!parts) throw smError('NFSMount', `mount failed on server \`${server}\` with return code 32`);
  return join(nfsExportDir(ctx.emu, server, parts), ctx.uuid);
}

async function reach(ctx: SrCtx): Promise<{ dir: string; size: number }> {
  const { server, serverpath, version } = load(ctx.dconf);
  const path = await requirePath(ctx.emu, server, serverpath, false);
  const s = testHost(ctx.emu, server);
  checkVersion(s, version);
  return mountExport(ctx.emu, server, s, path);
}

linkedDriver({
  types: ['nfs'],
  contents,
  async reach(ctx) {
    const { dir } = await reach(ctx);
    // the mount of <serverpath>/<sr-uuid> fails when the SR's directory is not there
    if (!(await isDir(join(dir, ctx.uuid)))) throw smError('NFSMount', `mount failed on server \`${ctx.dconf.server}\` with return code 32`);
  },
  alive(ctx) {
    if (!reachable(ctx.emu, ctx.dconf.server)) throw smError('SRUnavailable', `NFS server ${ctx.dconf.server} not responding`);
  },

  async create(ctx) {
    const { server, serverpath, version } = load(ctx.dconf);
    const s = testHost(ctx.emu, server);
    const path = await requirePath(ctx.emu, server, serverpath, true);
    if (await isDir(ctx.path)) throw smError('NFSAttached');
    checkVersion(s, version);
    const { dir } = await mountExport(ctx.emu, server, s, path);
    await makeSrDirIn(dir, ctx.uuid);
  },

  async probe(emu, _type, dconf) {
    const { server, serverpath, version } = load(dconf);
    const s = testHost(emu, server);
    const path = await requirePath(emu, server, serverpath, true);
    checkVersion(s, version);
    const { dir } = await mountExport(emu, server, s, path);
    const srs = [];
    for (const n of (await readdir(dir)).sort()) if (isUuid(n) && (await isDir(join(dir, n)))) srs.push({ name: 'SR', children: [{ name: 'UUID', text: n }] });
    const children = [...srs];
    if ('probeversion' in dconf) children.push({ name: 'SupportedVersions', children: s.versions.map((v) => ({ name: 'Version', text: v })) });
    return prettyXml({ name: 'SRlist', children });
  },

  async deviceSize(ctx) {
    const { server, serverpath } = load(ctx.dconf);
    const s = nfsService(ctx.emu, server);
    const parts = pathComponents(serverpath ?? '') ?? [];
    const e = s?.exports?.find((x) => (pathComponents(x.path) ?? []).every((c, i) => parts[i] === c));
    return e?.size ?? DEFAULT_SIZE;
  },
});
