// Agents' requests for approval from the dashboard. An agent working a task asks twice before
// risky steps: the supervisor's overview lists both at once, with when each runs out and what it
// comes to by default; the supervisor approves one with a note through the dialog and the agent
// reads the answer in its heartbeat; the other, unanswered, leaves the list by itself at its
// deadline and reads as denied and timed out on the task's page. A viewer sees the same requests
// without a button to answer them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  api,
  devart,
  drainQueue,
  eventually,
  launch,
  makeUser,
  newContext,
  ready,
  registerAgent,
  screenshot,
  seriousViolations,
  signIn,
} from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const ASK = `mutation($task: ID!, $action: String!, $details: JSON, $timeout: Int, $approve: Boolean!) {
  requestApproval(taskId: $task, action: $action, details: $details, timeoutSeconds: $timeout, approveOnTimeout: $approve) {
    id status expiresAt } }`;

test('a supervisor answers one request from the overview; the other comes to its default by itself', async () => {
  const stamp = Date.now();
  const capability = `migrations-${stamp}`;
  const title = `Migrate the billing tables ${stamp}`;
  // Leftovers of earlier tests that any agent could claim would be handed out before this task.
  await drainQueue();
  const agent = await registerAgent(`migrator-${stamp}`, [capability]);
  const taskId = (
    await api('mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }', {
      input: { title, priority: 5, requiredCapabilities: [capability] },
    })
  ).createTask.id;
  const claimed = await eventually(async () => (await agent.call('mutation { claimTask(leaseSeconds: 600) { id } }')).claimTask, {
    what: 'the claim of the new task',
  });
  assert.equal(claimed.id, taskId, 'the agent holds the task made for it');

  const supervisor = await makeUser('SUPERVISOR');
  const viewer = await makeUser('VIEWER');
  const supervising = await newContext(browser, { bypassCSP: true });
  const overview = await supervising.newPage();
  const problems = [];
  overview.on('pageerror', (error) => problems.push(error.message));
  await signIn(overview, supervisor);
  await ready(overview);
  const viewing = await newContext(browser);
  const watcher = await viewing.newPage();
  await signIn(watcher, viewer, { path: `/tasks/${taskId}` });
  await ready(watcher);
  await watcher.getByText('No agent asked for approval on this task.').waitFor();

  const ask = async (action, details, timeout, approve) =>
    (await agent.call(ASK, { task: taskId, action, details, timeout, approve })).requestApproval;
  const item = (page, id) => page.locator(`[data-approval-request="${id}"]`);

  // The first request arrives on the open pages by itself.
  const push = await ask('force-push to main', { branch: 'main', commits: 3, reason: 'history rewrite' }, 7200, true);
  assert.equal(push.status, 'PENDING');
  await item(overview, push.id).waitFor({ timeout: 2000 });
  const listed = await item(overview, push.id).innerText();
  assert.match(listed, /force-push to main/);
  assert.match(listed, new RegExp(`on ${title}`));
  assert.match(listed, new RegExp(`asked by migrator-${stamp} \\(attempt 1\\)`));
  assert.match(listed, /runs out in 2\.0 h → approved by default/);
  assert.equal(await item(overview, push.id).locator('a').getAttribute('href'), `/tasks/${taskId}`);
  assert.ok(!(await item(overview, push.id).locator('pre').isVisible()), 'the details are collapsed');
  await item(overview, push.id).getByText('Details').click();
  assert.match(await item(overview, push.id).locator('pre').innerText(), /"commits": 3/);
  assert.deepEqual(await item(overview, push.id).getByRole('button').allInnerTexts(), ['Approve', 'Deny']);

  // The viewer reads it on the task's page, live, and on the overview, without a button.
  const onTask = item(watcher, push.id);
  await onTask.waitFor({ timeout: 2000 });
  assert.match(await onTask.innerText(), /Pending\s+force-push to main/);
  assert.equal(await onTask.getByRole('button').count(), 0, 'no answer button for a viewer on the task page');
  await watcher.goto(devart.url);
  await ready(watcher);
  await item(watcher, push.id).waitFor();
  assert.equal(await watcher.locator('.approval-queue button').count(), 0, 'no answer button for a viewer on the overview');
  await screenshot(watcher, 'overview-approval-requests-viewer');

  // The second one runs out in two seconds and is denied by default.
  const wipe = await ask('drop the staging database', { database: 'staging' }, 2, false);
  await item(overview, wipe.id).waitFor({ timeout: 2000 });
  assert.match(await item(overview, wipe.id).innerText(), /→ denied by default/);
  assert.deepEqual(
    await overview.locator('.approval-queue [data-approval-request]').evaluateAll((items) => items.map((i) => i.dataset.approvalRequest)),
    [wipe.id, push.id],
    'the one that runs out first comes first',
  );
  assert.deepEqual(await seriousViolations(overview), [], 'the overview with requests for approval passes axe');
  await screenshot(overview, 'overview-approval-requests');
  await item(overview, wipe.id).waitFor({ state: 'detached', timeout: 4000 });
  const goneAfterMs = Date.now() - new Date(wipe.expiresAt).getTime();
  console.log(`a request that ran out left the overview ${goneAfterMs} ms after its deadline`);
  assert.ok(goneAfterMs < 1500, `left ${goneAfterMs} ms after its deadline`);
  await item(watcher, wipe.id).waitFor({ state: 'detached', timeout: 1000 });

  // The supervisor approves the first one with a note, through the dialog.
  await item(overview, push.id).getByRole('button', { name: 'Approve' }).click();
  const dialog = overview.getByRole('dialog', { name: 'Approve request' });
  assert.match(await dialog.innerText(), new RegExp(`force-push to main on ${title}`));
  await dialog.getByLabel('Note (optional)').fill('only after the freeze ends');
  await screenshot(overview, 'overview-approve-request');
  const clicked = Date.now();
  await dialog.getByRole('button', { name: 'Approve', exact: true }).click();
  await dialog.waitFor({ state: 'detached' });
  await item(overview, push.id).waitFor({ state: 'detached', timeout: 1000 });
  console.log(`an approved request left the overview ${Date.now() - clicked} ms after the click`);
  await item(watcher, push.id).waitFor({ state: 'detached', timeout: 1000 });

  // The agent reads both answers in its heartbeat.
  const beat = await agent.call('mutation($id: ID!) { heartbeat(taskId: $id) { approvals { id status note } } }', { id: taskId });
  assert.deepEqual(beat.heartbeat.approvals, [
    { id: push.id, status: 'APPROVED', note: 'only after the freeze ends' },
    { id: wipe.id, status: 'DENIED', note: null },
  ]);

  // The task's page lists both as they ended, without buttons.
  await overview.goto(`${devart.url}/tasks/${taskId}`);
  await ready(overview);
  const approved = item(overview, push.id);
  const denied = item(overview, wipe.id);
  await approved.waitFor();
  assert.equal(await approved.getAttribute('data-status'), 'APPROVED');
  assert.match(await approved.innerText(), /Approved\s+force-push to main/);
  await eventually(async () => /Answered by user:\S+/.test(await approved.innerText()), { what: 'who answered' });
  assert.match(await approved.innerText(), /Note: only after the freeze ends/);
  assert.match(await approved.locator('pre').innerText(), /"reason": "history rewrite"/);
  assert.equal(await denied.getAttribute('data-status'), 'DENIED');
  assert.match(await denied.innerText(), /Denied\s+drop the staging database/);
  assert.match(await denied.innerText(), /Timed out: nobody answered by .+, so it was denied by default/);
  assert.equal(await overview.locator('[data-approval-request] button').count(), 0, 'nothing left to answer');
  assert.deepEqual(await seriousViolations(overview), [], 'the task page with requests for approval passes axe');
  await screenshot(overview, 'task-approval-requests');

  // Who decided: the supervisor for one, the system at the deadline for the other.
  const events = await api('query($id: String!) { events(streamId: $id, first: 50) { edges { node { type actor { kind } } } } }', {
    id: `task-${taskId}`,
  });
  const deciders = events.events.edges.filter((e) => e.node.type === 'TaskApprovalDecided').map((e) => e.node.actor.kind);
  assert.deepEqual(deciders.sort(), ['SYSTEM', 'USER']);
  assert.deepEqual(problems, [], 'no script error');

  // Nothing claimable left behind.
  await agent.call('mutation($id: ID!) { completeTask(taskId: $id) { id } }', { id: taskId });
  await supervising.close();
  await viewing.close();
});
