// Knowledge: the knowledge base's documents (title, tags, source, chunks, whether semantic search
// finds each, when each was added and changed), filtered by a tag, and search over their chunks by
// keyword, meaning or both, each hit with its document, its chunk's heading, its score and the
// excerpt with the matches marked; whether semantic search runs, with which model, and how far
// the embedding worker is. A supervisor adds documents here. The search and the tag are in the
// address. The list follows the documents' events, read again once the knowledge read model has
// applied them, and again once the embedding worker has.

import { useRef, useState } from 'preact/hooks';
import { ApiError } from '../api/client';
import { gql, useLive, useProjected } from '../api/live';
import {
  DOCUMENT_EVENTS,
  DOCUMENT_SUMMARY_FIELDS,
  HIT_FIELDS,
  KNOWLEDGE_STATUS_FIELDS,
  SEARCH_MODES,
  type DocumentSearchStatus,
  type KnowledgeDocument,
  type KnowledgeHit,
  type KnowledgeStatus,
  type SearchMode,
} from '../api/types';
import { useCanSupervise } from '../auth';
import { navigate, setQuery } from '../router';
import type { ScreenProps } from '../routes';
import { formatNumber } from '../ui/format';
import { Excerpt } from '../ui/markdown';
import { Empty, ErrorNote, Loaded, Loading, PageHead, Status, Time } from '../ui/parts';
import { Who } from './common';
import { DocumentForm } from './knowledge-actions';

type Summary = Omit<KnowledgeDocument, 'content' | 'metadata'>;

/// Documents the list shows, and hits a search shows, at most (the API's own bound).
const LIST_MAX = 100;
const HITS_MAX = 20;
const MODE_NAME: Record<SearchMode, string> = { HYBRID: 'Hybrid', SEMANTIC: 'Semantic', KEYWORD: 'Keyword' };

/// Searches are by meaning and words where semantic search runs, by words where it does not,
/// unless the address says otherwise.
function defaultMode(status: KnowledgeStatus | null): SearchMode {
  return status?.semantic ? 'HYBRID' : 'KEYWORD';
}

function parseMode(value: string | null): SearchMode | null {
  return SEARCH_MODES.includes(value as SearchMode) ? (value as SearchMode) : null;
}

/// What each search status means for the one who searches.
export const SEARCH_STATUS: Record<DocumentSearchStatus, string> = {
  SEARCHABLE: 'Every mode finds it as it is now.',
  EMBEDDING: 'Keyword search finds it; semantic search once the embedding worker has reached this version.',
  OTHER_MODEL: 'Its vectors are another model’s: semantic search finds it again after devart projections rebuild embeddings.',
  KEYWORD_ONLY: 'Semantic search is off here: keyword search finds it.',
};

/// Whether semantic search finds a document as it is now: a sign, a word and, on hover, why.
export function SearchStatus({ status }: { status: DocumentSearchStatus }) {
  return (
    <span data-search-status={status}>
      <Status status={status} title={SEARCH_STATUS[status]} />
    </span>
  );
}

export function documentPath(id: string, chunk?: number): string {
  return `/knowledge/${id}${chunk === undefined ? '' : `?chunk=${chunk}`}`;
}

/// A document's tags, each a link to the list of documents with it.
export function Tags({ tags }: { tags: string[] }) {
  if (tags.length === 0) return <span class="muted">no tags</span>;
  return (
    <ul class="chips tag-list" aria-label="Tags">
      {tags.map((tag) => (
        <li key={tag}>
          <a class="chip" href={`/knowledge?tag=${encodeURIComponent(tag)}`} title={`Documents tagged ${tag}`}>
            {tag}
          </a>
        </li>
      ))}
    </ul>
  );
}

