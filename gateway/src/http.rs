//! HTTP: GraphQL over HTTP (POST and GET), GraphQL over WebSocket (`graphql-transport-ws`), health,
//! readiness and metrics; people's sessions (`/session`, [`crate::session`]); the dashboard
//! ([`crate::dashboard`]) at every other path.

use std::collections::HashMap;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use uuid::Uuid;

use std::net::{IpAddr, SocketAddr};

use devart_commands::agents::{KeyError, Recall};
use devart_commands::users::{record_refusal, Refusal};

use crate::auth::{bearer, AuthError, Caller, Role};
use crate::error::Code;
use crate::limits::{Limit, Refused};
use crate::metrics::LimitLabel;
use crate::schema::RequestMeta;
use crate::session;
use crate::{App, Services};

/// Requests larger than this are refused with 413.
pub const BODY_BYTES_MAX: usize = 1 << 20;

pub fn router(app: App) -> Router {
    let limits = app.services.limits.clone();
    let origins: Vec<HeaderValue> =
        limits.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST, axum::http::Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            "idempotency-key".parse().expect("header name"),
            "x-correlation-id".parse().expect("header name"),
            session::CSRF_HEADER.parse().expect("header name"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/session", post(session::create).get(session::current).delete(session::delete))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/assets/{*path}", get(crate::dashboard::asset))
        .fallback(crate::dashboard::page)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(limits.request_timeout_secs.max(1)),
        ))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

/// 429 for a request held back by a limit, with when to come back.
pub(crate) fn too_many(services: &Services, media: &'static str, refused: Refused) -> Response {
    services.metrics.rate_limited.get_or_create(&LimitLabel { limit: refused.limit.as_str().into() }).inc();
    let what = match refused.limit {
        Limit::Address => "too many requests from this address",
        Limit::Identity => "too many requests from this identity",
        Limit::Mutations => "too many mutations from this identity",
        Limit::AuthFailures | Limit::AccountFailures => "too many refused credentials",
    };
    let error = crate::error::rate_limited(what, refused.wait);
    let body = json!({ "errors": [error.into_server_error(Default::default())] });
    with_retry_after(respond(StatusCode::TOO_MANY_REQUESTS, media, &body), crate::error::retry_after_secs(refused.wait))
}

/// 503 for a request that could not be decided because a dependency failed (logged where met).
fn unavailable(services: &Services, media: &'static str) -> Response {
    services.metrics.unavailable.inc();
    let body = json!({ "errors": [crate::error::unavailable_error().into_server_error(Default::default())] });
    with_retry_after(respond(StatusCode::SERVICE_UNAVAILABLE, media, &body), crate::error::UNAVAILABLE_RETRY_SECS)
}

pub(crate) fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Whether the request would run a mutation (the operation it names, or its only one).
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let name = request.operation_name.as_deref();
    document.operations.iter().any(|(op_name, op)| {
        op.node.ty == OperationType::Mutation && (name.is_none() || op_name.map(|n| n.as_str()) == name)
    })
}

/// Whether the request only signs in: a mutation whose every top-level field is `login`, the one
/// operation open to requests without a token. Fragments are not followed, so they do not pass.
fn signs_in_only(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::Selection;
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let name = request.operation_name.as_deref();
    let mut chosen =
        document.operations.iter().filter(|(op_name, _)| name.is_none() || op_name.map(|n| n.as_str()) == name);
    let (Some((_, operation)), None) = (chosen.next(), chosen.next()) else { return false };
    let items = &operation.node.selection_set.node.items;
    operation.node.ty == OperationType::Mutation
        && !items.is_empty()
        && items.iter().all(|item| matches!(&item.node, Selection::Field(f) if f.node.name.node == "login"))
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
pub(crate) const JSON: &str = "application/json";

/// The response media type the client accepts, or `None` if it accepts neither of ours.
fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(JSON);
    };
    let mut best: Option<(&'static str, f32)> = None;
    for part in accept.split(',') {
        let mut fields = part.split(';');
        let media = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = fields.filter_map(|f| f.trim().strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
        let candidate = match media.as_str() {
            GRAPHQL_RESPONSE => GRAPHQL_RESPONSE,
            JSON | "application/*" | "*/*" => JSON,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((candidate, q));
        }
    }
    best.map(|(m, _)| m)
}

pub(crate) fn error_body(code: Code, message: &str) -> Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] })
}

