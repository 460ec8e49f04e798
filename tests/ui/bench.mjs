// The browser half of `cargo bench --bench console`: a signed-in console
// that opens runs and clicks steps when told to, one command a line on
// standard input, answering on standard output:
//
//   open <run>         -> "opened <ms>": the run page, its graph drawn
//   blank              -> "blank": nothing open (about:blank)
//   clicks <run> <n>   -> "click <ms>" n times, then "clicked": a step chosen
//                         across the graph, clicked, until its drawer shows it
//   quit
//
// Env: WEFT_URL, WEFT_API_KEY.

import { createInterface } from 'node:readline';
import { check, env, launch, run, shot } from './lib.mjs';

const base = env('WEFT_URL');
const key = env('WEFT_API_KEY');

async function open(page, id) {
  const started = performance.now();
  await page.goto(`${base}/ui/#/runs/${id}`);
  await page.locator('svg.dag [data-step]').first().waitFor({ timeout: 60_000 });
  // Following the event stream (the run has not ended, it was submitted to start later).
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 60_000 });
  return performance.now() - started;
}

async function clicks(page, id, n) {
  const steps = await page.evaluate(() => [...document.querySelectorAll('svg.dag [data-step]')].map((e) => e.dataset.step));
  check(steps.length > 0, `no steps drawn for ${id}`);
  const times = [];
  for (let k = 0; k < n; k += 1) {
    const step = steps[Math.floor(((k + 0.5) * steps.length) / n)];
    const node = page.locator(`svg.dag [data-step="${step}"]`);
    await node.scrollIntoViewIfNeeded();
    const started = performance.now();
    await node.click();
    await page.locator(`#drawer[data-step="${step}"] h2`, { hasText: step }).waitFor();
    times.push(performance.now() - started);
    if (k === 0) await shot(page, 'bench-drawer');
    await page.keyboard.press('Escape');
    await page.locator('#drawer').waitFor({ state: 'hidden' });
  }
  return times;
}

run(async () => {
  const browser = await launch();
  const { page } = browser;
  page.setDefaultTimeout(30_000);
  await page.goto(`${base}/ui/`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('nav a[aria-current="page"]').waitFor();
  console.log('ready');
  const lines = createInterface({ input: process.stdin });
  try {
    for await (const line of lines) {
      const [command, id, n] = line.trim().split(/\s+/);
      if (command === 'quit') break;
      if (command === 'open') {
        console.log(`opened ${(await open(page, id)).toFixed(1)}`);
      } else if (command === 'blank') {
        await page.goto('about:blank');
        console.log('blank');
      } else if (command === 'clicks') {
        for (const t of await clicks(page, id, Number(n))) console.log(`click ${t.toFixed(1)}`);
        await shot(page, 'bench-run');
        console.log('clicked');
      } else {
        throw new Error(`unknown command ${line}`);
      }
    }
  } finally {
    await browser.close();
  }
  check(!browser.problems.length, browser.problems.join('\n'));
});
