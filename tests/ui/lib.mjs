// What the browser scripts share: playwright-core from where
// scripts/ui-test-deps.sh installed it, Debian's chromium with a fresh
// profile, the API over fetch, and small waiting helpers.

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
export const repo = resolve(here, '../..');
const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repo, 'target');
const deps = process.env.WEFT_UI_DEPS ?? join(target, 'ui-test');
const { chromium } = createRequire(join(deps, 'package.json'))('playwright-core');

/** Where screenshots go: target/ui-screenshots/ unless WEFT_UI_SCREENSHOTS says otherwise. */
export const screenshots = process.env.WEFT_UI_SCREENSHOTS ?? join(target, 'ui-screenshots');

/** An environment variable the Rust side must set. */
export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** Debian's chromium, headless, with a profile of its own removed on close. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'weft-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  return {
    context,
    page,
    problems,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A small client of the API, as the tenant holding `key`. */
export function api(base, key) {
  const call = async (method, path, body) => {
    const init = { method, headers: { Authorization: `Bearer ${key}` } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(new URL(path, base), init);
    const text = await response.text();
    let json = null;
    try { json = JSON.parse(text); } catch { json = text; }
    return { status: response.status, headers: response.headers, body: json };
  };
  return {
    get: (path) => call('GET', path),
    post: (path, body) => call('POST', path, body),
    put: (path, body) => call('PUT', path, body),
    async submit(workflow, input = {}, extra = {}) {
      const answer = await call('POST', '/v1/runs', { workflow, input, ...extra });
      check(answer.status === 202, `submitting a run: ${answer.status} ${JSON.stringify(answer.body)}`);
      return answer.body.id;
    },
    async ended(id, within = 60_000) {
      const deadline = Date.now() + within;
      for (;;) {
        const run = (await call('GET', `/v1/runs/${id}`)).body;
        if (['succeeded', 'failed', 'cancelled'].includes(run.status)) return run;
        check(Date.now() < deadline, `run ${id} did not end within ${within} ms: ${run.status}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

export function check(ok, message) {
  if (!ok) throw new Error(message);
}

/** Saves a full-page screenshot as <name>.png under `screenshots`. */
export async function shot(page, name) {
  mkdirSync(screenshots, { recursive: true });
  const path = join(screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
  return path;
}

/** Runs `main`, printing an error and exiting 1 if it throws. */
export function run(main) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e?.stack ?? String(e));
      process.exit(1);
    },
  );
}
