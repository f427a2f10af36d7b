-- Workflows: the read model of workflow templates and their runs.

-- Each workflow's newest version, as of `projection_checkpoints['workflows']`.
create table workflows (
    id              uuid primary key,
    name            text not null,
    description     text not null,
    version         integer not null,
    -- The stages of that version: [{key, title, description, priority, requiredCapabilities,
    -- dependsOn, maxAttempts}].
    stages          jsonb not null,
    created_at      timestamptz not null,
    updated_at      timestamptz not null
);

-- Each run, with the status of each of its stages (a stage's task events included).
create table workflow_runs (
    id                  uuid primary key,
    workflow_id         uuid not null,
    workflow_name       text not null,
    workflow_version    integer not null,
    status              text not null,
    input               jsonb,
    failure             text,
    -- [{key, title, …, status, taskId, attempt, result, error, startedAt, finishedAt}], in the
    -- workflow's order.
    stages              jsonb not null,
    created_by          text not null,
    version             bigint not null,
    position            bigint not null,
    created_at          timestamptz not null,
    updated_at          timestamptz not null,
    finished_at         timestamptz
);

create index workflow_runs_recent on workflow_runs (created_at desc, id);
create index workflow_runs_workflow on workflow_runs (workflow_id, created_at desc);

-- Which run and stage a task carries out, so that its events find their run.
create table workflow_stage_tasks (
    task_id     uuid primary key,
    run_id      uuid not null,
    stage_key   text not null
);

insert into projection_checkpoints (name) values ('workflows');
