-- The knowledge base's vectors, as of `projection_checkpoints['embeddings']`: a read model of its
-- own, so that embedding (slow, and dependent on a model) never holds keyword search back, and a
-- change of model is a rebuild aside and a swap like any read model's.

-- The columns 0019 reserved in `knowledge_chunks` were never written: the vectors live apart.
alter table knowledge_chunks drop column embedding, drop column model;

-- One row per live document the embedding worker has applied, up to which version of its stream:
-- a document is searchable by meaning once this `version` equals `documents.version`.
create table knowledge_embedded (
    document_id     uuid primary key,
    -- The document's stream version this row and its vectors reflect (content, tags and source).
    version         bigint not null,
    tags            text[] not null,
    source          text not null,
    -- Name and version of the model that made the vectors (`all-MiniLM-L6-v2@<sha256 prefix>`).
    model           text not null,
    chunk_count     integer not null,
    embedded_at     timestamptz not null
);

-- One vector per chunk, the chunks split from the same content by the same pure function as
-- `knowledge_chunks`, so `(document_id, ordinal)` names the same chunk in both once both have
-- applied the same version; `text_md5` tells when they have not (search drops such a hit rather
-- than show another chunk's text).
create table knowledge_vectors (
    document_id     uuid not null,
    ordinal         integer not null check (ordinal >= 0),
    text_md5        text not null,
    -- The md5 of the text the model embedded (the chunk's headings and its text): when its document
    -- changes, a chunk whose embedded text did not keeps its vector instead of being embedded again.
    embedded_md5    text not null,
    -- The document's tags and source, repeated here so that a filtered search is one index scan
    -- with pgvector's iterative scans (`hnsw.iterative_scan`) rather than a join after a limit.
    tags            text[] not null,
    source          text not null,
    model           text not null,
    -- Unit length: cosine distance `<=>` orders by meaning.
    embedding       vector(384) not null,
    primary key (document_id, ordinal)
);

-- Approximate nearest neighbours by cosine distance (pgvector's defaults: m = 16,
-- ef_construction = 64; search sets `hnsw.ef_search`).
create index knowledge_vectors_hnsw on knowledge_vectors using hnsw (embedding vector_cosine_ops);

-- No checkpoint row yet: the embedding worker makes its own when it first runs, so an instance
-- without an embedding provider shows no lag for vectors it was never asked to make.

alter function devart_secure_read_models() rename to devart_secure_read_models_0019;

create function devart_secure_read_models() returns void language plpgsql as $$
begin
    perform devart_secure_read_models_0019();
    grant select on knowledge_embedded, knowledge_vectors to devart_viewer, devart_supervisor, devart_admin, devart_agent;
end
$$;

select devart_secure_read_models();
