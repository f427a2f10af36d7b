//! People's sessions in the browser: `POST /session` signs in and sets the `devart_session` cookie,
//! `GET /session` says who is signed in, `DELETE /session` signs out.
//!
//! The cookie is opaque to the page (`HttpOnly`): a session's id and its user's, tagged with the
//! token key ([`Ticket`]). The session itself is a row in Postgres (`sessions`), read on every
//! request with the account's role and activation as they are now, so a sign-out on any gateway is
//! refused by every gateway from then on, and a change of role or a deactivation applies at once,
//! as it does for a user's bearer token. A browser sends the cookie unasked, so it is accepted only
//! where another site cannot make use of that: an HTTP request must carry `X-Devart-Csrf: 1` (a
//! header no form sets, and no script of another origin may send unless CORS allows it), and a
//! WebSocket upgrade must come from the server's own origin. A request with a bearer token is
//! authenticated by the token; its cookie is not looked at.
//!
//! Signing in is the `login` mutation's check ([`sign_in`]): the same limits per address and per
//! account, the same answers. Sign-ins and sign-outs are written to the security log.
//!
//! People's WebSockets follow their session ([`follow`]): Postgres notifies every gateway when a
//! session ends or an account's role or activation changes (triggers of migration 0014, sent when
//! the change commits), and each closes the sockets concerned at once; expiry is each socket's own
//! timer. After (re)connecting to listen, a gateway checks every open socket against the database,
//! for what it may have missed meanwhile.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use devart_commands::users::{record_refusal, Account, LoginError, Refusal};
use devart_domain::user::UserRole;
use serde_json::{json, Value};
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{AuthError, Caller, Role, SigningKey};
use crate::error::{error, rate_limited, unavailable_error, Code};
use crate::http::{self, ClientAddress, Denied, JSON};
use crate::limits::Refused;
use crate::metrics::LimitLabel;
use crate::ws::sockets::Watched;
use crate::{App, Services};

/// The session cookie's name.
pub const COOKIE: &str = "devart_session";

/// The header a cookie-authenticated HTTP request must carry, with the value `1`.
pub const CSRF_HEADER: &str = "x-devart-csrf";

/// How long a session lasts, in hours: as long as a `login` token.
pub const LIFETIME_HOURS: i64 = 12;

/// How long a session lasts.
pub fn lifetime() -> chrono::Duration {
    chrono::Duration::hours(LIFETIME_HOURS)
}

/// What a tag of a session cookie is for (see [`SigningKey::tag`]).
const PURPOSE: &str = "devart session cookie v1";

/// What a session cookie names: the session and its user, tagged with the token key so that
/// nothing but a gateway makes one, and a forged one is refused before the database is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub session: Uuid,
    pub user: Uuid,
}

impl Ticket {
    fn message(&self) -> [u8; 32] {
        let mut message = [0; 32];
        message[..16].copy_from_slice(self.session.as_bytes());
        message[16..].copy_from_slice(self.user.as_bytes());
        message
    }

    /// The cookie's value: `<session>.<user>.<tag>`.
    pub fn encode(&self, key: &SigningKey) -> String {
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.tag(PURPOSE, &self.message()));
        format!("{}.{}.{tag}", self.session.simple(), self.user.simple())
    }

    /// The ticket a cookie's value carries, if its tag is the key's.
    pub fn decode(value: &str, key: &SigningKey) -> Option<Ticket> {
        let mut parts = value.split('.');
        let (Some(session), Some(user), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let ticket = Ticket { session: Uuid::try_parse(session).ok()?, user: Uuid::try_parse(user).ok()? };
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        key.verify_tag(PURPOSE, &ticket.message(), &tag).then_some(ticket)
    }
}

/// The session cookie's value, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(|value| value.trim_matches('"'))
}

/// Whether the request carries the header that only the dashboard's own script sends.
pub fn csrf_header(headers: &HeaderMap) -> bool {
    headers.get(CSRF_HEADER).is_some_and(|v| v.as_bytes() == b"1")
}

/// Whether a browser's `Origin` is the server's own (the `Host` the request came to, over either
/// scheme) or one of `DEVART_CORS_ORIGINS`. Without an `Origin`, no.
pub fn own_origin(headers: &HeaderMap, cors_origins: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    if cors_origins.iter().any(|allowed| allowed.trim().eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host))
}

/// A live session, as Postgres has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub ticket: Ticket,
    pub expires_at: DateTime<Utc>,
    pub account: Account,
}

