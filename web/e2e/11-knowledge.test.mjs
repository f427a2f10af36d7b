// The knowledge base from the dashboard, end to end: the list shows another client's document by
// itself; a supervisor adds a document through its form and reads it set as a document (its raw
// HTML shown as text, never run), marked searchable once embedded; finds it by a keyword, the
// match marked in the excerpt, and by meaning (or, where semantic search is off, reads why on the
// page); sees a search devart refuses said on the page; edits it and sees version 2; edits it
// again after someone else did and is told to reload; reads it as of version 1; changes its tags;
// and removes it after a confirmation, which takes it out of the list and of search. Light and
// dark screenshots of the list, the search and the page; axe-core on each. Nothing is left behind
// for the other tests.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, eventually, launch, makeUser, newContext, ready, screenshot, seriousViolations, signIn } from './support.mjs';

let browser;
let documentId;
let theirs;

before(async () => {
  browser = await launch();
});
after(async () => {
  // A failed run still takes its document out of the knowledge base the other tests read.
  for (const id of [documentId, theirs]) if (id) await api('mutation($id: ID!) { removeDocument(id: $id) }', { id }).catch(() => {});
  await browser?.close();
});

const stamp = Date.now();
const keyword = `ERR_KB_${stamp}`;
const tag = `e2e-${stamp}`;
const title = `Deploying the gateway ${stamp}`;
const content = `# Deploying the gateway

Deploys go out from the release branch, one region at a time.

## Before you start

- Check the **error budget** on the dashboard
- Make sure \`cargo test\` is green
  - including the *chaos* suite
- [x] Tell the on-call channel

When a deploy fails with ${keyword} & "waits > 5 s", the new binary could not reach NATS: roll back (see below).
Raw markup stays text: <b>not bold</b> <img src=x onerror="window.__pwned = true"> and [a bad link](javascript:window.__pwned=true).

\`\`\`sh
scripts/deploy --region eu-1
\`\`\`

| Region | Order |
| --- | ---: |
| eu-1 | 1 |
| us-1 | 2 |

> Never deploy on a Friday afternoon.
`;

async function violations(page, where) {
  const found = await seriousViolations(page);
  assert.deepEqual(found, [], `${where}: ${JSON.stringify(found, null, 2)}`);
}

/// The header holds every link, the theme, the user and the sign-out button on one line.
async function headerFitsOneLine(page) {
  const tops = await page.evaluate(() =>
    [...document.querySelectorAll('header.top .brand, header.top nav a, header.top .who > *')].map((el) => {
      const box = el.getBoundingClientRect();
      return { text: el.textContent.trim(), middle: Math.round(box.top + box.height / 2) };
    }),
  );
  const first = tops[0].middle;
  const off = tops.filter((t) => Math.abs(t.middle - first) > 4);
  assert.deepEqual(off, [], `not on the header's one line: ${JSON.stringify(off)}`);
}

test('a supervisor adds, finds, edits, travels back in and removes a document', async () => {
  const supervisor = await makeUser('SUPERVISOR');
  const context = await newContext(browser, { bypassCSP: true });
  const page = await context.newPage();
  try {
    await journey(page, supervisor);
  } catch (error) {
    // What the page showed when it went wrong.
    await screenshot(page, 'knowledge-failure').catch(() => {});
    throw error;
  } finally {
    await context.close();
  }
});

