// Our `xe` (bin/xe.js) as a user runs it: a child process against a started emulator, over real
// sockets, with its options, ~/.xe, XE_EXTRA_ARGS, TLS, and the transfers the server asks for.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect as tcpConnect, type Socket } from 'node:net';
import { startServer, type RunningServer } from '../../server/app.js';
import { Decoder, encodeHandshake, encodeMessage, type Command, type Message } from '../../server/cli/protocol.js';
import type { Client } from './helpers/jsonrpc.js';
import { localStorage, startPool } from './helpers/pool.js';

const PASSWORD = 'xe-client-test';
const XE = fileURLToPath(new URL('../../bin/xe.js', import.meta.url));

interface Run {
  stdout: Buffer;
  stderr: string;
  code: number;
}

let srv: RunningServer;
let x: Client;
let port: number;
let dir: string;

/** `xe <args>` as a process; HOME is an empty directory unless told. */
function xe(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [XE, ...args], { cwd: opts.cwd ?? dir, encoding: 'buffer', maxBuffer: 64 << 20, env: { PATH: process.env.PATH, HOME: join(dir, 'home'), ...opts.env } },
      (err, stdout, stderr) => resolve({ stdout, stderr: stderr.toString(), code: err ? Number((err as { code?: number }).code ?? -1) : 0 }));
    child.stdin?.end(opts.input ?? '');
  });
}

/** The tasks left once the server is done with the command: it may still be winding up the task
 * when the client has exited, so this follows the task events until none is left (or 10 s). */
async function tasksLeft(): Promise<string[]> {
  let token = '';
  for (let i = 0; i < 10; i++) {
    const left = (await x.call('task.get_all')) as string[];
    if (left.length === 0) return left;
    token = ((await x.call('event.from', ['task'], token, 1)) as { token: string }).token;
  }
  return (await x.call('task.get_all')) as string[];
}

const as = (args: string[]) => ['-s', '127.0.0.1', '-p', String(port), '-u', 'root', '-pw', PASSWORD, ...args];
const text = (r: Run) => r.stdout.toString();

beforeAll(async () => {
  ({ srv, x } = await startPool(PASSWORD));
  port = Number(new URL(srv.urls[0]).port);
  dir = mkdtempSync(join(tmpdir(), 'xe-client-'));
  mkdtempSync(join(dir, 'h'));
  writeFileSync(join(dir, 'pwf'), `root\n${PASSWORD}\n`);
}, 60_000);

