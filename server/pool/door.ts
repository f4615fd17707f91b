// The door: what a joined instance becomes. Every TCP connection it accepts on its host's address
// is forwarded, byte for byte, to the master's listener for that host, so clients who knew the
// host's address and port still reach "that host", now run by the master (answering
// HOST_IS_SLAVE to logins, as a pool member does).
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface Door {
  port: number;
  close(): Promise<void>;
}

type Target = { host: string; port: number };

/** `refused`: asked when the master refuses a connection; a new target to carry the connection
 * to (this instance serving again), or null to drop it. */
export async function openDoor(listen: Target, target: Target, refused?: () => Promise<Target | null>): Promise<Door> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => forward(inbound, target, true));
  function forward(inbound: Socket, to: Target, retry: boolean): void {
    // what the client sends waits in the socket until the master's side is connected
    inbound.pause();
    const outbound = connect({ host: to.host, port: to.port });
    sockets.add(inbound).add(outbound);
    let connected = false;
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    inbound.on('error', end).on('close', end);
    outbound.once('connect', () => {
      connected = true;
      outbound.on('close', end);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    outbound.on('error', (e: NodeJS.ErrnoException) => {
      if (connected || !retry || !refused || e.code !== 'ECONNREFUSED') return end();
      // the connection is kept while the door finds out where it goes now
      sockets.delete(inbound);
      sockets.delete(outbound);
      inbound.off('error', end).off('close', end);
      const lost = () => inbound.destroy();
      inbound.once('error', lost);
      refused().then(
        (next) => {
          inbound.off('error', lost);
          if (next && !inbound.destroyed) forward(inbound, next, false);
          else inbound.destroy();
        },
        () => inbound.destroy(),
      );
    });
  }
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
        // the port is free once the listening socket is closed: a connection held aside (see
        // `refused`) does not keep the door open
        server.close();
        setImmediate(resolve);
      }),
  };
}