async function journey(page, supervisor) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(error.message));
  await signIn(page, supervisor, { path: '/knowledge' });
  await ready(page);
  assert.equal(await page.locator('header nav a[href="/knowledge"]').getAttribute('aria-current'), 'page');
  await headerFitsOneLine(page);

  // Another client's document shows up by itself, and goes when removed.
  await page.goto(`${devart.url}/knowledge?tag=${tag}`);
  await ready(page);
  await page.getByText(`No document is tagged ${tag}.`).waitFor();
  const added = Date.now();
  theirs = (
    await api('mutation($tags: [String!]!) { addDocument(input: {title: "Added elsewhere", content: "By another client.", tags: $tags}) { id } }', {
      tags: [tag],
    })
  ).addDocument.id;
  await page.locator(`[data-document="${theirs}"]`).waitFor({ timeout: 3000 });
  console.log(`a document added elsewhere was listed ${Date.now() - added} ms after it was added`);
  await api('mutation($id: ID!) { removeDocument(id: $id) }', { id: theirs });
  await page.locator(`[data-document="${theirs}"]`).waitFor({ state: 'detached', timeout: 3000 });
  theirs = undefined;
  await page.goto(`${devart.url}/knowledge`);
  await ready(page);

  // Add it through the form.
  await page.getByRole('button', { name: 'Add a document' }).click();
  const form = page.getByRole('dialog', { name: 'Add a document' });
  await form.getByLabel('Title').fill(title);
  await form.getByLabel('Content').fill(content);
  await form.getByLabel('Tags').fill(`${tag}, Runbook`);
  await form.getByLabel('Source').fill(`wiki/deploys-${stamp}`);
  await form.getByLabel('Metadata (JSON)').fill('{"owner": "ops"}');
  await violations(page, 'the add form');
  await screenshot(page, 'knowledge-add');
  await form.getByRole('button', { name: 'Add document' }).click();
  await page.waitForURL(/\/knowledge\/[0-9a-f-]{36}$/);
  documentId = new URL(page.url()).pathname.split('/').pop();
  await ready(page);
  await page.getByRole('heading', { level: 1, name: title }).waitFor();
  const made = (await api('query($id: ID!) { document(id: $id) { tags source metadata version createdBy } }', { id: documentId })).document;
  assert.deepEqual(made.tags, [tag, 'runbook'], 'lower-cased and sorted');
  assert.equal(made.source, `wiki/deploys-${stamp}`);
  assert.deepEqual(made.metadata, { owner: 'ops' });
  assert.equal(made.version, 1);

  // Its Markdown set as a document; raw HTML and a javascript: link stay text.
  const body = page.locator('[data-content]');
  await body.getByRole('heading', { name: 'Before you start' }).waitFor();
  assert.equal(await body.locator('strong', { hasText: 'error budget' }).count(), 1);
  assert.equal(await body.locator('code', { hasText: 'cargo test' }).count(), 1);
  assert.equal(await body.locator('ul ul em', { hasText: 'chaos' }).count(), 1, 'a nested list with emphasis');
  assert.equal(await body.locator('pre code', { hasText: 'scripts/deploy --region eu-1' }).count(), 1);
  assert.equal(await body.locator('table td', { hasText: 'us-1' }).count(), 1);
  assert.equal(await body.locator('blockquote', { hasText: 'Friday' }).count(), 1);
  assert.match(await body.innerText(), /<b>not bold<\/b> <img src=x onerror="window.__pwned = true">/);
  assert.equal(await body.locator('b, img, script').count(), 0, 'no element from the raw markup');
  assert.equal(await body.locator('a[href^="javascript"]').count(), 0, 'no javascript: link');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator('[data-shown-version]').innerText(), '1');
  await page.locator('[data-history-event="DocumentAdded"]').waitFor();
  // Chunks, collapsed, open from the keyboard.
  const firstChunk = page.locator('[data-chunk] summary').first();
  await firstChunk.waitFor();
  assert.equal(await page.locator('[data-chunk] details[open]').count(), 0, 'chunks start collapsed');
  await firstChunk.focus();
  await page.keyboard.press('Enter');
  await page.locator('[data-chunk] details[open]').first().waitFor();
  await violations(page, 'the document page');

  // Semantic search finds it once its chunks are embedded, where it runs; the badge says so.
  const { knowledgeStatus } = await api('{ knowledgeStatus { semantic model reason } }');
  const semantic = knowledgeStatus.semantic;
  const badge = page.locator('main .facts [data-search-status]');
  if (semantic) {
    const since = Date.now();
    await badge.and(page.locator('[data-search-status="SEARCHABLE"]')).waitFor({ timeout: 15_000 });
    console.log(`the page said “Searchable” ${Date.now() - since} ms after it first showed the document`);
  } else {
    assert.equal(await badge.getAttribute('data-search-status'), 'KEYWORD_ONLY');
  }
  await screenshot(page, 'knowledge-document');

  // Find it by keyword, from the keyboard: the match is marked, the rest of the excerpt is text.
  await page.getByRole('link', { name: 'Knowledge', exact: true }).first().click();
  await ready(page);
  const state = page.locator('[data-semantic]');
  assert.equal(await state.getAttribute('data-semantic'), semantic ? 'on' : 'off');
  assert.match(await state.innerText(), semantic ? new RegExp(`Semantic search is on with ${knowledgeStatus.model}`) : /Semantic search is .+\. Keyword search works\./);
  assert.equal(await page.getByLabel('Mode').inputValue(), semantic ? 'HYBRID' : 'KEYWORD', 'by meaning and words where it can');
  await page.getByLabel('Mode').selectOption('KEYWORD');
  const box = page.getByRole('searchbox', { name: 'Search' });
  await box.focus();
  await page.keyboard.type(keyword);
  await page.keyboard.press('Enter');
  const hit = page.locator(`[data-hit="${documentId}"]`);
  await hit.waitFor({ timeout: 5000 });
  assert.match(page.url(), new RegExp(`q=${keyword}`));
  const hitText = await hit.innerText();
  assert.match(hitText, new RegExp(title));
  assert.match(hitText, /Deploying the gateway › Before you start/);
  assert.match(hitText, /score \d/);
  assert.ok((await hit.locator('mark').allInnerTexts()).some((m) => m.includes(String(stamp))), 'the keyword is marked');
  assert.match(await hit.locator('.hit-excerpt').innerText(), /\d+ & "waits > 5 s"/, 'what the excerpt escapes is shown as it was written');
  assert.equal(await hit.locator('.excerpt :not(mark)').count(), 0, 'only marks are elements in the excerpt');
  await violations(page, 'search results');
  await screenshot(page, 'knowledge-search');

  // By meaning: other words find it where semantic search runs; where it does not, the page says
  // why and offers keyword search instead.
  await page.getByLabel('Tag', { exact: true }).selectOption(tag);
  await page.getByRole('searchbox', { name: 'Search' }).fill('what to do when a release cannot connect to the message bus');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByLabel('Mode').selectOption('SEMANTIC');
  await page.waitForURL(/mode=SEMANTIC/);
  await page.locator('main section[aria-label="Search results"] .loading').waitFor({ state: 'detached' });
  if (semantic) {
    await hit.first().waitFor();
    assert.match(await hit.first().innerText(), /score 0\.\d+/, 'a cosine similarity');
    await screenshot(page, 'knowledge-search-semantic');
  } else {
    const note = await page.locator('main .error-note').innerText();
    assert.match(note, /This search could not be answered: .+ UNAVAILABLE/);
    await screenshot(page, 'knowledge-search-unavailable');
    await page.getByRole('button', { name: 'Search by keyword instead' }).click();
    await page.waitForURL((url) => url.searchParams.get('mode') === 'KEYWORD');
  }
  // A search devart refuses is said on the page, with its message and code.
  await page.getByRole('searchbox', { name: 'Search' }).fill('x'.repeat(1001));
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.locator('[data-search-error="BAD_USER_INPUT"]').waitFor();
  assert.match(await page.locator('main .error-note').innerText(), /This search could not be answered: .*must be 1 to 1000 characters/);
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.waitForURL(`${devart.url}/knowledge`);

  // The hit leads to its chunk, opened.
  await page.goto(`${devart.url}/knowledge?q=${keyword}&mode=KEYWORD`);
  await ready(page);
  await hit.locator('a.hit-title').click();
  await page.waitForURL(new RegExp(`/knowledge/${documentId}\\?chunk=\\d+`));
  await ready(page);
  await page.locator('[data-chunk] details.picked[open]').waitFor();

  // Edit it: version 2, with who did it in the history.
  await page.getByRole('button', { name: 'Edit', exact: true }).click();
  const edit = page.getByRole('dialog', { name: 'Edit document' });
  await edit.getByLabel('Title').fill(`${title} (edited)`);
  await edit.getByLabel('Content').fill(`${content}\n## Rollback\n\nRun \`scripts/rollback\` and say so in the channel.\n`);
  await edit.getByRole('button', { name: 'Save' }).click();
  await edit.waitFor({ state: 'detached' });
  await page.getByRole('heading', { level: 1, name: `${title} (edited)` }).waitFor();
  await eventually(async () => (await page.locator('[data-shown-version]').innerText()) === '2', { what: 'version 2' });
  const updated = page.locator('[data-history-event="DocumentUpdated"][data-version="2"]');
  await updated.waitFor();
  assert.equal(await updated.locator('[data-who]').getAttribute('data-who'), `user:${supervisor.id}`);
  assert.match(await updated.innerText(), /title: .*→.*\(edited\)/s);
  await page.locator('[data-content]').getByRole('heading', { name: 'Rollback' }).waitFor();
  await updated.getByText('What changed').click();
  assert.match(await updated.locator('.diff').innerText(), /\+ ## Rollback/);

  // Someone else changes it while the form is open: the save is refused, and says to reload.
  await page.getByRole('button', { name: 'Edit', exact: true }).click();
  const stale = page.getByRole('dialog', { name: 'Edit document' });
  await stale.getByLabel('Source').fill(`wiki/deploys-${stamp}/mine`);
  await api('mutation($id: ID!) { updateDocument(id: $id, expectedVersion: 2, input: {source: "wiki/theirs"}) { version } }', {
    id: documentId,
  });
  // The page behind the form follows their change; the form stays on the version it opened.
  await eventually(async () => (await page.locator('[data-shown-version]').innerText()) === '3', { what: 'their version behind the form' });
  await stale.getByRole('button', { name: 'Save' }).click();
  const conflict = stale.locator('[data-conflict]');
  await conflict.waitFor();
  assert.match(await conflict.innerText(), /Changed by someone else since you opened it \(you edited version 2\): reload/);
  await screenshot(page, 'knowledge-conflict');
  await conflict.getByRole('button', { name: 'Reload' }).click();
  await stale.waitFor({ state: 'detached' });
  await eventually(async () => (await page.locator('[data-shown-version]').innerText()) === '3', { what: 'their version 3' });
  await page.locator('main .facts').getByText('wiki/theirs').waitFor();

  // Time travel: version 1 as it was, with no control that writes.
  await page.getByLabel('As of version').selectOption({ label: await optionLabel(page, 1) });
  await page.waitForURL(/at=/);
  await page.locator('[data-as-of="1"]').waitFor();
  await page.getByRole('heading', { level: 1, name: title, exact: true }).waitFor();
  assert.equal(await page.locator('[data-content]').getByRole('heading', { name: 'Rollback' }).count(), 0, 'no later section');
  assert.equal(await page.locator('[data-shown-version]').innerText(), '1');
  assert.equal(await page.getByRole('button', { name: 'Edit', exact: true }).count(), 0, 'the past is not edited');
  await violations(page, 'the document as of version 1');
  await screenshot(page, 'knowledge-document-v1');
  await page.getByRole('link', { name: 'Back to the latest version' }).first().click();
  await page.waitForURL(`${devart.url}/knowledge/${documentId}`);
  await eventually(async () => (await page.locator('[data-shown-version]').innerText()) === '3', { what: 'the latest again' });

  // New tags; the list filtered by one of them shows it with its figures.
  await page.getByRole('button', { name: 'Edit tags' }).click();
  const tagsForm = page.getByRole('dialog', { name: /^Tags of/ });
  await tagsForm.getByLabel('Tags').fill(`${tag} ops deploys`);
  await tagsForm.getByRole('button', { name: 'Save tags' }).click();
  await tagsForm.waitFor({ state: 'detached' });
  await page.locator('main .facts .tag-list', { hasText: 'deploys' }).waitFor();
  await page.locator('main .facts .tag-list a', { hasText: tag }).click();
  await page.waitForURL(`${devart.url}/knowledge?tag=${tag}`);
  await ready(page);
  const row = page.locator(`[data-document="${documentId}"]`);
  await eventually(async () => /ops/.test(await row.innerText().catch(() => '')), { what: 'the retagged row' });
  const rowText = await row.innerText();
  assert.match(rowText, /deploys/);
  assert.match(rowText, /wiki\/theirs/);
  assert.match(rowText, /v4/);
  await violations(page, 'the list');
  await screenshot(page, 'knowledge-list');

  // Dark: the list, a search and the page.
  const dark = await newContext(browser, { colorScheme: 'dark' });
  const night = await dark.newPage();
  await signIn(night, supervisor, { path: `/knowledge?tag=${tag}` });
  await ready(night);
  await night.locator(`[data-document="${documentId}"]`).waitFor();
  await screenshot(night, 'knowledge-list-dark');
  await night.goto(`${devart.url}/knowledge?q=${encodeURIComponent('rollback')}&tag=${tag}`);
  await ready(night);
  await night.locator(`[data-hit="${documentId}"]`).first().waitFor();
  await screenshot(night, 'knowledge-search-dark');
  await night.goto(`${devart.url}/knowledge/${documentId}`);
  await ready(night);
  await screenshot(night, 'knowledge-document-dark');
  await dark.close();

  // Remove it, once asked: gone from the list, from search and from `document`.
  await page.goto(`${devart.url}/knowledge/${documentId}`);
  await ready(page);
  await page.getByRole('button', { name: 'Remove' }).click();
  const confirm = page.getByRole('dialog', { name: 'Remove document' });
  assert.match(await confirm.innerText(), /leaves the knowledge base and search at once/);
  await violations(page, 'the removal confirmation');
  await confirm.getByRole('button', { name: 'Remove document' }).click();
  await page.waitForURL(`${devart.url}/knowledge`);
  await ready(page);
  await page.locator(`[data-document="${documentId}"]`).waitFor({ state: 'detached', timeout: 5000 });
  assert.equal((await api('query($id: ID!) { document(id: $id) { id } }', { id: documentId })).document, null);
  await eventually(
    async () => (await api('query($q: String!) { searchKnowledge(query: $q) { document { id } } }', { q: keyword })).searchKnowledge.length === 0,
    { what: 'the document out of search' },
  );
  // Its page says so, and still shows it as it was last.
  await page.goto(`${devart.url}/knowledge/${documentId}`);
  await ready(page);
  await page.locator('[data-removed]').waitFor();
  assert.match(await page.locator('[data-removed]').innerText(), /Removed .+ by user:/);
  assert.equal(await page.locator('[data-removed] [data-who]').getAttribute('data-who'), `user:${supervisor.id}`);
  await page.getByRole('heading', { level: 1, name: `${title} (edited)` }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Remove' }).count(), 0);
  documentId = undefined;
  assert.deepEqual(problems, [], 'no script error');
}

/// The label of the time-travel option for `version`.
async function optionLabel(page, version) {
  const labels = await page.getByLabel('As of version').locator('option').allInnerTexts();
  const label = labels.find((l) => l.startsWith(`version ${version}:`));
  assert.ok(label, `an option for version ${version} among ${labels}`);
  return label;
}
