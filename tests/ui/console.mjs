// The web console in a real browser against a real `weft serve`: sign in,
// watch a run's graph go from running to succeeded, read a failed step's
// error in its drawer, cancel a run, pause and resume a schedule, and a
// screenshot of every page.
//
// Env: WEFT_URL (http://127.0.0.1:PORT), WEFT_API_KEY (tenant default, with
// the bundled example components published).

import { api, check, env, launch, run, shot } from './lib.mjs';

const base = env('WEFT_URL');
const key = env('WEFT_API_KEY');
const client = api(base, key);

/** A run worth looking at: a slow first step, a fan-out with a failed step carried on, a for_each, a join. */
const ORDERS = {
  name: 'orders',
  steps: [
    { id: 'approval', signal: 'approved' },
    { id: 'prepare', component: 'sleep@1', needs: ['approval'], input: { ms: 1500 } },
    { id: 'price', component: 'echo@1', input: { slept: '${steps.prepare.output.slept_ms}' } },
    { id: 'reserve', component: 'sleep@1', needs: ['prepare'], input: { ms: 200 } },
    { id: 'notify', component: 'log@1', needs: ['prepare'], input: { message: 'order accepted' } },
    {
      id: 'validate', component: 'fail@1', needs: ['prepare'], on_error: 'continue',
      input: { code: 'invalid_order', message: 'order 42 has no shipping address' },
    },
    {
      id: 'lines', component: 'echo@1', needs: ['prepare'], for_each: '${input.lines}', max_concurrency: 2,
      input: { line: '${item}', at: '${index}' },
    },
    {
      id: 'ship', component: 'echo@1', needs: ['reserve', 'notify', 'validate', 'lines'],
      input: { price: '${steps.price.output}', lines: '${steps.lines.output}' },
    },
  ],
  output: '${steps.ship.output}',
};

async function setUp() {
  const template = await client.put('/v1/workflows/greet/1.0.0', {
    steps: [
      { id: 'wait', component: 'sleep@1', input: { ms: 10 } },
      { id: 'say', component: 'echo@1', needs: ['wait'], input: { text: 'hello, ${input.who}' } },
    ],
    output: '${steps.say.output.text}',
  });
  check([200, 201].includes(template.status), `publishing a template: ${template.status} ${JSON.stringify(template.body)}`);
  const schedule = await client.post('/v1/schedules', {
    name: 'nightly-greeting', cron: '0 3 * * *', workflow: 'greet@^1', input: { who: 'night shift' },
  });
  check([201, 409].includes(schedule.status), `creating a schedule: ${schedule.status} ${JSON.stringify(schedule.body)}`);
}

async function signIn(page) {
  const response = await page.goto(`${base}/ui/`);
  const headers = response.headers();
  check(headers['content-security-policy']?.includes("script-src 'self'"), `CSP: ${headers['content-security-policy']}`);
  check(headers['x-content-type-options'] === 'nosniff', 'nosniff');
  check(headers['referrer-policy'] === 'no-referrer', 'referrer policy');
  await page.getByLabel('API key').fill('weft_0000');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#sign-in-error', { hasText: 'not valid' }).waitFor();
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('nav a[aria-current="page"]', { hasText: 'Runs' }).waitFor();
  const stored = await page.evaluate(() => sessionStorage.getItem('weft.api_key'));
  check(stored === key, 'the key is kept in session storage');
}

