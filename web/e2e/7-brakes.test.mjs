// Brakes from the dashboard. The kill switch: a supervisor pauses claims from the overview, every
// open page shows the pause at once (the board included), an agent is handed nothing and can read
// why, and the resume button hands work out again. Approvals: a task that requires one waits on
// the overview and in the board's own column until a supervisor approves or rejects it there.
// Spending caps: a task created with one shows what is settled and reserved against it, refuses
// what would pass it, and a supervisor raises it from the task's page; an agent's daily cap is set
// from the agents page, which shows what it spent today. Every decision is in the
// audit trail with who made it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, eventually, launch, newContext, ready, registerAgent, screenshot, signIn } from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  // Whatever happened above, the next tests find work handed out.
  await api('mutation { resumeClaims(scope: {kind: ALL}) { reason } }').catch(() => {});
  await browser?.close();
});

test('a supervisor pauses claims from the overview and resumes them from the board', async () => {
  const agent = await registerAgent(`paused-${Date.now()}`, []);
  await api('mutation { createTask(input: {title: "Held back by the pause"}) { id } }');
  const context = await newContext(browser);
  const overview = await context.newPage();
  await signIn(overview, devart.admin);
  await ready(overview);
  const board = await context.newPage();
  await board.goto(`${devart.url}/tasks`);
  await ready(board);

  await overview.getByRole('button', { name: 'Pause claims…' }).click();
  const dialog = overview.getByRole('dialog', { name: 'Pause claims' });
  await dialog.getByLabel('What to pause').selectOption('ALL');
  await dialog.getByLabel('Reason').fill('Bad deploy of the build image');
  await dialog.getByRole('button', { name: 'Pause', exact: true }).click();
  await dialog.waitFor({ state: 'detached' });

  const banner = (page) => page.locator('.pause').filter({ hasText: 'Bad deploy of the build image' });
  await banner(overview).waitFor();
  assert.match(await banner(overview).innerText(), /Claims paused\s+for all work/);
  await banner(board).waitFor({ timeout: 2000 });
  await screenshot(overview, 'overview-paused');

  const claimed = await agent.call('mutation { claimTask { id } }');
  assert.equal(claimed.claimTask, null, 'nothing is handed out while paused');
  const why = await agent.call('{ claimPauses { reason scope { kind } } }');
  assert.deepEqual(why.claimPauses, [{ reason: 'Bad deploy of the build image', scope: { kind: 'ALL' } }]);

  await board.getByRole('button', { name: 'Resume all work' }).click();
  await banner(overview).waitFor({ state: 'detached' });
  await banner(board).waitFor({ state: 'detached' });
  const resumed = await eventually(async () => (await agent.call('mutation { claimTask { id } }')).claimTask, {
    what: 'a claim after the resume',
  });
  assert.ok(resumed.id);
  await agent.call('mutation($id: ID!) { completeTask(taskId: $id) { id } }', { id: resumed.id });

  const audit = await api('{ events(types: ["ClaimsPaused", "ClaimsResumed"], first: 10) { edges { node { type actor { kind id } } } } }');
  const types = audit.events.edges.map((e) => e.node.type);
  assert.deepEqual(types.slice(-2), ['ClaimsPaused', 'ClaimsResumed']);
  assert.ok(audit.events.edges.every((e) => e.node.actor.kind === 'USER'));
  await context.close();
});

test('a supervisor approves one task and rejects another from the board', async () => {
  const create = (title) =>
    api('mutation($title: String!) { createTask(input: {title: $title, requiresApproval: true}) { id } }', { title });
  const stamp = Date.now();
  const yes = (await create(`Rotate the signing key ${stamp}`)).createTask.id;
  const no = (await create(`Drop the old tables ${stamp}`)).createTask.id;
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin);
  await ready(page);
  await page.locator(`[data-awaiting-task="${yes}"]`).waitFor();
  await page.locator(`[data-awaiting-task="${no}"]`).waitFor();

  await page.goto(`${devart.url}/tasks?q=${stamp}`);
  await ready(page);
  const card = (id, status) => page.locator(`[data-column="${status}"] [data-task-id="${id}"]`);
  await card(yes, 'AWAITING_APPROVAL').waitFor();
  await screenshot(page, 'tasks-awaiting-approval');

  await card(yes, 'AWAITING_APPROVAL').getByRole('button', { name: /^Actions for/ }).click();
  await page.getByRole('dialog', { name: `Rotate the signing key ${stamp}` }).getByRole('button', { name: 'Approve' }).click();
  const approve = page.getByRole('dialog', { name: 'Approve task' });
  await approve.getByLabel('Note (optional)').fill('the window is open');
  await approve.getByRole('button', { name: 'Approve task' }).click();
  await card(yes, 'PENDING').waitFor();

  await card(no, 'AWAITING_APPROVAL').getByRole('button', { name: /^Actions for/ }).click();
  await page.getByRole('dialog', { name: `Drop the old tables ${stamp}` }).getByRole('button', { name: 'Reject' }).click();
  const reject = page.getByRole('dialog', { name: 'Reject task' });
  assert.ok(await reject.getByRole('button', { name: 'Reject task' }).isDisabled(), 'a rejection needs a reason');
  await reject.getByLabel('Reason').fill('no backup yet');
  await reject.getByRole('button', { name: 'Reject task' }).click();
  await card(no, 'REJECTED').waitFor();

  const history = async (id) =>
    (await api('query($id: ID!) { events(streamId: $id, first: 10) { edges { node { type actor { kind } data } } } }', { id: `task-${id}` }))
      .events.edges.map((e) => e.node);
  const approved = (await history(yes)).find((e) => e.type === 'TaskApproved');
  assert.deepEqual(approved, { type: 'TaskApproved', actor: { kind: 'USER' }, data: { note: 'the window is open' } });
  const rejected = (await history(no)).find((e) => e.type === 'TaskRejected');
  assert.deepEqual(rejected, { type: 'TaskRejected', actor: { kind: 'USER' }, data: { reason: 'no backup yet' } });
  // Leave nothing claimable behind for the tests after this one.
  await api('mutation($id: ID!) { cancelTask(id: $id) { id } }', { id: yes });
  await context.close();
});