pub(crate) fn respond(status: StatusCode, media: &'static str, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}

/// Why a request's credentials did not make a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Refused: 401.
    Unauthenticated(AuthError),
    /// Held back by a limit before they were checked, or refused once too often: 429.
    Limited(Refused),
    /// They could not be checked (the cause is logged): 503, retry.
    Unavailable,
}

impl Denied {
    /// The HTTP response for this denial.
    pub fn response(self, services: &Services, media: &'static str) -> Response {
        match self {
            Denied::Unauthenticated(error) => unauthenticated(error, media),
            Denied::Limited(refused) => too_many(services, media, refused),
            Denied::Unavailable => unavailable(services, media),
        }
    }
}

/// The client's address: the connection's peer (unspecified where no connection info is known).
pub fn client_address(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The caller of an HTTP request: its bearer token, or else its session cookie (which
/// [`cookie_without_csrf`] has checked comes with its header); `None` without either.
async fn authenticate(services: &Services, address: IpAddr, headers: &HeaderMap) -> Result<Option<Caller>, Denied> {
    if headers.contains_key(header::AUTHORIZATION) {
        return authenticate_bearer(services, address, headers).await;
    }
    match session::cookie(headers) {
        Some(value) => session::authenticate(services, address, value).await.map(|(caller, _)| Some(caller)),
        None => Ok(None),
    }
}

/// 403 for a request that would be authenticated by its session cookie but lacks the header
/// that shows the dashboard's own script sent it (a bearer token needs none).
fn cookie_without_csrf(headers: &HeaderMap) -> Option<Response> {
    let by_cookie = !headers.contains_key(header::AUTHORIZATION) && session::cookie(headers).is_some();
    (by_cookie && !session::csrf_header(headers)).then(session::csrf_refused)
}

/// Whether the request's body is declared `application/json`.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(JSON)
}

/// A person's JWT or an agent's API key, from `Authorization: Bearer …`; `None` without one.
async fn authenticate_bearer(
    services: &Services,
    address: IpAddr,
    headers: &HeaderMap,
) -> Result<Option<Caller>, Denied> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| AuthError::Invalid);
    let token = value.and_then(bearer);
    match token {
        Ok(token) => verify(services, address, token).await.map(Some),
        Err(error) => Err(refused(services, address, None, Refusal::TokenRefused, "bearer token", error).await),
    }
}

/// Records refused credentials, unless `address` (or `account`) has been refused once too often:
/// then the answer is 429 and nothing is written.
pub(crate) async fn refused(
    services: &Services,
    address: IpAddr,
    account: Option<&str>,
    kind: Refusal,
    subject: &str,
    error: AuthError,
) -> Denied {
    if let Err(limited) = services.guards.failed(address, account) {
        return Denied::Limited(limited);
    }
    record_refusal(&services.pool, kind, subject, &error.to_string()).await;
    Denied::Unauthenticated(error)
}

