// Fuzzer: hostile requests against a spawned emulator (malformed XML-RPC and JSON-RPC, wrong types,
// huge and deep values, bad refs, random messages of the schema with random arguments, bad query
// strings on /import_raw_vdi and /export_raw_vdi, connections cut mid-request). After each batch the
// server must still be up and answer a login; every answer must come within a bound and be a
// XenAPI answer (a fault or a result, a 4xx from an HTTP handler, xapi's HTML error page), never
// another 5xx or a JavaScript exception passed off as INTERNAL_ERROR; at the end no task of an
// HTTP request may be left pending.
//   npm run robust:fuzz -- [--requests 100000] [--concurrency 8] [--batch 500] [--seed 1] [--timeout 10000] [--max-rss 1024]
import { connect } from 'node:net';
import { messages, type Ty } from '../schema/index.js';
import { PASSWORD, rssMiB, spawnEmulator, stop, waitForLogin } from '../bench/lib.js';
import { Rng, Tally, isMain, localSr, loginAs, option, report, tempDataDir, vdiArgs, MiB } from './lib.js';

export interface FuzzOptions { requests: number; concurrency: number; batch: number; seed: number; timeoutMs: number; maxRssMiB: number }
export interface FuzzResult { requests: number; crashes: number; hangs: number; badAnswers: string[]; rssBefore: number; rssAfter: number; text: string }

/** Messages a fuzzer must not call with a live session: they end the session, stop the host or
 * block by design (event.next/from wait for events). */
const AVOID = /^(session\.(logout|local_logout|change_password|logout_subject_identifier)|event\.(next|from)|host\.(restart_agent|shutdown_agent|shutdown|reboot|emergency_.*|destroy|evacuate)|pool\.(emergency_.*|eject|join.*|designate_new_master)|task\.(destroy|cancel))$/;

/** A JavaScript exception that reached the client as INTERNAL_ERROR. */
const JS_ERROR = /Cannot read propert|is not a function|is not iterable|Maximum call stack|undefined|Cannot convert|Invalid (array|string) length|out of memory/i;

/** name_label of the tasks the HTTP handlers run in */
const HTTP_TASKS = new Set(['Exporting raw VDI', 'Importing raw VDI']);

const callable = [...messages.values()].filter((m) => !AVOID.test(m.wire));

/** The answer's body: a hang is a body that stalls for `timeoutMs`, not one that is long. Disk
 * exports are read up to BODY_CAP bytes, then the client goes away (the fuzzer may have resized its
 * target disk to a GiB; the server's handling of a vanished client is exercised too). */
