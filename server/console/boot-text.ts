// What a simulated guest prints on its console from the moment its domain starts: the firmware
// (an HVM guest's SeaBIOS), the boot loader, the kernel and init, then a login prompt when the OS
// has booted (at the time the guest agent first reports, BOOT_SECONDS). A guest without a
// bootable OS stays in its firmware; a control domain shows the host's own login prompt.
import type { Rec } from '../../storage/database.js';
import { BOOT_SECONDS, guestOsOf } from '../guest/os.js';
import { hasOs, type GuestProfile } from '../guest/profile.js';

export interface BootLine {
  /** seconds after the domain's start */
  at: number;
  text: string;
}

export interface BootScript {
  lines: BootLine[];
  /** when the login prompt appears (null: never) */
  promptAt: number | null;
  /** Windows asks for a password (echoed as stars); Linux for a login name, then a password */
  windows: boolean;
  hostName: string;
}

const isHvm = (vm: Rec): boolean => {
  const t = String(vm.domain_type ?? '');
  return t === 'hvm' || (t === '' && !!vm.HVM_boot_policy);
};

/** The host name a guest calls itself: its name, as a DNS label. */
export function guestHostName(vm: Rec): string {
  const n = String(vm.name_label ?? '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return n.slice(0, 63) || 'localhost';
}

const seabios = (vm: Rec): BootLine[] => [
  { at: 0, text: 'SeaBIOS (version rel-1.16.3-Xen)' },
  { at: 0, text: `Machine UUID ${String(vm.uuid)}` },
  { at: 0.2, text: '' },
  { at: 0.5, text: 'Booting from Hard Disk...' },
];

export function bootScript(vm: Rec, profile: GuestProfile, host: Rec | undefined): BootScript {
  const hostName = guestHostName(vm);
  if (vm.is_control_domain) {
    const hn = String(host?.hostname || host?.name_label || 'xcp-ng');
    const version = (host?.software_version ?? {}) as Record<string, string>;
    return {
      lines: [
        { at: 0, text: `XCP-ng ${version.product_version ?? '8.3.0'}` },
        { at: 0, text: 'Kernel 4.19.0+1 on an x86_64' },
        { at: 0, text: '' },
      ],
      promptAt: 0,
      windows: false,
      hostName: hn,
    };
  }
  const hvm = isHvm(vm);
  const firmware = hvm ? seabios(vm) : [];
  if (!hasOs(profile)) {
    return {
      lines: [...firmware, { at: 1, text: 'Boot failed: not a bootable disk' }, { at: 1, text: '' }, { at: 1.5, text: 'No bootable device.' }],
      promptAt: null,
      windows: false,
      hostName,
    };
  }
  const os = guestOsOf(vm);
  const total = BOOT_SECONDS[os.family];
  if (os.family === 'windows') {
    const name = os.osVersion.name.split('|')[0];
    const at = (f: number) => Math.round(total * f * 10) / 10;
    return {
      lines: [
        ...firmware,
        { at: at(0.05), text: '' },
        { at: at(0.1), text: 'Starting Windows' },
        { at: at(0.5), text: 'Getting devices ready' },
        { at: at(0.9), text: 'Please wait' },
        { at: total, text: '' },
        { at: total, text: name },
        { at: total, text: '' },
        { at: total, text: os.hostName ?? hostName.toUpperCase() },
        { at: total, text: 'Administrator' },
        { at: total, text: '' },
      ],
      promptAt: total,
      windows: true,
      hostName: os.hostName ?? hostName.toUpperCase(),
    };
  }
  const uname = os.osVersion.uname;
  const name = os.osVersion.name;
  // kernel messages carry the kernel's own timestamp, seconds since it started
  const kernelStart = hvm ? 2 : 0.2;
  const k = (at: number, text: string): BootLine => {
    const t = Math.max(0, at - kernelStart).toFixed(6).padStart(12, ' ');
    return { at, text: `[${t}] ${text}` };
  };
  const at = (f: number) => Math.round(total * f * 10) / 10;
  return {
    lines: [
      ...firmware,
      ...(hvm ? [{ at: 1, text: `Loading Linux ${uname} ...` }, { at: 1.2, text: 'Loading initial ramdisk ...' }] : []),
      k(kernelStart, `Linux version ${uname} (${os.osVersion.distro}) #1 SMP`),
      k(kernelStart, `Command line: BOOT_IMAGE=/boot/vmlinuz-${uname} root=/dev/xvda1 ro console=tty0 console=hvc0 quiet`),
      k(kernelStart + 0.4, hvm ? 'Hypervisor detected: Xen HVM' : 'Booting paravirtualized kernel on Xen'),
      k(kernelStart + 1.1, 'blkfront: xvda: flush diskcache: enabled; persistent grants: enabled; indirect descriptors: enabled;'),
      k(at(0.3), 'EXT4-fs (xvda1): mounted filesystem with ordered data mode.'),
      { at: at(0.4), text: '' },
      { at: at(0.4), text: `Welcome to ${name}!` },
      { at: at(0.4), text: '' },
      { at: at(0.5), text: '[  OK  ] Started systemd-journald.service - Journal Service.' },
      { at: at(0.65), text: '[  OK  ] Reached target network-online.target - Network is Online.' },
      { at: at(0.85), text: '[  OK  ] Started getty@tty1.service - Getty on tty1.' },
      { at: at(0.95), text: '[  OK  ] Reached target multi-user.target - Multi-User System.' },
      { at: total, text: '' },
      { at: total, text: `${name} ${hostName} tty1` },
      { at: total, text: '' },
    ],
    promptAt: total,
    windows: false,
    hostName,
  };
}
