-- The services read model, as of `projection_checkpoints['services']`: each service's budget,
-- spend and status for dashboards and `serviceUpdates`.

create table services (
    id                      uuid primary key,
    name                    text not null,
    status                  text not null,
    -- Exact amounts in millionths of the currency unit.
    monthly_budget_micros   bigint not null,
    spent_micros            bigint not null,
    reserved_micros         bigint not null,
    -- `2026-11`.
    period                  text not null,
    -- The folded state the next batch continues from (open reservations, thresholds crossed, …).
    state                   jsonb not null,
    version                 bigint not null,
    position                bigint not null,
    updated_at              timestamptz not null
);

insert into projection_checkpoints (name) values ('services');
