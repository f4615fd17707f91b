// The operating system a simulated guest runs, guessed from the hints its template left on the VM
// (VM.reference_label as in the default templates, else other_config:base_template_name or
// install-distro), and what its guest agent writes about it in xenstore: data/os_name, os_uname,
// os_distro, os_majorver, os_minorver (Linux, xe-guest-utilities / xen-guest-agent) or the
// Windows tools' name with attr/os/spmajor, spminor, and attr/PVAddons/* (the tools' version).
import type { Rec } from '../../storage/database.js';

export interface GuestOs {
  family: 'linux' | 'windows';
  /** VM_guest_metrics.os_version */
  osVersion: Record<string, string>;
  /** VM_guest_metrics.PV_drivers_version */
  pvDriversVersion: Record<string, string>;
  /** data/host_name_dns (Windows only reports it) */
  hostName?: string;
}

/** Simulated seconds from the domain's start to the guest agent's first report (our own model: a
 * cloud image of a Linux distribution reaches multi-user in about 20 s, Windows about 45 s). */
export const BOOT_SECONDS = { linux: 20, windows: 45 } as const;

/** Linux: xe-guest-utilities' version as attr/PVAddons/*; Windows: XCP-ng Windows PV tools'. */
const LINUX_TOOLS = { major: '8', minor: '4', micro: '0', build: '1', application: 'xe-guest-utilities' };
const WINDOWS_TOOLS = { major: '9', minor: '1', micro: '100', build: '0' };

interface Distro {
  distro: string;
  name: (major: string, minor: string) => string;
  /** default (major, minor) when the label has no version */
  version: [string, string];
  uname: (major: string) => string;
  /** an Enterprise Linux rebuild: a bare major version means its latest point release */
  el?: boolean;
}

const el = (name: string, distro: string): Distro => ({
  distro,
  name: (ma, mi) => `${name} ${ma}.${mi}`,
  version: ['9', '4'],
  el: true,
  uname: (ma) => ({ '5': '2.6.18-419.el5', '6': '2.6.32-754.el6.x86_64', '7': '3.10.0-1160.el7.x86_64', '8': '4.18.0-553.el8_10.x86_64', '9': '5.14.0-427.13.1.el9_4.x86_64', '10': '6.12.0-55.9.1.el10_0.x86_64' }[ma] ?? '5.14.0-427.13.1.el9_4.x86_64'),
});

const DEBIAN_NAMES: Record<string, string> = { '9': 'stretch', '10': 'buster', '11': 'bullseye', '12': 'bookworm', '13': 'trixie' };
const DEBIAN_KERNELS: Record<string, string> = { '10': '4.19.0-27-amd64', '11': '5.10.0-32-amd64', '12': '6.1.0-26-amd64', '13': '6.12.41+deb13-amd64' };
const UBUNTU_KERNELS: Record<string, string> = { '18': '4.15.0-213-generic', '20': '5.4.0-200-generic', '22': '5.15.0-125-generic', '24': '6.8.0-48-generic' };
const EL_MINORS: Record<string, string> = { '5': '11', '6': '10', '7': '9', '8': '10', '9': '4', '10': '0' };

const DISTROS: [RegExp, Distro][] = [
  [/^debian/, {
    distro: 'debian', version: ['12', '7'],
    name: (ma) => `Debian GNU/Linux ${ma}${DEBIAN_NAMES[ma] ? ` (${DEBIAN_NAMES[ma]})` : ''}`,
    uname: (ma) => DEBIAN_KERNELS[ma] ?? '6.1.0-26-amd64',
  }],
  [/^ubuntu/, {
    distro: 'ubuntu', version: ['22', '04'],
    name: (ma, mi) => `Ubuntu ${ma}.${mi}${Number(ma) % 2 === 0 && mi === '04' ? ' LTS' : ''}`,
    uname: (ma) => UBUNTU_KERNELS[ma] ?? '5.15.0-125-generic',
  }],
  [/^almalinux/, el('AlmaLinux', 'almalinux')],
  [/^rocky/, el('Rocky Linux', 'rocky')],
  [/^centos/, el('CentOS Linux', 'centos')],
  [/^(rhel|red ?hat)/, el('Red Hat Enterprise Linux', 'rhel')],
  [/^(oel|oracle)/, el('Oracle Linux Server', 'oracle')],
  [/^(sl-|scientific)/, el('Scientific Linux', 'scientific')],
  [/^(kylin|neokylin)/, el('NeoKylin Linux Server', 'kylin')],
  [/^(sle|sles|sled|suse)/, {
    distro: 'sles', version: ['15', '6'], name: (ma, mi) => `SUSE Linux Enterprise Server ${ma}${mi !== '0' ? ` SP${mi}` : ''}`,
    uname: (ma) => (ma === '15' ? '6.4.0-150600.23.25-default' : ma === '12' ? '4.12.14-122.222-default' : '3.0.101-108.13-default'),
  }],
  [/^gooroom/, { distro: 'gooroom', version: ['2', '0'], name: (ma, mi) => `Gooroom ${ma}.${mi}`, uname: () => '4.19.0-16-amd64' }],
];

