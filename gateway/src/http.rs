//! HTTP: GraphQL over HTTP (POST and GET), GraphQL over WebSocket (`graphql-transport-ws`), health,
//! readiness and metrics.

use std::collections::HashMap;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use uuid::Uuid;

use devart_commands::agents::KeyError;
use devart_commands::users::{record_refusal, Refusal};

use crate::auth::{bearer, AuthError, Caller, Role};
use crate::error::Code;
use crate::schema::RequestMeta;
use crate::{App, Services};

/// Requests larger than this are refused with 413.
pub const BODY_BYTES_MAX: usize = 1 << 20;

pub fn router(app: App) -> Router {
    let limits = app.services.limits.clone();
    let origins: Vec<HeaderValue> =
        limits.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            "idempotency-key".parse().expect("header name"),
            "x-correlation-id".parse().expect("header name"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(limits.request_timeout_secs.max(1)),
        ))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

/// 429 for an identity over its mutation rate, with when to come back.
fn too_many(media: &'static str, wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = respond(
        StatusCode::TOO_MANY_REQUESTS,
        media,
        &json!({ "errors": [{ "message": format!("too many mutations from this identity; retry in {seconds} s"), "extensions": { "code": Code::RateLimited.as_str(), "retryAfterSeconds": seconds } }] }),
    );
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
const JSON: &str = "application/json";

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

fn error_body(code: Code, message: &str) -> Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] })
}

fn respond(status: StatusCode, media: &'static str, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}

/// A person's JWT or an agent's API key, from `Authorization: Bearer …`.
async fn authenticate(services: &Services, headers: &HeaderMap) -> Result<Caller, AuthError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let token = bearer(value.to_str().map_err(|_| AuthError::Invalid)?)?;
    verify(services, token).await
}

async fn verify(services: &Services, token: &str) -> Result<Caller, AuthError> {
    let refused = |kind, subject: &str, error: AuthError| {
        let (pool, subject) = (services.pool.clone(), subject.to_owned());
        async move {
            record_refusal(&pool, kind, &subject, &error.to_string()).await;
            error
        }
    };
    if token.starts_with("dva_") {
        // The key's public id names it in the log when it is well formed; the rest is secret.
        let key_id =
            token.get(4..20).filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()) && token.get(20..21) == Some("_"));
        let subject = key_id.map_or_else(|| "malformed key".to_owned(), |id| format!("key {id}"));
        return match services.keys.verify(token).await {
            Ok(agent) => Ok(Caller::agent(agent.id, agent.capabilities)),
            Err(KeyError::Inactive) => Err(refused(Refusal::KeyRefused, &subject, AuthError::Deactivated).await),
            Err(KeyError::Invalid) => Err(refused(Refusal::KeyRefused, &subject, AuthError::Invalid).await),
        };
    }
    let caller = match services.signing_key.verify(token) {
        Ok(caller) => caller,
        Err(error) => return Err(refused(Refusal::TokenRefused, "bearer token", error).await),
    };
    let Some(id) = caller.user else { return Ok(caller) };
    // A user's token stands for the account as it is now: its current role, while it is active.
    match services.commands.account(id).await {
        Ok(Some(account)) if account.active => Ok(Caller::user(id, Role::of(account.role))),
        Ok(_) => Err(refused(Refusal::TokenRefused, &format!("user {id}"), AuthError::UserDeactivated).await),
        Err(error) => {
            tracing::warn!(%error, "authentication: cannot read the account");
            Err(AuthError::Invalid)
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
    Ok(RequestMeta { idempotency_key, correlation_id })
}

async fn graphql_post(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    // Without a token, only signing in is allowed: that is checked once the document is read.
    let caller = match authenticate(&app.services, &headers).await {
        Ok(c) => Some(c),
        Err(AuthError::Missing) => None,
        Err(e) => return unauthenticated(e, media),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != JSON {
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
    execute(&app, caller, &headers, request, media).await
}

async fn graphql_get(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    request: Request<axum::body::Body>,
) -> Response {
    let (mut parts, _) = request.into_parts();
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
    let caller = match authenticate(&app.services, &headers).await {
        Ok(c) => c,
        Err(e) => return unauthenticated(e, media),
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
    execute(&app, Some(caller), &headers, request, media).await
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
    headers: &HeaderMap,
    request: async_graphql::Request,
    media: &'static str,
) -> Response {
    let meta = match request_meta(headers) {
        Ok(m) => m,
        Err(m) => return bad_request(media, &m),
    };
    if is_mutation(&request) {
        // Anonymous requests (sign-ins) share one allowance.
        let identity = caller.as_ref().map_or("anonymous", |c| c.subject.as_str());
        if let Err(wait) = app.services.mutations.check(identity) {
            app.services
                .metrics
                .graphql_errors
                .get_or_create(&crate::metrics::OutcomeLabel { code: Code::RateLimited.as_str().into() })
                .inc();
            return too_many(media, wait);
        }
    }
    let request = match caller {
        Some(caller) => request.data(caller),
        None => request,
    };
    let response = app.schema.execute(request.data(meta)).await;
    app.services.metrics.graphql_requests.inc();
    // A request error (unparsable or invalid document, bad variables) has no data and no paths.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let mut body = serde_json::to_value(&response).expect("responses serialize");
    if let Some(errors) = body.get_mut("errors").and_then(Value::as_array_mut) {
        for error in errors {
            let extensions =
                error.as_object_mut().expect("errors are objects").entry("extensions").or_insert_with(|| json!({}));
            let code = extensions
                .as_object_mut()
                .map(|e| e.entry("code").or_insert_with(|| Value::from(Code::BadUserInput.as_str())).clone())
                .unwrap_or_default();
            let code = code.as_str().unwrap_or("").to_owned();
            app.services.metrics.graphql_errors.get_or_create(&crate::metrics::OutcomeLabel { code }).inc();
        }
    }
    if request_error {
        body.as_object_mut().map(|b| b.remove("data"));
    }
    let status = if request_error && media == GRAPHQL_RESPONSE { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    respond(status, media, &body)
}

async fn websocket(app: App, parts: &mut axum::http::request::Parts) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // A token may come with the upgrade request, or (as browsers must) in `connection_init`.
    let caller = authenticate(&app.services, &parts.headers).await;
    let meta = request_meta(&parts.headers).unwrap_or_default();
    let services = app.services.clone();
    let handshake = crate::ws::Handshake { caller, meta };
    crate::ws::accept(app, upgrade, handshake, move |token| async move { verify(&services, &token).await })
}

async fn readyz(State(App { services, .. }): State<App>) -> Response {
    let db = sqlx::query("select 1").execute(&services.pool).await.is_ok();
    let nats = services.bus.client.connection_state() == async_nats::connection::State::Connected;
    let status = if db && nats { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "postgres": db, "nats": nats }))).into_response()
}

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