/// The caller a session cookie stands for, and its session. Every limit is checked before the
/// database is asked, as for a bearer token ([`http::verify`]).
pub async fn authenticate(services: &Services, address: IpAddr, value: &str) -> Result<(Caller, Live), Denied> {
    let guards = &services.guards;
    let Some(ticket) = Ticket::decode(value, &services.signing_key) else {
        guards.may_try(address, None).map_err(Denied::Limited)?;
        let (kind, error) = (Refusal::TokenRefused, AuthError::Invalid);
        return Err(http::refused(services, address, None, kind, "session cookie", error).await);
    };
    guards.identity(&ticket.user.to_string()).map_err(Denied::Limited)?;
    let live = match live(services, ticket).await {
        Ok(live) => live,
        Err(error) => {
            tracing::error!(%error, user = %ticket.user, "authentication: cannot read the session");
            return Err(Denied::Unavailable);
        }
    };
    let error = match live {
        Some(live) if live.account.active => return Ok((Caller::user(ticket.user, Role::of(live.account.role)), live)),
        Some(_) => AuthError::UserDeactivated,
        None => AuthError::SessionEnded,
    };
    record_refusal(&services.pool, Refusal::TokenRefused, &format!("user {}", ticket.user), &error.to_string()).await;
    Err(Denied::Unauthenticated(error))
}

/// The session `ticket` names, with its account, if it is live (neither ended nor expired).
async fn live(services: &Services, ticket: Ticket) -> Result<Option<Live>, devart_commands::StoreError> {
    let row: Option<(DateTime<Utc>, String, String, bool)> = sqlx::query_as(
        "select s.expires_at, c.email, c.role, c.active from sessions s join user_credentials c using (user_id) \
         where s.id = $1 and s.user_id = $2 and s.ended_at is null and s.expires_at > now()",
    )
    .bind(ticket.session)
    .bind(ticket.user)
    .fetch_optional(&services.pool)
    .await?;
    let Some((expires_at, email, role, active)) = row else { return Ok(None) };
    // As for a bearer token, an account whose role cannot be read is no account to serve.
    let role = UserRole::parse(&role).map_err(|_| devart_commands::StoreError::Undecodable {
        table: "user_credentials",
        key: ticket.user.to_string(),
        message: format!("role `{role}` is none of viewer, supervisor, admin"),
    })?;
    Ok(Some(Live { ticket, expires_at, account: Account { id: ticket.user, email, role, active } }))
}

/// Starts a session for `account`, writes it to the security log, and sweeps away sessions that
/// ended or expired a day ago (a cookie without its row is refused all the same).
async fn start(services: &Services, account: &Account) -> Result<(Ticket, DateTime<Utc>), sqlx::Error> {
    let ticket = Ticket { session: Uuid::new_v4(), user: account.id };
    let expires_at = sqlx::query_scalar(
        "with started as ( \
             insert into sessions (id, user_id, expires_at) values ($1, $2, now() + make_interval(hours => $3)) \
             returning expires_at), \
         logged as (insert into security_log (kind, subject, reason) values ('SIGNED_IN', $4, 'signed in')), \
         swept as (delete from sessions where expires_at < now() - interval '1 day' \
                                           or ended_at < now() - interval '1 day') \
         select expires_at from started",
    )
    .bind(ticket.session)
    .bind(ticket.user)
    .bind(LIFETIME_HOURS as i32)
    .bind(&account.email)
    .fetch_one(&services.pool)
    .await?;
    Ok((ticket, expires_at))
}

/// Ends the session `ticket` names, if it had not ended, and writes it to the security log.
async fn end(services: &Services, ticket: Ticket) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with ended as ( \
             update sessions set ended_at = now() where id = $1 and user_id = $2 and ended_at is null \
             returning user_id) \
         insert into security_log (kind, subject, reason) \
         select 'SIGNED_OUT', c.email, 'signed out' from ended join user_credentials c using (user_id)",
    )
    .bind(ticket.session)
    .bind(ticket.user)
    .execute(&services.pool)
    .await
    .map(drop)
}

/// Why a sign-in did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInError {
    /// A wrong email or password, or a deactivated user: 401.
    Refused(LoginError),
    /// Too many failed sign-ins from the address or for the account: 429.
    Limited(Refused),
    /// The credentials could not be checked (logged where met): 503.
    Unavailable,
}

