-- Brakes on work. The kill switch: pauses of the handing out of work (the `claims` stream), for
-- everything, one capability or one workflow. Quarantine: agents switched off after failing
-- attempt after attempt.

-- The write side's gate, one row, rewritten with every pause and resume in the statement that
-- appends its event. A claim reads it in the statement that picks a task; a pause or resume first
-- takes the exclusive claims lock (`pg_advisory_xact_lock`, claims hold it shared), so every claim
-- is either before the pause's event in the global order, with its own events, or sees the pause.
create table claim_gate (
    id              smallint primary key check (id = 1),
    -- Nothing is handed out.
    all_paused      boolean not null,
    -- Tasks requiring any of these are not handed out.
    capabilities    text[] not null,
    -- Tasks of these workflows' runs are not handed out.
    workflows       uuid[] not null,
    -- Every pause with its reason and whether work under way drains, for heartbeats to consult:
    -- `[{scope, reason, drain}]`, scope as on the wire (`"all"`, `{"capability": …}`, `{"workflow": …}`).
    pauses          jsonb not null
);

insert into claim_gate (id, all_paused, capabilities, workflows, pauses) values (1, false, '{}', '{}', '[]');

-- The workflow whose run a queued task belongs to, for pauses of one workflow; null for a task of
-- no workflow, and for stage tasks created before tasks recorded their run's workflow.
alter table task_queue add column workflow_id uuid;

-- The read model, as of `projection_checkpoints['claim_pauses']`: the pauses in effect, with who
-- paused and when, for `claimPauses`, `queueStats` and the dashboard.
create table claim_pauses (
    id              uuid primary key,
    -- `[{scope: {kind, value}, reason, drain, pausedAt, pausedBy, position}]`, broadest scope first.
    pauses          jsonb not null,
    version         bigint not null,
    position        bigint not null,
    updated_at      timestamptz not null
);

insert into projection_checkpoints (name) values ('claim_pauses');

-- Who reads it: everyone, agents too (an agent that is handed nothing can read why). The rules of
-- the earlier read models stay as they were, in the function this one calls.
alter function devart_secure_read_models() rename to devart_secure_read_models_0012;

create function devart_secure_read_models() returns void language plpgsql as $$
begin
    perform devart_secure_read_models_0012();
    grant select on claim_pauses to devart_viewer, devart_supervisor, devart_admin, devart_agent;
end
$$;

select devart_secure_read_models();

-- Quarantine: each agent's failed attempts in a row, as the `quarantine` reactor has counted them
-- (committed with its checkpoint). It starts from the present: failures before it count for nothing.
create table agent_failure_streaks (
    agent_id        uuid primary key,
    streak          integer not null check (streak >= 0)
);

insert into projection_checkpoints (name, position)
select 'quarantine', coalesce(max(position), 0) from events;

-- The agents read model keeps why an agent is quarantined, while it is.
alter table agents add column quarantined text;