const GENERIC_LINUX: Distro = DISTROS[0][1];

/** The major and minor version in a reference label ("debian-12", "ubuntu-22.04", "rhel-6-64bit",
 * "sles-12-sp2-64bit"). */
function versionIn(label: string, d: Distro): [string, string] {
  const m = /-(\d+)(?:\.(\d+))?(?:-sp(\d+))?/.exec(label);
  if (!m) return d.version;
  const major = m[1];
  const minor = m[2] ?? m[3] ?? (d.el ? EL_MINORS[major] ?? '0' : '0');
  return [major, minor];
}

const WINDOWS: [RegExp, string, string, string][] = [
  [/2025/, 'Microsoft Windows Server 2025 Standard', '10', '0'],
  [/2022/, 'Microsoft Windows Server 2022 Standard', '10', '0'],
  [/2019/, 'Microsoft Windows Server 2019 Standard', '10', '0'],
  [/2016/, 'Microsoft Windows Server 2016 Standard', '10', '0'],
  [/2012/, 'Microsoft Windows Server 2012 R2 Standard', '6', '3'],
  [/11/, 'Microsoft Windows 11 Pro', '10', '0'],
  [/10/, 'Microsoft Windows 10 Pro', '10', '0'],
  [/7/, 'Microsoft Windows 7 Professional', '6', '1'],
];

/** The template hint of a VM: its reference label, else the name of the template it came from. */
export function templateHint(rec: Rec): string {
  const oc = (rec.other_config ?? {}) as Record<string, string>;
  return String(rec.reference_label || oc.base_template_name || oc['install-distro'] || rec.name_label || '').toLowerCase();
}

/** The guest OS of a VM, from its template's hints (a Linux of the template's family; Debian when
 * nothing says which). */
export function guestOsOf(rec: Rec): GuestOs {
  const hint = templateHint(rec);
  const hostName = String(rec.name_label || 'guest').replace(/[^A-Za-z0-9-]/g, '-').slice(0, 15).toUpperCase() || 'GUEST';
  if (hint.startsWith('windows') || hint.includes('windows')) {
    const [, name, major, minor] = WINDOWS.find(([re]) => re.test(hint)) ?? WINDOWS[1];
    return {
      family: 'windows',
      // the Windows tools write "name|install dir|boot partition" in data/os_name
      osVersion: { name: `${name}|C:\\Windows|\\Device\\Harddisk0\\Partition2`, distro: 'windows', major, minor, spmajor: '0', spminor: '0' },
      pvDriversVersion: { ...WINDOWS_TOOLS },
      hostName,
    };
  }
  const found = DISTROS.find(([re]) => re.test(hint));
  const d = found?.[1] ?? (hint === 'rhlike' ? el('CentOS Linux', 'centos') : hint === 'sleslike' ? DISTROS.find(([re]) => re.test('sles'))![1] : GENERIC_LINUX);
  const [major, minor] = found || hint === 'rhlike' || hint === 'sleslike' ? versionIn(hint, d) : d.version;
  return {
    family: 'linux',
    osVersion: { name: d.name(major, minor), uname: d.uname(major), distro: d.distro, major, minor },
    pvDriversVersion: { ...LINUX_TOOLS },
  };
}
