// updater.py: yum updates of the host. check_update lists what the enabled repositories offer
// (updates.ts), update installs it; the proxies of the repositories are read and set.
import { installPlugin, notSimulated, pyJson, wrappedError } from './registry.js';
import { ENABLED_REPOS, REPOS, pendingOf, proxiesOf, setProxies, withdraw, type PendingPackage } from './updates.js';

const NAME = 'updater.py';

const display = ({ name, version, release, description, changelog, url, size, license }: PendingPackage) => ({
  name, version, release, description, changelog, url, size, license,
});

/** the update's yum run, as xcpngutils.run_command reports it */
function yumRun(packages: string | undefined, updated: PendingPackage[]) {
  const command = ['yum', 'update', '--disablerepo=*', `--enablerepo=${ENABLED_REPOS.join(',')}`, '-y', ...(packages ? [packages] : [])];
  const stdout = updated.length
    ? `Resolving Dependencies\n\nUpdated:\n${updated.map((p) => `  ${p.name}.x86_64 0:${p.version}-${p.release}\n`).join('')}\nComplete!\n`
    : 'No packages marked for update\n';
  return { stdout, stderr: '', command, returncode: 0 };
}

installPlugin(NAME, {
  check_update: ({ emu, host }) => pyJson(pendingOf(emu, host).map(display)),

  update: ({ emu, host, args }) => {
    // `packages`: names yum is given (space or comma separated); none: everything offered
    const names = args.packages ? args.packages.split(/[\s,]+/).filter(Boolean) : undefined;
    const updated = pendingOf(emu, host).filter((p) => !names || names.includes(p.name));
    withdraw(emu, [host], updated.map((p) => p.name));
    return pyJson(yumRun(args.packages, updated));
  },

  get_proxies: ({ emu, host }) => pyJson(proxiesOf(emu, host)),

  set_proxies: ({ emu, host, args }) => {
    if (!Object.hasOwn(args, 'proxies')) throw wrappedError("'proxies'");
    let proxies: unknown;
    try {
      proxies = JSON.parse(args.proxies);
    } catch {
      throw wrappedError('Expecting value: line 1 column 1 (char 0)');
    }
    if (typeof proxies !== 'object' || proxies === null || Array.isArray(proxies)) throw wrappedError('proxies must be a JSON object');
    const wanted: Record<string, string> = {};
    for (const [repo, proxy] of Object.entries(proxies as Record<string, unknown>)) {
      if (!REPOS.includes(repo)) throw wrappedError(`Can't find section '${repo}' in config file`);
      // (ConfigParser takes strings only)
      if (typeof proxy !== 'string') throw wrappedError('option values must be strings');
      wanted[repo] = proxy;
    }
    setProxies(emu, host, wanted);
    return '';
  },

  install: notSimulated(NAME),
  query_installed: notSimulated(NAME),
});
