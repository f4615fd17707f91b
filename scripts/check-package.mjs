// Checks the package as users get it: packs it (`npm pack`, which builds dist/ and the type
// declarations), unpacks the tarball outside the tree with this tree's dependencies beside it, then
// runs `xapi-emu` from it and logs in over JSON-RPC, and imports it by name to start a pool in
// process. Prints one line per check; exits 1 on the first failure.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'xapi-emu-package-'));
let passed = 0;
let failed = 0;
const check = (name, ok, detail = '') => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  if (ok) passed++;
  else failed++;
  return ok;
};

try {
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
  const files = packed.files.map((f) => f.path);
  check('tarball has the built server', files.includes('dist/server/cli.js') && files.includes('dist/server/index.js'));
  check('tarball has the type declarations', files.includes('types/server/index.d.ts'));
  check('tarball has no TypeScript sources', !files.some((f) => f.startsWith('server/')));
  check(`tarball size`, packed.size < 5 * 1024 * 1024, `${packed.size} bytes, ${files.length} files`);

  // unpacked as npm installs it, with this tree's dependencies
  const pkg = join(work, 'app', 'node_modules', 'xapi-emu');
  mkdirSync(pkg, { recursive: true });
  execFileSync('tar', ['xzf', join(work, packed.filename), '-C', pkg, '--strip-components=1']);
  symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'));

  // the command, as `npx xapi-emu` runs it
  const url = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(pkg, 'bin', 'xapi-emu.js'), '--memory', '--port', '0', '--password', 'pkg-check'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => (child.kill(), reject(new Error(`no URL printed: ${out}`))), 30_000);
    child.stdout.on('data', async (d) => {
      out += d;
      const m = /XAPI\s+(http:\/\/\S+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      try {
        const res = await fetch(`${m[1]}jsonrpc`, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.login_with_password', params: ['root', 'pkg-check'] }) });
        const j = await res.json();
        resolve({ url: m[1], session: j.result });
      } catch (e) {
        reject(e);
      } finally {
        child.kill('SIGTERM');
      }
    });
    child.on('error', reject);
  });
  check('xapi-emu from the package answers a login', /^OpaqueRef:/.test(String(url.session)), url.url);

  // in-process use, by package name
  const consumer = join(work, 'app', 'consumer.mjs');
  writeFileSync(consumer, [
    "import { startEmulator } from 'xapi-emu';",
    "const pool = await startEmulator({ seed: 'package-check' });",
    'const clock = await pool.control.clock.get();',
    'await pool.stop();',
    "console.log(JSON.stringify({ url: pool.url, scale: clock.scale }));",
  ].join('\n'));
  const out = JSON.parse(execFileSync(process.execPath, [consumer], { cwd: join(work, 'app'), encoding: 'utf8' }).trim().split('\n').pop());
  check("import { startEmulator } from 'xapi-emu'", /^http:\/\/127\.0\.0\.1:\d+\/$/.test(out.url) && out.scale === 0, out.url);
  check('package.json exports resolve', existsSync(join(pkg, 'dist', 'server', 'index.js')));
  const xeVersion = execFileSync(process.execPath, [join(pkg, 'bin', 'xe.js'), '-version'], { encoding: 'utf8' }).trim();
  check('xe from the package runs', xeVersion === 'ThinCLI protocol: 0.2', xeVersion);
  check('tarball has the bash completion of xe', existsSync(join(pkg, 'completion', 'xe')));
} catch (e) {
  check('package check', false, String(e?.stack ?? e));
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`package: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