const BODY_CAP = 8 << 20;
async function readBody(res: Response, timeoutMs: number, keep: boolean): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let bytes = 0;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      reader.read(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('body')), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
    if (next.done) break;
    bytes += next.value.length;
    if (keep) parts.push(next.value);
    else if (bytes >= BODY_CAP) {
      await reader.cancel().catch(() => undefined);
      break;
    }
  }
  return keep ? Buffer.concat(parts).toString('utf8') : '';
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzResult> {
  const data = tempDataDir('fuzz');
  const child = spawnEmulator(['--port', '0', '--data', data.dir, '--seed', `fuzz-${o.seed}`]);
  const rng = new Rng(o.seed);
  const tally = new Tally();
  const badAnswers: string[] = [];
  let sent = 0;
  let hangs = 0;
  let crashes = 0;
  try {
    const base = await new Promise<string>((resolve, reject) => {
      const t = setInterval(() => {
        const m = /XAPI\s+(http:\/\/\S+)/.exec(child.output());
        if (m) (clearInterval(t), resolve(m[1]));
        else if (child.proc.exitCode !== null) (clearInterval(t), reject(new Error(`the emulator exited:\n${child.output()}`)));
      }, 20);
    });
    await waitForLogin(base, child);
    const admin = await loginAs(base, 'root', PASSWORD);
    const sr = await localSr(admin);
    const vdi: string = await admin.call('VDI.create', vdiArgs(sr, 4 * MiB, 'fuzz-target'));
    const realRefs = [vdi, sr, ...((await admin.call('VM.get_all')) as string[]).slice(0, 5), ...((await admin.call('network.get_all')) as string[])];
    const port = Number(new URL(base).port);
    const rssBefore = rssMiB(child.pid);

    // ── value generators ──
    const str = (): string => rng.weighted<() => string>([
      [5, () => 'x'], [2, () => ''], [2, () => 'OpaqueRef:NULL'], [3, () => `OpaqueRef:${rng.int(1e9)}`], [3, () => rng.pick(realRefs)],
      [1, () => 'a'.repeat(rng.between(1, 1 << 20))], [1, () => '\u0000\uffff\ud800<>&"\''], [1, () => '__proto__'],
      [1, () => 'field "name_label" = "x" or ('.repeat(rng.between(1, 6000))], [1, () => String(rng.int(2 ** 31))],
    ])();
    const deep = (d: number): unknown => (d === 0 ? 'leaf' : rng.chance(0.5) ? [deep(d - 1)] : { k: deep(d - 1) });
    const anyValue = (depth = 0): unknown => rng.weighted<() => unknown>([
      [5, () => str()], [3, () => rng.int(2 ** 53) - 2 ** 52], [1, () => rng.next() * 1e308], [1, () => rng.chance(0.5)],
      [1, () => null], [depth < 3 ? 2 : 0, () => Array.from({ length: rng.int(4) }, () => anyValue(depth + 1))],
      [depth < 3 ? 2 : 0, () => Object.fromEntries(Array.from({ length: rng.int(4) }, () => [str().slice(0, 20), anyValue(depth + 1)]))],
      [1, () => deep(rng.between(10, 1200))], [1, () => Array.from({ length: rng.between(1000, 50000) }, () => 1)],
    ])();
    const typed = (ty: Ty): unknown => {
      if (rng.chance(0.2)) return anyValue();
      switch (ty.k) {
        case 'string': return str();
        case 'int': return rng.chance(0.8) ? rng.int(1 << 30) : -rng.int(1 << 30);
        case 'float': return rng.next() * 100;
        case 'bool': return rng.chance(0.5);
        case 'datetime': return rng.pick(['20250101T00:00:00Z', 'garbage', '']);
        case 'ref': return rng.weighted([[3, rng.pick(realRefs)], [2, `OpaqueRef:${rng.int(1e9)}`], [1, 'OpaqueRef:NULL']]);
        case 'enum': return rng.chance(0.8) ? 'halted' : str();
        case 'set': return Array.from({ length: rng.int(3) }, () => typed(ty.of));
        case 'map': return Object.fromEntries(Array.from({ length: rng.int(3) }, () => [String(typed(ty.key)), typed(ty.value)]));
        case 'record': return { name_label: str(), SR: rng.pick(realRefs), virtual_size: rng.int(1 << 24) };
        default: return anyValue();
      }
    };
    const session = () => rng.weighted([[8, admin.session], [1, 'OpaqueRef:bad-session'], [1, str()]]);
    const xmlEsc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
    const xmlValue = (v: unknown, d = 0): string => {
      if (d > 1500) return '<value>deep</value>';
      if (typeof v === 'string') return rng.chance(0.5) ? `<value>${xmlEsc(v)}</value>` : `<value><string>${xmlEsc(v)}</string></value>`;
      if (typeof v === 'number') return Number.isInteger(v) ? `<value><int>${v}</int></value>` : `<value><double>${v}</double></value>`;
      if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
      if (Array.isArray(v)) return `<value><array><data>${v.map((x) => xmlValue(x, d + 1)).join('')}</data></array></value>`;
      if (v && typeof v === 'object') return `<value><struct>${Object.entries(v).map(([k, x]) => `<member><name>${xmlEsc(k)}</name>${xmlValue(x, d + 1)}</member>`).join('')}</struct></value>`;
      return '<value><nil/></value>';
    };
    const xmlCall = (method: string, params: unknown[]) =>
      `<?xml version="1.0"?><methodCall><methodName>${xmlEsc(method)}</methodName><params>${params.map((p) => `<param>${xmlValue(p)}</param>`).join('')}</params></methodCall>`;

    // ── request generators: each gives an HTTP request, or a raw socket script ──
    type Req = { kind: string; method: string; path: string; body?: string | Buffer; type?: string; call?: string } | { kind: string; raw: string | Buffer; cut: boolean };
    const schemaCall = (): { method: string; params: unknown[] } => {
      const m = rng.pick(callable);
      const params = m.params.map((p) => typed(p.ty));
      if (rng.chance(0.1)) params.push(anyValue());
      if (rng.chance(0.1)) params.pop();
      const method = rng.chance(0.1) && m.async ? `Async.${m.wire}` : m.wire;
      return { method, params: m.session ? [session(), ...params] : params };
    };
    const gen = (): Req => rng.weighted<() => Req>([
      [30, () => { const c = schemaCall(); return { kind: 'json-schema', call: c.method, method: 'POST', path: '/jsonrpc', type: 'application/json', body: JSON.stringify({ jsonrpc: '2.0', method: c.method, params: c.params, id: rng.int(1e6) }) }; }],
      [30, () => { const c = schemaCall(); return { kind: 'xml-schema', call: c.method, method: 'POST', path: '/', type: 'text/xml', body: xmlCall(c.method, c.params) }; }],
      [6, () => { const good = xmlCall('VM.get_all', [admin.session]); const cut = rng.between(0, good.length); return { kind: 'xml-malformed', method: 'POST', path: '/', type: 'text/xml', body: rng.pick([good.slice(0, cut), good.slice(cut), good.replace('<int>', '<int>abc'), '<methodCall>', '\u0000\u00ff\u00fe', `<!DOCTYPE x [<!ENTITY a "${'b'.repeat(1000)}">]><methodCall><methodName>&a;&a;&a;</methodName></methodCall>`, '<?xml version="1.0"?><methodCall><methodName>VM.get_all</methodName><params><param><value><array><data>'.repeat(200), good.replace('VM.get_all', 'x'.repeat(100000))]) }; }],
      [6, () => ({ kind: 'json-malformed', method: 'POST', path: '/jsonrpc', type: rng.pick(['application/json', 'text/plain', 'text/xml']), body: rng.pick(['{', '[]', 'null', '{"method":1}', '{"method":"VM.get_all","params":{}}', '{"method":"VM.get_all","params":"s"}', `{"method":"VM.get_all","params":[${'['.repeat(20000)}]}`, '{"__proto__":{"x":1},"method":"session.login_with_password","params":["root"]}', JSON.stringify({ jsonrpc: '3.0', method: 'VM.get_all', params: [admin.session], id: {} })]) })],
      [4, () => { const call = rng.pick(['VM.get_all_records_where', 'VDI.get_all_where']); return { kind: 'where', call, method: 'POST', path: '/jsonrpc', type: 'application/json', body: JSON.stringify({ method: call, params: [admin.session, rng.pick([str(), '('.repeat(rng.between(100, 6000)) + 'true' + ')'.repeat(rng.between(0, 6000)), 'not '.repeat(rng.between(10, 6000)) + 'true', 'field "x" = ', '"'])], id: 1 }) }; }],
      [8, () => {
        const q = new URLSearchParams();
        for (const [k, v] of [['session_id', session()], ['vdi', rng.pick([vdi, str(), ''])], ['sr_id', rng.pick([sr, str()])], ['format', rng.pick(['raw', 'vhd', 'qcow', str()])], ['task_id', rng.pick(['', 'OpaqueRef:nope', str()])], ['chunked', rng.pick(['true', 'x'])]] as const) if (rng.chance(0.6)) q.set(k, String(v).slice(0, 2000));
        const path = rng.pick(['/import_raw_vdi', '/export_raw_vdi', '/import_raw_vdi/', '/export_raw_vdi/']);
        return { kind: `http${path.replace(/\/$/, '')}`, method: path.startsWith('/import') ? 'PUT' : rng.pick(['GET', 'HEAD']), path: `${path}?${q}${rng.chance(0.1) ? '&%zz=%' : ''}`, body: path.startsWith('/import') ? Buffer.alloc(rng.pick([0, 512, 4096]), 1) : undefined };
      }],
      [6, () => {
        const body = xmlCall('VM.get_all', [admin.session]);
        const head = `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: ${body.length}\r\n\r\n`;
        const put = `PUT /import_raw_vdi?session_id=${admin.session}&vdi=${vdi}&format=raw HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n`;
        const raw = rng.pick([head + body.slice(0, rng.int(body.length)), head.slice(0, rng.int(head.length)), put + 'a'.repeat(rng.int(4096)), `GET /export_raw_vdi?session_id=${admin.session}&vdi=${vdi}&format=raw HTTP/1.1\r\nHost: x\r\n\r\n`, 'GARBAGE\r\n\r\n']);
        return { kind: 'cut', raw, cut: true };
      }],
    ])();

    const jsErrorsSeen = new Set<string>();
    /** tallies a XenAPI error; an INTERNAL_ERROR carrying a JavaScript exception is a defect, kept with its call */
    const fault = (r: Req, code: string, detail = ''): void => {
      tally.add(code, detail);
      const text = detail.replace(/&quot;/g, '"');
      if (code !== 'INTERNAL_ERROR' || !JS_ERROR.test(text) || /^Failure\(/.test(text)) return;
      // one line per exception, with the first call that raised it
      const key = text.slice(0, 160);
      if (!jsErrorsSeen.has(key)) badAnswers.push(`INTERNAL_ERROR from a JavaScript exception, first by ${r.kind} ${'call' in r ? r.call : ''}: ${key}`);
      jsErrorsSeen.add(key);
    };
    const send = async (r: Req): Promise<void> => {
      sent++;
      if ('raw' in r) {
        await new Promise<void>((resolve) => {
          const s = connect(port, '127.0.0.1');
          const done = () => (s.destroy(), resolve());
          s.on('error', done);
          s.setTimeout(o.timeoutMs, done);
          s.write(r.raw, () => {
            if (rng.chance(0.5)) s.end(); // half-close, then cut
            setTimeout(done, rng.int(20));
          });
        });
        tally.add(r.kind);
        return;
      }
      let res: Response;
      try {
        res = await fetch(new URL(r.path, base), {
          method: r.method, body: r.method === 'GET' || r.method === 'HEAD' ? undefined : (r.body as unknown as BodyInit),
          headers: r.type ? { 'content-type': r.type } : {}, signal: AbortSignal.timeout(o.timeoutMs),
        });
      } catch (e) {
        if ((e as Error).name === 'TimeoutError') {
          hangs++;
          badAnswers.push(`hang: ${r.kind} ${r.method} ${r.path} ${String(r.body ?? '').slice(0, 120)}`);
        } else tally.add('(transport)', (e as Error).message);
        return;
      }
      let text: string;
      try {
        text = await readBody(res, o.timeoutMs, r.path === '/' || r.path === '/jsonrpc' || res.status !== 200);
      } catch {
        hangs++;
        badAnswers.push(`hang in body: ${r.kind} ${r.path}`);
        return;
      }
      // xapi answers a request it cannot parse, or a handler's failure, with its own HTML error page
      if (res.status === 500 && text.startsWith('<html><body><h1>HTTP 500 internal server error</h1>') && !JS_ERROR.test(text.replace(/&quot;/g, '"'))) {
        return tally.add('HTTP 500 (xapi error page)');
      }
      if (res.status >= 500) {
        badAnswers.push(`HTTP ${res.status}: ${r.kind} ${r.path}: ${text.slice(0, 200)}`);
        tally.add(`HTTP ${res.status}`);
        return;
      }
      if (res.status !== 200) return tally.add(`HTTP ${res.status}`);
      if (r.path === '/jsonrpc') {
        try {
          const j = JSON.parse(text) as { result?: unknown; error?: { message?: string; data?: unknown[] } | unknown[] };
          if (j.error) {
            const desc = Array.isArray(j.error) ? (j.error as string[]) : [String((j.error as { message?: string }).message), ...(((j.error as { data?: string[] }).data) ?? [])];
            fault(r, String(desc[0]), desc.slice(1).join(' '));
          } else tally.ok++;
        } catch {
          badAnswers.push(`not JSON: ${r.kind}: ${text.slice(0, 200)}`);
        }
      } else if (r.path === '/') {
        const described = /<name>ErrorDescription<\/name><value><array><data><value>([^<]*)<\/value>(?:<value>([^<]*)<\/value>)?/.exec(text);
        if (described) fault(r, described[1], described[2]);
        else if (/<name>Status<\/name><value>Success<\/value>|<fault>/.test(text)) tally.ok++;
        else badAnswers.push(`not XML-RPC: ${r.kind}: ${text.slice(0, 200)}`);
      } else tally.ok++;
    };

    let rssMax = rssBefore;
    while (sent < o.requests) {
      const n = Math.min(o.batch, o.requests - sent);
      let i = 0;
      await Promise.all(Array.from({ length: o.concurrency }, async () => {
        while (i < n) {
          i++;
          await send(gen());
        }
      }));
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
        crashes++;
        badAnswers.push(`the emulator died: ${child.output().slice(-2000)}`);
        break;
      }
      try {
        await loginAs(base, 'root', PASSWORD, o.timeoutMs);
      } catch (e) {
        crashes++;
        badAnswers.push(`no login after a batch: ${(e as Error).message}`);
        break;
      }
      rssMax = Math.max(rssMax, rssMiB(child.pid));
    }
    const rssAfter = rssMiB(child.pid);
    // what the pool holds at the end: growth of RSS should follow growth of these
    const counts: string[] = [];
    if (crashes === 0) {
      const end = await loginAs(base, 'root', PASSWORD, o.timeoutMs);
      // the tasks of HTTP handlers end with their request, whatever the client did: give the last
      // ones the time bound of an answer, then any still pending was left behind
      const handlerTasks = async () => {
        const pending = (await end.call('task.get_all_records_where', 'field "status" = "pending"')) as Record<string, { name_label: string }>;
        return Object.values(pending).filter((t) => HTTP_TASKS.has(t.name_label));
      };
      const quietBy = Date.now() + o.timeoutMs;
      let left = await handlerTasks();
      while (left.length > 0 && Date.now() < quietBy) {
        await new Promise((r) => setTimeout(r, 100));
        left = await handlerTasks();
      }
      const byLabel = new Map<string, number>();
      for (const t of left) byLabel.set(t.name_label, (byLabel.get(t.name_label) ?? 0) + 1);
      for (const [label, n] of byLabel) badAnswers.push(`${n} "${label}" task${n > 1 ? 's' : ''} of HTTP requests left pending`);
      counts.push(`pending handler tasks ${left.length}`);
      for (const cls of ['task', 'VM', 'VDI', 'network', 'message']) {
        const all = await end.call(`${cls}.get_all${cls === 'message' ? '_records' : ''}`).catch(() => null);
        counts.push(`${cls} ${all === null ? '?' : Array.isArray(all) ? all.length : Object.keys(all).length}`);
      }
    }
    if (rssMax > o.maxRssMiB) badAnswers.push(`RSS reached ${rssMax.toFixed(0)} MiB (bound ${o.maxRssMiB})`);
    const figures = {
      requests: sent, concurrency: o.concurrency, seed: o.seed, crashes, hangs, 'bad answers': badAnswers.length,
      INTERNAL_ERROR: tally.internalCount, 'RSS before (MiB)': rssBefore, 'RSS max (MiB)': rssMax, 'RSS after (MiB)': rssAfter,
      'objects at the end': counts.join(', '),
    };
    const text = report('fuzz', figures, [...tally.lines(), ...badAnswers.slice(0, 30).map((b) => `  bad: ${b}`)]);
    return { requests: sent, crashes, hangs, badAnswers, rssBefore, rssAfter, text };
  } finally {
    await stop(child, 1000);
    data.remove();
  }
}

export const fuzzFailed = (r: FuzzResult): boolean => r.crashes > 0 || r.hangs > 0 || r.badAnswers.length > 0;

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const r = await runFuzz({
    requests: option(argv, 'requests', 100_000), concurrency: option(argv, 'concurrency', 8), batch: option(argv, 'batch', 500),
    seed: option(argv, 'seed', 1), timeoutMs: option(argv, 'timeout', 10_000), maxRssMiB: option(argv, 'max-rss', 1024),
  });
  console.log(r.text);
  return fuzzFailed(r) ? 1 : 0;
}

if (isMain(import.meta.url)) process.exit(await main());
