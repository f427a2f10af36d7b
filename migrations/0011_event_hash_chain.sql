-- Tamper evidence: a hash chain over the global order (see `commands/src/chain.rs`).

-- SHA-256 of the previous event's hash and this event's canonical bytes; NULL until the chainer
-- reaches the event (it runs right behind the sequencer).
alter table events add column hash bytea;

-- How far the chain reaches, and its last hash: where the chainer continues. One row.
create table event_chain (
    position    bigint not null,
    hash        bytea not null,
    updated_at  timestamptz not null default now()
);

insert into event_chain (position, hash) values (0, '\x0000000000000000000000000000000000000000000000000000000000000000');
