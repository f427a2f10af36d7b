// A document's page: its content (the Markdown shown as a document, or as it is written), tags,
// source, metadata, whether semantic search finds it, the chunks search finds it by, and its
// history (each event of `document-<id>`, who and when, what it changed). Time travel shows it as
// of any version or moment (`documentAt`, `?at=` in the address: a position or a time). A
// supervisor edits it, changes its tags or removes it; a removed document is still shown as it
// was last. Live through its events, read again once the knowledge read model has applied them,
// and once the embedding worker has.

import { useEffect, useRef, useState } from 'preact/hooks';
import { gql, useLive, useProjected } from '../api/live';
import { CHUNK_FIELDS, DOCUMENT_EVENTS, DOCUMENT_FIELDS, type KnowledgeChunk, type KnowledgeDocument } from '../api/types';
import { useCanSupervise } from '../auth';
import { navigate, setQuery } from '../router';
import type { ScreenProps } from '../routes';
import { formatNumber } from '../ui/format';
import { Markdown } from '../ui/markdown';
import { Empty, Loaded, Loading, PageHead, Time } from '../ui/parts';
import { JsonView, Who } from './common';
import { SEARCH_STATUS, SearchStatus, Tags } from './knowledge';
import { DocumentForm, RemoveDocument, TagsForm } from './knowledge-actions';

interface Detail extends KnowledgeDocument {
  chunks: KnowledgeChunk[];
}

interface Entry {
  event: { id: string; position: string; version: number; type: string; occurredAt: string; actor: { kind: string; id: string } };
  changes: Record<string, { from: unknown; to: unknown }>;
}

const HISTORY_FIELDS = 'event { id position version type occurredAt actor { kind id } } changes';

/// Reads again while the read model has not caught up with the stream and its events carry no
/// position yet (they are sequenced a moment after they are written), at most this often.
const BEHIND_RETRY_MS = 200;
const BEHIND_RETRIES = 25;

/// Where an event sits for `documentAt`: its position, or its time before it has one.
function atOf(entry: Entry): string {
  return entry.event.position || entry.event.occurredAt;
}

/// The `at` of the address as people read it: a position, or a moment.
function describeAt(at: string) {
  return /^\d+$/.test(at) ? <>position {at}</> : <Time at={at} />;
}

