// Simulated guests: their state, and what happens inside them (shutdown, reboot or crash from
// inside, the guest agent stopping and starting, an address change, a load).
import { z } from 'zod';
import { route } from './route.js';

const vm = z.string().min(1).describe('the VM, by ref, uuid or name label (of exactly one VM)');

export const guestProfile = z.enum(['agent', 'pv-drivers', 'no-drivers', 'no-os']);

export const guestLoad = z.object({
  cpu: z.number().min(0).max(1).describe('fraction of its vCPUs the guest keeps busy'),
  disk: z.number().min(0).describe('bytes per second of disk I/O'),
  network: z.number().min(0).describe('bytes per second on its NICs'),
});

export const guestState = z.object({
  vm: z.string(),
  uuid: z.string(),
  profile: guestProfile,
  power_state: z.string(),
  pv_drivers: z.boolean().describe('the PV drivers are up (VM_guest_metrics.PV_drivers_detected)'),
  agent: z.enum(['none', 'booting', 'running', 'stopped']).describe('none: no agent in this profile or no domain'),
  boot_seconds: z.number().describe('simulated seconds from the domain start to the agent\'s first report'),
  networks: z.record(z.string(), z.string()).describe('VM_guest_metrics.networks'),
  load: guestLoad,
});

const exitResult = z.object({ vm: z.string(), action: z.string().describe('the actions_after_* value that was applied') });

export const guests = {
  get: route({ method: 'GET', path: '/guests/:vm', summary: 'The state of a VM\'s simulated guest', input: z.object({ vm }), output: guestState }),
  shutdown: route({
    method: 'POST', path: '/guests/:vm/shutdown', summary: 'The guest shuts itself down (actions_after_shutdown applies)',
    input: z.object({ vm }).strict(), output: exitResult,
  }),
  reboot: route({
    method: 'POST', path: '/guests/:vm/reboot', summary: 'The guest reboots itself (actions_after_reboot applies)',
    input: z.object({ vm }).strict(), output: exitResult,
  }),
  crash: route({
    method: 'POST', path: '/guests/:vm/crash', summary: 'The guest crashes (actions_after_crash applies)',
    input: z.object({ vm }).strict(), output: exitResult,
  }),
  agent: route({
    method: 'PUT', path: '/guests/:vm/agent', summary: 'Stops the guest agent (its metrics go stale: live false) or starts it (it reports at once)',
    input: z.object({ vm, running: z.boolean() }).strict(), output: guestState,
  }),
  ip: route({
    method: 'POST', path: '/guests/:vm/ip', summary: 'The guest takes another IPv4 address on a VIF: the given one, or the next free one of the network',
    input: z.object({
      vm, vif: z.string().min(1).default('0').describe('the VIF\'s device ("0"), ref or uuid'),
      address: z.string().optional().describe('the new address (default: the next one DHCP has free)'),
    }).strict(),
    output: z.object({ vm: z.string(), vif: z.string(), address: z.string() }),
  }),
  getLoad: route({ method: 'GET', path: '/guests/:vm/load', summary: 'The load the guest puts on its vCPUs, disks and NICs', input: z.object({ vm }), output: guestLoad }),
  setLoad: route({
    method: 'PUT', path: '/guests/:vm/load', summary: 'Sets the load the guest puts on its vCPUs, disks and NICs (kept for metrics)',
    input: guestLoad.partial().extend({ vm }).strict(), output: guestLoad,
  }),
};