/// The caller a bearer token stands for. Every limit is checked before the database is asked.
pub async fn verify(services: &Services, address: IpAddr, token: &str) -> Result<Caller, Denied> {
    let guards = &services.guards;
    if token.starts_with("dva_") {
        let recall = services.keys.recall(token);
        // The key's public id names it in the log and in the limits; the rest is secret.
        let account = recall.key_id().map(|id| format!("key {id}"));
        let subject = account.clone().unwrap_or_else(|| "malformed key".to_owned());
        let account = account.as_deref();
        match &recall {
            Recall::Malformed => {
                guards.may_try(address, None).map_err(Denied::Limited)?;
                return Err(refused(services, address, None, Refusal::KeyRefused, &subject, AuthError::Invalid).await);
            }
            Recall::Remembered { agent, .. } => guards.identity(&agent.to_string()).map_err(Denied::Limited)?,
            Recall::Cold { .. } => guards.may_try(address, account).map_err(Denied::Limited)?,
        }
        return match services.keys.verify(token, &recall).await {
            Ok(agent) => {
                if matches!(recall, Recall::Cold { .. }) {
                    guards.identity(&agent.id.to_string()).map_err(Denied::Limited)?;
                }
                Ok(Caller::agent(agent.id, agent.capabilities))
            }
            Err(KeyError::Inactive) => {
                record_refusal(&services.pool, Refusal::KeyRefused, &subject, &AuthError::Deactivated.to_string())
                    .await;
                Err(Denied::Unauthenticated(AuthError::Deactivated))
            }
            Err(KeyError::Invalid) => {
                Err(refused(services, address, account, Refusal::KeyRefused, &subject, AuthError::Invalid).await)
            }
            Err(KeyError::Unavailable) => Err(Denied::Unavailable),
        };
    }
    let caller = match services.signing_key.verify(token) {
        Ok(caller) => caller,
        Err(error) => {
            guards.may_try(address, None).map_err(Denied::Limited)?;
            return Err(refused(services, address, None, Refusal::TokenRefused, "bearer token", error).await);
        }
    };
    guards.identity(&caller.subject).map_err(Denied::Limited)?;
    let Some(id) = caller.user else { return Ok(caller) };
    // A user's token stands for the account as it is now: its current role, while it is active.
    match services.commands.users().account(id).await {
        Ok(Some(account)) if account.active => Ok(Caller::user(id, Role::of(account.role))),
        Ok(_) => {
            let error = AuthError::UserDeactivated;
            record_refusal(&services.pool, Refusal::TokenRefused, &format!("user {id}"), &error.to_string()).await;
            Err(Denied::Unauthenticated(error))
        }
        Err(error) => {
            tracing::error!(%error, user = %id, "authentication: cannot read the account");
            Err(Denied::Unavailable)
        }
    }
}

fn unauthenticated(error: AuthError, media: &'static str) -> Response {
    let mut response = respond(StatusCode::UNAUTHORIZED, media, &error_body(Code::Unauthenticated, &error.to_string()));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn request_meta(headers: &HeaderMap) -> Result<RequestMeta, String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let idempotency_key = text("idempotency-key");
    if idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err("Idempotency-Key must be 1 to 255 characters".into());
    }
    let correlation_id = match text("x-correlation-id") {
        None => None,
        Some(c) => Some(Uuid::parse_str(&c).map_err(|_| "X-Correlation-Id must be a UUID".to_owned())?),
    };
    Ok(RequestMeta { idempotency_key, correlation_id, client: None })
}

/// The client's address, as an extractor.
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(&parts.extensions)))
    }
}

async fn graphql_post(
    State(app): State<App>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    if let Err(refused) = app.services.guards.request(address) {
        return too_many(&app.services, media, refused);
    }
    if let Some(refused) = cookie_without_csrf(&headers) {
        return refused;
    }
    // Without a token, only signing in is allowed: that is checked once the document is read.
    let caller = match authenticate(&app.services, address, &headers).await {
        Ok(c) => c,
        Err(denied) => return denied.response(&app.services, media),
    };
    if !is_json(&headers) {
        return respond(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            &error_body(Code::BadUserInput, "requests must be application/json"),
        );
    }
    let params: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(media, &format!("the body is not JSON: {e}")),
    };
    let request = match graphql_request(&params) {
        Ok(r) => r,
        Err(m) => return bad_request(media, &m),
    };
    if caller.is_none() && !signs_in_only(&request) {
        return unauthenticated(AuthError::Missing, media);
    }
    execute(&app, caller, address, &headers, request, media).await
}

