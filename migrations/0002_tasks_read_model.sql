-- Projection bookkeeping and the tasks read model.

-- One row per projection: the last global position its read model reflects. It is written in the
-- same transaction as the read-model change, so a redelivered event is recognised and skipped.
create table projection_checkpoints (
    name            text primary key,
    position        bigint not null default 0,
    updated_at      timestamptz not null default now()
);

-- The task board: one row per live (not deleted) task, as of `projection_checkpoints['tasks']`.
create table tasks (
    id                      uuid primary key,
    title                   text not null,
    description             text not null,
    status                  text not null,
    priority                smallint not null,
    required_capabilities   text[] not null,
    parent_task_id          uuid,
    -- The task stream's version and the global position of the last event applied to the row.
    version                 bigint not null,
    position                bigint not null,
    created_at              timestamptz not null,
    updated_at              timestamptz not null,
    created_by              text not null
);

-- `tasks(filter, first, after)` pages newest first by (created_at, id), optionally by status.
create index tasks_created on tasks (created_at desc, id desc);
create index tasks_status_created on tasks (status, created_at desc, id desc);

insert into projection_checkpoints (name) values ('tasks');
