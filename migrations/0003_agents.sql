-- Agents: their API keys (write side) and the agents read model.

-- The current API key of each agent. Written in the same transaction as the agent's events, but not
-- derived from them: the secret's hash must never travel in events, the audit trail or the bus.
-- Keys are looked up by their public id (the `dva_<key_id>_…` prefix), never scanned.
create table agent_keys (
    key_id          text primary key,
    -- One current key per agent: rotating replaces the row.
    agent_id        uuid not null unique,
    -- argon2id, PHC string format.
    secret_hash     text not null,
    -- A deactivated agent's key is refused at once, whatever the read model says yet.
    active          boolean not null default true,
    created_at      timestamptz not null default now()
);

-- The agents read model, as of `projection_checkpoints['agents']`.
create table agents (
    id              uuid primary key,
    name            text not null,
    capabilities    text[] not null,
    active          boolean not null,
    key_id          text not null,
    version         bigint not null,
    position        bigint not null,
    registered_at   timestamptz not null,
    updated_at      timestamptz not null
);

insert into projection_checkpoints (name) values ('agents');
