// The GraphQL-over-HTTP spec's official server audit (graphql-http's `serverAudits`) against a
// running devart. Every MUST audit is a test of its own; SHOULD and MAY audits are reported but
// never fail the run.
//
// Needs DEVART_URL (e.g. http://127.0.0.1:8787) and DEVART_TOKEN (a bearer token).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { serverAudits } from 'graphql-http';

const base = process.env.DEVART_URL;
const token = process.env.DEVART_TOKEN;
if (!base || !token) {
  throw new Error('DEVART_URL and DEVART_TOKEN must be set (scripts/test-js sets them)');
}

/** `fetch`, with the bearer token on every request: the gateway refuses anonymous callers. */
function authorizedFetch(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

const audits = serverAudits({ url: `${base}/graphql`, fetchFn: authorizedFetch });
const required = audits.filter((a) => a.name.startsWith('MUST'));
const advisory = audits.filter((a) => !a.name.startsWith('MUST'));

/** A failed audit's reason, with what the server answered. */
async function explain(result) {
  let body = '';
  try {
    body = await result.response.text();
  } catch {
    // The audit may have read the body already.
  }
  const status = result.response?.status;
  return `${result.reason}\n  status: ${status}\n  content-type: ${result.response?.headers.get('content-type')}` +
    (body ? `\n  body: ${body.slice(0, 500)}` : '');
}

test('the audit has MUST requirements to check', () => {
  assert.ok(required.length > 0, 'graphql-http returned no MUST audits');
});

for (const audit of required) {
  test(`${audit.name} [${audit.id}]`, async () => {
    const result = await audit.fn();
    if (result.status !== 'ok') {
      assert.fail(await explain(result));
    }
  });
}

test('SHOULD and MAY audits (reported, not required)', async (t) => {
  const results = await Promise.all(advisory.map((a) => a.fn()));
  const failed = results.filter((r) => r.status !== 'ok');
  const lines = [`SHOULD/MAY audits: ${results.length - failed.length} of ${results.length} ok`];
  for (const r of failed) {
    lines.push(`  not met: ${r.name} [${r.id}]: ${r.reason}`);
  }
  for (const line of lines) {
    t.diagnostic(line);
  }
});
