// The door: what a joined instance becomes. Every TCP connection it accepts on its host's address
// is forwarded, byte for byte, to the master's listener for that host, so clients who knew the
// host's address and port still reach "that host", now run by the master (answering
// HOST_IS_SLAVE to logins, as a pool member does).
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface Door {
  port: number;
  close(): Promise<void>;
}

export async function openDoor(listen: { host: string; port: number }, target: { host: string; port: number }): Promise<Door> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = connect({ host: target.host, port: target.port });
    sockets.add(inbound).add(outbound);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    inbound.on('error', end).on('close', end);
    outbound.on('error', end).on('close', end);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