afterAll(async () => {
  await srv?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const vmUuids = async (): Promise<string[]> => {
  const all = (await x.call('VM.get_all_records')) as Record<string, { uuid: string; is_a_template: boolean }>;
  return Object.values(all).filter((r) => !r.is_a_template).map((r) => r.uuid);
};

describe('xe: questions to the user', () => {
  it("vm-uninstall without --force asks to type 'yes': anything else aborts and keeps the VM", async () => {
    const [template] = (await x.call('VM.get_by_name_label', 'Other install media')) as string[];
    const made = await xe(as(['vm-install', 'template-uuid=' + String(await x.call('VM.get_uuid', template)), 'new-name-label=xe-prompted']));
    expect(made.code).toBe(0);
    const uuid = text(made).trim();
    const no = await xe(as(['vm-uninstall', `uuid=${uuid}`]), { input: 'no\n' });
    expect(no.code).toBe(0);
    expect(text(no)).toBe(`The following items are about to be destroyed\nVM : ${uuid} (xe-prompted)\nType 'yes' to continue\nAborted (you typed: 'no')\n`);
    expect(await vmUuids()).toContain(uuid);
    const yes = await xe(as(['vm-uninstall', `uuid=${uuid}`]), { input: 'YES\n' });
    expect(yes.code).toBe(0);
    expect(text(yes)).toBe(`The following items are about to be destroyed\nVM : ${uuid} (xe-prompted)\nType 'yes' to continue\nAll objects destroyed\n`);
    expect(await vmUuids()).not.toContain(uuid);
  });
});

describe('xe: output and exit codes', () => {
  it('lists the VMs, in full and --minimal', async () => {
    const uuids = await vmUuids();
    const full = await xe(as(['vm-list', 'params=uuid']));
    expect(full.code).toBe(0);
    expect(full.stderr).toBe('');
    const listed = [...text(full).matchAll(/^uuid \( RO\)\s*: (\S+)$/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual([...uuids].sort());
    const min = await xe(as(['vm-list', '--minimal']));
    expect(min.code).toBe(0);
    expect(text(min).trim().split(',').sort()).toEqual([...uuids].sort());
  });

  it('prints the server errors on stderr and exits 1', async () => {
    const bad = await xe(['-s', '127.0.0.1', '-p', String(port), '-u', 'root', '-pw', 'wrong', 'vm-list']);
    expect(bad).toMatchObject({ code: 1, stderr: "Authentication failed\nFor usage run: 'xe help'\n" });
    const unknown = await xe(as(['no-such-command']));
    expect(unknown).toMatchObject({ code: 1, stderr: "Unknown command: no-such-command\nFor usage run: 'xe help'\n" });
    expect(text(unknown)).toBe('');
  });

  it('says when nothing listens, and shows its usage and version', async () => {
    const free = createServer();
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', r));
    const closed = (free.address() as AddressInfo).port;
    await new Promise((r) => free.close(r));
    expect(await xe(['-s', '127.0.0.1', '-p', String(closed), 'vm-list'])).toMatchObject({ code: 1, stderr: 'Error: Connection refused (calling connect )\n' });
    const version = await xe(['-version']);
    expect(version.code).toBe(0);
    expect(text(version)).toBe('ThinCLI protocol: 0.2\n');
    const usage = await xe([]);
    expect(usage.code).toBe(0);
    expect(usage.stderr).toMatch(/^Usage:\n {2}\S+ <command>\n/);
    const badPort = await xe(['-p', 'eighty', 'vm-list']);
    expect(badPort.code).toBe(0);
    expect(badPort.stderr.startsWith('Port number must be an integer (0-65535)\nUsage:\n')).toBe(true);
  });
});

describe('xe: where its settings come from', () => {
  it('reads ~/.xe, below XE_EXTRA_ARGS, below the command line', async () => {
    const home = mkdtempSync(join(dir, 'home-'));
    writeFileSync(join(home, '.xe'), `server=127.0.0.1\nport=${port}\n\nusername=root\npassword=wrong\n`);
    const uuids = (await vmUuids()).sort();
    // ~/.xe alone: its password is wrong
    expect(await xe(['vm-list', '--minimal'], { env: { HOME: home } })).toMatchObject({ code: 1, stderr: "Authentication failed\nFor usage run: 'xe help'\n" });
    // XE_EXTRA_ARGS overrides it
    const env = await xe(['vm-list', '--minimal'], { env: { HOME: home, XE_EXTRA_ARGS: `password=${PASSWORD}` } });
    expect(env.code).toBe(0);
    expect(text(env).trim().split(',').sort()).toEqual(uuids);
    // the command line overrides both
    const cmd = await xe(['-pw', 'wrong', 'vm-list'], { env: { HOME: home, XE_EXTRA_ARGS: `password=${PASSWORD}` } });
    expect(cmd.code).toBe(1);
    // a line without '=' voids the file
    writeFileSync(join(home, '.xe'), `server=127.0.0.1\nport=${port}\nnonsense\n`);
    const broken = await xe(['vm-list'], { env: { HOME: home } });
    expect(broken.stderr.startsWith('Error parsing rc file. No defaults loaded\n')).toBe(true);
  });

  it('reads the user and password from -pwf', async () => {
    const ok = await xe(['-s', '127.0.0.1', '-p', String(port), '-pwf', join(dir, 'pwf'), 'vm-list', '--minimal']);
    expect(ok.code).toBe(0);
    expect(text(ok).trim().split(',').sort()).toEqual((await vmUuids()).sort());
    writeFileSync(join(dir, 'pwf-short'), 'root\n');
    expect(await xe(['-p', String(port), '-pwf', join(dir, 'pwf-short'), 'vm-list'])).toMatchObject({
      code: 1, stderr: 'Error: password file format: expecting username on the first line, password on the second line\n',
    });
    expect(await xe(['-p', String(port), '-pwf', join(dir, 'absent'), 'vm-list'])).toMatchObject({ code: 1, stderr: `Error opening password file '${join(dir, 'absent')}'\n` });
  });
});

describe('xe: TLS', () => {
  it('talks TLS to a server other than 127.0.0.1, trusting the certificate file given', async () => {
    const tls = await startServer({ port: 0, https: true, memory: true, password: PASSWORD, authFailDelay: 0, closeGrace: 0 });
    try {
      const tlsPort = new URL(tls.urls[0]).port;
      // the emulator's self-signed certificate, as a client first sees it
      const der = await new Promise<Buffer>((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: Number(tlsPort), rejectUnauthorized: false }, () => {
          resolve(s.getPeerCertificate().raw);
          s.end();
        });
        s.on('error', reject);
      });
      const pem = join(dir, 'emu.pem');
      writeFileSync(pem, `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`);
      const args = ['-s', 'localhost', '-p', tlsPort, '-u', 'root', '-pw', PASSWORD, 'host-list', '--minimal'];
      const host = [...tls.emu.db.table('host').keys()].map((r) => tls.emu.db.get('host', r)!.uuid);
      // unknown certificate: refused
      const refused = await xe(args);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/^Error: TLS connection to localhost port \d+ failed: /);
      const trusted = await xe([...args, '--cafile', pem]);
      expect(trusted).toMatchObject({ code: 0, stderr: '' });
      expect(text(trusted)).toBe(`${host.join(',')}\n`);
      // --nossl on a TLS port: the server does not answer the protocol
      expect((await xe([...args, '--nossl'])).code).toBe(1);
    } finally {
      await tls.close();
    }
  });
});

describe('xe: transfers', () => {
  const newVdi = async (name: string, size: number): Promise<string> => {
    const sr = await localStorage(x);
    const ref = await x.call('VDI.create', { SR: sr, virtual_size: String(size), type: 'user', name_label: name, sharable: false, read_only: false, other_config: {} });
    return (await x.call('VDI.get_uuid', ref)) as string;
  };

  it('vdi-import then vdi-export give back the same bytes, to a file or to stdout', async () => {
    const size = 2 << 20;
    const [a, b] = [await newVdi('xe-a', size), await newVdi('xe-b', size)];
    const src = randomBytes(size);
    writeFileSync(join(dir, 'src.raw'), src);
    expect(await xe(as(['vdi-import', `uuid=${a}`, 'filename=src.raw']))).toMatchObject({ code: 0, stderr: '' });
    const exp = await xe(as(['vdi-export', `uuid=${a}`, 'filename=a.raw']));
    expect(exp).toMatchObject({ code: 0, stderr: '' });
    expect(readFileSync(join(dir, 'a.raw')).equals(src)).toBe(true);
    // a file that exists is never overwritten
    const again = await xe(as(['vdi-export', `uuid=${a}`, 'filename=a.raw']));
    expect(again).toMatchObject({ code: 1, stderr: 'Operation failed. Error: Sys_error("a.raw: File exists")\n' });
    expect(await xe(as(['vdi-import', `uuid=${b}`, 'filename=a.raw']))).toMatchObject({ code: 0 });
    const out = await xe(as(['vdi-export', `uuid=${b}`, 'filename=']));
    expect(out.code).toBe(0);
    expect(out.stdout.equals(src)).toBe(true);
    // every task of the transfers ended and went
    expect(await tasksLeft()).toEqual([]);
  }, 60_000);

  it('fails an import of a file that does not exist, and leaves no task behind', async () => {
    const a = await newVdi('xe-missing', 1 << 20);
    const r = await xe(as(['vdi-import', `uuid=${a}`, 'filename=missing.raw']));
    expect(r).toMatchObject({ code: 1, stderr: "Operation failed. Error: file 'missing.raw' does not exist\n" });
    expect(await tasksLeft()).toEqual([]);
  });

  it('vm-export writes the XVA the server exports', async () => {
    const [tpl] = Object.keys((await x.call('VM.get_all_records_where', 'field "is_a_template"="true"')) as object);
    const vm = await x.call('VM.clone', tpl, 'xe-export');
    await x.call('VM.set_is_a_template', vm, false);
    const r = await xe(as(['vm-export', 'vm=xe-export', 'filename=vm.xva']));
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(text(r)).toBe('Export succeeded\n');
    const xva = readFileSync(join(dir, 'vm.xva'));
    // a tar whose first member is the VM's metadata
    expect(xva.toString('latin1', 0, 7)).toBe('ova.xml');
    expect(xva.length % 512).toBe(0);
    expect(await tasksLeft()).toEqual([]);
  }, 60_000);

  it('vm-export then vm-import make the same VM again, and print its uuid', async () => {
    const r = await xe(as(['vm-export', 'vm=xe-export', 'filename=round.xva']));
    expect(r.code).toBe(0);
    const imp = await xe(as(['vm-import', 'filename=round.xva']));
    expect(imp).toMatchObject({ code: 0, stderr: '' });
    const uuid = text(imp).trim();
    const vm = await x.call('VM.get_by_uuid', uuid);
    expect(await x.call('VM.get_name_label', vm)).toBe('xe-export');
    // metadata only: a dry run makes nothing and says so with the placeholder uuid
    expect((await xe(as(['vm-export', `uuid=${uuid}`, 'filename=meta', 'metadata=true']))).code).toBe(0);
    const dry = await xe(as(['vm-import', 'filename=meta', 'metadata=true', 'dry-run=true']));
    expect(dry).toMatchObject({ code: 0, stderr: '' });
    expect(text(dry)).toBe('xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n');
    expect(await xe(as(['vm-import', 'filename=round.xva', 'dry-run=true']))).toMatchObject({ code: 1, stderr: 'Only metadata import function support dry-run\n' });
    expect(await tasksLeft()).toEqual([]);
  }, 60_000);

  it('uploads a file the command names when the server loads it', async () => {
    const missing = await xe(as(['pool-install-ca-certificate', 'filename=absent.pem']));
    expect(missing).toMatchObject({ code: 1, stderr: 'Failed to read certificate\n' });
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
    // the file reaches the server, whose API call is not implemented in the emulator
    const loaded = await xe(as(['pool-install-ca-certificate', 'filename=ca.pem']));
    expect(loaded.code).toBe(1);
    expect(loaded.stderr).toBe('The function is not implemented\nfunction: pool.install_ca_certificate\n');
    expect(existsSync(join(dir, 'ca.pem'))).toBe(true);
  });
});

/** The client side of the protocol by hand: what the server sends, and what we answer. */
class RawCli {
  private readonly decoder = new Decoder();
  private readonly got: Command[] = [];
  private waiter: (() => void) | null = null;
  readonly socket: Socket;
  constructor(args: string[]) {
    const body = Buffer.from([...args, 'username=root', `password=${PASSWORD}`].join('\n'));
    this.socket = tcpConnect(port, '127.0.0.1', () => {
      this.socket.write(`POST /cli HTTP/1.0\r\ncontent-length: ${body.length}\r\n\r\n`);
      this.socket.write(body);
    });
    this.socket.on('data', (c: Buffer) => {
      for (const d of this.decoder.push(c)) {
        if (d.t === 'handshake') this.socket.write(encodeHandshake());
        else if (d.t === 'message' && d.message.kind === 'Command') this.got.push(d.message.command);
      }
      this.waiter?.();
    });
    this.socket.on('close', () => this.waiter?.());
  }
  /** The next command from the server. */
  async next(): Promise<Command> {
    while (this.got.length === 0) {
      if (this.socket.destroyed) throw new Error('connection closed');
      await new Promise<void>((r) => (this.waiter = r));
    }
    return this.got.shift()!;
  }
  send(...ms: (Message | Buffer)[]): void {
    for (const m of ms) this.socket.write(Buffer.isBuffer(m) ? m : encodeMessage(m));
  }
  /** The commands up to Exit, and its code. */
  async rest(): Promise<{ commands: Command[]; code: number }> {
    const commands: Command[] = [];
    for (;;) {
      const c = await this.next();
      if (c.t === 'Exit') return { commands, code: c.code };
      commands.push(c);
    }
  }
}

const response = (r: 'OK' | 'Failed' | 'Wait'): Message => ({ kind: 'Response', response: r });

describe('the CLI server: exchanges with the client', () => {
  const newVdi = async (name: string): Promise<string> => {
    const ref = await x.call('VDI.create', { SR: await localStorage(x), virtual_size: String(1 << 20), type: 'user', name_label: name, sharable: false, read_only: false, other_config: {} });
    return (await x.call('VDI.get_uuid', ref)) as string;
  };

  it('waits through Wait heartbeats while the client downloads', async () => {
    const uuid = await newVdi('raw-get');
    const size = Number(await x.call('VDI.get_virtual_size', await x.call('VDI.get_by_uuid', uuid)));
    const cli = new RawCli(['vdi-export', `uuid=${uuid}`, 'filename=x.raw']);
    const get = await cli.next();
    expect(get).toMatchObject({ t: 'HttpGet', filename: 'x.raw' });
    cli.send(response('Wait'), response('Wait'));
    const res = await fetch(new URL((get as { path: string }).path, srv.urls[0]));
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(size);
    cli.send(response('Wait'), response('OK'));
    expect(await cli.rest()).toEqual({ commands: [], code: 0 });
    expect(await tasksLeft()).toEqual([]);
  });

  it('ends the task of a client that goes away before it transfers', async () => {
    const cli = new RawCli(['vdi-import', `uuid=${await newVdi('raw-gone')}`, 'filename=x.raw']);
    expect(await cli.next()).toMatchObject({ t: 'HttpPut', filename: 'x.raw' });
    expect(await x.call('task.get_all')).toHaveLength(1);
    cli.socket.destroy();
    expect(await tasksLeft()).toEqual([]);
  });

  it('reads a loaded file from Blob chunks, or says it could not', async () => {
    const ok = new RawCli(['pool-install-ca-certificate', 'filename=ca.pem']);
    expect(await ok.next()).toEqual({ t: 'Load', filename: 'ca.pem' });
    const blob = (length: number): Message => ({ kind: 'Blob', blob: { t: 'Chunk', length } });
    ok.send(response('OK'), blob(3), Buffer.from('abc'), blob(2), Buffer.from('de'), { kind: 'Blob', blob: { t: 'End' } });
    const r = await ok.rest();
    expect(r.code).toBe(1);
    expect(r.commands).toEqual([
      { t: 'PrintStderr', text: 'The function is not implemented\n' },
      { t: 'PrintStderr', text: 'function: pool.install_ca_certificate\n' },
    ]);
    const failed = new RawCli(['pool-install-ca-certificate', 'filename=ca.pem']);
    expect(await failed.next()).toMatchObject({ t: 'Load' });
    failed.send(response('Failed'));
    expect(await failed.rest()).toEqual({ commands: [{ t: 'PrintStderr', text: 'Failed to read certificate\n' }], code: 1 });
  });
});
