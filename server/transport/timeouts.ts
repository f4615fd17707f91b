// Connection timeouts of the HTTP(S) listeners, after xapi's Http_svr and xapi_globs:
// - the request's headers must come in within `header_total_timeout_tcp` seconds, with no gap
//   longer than `header_read_timeout_tcp` between two reads (xapi: 60 and 10); on expiry the
//   client gets xapi's 408 and the connection closes. xapi times only the first request of a
//   connection; here every request is timed from its first byte, since a connection kept alive
//   is otherwise bounded only by the idle timeout below.
// - `idle_timeout_tcp` (the emulator's own key, default 300 s) bounds what xapi leaves to TCP
//   keep-alive: a request body that stops coming while it is being read, an answer the client
//   stops taking in, and a kept-alive connection with no new request. Time spent waiting on the
//   server (an event.from long poll, a handler busy before it reads the body) never counts, and a
//   transfer that makes progress, however slowly, is never cut.
// Progress is read from the sockets' byte counters by one sweep per listener, so streaming costs
// nothing per chunk. A timeout of 0 disables that check.
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionTimeouts {
  /** ms; 0: none */
  headerRead: number;
  headerTotal: number;
  idle: number;
}

const REQUEST_TIMEOUT_BODY = '<html><body><h1>HTTP 408 request timeout</h1>Timed out waiting for the request.</body></html>';
const REQUEST_TIMEOUT =
  'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nCache-Control: no-cache, no-store\r\nContent-Type: text/html\r\n' +
  `Content-Length: ${REQUEST_TIMEOUT_BODY.length}\r\n\r\n${REQUEST_TIMEOUT_BODY}`;

interface Conn {
  sock: Socket;
  /** requests whose answer has not finished */
  inFlight: number;
  /** the latest request, while its body may still be coming */
  req: IncomingMessage | null;
  /** when the current request's headers started (first byte, or the connection's accept) */
  headersSince: number;
  bytesRead: number;
  lastRead: number;
  flushed: number;
  lastFlush: number;
  /** when the last answer finished */
  idleSince: number;
  /** a 408 went out: the connection is closing */
  closing: boolean;
}

/** Bytes of the answer the client has taken in (handed to the kernel): what was written minus
 * what still waits in the socket's buffer. */
const flushedBytes = (s: Socket): number => s.bytesWritten - s.writableLength;

/** Applies the timeouts to every connection of `server`; returns the function that stops. */
export function guardConnections(server: HttpServer, t: ConnectionTimeouts, tls: boolean): () => void {
  // Node's own header timeout (60 s, checked every 30 s) would cut earlier than a longer setting
  server.headersTimeout = 0;
  server.requestTimeout = 0;
  // a kept-alive connection with no new request (Node's timer, restarted by each byte)
  server.keepAliveTimeout = t.idle;
  const conns = new Map<Socket, Conn>();

  const onConnection = (sock: Socket) => {
    const now = Date.now();
    const c: Conn = {
      sock, inFlight: 0, req: null, headersSince: now, bytesRead: sock.bytesRead, lastRead: now,
      flushed: flushedBytes(sock), lastFlush: now, idleSince: now, closing: false,
    };
    conns.set(sock, c);
    sock.once('close', () => conns.delete(sock));
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const c = conns.get(req.socket);
    if (!c) return;
    c.inFlight++;
    c.req = req;
    c.lastRead = Date.now();
    // 'close' comes once per response, after 'finish' or when the connection is cut: one plain
    // listener per request, on the path every call takes
    res.on('close', () => {
      c.inFlight--;
      if (c.req === req) c.req = null;
      // the next request's headers are timed from its first byte to come
      c.headersSince = 0;
      c.bytesRead = c.sock.bytesRead;
      c.idleSince = Date.now();
    });
  };
  // a connection taken over by an upgrade or CONNECT is its handler's
  const onTakeover = (req: IncomingMessage) => void conns.delete(req.socket);
  server.on(tls ? 'secureConnection' : 'connection', onConnection);
  server.on('request', onRequest);
  server.on('upgrade', onTakeover);
  server.on('connect', onTakeover);

  const period = Math.max(5, Math.min(...[t.headerRead, t.headerTotal, t.idle].filter((x) => x > 0).map((x) => x / 4), 1000));
  const sweep = () => {
    const now = Date.now();
    for (const c of conns.values()) check(c, now);
  };
  const check = (c: Conn, now: number) => {
    const { sock } = c;
    if (sock.destroyed) return void conns.delete(sock);
    if (c.closing) return void sock.destroy(); // the 408 had a sweep's time to go out
    const read = sock.bytesRead;
    if (read !== c.bytesRead) {
      c.bytesRead = read;
      c.lastRead = now;
      if (c.inFlight === 0 && c.headersSince === 0) c.headersSince = now;
    }
    const flushed = flushedBytes(sock);
    if (flushed !== c.flushed || sock.writableLength === 0) {
      c.flushed = flushed;
      c.lastFlush = now;
    }
    // waiting for headers: a fresh connection, or bytes of a next request
    if (c.inFlight === 0 && c.headersSince !== 0) {
      const late = (t.headerTotal > 0 && now - c.headersSince > t.headerTotal) || (t.headerRead > 0 && now - c.lastRead > t.headerRead);
      if (late) {
        c.closing = true;
        sock.end(REQUEST_TIMEOUT);
      }
      return;
    }
    if (t.idle <= 0) return;
    // kept alive with no new request (Node's own timer allows itself a second more)
    if (c.inFlight === 0) {
      if (now - c.idleSince > t.idle) sock.destroy();
      return;
    }
    // the client stopped taking the answer in
    if (sock.writableLength > 0 && now - c.lastFlush > t.idle) return void sock.destroy();
    // the body stopped coming while it is read (not while the server holds it back or has not
    // started reading it)
    const req = c.req;
    if (req && !req.complete) {
      const reading = req.readableFlowing === true && req.readableLength === 0;
      if (!reading) c.lastRead = now;
      else if (now - c.lastRead > t.idle) sock.destroy();
    }
  };
  const timer = setInterval(sweep, period);
  timer.unref();
  return () => {
    clearInterval(timer);
    server.off(tls ? 'secureConnection' : 'connection', onConnection);
    server.off('request', onRequest);
    server.off('upgrade', onTakeover);
    server.off('connect', onTakeover);
  };
}
