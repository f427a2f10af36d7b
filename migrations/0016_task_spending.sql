-- Spending caps on work: what has been settled and is reserved for each task across all services,
-- beside its cap (`maxCost`), so that an authorization naming a capped task is refused once settled
-- plus reserved plus the request would pass the cap.
--
-- Written in the statements that append the events it follows: a task's `TaskMaxCostSet` writes
-- its cap, a service's `UsageAuthorized`, `UsageCharged` and `ReservationExpired` move its spend.
-- An authorization or a charge naming a task locks the task's row (`FOR UPDATE`) before the
-- services' snapshots, and the budget clock does the same before it expires reservations: one
-- order, so they never wait on each other in a cycle, and each decides on every reservation
-- committed before it.
create table task_spending (
    task_id         uuid primary key,
    -- In millionths, like every amount; null while the task has no cap.
    max_cost        bigint check (max_cost >= 0),
    -- Never below zero; not checked, as an upsert's proposed row is checked before it meets the
    -- row it updates, and a charge's proposes a negative `reserved` (the reservation it frees).
    settled         bigint not null default 0,
    reserved        bigint not null default 0
);

-- What was spent before caps existed: reservations still open, from the services' snapshots, and
-- settled charges, from the analytics read model (as far as it had come when this ran).
insert into task_spending (task_id, settled, reserved)
select task_id, sum(settled), sum(reserved)
from (
    select (r.value ->> 'task_id')::uuid as task_id, 0::bigint as settled, (r.value ->> 'amount')::bigint as reserved
    from service_budgets b, jsonb_each(b.state -> 'reservations') r
    where r.value ->> 'task_id' is not null
    union all
    select task_id, amount, 0 from analytics_charges where task_id is not null
) spend
group by task_id;

-- The tasks read model shows each task's cap.
alter table tasks add column max_cost bigint;
