// Ten thousand tasks: the board shows its first cards, ready to use, within 1.5 s of being
// opened (one page per column, virtualized), counts them from queueStats, and pages on as a
// column is scrolled.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, createTasks, devart, launch, newContext, ready, screenshot, signIn } from './support.mjs';

const TASKS = 10_000;
const USABLE_MS = 1500;

let browser;
before(async () => {
  browser = await launch();
  const started = performance.now();
  await createTasks(TASKS, (i) => ({
    title: `Bulk task ${i + 1} of ${TASKS}`,
    priority: 1 + (i % 5),
    requiredCapabilities: i % 3 ? ['rust'] : ['docs'],
  }));
  console.log(`scale: created ${TASKS} tasks through the API in ${((performance.now() - started) / 1000).toFixed(1)} s`);
});
after(async () => {
  await browser?.close();
});

test('with 10,000 tasks the board is usable within 1.5 s', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin);
  await ready(page);
  const pending = (await api('{ queueStats { pending } }')).queueStats.pending;
  assert.ok(pending >= TASKS, `queueStats counts ${pending} pending`);

  const timings = [];
  for (let trial = 0; trial < 3; trial++) {
    const start = performance.now();
    await page.goto(`${devart.url}/tasks`);
    const first = page.locator('[data-column="PENDING"] [data-task-id]').first();
    await first.waitFor();
    const visible = performance.now() - start;
    // Usable: the first card's actions open.
    await first.getByRole('button', { name: /^Actions for/ }).click();
    await page.getByRole('dialog').waitFor();
    const usable = performance.now() - start;
    await page.keyboard.press('Escape');
    timings.push({ visible, usable });
    console.log(`scale: board with ${pending} pending: first cards after ${visible.toFixed(0)} ms, usable after ${usable.toFixed(0)} ms`);
  }
  const best = Math.min(...timings.map((t) => t.usable));
  assert.ok(best <= USABLE_MS, `usable after ${best.toFixed(0)} ms`);

  const count = await page.locator('[data-column="PENDING"] [data-count]').innerText();
  assert.equal(count.replace(/\D/g, ''), String(pending), 'the column counts from queueStats');
  const rendered = await page.locator('[data-column="PENDING"] [data-task-id]').count();
  assert.ok(rendered < 60, `only the cards in view are in the document (${rendered})`);
  await screenshot(page, 'tasks-10000');

  // Scrolling to the end of what is loaded pages on through the API.
  const cards = () => page.locator('[data-column="PENDING"] .column-scroll').evaluate((el) => el.scrollHeight);
  const height = await cards();
  await page.locator('[data-column="PENDING"] .column-scroll').evaluate((el) => el.scrollTo(0, el.scrollHeight));
  await page.waitForFunction(
    (h) => document.querySelector('[data-column="PENDING"] .column-scroll').scrollHeight > h,
    height,
    { timeout: 5000 },
  );
  await context.close();
});
