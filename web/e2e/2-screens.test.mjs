// Every screen renders against the live API, without a Content-Security-Policy violation, gets a
// screenshot (light; the board also dark), and has no serious or critical axe-core violation; the
// header holds every screen's link on one line.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, createTasks, devart, launch, live, newContext, registerAgent, screenshot, seriousViolations, signIn } from './support.mjs';

let browser;
let taskId;
let documentId;

/// Something on every screen: tasks in each status, an agent at work, a service charged, a
/// workflow run, a document in the knowledge base.
async function seed() {
  const agent = await registerAgent('builder-1', ['rust', 'docs']);
  await registerAgent('reviewer-2', ['review']);
  const ids = await createTasks(12, (i) => ({
    title: ['Fix the flaky login test', 'Upgrade tokio', 'Write the release notes', 'Profile the claim query'][i % 4] + ` #${i + 1}`,
    description: 'Seeded by the browser tests.',
    priority: 1 + (i % 5),
    requiredCapabilities: i % 2 ? ['rust'] : ['docs'],
    maxAttempts: 1,
  }));
  taskId = ids[0];
  const claim = () => agent.call('mutation { claimTask(leaseSeconds: 600) { id } }').then((d) => d.claimTask.id);
  const done = await claim();
  await agent.call('mutation($id: ID!) { completeTask(taskId: $id, result: {pr: 42}) { id } }', { id: done });
  const failed = await claim();
  await agent.call('mutation($id: ID!) { failTask(taskId: $id, error: "the build broke", retryable: false) { id } }', { id: failed });
  const working = await claim();
  await agent.call('mutation($id: ID!) { reportProgress(taskId: $id, message: "tests pass", percent: 60) { id } }', { id: working });
  await api('mutation($id: ID!) { cancelTask(id: $id, reason: "not needed") { id } }', { id: ids[ids.length - 1] });
  const service = await api('mutation { registerService(input: {name: "llm-main", monthlyBudget: "100.00"}) { id } }');
  await api(
    'mutation($input: RecordChargeInput!) { recordCharge(input: $input) { spent } }',
    { input: { serviceId: service.registerService.id, amount: '62.50', taskId: done, idempotencyKey: 'seed-1' } },
  );
  const workflow = await api(`mutation { defineWorkflow(input: {name: "release", stages: [
    {key: "build", title: "Build", requiredCapabilities: ["rust"]},
    {key: "test", title: "Test", dependsOn: ["build"]},
    {key: "docs", title: "Docs", dependsOn: ["build"], requiredCapabilities: ["docs"]},
    {key: "ship", title: "Ship", dependsOn: ["test", "docs"]}]}) { id } }`);
  await api('mutation($id: ID!) { startWorkflow(workflowId: $id, input: {tag: "v1.2"}) { id } }', { id: workflow.defineWorkflow.id });
  const runbook = await api(
    `mutation($content: String!) { addDocument(input: {title: "Releasing devart", content: $content, tags: ["release", "runbook"],
      source: "wiki/release", metadata: {owner: "release"}}) { id } }`,
    {
      content:
        '# Releasing devart\n\nTag the release on main, then let the **release** workflow build it.\n\n## Checks\n\n' +
        '- `scripts/test` is green\n- The changelog names every change\n\n## Rollback\n\nRedeploy the previous tag.\n',
    },
  );
  documentId = runbook.addDocument.id;
}

/// The pages beyond the navigation's: a task's, a document's, and a search.
function pages() {
  return [`/tasks/${taskId}`, `/knowledge/${documentId}`, '/knowledge?q=release'];
}

