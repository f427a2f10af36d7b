// What a supervisor does to the knowledge base's documents, shared by its list and a document's
// page: add one, edit it (only from the version seen: `expectedVersion`, a `CONFLICT` otherwise),
// change its tags, remove it (asked first). Each is one mutation; the pages hear of it again on
// the events feed, so callers need not merge its answer.

import { useState } from 'preact/hooks';
import type { ApiError } from '../api/client';
import { gql, useMutation } from '../api/live';
import { DOCUMENT_FIELDS, type KnowledgeDocument } from '../api/types';
import { Confirm, Dialog, ErrorNote, Field } from '../ui/parts';
import { parseJson } from './common';

/// What the API takes: 1 to 64 of `a-z0-9-_./:` each, at most 32.
const TAG = /^[a-z0-9\-_./:]{1,64}$/;
const TAGS_MAX = 32;
const TITLE_MAX = 200;
const SOURCE_MAX = 500;
/// 1 MiB, as the API counts it: in UTF-8 bytes.
const CONTENT_BYTES_MAX = 1 << 20;

/// Tags as typed (commas or spaces between them): lower-cased, without repeats, sorted like the API's.
export function parseTags(text: string): string[] {
  const tags = text
    .split(/[\s,]+/)
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
  return [...new Set(tags)].sort();
}

/// What is wrong with these tags, if anything.
export function tagsError(tags: string[]): string | null {
  if (tags.length > TAGS_MAX) return `At most ${TAGS_MAX} tags; these are ${tags.length}.`;
  const bad = tags.find((t) => !TAG.test(t));
  return bad ? `“${bad}” is not a tag: 1 to 64 of a–z, 0–9 and - _ . / :` : null;
}

function metadataOf(text: string): { value?: Record<string, unknown>; error?: string } {
  const parsed = parseJson(text, {});
  if (!parsed.ok) return { error: parsed.error };
  const value = parsed.value;
  if (!value || typeof value !== 'object' || Array.isArray(value)) return { error: 'Give a JSON object, like {"owner": "ops"}.' };
  return { value: value as Record<string, unknown> };
}

function metadataText(metadata: Record<string, unknown>): string {
  return Object.keys(metadata).length ? JSON.stringify(metadata, null, 2) : '';
}

function bytes(text: string): number {
  return new TextEncoder().encode(text).length;
}

/// The note a refused edit gets: a conflict says someone else changed the document since.
function SaveError({ error, version, onReload }: { error: ApiError | null; version?: number; onReload: () => void }) {
  if (error?.code !== 'CONFLICT' || version === undefined) return <ErrorNote error={error} context="Not saved" />;
  return (
    <div class="error-note" role="alert" data-conflict>
      <span aria-hidden="true">⚠</span> Changed by someone else since you opened it (you edited version {version}): reload to see
      their change, then edit again. Your text here is not saved. <code class="code">{error.code}</code>
      <div class="buttons">
        <button type="button" onClick={onReload}>
          Reload
        </button>
      </div>
    </div>
  );
}