export function Knowledge({ query }: ScreenProps) {
  const canSupervise = useCanSupervise();
  const tag = query.get('tag') ?? '';
  const text = query.get('q') ?? '';
  const asked = parseMode(query.get('mode'));
  const [status, setStatus] = useState<KnowledgeStatus | null>(null);
  const mode = asked ?? defaultMode(status);
  const [documents, setDocuments] = useState<Summary[] | null>(null);
  const [allTags, setAllTags] = useState<string[]>([]);
  const [adding, setAdding] = useState(false);
  /// The answer to a search, with the search it answers: another one shows as still searching.
  const [results, setResults] = useState<{ key: string; hits: KnowledgeHit[] | null; error: ApiError | null } | null>(null);
  const key = JSON.stringify([text, mode, tag]);

  // Answers arrive in any order: only the latest read of the list is shown, and the latest
  // search for what the page asks now.
  const reads = useRef({ list: 0, search: 0, key, latest: new Map<string, number>() }).current;
  reads.key = key;

  /// The list, every tag, and the state of semantic search; says what to search with.
  const readList = async (): Promise<KnowledgeStatus> => {
    const mine = ++reads.list;
    const data = await gql<{
      documents: Summary[];
      everyTag: { tags: string[] }[];
      knowledgeStatus: KnowledgeStatus;
      projections: { name: string; checkpoint: string }[];
    }>(
      `query Documents($tag: String, $first: Int!) {
        documents(tag: $tag, first: $first) { ${DOCUMENT_SUMMARY_FIELDS} }
        everyTag: documents(first: $first) { tags }
        knowledgeStatus { ${KNOWLEDGE_STATUS_FIELDS} }
        projections { name checkpoint } }`,
      { tag: tag || null, first: LIST_MAX },
    );
    if (mine === reads.list) {
      setDocuments(data.documents);
      setAllTags([...new Set(data.everyTag.flatMap((d) => d.tags))].sort());
      setStatus(data.knowledgeStatus);
      // Documents still waiting for their vectors: read again once the worker has reached what
      // the knowledge read model holds.
      const held = data.projections.find((p) => p.name === 'knowledge');
      if (data.knowledgeStatus.semantic && data.knowledgeStatus.pendingDocuments > 0 && held) readWhenEmbedded(held.checkpoint);
    }
    return data.knowledgeStatus;
  };

  const search = async (mode: SearchMode) => {
    const mine = ++reads.search;
    const key = JSON.stringify([text, mode, tag]);
    if (reads.latest.size >= 64) reads.latest.clear();
    reads.latest.set(key, mine);
    const current = () => reads.key === key && reads.latest.get(key) === mine;
    if (!text.trim()) {
      setResults(null);
      return;
    }
    try {
      const data = await gql<{ searchKnowledge: KnowledgeHit[] }>(
        `query Search($query: String!, $first: Int!, $tags: [String!], $mode: SearchMode!) {
          searchKnowledge(query: $query, first: $first, tags: $tags, mode: $mode) { ${HIT_FIELDS} } }`,
        { query: text, first: HITS_MAX, tags: tag ? [tag] : null, mode },
      );
      if (current()) setResults({ key, hits: data.searchKnowledge, error: null });
    } catch (failure) {
      // A search that cannot be answered is said on the page; the page goes on.
      const error = failure instanceof ApiError ? failure : new ApiError(String(failure), 'INTERNAL');
      if (current()) setResults({ key, hits: null, error });
    }
  };

  // The search's mode may depend on whether semantic search runs: the list first.
  const readAll = async () => {
    const now = await readList();
    await search(asked ?? defaultMode(now));
  };
  const readWhenApplied = useProjected('knowledge', readAll);
  const readWhenEmbedded = useProjected('embeddings', readAll, { everyMs: 250 });
  const live = useLive(
    [
      {
        query: `subscription DocumentsChanged($types: [String!]) { events(types: $types) { position } }`,
        variables: { types: DOCUMENT_EVENTS },
        next: (data) => {
          readWhenApplied(data.events.position);
          if (status?.semantic) readWhenEmbedded(data.events.position);
        },
      },
    ],
    readAll,
    [tag, text, asked],
  );

  const tags = tag && !allTags.includes(tag) ? [...allTags, tag].sort() : allTags;
  return (
    <section class="knowledge">
      <PageHead title="Knowledge">
        {canSupervise && (
          <button type="button" class="primary" onClick={() => setAdding(true)}>
            Add a document
          </button>
        )}
      </PageHead>
      <SearchBar key={text} text={text} mode={mode} tag={tag} tags={tags} status={status} />
      <Loaded loading={live.loading} error={live.error} hasData={documents !== null}>
        {live.liveError && <p class="notice">Live updates stopped: {live.liveError.message}</p>}
        {text ? (
          <Results text={text} mode={mode} tag={tag} results={results?.key === key ? results : null} />
        ) : (
          <DocumentList documents={documents ?? []} tag={tag} canSupervise={canSupervise} />
        )}
      </Loaded>
      {adding && (
        <DocumentForm
          onDone={(saved) => {
            setAdding(false);
            if (saved) navigate(documentPath(saved.id));
          }}
        />
      )}
    </section>
  );
}

