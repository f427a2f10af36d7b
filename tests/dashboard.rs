//! The dashboard as a browser meets it: the single-page app served at every path the API does not
//! use, with its caching and security headers, and the page that says how to build it when it was
//! not built; signing in and out with the session cookie (`/session`), the cookie over HTTP (with
//! its CSRF header) and over WebSocket (from the server's own origin), on every gateway.
//!
//! About 750 lines in one file on purpose: serving and sessions share one stack, one browser-like
//! client and its cookie jar; apart, each half would repeat them.

use std::path::PathBuf;
use std::time::Duration;

use devart::Role;
use futures::{SinkExt, StreamExt};
use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Running, TestEnv};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str =
    "<!doctype html><html><head><script type=\"module\" src=\"/assets/index-3f9a1c.js\"></script></head></html>";
const SCRIPT: &str = "console.log('devart');";

/// A directory to serve the dashboard from, removed when dropped.
struct WebDir(PathBuf);

impl WebDir {
    /// A directory that does not exist: no dashboard was built.
    fn missing() -> WebDir {
        WebDir(std::env::temp_dir().join(format!("devart-web-{}", uuid::Uuid::new_v4())))
    }

    /// A built dashboard: `index.html`, a hashed script and a favicon.
    fn built() -> WebDir {
        let dir = WebDir::missing();
        std::fs::create_dir_all(dir.0.join("assets")).unwrap();
        std::fs::write(dir.0.join("index.html"), INDEX).unwrap();
        std::fs::write(dir.0.join("assets/index-3f9a1c.js"), SCRIPT).unwrap();
        std::fs::write(dir.0.join("favicon.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        dir
    }
}

impl Drop for WebDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn serving(env: &TestEnv, dir: &WebDir) -> Running {
    let mut config = env.config.clone();
    config.limits.dashboard.web_dir = Some(dir.0.clone());
    env.start_with(&config, &[Role::Gateway]).await
}

fn header(response: &reqwest::Response, name: header::HeaderName) -> &str {
    response.headers().get(&name).map_or("", |v| v.to_str().unwrap())
}

/// The headers every dashboard response carries.
fn assert_secured(response: &reqwest::Response) {
    assert_eq!(header(response, header::CONTENT_SECURITY_POLICY), CSP, "{}", response.url());
    assert_eq!(header(response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header(response, header::REFERRER_POLICY), "no-referrer");
}

#[tokio::test]
async fn a_dashboard_never_built_answers_how_to_build_it() {
    let env = TestEnv::new().await;
    let dir = WebDir::missing();
    let running = serving(&env, &dir).await;
    let http = reqwest::Client::new();

    for path in ["/", "/tasks/42"] {
        let response = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_secured(&response);
        assert!(header(&response, header::CONTENT_TYPE).starts_with("text/html"));
        let page = response.text().await.unwrap();
        assert!(page.contains("scripts/web") && page.contains("npm ci"), "{page}");
        assert!(!page.contains("<script") && !page.contains("style="), "nothing inline: {page}");
    }
    let missing = http.get(running.url("/assets/index-3f9a1c.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The API is where it was.
    let health = http.get(running.url("/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_dashboard_answers_every_page_and_caches_what_it_may() {
    let env = TestEnv::new().await;
    let dir = WebDir::built();
    let running = serving(&env, &dir).await;
    let http = reqwest::Client::new();

    // `/` and deep links answer index.html, revalidated each time.
    let index = http.get(running.url("/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_secured(&index);
    assert_eq!(header(&index, header::CACHE_CONTROL), "no-cache");
    assert_eq!(header(&index, header::CONTENT_TYPE), "text/html; charset=utf-8");
    let etag = header(&index, header::ETAG).to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "a strong entity tag: {etag:?}");
    assert_eq!(index.text().await.unwrap(), INDEX);
    for path in ["/tasks/0192f0a4-0000-7000-8000-000000000000", "/agents?status=active", "/audit/events/"] {
        let deep = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(deep.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&deep, header::ETAG), etag, "{path}");
        assert_eq!(deep.text().await.unwrap(), INDEX, "{path}");
    }

    // Unchanged: 304, with nothing in the body; changed: the new page and another tag.
    let unchanged = http.get(running.url("/tasks")).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&unchanged, header::ETAG), etag);
    assert_secured(&unchanged);
    assert!(unchanged.bytes().await.unwrap().is_empty());
    std::fs::write(dir.0.join("index.html"), format!("{INDEX}\n")).unwrap();
    let changed = http.get(running.url("/")).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, header::ETAG), etag);

    // Hashed assets are cached for good; an unknown one is a 404, not the page.
    let script = http.get(running.url("/assets/index-3f9a1c.js")).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_secured(&script);
    assert_eq!(header(&script, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    assert_eq!(header(&script, header::CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(script.text().await.unwrap(), SCRIPT);
    for path in ["/assets/index-000000.js", "/assets/", "/assets/..%2Findex.html", "/assets/.env"] {
        let missing = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // A file at the top answers as itself; HEAD answers as GET does, without the body.
    let icon = http.get(running.url("/favicon.svg")).send().await.unwrap();
    assert_eq!(header(&icon, header::CONTENT_TYPE), "image/svg+xml");
    let head = http.head(running.url("/assets/index-3f9a1c.js")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    assert!(head.bytes().await.unwrap().is_empty());
    let head = http.head(running.url("/tasks")).send().await.unwrap();
    assert_eq!((head.status(), header(&head, header::ETAG).is_empty()), (StatusCode::OK, false));

    // The dashboard only reads.
    let post = http.post(running.url("/tasks")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The API keeps its paths: GraphQL, GraphiQL for a browser, health; none of them is the page.
    let graphql = running.graphql("{ me { role } }", serde_json::json!({})).await;
    assert_eq!(graphql["data"]["me"]["role"], "ADMIN", "{graphql}");
    let graphiql = http.get(running.url("/graphql")).header(header::ACCEPT, "text/html").send().await.unwrap();
    let graphiql = graphiql.text().await.unwrap();
    assert!(graphiql.to_lowercase().contains("graphiql") && graphiql != INDEX);
    for path in ["/graphql/x", "/session/x", "/metrics/x"] {
        let below = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(below.status(), StatusCode::NOT_FOUND, "{path}");
    }
    running.stop().await;
    env.cleanup().await;
}

const CREATE_USER: &str = "mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } } }";
const PASSWORD: &str = "a long enough password";

/// How long anything the server should answer may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// Creates a user with [`PASSWORD`]; their id.
async fn user(running: &Running, email: &str, role: &str) -> String {
    let created =
        running.graphql(CREATE_USER, json!({ "input": { "email": email, "role": role, "password": PASSWORD } })).await;
    created["data"]["createUser"]["user"]["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

/// `POST /session` with the CSRF header; the response.
async fn sign_in(running: &Running, email: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(running.url("/session"))
        .header("x-devart-csrf", "1")
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// The `devart_session=…` pair a response sets, and the whole `Set-Cookie` line.
fn set_cookie(response: &reqwest::Response) -> (String, String) {
    let line = header(response, header::SET_COOKIE).to_owned();
    let pair = line.split(';').next().unwrap().trim().to_owned();
    assert!(pair.starts_with("devart_session="), "{line}");
    (pair, line)
}

/// Signs in as `email`; the cookie pair to send back.
async fn signed_in(running: &Running, email: &str) -> String {
    let response = sign_in(running, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    set_cookie(&response).0
}

/// `GET /session` with `cookie`: the status and body.
async fn session(running: &Running, cookie: &str) -> (StatusCode, Value) {
    let response =
        reqwest::Client::new().get(running.url("/session")).header(header::COOKIE, cookie).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// `{ me { subject role } }` over HTTP with `cookie`, with or without the CSRF header, and with a
/// bearer token if given: the status and body.
async fn me(running: &Running, cookie: &str, csrf: bool, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(running.url("/graphql"))
        .header(header::COOKIE, cookie)
        .json(&json!({ "query": "{ me { subject role } }" }));
    if csrf {
        request = request.header("x-devart-csrf", "1");
    }
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// `DELETE /session` with `cookie`; the response.
async fn sign_out(running: &Running, cookie: &str) -> reqwest::Response {
    let http = reqwest::Client::new();
    http.delete(running.url("/session"))
        .header(header::COOKIE, cookie)
        .header("x-devart-csrf", "1")
        .send()
        .await
        .unwrap()
}

async fn security_log(env: &TestEnv, kind: &str) -> Vec<String> {
    sqlx::query_scalar("select subject from security_log where kind = $1 order by id")
        .bind(kind)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_cookie_that_works_with_its_header_only() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let vera = user(&running, "vera@example.org", "VIEWER").await;
    let http = reqwest::Client::new();

    // Refused: without the CSRF header, a body that is no sign-in, a wrong password.
    let no_header =
        http.post(running.url("/session")).json(&json!({ "email": "vera@example.org", "password": PASSWORD }));
    let no_header = no_header.send().await.unwrap();
    assert_eq!(no_header.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&no_header.json().await.unwrap()), "FORBIDDEN");
    for body in [json!({ "email": "vera@example.org" }), json!(["vera@example.org", PASSWORD])] {
        let bad = http.post(running.url("/session")).header("x-devart-csrf", "1").json(&body).send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(&bad.json().await.unwrap()), "BAD_USER_INPUT");
    }
    let wrong = sign_in(&running, "vera@example.org", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(code(&wrong.json().await.unwrap()), "UNAUTHENTICATED");

    // Signed in: the user and the session's end, and a cookie the page cannot read.
    let response = sign_in(&running, " Vera@Example.org ", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (cookie, line) = set_cookie(&response);
    assert!(!line.contains("Secure"), "plain http: {line}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(line.split("; ").any(|a| a == attribute), "{attribute} in {line}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], json!({ "id": vera, "email": "vera@example.org", "role": "VIEWER", "active": true }));
    let expires = chrono::DateTime::parse_from_rfc3339(body["expiresAt"].as_str().unwrap()).unwrap();
    let hours = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((11.9..=12.0).contains(&hours), "a session lasts as long as a login token: {hours} h");
    assert_eq!(security_log(&env, "SIGNED_IN").await, ["vera@example.org"]);
    // Behind a proxy that speaks https, the cookie is Secure.
    let proxied = http
        .post(running.url("/session"))
        .header("x-devart-csrf", "1")
        .header("x-forwarded-proto", "https")
        .json(&json!({ "email": "vera@example.org", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&proxied).1.ends_with("; Secure"));

    // The cookie says who is signed in, and serves GraphQL with its header only.
    let (status, current) = session(&running, &cookie).await;
    assert_eq!((status, &current["user"]), (StatusCode::OK, &body["user"]));
    let (status, refused) = me(&running, &cookie, false, None).await;
    assert_eq!((status, code(&refused)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{refused}");
    let (status, answer) = me(&running, &cookie, true, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["data"]["me"], json!({ "subject": vera, "role": "VIEWER" }), "{answer}");
    // A bearer token takes precedence, needs no header, and is not rescued by the cookie.
    let (_, admin) = me(&running, &cookie, false, Some(&running.token)).await;
    assert_eq!(admin["data"]["me"]["role"], "ADMIN", "{admin}");
    let (status, _) = me(&running, &cookie, true, Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A cookie the server did not make is refused before anything is read.
    let forged = format!("devart_session={}.{}.AAAA", uuid::Uuid::new_v4().simple(), vera.replace('-', ""));
    let (status, refused) = session(&running, &forged).await;
    assert_eq!((status, code(&refused)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
    let (status, refused) = session(&running, "other=1").await;
    assert_eq!((status, code(&refused)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));

    // Role and activation are read at each request.
    let change = "mutation($id: ID!) { changeRole(userId: $id, role: SUPERVISOR) { role } }";
    running.graphql(change, json!({ "id": vera })).await;
    assert_eq!(session(&running, &cookie).await.1["user"]["role"], "SUPERVISOR");
    assert_eq!(me(&running, &cookie, true, None).await.1["data"]["me"]["role"], "SUPERVISOR");
    running.graphql("mutation($id: ID!) { deactivateUser(userId: $id) { active } }", json!({ "id": vera })).await;
    let (status, refused) = session(&running, &cookie).await;
    assert_eq!((status, code(&refused)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
    assert_eq!(me(&running, &cookie, true, None).await.0, StatusCode::UNAUTHORIZED);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn signing_out_is_honoured_by_every_gateway() {
    let env = TestEnv::new().await;
    let first = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let second = env.start(&[Role::Gateway]).await;
    user(&first, "ada@example.org", "ADMIN").await;
    let cookie = signed_in(&first, "ada@example.org").await;
    assert_eq!(session(&second, &cookie).await.0, StatusCode::OK, "a session is good on every gateway");
    assert_eq!(me(&second, &cookie, true, None).await.1["data"]["me"]["role"], "ADMIN");

    // Signing out needs the header too, then ends the session and removes the cookie.
    let http = reqwest::Client::new();
    let no_header = http.delete(first.url("/session")).header(header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(no_header.status(), StatusCode::FORBIDDEN);
    assert_eq!(session(&first, &cookie).await.0, StatusCode::OK, "not signed out without the header");
    let out = sign_out(&first, &cookie).await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let (cleared, line) = set_cookie(&out);
    assert_eq!(cleared, "devart_session=");
    assert!(line.contains("Max-Age=0") && line.contains("HttpOnly"), "{line}");
    assert_eq!(security_log(&env, "SIGNED_OUT").await, ["ada@example.org"]);

    // The old cookie is refused on both gateways, over HTTP and on a new socket.
    for running in [&first, &second] {
        let (status, refused) = session(running, &cookie).await;
        assert_eq!((status, code(&refused)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
        let (status, refused) = me(running, &cookie, true, None).await;
        assert_eq!((status, code(&refused)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
        let mut socket = Socket::open(running, &cookie, Some(&own_origin(running))).await.expect("upgraded");
        socket.send(json!({ "type": "connection_init" })).await;
        assert_eq!(socket.closed().await.0, 4403);
    }
    // Signing out again, or without a session, is done as well.
    assert_eq!(sign_out(&second, &cookie).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(security_log(&env, "SIGNED_OUT").await.len(), 1, "ended once");
    second.stop().await;
    first.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn sign_ins_share_the_login_mutations_limits() {
    let mut env = TestEnv::new().await;
    env.config.limits.account_failures_per_minute = 3;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    user(&running, "sam@example.org", "SUPERVISOR").await;
    let login = "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token } }";

    // Failures through either way count against one allowance for the account.
    for _ in 0..2 {
        let failed = running.graphql_anonymous(login, json!({ "email": "sam@example.org", "password": "wrong" })).await;
        assert_eq!(code(&failed), "UNAUTHENTICATED", "{failed}");
    }
    assert_eq!(sign_in(&running, "sam@example.org", "wrong").await.status(), StatusCode::UNAUTHORIZED);
    let limited = sign_in(&running, "sam@example.org", "wrong").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&limited, header::RETRY_AFTER).parse::<u64>().unwrap() >= 1);
    assert_eq!(code(&limited.json().await.unwrap()), "RATE_LIMITED");
    // Past it, even the right password is held back, the same way over both.
    let held = sign_in(&running, "sam@example.org", PASSWORD).await;
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(held.headers().get(header::SET_COOKIE).is_none());
    let held = running.graphql_anonymous(login, json!({ "email": "sam@example.org", "password": PASSWORD })).await;
    assert_eq!(code(&held), "RATE_LIMITED", "{held}");
    running.stop().await;
    env.cleanup().await;
}

/// The `Origin` of a page served by `running`.
fn own_origin(running: &Running) -> String {
    format!("http://{}", running.addr)
}

/// A raw `graphql-transport-ws` socket opened with a cookie.
struct Socket {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Socket {
    /// Opens `/graphql` with `cookie` and `origin`; the HTTP status if the upgrade was refused.
    async fn open(running: &Running, cookie: &str, origin: Option<&str>) -> Result<Socket, u16> {
        let mut request = format!("ws://{}/graphql", running.addr).into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        headers.insert("Cookie", cookie.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert("Origin", origin.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Socket { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("the upgrade failed: {other}"),
        }
    }

    /// A socket acknowledged on its cookie alone: `connection_init` without a payload.
    async fn ready(running: &Running, cookie: &str) -> Socket {
        let mut socket = Socket::open(running, cookie, Some(&own_origin(running))).await.expect("upgraded");
        socket.send(json!({ "type": "connection_init" })).await;
        let ack = socket.message().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        socket
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::text(message.to_string())).await.unwrap();
    }

    /// The next message, or the close frame as `Err((code, reason))`; skips pings.
    async fn next(&mut self, wait: Duration) -> Option<Result<Value, (u16, String)>> {
        loop {
            let message = match tokio::time::timeout(wait, self.socket.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the socket ended without a close frame"),
                Ok(Some(Err(e))) => panic!("the socket failed without a close frame: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            return Some(match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value["type"] == "ping" {
                        continue;
                    }
                    Ok(value)
                }
                Message::Close(Some(frame)) => Err((frame.code.into(), frame.reason.to_string())),
                other => panic!("unexpected {other:?}"),
            });
        }
    }

    async fn message(&mut self) -> Value {
        match self.next(PATIENCE).await.expect("a message in time") {
            Ok(message) => message,
            Err(closed) => panic!("closed {closed:?} instead of a message"),
        }
    }

    async fn closed(&mut self) -> (u16, String) {
        match self.next(PATIENCE).await.expect("a close frame in time") {
            Err(closed) => closed,
            Ok(message) => panic!("expected a close frame, got {message}"),
        }
    }

    /// Runs `{ me { role } }` over the socket; the role.
    async fn role(&mut self) -> Value {
        self.send(json!({ "id": "me", "type": "subscribe", "payload": { "query": "{ me { role } }" } })).await;
        let next = self.message().await;
        assert_eq!(next["type"], "next", "{next}");
        assert_eq!(self.message().await["type"], "complete");
        next["payload"]["data"]["me"]["role"].clone()
    }
}

#[tokio::test]
async fn a_socket_takes_the_cookie_from_the_servers_own_origin_only() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    user(&running, "sam@example.org", "SUPERVISOR").await;
    let cookie = signed_in(&running, "sam@example.org").await;

    let mut socket = Socket::ready(&running, &cookie).await;
    assert_eq!(socket.role().await, "SUPERVISOR");

    // Another site's page, or no page at all, gets no socket with the cookie.
    for origin in [Some("http://evil.example.org"), Some("null"), None] {
        assert_eq!(Socket::open(&running, &cookie, origin).await.err(), Some(403), "{origin:?}");
    }
    // One of DEVART_CORS_ORIGINS is as good as the server's own.
    let mut config = env.config.clone();
    config.limits.cors_origins = vec!["https://ops.example.org".into()];
    let allowing = env.start_with(&config, &[Role::Gateway]).await;
    let mut socket = Socket::open(&allowing, &cookie, Some("https://ops.example.org")).await.expect("upgraded");
    socket.send(json!({ "type": "connection_init" })).await;
    assert_eq!(socket.message().await["type"], "connection_ack");
    allowing.stop().await;
    running.stop().await;
    env.cleanup().await;
}

/// How soon an open socket must be closed after its session ended or its account changed.
const WITHIN: Duration = Duration::from_secs(1);

/// Waits for `socket`'s close frame, at most [`WITHIN`] from `since`.
async fn closed_within(socket: &mut Socket, since: std::time::Instant) -> (u16, String) {
    let left = WITHIN.saturating_sub(since.elapsed());
    match socket.next(left).await {
        Some(Err(closed)) => closed,
        Some(Ok(message)) => panic!("expected a close frame, got {message}"),
        None => panic!("not closed within {WITHIN:?}"),
    }
}

/// Whether `socket` stays open for a moment (nothing comes from the server but pings).
async fn stays_open(socket: &mut Socket) -> bool {
    socket.next(Duration::from_millis(300)).await.is_none()
}

#[tokio::test]
async fn signing_out_closes_the_sessions_sockets_on_every_gateway() {
    let env = TestEnv::new().await;
    let first = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let second = env.start(&[Role::Gateway]).await;
    user(&first, "ada@example.org", "ADMIN").await;
    let cookie = signed_in(&first, "ada@example.org").await;
    let other_session = signed_in(&first, "ada@example.org").await;
    let mut here = Socket::ready(&first, &cookie).await;
    let mut there = Socket::ready(&second, &cookie).await;
    let mut elsewhere = Socket::ready(&second, &other_session).await;
    assert_eq!(there.role().await, "ADMIN");

    let since = std::time::Instant::now();
    assert_eq!(sign_out(&first, &cookie).await.status(), StatusCode::NO_CONTENT);
    for socket in [&mut here, &mut there] {
        let (code, reason) = closed_within(socket, since).await;
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.contains("session has ended"), "{reason}");
    }
    assert!(stays_open(&mut elsewhere).await, "the user's other session goes on");
    assert_eq!(elsewhere.role().await, "ADMIN");
    second.stop().await;
    first.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_role_change_or_a_deactivation_closes_the_users_sockets() {
    let env = TestEnv::new().await;
    let first = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let second = env.start(&[Role::Gateway]).await;
    let vera = user(&first, "vera@example.org", "VIEWER").await;
    user(&first, "sam@example.org", "SUPERVISOR").await;
    let cookie = signed_in(&first, "vera@example.org").await;
    let bystander = signed_in(&first, "sam@example.org").await;
    let mut here = Socket::ready(&first, &cookie).await;
    let mut there = Socket::ready(&second, &cookie).await;
    let mut sam = Socket::ready(&second, &bystander).await;

    // Another role: closed with 4401, and a new socket has the new role.
    let since = std::time::Instant::now();
    let changed = first
        .graphql("mutation($id: ID!) { changeRole(userId: $id, role: SUPERVISOR) { role } }", json!({ "id": vera }))
        .await;
    assert_eq!(changed["data"]["changeRole"]["role"], "SUPERVISOR", "{changed}");
    for socket in [&mut here, &mut there] {
        let (code, reason) = closed_within(socket, since).await;
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.contains("role changed"), "{reason}");
    }
    let mut here = Socket::ready(&first, &cookie).await;
    assert_eq!(here.role().await, "SUPERVISOR");
    let mut there = Socket::ready(&second, &cookie).await;

    // A socket opened with the login mutation's token follows the account too.
    let login = "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token } }";
    let session = first.graphql_anonymous(login, json!({ "email": "vera@example.org", "password": PASSWORD })).await;
    let token = session["data"]["login"]["token"].as_str().unwrap().to_owned();
    let mut by_token = Socket::open(&second, "other=1", None).await.expect("upgraded");
    by_token
        .send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
        .await;
    assert_eq!(by_token.message().await["type"], "connection_ack");

    // Deactivated: closed with 4403, and the cookie opens no socket any more.
    let since = std::time::Instant::now();
    let deactivated =
        first.graphql("mutation($id: ID!) { deactivateUser(userId: $id) { active } }", json!({ "id": vera })).await;
    assert_eq!(deactivated["data"]["deactivateUser"]["active"], false, "{deactivated}");
    for socket in [&mut here, &mut there, &mut by_token] {
        let (code, reason) = closed_within(socket, since).await;
        assert_eq!(code, 4403, "{reason}");
        assert!(reason.contains("deactivated"), "{reason}");
    }
    let mut refused = Socket::open(&first, &cookie, Some(&own_origin(&first))).await.expect("upgraded");
    refused.send(json!({ "type": "connection_init" })).await;
    assert_eq!(refused.closed().await.0, 4403);
    assert!(stays_open(&mut sam).await, "another user's socket stays open");
    assert_eq!(sam.role().await, "SUPERVISOR");
    second.stop().await;
    first.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_socket_is_closed_when_its_session_expires() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    user(&running, "ada@example.org", "ADMIN").await;
    let cookie = signed_in(&running, "ada@example.org").await;
    // The session has a second and a half left when the socket opens.
    sqlx::query("update sessions set expires_at = now() + interval '1.5 seconds'").execute(&env.pool).await.unwrap();
    let mut socket = Socket::ready(&running, &cookie).await;
    let opened = std::time::Instant::now();
    assert!(stays_open(&mut socket).await);
    let (code, reason) = socket.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(opened.elapsed() < Duration::from_secs(3), "closed at expiry, not later: {:?}", opened.elapsed());
    assert_eq!(session(&running, &cookie).await.0, StatusCode::UNAUTHORIZED);
    running.stop().await;
    env.cleanup().await;
}

/// `devart user add` run as an operator would, on `env`'s database, with `stdin`: the exit
/// status, stdout and stderr.
fn user_add(env: &TestEnv, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_devart"))
        .args(["user", "add"])
        .args(args)
        .env("DATABASE_URL", &env.config.database_url)
        .env("DEVART_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn the_first_admin_is_made_on_the_command_line_and_signs_in() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;

    // The password from stdin: nothing on stdout, and it signs in.
    let (status, stdout, stderr) =
        user_add(&env, &["--email", "Ada@Example.org", "--role", "admin"], &format!("{PASSWORD}\n"));
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("created admin ada@example.org"), "{stderr}");
    let cookie = signed_in(&running, "ada@example.org").await;
    assert_eq!(session(&running, &cookie).await.1["user"]["role"], "ADMIN");

    // Generated: printed once, the only thing on stdout; it signs in.
    let (status, stdout, stderr) =
        user_add(&env, &["--email", "vera@example.org", "--role", "viewer", "--generate"], "");
    assert_eq!(status, 0, "{stderr}");
    let generated = stdout.trim_end_matches('\n');
    assert!(generated.len() >= 20 && !generated.contains(char::is_whitespace), "{stdout:?}");
    assert_eq!(sign_in(&running, "vera@example.org", generated).await.status(), StatusCode::OK);
    let hashes: Vec<String> =
        sqlx::query_scalar("select password_hash from user_credentials").fetch_all(&env.pool).await.unwrap();
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$") && !h.contains(generated)));

    // An email taken: its own exit status, and nothing changed.
    let (status, _, stderr) =
        user_add(&env, &["--email", "ada@example.org", "--role", "viewer"], &format!("{PASSWORD}\n"));
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(session(&running, &cookie).await.1["user"]["role"], "ADMIN");

    // Bad input is a usage error: a short password, none, an address that is none, a role that is none.
    for (args, stdin) in [
        (&["--email", "sam@example.org", "--role", "viewer"][..], "short\n"),
        (&["--email", "sam@example.org", "--role", "viewer"][..], ""),
        (&["--email", "not an address", "--role", "viewer"][..], "a long enough password\n"),
        (&["--email", "sam@example.org", "--role", "owner"][..], "a long enough password\n"),
    ] {
        let (status, _, stderr) = user_add(&env, args, stdin);
        assert_eq!(status, 2, "{args:?}: {stderr}");
    }
    let accounts: i64 = sqlx::query_scalar("select count(*) from user_credentials").fetch_one(&env.pool).await.unwrap();
    assert_eq!(accounts, 2);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_gateway_that_stopped_listening_checks_its_sockets_when_it_listens_again() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let sam = user(&running, "sam@example.org", "SUPERVISOR").await;
    let cookie = signed_in(&running, "sam@example.org").await;
    let mut socket = Socket::ready(&running, &cookie).await;

    // A change nobody is told of: made with the trigger off, as if sent while nobody listened.
    let mut tx = env.pool.begin().await.unwrap();
    sqlx::query("alter table user_credentials disable trigger user_credentials_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("update user_credentials set role = 'viewer' where user_id = $1::uuid")
        .bind(&sam)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("alter table user_credentials enable trigger user_credentials_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(stays_open(&mut socket).await, "nothing was notified");

    // The listening connection is lost; once it listens again, the gateway finds the change.
    let ended: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%devart_sessions%'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(ended, [true], "one gateway listens");
    let (code, reason) = socket.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("role changed"), "{reason}");
    running.stop().await;
    env.cleanup().await;
}
