// Reprioritizing on the board: dragging a card onto another priority sends exactly one
// `reprioritizeTask` over the page's socket, survives a reload, and is in the audit trail; the
// card's priority menu does the same from the keyboard.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, launch, newContext, ready, signIn } from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/// Counts the `reprioritizeTask` operations the page sends over its WebSocket.
function countReprioritizations(page) {
  const counter = { sent: 0 };
  page.on('websocket', (socket) => {
    socket.on('framesent', ({ payload }) => {
      const text = typeof payload === 'string' ? payload : payload.toString();
      if (text.includes('"subscribe"') && text.includes('reprioritizeTask')) counter.sent += 1;
    });
  });
  return counter;
}

async function reprioritizedEvents(id) {
  const data = await api(
    'query($stream: String!) { events(streamId: $stream, types: ["TaskReprioritized"], first: 100) { edges { node { type data actor { kind id } } } } }',
    { stream: `task-${id}` },
  );
  return data.events.edges.map((e) => e.node);
}

test('dragging a card onto another priority reprioritizes it once, for good', async () => {
  const title = `Drag me ${Date.now()}`;
  const id = (await api('mutation($t: String!) { createTask(input: {title: $t, priority: 2}) { id } }', { t: title })).createTask.id;
  const context = await newContext(browser);
  const page = await context.newPage();
  const counter = countReprioritizations(page);
  await signIn(page, devart.admin, { path: `/tasks?q=${encodeURIComponent(title)}` });
  await ready(page);
  const card = page.locator(`[data-column="PENDING"] [data-task-id="${id}"]`);
  await card.waitFor();
  assert.equal(await card.locator('.prio-badge').innerText(), 'P2');

  await card.dragTo(page.locator('[data-priority-drop="5"]'));
  await page.waitForFunction((cardId) => document.querySelector(`[data-task-id="${cardId}"] .prio-badge`)?.textContent === 'P5', id, {
    timeout: 5000,
  });
  await page.waitForTimeout(500);
  assert.equal(counter.sent, 1, 'exactly one reprioritizeTask');

  await page.reload();
  await card.waitFor();
  assert.equal(await card.locator('.prio-badge').innerText(), 'P5', 'the new priority survives a reload');
  assert.equal((await api('query($id: ID!) { task(id: $id) { priority } }', { id })).task.priority, 5);
  const events = await reprioritizedEvents(id);
  assert.equal(events.length, 1, 'one TaskReprioritized in the audit trail');
  assert.equal(events[0].actor.kind, 'USER');
  assert.ok(JSON.stringify(events[0].data).includes('5'), JSON.stringify(events[0].data));
  await context.close();
});

test('the card’s priority menu reprioritizes from the keyboard', async () => {
  const title = `Keyboard me ${Date.now()}`;
  const id = (await api('mutation($t: String!) { createTask(input: {title: $t, priority: 2}) { id } }', { t: title })).createTask.id;
  const context = await newContext(browser);
  const page = await context.newPage();
  const counter = countReprioritizations(page);
  await signIn(page, devart.admin, { path: `/tasks?q=${encodeURIComponent(title)}` });
  await ready(page);
  const card = page.locator(`[data-column="PENDING"] [data-task-id="${id}"]`);
  await card.waitFor();
  // Tab from the card's title to its priority menu, then one step up the list: priority 3.
  await card.locator('.card-title').focus();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label') ?? document.activeElement?.id), `prio-${id}`);
  await page.keyboard.press('ArrowUp');
  await page.waitForFunction((cardId) => document.querySelector(`[data-task-id="${cardId}"] .prio-badge`)?.textContent === 'P3', id, {
    timeout: 5000,
  });
  await page.waitForTimeout(300);
  assert.equal(counter.sent, 1);
  assert.equal((await reprioritizedEvents(id)).length, 1);
  await context.close();
});
