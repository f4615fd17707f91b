// The NBD server (xapi-nbd): one listener per host address, port 10809 by default. What
// VDI.get_nbd_info offers comes from here: a host without a listener has no NBD export to offer.
import { createServer, type Server, type Socket } from 'node:net';
import { X509Certificate } from 'node:crypto';
import type { Emulator } from '../emulator.js';
import { serveConnection } from './connection.js';

export const NBD_PORT = 10809;

/** The host's key and certificate (PEM). */
export interface HostTls {
  key: string;
  /** the certificate alone, as Host.get_server_certificate gives it */
  cert: string;
}

export interface NbdListener {
  port: number;
  tls(): Promise<HostTls>;
}

const listeners = new WeakMap<Emulator, Map<string, NbdListener>>();

/** The NBD listener serving a host, if one runs. */
export function nbdListenerOf(emu: Emulator, host: string): NbdListener | undefined {
  return listeners.get(emu)?.get(host);
}

/** Xapi_vdi._get_nbd_info's subject: the certificate's first DNS name; null when it has none. */
export function certificateSubject(cert: string): string | null {
  if (!cert) return null;
  try {
    const names = (new X509Certificate(cert).subjectAltName ?? '').split(', ').filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4));
    // a strict name before a wildcard one
    return names.find((n) => !n.startsWith('*')) ?? names[0] ?? null;
  } catch {
    return null;
  }
}

export interface RunningNbd {
  close(): Promise<void>;
}

/**
 * Listens on each address of `plan` for the hosts it stands for (one host per loopback address;
 * every host on a shared address), the same port for all (port 0: the first picks one).
 * Closing ends every connection and waits for their disks to close.
 */
export async function startNbd(
  emu: Emulator,
  plan: { addr: string; hosts: string[] }[],
  port: number,
  hostCertificate: () => Promise<{ key: string; cert: string }>,
): Promise<RunningNbd> {
  let made: Promise<HostTls> | null = null;
  const tls = (): Promise<HostTls> =>
    (made ??= hostCertificate().then(({ key, cert }) => ({
      key,
      cert: cert.match(/-----BEGIN CERTIFICATE-----[^]*?-----END CERTIFICATE-----\n?/)?.[0] ?? cert,
    })).catch((e: unknown) => {
      made = null; // tried again at the next use
      throw e;
    }));
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const running = new Set<Promise<void>>();
  const byHost = new Map<string, NbdListener>();
  const close = async () => {
    listeners.delete(emu);
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const s of sockets) s.destroy();
    await Promise.all([...running]);
  };
  try {
    for (const { addr, hosts } of plan) {
      const server = createServer({ noDelay: true }, (sock) => {
        sockets.add(sock);
        sock.on('error', () => undefined);
        const p = serveConnection(sock, { emu, hosts, tls }).finally(() => {
          sockets.delete(sock);
          running.delete(p);
        });
        running.add(p);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: addr, port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
      port = (server.address() as { port: number }).port;
      for (const h of hosts) byHost.set(h, { port, tls });
    }
  } catch (e) {
    await close();
    throw e;
  }
  listeners.set(emu, byHost);
  return { close };
}