impl SignInError {
    /// The client's error, the same over GraphQL (`login`) and `POST /session`.
    pub fn error(&self) -> async_graphql::Error {
        match self {
            SignInError::Refused(e) => error(Code::Unauthenticated, e.to_string()),
            SignInError::Limited(refused) => rate_limited("too many failed sign-ins", refused.wait),
            SignInError::Unavailable => unavailable_error(),
        }
    }
}

/// Checks an email and a password. Failed sign-ins are limited per address and per account before
/// the password is checked; past the limit the answer is the same whichever was at fault. Failures
/// are written to the security log, and do not tell an unknown address from a wrong password.
pub async fn sign_in(
    services: &Services,
    address: IpAddr,
    email: &str,
    password: &str,
) -> Result<Account, SignInError> {
    let account = format!("user {}", email.trim().to_lowercase());
    services.guards.may_try(address, Some(&account)).map_err(SignInError::Limited)?;
    services.commands.users().login(email, password).await.map_err(|e| match e {
        LoginError::Invalid => match services.guards.failed(address, Some(&account)) {
            Ok(()) => SignInError::Refused(e),
            Err(refused) => SignInError::Limited(refused),
        },
        LoginError::Deactivated => SignInError::Refused(e),
        LoginError::Unavailable => SignInError::Unavailable,
    })
}

/// The role's name as the GraphQL schema spells it.
fn role_name(role: UserRole) -> &'static str {
    match Role::of(role) {
        Role::Viewer => "VIEWER",
        Role::Supervisor => "SUPERVISOR",
        Role::Admin => "ADMIN",
    }
}

