// The packages a host's yum repositories offer as updates, and its repositories' proxies: what
// updater.py reads and changes. A fresh host is up to date; the control API publishes updates.
// Kept in the database's meta table, so they survive restarts (not part of pool snapshots, like
// fault rules).
import type { Emulator } from '../emulator.js';

/** updater.py's display_package, plus the repository that offers it. */
export interface PendingPackage {
  name: string;
  version: string;
  release: string;
  description: string;
  changelog: { date: string; author: string; description: string } | null;
  url: string;
  size: number;
  license: string;
}

/** The repositories of /etc/yum.repos.d/xcp-ng.repo on 8.3, in its order. */
export const REPOS = ['xcp-ng-base', 'xcp-ng-updates', 'xcp-ng-candidates', 'xcp-ng-testing', 'xcp-ng-ci', 'xcp-ng-incoming'];
/** the enabled ones (updater.py's DEFAULT_REPOS too): the others offer nothing until enabled */
export const ENABLED_REPOS = ['xcp-ng-base', 'xcp-ng-updates'];
/** updater.py's marker of a repository without proxy */
export const NO_PROXY = '_none_';

interface State {
  /** by host uuid */
  pending: Record<string, PendingPackage[]>;
  /** by host uuid, by repository: those with a proxy */
  proxies: Record<string, Record<string, string>>;
}

const META_KEY = 'host-updates';
const cache = new WeakMap<Emulator, State>();

function load(emu: Emulator): State {
  let s = cache.get(emu);
  if (!s) {
    const raw = emu.db.getMeta(META_KEY);
    s = { pending: {}, proxies: {} };
    try {
      if (raw) s = { ...s, ...(JSON.parse(raw) as Partial<State>) };
    } catch {
      // an unreadable record: the host is up to date
    }
    cache.set(emu, s);
  }
  return s;
}

function save(emu: Emulator, s: State): void {
  cache.set(emu, s);
  emu.db.setMeta(META_KEY, JSON.stringify(s));
}

const uuidOf = (emu: Emulator, host: string): string => String(emu.db.get('host', host)?.uuid ?? host);

export function pendingOf(emu: Emulator, host: string): PendingPackage[] {
  return load(emu).pending[uuidOf(emu, host)] ?? [];
}

/** Offers packages to hosts: a package of the same name replaces the one offered before. */
export function publish(emu: Emulator, hosts: string[], packages: PendingPackage[]): void {
  const s = load(emu);
  const pending = { ...s.pending };
  for (const h of hosts) {
    const u = uuidOf(emu, h);
    const names = new Set(packages.map((p) => p.name));
    pending[u] = [...(pending[u] ?? []).filter((p) => !names.has(p.name)), ...packages].sort((a, b) => a.name.localeCompare(b.name));
  }
  save(emu, { ...s, pending });
}

/** Drops offered packages (all of them without `names`) of hosts. */
export function withdraw(emu: Emulator, hosts: string[], names?: string[]): void {
  const s = load(emu);
  const pending = { ...s.pending };
  for (const h of hosts) {
    const u = uuidOf(emu, h);
    const left = names ? (pending[u] ?? []).filter((p) => !names.includes(p.name)) : [];
    if (left.length) pending[u] = left;
    else delete pending[u];
  }
  save(emu, { ...s, pending });
}

export function proxiesOf(emu: Emulator, host: string): Record<string, string> {
  const set = load(emu).proxies[uuidOf(emu, host)] ?? {};
  return Object.fromEntries(REPOS.map((r) => [r, set[r] ?? NO_PROXY]));
}

export function setProxies(emu: Emulator, host: string, proxies: Record<string, string>): void {
  const s = load(emu);
  const u = uuidOf(emu, host);
  const mine = { ...(s.proxies[u] ?? {}) };
  for (const [repo, proxy] of Object.entries(proxies)) {
    if (proxy === NO_PROXY) delete mine[repo];
    else mine[repo] = proxy;
  }
  save(emu, { ...s, proxies: { ...s.proxies, [u]: mine } });
}
