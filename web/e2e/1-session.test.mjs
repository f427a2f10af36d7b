// Signing in and out: a deep link asked for while signed out comes back after signing in; a wrong
// password is refused with the API's code; signing out ends the session on the server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, devart, launch, live, makeUser, newContext, ready, signIn } from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a deep link signs in and returns to itself; sign-out ends the session', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(`${devart.url}/agents?from=link`);
  await page.waitForURL(/\/signin\?next=/);
  assert.equal(new URL(page.url()).searchParams.get('next'), '/agents?from=link');

  await page.getByLabel('Email').fill(devart.admin.email);
  await page.getByLabel('Password').fill('not the password at all');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const refusal = page.getByRole('alert');
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /UNAUTHENTICATED/);

  await page.getByLabel('Password').fill(devart.admin.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${devart.url}/agents?from=link`);
  await live(page);
  const who = await page.locator('[data-user]').innerText();
  assert.match(who, new RegExp(devart.admin.email.replace(/[.]/g, '\\.')));
  assert.match(who, /admin/i);
  assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Agents');

  // A reload keeps the session (the cookie), and lands on the same page.
  await page.reload();
  await page.getByRole('heading', { name: 'Agents', level: 1 }).waitFor();

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/signin/);
  const status = await page.evaluate(async () => (await fetch('/session', { headers: { 'X-Devart-Csrf': '1' } })).status);
  assert.equal(status, 401, 'the session is over on the server');
  await page.goto(`${devart.url}/tasks?status=FAILED`);
  await page.waitForURL(/\/signin\?next=/);
  assert.equal(new URL(page.url()).searchParams.get('next'), '/tasks?status=FAILED');
  await context.close();
});

test('a change of role applies to the open page at once; a deactivation signs it out', async () => {
  const person = await makeUser('SUPERVISOR');
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, person, { path: '/tasks' });
  await ready(page);
  await page.getByRole('button', { name: 'New task' }).waitFor();
  assert.equal(await page.getByRole('note').count(), 0, 'no read-only notice for a supervisor');

  await api('mutation($id: ID!) { changeRole(userId: $id, role: VIEWER) { id } }', { id: person.id });
  await page.getByRole('note').waitFor({ timeout: 5000 });
  assert.match(await page.locator('[data-user]').innerText(), /viewer/i);
  assert.equal(await page.getByRole('button', { name: 'New task' }).count(), 0, 'the write controls are gone');
  await live(page);

  await api('mutation($id: ID!) { deactivateUser(userId: $id) { id } }', { id: person.id });
  await page.waitForURL(/\/signin\?next=%2Ftasks/, { timeout: 5000 });
  await context.close();
});

test('an idle page makes no HTTP request: everything comes over its one socket', async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  const sockets = [];
  page.on('websocket', (socket) => sockets.push(socket.url()));
  await signIn(page, devart.admin, { path: '/tasks' });
  await ready(page);
  for (const screen of ['Overview', 'Agents', 'Tasks']) {
    await page.getByRole('link', { name: screen, exact: true }).click();
    await ready(page);
  }
  const requests = [];
  page.on('request', (request) => requests.push(`${request.method()} ${request.url()}`));
  await page.waitForTimeout(5000);
  assert.deepEqual(requests, [], 'no request while idle');
  assert.equal(sockets.length, 1, `one socket for the tab: ${sockets}`);
  await context.close();
});
