// The page catches up after its server was unreachable: the gateway the page talks to (a
// `devart serve --roles gateway` of the test's own) is stopped for 5 s while tasks are created,
// claimed and completed through the other instance, then started again on the same port. The
// page reconnects by itself and shows every change, each in its column, with nothing missing.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, createTasks, devart, drainQueue, eventually, freePort, launch, live, newContext, ready, registerAgent, signIn, startGateway } from './support.mjs';

let browser;
let gateway;

before(async () => {
  browser = await launch();
});
after(async () => {
  await gateway?.stop();
  await browser?.close();
});

test('the board catches up after its server was away for 5 s', async () => {
  await drainQueue();
  const port = await freePort();
  gateway = await startGateway(port);
  const prefix = `Outage ${Date.now()}`;
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin, { url: gateway.url, path: `/tasks?q=${encodeURIComponent(prefix)}` });
  await ready(page);
  const [first] = await createTasks(1, () => ({ title: `${prefix} before` }));
  await page.locator(`[data-column="PENDING"] [data-task-id="${first}"]`).waitFor({ timeout: 5000 });

  await gateway.stop();
  await page.locator('[data-connection="reconnecting"]').waitFor({ timeout: 5000 });
  const away = Date.now();
  // Meanwhile, through the other instance: new tasks, one claimed and completed, one in progress.
  const agent = await registerAgent(`outage-agent-${Date.now()}`, []);
  const created = await createTasks(6, (i) => ({ title: `${prefix} during ${i}`, priority: 5 }));
  const claim = async () => (await agent.call('mutation { claimTask(leaseSeconds: 600) { id } }')).claimTask.id;
  const completed = await eventually(claim, { timeout: 5000, what: 'a claim' });
  await agent.call('mutation($id: ID!) { completeTask(taskId: $id) { id } }', { id: completed });
  const working = await claim();
  await api('mutation($id: ID!) { cancelTask(id: $id) { id } }', { id: first });
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 5000 - (Date.now() - away))));

  gateway = await startGateway(port);
  const back = Date.now();
  await page.locator('[data-connection="connected"]').waitFor({ timeout: 30_000 });
  console.log(`outage: reconnected ${Date.now() - back} ms after the server was back`);

  const expected = {};
  const all = [first, ...created];
  for (const id of all) expected[id] = (await api('query($id: ID!) { task(id: $id) { status } }', { id })).task.status;
  assert.equal(expected[completed], 'COMPLETED');
  assert.equal(expected[working], 'IN_PROGRESS');
  assert.equal(expected[first], 'CANCELLED');
  await eventually(
    async () => {
      const shown = await page.locator('[data-column] [data-task-id]').evaluateAll((cards) =>
        // A card being moved between columns may be detached for a moment: asked again then.
        cards.map((c) => [c.getAttribute('data-task-id'), c.closest('[data-column]')?.getAttribute('data-column')]),
      );
      const where = Object.fromEntries(shown);
      return all.every((id) => where[id] === expected[id]) && shown.length === all.length;
    },
    { timeout: 10_000, what: 'every change on the board, each in its column' },
  );
  await context.close();
});