function screenName(path) {
  if (path === '/') return 'overview';
  if (path.startsWith('/tasks/')) return 'task';
  if (path.startsWith('/knowledge/')) return 'document';
  if (path.startsWith('/knowledge?')) return 'knowledge-results';
  return path.slice(1).replace(/\//g, '-');
}

/// Waits until the screen has read what it shows: a heading, and no loading state left.
async function settled(page) {
  await page.locator('main h1').first().waitFor();
  await page.waitForFunction(() => !document.querySelector('main .loading'), null, { timeout: 10_000 });
}

before(async () => {
  browser = await launch();
  await seed();
});
after(async () => {
  // The knowledge base the other tests read stays as it was.
  if (documentId) await api('mutation($id: ID!) { removeDocument(id: $id) }', { id: documentId }).catch(() => {});
  await browser?.close();
});

test('every screen renders against the live API, with screenshots', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(error.message));
  await signIn(page, devart.admin);
  await live(page);
  const paths = await page.locator('header nav a').evaluateAll((links) => links.map((a) => new URL(a.href).pathname));
  assert.ok(paths.includes('/') && paths.includes('/tasks') && paths.includes('/knowledge'), `navigation: ${paths}`);
  // Every link, the theme, the user and the sign-out button on one line, at 1440 px.
  const rows = await page.evaluate(() =>
    [...document.querySelectorAll('header.top .brand, header.top nav a, header.top .who > *')].map((el) => {
      const box = el.getBoundingClientRect();
      return Math.round(box.top + box.height / 2);
    }),
  );
  assert.ok(Math.max(...rows) - Math.min(...rows) <= 4, `the header wraps: ${rows}`);
  for (const path of [...paths, ...pages()]) {
    await page.goto(`${devart.url}${path}`);
    await settled(page);
    const errors = await page.locator('main .error-note').allInnerTexts();
    assert.deepEqual(errors, [], `${path} shows errors`);
    await screenshot(page, screenName(path));
    console.log(`screen ${path}: rendered`);
  }
  assert.deepEqual(problems, [], 'no script error and no CSP violation');
  await context.close();

  const dark = await newContext(browser, { colorScheme: 'dark' });
  const darkPage = await dark.newPage();
  await signIn(darkPage, devart.admin, { path: '/tasks' });
  await settled(darkPage);
  await screenshot(darkPage, 'tasks-dark');
  await dark.close();
});

test('the theme toggle switches between light and dark and is kept', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, devart.admin);
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const light = await background();
  await page.locator('[data-theme-toggle]').click(); // system → light
  await page.locator('[data-theme-toggle]').click(); // light → dark
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
  assert.notEqual(await background(), light);
  await page.reload();
  await page.locator('[data-user]').waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
  await context.close();
});

test('axe-core finds no serious or critical violation on any screen', async () => {
  const context = await newContext(browser, { bypassCSP: true });
  const page = await context.newPage();
  await signIn(page, devart.admin);
  await live(page);
  const paths = await page.locator('header nav a').evaluateAll((links) => links.map((a) => new URL(a.href).pathname));
  // The check can fail: a button without a name, planted on the first screen, is reported.
  await settled(page);
  await page.evaluate(() => document.querySelector('main').append(Object.assign(document.createElement('button'), { id: 'planted' })));
  const planted = await seriousViolations(page);
  assert.ok(planted.some((v) => v.id === 'button-name' && v.nodes.includes('#planted')), JSON.stringify(planted));
  const found = {};
  for (const path of [...paths, ...pages(), '/tasks?status=PENDING']) {
    await page.goto(`${devart.url}${path}`);
    await settled(page);
    const violations = await seriousViolations(page);
    if (violations.length) found[path] = violations;
  }
  const signedOut = await newContext(browser, { bypassCSP: true });
  const signInPage = await signedOut.newPage();
  await signInPage.goto(`${devart.url}/signin`);
  await signInPage.getByLabel('Email').waitFor();
  const onSignIn = await seriousViolations(signInPage);
  if (onSignIn.length) found['/signin'] = onSignIn;
  await screenshot(signInPage, 'signin');
  assert.deepEqual(found, {}, JSON.stringify(found, null, 2));
  await signedOut.close();
  await context.close();
});
