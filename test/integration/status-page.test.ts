// The status page in a real browser: Debian's Chromium, headless, driven by puppeteer-core. The
// page asks for Basic credentials, loads without console errors or failed requests, shows the
// pool's hosts, VMs and SRs, and a VM started by another client (Xen Orchestra's `xen-api`) turns
// Running on the page through the event stream, without a reload. A screenshot of the page is
// kept as a test artifact (test-artifacts/status-page.png).
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Xapi } from 'xen-api';
import type { RunningServer } from '../../server/app.js';
import { startPool } from './helpers/pool.js';
import { controlClient } from '../../server/control/client.js';
import { GiB, MiB, memory, vbdArgs, vdiArgs, vifArgs, vmArgs } from './helpers/records.js';

const CHROMIUM = '/usr/bin/chromium';
const found = existsSync(CHROMIUM);
const PASSWORD = 'status-page-test';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

let srv: RunningServer;
let xapi: Xapi;
let browser: Browser;
let profileDir: string;

/** What went wrong in the page: console errors, uncaught exceptions, failed or refused requests. */
function watch(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${String(e)}`));
  page.on('requestfailed', (r) => {
    // the event stream is cut when the page goes at the end of a test
    problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText ?? ''}`);
  });
  page.on('response', (r) => {
    // 401 is the Basic challenge the browser answers with the credentials
    if (r.status() >= 400 && r.status() !== 401) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  return problems;
}

describe.skipIf(!found)(found ? 'the status page in Chromium' : `the status page in Chromium (skipped: ${CHROMIUM} is absent; install Debian's chromium)`, () => {
  beforeAll(async () => {
    ({ srv } = await startPool(PASSWORD));
    xapi = createClient({ url: srv.urls[0], auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, watchEvents: false });
    await xapi.connect();
    profileDir = mkdtempSync(join(tmpdir(), 'xapi-emu-chromium-'));
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--user-data-dir=${profileDir}`,
      ],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await xapi?.disconnect().catch(() => {});
    await srv?.close();
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  });

  it('shows the pool, then a VM started from a client as Running without a reload', async () => {
    const [sr] = await xapi.call<string[]>('SR.get_by_name_label', 'Local storage');
    const [net] = await xapi.call<string[]>('network.get_all_where', 'field "bridge" = "xenbr0"');
    const vm = await xapi.call<string>('VM.create', vmArgs('page-vm', { ...memory(1 * GiB, 512 * MiB), other_config: { 'xapi-emu-guest-profile': 'agent' } }));
    const vdi = await xapi.call<string>('VDI.create', vdiArgs(sr, 16 * MiB, 'page-disk'));
    await xapi.call('VBD.create', vbdArgs(vm, vdi, '0'));
    await xapi.call('VIF.create', vifArgs(vm, net));
    const uuid = await xapi.call<string>('VM.get_uuid', vm);
    const vdiUuid = await xapi.call<string>('VDI.get_uuid', vdi);
    const hostName = await xapi.call<string>('host.get_name_label', srv.emu.master);

    const page = await browser.newPage();
    const problems = watch(page);
    await page.setViewport({ width: 1400, height: 1000 });
    await page.authenticate({ username: 'root', password: PASSWORD });
    const res = await page.goto(new URL('/xapi-emu/', srv.urls[0]).href, { waitUntil: 'domcontentloaded' });
    expect(res?.status()).toBe(200);

    // the first render, and the stream is up
    await page.waitForFunction(
      (u: string) => document.querySelector(`tr[data-vm="${u}"] .power`)?.textContent === 'Halted' && document.querySelector('#stream')?.textContent === 'live',
      {},
      uuid,
    );
    const hosts = await page.$$eval('#hosts tbody tr[data-host]', (rows) => rows.map((r) => r.querySelector('td')?.textContent ?? ''));
    expect(hosts).toEqual([`${hostName}master`]);
    expect(await page.$eval(`li[data-vdi="${vdiUuid}"] .name`, (e) => e.textContent)).toBe('page-disk');
    expect(await page.$eval('#faults', (e) => e.textContent)).toBe('none');
    expect(await page.$eval('#clock', (e) => e.textContent)).toMatch(/scale 0/);
    // a mark that a reload would lose
    await page.evaluate(() => ((window as unknown as { mark: number }).mark = 42));

    await xapi.call('VM.start', vm, false, false);
    await page.waitForFunction(
      (u: string) => document.querySelector(`tr[data-vm="${u}"] .power`)?.textContent === 'Running',
      {},
      uuid,
    );
    expect(await page.evaluate(() => (window as unknown as { mark?: number }).mark)).toBe(42);
    const row = await page.$eval(`tr[data-vm="${uuid}"]`, (r) => [...r.querySelectorAll('td')].map((c) => c.textContent));
    expect(row[0]).toBe('page-vm');
    expect(row[3]).toBe(hostName);
    // the started guest's disk is served by a tapdisk, shown on the datapath
    await page.waitForFunction(() => document.querySelectorAll('#datapath tr[data-tapdisk]').length > 0);
    // its agent reports an address, and a fault rule shows with its hits
    await page.waitForFunction((u: string) => /\b10\.0\.\d+\.\d+\b/.test(document.querySelector(`tr[data-vm="${u}"]`)?.textContent ?? ''), {}, uuid);
    await controlClient({ url: srv.urls[0], username: 'root', password: PASSWORD }).faults.create({
      match: { method: 'VM.clean_reboot' }, effect: { error: { code: 'VM_BAD_POWER_STATE', params: [] } },
    });
    await page.waitForFunction(() => (document.querySelector('#faults')?.textContent ?? '').includes('VM.clean_reboot'));

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
    expect(existsSync(join(ARTIFACTS, 'status-page.png'))).toBe(true);

    expect(problems).toEqual([]);
    await page.close();
  });

  it('opens with ?session_id= instead of Basic credentials', async () => {
    // a context of its own: no Basic credentials cached from the other page
    const context = await browser.createBrowserContext();
    try {
      const page = await context.newPage();
      const problems = watch(page);
      const res = await page.goto(new URL(`/xapi-emu/?session_id=${encodeURIComponent(xapi.sessionId)}`, srv.urls[0]).href, { waitUntil: 'domcontentloaded' });
      expect(res?.status()).toBe(200);
      await page.waitForFunction(() => document.querySelector('#stream')?.textContent === 'live' && document.querySelectorAll('#vms tr[data-vm]').length > 0);
      expect(await page.$eval('#vms tr[data-vm] td.name', (e) => e.textContent)).toBe('page-vm');
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
