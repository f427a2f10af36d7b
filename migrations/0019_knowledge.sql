-- The knowledge base's read model, as of `projection_checkpoints['knowledge']`: the live documents,
-- and the chunks search reads. Both are rebuilt from the `document` streams.

-- One row per live document; a removed document's row is deleted (its history stays in `events`).
create table documents (
    id              uuid primary key,
    title           text not null,
    -- Markdown, at most 1 MiB (the domain checks).
    content         text not null,
    -- Lower case, deduplicated, sorted.
    tags            text[] not null default '{}',
    -- Where the document comes from; empty when nobody said.
    source          text not null default '',
    metadata        jsonb not null default '{}',
    -- The document's stream version: what `updateDocument(expectedVersion:)` names.
    version         bigint not null,
    -- Its latest event in the global order.
    position        bigint not null,
    created_at      timestamptz not null,
    created_by      text not null,
    updated_at      timestamptz not null,
    updated_by      text not null,
    -- How many rows of `knowledge_chunks` it has.
    chunk_count     integer not null
);

-- `documents(tag:)` and the tag filter of search.
create index documents_tags on documents using gin (tags);

-- A document's text, split by headings and paragraphs (about 1,000 characters, about 150 repeated
-- between consecutive chunks of a section). Rewritten whole when the content changes, deleted with
-- the document. No foreign key: a rebuild swaps the two tables in one after the other.
create table knowledge_chunks (
    document_id     uuid not null,
    -- Its place in the document, from 0.
    ordinal         integer not null check (ordinal >= 0),
    -- The headings it sits under, joined by ' › '; empty before the first heading.
    heading         text not null,
    text            text not null,
    -- Its characters in the document's content: `substr(content, char_start + 1, char_end - char_start)`.
    char_start      integer not null check (char_start >= 0),
    char_end        integer not null check (char_end > char_start),
    -- Keyword search: the heading weighs more than the text.
    tsv             tsvector generated always as (
                        setweight(to_tsvector('english', coalesce(heading, '')), 'A') ||
                        setweight(to_tsvector('english', text), 'B')
                    ) stored,
    -- Reserved for the embedding worker (semantic search): null until it has embedded the chunk,
    -- and the model that did.
    embedding       vector(384),
    model           text,
    primary key (document_id, ordinal)
);

create index knowledge_chunks_tsv on knowledge_chunks using gin (tsv);

insert into projection_checkpoints (name) values ('knowledge');

alter function devart_secure_read_models() rename to devart_secure_read_models_0015;

-- Everyone who reads tasks searches the knowledge base: people and agents alike, every row.
create function devart_secure_read_models() returns void language plpgsql as $$
begin
    perform devart_secure_read_models_0015();
    grant select on documents, knowledge_chunks to devart_viewer, devart_supervisor, devart_admin, devart_agent;
end
$$;

select devart_secure_read_models();
