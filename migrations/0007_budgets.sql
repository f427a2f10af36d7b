-- Budgets (write side): each service's state as a snapshot beside its stream, and the answers to
-- idempotent usage requests.

-- A service's state as of stream version `version`. Rewritten in the transaction of every append
-- to the service's stream, so it is never behind; commands lock it (`FOR UPDATE`) to decide, which
-- is what keeps concurrent authorizations from overspending.
create table service_budgets (
    service_id      uuid primary key,
    version         bigint not null,
    -- The folded state (budget, spent, reserved, open reservations, thresholds crossed, …).
    state           jsonb not null,
    -- `2026-11`: the budget clock starts the next period for rows behind the current month.
    period          text not null,
    -- The earliest open reservation's expiry: the budget clock releases it then.
    next_expiry     timestamptz,
    updated_at      timestamptz not null
);

create index service_budgets_expiry on service_budgets (next_expiry) where next_expiry is not null;
create index service_budgets_period on service_budgets (period);

-- The first answer to each keyed authorization or charge, by command id (derived from the caller
-- and its idempotency key); written with the events, so a retried request gets the same answer.
create table usage_answers (
    command_id  uuid primary key,
    answer      jsonb not null,
    created_at  timestamptz not null default now()
);