test('a supervisor creates a capped task that waits for approval, sees its spending and raises its cap', async () => {
  const stamp = Date.now();
  const title = `Bounded refactor ${stamp}`;
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin);
  await page.goto(`${devart.url}/tasks?q=${stamp}`);
  await ready(page);
  await page.getByRole('button', { name: 'New task' }).click();
  const form = page.getByRole('dialog', { name: 'New task' });
  await form.getByLabel('Title').fill(title);
  await form.getByLabel('Spending cap').fill('3.5x');
  assert.ok(await form.getByRole('button', { name: 'Create task' }).isDisabled(), 'a cap is an amount');
  await form.getByLabel('Spending cap').fill('3.00');
  await form.getByLabel(/Requires a supervisor's approval/).check();
  await form.getByRole('button', { name: 'Create task' }).click();
  await form.waitFor({ state: 'detached' });
  const card = page.locator('[data-column="AWAITING_APPROVAL"] [data-task-id]').filter({ hasText: title });
  await card.waitFor();
  const id = await card.getAttribute('data-task-id');

  // An agent spends on it through the API: the page shows what is settled and reserved.
  const service = (await api(`mutation { registerService(input: {name: "capped-${stamp}", monthlyBudget: "100.00"}) { id } }`))
    .registerService.id;
  const spend = (cost, key) =>
    api(
      'mutation($s: ID!, $t: ID!, $c: Decimal!, $k: String!) { authorizeUsage(serviceId: $s, estimatedCost: $c, taskId: $t, idempotencyKey: $k) { approved reason } }',
      { s: service, t: id, c: cost, k: key },
    );
  assert.equal((await spend('1.25', `a-${stamp}`)).authorizeUsage.approved, true);
  const refused = (await spend('2.00', `b-${stamp}`)).authorizeUsage;
  assert.deepEqual(refused, {
    approved: false,
    reason: "the task's spending cap of 3.00 has no room for 2.00: 0.00 settled and 1.25 reserved",
  });
  await page.goto(`${devart.url}/tasks/${id}`);
  await ready(page);
  const spending = page.locator('dd.spending');
  await spending.waitFor();
  assert.match(await spending.innerText(), /0\.00 settled, 1\.25 reserved of a 3\.00 cap \(1\.75 left\)/);
  await page.getByRole('button', { name: 'Change cap' }).click();
  const dialog = page.getByRole('dialog', { name: 'Spending cap' });
  await dialog.getByLabel('Cap').fill('5.00');
  await dialog.getByRole('button', { name: 'Set cap' }).click();
  await dialog.waitFor({ state: 'detached' });
  await eventually(async () => /of a 5\.00 cap \(3\.75 left\)/.test(await spending.innerText()), { what: 'the raised cap on the page' });
  await screenshot(page, 'task-spending-cap');
  assert.equal((await spend('2.00', `c-${stamp}`)).authorizeUsage.approved, true, 'the raised cap makes room');
  await api('mutation($id: ID!) { cancelTask(id: $id) { id } }', { id });
  await context.close();
});

test("a supervisor caps an agent's daily spending from the agents page and sees what it spent today", async () => {
  const stamp = Date.now();
  const agent = await registerAgent(`capped-${stamp}`, []);
  const service = (await api(`mutation { registerService(input: {name: "daily-${stamp}", monthlyBudget: "100.00"}) { id } }`))
    .registerService.id;
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin);
  await page.goto(`${devart.url}/agents`);
  await ready(page);
  const row = page.locator(`[data-agent-id="${agent.id}"]`);
  await row.waitFor();
  const spending = row.locator('[data-agent-spending]');
  await eventually(async () => /0\.00 settled, 0\.00 reserved \(no daily cap\)/.test(await spending.innerText()), {
    what: 'no spending yet',
  });
  await row.getByRole('button', { name: 'Daily cap' }).click();
  const dialog = page.getByRole('dialog', { name: `Daily spending cap of ${agent.name}` });
  await dialog.getByLabel('Cap per day').fill('2.00');
  await dialog.getByRole('button', { name: 'Set cap' }).click();
  await dialog.waitFor({ state: 'detached' });

  const spend = (cost, key) =>
    agent.call(
      'mutation($s: ID!, $c: Decimal!, $k: String!) { authorizeUsage(serviceId: $s, estimatedCost: $c, idempotencyKey: $k) { approved reason } }',
      { s: service, c: cost, k: key },
    );
  assert.equal((await spend('1.50', `a-${stamp}`)).authorizeUsage.approved, true);
  assert.deepEqual((await spend('1.00', `b-${stamp}`)).authorizeUsage, {
    approved: false,
    reason: "the agent's daily spending cap of 2.00 has no room for 1.00: 0.00 settled today and 1.50 reserved",
  });
  await eventually(async () => /0\.00 settled, 1\.50 reserved of 2\.00 a day/.test(await spending.innerText()), {
    what: "the agent's spending on its row",
  });
  await screenshot(page, 'agents-daily-cap');
  await context.close();
});