export function DocumentPage({ params, query }: ScreenProps) {
  const id = params.id;
  const at = query.get('at') ?? '';
  const openChunk = query.get('chunk');
  const canSupervise = useCanSupervise();
  const [doc, setDoc] = useState<Detail | null>(null);
  const [history, setHistory] = useState<Entry[] | null>(null);
  /// The document as of `at`, or as it was last once removed; null: it did not exist then.
  const [past, setPast] = useState<KnowledgeDocument | null | undefined>(undefined);
  const [dialog, setDialog] = useState<'edit' | 'tags' | 'remove' | null>(null);
  const held = useRef<Detail | null>(null);
  const behind = useRef(0);
  const retry = useRef<number | undefined>(undefined);
  useEffect(() => () => window.clearTimeout(retry.current), []);

  const keep = (next: Detail | null) => {
    // The read model may answer an older copy than a mutation just did: the newer one stays.
    if (next && held.current?.id === next.id && held.current.version > next.version) return;
    held.current = next;
    setDoc(next);
  };

  const load = async () => {
    const data = await gql<{ document: Detail | null; history: Entry[] }>(
      `query DocumentPage($id: ID!, $stream: String!) {
        document(id: $id) { ${DOCUMENT_FIELDS} chunks { ${CHUNK_FIELDS} } }
        history(streamId: $stream) { ${HISTORY_FIELDS} } }`,
      { id, stream: `document-${id}` },
    );
    const last = data.history[data.history.length - 1];
    const removed = last?.event.type === 'DocumentRemoved';
    keep(removed ? null : data.document);
    setHistory(data.history);
    const when = at || (removed ? atOf(last) : '');
    if (when) {
      const then = await gql<{ documentAt: KnowledgeDocument | null }>(
        `query DocumentAt($id: ID!, $at: String!) { documentAt(id: $id, at: $at) { ${DOCUMENT_FIELDS} } }`,
        { id, at: when },
      );
      setPast(then.documentAt);
    } else setPast(undefined);
    // Written but not yet in the read model: read again once it is.
    if (last && !removed && (!data.document || data.document.version < last.event.version)) {
      if (last.event.position) readWhenApplied(last.event.position);
      else if (behind.current++ < BEHIND_RETRIES) retry.current = window.setTimeout(() => void load().catch(() => {}), BEHIND_RETRY_MS);
    } else {
      behind.current = 0;
      // In the read model, not yet embedded: read again once the embedding worker has it.
      if (data.document?.searchStatus === 'EMBEDDING' && last?.event.position) readWhenEmbedded(last.event.position);
    }
  };
  const readWhenApplied = useProjected('knowledge', load);
  const readWhenEmbedded = useProjected('embeddings', load, { everyMs: 250 });

  const live = useLive(
    [
      {
        query: `subscription DocumentChanged($types: [String!]) { events(types: $types) { position streamId } }`,
        variables: { types: DOCUMENT_EVENTS },
        next: (data) => {
          if (data.events.streamId === `document-${id}`) readWhenApplied(data.events.position);
        },
      },
    ],
    load,
    [id, at],
  );

  const closeDialog = (saved?: KnowledgeDocument, reload?: boolean) => {
    setDialog(null);
    if (saved && held.current) keep({ ...saved, chunks: held.current.chunks });
    if (saved || reload) live.reload();
  };

  const entries = history ?? [];
  const removedBy = entries[entries.length - 1]?.event.type === 'DocumentRemoved' ? entries[entries.length - 1] : null;
  if (history && entries.length === 0) {
    return (
      <section>
        <PageHead title="Document not found" />
        <Empty>
          There is no document <code>{id}</code>. <a href="/knowledge">Back to the knowledge base</a>.
        </Empty>
      </section>
    );
  }
  // What the page shows: the past asked for, the last state of a removed document, or the latest.
  const shown: KnowledgeDocument | null | undefined = at || removedBy ? past : doc;
  const latest = !at && !removedBy;
  const lastChange = [...entries].reverse().find((e) => e.event.type !== 'DocumentRemoved');
  const picked = entries.find((e) => atOf(e) === at);
  const newest = entries.length ? entries[entries.length - 1].event.version : 0;
  return (
    <Loaded loading={live.loading} error={live.error} hasData={history !== null && shown !== undefined}>
      <section class="document-page" data-document-page={id}>
        <p class="crumbs">
          <a href="/knowledge">Knowledge</a> ›
        </p>
        <PageHead title={shown?.title ?? doc?.title ?? 'Document'}>
          {canSupervise && latest && doc && (
            <>
              <button type="button" onClick={() => setDialog('edit')}>
                Edit
              </button>
              <button type="button" onClick={() => setDialog('tags')}>
                Edit tags
              </button>
              <button type="button" class="danger" onClick={() => setDialog('remove')}>
                Remove
              </button>
            </>
          )}
        </PageHead>
        {live.liveError && <p class="notice">Live updates stopped: {live.liveError.message}</p>}
        {removedBy && (
          <p class="bad-note" role="status" data-removed>
            <span aria-hidden="true">✕</span> Removed <Time at={removedBy.event.occurredAt} /> by <Who who={removedBy.event.actor} />:
            no longer in the knowledge base or in search. Shown as it was last; its history stays below.
          </p>
        )}
        {at && (
          <p class="asof-note" role="status" data-as-of={shown?.version ?? 'none'}>
            <span aria-hidden="true">◷</span>{' '}
            {shown ? (
              <>
                {picked ? 'Reading' : <>As of {describeAt(at)}: reading</>} version {shown.version} of {newest}, as it stood{' '}
                <Time at={shown.updatedAt} />.
              </>
            ) : (
              <>As of {describeAt(at)} the document did not exist yet.</>
            )}{' '}
            <a href={`/knowledge/${id}`}>Back to the latest version</a>
          </p>
        )}
        <div class="split">
          <div class="stack">
            {shown ? (
              <Content document={shown} />
            ) : latest ? (
              // Written, and not yet in the read model (it follows within a second).
              <Loading what="Taking the document in" />
            ) : (
              <Empty>Nothing to show as of then.</Empty>
            )}
            {latest && doc && <Chunks chunks={doc.chunks} count={doc.chunkCount} open={openChunk} />}
            {!latest && shown && (
              <div class="card">
                <h2>Chunks</h2>
                <p class="muted">
                  {formatNumber(shown.chunkCount)} then. Search holds the chunks of the latest version only
                  {removedBy ? ', and none of a removed document' : ''}.
                </p>
              </div>
            )}
          </div>
          <div class="stack">
            {shown && <About document={shown} latest={latest} lastChange={latest ? lastChange : undefined} />}
            <TimeTravel id={id} at={at} entries={entries} />
          </div>
        </div>
        <History entries={entries} at={at} onPick={(entry) => setQuery({ at: atOf(entry), chunk: undefined })} />
      </section>
      {dialog === 'edit' && doc && <DocumentForm document={doc} onDone={closeDialog} />}
      {dialog === 'tags' && doc && <TagsForm document={doc} onDone={closeDialog} />}
      {dialog === 'remove' && doc && (
        <RemoveDocument
          document={doc}
          onDone={(removed) => {
            setDialog(null);
            if (removed) navigate('/knowledge');
          }}
        />
      )}
    </Loaded>
  );
}