async fn graphql_get(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    request: Request<axum::body::Body>,
) -> Response {
    let (mut parts, _) = request.into_parts();
    let address = client_address(&parts.extensions);
    if parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return websocket(app, &mut parts).await;
    }
    let headers = parts.headers;
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if query.is_empty() && wants_html && app.services.limits.introspection {
        return Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql").finish())
            .into_response();
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    if let Err(refused) = app.services.guards.request(address) {
        return too_many(&app.services, media, refused);
    }
    if let Some(refused) = cookie_without_csrf(&headers) {
        return refused;
    }
    let caller = match authenticate(&app.services, address, &headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return unauthenticated(AuthError::Missing, media),
        Err(denied) => return denied.response(&app.services, media),
    };
    let mut params = serde_json::Map::new();
    for (key, value) in query {
        let value = match key.as_str() {
            "variables" | "extensions" => match serde_json::from_str(&value) {
                Ok(v) => v,
                Err(_) => return bad_request(media, &format!("`{key}` is not JSON")),
            },
            _ => Value::String(value),
        };
        params.insert(key, value);
    }
    let request = match graphql_request(&Value::Object(params)) {
        Ok(r) => r,
        Err(m) => return bad_request(media, &m),
    };
    // GET may only read: a mutation over GET is refused, whatever else the document holds.
    if let Ok(document) = async_graphql::parser::parse_query(&request.query) {
        let name = request.operation_name.as_deref();
        let mutation = document.operations.iter().any(|(op_name, op)| {
            op.node.ty != OperationType::Query && (name.is_none() || op_name.map(|n| n.as_str()) == name)
        });
        if mutation {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                media,
                &error_body(Code::BadUserInput, "mutations and subscriptions need POST or a WebSocket"),
            );
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
    }
    execute(&app, Some(caller), address, &headers, request, media).await
}

/// Validates the GraphQL-over-HTTP request parameters.
fn graphql_request(params: &Value) -> Result<async_graphql::Request, String> {
    let Value::Object(map) = params else {
        return Err("the request must be a JSON object".into());
    };
    let query = match map.get("query") {
        Some(Value::String(q)) => q.clone(),
        Some(_) => return Err("`query` must be a string".into()),
        None => return Err("`query` is required".into()),
    };
    let mut request = async_graphql::Request::new(query);
    match map.get("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name.clone()),
        Some(_) => return Err("`operationName` must be a string".into()),
    }
    match map.get("variables") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => request = request.variables(async_graphql::Variables::from_json(v.clone())),
        Some(_) => return Err("`variables` must be an object".into()),
    }
    match map.get("extensions") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err("`extensions` must be an object".into()),
    }
    Ok(request)
}

fn bad_request(media: &'static str, message: &str) -> Response {
    respond(StatusCode::BAD_REQUEST, media, &error_body(Code::BadUserInput, message))
}

fn not_acceptable() -> Response {
    respond(
        StatusCode::NOT_ACCEPTABLE,
        JSON,
        &error_body(Code::BadUserInput, "accepts application/graphql-response+json or application/json"),
    )
}