async function watchRun(page) {
  const id = await client.submit(ORDERS, { lines: [3, 1, 4, 1, 5, 9] });
  await page.goto(`${base}/ui/#/runs/${id}`);
  const prepare = page.locator('[data-step="prepare"]');
  // The run waits for a signal until the page follows it, so that nothing
  // depends on how fast the page opens.
  await page.waitForFunction(() => document.querySelector('[data-step="approval"]')?.classList.contains('s-waiting'), null, { timeout: 20_000 });
  await page.locator('#live', { hasText: 'live' }).waitFor();
  const signal = await client.post(`/v1/runs/${id}/signals/approved`, { payload: { by: 'ada' } });
  check(signal.status === 202, `signal: ${signal.status} ${JSON.stringify(signal.body)}`);
  // The next step is seen running, then succeeded: the node's class and label change in place.
  await page.waitForFunction(() => document.querySelector('[data-step="prepare"]')?.classList.contains('s-running'), null, { timeout: 20_000 });
  check((await prepare.getAttribute('aria-label')) === 'prepare: running', 'aria-label while running');
  const before = await prepare.elementHandle();
  await page.waitForFunction(() => document.querySelector('[data-step="prepare"]')?.classList.contains('s-succeeded'), null, { timeout: 30_000 });
  check(await before.evaluate((el) => el.isConnected), 'the node was updated in place, not redrawn');
  check((await prepare.getAttribute('aria-label')) === 'prepare: succeeded', 'aria-label once succeeded');
  await page.locator('#run-status .badge', { hasText: 'succeeded' }).waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => document.querySelector('[data-step="ship"]')?.classList.contains('s-succeeded'));
  check(await page.locator('[data-step="validate"].s-failed').count() === 1, 'validate is drawn failed');
  // for_each progress, from the items events and the run read at its end.
  await page.waitForFunction(() => document.querySelector('[data-step="lines"]')?.getAttribute('aria-label') === 'lines: succeeded (6/6 items)');
  await shot(page, 'run');

  // A failed step's drawer, opened by click: its error.
  await page.locator('[data-step="validate"]').click();
  const drawer = page.locator('#drawer[data-step="validate"]');
  await drawer.waitFor();
  await drawer.locator('.step-error .message', { hasText: 'order 42 has no shipping address' }).waitFor();
  check((await drawer.locator('.step-error').innerText()).includes('invalid_order'), 'the error code is shown');
  await shot(page, 'drawer');
  await page.keyboard.press('Escape');
  await drawer.waitFor({ state: 'hidden' });
  check(await page.evaluate(() => document.activeElement?.dataset?.step) === 'validate', 'focus returns to the step');

  // By keyboard: arrows move between steps, Enter opens the drawer.
  await page.keyboard.press('ArrowRight');
  const focused = await page.evaluate(() => document.activeElement?.dataset?.step);
  check(focused && focused !== 'validate', `arrow key moves the focus (${focused})`);
  await page.keyboard.press('Enter');
  await page.locator(`#drawer[data-step="${focused}"]`).waitFor();
  await page.keyboard.press('Escape');

  // The log step's drawer has its logs.
  await page.locator('[data-step="notify"]').focus();
  await page.keyboard.press(' ');
  await page.locator('#drawer[data-step="notify"] ol.logs li', { hasText: 'order accepted' }).first().waitFor();
  await page.locator('#drawer[data-step="notify"] .json-block', { hasText: 'logged' }).waitFor();
  await page.keyboard.press('Escape');
  return id;
}

async function cancelRun(page) {
  const id = await client.submit({
    name: 'long-haul',
    steps: [{ id: 'haul', component: 'sleep@1', input: { ms: 60_000 } },
      { id: 'after', component: 'echo@1', needs: ['haul'], input: {} }],
  });
  await page.goto(`${base}/ui/#/runs/${id}`);
  await page.waitForFunction(() => document.querySelector('[data-step="haul"]')?.classList.contains('s-running'), null, { timeout: 20_000 });
  await page.locator('#cancel-run').click();
  await page.locator('#cancel-confirm').click();
  await page.locator('#run-status .badge', { hasText: 'cancelled' }).waitFor({ timeout: 20_000 });
  await page.waitForFunction(() => document.querySelector('[data-step="haul"]')?.classList.contains('s-cancelled'), null, { timeout: 20_000 });
  check(await page.locator('#cancel-run').isHidden(), 'no cancel button on an ended run');
  const run = await client.ended(id);
  check(run.status === 'cancelled', `the run is ${run.status}`);
  return id;
}

