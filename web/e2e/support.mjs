// What the browser tests share: the devart under test (started by scripts/test-e2e), its API over
// HTTP with the operator's bearer token, Debian's Chromium driven by playwright-core, people made
// through `createUser`, screenshots, axe-core, and a little statistics.

import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests with scripts/test-e2e`);
  return value;
}

export const devart = {
  url: required('DEVART_URL'),
  token: required('DEVART_TOKEN'),
  admin: { email: required('E2E_ADMIN_EMAIL'), password: required('E2E_ADMIN_PASSWORD') },
};

export const SCREENSHOTS = path.join(here, 'screenshots');

/// A GraphQL request over HTTP as another client (the operator's token unless told otherwise);
/// its data, or an error carrying the API's code.
export async function api(query, variables = {}, { token = devart.token, url = devart.url } = {}) {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors?.length) {
    const error = new Error(`${body.errors[0].message} (${body.errors[0].extensions?.code})`);
    error.code = body.errors[0].extensions?.code;
    throw error;
  }
  return body.data;
}

let people = 0;

/// A new person with `role`, made by the admin through the API.
export async function makeUser(role) {
  people += 1;
  const email = `${role.toLowerCase()}-${process.pid}-${people}-${Date.now()}@example.org`;
  const password = `a long password ${Math.random().toString(36).slice(2)}`;
  const data = await api(
    'mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } } }',
    { input: { email, role, password } },
  );
  return { id: data.createUser.user.id, email, password };
}

export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
}

/// A fresh browser context (its own cookies), light unless told otherwise.
export async function newContext(browser, { colorScheme = 'light', bypassCSP = false } = {}) {
  return browser.newContext({ colorScheme, bypassCSP, viewport: { width: 1440, height: 900 }, timezoneId: 'Europe/Berlin' });
}

/// Signs in on the sign-in page, the way a person does, and waits for the shell.
export async function signIn(page, { email, password }, { url = devart.url, path: at = '/' } = {}) {
  await page.goto(`${url}${at}`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('[data-user]').waitFor();
}

/// Waits for the header to say the socket is live.
export async function live(page) {
  await page.locator('[data-connection="connected"]').waitFor({ timeout: 10_000 });
}

/// Waits until the page is live and its screen has read what it shows (no loading state left).
export async function ready(page) {
  await live(page);
  await page.locator('main h1').first().waitFor();
  await page.waitForFunction(() => !document.querySelector('main .loading'), null, { timeout: 10_000 });
}

export async function screenshot(page, name) {
  await mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: false });
}

let axeSource;

/// The serious and critical accessibility violations axe-core finds on the page as it is.
export async function seriousViolations(page) {
  axeSource ??= await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.addScriptTag({ content: axeSource });
  const results = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const found = await axe.run(document, { resultTypes: ['violations'] });
    return found.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
  });
  return results.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/// Polls `check` until it returns something truthy; fails after `timeout` ms.
export async function eventually(check, { timeout = 5000, interval = 25, what = 'the condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  if (!sorted.length) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

/// `p50 … ms, p95 … ms` of some latencies.
export function summary(values) {
  return `p50 ${percentile(values, 50).toFixed(0)} ms, p95 ${percentile(values, 95).toFixed(0)} ms over ${values.length}`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/// A `devart serve` of its own (the gateway role by default) on `port`, sharing the database and
/// bus of the one under test; resolves once it answers /healthz.
export async function startGateway(port, { roles = 'gateway' } = {}) {
  const child = spawn(required('DEVART_BIN'), ['serve', '--roles', roles], {
    env: { ...process.env, DEVART_LISTEN: `127.0.0.1:${port}` },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (chunk) => {
    log = (log + chunk).slice(-4000);
  });
  const url = `http://127.0.0.1:${port}`;
  await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`devart serve exited: ${log}`);
      try {
        return (await fetch(`${url}/healthz`)).ok;
      } catch {
        return false;
      }
    },
    { timeout: 30_000, interval: 100, what: `devart serve on port ${port}` },
  );
  return {
    url,
    child,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/// Tasks through the API in batches of aliased mutations (one request makes `batch` of them).
export async function createTasks(count, make, { batch = 100 } = {}) {
  const ids = [];
  for (let start = 0; start < count; start += batch) {
    const size = Math.min(batch, count - start);
    const variables = {};
    const fields = [];
    const declarations = [];
    for (let i = 0; i < size; i++) {
      variables[`i${i}`] = make(start + i);
      declarations.push(`$i${i}: CreateTaskInput!`);
      fields.push(`t${i}: createTask(input: $i${i}) { id }`);
    }
    const data = await api(`mutation(${declarations.join(', ')}) { ${fields.join(' ')} }`, variables);
    for (let i = 0; i < size; i++) ids.push(data[`t${i}`].id);
  }
  return ids;
}

/// A registered agent and its API key, to claim and report as a real agent does.
export async function registerAgent(name, capabilities = []) {
  const data = await api(
    'mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey agent { id name } } }',
    { input: { name, capabilities } },
  );
  const { apiKey, agent } = data.registerAgent;
  return { ...agent, key: apiKey, call: (query, variables) => api(query, variables, { token: apiKey }) };
}

/// Cancels every pending task, so the next claim takes the task a test just made. The board's
/// read model follows the events a moment later: a task already cancelled may still read as
/// pending (its cancel is then a CONFLICT, and fine).
export async function drainQueue() {
  await eventually(
    async () => {
      const data = await api('{ tasks(filter: {status: [PENDING]}, first: 100) { edges { node { id } } } }');
      const ids = data.tasks.edges.map((e) => e.node.id);
      if (!ids.length) return true;
      // One request per page; a field refused as a CONFLICT leaves the others done.
      const fields = ids.map((_, i) => `c${i}: cancelTask(id: $id${i}) { id }`).join(' ');
      const declarations = ids.map((_, i) => `$id${i}: ID!`).join(', ');
      const response = await fetch(`${devart.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${devart.token}` },
        body: JSON.stringify({
          query: `mutation(${declarations}) { ${fields} }`,
          variables: Object.fromEntries(ids.map((id, i) => [`id${i}`, id])),
        }),
      });
      const body = await response.json();
      const unexpected = (body.errors ?? []).find((e) => e.extensions?.code !== 'CONFLICT');
      if (unexpected) throw new Error(`${unexpected.message} (${unexpected.extensions?.code})`);
      return false;
    },
    { timeout: 120_000, interval: 200, what: 'an empty queue' },
  );
}

/// The card of a task on the board, in the column of `status`.
export function card(page, id, status) {
  const scope = status ? page.locator(`[data-column="${status}"]`) : page;
  return scope.locator(`[data-task-id="${id}"]`);
}