function SearchBar({
  text,
  mode,
  tag,
  tags,
  status,
}: {
  text: string;
  mode: SearchMode;
  tag: string;
  tags: string[];
  status: KnowledgeStatus | null;
}) {
  const off = status !== null && !status.semantic;
  const [draft, setDraft] = useState(text);
  return (
    <form
      class="filters knowledge-search"
      role="search"
      aria-label="Search the knowledge base"
      onSubmit={(event) => {
        event.preventDefault();
        setQuery({ q: draft.trim() || undefined });
      }}
    >
      <label class="field grow">
        <span class="label">Search</span>
        <input
          type="search"
          value={draft}
          placeholder={'words, "a phrase", -without, this or that'}
          aria-describedby="search-hint"
          onInput={(e) => setDraft(e.currentTarget.value)}
        />
      </label>
      <div class="field">
        <label class="label" for="knowledge-mode">
          Mode
        </label>
        <select
          id="knowledge-mode"
          value={mode}
          onChange={(e) => setQuery({ mode: e.currentTarget.value === defaultMode(status) ? undefined : e.currentTarget.value })}
        >
          {SEARCH_MODES.map((m) => (
            <option key={m} value={m}>
              {MODE_NAME[m]}
              {off && m !== 'KEYWORD' ? ' (off here)' : ''}
            </option>
          ))}
        </select>
      </div>
      <div class="field">
        <label class="label" for="knowledge-tag">
          Tag
        </label>
        <select id="knowledge-tag" value={tag} onChange={(e) => setQuery({ tag: e.currentTarget.value || undefined })}>
          <option value="">any</option>
          {tags.map((t) => (
            <option key={t} value={t}>
              {t}
            </option>
          ))}
        </select>
      </div>
      <div class="buttons">
        <button type="submit" class="primary">
          Search
        </button>
        {(text || tag) && (
          <button type="button" onClick={() => setQuery({ q: undefined, mode: undefined, tag: undefined })}>
            Clear
          </button>
        )}
      </div>
      <p id="search-hint" class="hint search-hint">
        Keyword: words in any form (deploy, deployed) and exact identifiers. Semantic: passages by meaning, even in other words.
        Hybrid: both. The tag narrows the list and the search.
      </p>
      {status && <SemanticState status={status} />}
    </form>
  );
}

/// Whether semantic search runs here, with which model, and how far the embedding worker is; or
/// why it is off and how to turn it on.
function SemanticState({ status }: { status: KnowledgeStatus }) {
  if (!status.semantic) {
    // devart's reason says it whole ("semantic search is off: …, run scripts/models"), as a sentence.
    const reason = status.reason?.trim() || 'no embedding model is configured';
    const sentence = /^semantic search/i.test(reason) ? reason : `semantic search is off: ${reason}`;
    return (
      <p class="semantic-state" data-semantic="off">
        <span class="tone-muted" aria-hidden="true">
          ○
        </span>{' '}
        <strong>{sentence.charAt(0).toUpperCase() + sentence.slice(1)}</strong>. Keyword search works.
      </p>
    );
  }
  const waiting = status.pendingDocuments;
  return (
    <p class="semantic-state" data-semantic="on">
      <span class="tone-good" aria-hidden="true">
        ●
      </span>{' '}
      <strong>Semantic search is on</strong> with <code>{status.model}</code>: {formatNumber(status.embeddedChunks)} of{' '}
      {formatNumber(status.chunks)} chunks embedded
      {waiting > 0 ? (
        <span class="tone-info">
          {' '}
          · {formatNumber(waiting)} {waiting === 1 ? 'document waits' : 'documents wait'} for the embedding worker (keyword search finds
          them already)
        </span>
      ) : (
        <>, every document as it is now</>
      )}
      .
    </p>
  );
}