function Content({ document: shown }: { document: KnowledgeDocument }) {
  const [source, setSource] = useState(false);
  return (
    <article class="card" aria-labelledby="content-title">
      <div class="page-head">
        <h2 id="content-title">Content</h2>
        <div class="actions">
          <button type="button" class="compact" aria-pressed={source} onClick={() => setSource(!source)}>
            {source ? 'Show it formatted' : 'Show the Markdown'}
          </button>
        </div>
      </div>
      {source ? (
        <pre class="md-source wrap" tabIndex={0} aria-label="The document's Markdown" data-content>
          {shown.content}
        </pre>
      ) : (
        <div data-content>
          <Markdown text={shown.content} />
        </div>
      )}
    </article>
  );
}

function About({ document: shown, latest, lastChange }: { document: KnowledgeDocument; latest: boolean; lastChange?: Entry }) {
  return (
    <div class="card">
      <h2>About</h2>
      <dl class="facts">
        <dt>Version</dt>
        <dd data-shown-version>{shown.version}</dd>
        <dt>Tags</dt>
        <dd>
          <Tags tags={shown.tags} />
        </dd>
        <dt>Source</dt>
        <dd>{shown.source || <span class="muted">not given</span>}</dd>
        <dt>Chunks</dt>
        <dd>{formatNumber(shown.chunkCount)}</dd>
        {latest && (
          <>
            <dt>Search</dt>
            <dd>
              <SearchStatus status={shown.searchStatus} />
              {shown.searchStatus !== 'SEARCHABLE' && <div class="muted">{SEARCH_STATUS[shown.searchStatus]}</div>}
            </dd>
          </>
        )}
        <dt>Size</dt>
        <dd>{formatNumber(shown.content.length)} characters</dd>
        <dt>Added</dt>
        <dd>
          <Time at={shown.createdAt} />{' '}
          <span class="muted">
            by <Who who={shown.createdBy} />
          </span>
        </dd>
        <dt>Changed</dt>
        <dd>
          <Time at={shown.updatedAt} />
          {lastChange && (
            <span class="muted">
              {' '}
              by <Who who={lastChange.event.actor} />
            </span>
          )}
        </dd>
        <dt>Id</dt>
        <dd>
          <code>{shown.id}</code>
        </dd>
      </dl>
      <h3>Metadata</h3>
      {Object.keys(shown.metadata ?? {}).length ? <JsonView value={shown.metadata} label="Metadata" /> : <p class="muted">None.</p>}
    </div>
  );
}

