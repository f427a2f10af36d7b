// Audit: the event trail in global order with its filters in the address (a stream, types, a
// correlation, a starting position), an event's details, a stream's history with what each event
// changed and the entity as it stood at any of them or at a time ("as of"), and the integrity
// check of the hash chain. The trail pages forward to the end, then follows the `events`
// subscription; after a reconnection it resumes after the last position it saw.

import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, socket } from '../api/client';
import { comparePositions, gql, useMutation } from '../api/live';
import { setQuery } from '../router';
import type { ScreenProps } from '../routes';
import { formatNumber } from '../ui/format';
import { Empty, ErrorNote, Loading, PageHead, Time } from '../ui/parts';
import { useVirtual } from '../ui/virtual';
import { actorText, EVENT_FIELDS, JsonView, StreamHistory, type EventRecord, type HistoryEntry } from './common';

interface Filters {
  stream: string;
  types: string[];
  correlation: string;
  after: string;
}

const PAGE = 200;
const ROW = 34;
/// Live events held while the trail still pages towards the end; past it, paging reads them.
const BUFFER = 10_000;

function parseFilters(query: URLSearchParams): Filters {
  return {
    stream: query.get('stream') ?? '',
    types: (query.get('types') ?? '')
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean),
    correlation: query.get('correlation') ?? '',
    after: query.get('after') ?? '',
  };
}

export function Audit({ query }: ScreenProps) {
  const filters = parseFilters(query);
  const key = JSON.stringify(filters);
  const historyOf = query.get('history');
  return (
    <section class="audit">
      <PageHead title="Audit trail" />
      <FilterBar filters={filters} />
      <Integrity />
      <div class="split">
        <Trail key={key} filters={filters} />
        <div class="stack">{historyOf && <HistoryPanel streamId={historyOf} />}</div>
      </div>
    </section>
  );
}