function Results({
  text,
  mode,
  tag,
  results,
}: {
  text: string;
  mode: SearchMode;
  tag: string;
  /// Null while searching.
  results: { hits: KnowledgeHit[] | null; error: ApiError | null } | null;
}) {
  const head = (
    <div class="page-head">
      <h2>
        {MODE_NAME[mode]} search for “{text}”{tag && <> in {tag}</>}
      </h2>
      <div class="actions">
        <a href={tag ? `/knowledge?tag=${encodeURIComponent(tag)}` : '/knowledge'}>All documents</a>
      </div>
    </div>
  );
  const error = results?.error;
  if (error) {
    return (
      <section aria-label="Search results" data-search-error={error.code}>
        {head}
        <ErrorNote error={error} context="This search could not be answered" />
        {mode !== 'KEYWORD' && (
          <div class="buttons">
            <button type="button" onClick={() => setQuery({ mode: 'KEYWORD' })}>
              Search by keyword instead
            </button>
          </div>
        )}
      </section>
    );
  }
  const hits = results?.hits;
  if (!hits) {
    return (
      <section aria-label="Search results">
        {head}
        <Loading what="Searching" />
      </section>
    );
  }
  return (
    <section aria-label="Search results">
      {head}
      <p class="muted" role="status">
        {hits.length === 0
          ? ''
          : `${formatNumber(hits.length)} ${hits.length === 1 ? 'passage' : 'passages'}${hits.length === HITS_MAX ? ' (the best ones)' : ''}, best first`}
      </p>
      {hits.length === 0 ? (
        <Empty>Nothing matches “{text}”{tag ? ` among documents tagged ${tag}` : ''}.</Empty>
      ) : (
        <ol class="hits">
          {hits.map((hit) => (
            <li key={`${hit.document.id}-${hit.chunk.ordinal}`} class="card hit" data-hit={hit.document.id}>
              <div class="hit-head">
                <a class="hit-title" href={documentPath(hit.document.id, hit.chunk.ordinal)}>
                  {hit.document.title}
                </a>
                {hit.chunk.heading && <span class="hit-heading">{hit.chunk.heading}</span>}
                <span class="hit-score" title="Higher is better; comparable within one search">
                  score {hit.score.toPrecision(3)}
                </span>
              </div>
              <p class="hit-excerpt">
                <Excerpt html={hit.excerpt} />
              </p>
              <div class="hit-meta">
                <Tags tags={hit.document.tags} />
                {hit.document.source && <span class="muted">from {hit.document.source}</span>}
              </div>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

function DocumentList({ documents, tag, canSupervise }: { documents: Summary[]; tag: string; canSupervise: boolean }) {
  return (
    <section aria-labelledby="documents-title">
      <div class="page-head">
        <h2 id="documents-title">
          {tag ? <>Documents tagged {tag}</> : 'Documents'} <span class="count">{formatNumber(documents.length)}</span>
        </h2>
      </div>
      {documents.length === 0 ? (
        <Empty>
          {tag
            ? `No document is tagged ${tag}.`
            : canSupervise
              ? 'The knowledge base is empty: add a document, or let agents add theirs (knowledge.agentsMayWrite).'
              : 'The knowledge base is empty.'}
        </Empty>
      ) : (
        <div class="table-wrap">
          <table class="table" aria-label="Documents">
            <thead>
              <tr>
                <th scope="col">Title</th>
                <th scope="col">Tags</th>
                <th scope="col">Source</th>
                <th scope="col" class="num">Chunks</th>
                <th scope="col">Search</th>
                <th scope="col">Updated</th>
                <th scope="col">Added</th>
              </tr>
            </thead>
            <tbody>
              {documents.map((doc) => (
                <tr key={doc.id} data-document={doc.id}>
                  <th scope="row">
                    <a href={documentPath(doc.id)}>{doc.title}</a>
                  </th>
                  <td>
                    <Tags tags={doc.tags} />
                  </td>
                  <td>{doc.source || <span class="muted">—</span>}</td>
                  <td class="num">{formatNumber(doc.chunkCount)}</td>
                  <td>
                    <SearchStatus status={doc.searchStatus} />
                  </td>
                  <td>
                    <Time at={doc.updatedAt} /> <span class="muted">v{doc.version}</span>
                  </td>
                  <td>
                    <Time at={doc.createdAt} />{' '}
                    <span class="muted">
                      by <Who who={doc.createdBy} />
                    </span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {documents.length === LIST_MAX && <p class="muted">The {LIST_MAX} changed last; pick a tag, or search, to find others.</p>}
        </div>
      )}
    </section>
  );
}
