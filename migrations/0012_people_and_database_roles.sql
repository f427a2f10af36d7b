-- People (credentials on the write side, a users read model), the security log, and the database
-- roles and row-level security the gateway's reads run under.

-- Each user's password hash, current role and activation. Written in the same transaction as the
-- user's events, but not derived from them: the hash must never travel in events or on the bus.
create table user_credentials (
    user_id         uuid primary key,
    email           text not null unique,
    -- argon2id, PHC string format.
    password_hash   text not null,
    role            text not null check (role in ('viewer', 'supervisor', 'admin')),
    active          boolean not null default true,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);

-- The users read model, as of `projection_checkpoints['users']`.
create table users (
    id              uuid primary key,
    email           text not null,
    role            text not null,
    active          boolean not null,
    version         bigint not null,
    position        bigint not null,
    created_at      timestamptz not null,
    updated_at      timestamptz not null
);

insert into projection_checkpoints (name) values ('users');

-- Attempts devart refused: failed sign-ins, refused API keys and tokens. Never a secret: the
-- subject is an address or a key's public id.
create table security_log (
    id              bigint generated always as identity primary key,
    at              timestamptz not null default now(),
    kind            text not null,
    subject         text not null,
    reason          text not null
);

create index security_log_at on security_log (at desc, id desc);

-- The database roles. A request's reads run in a read-only transaction under the role of its
-- caller (`set_config('role', …, true)`) with its identity in `devart.user_id` or
-- `devart.agent_id`, so what a role may see and change is enforced here too, whatever the API
-- does. None of them may write anything, or read credentials, keys, secrets or stored answers.
-- Roles belong to the cluster: every database devart migrates shares them.
do $$
declare
    name text;
begin
    foreach name in array array['devart_viewer', 'devart_supervisor', 'devart_admin', 'devart_agent'] loop
        begin
            execute format('create role %I nologin', name);
        exception when duplicate_object or unique_violation then
            null; -- made by another database's migration, perhaps at this very moment
        end;
        -- The gateway's own login switches to them.
        execute format('grant %I to %I', name, current_user);
    end loop;
end
$$;

-- Who reads what, in one idempotent function: a projection rebuild swaps in new tables and calls it
-- again, so the rules hold for the new tables as they did for the old.
create function devart_secure_read_models() returns void language plpgsql as $$
begin
    grant usage on schema public to devart_viewer, devart_supervisor, devart_admin, devart_agent;

    -- People read the read models and the audit trail.
    grant select on
        tasks, task_queue, agents, users, services, workflows, workflow_runs, workflow_stage_tasks,
        analytics_tasks, analytics_charges, analytics_costs_hourly, analytics_queue_hourly,
        analytics_services, analytics_workflow_runs, projection_checkpoints, events, event_chain
        to devart_viewer, devart_supervisor, devart_admin;

    -- Only admins read the security log.
    grant select on security_log to devart_admin;

    -- Agents read the task board and the agents, row by row as the policies below allow.
    grant select on tasks, agents to devart_agent;

    -- Rows. The tables' owner (the write side and the projections) is not subject to these.
    alter table tasks enable row level security;
    drop policy if exists people_read_tasks on tasks;
    create policy people_read_tasks on tasks for select
        to devart_viewer, devart_supervisor, devart_admin using (true);
    -- An agent sees the queue's pending tasks, the tasks it holds, and the tasks it created.
    drop policy if exists agents_read_their_tasks on tasks;
    create policy agents_read_their_tasks on tasks for select to devart_agent using (
        status = 'PENDING'
        or agent_id = nullif(current_setting('devart.agent_id', true), '')::uuid
        or created_by = 'agent:' || current_setting('devart.agent_id', true)
    );

    alter table agents enable row level security;
    drop policy if exists people_read_agents on agents;
    create policy people_read_agents on agents for select
        to devart_viewer, devart_supervisor, devart_admin using (true);
    drop policy if exists agents_read_themselves on agents;
    create policy agents_read_themselves on agents for select to devart_agent
        using (id = nullif(current_setting('devart.agent_id', true), '')::uuid);

    -- Admins see every user; anyone else only themselves.
    alter table users enable row level security;
    drop policy if exists admins_read_users on users;
    create policy admins_read_users on users for select to devart_admin using (true);
    drop policy if exists people_read_themselves on users;
    create policy people_read_themselves on users for select to devart_viewer, devart_supervisor
        using (id = nullif(current_setting('devart.user_id', true), '')::uuid);
end
$$;

select devart_secure_read_models();