/// The form to add a document, or to edit one (its tags have a form of their own).
export function DocumentForm({
  document: opened,
  onDone,
}: {
  document?: KnowledgeDocument;
  /// With the document saved; with nothing when closed; with `reload` after a conflict.
  onDone: (saved?: KnowledgeDocument, reload?: boolean) => void;
}) {
  // The version the form was opened on, whatever the page reads meanwhile: the edit is decided
  // against it (`expectedVersion`), so someone else's change since is a conflict, never lost.
  const [held] = useState(opened);
  const [title, setTitle] = useState(held?.title ?? '');
  const [content, setContent] = useState(held?.content ?? '');
  const [tags, setTags] = useState('');
  const [source, setSource] = useState(held?.source ?? '');
  const [metadata, setMetadata] = useState(held ? metadataText(held.metadata) : '');
  const meta = metadataOf(metadata);
  const tagList = parseTags(tags);
  const titleError = !title.trim() ? 'A title is needed.' : title.trim().length > TITLE_MAX ? `At most ${TITLE_MAX} characters.` : null;
  const size = bytes(content);
  const contentError = !content.trim() ? 'Some content is needed.' : size > CONTENT_BYTES_MAX ? 'At most 1 MiB.' : null;
  const sourceError = source.trim().length > SOURCE_MAX ? `At most ${SOURCE_MAX} characters.` : null;
  const tagError = held ? null : tagsError(tagList);
  const invalid = !!(titleError || contentError || sourceError || tagError || meta.error);
  // An edit sends only what changed: the event records just that.
  const input: Record<string, unknown> = {};
  if (held) {
    if (title.trim() !== held.title) input.title = title.trim();
    if (content !== held.content) input.content = content;
    if (source.trim() !== held.source) input.source = source.trim();
    if (meta.value && JSON.stringify(meta.value) !== JSON.stringify(held.metadata)) input.metadata = meta.value;
  }
  const unchanged = !!held && Object.keys(input).length === 0;
  const save = useMutation(async () => {
    if (held) {
      const data = await gql<{ updateDocument: KnowledgeDocument }>(
        `mutation UpdateDocument($id: ID!, $expectedVersion: Int, $input: UpdateDocumentInput!) {
          updateDocument(id: $id, expectedVersion: $expectedVersion, input: $input) { ${DOCUMENT_FIELDS} } }`,
        { id: held.id, expectedVersion: held.version, input },
      );
      return data.updateDocument;
    }
    const data = await gql<{ addDocument: KnowledgeDocument }>(
      `mutation AddDocument($input: AddDocumentInput!) { addDocument(input: $input) { ${DOCUMENT_FIELDS} } }`,
      {
        input: {
          title: title.trim(),
          content,
          tags: tagList,
          ...(source.trim() ? { source: source.trim() } : {}),
          ...(meta.value && Object.keys(meta.value).length ? { metadata: meta.value } : {}),
        },
      },
    );
    return data.addDocument;
  });
  const submit = async (event: Event) => {
    event.preventDefault();
    if (invalid || unchanged) return;
    const saved = await save.run();
    if (saved) onDone(saved);
  };
  return (
    <Dialog title={held ? 'Edit document' : 'Add a document'} onClose={() => onDone()}>
      <form class="form document-form" onSubmit={submit}>
        <Field label="Title" error={title === '' ? null : titleError}>
          <input required maxLength={TITLE_MAX} value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
        </Field>
        <Field
          label="Content"
          hint={`Markdown; headings and paragraphs make the chunks search finds. ${size.toLocaleString()} bytes of at most 1 MiB.`}
          error={content === '' ? null : contentError}
        >
          <textarea
            class="mono"
            required
            rows={14}
            spellcheck={false}
            value={content}
            onInput={(e) => setContent(e.currentTarget.value)}
          />
        </Field>
        {!held && (
          <Field label="Tags" hint="Commas or spaces between them; a–z, 0–9 and - _ . / :" error={tagError}>
            <input value={tags} placeholder="ops, runbook" onInput={(e) => setTags(e.currentTarget.value)} />
          </Field>
        )}
        <Field label="Source" hint="Where it comes from, e.g. wiki/deploys; optional" error={sourceError}>
          <input value={source} onInput={(e) => setSource(e.currentTarget.value)} />
        </Field>
        <Field label="Metadata (JSON)" hint="A JSON object; optional" error={meta.error ?? null}>
          <textarea class="mono" rows={3} spellcheck={false} value={metadata} onInput={(e) => setMetadata(e.currentTarget.value)} />
        </Field>
        <SaveError error={save.error} version={held?.version} onReload={() => onDone(undefined, true)} />
        <div class="buttons">
          <button type="submit" class="primary" disabled={save.running || invalid || unchanged}>
            {held ? 'Save' : 'Add document'}
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/// Replaces a document's tags.
export function TagsForm({ document: held, onDone }: { document: KnowledgeDocument; onDone: (saved?: KnowledgeDocument) => void }) {
  const [text, setText] = useState(held.tags.join(', '));
  const tags = parseTags(text);
  const error = tagsError(tags);
  const save = useMutation(async () => {
    const data = await gql<{ tagDocument: KnowledgeDocument }>(
      `mutation TagDocument($id: ID!, $tags: [String!]!) { tagDocument(id: $id, tags: $tags) { ${DOCUMENT_FIELDS} } }`,
      { id: held.id, tags },
    );
    return data.tagDocument;
  });
  return (
    <Dialog title={`Tags of ${held.title}`} onClose={() => onDone()}>
      <form
        class="form"
        onSubmit={async (event) => {
          event.preventDefault();
          if (error) return;
          const saved = await save.run();
          if (saved) onDone(saved);
        }}
      >
        <Field label="Tags" hint="Commas or spaces between them; a–z, 0–9 and - _ . / :; empty: none" error={error}>
          <input value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </Field>
        <ErrorNote error={save.error} context="Not saved" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={save.running || !!error}>
            Save tags
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/// Waits (a few seconds at most) until the read model has let go of a removed document, so the
/// list shown next no longer has it.
async function untilGone(id: string, everyMs = 100, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const data = await gql<{ document: { id: string } | null }>('query Gone($id: ID!) { document(id: $id) { id } }', { id });
    if (!data.document) return;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/// Asks before removing a document from the knowledge base and from search.
export function RemoveDocument({ document: held, onDone }: { document: KnowledgeDocument; onDone: (removed: boolean) => void }) {
  return (
    <Confirm
      title="Remove document"
      confirm="Remove document"
      danger
      run={async () => {
        const data = await gql<{ removeDocument: boolean }>('mutation RemoveDocument($id: ID!) { removeDocument(id: $id) }', {
          id: held.id,
        });
        await untilGone(held.id);
        return data;
      }}
      onDone={onDone}
    >
      “{held.title}” leaves the knowledge base and search at once. Its history stays: it can still be read as it was, through
      time travel on its page.
    </Confirm>
  );
}
