-- Analytics: the facts behind the cost, throughput and queue charts, and the costs the cost-outlier
-- detector compares. All of it as of `projection_checkpoints['analytics']`, derived from events
-- only (no clock), so a rebuild equals the live tables row for row. Amounts are `Money`: integer
-- millionths of the currency unit.

-- One row per task ever created; deleted tasks stay (status 'DELETED'): their cost was spent.
create table analytics_tasks (
    task_id                 uuid primary key,
    -- The domain's status names.
    status                  text not null,
    created_at              timestamptz not null,
    -- Time to claim runs from creation to the first claim, time to complete to the completion.
    first_claimed_at        timestamptz,
    completed_at            timestamptz,
    -- When it failed for good; a retry clears it.
    failed_at               timestamptz,
    cancelled_at            timestamptz,
    -- The agent that held its last attempt: the one that completed it, or that failed it last.
    agent_id                uuid,
    attempts                integer not null,
    required_capabilities   text[] not null,
    workflow_run_id         uuid,
    stage_key               text,
    -- The tasks its cost compares with: `stage:<workflow>/<stage key>` for a workflow stage's task,
    -- else `capabilities:<required capabilities, sorted, comma-separated>`.
    cost_group              text not null,
    -- Every settled charge naming the task, summed, and how many there were.
    cost                    bigint not null,
    charges                 integer not null,
    -- The global position of its completion: orders a group's completions, newest first.
    completed_position      bigint,
    -- The last cost-outlier flag, the figures it gave, and its acknowledgment.
    outlier_flagged_at      timestamptz,
    outlier_cost            bigint,
    outlier_median          bigint,
    outlier_mad             double precision,
    outlier_z_score         double precision,
    outlier_threshold       double precision,
    outlier_comparable      integer,
    outlier_group           text,
    outlier_acknowledged_at timestamptz,
    outlier_acknowledged_by text,
    outlier_note            text,
    -- The task's cost when the flag was acknowledged: the detector judges it again only once it
    -- costs more.
    outlier_acknowledged_cost bigint
);

-- Window queries select tasks by when they were created, first claimed, completed or failed.
create index analytics_tasks_created on analytics_tasks (created_at);
create index analytics_tasks_claimed on analytics_tasks (first_claimed_at) where first_claimed_at is not null;
create index analytics_tasks_completed on analytics_tasks (completed_at) where completed_at is not null;
create index analytics_tasks_failed on analytics_tasks (failed_at) where failed_at is not null;
-- The detector reads a group's latest completions before a position.
create index analytics_tasks_comparable on analytics_tasks (cost_group, completed_position desc)
    where completed_position is not null;
-- `outliers` lists flags, newest first.
create index analytics_tasks_outliers on analytics_tasks (outlier_flagged_at desc, task_id)
    where outlier_flagged_at is not null;

-- One row per settled charge (`UsageCharged`): what rankings over a window (tasks, agents,
-- services) sum.
create table analytics_charges (
    charge_id       uuid primary key,
    occurred_at     timestamptz not null,
    service_id      uuid not null,
    task_id         uuid,
    agent_id        uuid,
    amount          bigint not null,
    -- Its global position: the detector sums a task's cost as of the event it judges on.
    position        bigint not null
);

create index analytics_charges_time on analytics_charges (occurred_at);
create index analytics_charges_task on analytics_charges (task_id, position) where task_id is not null;

-- Cost per hour (UTC) and service: what cost-over-time series sum, whatever the window's length.
create table analytics_costs_hourly (
    hour            timestamptz not null,
    service_id      uuid not null,
    cost            bigint not null,
    charges         bigint not null,
    primary key (hour, service_id)
);

-- Queue depth per hour (UTC) in which it changed: tasks pending (waiting, due or not) and in
-- progress after the hour's last change, and the most at once during the hour. An hour without a
-- row kept the depth of the hour before.
create table analytics_queue_hourly (
    hour            timestamptz primary key,
    pending         bigint not null,
    pending_max     bigint not null,
    in_progress     bigint not null,
    in_progress_max bigint not null,
    -- The global position of the hour's last change: the newest row holds the current depth.
    position        bigint not null
);

-- Service names, for the charts' legends.
create table analytics_services (
    service_id      uuid primary key,
    name            text not null
);

-- The workflow each run runs, so that a stage's tasks group by workflow and stage.
create table analytics_workflow_runs (
    run_id          uuid primary key,
    workflow_name   text not null
);

insert into projection_checkpoints (name) values ('analytics');
