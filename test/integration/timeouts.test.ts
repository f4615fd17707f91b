// Connection timeouts over real sockets, with the xapi.conf keys set to fractions of a second:
// header_read_timeout_tcp / header_total_timeout_tcp (a request whose headers do not come in gets
// xapi's 408), idle_timeout_tcp (a body that stops coming, an answer the client stops reading, a
// kept-alive connection left idle). Transfers that make progress and long polls are not cut.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect as tcp, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { request } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startServer, type RunningServer } from '../../server/app.js';
import { vdiPath } from '../../server/sm/index.js';
import { isStagingName } from '../../storage/vhd/staging.js';
import { XapiFault } from './helpers/jsonrpc.js';
import { MiB, vdiArgs } from './helpers/records.js';

const PASSWORD = 'timeouts-test';
// seconds, as in xapi.conf
const HEADER_READ = 0.1;
const HEADER_TOTAL = 0.3;
const IDLE = 0.2;

let srv: RunningServer;
let url: URL;
/** JSON-RPC calls, each on a connection of its own: a kept-alive one could be closed by the
 * server's (tiny) idle timeout just as it is reused. */
const c = {
  session: '',
  raw(method: string, ...params: unknown[]): Promise<any> {
    const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 });
    return new Promise((resolve, reject) => {
      const req = request(new URL('/jsonrpc', url), { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => {
          const j = JSON.parse(Buffer.concat(parts).toString());
          if (j.error) reject(new XapiFault([j.error.message, ...(j.error.data ?? [])]));
          else resolve(j.result);
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  },
  call(method: string, ...params: unknown[]): Promise<any> {
    return c.raw(method, c.session, ...params);
  },
};
let sr: string;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'timeouts-'));
  const conf = join(dir, 'xapi.conf');
  writeFileSync(conf, `header_read_timeout_tcp = ${HEADER_READ}\nheader_total_timeout_tcp = ${HEADER_TOTAL}\nidle_timeout_tcp = ${IDLE}\n`);
  srv = await startServer({ port: 0, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0, configFile: conf });
  url = new URL(srv.urls[0]);
  c.session = await c.raw('session.login_with_password', 'root', PASSWORD, '1.0', 'timeouts-test');
  sr = await c.call('pool.get_default_SR', srv.emu.pool);
});
afterAll(async () => {
  await srv?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A raw connection: what it received by the time the server closed it. */
function open(port = Number(url.port)): { sock: Socket; closed: Promise<string> } {
  const sock = tcp({ host: url.hostname, port });
  let got = '';
  sock.on('data', (d) => (got += d.toString('latin1')));
  sock.on('error', () => undefined);
  const closed = new Promise<string>((resolve) => sock.on('close', () => resolve(got)));
  return { sock, closed };
}

/** Writes `parts` one per `every` ms (a client that trickles its bytes), then stops. */
function trickle(sock: Socket, parts: string[], every: number): () => void {
  let i = 0;
  const t = setInterval(() => {
    if (i < parts.length && !sock.destroyed) sock.write(parts[i++]);
    else clearInterval(t);
  }, every);
  return () => clearInterval(t);
}

const isRequestTimeout = (answer: string) => {
  expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
  expect(answer).toContain('Timed out waiting for the request.');
};

async function newVdi(size: number): Promise<string> {
  return c.call('VDI.create', vdiArgs(sr, size, 'timeouts'));
}

const until = async (what: string, f: () => Promise<boolean>) => {
  for (let i = 0; i < 300; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`still waiting: ${what}`);
};
const finished = async (task: string) => {
  let rec: any;
  await until(`task ${task}`, async () => (rec = await c.call('task.get_record', task)).status !== 'pending');
  return rec;
};

describe('request headers (header_read_timeout_tcp, header_total_timeout_tcp)', () => {
  it('answers 408 and closes when half the headers came and the client stops', async () => {
    const { sock, closed } = open();
    sock.write('POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Ty');
    isRequestTimeout(await closed);
  });

  it('answers 408 to a connection that never sends anything', async () => {
    const { closed } = open();
    isRequestTimeout(await closed);
  });

  it('answers 408 to headers trickled within the read timeout but past the total one', async () => {
    const { sock, closed } = open();
    const head = 'GET /export_raw_vdi HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'abcdefghij'.repeat(20);
    const stop = trickle(sock, head.split(''), (HEADER_READ * 1000) / 4);
    const answer = await closed;
    stop();
    isRequestTimeout(answer);
  });

  it('times the headers of a second request on a kept-alive connection too', async () => {
    const { sock, closed } = open();
    const body = JSON.stringify({ jsonrpc: '2.0', method: 'pool.get_all', params: ['no session'], id: 1 });
    sock.write(`POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await new Promise<void>((r) => sock.once('data', () => r()));
    sock.write('POST /jsonrpc HTTP/1.1\r\nHo');
    const answer = await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer).toContain('HTTP/1.1 408 Request Timeout');
  });
});

describe('over TLS', () => {
  let tls: RunningServer;
  let port: number;
  beforeAll(async () => {
    tls = await startServer({ port: 0, https: true, memory: true, password: PASSWORD, closeGrace: 0, conf: { ...srv.emu.conf } });
    port = Number(new URL(tls.urls[0]).port);
  });
  afterAll(async () => {
    await tls?.close();
  });

  it('answers 408 to half the headers, and closes a connection that never completes its handshake', async () => {
    const answer = await new Promise<string>((resolve) => {
      const sock = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => sock.write('GET / HTTP/1.1\r\nHo'));
      let got = '';
      sock.on('data', (d) => (got += d.toString('latin1')));
      sock.on('error', () => undefined);
      sock.on('close', () => resolve(got));
    });
    isRequestTimeout(answer);
    // a plain TCP connection to the TLS port that says nothing
    const { closed } = open(port);
    expect(await closed).toBe('');
  });
});

describe('a client that stops (idle_timeout_tcp)', () => {
  it('closes an RPC request whose body stops coming', async () => {
    const { sock, closed } = open();
    sock.write('POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":"2.0",');
    expect(await closed).toBe('');
  });

  it('closes a kept-alive connection with no new request', async () => {
    const { sock, closed } = open();
    const body = JSON.stringify({ jsonrpc: '2.0', method: 'pool.get_all', params: ['no session'], id: 1 });
    sock.write(`POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const answer = await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer).not.toContain('408');
  });

  it('fails an upload that stops mid-body: VDI_IO_ERROR, the VDI free, no staging file', async () => {
    const vdi = await newVdi(8 * MiB);
    const task = await c.call('task.create', 'stalled upload', '');
    const { sock, closed } = open();
    sock.write(`PUT /import_raw_vdi?session_id=${c.session}&vdi=${vdi}&task_id=${task} HTTP/1.1\r\nHost: x\r\nContent-Length: ${8 * MiB}\r\n\r\n`);
    await new Promise<void>((r) => sock.once('data', () => r()));
    sock.write(Buffer.alloc(MiB + 3, 1));
    expect(await closed).toMatch(/^HTTP\/1\.1 200 /);
    const rec = await finished(task);
    expect(rec.status).toBe('failure');
    expect(rec.error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
    expect(readdirSync(dirname(vdiPath(srv.emu, vdi)!)).filter(isStagingName)).toEqual([]);
    await c.call('VDI.destroy', vdi);
  });

  it('fails a download the client stops reading: VDI_IO_ERROR, the VDI free', async () => {
    const vdi = await newVdi(1024 * MiB);
    const task = await c.call('task.create', 'stalled download', '');
    const { sock, closed } = open();
    sock.write(`GET /export_raw_vdi?session_id=${c.session}&vdi=${vdi}&task_id=${task} HTTP/1.1\r\nHost: x\r\n\r\n`);
    // read the headers, then nothing more: the server's buffers fill and it waits on the client
    await new Promise<void>((r) => sock.once('data', () => r()));
    sock.pause();
    const rec = await finished(task);
    expect(rec.status).toBe('failure');
    expect(rec.error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors']);
    sock.destroy();
    await closed;
    await c.call('VDI.destroy', vdi);
  });
});

describe('what is not cut', () => {
  it('an upload that keeps making progress, slower than the idle timeout in total', async () => {
    const size = 4 * MiB;
    const vdi = await newVdi(size);
    const task = await c.call('task.create', 'slow upload', '');
    const chunks = 8; // one every IDLE/2: the whole upload takes 4 × IDLE
    const answered = new Promise<number>((resolve, reject) => {
      const req = request(new URL(`/import_raw_vdi?session_id=${c.session}&vdi=${vdi}&task_id=${task}`, url), {
        method: 'PUT', agent: false, headers: { 'content-length': String(size) },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        res.resume();
        let i = 0;
        const t = setInterval(() => {
          req.write(Buffer.alloc(size / chunks, i + 1));
          if (++i === chunks) {
            clearInterval(t);
            req.end();
          }
        }, (IDLE * 1000) / 2);
        res.on('end', () => resolve(res.statusCode!));
      });
      req.flushHeaders();
    });
    expect(await answered).toBe(200);
    const rec = await finished(task);
    expect(rec.status).toBe('success');
  });

  it('an event.from long poll longer than the idle timeout', async () => {
    const token = (await c.call('event.from', ['pool'], '', 0)).token;
    // nothing changes pool: the call waits its whole timeout (3 × IDLE) and answers
    const r = await c.call('event.from', ['pool'], token, IDLE * 3);
    expect(r.events).toEqual([]);
    expect(r.token).toBe(token);
  });
});