function TimeTravel({ id, at, entries }: { id: string; at: string; entries: Entry[] }) {
  const [moment, setMoment] = useState('');
  const picked = entries.find((e) => atOf(e) === at);
  return (
    <div class="card time-travel">
      <h2>Time travel</h2>
      <div class="field">
        <label class="label" for="as-of-version">
          As of version
        </label>
        <select
          id="as-of-version"
          value={picked ? atOf(picked) : ''}
          onChange={(e) => setQuery({ at: e.currentTarget.value || undefined, chunk: undefined })}
        >
          <option value="">the latest</option>
          {entries.map((entry) => (
            <option key={entry.event.id} value={atOf(entry)}>
              version {entry.event.version}: {entry.event.type.replace(/^Document/, '').toLowerCase()}
              {entry.event.position ? ` (position ${entry.event.position})` : ''}
            </option>
          ))}
        </select>
      </div>
      <form
        class="setting-edit"
        onSubmit={(event) => {
          event.preventDefault();
          if (moment) setQuery({ at: new Date(moment).toISOString(), chunk: undefined });
        }}
      >
        <label class="field inline">
          <span class="label">Or as of a moment (your time)</span>
          <input type="datetime-local" step={1} value={moment} onInput={(e) => setMoment(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={!moment}>
          Show
        </button>
      </form>
      {at && (
        <p>
          <a href={`/knowledge/${id}`}>Back to the latest version</a>
        </p>
      )}
    </div>
  );
}

function Chunks({ chunks, count, open }: { chunks: KnowledgeChunk[]; count: number; open: string | null }) {
  const list = useRef<HTMLOListElement>(null);
  // The chunk asked for is brought into view once, when it is first there: not again when the
  // chunks are read again, which would move the page under the reader.
  const shownOnce = useRef<string | null>(null);
  useEffect(() => {
    if (open === null || shownOnce.current === open) return;
    const chunk = list.current?.querySelector(`[data-chunk="${CSS.escape(open)}"]`);
    if (!chunk) return;
    chunk.scrollIntoView({ block: 'center' });
    shownOnce.current = open;
  }, [open, chunks.length]);
  return (
    <div class="card">
      <h2>
        Chunks <span class="count">{formatNumber(count)}</span>
      </h2>
      <p class="muted">What search finds this document by: its sections, cut at about 1,000 characters.</p>
      {chunks.length === 0 ? (
        <Empty>{count ? 'Search has not taken this version in yet.' : 'No chunk.'}</Empty>
      ) : (
        <ol class="chunks" ref={list}>
          {chunks.map((chunk) => (
            <li key={chunk.ordinal} data-chunk={chunk.ordinal}>
              <details open={open === String(chunk.ordinal)} class={open === String(chunk.ordinal) ? 'picked' : undefined}>
                <summary>
                  <span class="chunk-ordinal">#{chunk.ordinal}</span> {chunk.heading || <span class="muted">(before any heading)</span>}{' '}
                  <span class="muted">
                    · characters {formatNumber(chunk.charStart)}–{formatNumber(chunk.charEnd)}
                  </span>
                </summary>
                <pre class="wrap chunk-text">{chunk.text}</pre>
              </details>
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

/// Fields an event of a document changes that are worth a line (its id and status are said by
/// the event's type).
const SHOWN_FIELDS = ['title', 'tags', 'source', 'metadata', 'content'];

function show(value: unknown): string {
  if (value === null || value === undefined || value === '') return '—';
  if (Array.isArray(value)) return value.length ? value.join(', ') : 'none';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/// Whether a field's value says anything (no source, no tags and `{}` metadata say nothing).
function says(value: unknown): boolean {
  if (value === null || value === undefined || value === '' || value === '{}') return false;
  return !Array.isArray(value) || value.length > 0;
}

function History({ entries, at, onPick }: { entries: Entry[]; at: string; onPick: (entry: Entry) => void }) {
  return (
    <div class="card">
      <h2>History</h2>
      {entries.length === 0 ? (
        <Empty>No event.</Empty>
      ) : (
        <ol class="history" aria-label="History of the document">
          {[...entries].reverse().map((entry) => {
            const added = entry.event.type === 'DocumentAdded';
            // What a document was added with, where it says anything; what later events changed.
            const fields = SHOWN_FIELDS.filter((f) => entry.changes && f in entry.changes && (!added || says(entry.changes[f].to)));
            const here = atOf(entry) === at;
            return (
              <li key={entry.event.id} data-history-event={entry.event.type} data-version={entry.event.version} class={here ? 'picked' : undefined}>
                <div class="history-head">
                  <span class="history-version">v{entry.event.version}</span> <strong>{entry.event.type}</strong> ·{' '}
                  <Time at={entry.event.occurredAt} /> · <Who who={entry.event.actor} />
                  {entry.event.position && <span class="muted"> · position {entry.event.position}</span>}
                  {here ? (
                    <span class="tone-info"> · shown above</span>
                  ) : (
                    <button type="button" class="compact" onClick={() => onPick(entry)}>
                      As of here
                    </button>
                  )}
                </div>
                {fields.length > 0 && entry.event.type !== 'DocumentRemoved' && (
                  <ul class="plain changes-list">
                    {fields.map((field) => {
                      const change = entry.changes[field];
                      if (field === 'content') return <ContentChange key={field} from={String(change.from ?? '')} to={String(change.to ?? '')} />;
                      return (
                        <li key={field}>
                          <code>{field}</code>:{' '}
                          {added ? (
                            show(change.to)
                          ) : (
                            <>
                              <del>{show(change.from)}</del> → <ins>{show(change.to)}</ins>
                            </>
                          )}
                        </li>
                      );
                    })}
                  </ul>
                )}
              </li>
            );
          })}
        </ol>
      )}
    </div>
  );
}

/// Lines of a diff: kept, taken out or put in.
type Line = { kind: ' ' | '-' | '+'; text: string };

/// Lines at most, beyond which a change is summed up rather than compared line by line.
const DIFF_LINES_MAX = 2000;

/// The lines that differ between `from` and `to` (longest common subsequence), with two lines of
/// context around each change; null when the texts are too long to compare here.
export function lineDiff(from: string, to: string, context = 2): Line[] | null {
  const a = from.split('\n');
  const b = to.split('\n');
  // The common start and end need no table.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end++;
  const x = a.slice(start, a.length - end);
  const y = b.slice(start, b.length - end);
  if (x.length * y.length > DIFF_LINES_MAX * DIFF_LINES_MAX / 4 || x.length + y.length > DIFF_LINES_MAX) return null;
  const table = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i--)
    for (let j = y.length - 1; j >= 0; j--) table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
  const middle: Line[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) {
      middle.push({ kind: ' ', text: x[i++] });
      j++;
    } else if (i < x.length && (j === y.length || table[i + 1][j] >= table[i][j + 1])) middle.push({ kind: '-', text: x[i++] });
    else middle.push({ kind: '+', text: y[j++] });
  }
  const all: Line[] = [
    ...a.slice(0, start).map((text) => ({ kind: ' ' as const, text })),
    ...middle,
    ...a.slice(a.length - end).map((text) => ({ kind: ' ' as const, text })),
  ];
  const near = all.map((_, n) => all.slice(Math.max(0, n - context), n + context + 1).some((l) => l.kind !== ' '));
  const out: Line[] = [];
  all.forEach((line, n) => {
    if (near[n]) out.push(line);
    else if (out.length && out[out.length - 1].text !== '…') out.push({ kind: ' ', text: '…' });
  });
  return out;
}

function ContentChange({ from, to }: { from: string; to: string }) {
  const [open, setOpen] = useState(false);
  const lines = open ? lineDiff(from, to) : null;
  return (
    <li>
      <code>content</code>: {from ? `${formatNumber(from.length)} → ` : ''}
      {formatNumber(to.length)} characters{' '}
      {from && (
        <details onToggle={(e) => setOpen((e.currentTarget as HTMLDetailsElement).open)}>
          <summary>What changed</summary>
          {open &&
            (lines ? (
              <pre class="diff" tabIndex={0} aria-label="Lines taken out and put in">
                {lines.map((line, n) => (
                  <span key={n} class={line.kind === '+' ? 'diff-in' : line.kind === '-' ? 'diff-out' : undefined}>
                    {line.kind === ' ' ? '  ' : `${line.kind} `}
                    {line.text}
                    {'\n'}
                  </span>
                ))}
              </pre>
            ) : (
              <p class="muted">Too long to compare here: travel to each version to read it.</p>
            ))}
        </details>
      )}
    </li>
  );
}

