-- The task queue (write side), the task lifecycle in the tasks read model, and agents' activity.

-- One row per task that waits or is being worked: the table claims are made from. Written in the
-- same transaction as the task's events (claim, heartbeat, outcome, cancel, …), so it never
-- disagrees with them; a task that is done, failed, cancelled or deleted has no row.
create table task_queue (
    task_id                 uuid primary key,
    priority                smallint not null,
    created_at              timestamptz not null,
    -- Not claimable before this; '-infinity' when the task may run at once.
    run_after               timestamptz not null,
    required_capabilities   text[] not null,
    -- 'pending' or 'claimed'.
    state                   text not null check (state in ('pending', 'claimed')),
    agent_id                uuid,
    lease_expires_at        timestamptz,
    failures                integer not null default 0
) with (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

-- Claims take the first row in (priority desc, created_at) order that is due and fits.
create index task_queue_next on task_queue (priority desc, created_at, task_id) where state = 'pending';
-- The lease reaper takes the leases that ran out.
create index task_queue_leases on task_queue (lease_expires_at) where state = 'claimed';
-- A deactivated agent's tasks go back to the queue.
create index task_queue_agent on task_queue (agent_id) where state = 'claimed';

-- Tasks that were pending when the queue arrived (from the read model, the best record there is).
insert into task_queue (task_id, priority, created_at, run_after, required_capabilities, state)
select id, priority, created_at, '-infinity', required_capabilities, 'pending' from tasks where status = 'PENDING';

alter table tasks
    add column max_attempts         integer not null default 3,
    add column attempt              integer not null default 0,
    add column failures             integer not null default 0,
    add column run_after            timestamptz,
    add column input                jsonb,
    add column result               jsonb,
    -- Every failed attempt: [{attempt, agentId, error}].
    add column errors               jsonb not null default '[]',
    add column agent_id             uuid,
    add column lease_expires_at     timestamptz,
    add column progress_message     text,
    add column progress_percent     smallint,
    add column workflow_run_id      uuid,
    add column stage_key            text;

-- `Task.children` and a run's tasks.
create index tasks_parent on tasks (parent_task_id) where parent_task_id is not null;
create index tasks_workflow_run on tasks (workflow_run_id) where workflow_run_id is not null;

-- A claim checks the agent's capabilities and that it is still active, in its own transaction.
alter table agent_keys add column capabilities text[] not null default '{}';
update agent_keys k set capabilities = a.capabilities from agents a where a.id = k.agent_id;

alter table agents
    add column last_seen_at         timestamptz,
    add column current_task_id      uuid,
    add column tasks_claimed        bigint not null default 0,
    add column tasks_completed      bigint not null default 0,
    add column tasks_failed         bigint not null default 0;
