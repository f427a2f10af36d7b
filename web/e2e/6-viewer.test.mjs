// A viewer reads everything and changes nothing: a read-only notice, no write control on any
// screen, a task's page and a document's page (no add, create, edit, retag, remove, delete, cancel,
// retry, drag or priority menu), no People screen, and a mutation forced from the page over its
// own origin's socket refused with FORBIDDEN.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, launch, makeUser, newContext, ready, signIn } from './support.mjs';

const WRITE =
  /^(new|add|create|edit|save|cancel|retry|delete|remove|retag|register|rotate|deactivate|activate|reactivate|increase|acknowledge|start|reset|change|define|update|apply|pause|resume|approve|reject)\b/i;

let browser;
let viewer;
let taskId;
let documentId;

before(async () => {
  browser = await launch();
  viewer = await makeUser('VIEWER');
  taskId = (await api('mutation { createTask(input: {title: "Seen by a viewer"}) { id } }')).createTask.id;
  documentId = (
    await api('mutation { addDocument(input: {title: "Read by a viewer", content: "# Read by a viewer\\n\\nNothing to change here.", tags: ["viewer"]}) { id } }')
  ).addDocument.id;
});
after(async () => {
  // The other tests' knowledge base stays as it was.
  if (documentId) await api('mutation($id: ID!) { removeDocument(id: $id) }', { id: documentId }).catch(() => {});
  await browser?.close();
});

test('a viewer sees a read-only notice and no write control anywhere', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, viewer);
  await ready(page);
  assert.match(await page.getByRole('note').innerText(), /viewer/i);
  assert.match(await page.locator('[data-user]').innerText(), /viewer/i);
  const paths = await page.locator('header nav a').evaluateAll((links) => links.map((a) => new URL(a.href).pathname));
  assert.ok(!paths.includes('/people'), 'no People screen for a viewer');
  const found = {};
  assert.ok(paths.includes('/knowledge'), 'the Knowledge screen is checked');
  for (const path of [...paths, `/tasks/${taskId}`, `/knowledge/${documentId}`, '/knowledge?q=viewer']) {
    await page.goto(`${devart.url}${path}`);
    await ready(page);
    const buttons = await page.locator('main button, main [role="button"], main input[type="submit"]').allInnerTexts();
    const writes = buttons.map((b) => b.trim()).filter((b) => WRITE.test(b));
    const draggable = await page.locator('main [draggable="true"]').count();
    const priorityMenus = await page.locator('main select[id^="prio-"]').count();
    if (writes.length || draggable || priorityMenus) found[path] = { writes, draggable, priorityMenus };
  }
  assert.deepEqual(found, {});
  await context.close();
});

test('a mutation forced from a viewer’s page is refused with FORBIDDEN', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, viewer, { path: '/tasks' });
  await ready(page);
  const answer = await page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const socket = new WebSocket(`${location.origin.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
        const timer = setTimeout(() => reject(new Error('no answer')), 5000);
        socket.onopen = () => socket.send(JSON.stringify({ type: 'connection_init', payload: {} }));
        socket.onmessage = (message) => {
          const data = JSON.parse(message.data);
          if (data.type === 'connection_ack') {
            socket.send(
              JSON.stringify({
                id: 'forced',
                type: 'subscribe',
                payload: { query: 'mutation { createTask(input: {title: "forced by a viewer"}) { id } }' },
              }),
            );
          } else if (data.id === 'forced' && (data.type === 'next' || data.type === 'error')) {
            clearTimeout(timer);
            socket.close();
            resolve(data);
          }
        };
        socket.onclose = (event) => reject(new Error(`closed ${event.code} ${event.reason}`));
      }),
  );
  const errors = answer.type === 'error' ? answer.payload : answer.payload.errors;
  assert.equal(errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(answer));
  const tasks = await api('{ tasks(first: 20) { edges { node { title } } } }');
  assert.ok(!tasks.tasks.edges.some((e) => e.node.title === 'forced by a viewer'), 'nothing was created');
  await context.close();
});
