// The kill switch from the dashboard: a supervisor pauses claims from the overview, every open
// page shows the pause at once (the board included), an agent is handed nothing and can read why,
// and the resume button hands work out again. Both are in the audit trail with who did them.

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
