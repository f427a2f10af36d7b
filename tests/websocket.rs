//! GraphQL over WebSocket to the letter of `graphql-transport-ws`: a raw probe against a running
//! gateway checks each error path's close code, the initialisation timeout, keep-alive pings, the
//! caps per connection and per identity, and that subscriptions deliver and complete.

use std::time::{Duration, Instant};

use devart::Role;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Running, TestEnv};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];

/// How long anything the server should answer may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the server sent: a protocol message, or the close frame.
#[derive(Debug)]
enum Frame {
    Json(Value),
    Closed(u16, String),
}

/// A raw `graphql-transport-ws` client that shows everything the server sends.
struct Probe {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Probe {
    /// A socket asking for `protocol` (none: no `Sec-WebSocket-Protocol`), with `authorization`
    /// in the upgrade's headers if given.
    async fn open_with(running: &Running, protocol: Option<&str>, authorization: Option<&str>) -> Probe {
        let mut request = format!("ws://{}/graphql", running.addr).into_client_request().unwrap();
        if let Some(protocol) = protocol {
            request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        }
        if let Some(authorization) = authorization {
            request.headers_mut().insert("Authorization", authorization.parse().unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        if protocol == Some("graphql-transport-ws") {
            assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
        }
        Probe { socket }
    }

    async fn open(running: &Running) -> Probe {
        Probe::open_with(running, Some("graphql-transport-ws"), None).await
    }

    /// A socket whose `connection_init` with `token` was acknowledged.
    async fn ready(running: &Running, token: &str) -> Probe {
        let mut probe = Probe::open(running).await;
        probe.init(token).await;
        match probe.frame().await {
            Frame::Json(ack) if ack["type"] == "connection_ack" => probe,
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    async fn init(&mut self, token: &str) {
        self.send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
            .await;
    }

    async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query } })).await;
    }

    /// The next frame from the server, within `PATIENCE`.
    async fn frame(&mut self) -> Frame {
        self.frame_within(PATIENCE).await.expect("nothing from the server in time")
    }

    /// The next frame within `wait`, or `None` if nothing came.
    async fn frame_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let message = match tokio::time::timeout(wait, self.socket.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the socket ended without a close frame"),
                Ok(Some(Err(e))) => panic!("the socket failed without a close frame: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            return Some(match message {
                Message::Text(text) => Frame::Json(serde_json::from_str(&text).unwrap()),
                Message::Close(Some(frame)) => Frame::Closed(frame.code.into(), frame.reason.to_string()),
                Message::Close(None) => panic!("a close frame without a code"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(b) => panic!("binary from the server: {b:?}"),
            });
        }
    }

    /// The close frame, skipping keep-alive pings; fails on any other message.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.frame().await {
                Frame::Closed(code, reason) => return (code, reason),
                Frame::Json(m) if m["type"] == "ping" => continue,
                Frame::Json(m) => panic!("expected a close frame, got {m}"),
            }
        }
    }

    /// The next protocol message other than a ping.
    async fn message(&mut self) -> Value {
        loop {
            match self.frame().await {
                Frame::Json(m) if m["type"] == "ping" => continue,
                Frame::Json(m) => return m,
                Frame::Closed(code, reason) => panic!("closed {code} {reason} instead of a message"),
            }
        }
    }
}

fn assert_closed(closed: (u16, String), code: u16, reason: &str) {
    assert_eq!(closed.0, code, "close reason {:?}", closed.1);
    assert!(closed.1.starts_with(reason), "close {code}: reason {:?}, expected {reason:?}…", closed.1);
}

