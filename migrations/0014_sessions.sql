-- People's sessions in the browser (the `devart_session` cookie), and the notifications that let
-- every gateway close the WebSockets of a session that ended or of an account that changed.

-- One row per sign-in. The cookie names the row and its user, signed with the JWT key; a request
-- with it is served while the row is live (not ended, not expired) and the account is active, so a
-- sign-out on any gateway is refused by every gateway from then on. No database role may read it.
create table sessions (
    id              uuid primary key,
    user_id         uuid not null references user_credentials (user_id),
    created_at      timestamptz not null default now(),
    expires_at      timestamptz not null,
    ended_at        timestamptz
);

-- Old rows are removed by expiry (sign-ins sweep them).
create index sessions_expires_at on sessions (expires_at);

-- Gateways LISTEN on `devart_sessions`; a notification is sent when the change commits, and only
-- then. A session that ends: `{"session": <id>}`.
create function devart_notify_session_ended() returns trigger language plpgsql as $$
begin
    perform pg_notify('devart_sessions', json_build_object('session', new.id)::text);
    return null;
end
$$;

create trigger sessions_ended after update of ended_at on sessions for each row
    when (old.ended_at is null and new.ended_at is not null)
    execute function devart_notify_session_ended();

-- An account whose role or activation changed (written beside the user's events):
-- `{"user": <id>, "role": <role now>, "active": <activation now>}`.
create function devart_notify_account_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('devart_sessions',
        json_build_object('user', new.user_id, 'role', new.role, 'active', new.active)::text);
    return null;
end
$$;

create trigger user_credentials_changed after update of role, active on user_credentials for each row
    when (old.role is distinct from new.role or old.active is distinct from new.active)
    execute function devart_notify_account_changed();