async function runsList(page, watched, cancelled) {
  await page.goto(`${base}/ui/#/runs`);
  await page.locator(`tr[data-run="${watched}"]`).waitFor();
  await page.locator(`tr[data-run="${cancelled}"] .badge`, { hasText: 'cancelled' }).waitFor();
  await shot(page, 'runs');
  await page.getByLabel('Status').selectOption('cancelled');
  await page.locator(`tr[data-run="${cancelled}"]`).waitFor();
  await page.locator(`tr[data-run="${watched}"]`).waitFor({ state: 'detached' });
  check(page.url().includes('status=cancelled'), 'the filter is in the address');
  await page.getByLabel('Workflow').fill('orders');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('tbody td', { hasText: 'No matching run' }).or(page.locator('tbody td', { hasText: 'No runs' })).waitFor();
  // A run submitted now appears without reloading (the page refreshes itself).
  await page.goto(`${base}/ui/#/runs`);
  await page.locator(`tr[data-run="${watched}"]`).waitFor();
  const fresh = await client.submit('greet@^1', { who: 'ada' });
  await page.locator(`tr[data-run="${fresh}"]`).waitFor({ timeout: 15_000 });
  await page.locator(`tr[data-run="${fresh}"] a`).click();
  await page.locator('#run-id', { hasText: fresh }).waitFor();
  await page.locator('#run-status .badge', { hasText: 'succeeded' }).waitFor({ timeout: 30_000 });
}

async function registry(page) {
  await page.goto(`${base}/ui/#/components`);
  const echo = page.locator('tr[data-component="echo@1.0.0"]');
  await echo.locator('.digest', { hasText: 'sha256:' }).waitFor();
  check((await echo.innerText()).includes('KiB'), 'a size is shown');
  await shot(page, 'components');

  await page.goto(`${base}/ui/#/workflows`);
  await page.locator('.template-detail h2', { hasText: 'greet@1.0.0' }).waitFor();
  await page.locator('.template-detail pre', { hasText: 'hello, ${input.who}' }).waitFor();
  await shot(page, 'workflows');

  await page.goto(`${base}/ui/#/schedules`);
  const row = page.locator('tr[data-schedule="nightly-greeting"]');
  await row.getByRole('button', { name: 'Pause schedule nightly-greeting' }).click();
  await row.getByRole('button', { name: 'Resume schedule nightly-greeting' }).waitFor();
  check((await client.get('/v1/schedules/nightly-greeting')).body.paused === true, 'paused through the button');
  await shot(page, 'schedules');
  await row.getByRole('button', { name: 'Resume schedule nightly-greeting' }).click();
  await row.getByRole('button', { name: 'Pause schedule nightly-greeting' }).waitFor();
  check((await client.get('/v1/schedules/nightly-greeting')).body.paused === false, 'resumed through the button');
}

run(async () => {
  await setUp();
  const browser = await launch();
  const { page, problems } = browser;
  page.setDefaultTimeout(15_000);
  // The key goes in a header, never in an address.
  const leaks = [];
  page.on('request', (r) => {
    if (r.url().includes(key)) leaks.push(r.url());
    const url = new URL(r.url());
    if (url.pathname.startsWith('/v1/') && !r.headers().authorization) {
      leaks.push(`no Authorization on ${r.url()}`);
    }
  });
  try {
    await signIn(page);
    const watched = await watchRun(page);
    const cancelled = await cancelRun(page);
    await runsList(page, watched, cancelled);
    await registry(page);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').waitFor();
    check(await page.evaluate(() => sessionStorage.getItem('weft.api_key')) === null, 'signing out forgets the key');
  } finally {
    await browser.close();
  }
  check(!leaks.length, `requests: ${leaks.join(', ')}`);
  // Loading a resource that answered 401 (the wrong key) is logged too; anything else is a fault.
  const faults = problems.filter((p) => !p.includes('status of 401'));
  check(!faults.length, faults.join('\n'));
  console.log('console scenario passed');
});