#[tokio::test]
async fn each_error_path_closes_with_the_code_the_protocol_names() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway]).await;
    let token = running.token.clone();
    let taken = "subscription { taskUpdates { id } }";

    // Invalid messages: not JSON, an unknown type, a malformed subscribe, one only servers send.
    for text in [
        "hello".to_owned(),
        json!({ "type": "start", "id": "1" }).to_string(),
        json!({ "type": "connection_init", "payload": "Bearer x" }).to_string(),
        json!({ "type": "subscribe", "payload": { "query": taken } }).to_string(),
        json!({ "type": "next", "id": "1", "payload": {} }).to_string(),
    ] {
        let mut probe = Probe::open(&running).await;
        probe.send_text(&text).await;
        let closed = probe.closed().await;
        assert_eq!(closed.0, 4400, "{text}: {closed:?}");
        assert!(!closed.1.is_empty(), "4400 says why");
    }
    // After the acknowledgement too.
    let mut probe = Probe::ready(&running, &token).await;
    probe.send(json!({ "type": "subscribe", "id": "", "payload": { "query": taken } })).await;
    assert_closed(probe.closed().await, 4400, "`subscribe` id must not be empty");

    // `subscribe` before `connection_ack`.
    let mut probe = Probe::open(&running).await;
    probe.subscribe("1", taken).await;
    assert_closed(probe.closed().await, 4401, "Unauthorized");

    // A refused `connection_init`: a bad token, an expired one, none at all; a bad header token
    // with none in the payload.
    let expired = devart_gateway::SigningKey::new(env.config.jwt_secret.clone().unwrap().0.into_bytes()).issue(
        "admin",
        devart_gateway::Role::Admin,
        chrono::Duration::hours(-1),
    );
    for (payload, why) in [
        (json!({ "Authorization": "Bearer not-a-token" }), "Forbidden: invalid token"),
        (json!({ "token": expired }), "Forbidden: token expired"),
        (json!({}), "Forbidden: missing bearer token"),
    ] {
        let mut probe = Probe::open(&running).await;
        probe.send(json!({ "type": "connection_init", "payload": payload })).await;
        assert_closed(probe.closed().await, 4403, why);
    }
    let mut probe = Probe::open_with(&running, Some("graphql-transport-ws"), Some("Bearer not-a-token")).await;
    probe.send(json!({ "type": "connection_init" })).await;
    assert_closed(probe.closed().await, 4403, "Forbidden: invalid token");
    // A good header token needs nothing in the payload; a good payload token stands in for a bad
    // header one.
    let mut probe = Probe::open_with(&running, Some("graphql-transport-ws"), Some(&format!("Bearer {token}"))).await;
    probe.send(json!({ "type": "connection_init" })).await;
    assert_eq!(probe.message().await["type"], "connection_ack");
    let mut probe = Probe::open_with(&running, Some("graphql-transport-ws"), Some("Bearer not-a-token")).await;
    probe.init(&token).await;
    assert_eq!(probe.message().await["type"], "connection_ack");

    // A second `connection_init`, acknowledged or not yet.
    let mut probe = Probe::ready(&running, &token).await;
    probe.init(&token).await;
    assert_closed(probe.closed().await, 4429, "Too many initialisation requests");
    let mut probe = Probe::open(&running).await;
    probe.init(&token).await;
    probe.init(&token).await;
    assert_eq!(probe.message().await["type"], "connection_ack");
    assert_closed(probe.closed().await, 4429, "Too many initialisation requests");

    // A subscription id still in use.
    let mut probe = Probe::ready(&running, &token).await;
    probe.subscribe("dup", taken).await;
    probe.subscribe("dup", taken).await;
    assert_closed(probe.closed().await, 4409, "Subscriber for dup already exists");

    // No subprotocol asked for: the socket opens, then closes with 4406.
    let mut probe = Probe::open_with(&running, None, None).await;
    assert_closed(probe.closed().await, 4406, "Subprotocol not acceptable");
    // Only the legacy `graphql-ws`: the server agrees to none, which the client refuses.
    let mut request = format!("ws://{}/graphql", running.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-ws".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await.map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("SubProtocol"), "{refused}");

    // A message over the size limit (1 MiB, as over HTTP).
    let mut probe = Probe::ready(&running, &token).await;
    let huge = json!({ "id": "1", "type": "subscribe", "payload": { "query": "x".repeat(2 << 20) } });
    probe.send(huge).await;
    assert_closed(probe.closed().await, 1009, "Message too big");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_connection_without_connection_init_is_closed_after_the_timeout() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.limits.websocket.init_timeout_secs = 1;
    let running = env.start_with(&config, &[Role::Gateway]).await;

    let opened = Instant::now();
    let mut idle = Probe::open(&running).await;
    // Meanwhile, a connection that did initialise in time is left alone.
    let mut initialised = Probe::ready(&running, &running.token).await;
    assert_closed(idle.closed().await, 4408, "Connection initialisation timeout");
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed early, after {waited:?}");
    assert!(waited < Duration::from_secs(3), "closed late, after {waited:?}");
    assert!(initialised.frame_within(Duration::from_millis(1_500)).await.is_none(), "the initialised one stays open");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_server_pings_to_keep_alive_and_answers_pings_with_their_payload() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.limits.websocket.ping_secs = 1;
    let running = env.start_with(&config, &[Role::Gateway]).await;

    // A ping before the acknowledgement is answered too; the protocol allows one at any time.
    let mut probe = Probe::open(&running).await;
    probe.send(json!({ "type": "ping", "payload": { "sent": 1 } })).await;
    let Frame::Json(pong) = probe.frame().await else { panic!("no pong") };
    assert_eq!(pong, json!({ "type": "pong", "payload": { "sent": 1 } }));
    probe.send(json!({ "type": "ping" })).await;
    let Frame::Json(pong) = probe.frame().await else { panic!("no pong") };
    assert_eq!(pong, json!({ "type": "pong" }), "no payload, none echoed");

    probe.init(&running.token).await;
    let Frame::Json(ack) = probe.frame().await else { panic!("no ack") };
    assert_eq!(ack["type"], "connection_ack");
    let acknowledged = Instant::now();
    let mut pings = Vec::new();
    while pings.len() < 3 {
        match probe.frame_within(Duration::from_secs(3)).await {
            Some(Frame::Json(ping)) => {
                assert_eq!(ping, json!({ "type": "ping" }));
                pings.push(acknowledged.elapsed());
                probe.send(json!({ "type": "pong" })).await;
            }
            other => panic!("expected a keep-alive ping, got {other:?}"),
        }
    }
    assert!(pings[0] >= Duration::from_millis(900), "first ping {:?} after the ack", pings[0]);
    assert!(pings[2] < Duration::from_secs(6), "three pings took {:?}", pings[2]);

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_caps_on_subscriptions_and_on_connections_per_identity_close_with_their_reasons() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.limits.websocket.subscriptions_max = 2;
    config.limits.websocket.connections_per_identity = 2;
    let running = env.start_with(&config, &[Role::Gateway]).await;
    let updates = "subscription { taskUpdates { id } }";

    // Two at once; a completed one frees its place; a third at once is too many.
    let mut probe = Probe::ready(&running, &running.token).await;
    probe.subscribe("a", updates).await;
    probe.subscribe("b", updates).await;
    probe.send(json!({ "id": "a", "type": "complete" })).await;
    probe.subscribe("c", updates).await;
    assert!(probe.frame_within(Duration::from_millis(500)).await.is_none(), "two at once are allowed");
    probe.subscribe("d", updates).await;
    assert_closed(probe.closed().await, 4430, "Too many subscriptions: at most 2");
    drop(probe);

    // Two connections of one identity; a third is refused while another identity is served.
    let admin = running.token.clone();
    let mut first = Probe::ready(&running, &admin).await;
    let _second = Probe::ready(&running, &admin).await;
    let mut third = Probe::open(&running).await;
    third.init(&admin).await;
    assert_closed(third.closed().await, 4431, "Too many connections for this identity: at most 2");
    let supervisor = env.token(devart_gateway::Role::Supervisor);
    let _other = Probe::ready(&running, &supervisor).await;
    // The refused connection took no place, and a closed one gives its place back.
    first.socket.close(None).await.unwrap();
    while first.socket.next().await.is_some() {}
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = Probe::open(&running).await;
        again.init(&admin).await;
        match again.frame().await {
            Frame::Json(ack) if ack["type"] == "connection_ack" => break,
            Frame::Closed(4431, _) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("expected the freed place, got {other:?}"),
        }
    }

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn operations_deliver_complete_and_report_errors_with_codes() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let mut probe = Probe::ready(&running, &running.token).await;

    // A subscription delivers what a mutation over HTTP caused.
    probe.subscribe("live", "subscription { taskUpdates { id title status } }").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = running.graphql("mutation { createTask(input: {title: \"over the wire\"}) { id } }", json!({})).await;
    let id = created["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned();
    let next = probe.message().await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(next["id"], "live");
    assert_eq!(
        next["payload"],
        json!({ "data": { "taskUpdates": { "id": id, "title": "over the wire", "status": "PENDING" } } })
    );

    // The client completes it: nothing more comes for it, not even a `complete`.
    probe.send(json!({ "id": "live", "type": "complete" })).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.graphql("mutation { createTask(input: {title: \"unheard\"}) { id } }", json!({})).await;
    assert!(probe.frame_within(Duration::from_secs(2)).await.is_none(), "a completed subscription stays quiet");

    // Its id may be used again; a query is one `next`, then `complete`.
    probe.subscribe("live", "{ me { subject role } }").await;
    assert_eq!(
        probe.message().await,
        json!({ "id": "live", "type": "next", "payload": { "data": { "me": { "subject": "admin", "role": "ADMIN" } } } })
    );
    assert_eq!(probe.message().await, json!({ "id": "live", "type": "complete" }));

    // A mutation over the socket.
    probe.subscribe("m", "mutation { createTask(input: {title: \"by socket\"}) { title } }").await;
    let next = probe.message().await;
    assert_eq!(next["payload"]["data"]["createTask"]["title"], "by socket", "{next}");
    assert_eq!(probe.message().await, json!({ "id": "m", "type": "complete" }));

    // A document the schema refuses: `error` with coded errors, and no `complete` after it.
    probe.subscribe("bad", "subscription { noSuchField }").await;
    let error = probe.message().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "bad");
    let errors = error["payload"].as_array().unwrap_or_else(|| panic!("{error}"));
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| e["extensions"]["code"] == "BAD_USER_INPUT" && e["message"].is_string()), "{error}");
    probe.subscribe("syntax", "subscription {").await;
    let error = probe.message().await;
    assert_eq!((error["type"].as_str(), error["id"].as_str()), (Some("error"), Some("syntax")), "{error}");
    assert!(probe.frame_within(Duration::from_millis(500)).await.is_none(), "no complete after an error");

    // An error while running is a `next` with the resolver's code, then `complete`.
    let viewer = env.token(devart_gateway::Role::Viewer);
    let mut viewing = Probe::ready(&running, &viewer).await;
    viewing.subscribe("w", "mutation { createTask(input: {title: \"not mine to make\"}) { id } }").await;
    let next = viewing.message().await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(next["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{next}");
    assert_eq!(viewing.message().await, json!({ "id": "w", "type": "complete" }));

    // The events subscription catches up from the store, over the same connection.
    probe.subscribe("e", "subscription { events(after: \"0\") { type } }").await;
    let next = probe.message().await;
    assert_eq!(next["id"], "e", "{next}");
    assert_eq!(next["payload"]["data"]["events"]["type"], "TaskCreated", "{next}");

    // The counters see it all.
    let metrics = reqwest::get(running.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("devart_websocket_connections 2"), "{metrics}");

    running.stop().await;
    env.cleanup().await;
}