/// The body of a signed-in answer: the user as their account is now, and when the session ends.
fn signed_in(account: &Account, expires_at: DateTime<Utc>) -> Value {
    json!({
        "user": { "id": account.id, "email": account.email, "role": role_name(account.role), "active": account.active },
        "expiresAt": expires_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

/// Whether the browser reached the server over https (directly, or through a proxy that says so).
fn over_https(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let proxied = text(header::HeaderName::from_static("x-forwarded-proto"))
        .is_some_and(|proto| proto.split(',').next().is_some_and(|p| p.trim() == "https"));
    let forwarded = text(header::FORWARDED).is_some_and(|f| f.split([';', ',']).any(|p| p.trim() == "proto=https"));
    let origin = text(header::ORIGIN).is_some_and(|o| o.starts_with("https://"));
    proxied || forwarded || origin
}

/// The `Set-Cookie` value for `value`, kept for `max_age` seconds (0: removed).
fn set_cookie(value: &str, max_age: i64, headers: &HeaderMap) -> HeaderValue {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).expect("a cookie of URL-safe characters is a header value")
}

/// A `/session` answer: JSON, never cached.
fn answer(status: StatusCode, body: &Value) -> Response {
    let mut response = http::respond(status, JSON, body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn bad_input(message: &str) -> Response {
    answer(StatusCode::BAD_REQUEST, &http::error_body(Code::BadUserInput, message))
}

/// 403 for a request without the header a cookie needs.
pub fn csrf_refused() -> Response {
    answer(
        StatusCode::FORBIDDEN,
        &http::error_body(Code::Forbidden, "a request signed in by cookie needs the header `X-Devart-Csrf: 1`"),
    )
}

/// The answer to a failed sign-in, with its status and, for a limit or an outage, `Retry-After`.
fn sign_in_failed(services: &Services, failure: SignInError) -> Response {
    let body = json!({ "errors": [failure.error().into_server_error(Default::default())] });
    match failure {
        SignInError::Refused(_) => answer(StatusCode::UNAUTHORIZED, &body),
        SignInError::Limited(refused) => {
            services.metrics.rate_limited.get_or_create(&LimitLabel { limit: refused.limit.as_str().into() }).inc();
            let seconds = crate::error::retry_after_secs(refused.wait);
            http::with_retry_after(answer(StatusCode::TOO_MANY_REQUESTS, &body), seconds)
        }
        SignInError::Unavailable => {
            services.metrics.unavailable.inc();
            http::with_retry_after(answer(StatusCode::SERVICE_UNAVAILABLE, &body), crate::error::UNAVAILABLE_RETRY_SECS)
        }
    }
}

/// The email and password of a sign-in: `{"email": "…", "password": "…"}`.
fn credentials(body: &[u8]) -> Option<(String, String)> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice(body) else { return None };
    match (fields.remove("email"), fields.remove("password")) {
        (Some(Value::String(email)), Some(Value::String(password))) => Some((email, password)),
        _ => None,
    }
}

/// `POST /session`: signs in with `{"email", "password"}` and sets the session cookie.
pub async fn create(
    State(App { services, .. }): State<App>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = services.guards.request(address) {
        return http::too_many(&services, JSON, refused);
    }
    if !csrf_header(&headers) {
        return csrf_refused();
    }
    // Counted as the `login` mutation is: per address, before anything is read.
    if let Err(refused) = services.guards.mutation(&format!("anonymous {address}")) {
        return http::too_many(&services, JSON, refused);
    }
    if !http::is_json(&headers) {
        return bad_input("a sign-in must be application/json");
    }
    let Some((email, password)) = credentials(&body) else {
        return bad_input("a sign-in is a JSON object with the strings `email` and `password`");
    };
    let account = match sign_in(&services, address, &email, &password).await {
        Ok(account) => account,
        Err(failure) => return sign_in_failed(&services, failure),
    };
    let (ticket, expires_at) = match start(&services, &account).await {
        Ok(started) => started,
        Err(error) => {
            tracing::error!(%error, user = %account.id, "sign-in: cannot start a session");
            return sign_in_failed(&services, SignInError::Unavailable);
        }
    };
    let mut response = answer(StatusCode::OK, &signed_in(&account, expires_at));
    let cookie = set_cookie(&ticket.encode(&services.signing_key), lifetime().num_seconds(), &headers);
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// `GET /session`: the signed-in user, with their role and activation as they are now.
pub async fn current(
    State(App { services, .. }): State<App>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = services.guards.request(address) {
        return http::too_many(&services, JSON, refused);
    }
    let Some(value) = cookie(&headers) else {
        return answer(StatusCode::UNAUTHORIZED, &http::error_body(Code::Unauthenticated, "not signed in"));
    };
    match authenticate(&services, address, value).await {
        Ok((_, live)) => answer(StatusCode::OK, &signed_in(&live.account, live.expires_at)),
        Err(denied) => {
            let mut response = denied.response(&services, JSON);
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}

/// `DELETE /session`: ends the session on the server, for every gateway, and removes the cookie.
/// Signing out of a session that already ended (or of none) is done as well.
pub async fn delete(
    State(App { services, .. }): State<App>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = services.guards.request(address) {
        return http::too_many(&services, JSON, refused);
    }
    if !csrf_header(&headers) {
        return csrf_refused();
    }
    if let Some(ticket) = cookie(&headers).and_then(|value| Ticket::decode(value, &services.signing_key)) {
        if let Err(error) = end(&services, ticket).await {
            // Not signed out: the client must not believe it is.
            tracing::error!(%error, user = %ticket.user, "sign-out: cannot end the session");
            return sign_in_failed(&services, SignInError::Unavailable);
        }
        // Here at once; the other gateways (and this one again) when the notification comes.
        services.sockets.session_ended(ticket.session);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0, &headers));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The channel the triggers of migration 0014 notify.
const CHANNEL: &str = "devart_sessions";

/// Closes this process's sockets of sessions that ended and of accounts that changed, wherever that
/// happened, until `shutdown`. While Postgres cannot be listened to, it retries every second.
pub async fn follow(services: Services, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        let Err(error) = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = listen(&services, &mut failing) => result,
        };
        if !failing {
            tracing::warn!(%error, "sessions: cannot follow the database's notifications; retrying");
            failing = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Listens for notifications and applies them; after each (re)connection, checks every open socket
/// first, since what was notified meanwhile is lost.
async fn listen(services: &Services, failing: &mut bool) -> Result<std::convert::Infallible, sqlx::Error> {
    // A connection of its own, held for as long as it listens, so requests keep the whole pool.
    let options = (*services.pool.connect_options()).clone();
    let mut listener =
        PgListener::connect_with(&PgPoolOptions::new().max_connections(1).connect_lazy_with(options)).await?;
    listener.listen(CHANNEL).await?;
    loop {
        reconcile(services).await?;
        if std::mem::take(failing) {
            tracing::info!("sessions: following the database's notifications again");
        }
        while let Some(notification) = listener.try_recv().await? {
            notified(services, notification.payload());
        }
    }
}

/// Applies one notification: `{"session"}` ended, or `{"user", "role", "active"}` changed.
fn notified(services: &Services, payload: &str) {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(payload) else {
        tracing::warn!(payload, "sessions: an unreadable notification");
        return;
    };
    let id = |name: &str| fields.get(name).and_then(Value::as_str).and_then(|id| Uuid::try_parse(id).ok());
    if let Some(session) = id("session") {
        services.sockets.session_ended(session);
    } else if let Some(user) = id("user") {
        let role = fields.get("role").and_then(Value::as_str).unwrap_or_default();
        let active = fields.get("active").and_then(Value::as_bool).unwrap_or(false);
        services.sockets.account_changed(user, UserRole::parse(role).map_err(|_| role.to_owned()), active);
    }
}

/// Checks every open socket against the database: its account, and its session if it has one.
async fn reconcile(services: &Services) -> Result<(), sqlx::Error> {
    let open = services.sockets.watched();
    if open.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = open.iter().map(|(_, w)| w.user).collect();
    let sessions: Vec<Uuid> = open.iter().filter_map(|(_, w)| w.session).collect();
    let accounts: Vec<(Uuid, String, bool)> =
        sqlx::query_as("select user_id, role, active from user_credentials where user_id = any($1)")
            .bind(&users)
            .fetch_all(&services.pool)
            .await?;
    let live: Vec<Uuid> =
        sqlx::query_scalar("select id from sessions where id = any($1) and ended_at is null and expires_at > now()")
            .bind(&sessions)
            .fetch_all(&services.pool)
            .await?;
    let account = |w: &Watched| {
        accounts
            .iter()
            .find(|(id, ..)| *id == w.user)
            .map(|(_, role, active)| (UserRole::parse(role).map_err(|_| role.clone()), *active))
    };
    services.sockets.close_where(|_, w| w.verdict(account(w), w.session.is_none_or(|s| live.contains(&s))));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_ticket_round_trips_and_any_change_is_refused() {
        let key = SigningKey::new(vec![7; 32]);
        let ticket = Ticket { session: Uuid::new_v4(), user: Uuid::new_v4() };
        let value = ticket.encode(&key);
        assert_eq!(Ticket::decode(&value, &key), Some(ticket));
        assert_eq!(Ticket::decode(&value, &SigningKey::new(vec![8; 32])), None, "another key");
        let other_user = Ticket { user: Uuid::new_v4(), ..ticket }.encode(&key);
        let (_, tag) = value.rsplit_once('.').unwrap();
        let (named, _) = other_user.rsplit_once('.').unwrap();
        assert_eq!(Ticket::decode(&format!("{named}.{tag}"), &key), None, "a tag moved to another user");
        for broken in ["", "a.b.c", &format!("{value}.x"), &value[..value.len() - 2]] {
            assert_eq!(Ticket::decode(broken, &key), None, "{broken}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let value = "0123.4567.abc";
        assert_eq!(cookie(&headers(&[("cookie", &format!("a=1; devart_session={value}; b=2"))])), Some(value));
        assert_eq!(cookie(&headers(&[("cookie", "a=1"), ("cookie", &format!("devart_session={value}"))])), Some(value));
        assert_eq!(cookie(&headers(&[("cookie", "devart_session_old=x; other=devart_session")])), None);
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_servers_own_origin_or_a_configured_one_is_its_own() {
        let at = |origin: &str| headers(&[("host", "devart.example.org:8787"), ("origin", origin)]);
        assert!(own_origin(&at("http://devart.example.org:8787"), &[]));
        assert!(own_origin(&at("https://DEVART.example.org:8787"), &[]));
        assert!(!own_origin(&at("http://evil.example.org:8787"), &[]));
        assert!(!own_origin(&at("http://devart.example.org:8788"), &[]));
        assert!(!own_origin(&at("null"), &[]));
        assert!(own_origin(&at("https://ops.example.org"), &["https://ops.example.org".into()]));
        assert!(!own_origin(&headers(&[("host", "devart.example.org:8787")]), &[]), "no Origin");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let plain = set_cookie("v", 60, &HeaderMap::new());
        assert_eq!(plain, "devart_session=v; HttpOnly; SameSite=Strict; Path=/; Max-Age=60");
        for https in [("x-forwarded-proto", "https"), ("forwarded", "for=1.2.3.4;proto=https"), ("origin", "https://x")]
        {
            let secure = set_cookie("v", 60, &headers(&[https]));
            assert!(secure.to_str().unwrap().ends_with("; Secure"), "{https:?}");
        }
    }
}
