// The consoles of a host's running domains, as qemu's VNC server and vncterm serve them behind
// xapi: one guest terminal per domain boot, RFB or vt100 connections to it, and the snapshots of
// its screen. A connection ends when its domain does (halt, suspend, reboot, migration away).
import jpeg from 'jpeg-js';
import type { Emulator } from '../emulator.js';
import type { Rec } from '../../storage/database.js';
import { profileOf } from '../guest/profile.js';
import { bootScript } from './boot-text.js';
import { GuestTerminal } from './terminal.js';
import { RfbServer, type ConsolePipe } from './rfb.js';
import { Vt100Server } from './vt100.js';
import { Framebuffer, HEIGHT, WIDTH } from './framebuffer.js';

export type { ConsolePipe } from './rfb.js';
export { WIDTH, HEIGHT } from './framebuffer.js';

interface Domain {
  /** the boot this terminal belongs to: domid and start time */
  boot: string;
  terminal: GuestTerminal;
  /** open connections: closed when the domain goes */
  connections: Set<{ close(): void }>;
  /** a wait on the clock for the next boot line is armed */
  ticking: boolean;
}

interface Consoles {
  domains: Map<string, Domain>;
  stop: (() => void)[];
}

const byEmu = new WeakMap<Emulator, Consoles>();

/** xapi's datetime (YYYYMMDDTHH:MM:SSZ) in ms; NaN if it is not one. */
function parseXapiDate(s: unknown): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2}):(\d{2}):(\d{2})/.exec(String(s ?? ''));
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
}

/** The boot a running VM is in (null: it has no domain). */
function bootOf(emu: Emulator, vm: Rec): { key: string; start: number } | null {
  if (vm.power_state !== 'Running' && vm.power_state !== 'Paused') return null;
  const metrics = emu.db.get('VM_metrics', String(vm.metrics));
  const start = parseXapiDate(metrics?.start_time);
  return { key: `${String(vm.domid)}/${String(metrics?.start_time ?? '')}`, start: Number.isNaN(start) ? 0 : start };
}

/** Seconds since the domain started; with time scale 0 (simulated waits are instant) the boot is
 * over at once, as the guest agent's first report is. */
function elapsed(emu: Emulator, d: Domain): number {
  const c = emu.clock;
  if (c.scale <= 0 && !c.frozen) return Infinity;
  return (c.now() - d.terminal.startTime) / 1000;
}

function consolesOf(emu: Emulator): Consoles {
  let cs = byEmu.get(emu);
  if (cs) return cs;
  const created: Consoles = { domains: new Map(), stop: [] };
  cs = created;
  byEmu.set(emu, created);
  created.stop.push(emu.clock.onAdvance(() => {
    for (const d of created.domains.values()) if (d.connections.size > 0) sync(emu, d);
  }));
  created.stop.push(emu.db.onChange(() => {
    for (const [vm, d] of created.domains) if (d.connections.size > 0) checkAlive(emu, vm, d);
  }));
  return created;
}

function checkAlive(emu: Emulator, vm: string, d: Domain): boolean {
  const rec = emu.db.get('VM', vm);
  const boot = rec && bootOf(emu, rec);
  if (boot && boot.key === d.boot) return true;
  consolesOf(emu).domains.delete(vm);
  for (const c of [...d.connections]) c.close();
  return false;
}

function sync(emu: Emulator, d: Domain): void {
  d.terminal.advanceTo(elapsed(emu, d));
  tick(emu, d);
}

/** With time passing on its own (scale > 0), waits on the clock for the next boot line. */
function tick(emu: Emulator, d: Domain): void {
  const c = emu.clock;
  if (d.ticking || c.scale <= 0 || c.frozen || d.connections.size === 0) return;
  const due = d.terminal.nextDue();
  if (due === null) return;
  d.ticking = true;
  void c.sleep(Math.max(0, due - elapsed(emu, d))).then(() => {
    d.ticking = false;
    if (d.connections.size > 0) sync(emu, d);
  });
}

/** The terminal of a VM's current boot (null: the VM has no domain). */
function domainOf(emu: Emulator, vm: string): Domain | null {
  const rec = emu.db.get('VM', vm);
  const boot = rec && bootOf(emu, rec);
  if (!rec || !boot) return null;
  const cs = consolesOf(emu);
  const known = cs.domains.get(vm);
  if (known && known.boot === boot.key) return known;
  if (known) checkAlive(emu, vm, known);
  const host = emu.db.get('host', String(rec.resident_on));
  const d: Domain = { boot: boot.key, terminal: new GuestTerminal(bootScript(rec, profileOf(emu, rec), host), boot.start), connections: new Set(), ticking: false };
  cs.domains.set(vm, d);
  // the terminals of domains nobody watches are dropped as their VMs stop
  for (const [other, od] of cs.domains) if (od.connections.size === 0 && other !== vm) checkAlive(emu, other, od);
  sync(emu, d);
  return d;
}

export interface ConsoleConnection {
  /** bytes from the client */
  receive(data: Buffer): void;
  /** the client went away */
  close(): void;
  /** resolves when the connection is over (either side) */
  done: Promise<void>;
}

/** Serves a console (`protocol` rfb or vt100) of a running VM over `pipe`; null if the VM has no
 * domain. */
export function openConsole(emu: Emulator, vm: string, protocol: 'rfb' | 'vt100', pipe: ConsolePipe): ConsoleConnection | null {
  const d = domainOf(emu, vm);
  if (!d) return null;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const conn = { close: () => server.close() };
  const wrapped: ConsolePipe = {
    write: (b) => pipe.write(b),
    close: () => {
      d.connections.delete(conn);
      pipe.close();
      finish();
    },
  };
  const doSync = () => sync(emu, d);
  const rec = emu.db.get('VM', vm)!;
  const server = protocol === 'rfb' ? new RfbServer(wrapped, d.terminal, doSync, String(rec.name_label)) : new Vt100Server(wrapped, d.terminal, doSync);
  d.connections.add(conn);
  tick(emu, d);
  return { receive: (b) => server.receive(b), close: () => server.close(), done };
}

/** The screen of a running VM as a JPEG (what vncsnapshot makes of qemu's); null: no domain. */
export function snapshotJpeg(emu: Emulator, vm: string): Buffer | null {
  const d = domainOf(emu, vm);
  if (!d) return null;
  sync(emu, d);
  const fb = new Framebuffer();
  fb.draw(d.terminal.screen());
  return Buffer.from(jpeg.encode({ data: fb.rgba(), width: WIDTH, height: HEIGHT }, 90).data);
}

/** The connections open to a VM's consoles. */
export function openConnections(emu: Emulator, vm: string): number {
  return byEmu.get(emu)?.domains.get(vm)?.connections.size ?? 0;
}
