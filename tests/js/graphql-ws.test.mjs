// Subscriptions over WebSocket (`graphql-transport-ws`) with the stock graphql-ws client, against a
// running devart.
//
// Needs DEVART_URL (e.g. http://127.0.0.1:8787) and DEVART_TOKEN (a bearer token).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const base = process.env.DEVART_URL;
const token = process.env.DEVART_TOKEN;
if (!base || !token) {
  throw new Error('DEVART_URL and DEVART_TOKEN must be set (scripts/test-js sets them)');
}
const wsUrl = `${base.replace(/^http/, 'ws')}/graphql`;

/** How long a subscription may take to deliver what a mutation caused. */
const DELIVERY_MS = 10_000;

/** A graphql-ws client, and a promise of its first connection (acknowledged `connection_init`). */
function connect(authorization) {
  let connected;
  const ready = new Promise((resolve) => (connected = resolve));
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: authorization },
    retryAttempts: 0,
    on: { connected: () => connected() },
  });
  return { client, ready };
}

/** One subscription's results, kept as they come, with a way to wait for one. */
class Subscription {
  constructor(client, query) {
    this.values = [];
    this.error = undefined;
    this.completed = false;
    this.wakers = new Set();
    this.unsubscribe = client.subscribe(
      { query },
      {
        next: (value) => this.wake(() => this.values.push(value)),
        error: (error) => this.wake(() => (this.error = error)),
        complete: () => this.wake(() => (this.completed = true)),
      },
    );
  }

  wake(change) {
    change();
    for (const waker of this.wakers) waker();
  }

  /** The first result `predicate` accepts, within `ms`. */
  async until(predicate, ms, what) {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.values.find(predicate);
      if (found) return found;
      if (this.error) assert.fail(`${what}: the subscription failed: ${describe(this.error)}`);
      if (this.completed) assert.fail(`${what}: the subscription completed first`);
      const left = deadline - Date.now();
      if (left <= 0) {
        assert.fail(`${what}: not within ${ms} ms; received ${JSON.stringify(this.values)}`);
      }
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.wakers.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.wakers.add(done);
      });
    }
  }
}

function describe(error) {
  if (error && typeof error === 'object' && 'code' in error) {
    return `close ${error.code} ${error.reason ?? ''}`.trim();
  }
  return error instanceof Error ? error.message : JSON.stringify(error);
}

/** A query or mutation over HTTP, as any integration sends it; fails on any error. */
async function graphql(query, variables) {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      authorization: `Bearer ${token}`,
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  assert.equal(body.errors, undefined, JSON.stringify(body));
  return body.data;
}

async function createTask(title) {
  const data = await graphql(`mutation { createTask(input: {title: ${JSON.stringify(title)}}) { id } }`);
  assert.match(data.createTask.id, /^[0-9a-f-]{36}$/);
  return data.createTask.id;
}

/** Subscriptions start asynchronously on the server; give one a moment to be in place. */
async function settled(ready) {
  await ready;
  await sleep(300);
}

test('taskUpdates delivers a task created over HTTP', async () => {
  const { client, ready } = connect(`Bearer ${token}`);
  try {
    const updates = new Subscription(client, 'subscription { taskUpdates { id title status } }');
    await settled(ready);
    const title = `graphql-ws ${randomUUID()}`;
    const id = await createTask(title);
    const update = await updates.until((v) => v.data?.taskUpdates?.id === id, DELIVERY_MS, `taskUpdates for ${id}`);
    assert.equal(update.errors, undefined, JSON.stringify(update));
    assert.equal(update.data.taskUpdates.title, title);
    assert.equal(update.data.taskUpdates.status, 'PENDING');
    updates.unsubscribe();
  } finally {
    await client.dispose();
  }
});

test('events from the beginning include a created task\'s TaskCreated', async () => {
  const { client, ready } = connect(`Bearer ${token}`);
  try {
    const events = new Subscription(client, 'subscription { events(after: "0") { position type } }');
    await ready;
    const id = await createTask(`graphql-ws events ${randomUUID()}`);
    // Where the store put it, from the audit trail over HTTP (positions are assigned just after
    // the commit, so ask until it has one).
    const lookup = `{ events(streamId: ${JSON.stringify(`task-${id}`)}, types: ["TaskCreated"], first: 1) { edges { node { position type } } } }`;
    let position;
    const deadline = Date.now() + DELIVERY_MS;
    while (position === undefined) {
      position = (await graphql(lookup)).events.edges[0]?.node.position;
      if (position === undefined) {
        assert.ok(Date.now() < deadline, `task-${id} has no TaskCreated in the audit trail`);
        await sleep(100);
      }
    }
    const event = await events.until((v) => v.data?.events?.position === position, DELIVERY_MS, `event ${position}`);
    assert.deepEqual(event.data.events, { position, type: 'TaskCreated' });
    events.unsubscribe();
  } finally {
    await client.dispose();
  }
});

test('a bad token is refused: the client gets an error, never data', async () => {
  const { client } = connect('Bearer not-a-valid-token');
  try {
    const outcome = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve({ kind: 'nothing within 10 s' }), DELIVERY_MS);
      const settle = (result) => {
        clearTimeout(timer);
        resolve(result);
      };
      client.subscribe(
        { query: 'subscription { taskUpdates { id title status } }' },
        {
          next: (value) => settle({ kind: 'data', value }),
          error: (error) => settle({ kind: 'error', error }),
          complete: () => settle({ kind: 'complete' }),
        },
      );
    });
    assert.equal(outcome.kind, 'error', JSON.stringify(outcome));
    // A close frame from the server, not a successful connection torn down later.
    assert.ok(typeof outcome.error?.code === 'number', `expected a close event, got ${describe(outcome.error)}`);
    assert.notEqual(outcome.error.code, 1000, 'a normal closure is not a refusal');
  } finally {
    await client.dispose();
  }
});
