-- Alerts: the outbox of budget alerts (thresholds crossed, suspensions, reactivations), one row per
-- alert and channel, delivered outside the command path.

-- Recorded by the `alerts` consumer in the transaction that moves its checkpoint, so each alert is
-- recorded exactly once; delivery loops in any number of processes take due rows with
-- `FOR UPDATE SKIP LOCKED`, send them, and mark them delivered once the channel accepted them.
create table alert_deliveries (
    id                  bigint generated always as identity primary key,
    -- The event that raised the alert; with the channel, the key that makes recording idempotent.
    event_id            uuid not null,
    -- `telegram` or `webhook`: only channels configured when the event was consumed get a row.
    channel             text not null check (channel in ('telegram', 'webhook')),
    -- The event's place in the global order: rows are delivered oldest first.
    position            bigint not null,
    -- The alert as a CloudEvent (JSON): what the webhook receives, and what the message is made of.
    alert               jsonb not null,
    -- `pending` (due at `next_attempt_at`), `sending` (a sender holds it until `next_attempt_at`,
    -- its lease), `delivered` (the channel accepted it), `failed` (given up after too many attempts;
    -- an operator may set it back to `pending`).
    status              text not null default 'pending'
                        check (status in ('pending', 'sending', 'delivered', 'failed')),
    attempts            integer not null default 0,
    next_attempt_at     timestamptz not null default now(),
    -- Which claim holds a `sending` row, so that a sender whose lease ran out cannot undo the
    -- outcome of the one that took the row over.
    lease_token         uuid,
    -- The last failure, for operators; never carries a secret (the bot token is in the URL, which
    -- error messages leave out).
    last_error          text,
    created_at          timestamptz not null default now(),
    delivered_at        timestamptz,
    constraint alert_deliveries_event_channel_key unique (event_id, channel)
);

-- The delivery loops' work list: rows not yet delivered (nor given up), by when they are due.
create index alert_deliveries_due on alert_deliveries (next_attempt_at)
    where status in ('pending', 'sending');

-- Alerts start from the present: an existing installation does not send every alert of its past.
insert into projection_checkpoints (name, position)
select 'alerts', coalesce(max(position), 0) from events;
