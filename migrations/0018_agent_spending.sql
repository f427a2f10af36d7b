-- Agents' daily spending caps: what each agent has settled on its day (UTC) and holds reserved,
-- across all services, beside its cap, so that an authorization by a capped agent is refused once
-- what it settled today plus what it holds reserved plus the request would pass the cap. Kept
-- like `task_spending`: the cap written with `AgentDailySpendingCapSet`, the spend moved by the
-- statement that appends a service's authorizations, charges and expiries, under the agent's
-- spend lock (taken after the task's, before any service's).
create table agent_spending (
    agent_id        uuid primary key,
    -- In millionths; null while the agent has no cap of its own.
    daily_cap       bigint check (daily_cap >= 0),
    -- The day `settled` is for: a move on a later day starts it anew.
    day             date not null default '1970-01-01',
    -- Never below zero; not checked, for the reason `task_spending` gives.
    settled         bigint not null default 0,
    reserved        bigint not null default 0
);

-- What agents hold reserved now, from the services' snapshots, and settled today, from the
-- analytics read model (as far as it had come when this ran).
insert into agent_spending (agent_id, day, settled, reserved)
select agent_id, (now() at time zone 'utc')::date, sum(settled), sum(reserved)
from (
    select (r.value ->> 'agent_id')::uuid as agent_id, 0::bigint as settled, (r.value ->> 'amount')::bigint as reserved
    from service_budgets b, jsonb_each(b.state -> 'reservations') r
    where r.value ->> 'agent_id' is not null
    union all
    select agent_id, amount, 0 from analytics_charges
    where agent_id is not null and occurred_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'
) spend
group by agent_id;