async fn execute(
    app: &App,
    caller: Option<Caller>,
    address: IpAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
    media: &'static str,
) -> Response {
    let mut meta = match request_meta(headers) {
        Ok(m) => m,
        Err(m) => return bad_request(media, &m),
    };
    meta.client = Some(address);
    if is_mutation(&request) {
        // Anonymous requests (sign-ins) are counted per address.
        let identity = caller.as_ref().map_or_else(|| format!("anonymous {address}"), |c| c.subject.clone());
        if let Err(refused) = app.services.guards.mutation(&identity) {
            return too_many(&app.services, media, refused);
        }
    }
    let request = match caller {
        Some(caller) => request.data(caller),
        None => request,
    };
    let mut response = app.schema.execute(request.data(meta)).await;
    app.services.metrics.graphql_requests.inc();
    // A request error (unparsable or invalid document, bad variables) has no data and no paths.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    crate::error::fill_codes(&mut response.errors, request_error);
    // An outage anywhere in the response makes it a 503, a limit a 429: the client retries.
    let mut retry: Option<(StatusCode, u64)> = None;
    for error in &response.errors {
        let extensions = error.extensions.as_ref();
        let code = extensions.and_then(|e| e.get("code")).map(|c| c.to_string()).unwrap_or_default();
        let code = code.trim_matches('"');
        app.services.metrics.graphql_errors.get_or_create(&crate::metrics::OutcomeLabel { code: code.into() }).inc();
        let seconds = || match extensions.and_then(|e| e.get("retryAfterSeconds")) {
            Some(async_graphql::Value::Number(n)) => n.as_u64().unwrap_or(1),
            _ => crate::error::UNAVAILABLE_RETRY_SECS,
        };
        if code == Code::Unavailable.as_str() {
            retry = Some((StatusCode::SERVICE_UNAVAILABLE, seconds()));
        } else if code == Code::RateLimited.as_str() && retry.is_none() {
            retry = Some((StatusCode::TOO_MANY_REQUESTS, seconds()));
        }
    }
    let mut body = serde_json::to_value(&response).expect("responses serialize");
    if request_error {
        body.as_object_mut().map(|b| b.remove("data"));
    }
    if let Some((status, seconds)) = retry {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            app.services.metrics.unavailable.inc();
        }
        return with_retry_after(respond(status, media, &body), seconds);
    }
    let status = if request_error && media == GRAPHQL_RESPONSE { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    respond(status, media, &body)
}

async fn websocket(app: App, parts: &mut axum::http::request::Parts) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // A token may come with the upgrade request, or (as browsers must) in `connection_init`; the
    // dashboard's session cookie only from the server's own origin, where no other site's page
    // can open a socket with it.
    let address = client_address(&parts.extensions);
    let headers = &parts.headers;
    let by_cookie = !headers.contains_key(header::AUTHORIZATION) && session::cookie(headers).is_some();
    if by_cookie && !session::own_origin(headers, &app.services.limits.cors_origins) {
        let message = "a session cookie opens a WebSocket only from the dashboard's own origin";
        return respond(StatusCode::FORBIDDEN, JSON, &error_body(Code::Forbidden, message));
    }
    let (caller, session) = match session::cookie(headers).filter(|_| by_cookie) {
        Some(value) => match session::authenticate(&app.services, address, value).await {
            Ok((caller, live)) => (Ok(caller), Some(live)),
            Err(denied) => (Err(denied), None),
        },
        None => match authenticate_bearer(&app.services, address, headers).await {
            Ok(Some(caller)) => (Ok(caller), None),
            Ok(None) => (Err(Denied::Unauthenticated(AuthError::Missing)), None),
            Err(denied) => (Err(denied), None),
        },
    };
    let meta = RequestMeta { client: Some(address), ..request_meta(&parts.headers).unwrap_or_default() };
    let services = app.services.clone();
    let handshake = crate::ws::Handshake { caller, meta, session };
    crate::ws::accept(app, upgrade, handshake, move |token| async move { verify(&services, address, &token).await })
}

/// Ready for work: not stopping, and Postgres and NATS both answer (Postgres within a second, so
/// that a load balancer's probe is answered while the database is away).
async fn readyz(State(App { services, stopping, .. }): State<App>) -> Response {
    let stopping = stopping.is_cancelled();
    let db = tokio::time::timeout(READINESS_WAIT, sqlx::query("select 1").execute(&services.pool))
        .await
        .is_ok_and(|answered| answered.is_ok());
    let nats = services.bus.client.connection_state() == async_nats::connection::State::Connected;
    let status = if db && nats && !stopping { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "postgres": db, "nats": nats, "stopping": stopping }))).into_response()
}

/// How long `/readyz` waits for Postgres.
const READINESS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn metrics(State(App { services, .. }): State<App>) -> Response {
    match services.metrics.render(&services.pool).await {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
