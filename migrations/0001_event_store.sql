-- The event store: the single source of truth. Every other table is derived from it.

-- pgvector serves the knowledge base's embeddings; installing it here makes a missing extension fail
-- at `devart migrate`, not at first use.
create extension if not exists vector;

create table events (
    -- Order of insertion: only used to keep a transaction's events in the order it wrote them.
    insertion_seq   bigint generated always as identity,
    -- UUIDv7, chosen by the writer; also the message id on the bus (`Nats-Msg-Id`, `ce-id`).
    event_id        uuid primary key,
    -- `<kind>-<uuid>`, e.g. `task-0190…`.
    stream_id       text not null,
    -- 1, 2, 3, … within a stream: the optimistic-concurrency check is this column's unique key.
    stream_version  bigint not null check (stream_version >= 1),
    -- The global order: dense and gapless from 1, assigned by the sequencer after the writer has
    -- committed, so a reader following positions can never pass over an event committed late.
    -- NULL until then.
    position        bigint,
    -- The writing transaction's id. The sequencer orders a batch by it, so that an event caused by
    -- another (written after reading it) is always placed after it.
    transaction_id  xid8 not null default pg_current_xact_id(),
    -- `TaskCreated`, …; with schema_version it says how to decode payload.
    event_type      text not null check (event_type ~ '^[A-Z][A-Za-z0-9]{1,63}$'),
    schema_version  smallint not null check (schema_version >= 1),
    -- postcard encoding of the event's versioned wire type: compact, decoded (and upcast) by devart.
    payload         bytea not null,
    occurred_at     timestamptz not null,
    actor_kind      text not null check (actor_kind in ('user', 'agent', 'system')),
    actor_id        text not null,
    -- Everything one request caused shares a correlation id; causation names the direct cause.
    correlation_id  uuid not null,
    causation_id    uuid,
    -- The command that appended the event (see `commands`).
    command_id      uuid not null,
    constraint events_stream_version_key unique (stream_id, stream_version),
    constraint events_position_key unique (position)
);

-- The sequencer's work list: committed events still waiting for a position. It stays small.
create index events_unsequenced on events (transaction_id, insertion_seq) where position is null;

-- Idempotency: a command id is recorded once, in the same statement as its events, so a retried
-- command finds its first outcome instead of appending again.
create table commands (
    command_id      uuid primary key,
    stream_id       text not null,
    -- The stream version after the command; 0 events means a command that changed nothing.
    stream_version  bigint not null,
    event_count     int not null,
    recorded_at     timestamptz not null default now()
);

-- Where the relay has got to on the bus, for lag reporting. The bus itself is the authority:
-- stream sequence N carries position N.
create table relay_checkpoints (
    name            text primary key,
    position        bigint not null,
    updated_at      timestamptz not null default now()
);

-- Secrets devart generates for itself on first `migrate` (the JWT signing key), so `serve` and
-- `token` agree on one machine with no set-up. An explicit key in the environment overrides them.
create table secrets (
    name            text primary key,
    value           bytea not null,
    created_at      timestamptz not null default now()
);
