// What a supervisor does from the dashboard, end to end: create a task, edit it, cancel it, retry
// a failed one and delete it, each through its form or confirmation; register an agent, whose API
// key is shown once with a copy button and never again.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, drainQueue, launch, newContext, ready, registerAgent, signIn } from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('create, edit and cancel a task from the board', async () => {
  const title = `Made in the browser ${Date.now()}`;
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin, { path: `/tasks?q=${encodeURIComponent(title)}` });
  await ready(page);

  await page.getByRole('button', { name: 'New task' }).click();
  const form = page.getByRole('dialog', { name: 'New task' });
  await form.getByLabel('Title').fill(title);
  await form.getByLabel('Priority').selectOption('4');
  await form.getByLabel('Required capabilities').fill('rust, ui');
  await form.getByRole('button', { name: 'Create task' }).click();
  const card = page.locator('[data-column="PENDING"] [data-task-id]').filter({ hasText: title });
  await card.waitFor();
  assert.equal(await card.locator('.prio-badge').innerText(), 'P4');
  const id = await card.getAttribute('data-task-id');
  const made = (await api('query($id: ID!) { task(id: $id) { title priority requiredCapabilities createdBy } }', { id })).task;
  assert.deepEqual(made.requiredCapabilities, ['rust', 'ui']);
  assert.equal(made.priority, 4);

  await card.getByRole('button', { name: `Actions for ${title}` }).click();
  const actions = page.getByRole('dialog', { name: title });
  await actions.getByRole('button', { name: 'Edit' }).click();
  const edit = page.getByRole('dialog', { name: 'Edit task' });
  await edit.getByLabel('Title').fill(`${title} (edited)`);
  await edit.getByRole('button', { name: 'Save' }).click();
  await page.locator(`[data-task-id="${id}"] .card-title`).filter({ hasText: '(edited)' }).waitFor();

  await actions.getByRole('button', { name: 'Cancel' }).click();
  const confirm = page.getByRole('dialog', { name: 'Cancel task' });
  await confirm.getByLabel('Reason (optional)').fill('made by a test');
  await confirm.getByRole('button', { name: 'Cancel task' }).click();
  await page.locator(`[data-column="CANCELLED"] [data-task-id="${id}"]`).waitFor();
  assert.equal((await api('query($id: ID!) { task(id: $id) { status } }', { id })).task.status, 'CANCELLED');
  await context.close();
});

test('retry a failed task and delete it from its page', async () => {
  await drainQueue();
  const agent = await registerAgent(`failing-${Date.now()}`, ['flaky']);
  const id = (
    await api('mutation { createTask(input: {title: "Fails once", priority: 5, maxAttempts: 1, requiredCapabilities: ["flaky"]}) { id } }')
  ).createTask.id;
  const claimed = await agent.call('mutation { claimTask(capabilities: ["flaky"], leaseSeconds: 600) { id } }');
  assert.equal(claimed.claimTask.id, id);
  await agent.call('mutation($id: ID!) { failTask(taskId: $id, error: "the disk is full", retryable: false) { id } }', { id });

  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin, { path: `/tasks/${id}` });
  await ready(page);
  await page.getByText('the disk is full', { exact: true }).waitFor();
  await page.locator('main .facts .status', { hasText: 'Failed' }).waitFor();
  await page.getByRole('button', { name: 'Retry' }).click();
  await page.getByRole('dialog', { name: 'Retry task' }).getByRole('button', { name: 'Retry task' }).click();
  await page.locator('main .facts .status', { hasText: 'Pending' }).waitFor({ timeout: 5000 });

  await page.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog', { name: 'Delete task' }).getByRole('button', { name: 'Delete task' }).click();
  await page.waitForURL(`${devart.url}/tasks`);
  await page.waitForTimeout(200);
  const gone = await api('query($id: ID!) { task(id: $id) { id status } }', { id });
  assert.ok(gone.task === null || gone.task.status === 'DELETED', JSON.stringify(gone));
  await context.close();
});

test('a registered agent’s API key is shown once, copied, and never again', async () => {
  const name = `browser-agent-${Date.now()}`;
  const context = await newContext(browser);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: devart.url });
  const page = await context.newPage();
  await signIn(page, devart.admin, { path: '/agents' });
  await ready(page);
  await page.getByRole('button', { name: 'Register agent' }).click();
  const form = page.getByRole('dialog', { name: 'Register an agent' });
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Capabilities').fill('rust, docs');
  await form.getByRole('button', { name: 'Register' }).click();
  const shown = page.getByRole('dialog', { name: `${name} is registered` });
  const key = (await shown.locator('[data-secret]').innerText()).trim();
  assert.match(key, /^dva_/);
  await shown.getByRole('button', { name: 'Copy' }).click();
  await shown.getByText('Copied to the clipboard').waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
  const me = await api('{ me { role agentId } }', {}, { token: key });
  assert.ok(me.me.agentId, 'the key shown works');

  await shown.getByRole('button', { name: 'I have stored it' }).click();
  await page.locator('[data-agent-id] th').filter({ hasText: name }).waitFor();
  assert.ok(!(await page.content()).includes(key), 'the key is gone from the page');
  await page.reload();
  await ready(page);
  assert.ok(!(await page.content()).includes(key), 'and not shown again');
  await context.close();
});