function FilterBar({ filters }: { filters: Filters }) {
  const [stream, setStream] = useState(filters.stream);
  const [types, setTypes] = useState(filters.types.join(', '));
  const [correlation, setCorrelation] = useState(filters.correlation);
  const [after, setAfter] = useState(filters.after);
  useEffect(() => {
    setStream(filters.stream);
    setTypes(filters.types.join(', '));
    setCorrelation(filters.correlation);
    setAfter(filters.after);
  }, [filters.stream, filters.types.join(','), filters.correlation, filters.after]);
  const afterValid = after.trim() === '' || /^\d+$/.test(after.trim());
  const latest = useMutation(async () => {
    const data = await gql<{ projections: { head: string }[] }>('{ projections { head } }');
    const head = data.projections.reduce((most, p) => (comparePositions(p.head, most) > 0 ? p.head : most), '0');
    const start = BigInt(head) > 500n ? (BigInt(head) - 500n).toString() : '';
    setQuery({ after: start || undefined });
  });
  return (
    <form
      class="filters"
      aria-label="Filters"
      onSubmit={(event) => {
        event.preventDefault();
        if (!afterValid) return;
        setQuery({
          stream: stream.trim() || undefined,
          types: types
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean)
            .join(',') || undefined,
          correlation: correlation.trim() || undefined,
          after: after.trim() || undefined,
        });
      }}
    >
      <label class="field">
        <span class="label">Stream</span>
        <input value={stream} placeholder="task-…" onInput={(e) => setStream(e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="label">Types</span>
        <input value={types} placeholder="TaskCreated, TaskClaimed" onInput={(e) => setTypes(e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="label">Correlation</span>
        <input value={correlation} onInput={(e) => setCorrelation(e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="label">After position</span>
        <input value={after} inputMode="numeric" aria-invalid={afterValid ? undefined : 'true'} onInput={(e) => setAfter(e.currentTarget.value)} />
        {!afterValid && (
          <span class="field-error" role="alert">
            A position is a whole number.
          </span>
        )}
      </label>
      <div class="buttons">
        <button type="submit" class="primary" disabled={!afterValid}>
          Show
        </button>
        <button type="button" onClick={() => setQuery({ stream: undefined, types: undefined, correlation: undefined, after: undefined })}>
          Clear
        </button>
        <button type="button" disabled={latest.running} onClick={() => void latest.run()}>
          Jump to the latest
        </button>
      </div>
      <ErrorNote error={latest.error} />
    </form>
  );
}

function matches(event: EventRecord, filters: Filters): boolean {
  return (!filters.stream || event.streamId === filters.stream) && (!filters.correlation || event.correlationId === filters.correlation);
}

function Trail({ filters }: { filters: Filters }) {
  const [events, setEvents] = useState<EventRecord[]>([]);
  const [hasNext, setHasNext] = useState(true);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const [liveError, setLiveError] = useState<ApiError | null>(null);
  const [picked, setPicked] = useState<EventRecord | null>(null);
  const state = useRef({ cursor: filters.after || null, caughtUp: false, buffer: [] as EventRecord[], last: filters.after || '0' });
  // graphql-ws sends these variables again on every reconnection: `after` moves with each event
  // heard, so the subscription resumes where it left off.
  const variables = useRef<{ after?: string; types?: string[] }>(filters.types.length ? { types: filters.types } : {}).current;

  const append = (more: EventRecord[]) => {
    const fresh = more.filter((e) => comparePositions(e.position, state.current.last) > 0);
    if (fresh.length === 0) return;
    state.current.last = fresh[fresh.length - 1].position;
    const shown = fresh.filter((e) => matches(e, filters));
    if (shown.length) setEvents((held) => [...held, ...shown]);
  };

  const page = async () => {
    if (loading || state.current.caughtUp) return;
    setLoading(true);
    try {
      const data = await gql<{ events: { nodes: EventRecord[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } }>(
        `query Trail($after: String, $first: Int, $streamId: String, $types: [String!], $correlationId: ID) {
          events(after: $after, first: $first, streamId: $streamId, types: $types, correlationId: $correlationId) {
            nodes { ${EVENT_FIELDS} } pageInfo { hasNextPage endCursor } } }`,
        {
          after: state.current.cursor,
          first: PAGE,
          streamId: filters.stream || null,
          types: filters.types.length ? filters.types : null,
          correlationId: filters.correlation || null,
        },
      );
      const nodes = data.events.nodes;
      append(nodes);
      state.current.cursor = nodes.length ? nodes[nodes.length - 1].position : state.current.cursor;
      setError(null);
      if (!data.events.pageInfo.hasNextPage) {
        state.current.caughtUp = true;
        if (variables.after === undefined && state.current.last !== '0') variables.after = state.current.last;
        append(state.current.buffer);
        state.current.buffer = [];
        setHasNext(false);
      }
    } catch (failure) {
      setError(failure instanceof ApiError ? failure : new ApiError(String(failure), 'INTERNAL'));
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => {
    const s = socket();
    const stop = s.subscribe<{ events: EventRecord }>(
      `subscription TrailLive($after: String, $types: [String!]) { events(after: $after, types: $types) { ${EVENT_FIELDS} } }`,
      variables,
      (data) => {
        variables.after = data.events.position;
        if (state.current.caughtUp) append([data.events]);
        else if (state.current.buffer.length < BUFFER) state.current.buffer.push(data.events);
        else state.current.buffer = [];
        setLiveError(null);
      },
      setLiveError,
    );
    const start = () => {
      if (!state.current.caughtUp && events.length === 0) void page();
    };
    if (s.connection === 'connected') start();
    const off = s.onConnected(start);
    return () => {
      off();
      stop();
    };
  }, []);

  const { scrollRef, items: rows, totalSize } = useVirtual(events.length, ROW);
  const lastShown = rows.length ? rows[rows.length - 1].index : -1;
  useEffect(() => {
    if (hasNext && !loading && !error && lastShown >= events.length - 20) void page();
  }, [lastShown, events.length, hasNext, loading, error]);

  return (
    <div class="stack">
      <p class="muted" role="status" data-trail-state>
        {formatNumber(events.length)} events shown ·{' '}
        {hasNext ? 'reading the stored trail' : liveError ? `live updates stopped: ${liveError.message}` : '● following live'}
      </p>
      <ErrorNote error={error} context="Could not read the trail" />
      {error && (
        <button type="button" onClick={() => void page()}>
          Try again
        </button>
      )}
      <div class="trail" ref={scrollRef} tabIndex={-1} aria-label="Events">
        <div class="trail-row trail-head" aria-hidden="true">
          <span>Position</span>
          <span>When</span>
          <span>Type</span>
          <span>Stream</span>
          <span>Actor</span>
        </div>
        {events.length === 0 && !loading ? (
          <Empty>No event matches.</Empty>
        ) : (
          <div class="virtual" role="list" style={{ height: `${totalSize}px` }}>
            {rows.map((row) => {
              const event = events[row.index];
              return (
                <div key={event.position} class="virtual-row" role="listitem" style={{ transform: `translateY(${row.start}px)`, height: `${ROW}px` }}>
                  <button
                    type="button"
                    class="trail-row"
                    style={{ height: `${ROW}px` }}
                    aria-pressed={picked?.position === event.position}
                    data-event-position={event.position}
                    data-event-type={event.type}
                    onClick={() => setPicked(event)}
                  >
                    <span>{event.position}</span>
                    <Time at={event.occurredAt} />
                    <span>{event.type}</span>
                    <span>{event.streamId}</span>
                    <span>{actorText(event.actor)}</span>
                  </button>
                </div>
              );
            })}
          </div>
        )}
        {loading && <Loading what="Reading events" />}
      </div>
      {picked && <EventDetails event={picked} />}
    </div>
  );
}

function EventDetails({ event }: { event: EventRecord }) {
  return (
    <article class="card" aria-labelledby="event-title" data-event-details>
      <h2 id="event-title">
        {event.type} <span class="muted">at position {event.position}</span>
      </h2>
      <dl class="facts">
        <dt>Event</dt>
        <dd>
          <code>{event.id}</code> (schema v{event.schemaVersion})
        </dd>
        <dt>When</dt>
        <dd>
          <Time at={event.occurredAt} />
        </dd>
        <dt>Stream</dt>
        <dd>
          <code>{event.streamId}</code> version {event.version}{' '}
          <button type="button" class="compact" onClick={() => setQuery({ history: event.streamId })}>
            History
          </button>{' '}
          <button type="button" class="compact" onClick={() => setQuery({ stream: event.streamId })}>
            Only this stream
          </button>
        </dd>
        <dt>Actor</dt>
        <dd>{actorText(event.actor)}</dd>
        <dt>Correlation</dt>
        <dd>
          <code>{event.correlationId}</code>{' '}
          <button type="button" class="compact" onClick={() => setQuery({ correlation: event.correlationId })}>
            Only this correlation
          </button>
        </dd>
        <dt>Caused by</dt>
        <dd>{event.causationId ? <code>{event.causationId}</code> : '—'}</dd>
      </dl>
      <h3>Data</h3>
      <JsonView value={event.data} label="The event's data" />
    </article>
  );
}

/// The "as of" query of each stream kind that has one.
const AS_OF: Record<string, { field: string; fields: string }> = {
  task: { field: 'taskAt', fields: 'id title status priority version updatedAt attempt failures lease { agentId expiresAt }' },
  agent: { field: 'agentAt', fields: 'id name active capabilities version updatedAt tasksClaimed tasksCompleted tasksFailed' },
  service: { field: 'serviceAt', fields: 'id name status monthlyBudget spent reserved remaining period thresholdsCrossed version' },
  workflowrun: { field: 'workflowRunAt', fields: 'id workflowName status failure updatedAt stages { key status attempt taskId }' },
};

function HistoryPanel({ streamId }: { streamId: string }) {
  const [kind, id] = [streamId.slice(0, streamId.indexOf('-')), streamId.slice(streamId.indexOf('-') + 1)];
  const asOf = AS_OF[kind];
  const [at, setAt] = useState('');
  const [state, setState] = useState<{ at: string; value: unknown } | null>(null);
  const read = useMutation(async (when: string) => {
    const data = await gql<Record<string, unknown>>(`query AsOf($id: ID!, $at: String!) { ${asOf.field}(id: $id, at: $at) { ${asOf.fields} } }`, {
      id,
      at: when,
    });
    setState({ at: when, value: data[asOf.field] });
  });
  const pick = (entry: HistoryEntry) => void read.run(entry.event.position);
  return (
    <article class="card" aria-labelledby="history-title">
      <div class="page-head">
        <h2 id="history-title">
          History of <code>{streamId}</code>
        </h2>
        <div class="actions">
          <button type="button" class="compact" onClick={() => setQuery({ history: undefined })}>
            Close
          </button>
        </div>
      </div>
      {asOf && (
        <form
          class="filters"
          onSubmit={(event) => {
            event.preventDefault();
            if (at) void read.run(new Date(at).toISOString());
          }}
        >
          <label class="field">
            <span class="label">As of (your time)</span>
            <input type="datetime-local" step={1} value={at} onInput={(e) => setAt(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={!at || read.running}>
            Show
          </button>
        </form>
      )}
      <ErrorNote error={read.error} context="Could not read the state" />
      {state && (
        <div data-as-of>
          <h3>
            As of {/^\d+$/.test(state.at) ? `position ${state.at}` : <Time at={state.at} />}
          </h3>
          {state.value === null ? <Empty>It did not exist yet.</Empty> : <JsonView value={state.value} label="State as of then" />}
        </div>
      )}
      <StreamHistory streamId={streamId} onPick={asOf ? pick : undefined} />
    </article>
  );
}

function Integrity() {
  const [report, setReport] = useState<{
    ok: boolean;
    from: string;
    to: string;
    eventsChecked: number;
    brokenAt: string | null;
    kind: string | null;
    detail: string | null;
  } | null>(null);
  const verify = useMutation(async () => {
    const data = await gql<{ verifyIntegrity: NonNullable<typeof report> }>(
      '{ verifyIntegrity { ok from to eventsChecked brokenAt kind detail } }',
    );
    setReport(data.verifyIntegrity);
  });
  return (
    <div class="stack integrity">
      <div>
        <button type="button" disabled={verify.running} onClick={() => void verify.run()}>
          {verify.running ? 'Checking the hash chain…' : 'Verify integrity'}
        </button>
      </div>
      <ErrorNote error={verify.error} context="Could not check" />
      {report &&
        (report.ok ? (
          <p class="ok-note" role="status" data-integrity="ok">
            <span aria-hidden="true">✓</span> Intact: {formatNumber(report.eventsChecked)} events from position {report.from} to {report.to}{' '}
            are as they were written.
          </p>
        ) : (
          <p class="bad-note" role="alert" data-integrity="broken">
            <span aria-hidden="true">✕</span> Broken at position {report.brokenAt}: {report.kind?.toLowerCase()} — {report.detail} (
            {formatNumber(report.eventsChecked)} events checked)
          </p>
        ))}
    </div>
  );
}
