// Changes made through the API by another client show on an open page, without polling: tasks
// created, claimed and completed on the board, a budget charged on the overview, an agent
// deactivated on Agents, a setting changed on Settings. Each kind is measured over 20 trials
// (p50 and p95 printed); each change must arrive within a generous 5 s.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, drainQueue, launch, live, newContext, registerAgent, signIn, summary } from './support.mjs';

const TRIALS = 20;
const ARRIVAL = 5000;

let browser;
let page;
let context;

before(async () => {
  browser = await launch();
  context = await newContext(browser);
  page = await context.newPage();
  await signIn(page, devart.admin);
  await live(page);
});
after(async () => {
  await context?.close();
  await browser?.close();
});

/// How long from just before `change` until `shown` holds on the page.
async function timed(change, shown, arg) {
  const start = performance.now();
  await change();
  await page.waitForFunction(shown, arg, { polling: 'raf', timeout: ARRIVAL });
  return performance.now() - start;
}

async function open(path) {
  await page.goto(`${devart.url}${path}`);
  await page.locator('main h1').first().waitFor();
  await page.waitForFunction(() => !document.querySelector('main .loading'), null, { timeout: 10_000 });
  await live(page);
}

const inColumn = ([status, id]) => !!document.querySelector(`[data-column="${status}"] [data-task-id="${id}"]`);

test('tasks created, claimed and completed elsewhere show on an open board', async () => {
  await drainQueue();
  const agent = await registerAgent(`live-agent-${Date.now()}`, []);
  await open('/tasks');
  const times = { created: [], claimed: [], completed: [] };
  for (let i = 0; i < TRIALS; i++) {
    let id;
    const title = `Live trial ${Date.now()}-${i}`;
    times.created.push(
      await timed(
        async () => {
          id = (await api('mutation($t: String!) { createTask(input: {title: $t, priority: 5}) { id } }', { t: title })).createTask.id;
        },
        (t) => document.querySelector('[data-column="PENDING"]')?.textContent.includes(t),
        title,
      ),
    );
    times.claimed.push(
      await timed(
        async () => {
          const claimed = await agent.call('mutation { claimTask(leaseSeconds: 600) { id } }');
          assert.equal(claimed.claimTask?.id, id, 'the agent claimed the task just made');
        },
        inColumn,
        ['IN_PROGRESS', id],
      ),
    );
    times.completed.push(
      await timed(
        () => agent.call('mutation($id: ID!) { completeTask(taskId: $id) { id } }', { id }),
        inColumn,
        ['COMPLETED', id],
      ),
    );
    assert.equal(await page.locator(`[data-task-id="${id}"]`).count(), 1, 'the card is in one column only');
  }
  for (const [kind, values] of Object.entries(times)) console.log(`live task ${kind}: ${summary(values)}`);
});

test('a budget charged elsewhere shows on an open overview', async () => {
  const service = (await api('mutation { registerService(input: {name: "live-budget", monthlyBudget: "100000.00"}) { id } }'))
    .registerService.id;
  await open('/');
  const tile = '[data-tile="tile-month"]';
  const times = [];
  for (let i = 0; i < TRIALS; i++) {
    const before = await page.locator(tile).innerText();
    times.push(
      await timed(
        () =>
          api('mutation($input: RecordChargeInput!) { recordCharge(input: $input) { spent } }', {
            input: { serviceId: service, amount: '1.25', idempotencyKey: `live-${Date.now()}-${i}` },
          }),
        ([selector, was]) => document.querySelector(selector)?.textContent !== was,
        [tile, before],
      ),
    );
  }
  const services = (await api('{ services { spent } }')).services;
  const cents = services.reduce((n, s) => n + Math.round(Number(s.spent) * 100), 0);
  const shown = (await page.locator(tile).innerText()).replace(/[^0-9.]/g, '');
  assert.equal(Math.round(Number(shown) * 100), cents, 'the tile shows every charge');
  console.log(`live budget charged: ${summary(times)}`);
});

test('an agent deactivated elsewhere shows on an open Agents page', async () => {
  const agent = await registerAgent(`toggled-${Date.now()}`, ['rust']);
  await open('/agents');
  const status = `[data-agent-id="${agent.id}"] [data-agent-status]`;
  await page.locator(status).waitFor();
  const times = [];
  for (let i = 0; i < TRIALS; i++) {
    const active = i % 2 === 1;
    times.push(
      await timed(
        () => api('mutation($id: ID!, $active: Boolean!) { setAgentActive(id: $id, active: $active) { id } }', { id: agent.id, active }),
        ([selector, want]) => document.querySelector(selector)?.textContent.trim().endsWith(want),
        [status, active ? ' Active' : 'Inactive'],
      ),
    );
  }
  console.log(`live agent deactivated/activated: ${summary(times)}`);
});

test('a setting changed elsewhere shows on an open Settings page', async (t) => {
  await open('/');
  if (!(await page.locator('header nav a[href="/settings"]').count())) {
    t.skip('no Settings screen in this build');
    return;
  }
  await open('/settings');
  const key = 'queue.defaultLeaseSeconds';
  const times = [];
  for (let i = 0; i < TRIALS; i++) {
    const value = 1000 + i * 7 + (Date.now() % 7);
    times.push(
      await timed(
        () => api('mutation($key: String!, $value: JSON!) { updateSetting(key: $key, value: $value) { key } }', { key, value }),
        (want) => {
          const main = document.querySelector('main');
          if (!main) return false;
          if (main.innerText.includes(want)) return true;
          return [...main.querySelectorAll('input, textarea')].some((field) => field.value.includes(want));
        },
        String(value),
      ),
    );
  }
  await api('mutation($key: String!) { updateSetting(key: $key, value: 30) { key } }', { key });
  console.log(`live setting changed: ${summary(times)}`);
});
