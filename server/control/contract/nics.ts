// The simulated network cards of the hosts: plug one in (it gets a PIF at the next PIF.scan),
// pull one out, cut or restore its carrier. PIF_metrics and Bond.links_up follow at once.
import { z } from 'zod';
import { route } from './route.js';

const host = z.string().min(1).max(200).describe('the host, by ref, uuid or name label');
const device = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/).describe('the device name (eth1 ...)');

export const nicState = z.object({
  device: z.string(),
  MAC: z.string(),
  speed: z.number().int().describe('Mbit/s when the link is up'),
  duplex: z.boolean(),
  carrier: z.boolean(),
  vendor_name: z.string(),
  device_name: z.string(),
  pci_bus_path: z.string(),
  sriov_vfs: z.number().int().describe('virtual functions of an SR-IOV capable card (0: not capable)'),
  pif: z.string().nullable().describe('the PIF of the card, when it has one'),
});

export const nics = {
  list: route({ method: 'GET', path: '/hosts/:host/nics', summary: 'The network cards of a host', input: z.object({ host }), output: z.array(nicState) }),
  add: route({
    method: 'POST', path: '/hosts/:host/nics', summary: 'Plugs a network card into a host (PIF.scan or PIF.introduce makes its PIF)',
    input: z.object({
      host, device,
      MAC: z.string().regex(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/).optional().describe('default: a new one'),
      speed: z.number().int().min(10).max(400000).optional().describe('Mbit/s (default 1000, 10000 for SR-IOV cards)'),
      duplex: z.boolean().optional(),
      carrier: z.boolean().optional().describe('a cable is in (default true)'),
      sriov_vfs: z.number().int().min(0).max(256).optional().describe('SR-IOV virtual functions (default 0: not capable)'),
    }).strict(),
    output: nicState,
  }),
  remove: route({
    method: 'DELETE', path: '/hosts/:host/nics/:device', summary: 'Pulls a network card out of a host (its PIF stays, with no carrier)',
    input: z.object({ host, device }).strict(), output: nicState,
  }),
  carrier: route({
    method: 'PUT', path: '/hosts/:host/nics/:device/carrier', summary: 'Plugs (true) or unplugs (false) the cable of a network card',
    input: z.object({ host, device, carrier: z.boolean() }).strict(), output: nicState,
  }),
};
