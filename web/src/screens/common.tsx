// What the supervision screens (workflows, budgets, analytics, outliers, settings, audit, people)
// share beyond ui/parts: JSON shown and parsed, short ids, a stream's history with what each event
// changed, and the read-again that follows a change heard of on the event feed.

import { useEffect, useState } from 'preact/hooks';
import type { ApiError } from '../api/client';
import { gql, useMutation } from '../api/live';
import { Empty, ErrorNote, Loading, Time } from '../ui/parts';
import './screens.css';

export function shortId(id: string): string {
  return id.slice(0, 8);
}

export function JsonView({ value, label }: { value: unknown; label?: string }) {
  return (
    <pre class="json" aria-label={label} tabIndex={0}>
      {value === undefined ? '—' : JSON.stringify(value, null, 2)}
    </pre>
  );
}

/// A compact one-line JSON value, for tables.
export function jsonText(value: unknown): string {
  return value === undefined ? '—' : JSON.stringify(value);
}

export type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

/// Parses `text` as JSON; an empty text is `empty` (null unless told).
export function parseJson(text: string, empty: unknown = null): Parsed {
  if (!text.trim()) return { ok: true, value: empty };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, error: `Not JSON: ${error instanceof Error ? error.message : String(error)}` };
  }
}

export interface EventRecord {
  id: string;
  position: string;
  streamId: string;
  version: number;
  type: string;
  schemaVersion: number;
  occurredAt: string;
  actor: { kind: string; id: string };
  correlationId: string;
  causationId: string | null;
  data: unknown;
}

export const EVENT_FIELDS = `id position streamId version type schemaVersion occurredAt actor { kind id } correlationId
  causationId data`;

export interface HistoryEntry {
  event: EventRecord;
  changes: Record<string, { from: unknown; to: unknown }>;
}

export function actorText(actor: { kind: string; id: string }): string {
  return `${actor.kind.toLowerCase()}:${actor.id}`;
}

/// Who did something (`user:<id>`, as `actorText` or a `createdBy` says it), its id cut short;
/// the whole of it is its title.
export function Who({ who }: { who: string | { kind: string; id: string } }) {
  const text = typeof who === 'string' ? who : actorText(who);
  const [, kind, id] = /^([a-z]+):(.+)$/.exec(text) ?? [, '', text];
  const short = id.length > 12 ? `${kind ? `${kind}:` : ''}${id.slice(0, 8)}…` : text;
  return (
    <span class="who-did" title={text} data-who={text}>
      {short}
    </span>
  );
}

/// The `{field: {from, to}}` an event made, as a small table.
export function Changes({ changes }: { changes: HistoryEntry['changes'] }) {
  const fields = Object.entries(changes ?? {});
  if (fields.length === 0) return <span class="muted">no field changed</span>;
  return (
    <table class="table changes">
      <thead>
        <tr>
          <th scope="col">Field</th>
          <th scope="col">From</th>
          <th scope="col">To</th>
        </tr>
      </thead>
      <tbody>
        {fields.map(([field, change]) => (
          <tr key={field}>
            <th scope="row">
              <code>{field}</code>
            </th>
            <td>
              <code class="wrap">{jsonText(change?.from)}</code>
            </td>
            <td>
              <code class="wrap">{jsonText(change?.to)}</code>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/// A stream's events, oldest first, with what each changed; read when shown.
export function StreamHistory({ streamId, onPick }: { streamId: string; onPick?: (entry: HistoryEntry) => void }) {
  const [entries, setEntries] = useState<HistoryEntry[] | null>(null);
  const read = useMutation(async () => {
    const data = await gql<{ history: HistoryEntry[] }>(
      `query History($streamId: String!) { history(streamId: $streamId) { event { ${EVENT_FIELDS} } changes } }`,
      { streamId },
    );
    setEntries(data.history);
  });
  useEffect(() => {
    setEntries(null);
    void read.run();
  }, [streamId]);
  if (read.error) return <HistoryError error={read.error} retry={() => void read.run()} />;
  if (!entries) return <Loading what="Reading the history" />;
  if (entries.length === 0) return <Empty>No event in this stream.</Empty>;
  return (
    <ol class="history" aria-label={`History of ${streamId}`}>
      {entries.map((entry) => (
        <li key={entry.event.id} data-history-event={entry.event.type}>
          <div class="history-head">
            <span class="history-version">v{entry.event.version}</span> <strong>{entry.event.type}</strong> ·{' '}
            <Time at={entry.event.occurredAt} /> · <span class="muted">{actorText(entry.event.actor)}</span> ·{' '}
            <span class="muted">position {entry.event.position}</span>
            {onPick && (
              <button type="button" class="compact" onClick={() => onPick(entry)}>
                As of here
              </button>
            )}
          </div>
          <Changes changes={entry.changes} />
        </li>
      ))}
    </ol>
  );
}

function HistoryError({ error, retry }: { error: ApiError; retry: () => void }) {
  return (
    <div>
      <ErrorNote error={error} context="Could not read the history" />
      <button type="button" onClick={retry}>
        Try again
      </button>
    </div>
  );
}
