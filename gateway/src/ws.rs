//! GraphQL over WebSocket: the `graphql-transport-ws` protocol (graphql-ws's `PROTOCOL.md`) with its
//! error paths and close codes, a keep-alive, and caps on subscriptions per connection and on
//! connections per identity.
//!
//! One file of about 700 lines on purpose: the protocol is one state machine (handshake, operations,
//! keep-alive, close), and each close code is easiest to check against `PROTOCOL.md` in one read.
//!
//! async-graphql's own loop does not follow the protocol where it matters to clients: it closes an
//! invalid message with 1002 instead of 4400, a `subscribe` before the acknowledgement with 1011
//! instead of 4401 and a refused `connection_init` with 1002 instead of 4403; it has no
//! initialisation timeout, silently replaces a subscription whose id is taken instead of closing
//! with 4409, answers a client's `complete` with one of its own, and sends validation errors as
//! `next` instead of `error`. None of this is configurable, so the protocol runs here, over axum's
//! WebSocket and [`Schema::execute_stream_with_session_data`](async_graphql::Schema).
//!
//! Only `graphql-transport-ws` is spoken. The legacy `graphql-ws` subprotocol
//! (subscriptions-transport-ws) has other messages and no close codes for its errors; a socket that
//! did not ask for `graphql-transport-ws` is closed with 4406, as the protocol's reference server
//! does.
//!
//! # Close codes
//!
//! | code | reason | when |
//! |------|--------|------|
//! | 4400 | the problem with the message | a message that is not JSON, of an unknown type, malformed, or one only the server sends |
//! | 4401 | `Unauthorized` | `subscribe` before `connection_ack` |
//! | 4401 | `Unauthorized: …` | a person's session ended (signed out, expired) or their role changed: reconnect to read it anew (ours) |
//! | 4403 | `Forbidden: …` | `connection_init` with a missing or refused token; a person deactivated while connected |
//! | 4406 | `Subprotocol not acceptable` | the upgrade did not ask for `graphql-transport-ws` |
//! | 4408 | `Connection initialisation timeout` | no `connection_init` within `DEVART_WS_INIT_TIMEOUT_SECS` |
//! | 4409 | `Subscriber for <id> already exists` | `subscribe` with the id of an operation still running |
//! | 4429 | `Too many initialisation requests` | a second `connection_init` |
//! | 4430 | `Too many subscriptions: …` | more than `DEVART_WS_SUBSCRIPTIONS_MAX` operations at once on the connection (ours) |
//! | 4431 | `Too many connections for this identity: …` | more than `DEVART_WS_CONNECTIONS_PER_IDENTITY` acknowledged connections of one person or agent in this process (ours) |
//! | 1009 | `Message too big` | a message over [`BODY_BYTES_MAX`](crate::http::BODY_BYTES_MAX) |
//! | 1001 | `Going away: the server is stopping` | the process is stopping (SIGTERM, Ctrl-C): reconnect |
//!
//! 4430 and 4431 are in the range the protocol leaves free, next to its own 4429. Clients such as
//! graphql-ws retry on them (the protocol's fatal codes are not retried), which suits 4431: a slot
//! frees when another connection of the identity closes.
//!
//! A person's socket follows their account and session ([`sockets`]): it is closed, on whichever
//! gateway it is open, when the session ends or the account changes anywhere.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Response};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use futures::stream::{self, AbortHandle, BoxStream, SelectAll};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::auth::{bearer, AuthError, Caller};
use crate::error::Code;
use crate::http::Denied;
use crate::metrics::CloseLabel;
use crate::schema::RequestMeta;
use crate::session::Live;
use crate::{App, Services};

pub mod sockets;

use sockets::{Registration, Watched};

/// The one subprotocol spoken.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// A close frame's reason may be at most 123 bytes (RFC 6455, 5.5: 125 less the code).
const REASON_BYTES_MAX: usize = 123;

/// How long a closing connection waits for the client to answer its close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// The WebSocket endpoint's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct WebSocketLimits {
    /// Seconds a new WebSocket has to send `connection_init` before it is closed with 4408.
    #[arg(
        id = "ws_init_timeout_secs",
        long = "ws-init-timeout-secs",
        value_name = "SECONDS",
        env = "DEVART_WS_INIT_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub init_timeout_secs: u64,
    /// Seconds between the server's keep-alive `ping` messages on an acknowledged connection; 0
    /// sends none.
    #[arg(
        id = "ws_ping_secs",
        long = "ws-ping-secs",
        env = "DEVART_WS_PING_SECS",
        default_value_t = 15,
        global = true
    )]
    pub ping_secs: u64,
    /// Operations one connection may run at once; one more closes it with 4430. 0: no cap.
    #[arg(
        id = "ws_subscriptions_max",
        long = "ws-subscriptions-max",
        value_name = "COUNT",
        env = "DEVART_WS_SUBSCRIPTIONS_MAX",
        default_value_t = 100,
        global = true
    )]
    pub subscriptions_max: u32,
    /// Acknowledged connections one person or agent may hold open in this process; one more is
    /// closed with 4431. 0: no cap.
    #[arg(
        id = "ws_connections_per_identity",
        long = "ws-connections-per-identity",
        value_name = "COUNT",
        env = "DEVART_WS_CONNECTIONS_PER_IDENTITY",
        default_value_t = 32,
        global = true
    )]
    pub connections_per_identity: u32,
}

impl Default for WebSocketLimits {
    fn default() -> Self {
        WebSocketLimits { init_timeout_secs: 10, ping_secs: 15, subscriptions_max: 100, connections_per_identity: 32 }
    }
}

/// Why the server closes a connection: each is one close code of the protocol, or of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Close {
    #[error("{0}")]
    InvalidMessage(String),
    #[error("Unauthorized")]
    Unauthorized,
    /// A person's session ended, or their role changed: the client signs in or reconnects.
    #[error("Unauthorized: {0}")]
    SessionEnded(&'static str),
    #[error("Forbidden: {0}")]
    Forbidden(AuthError),
    /// The credentials could not be checked now (an outage), or were refused once too often.
    #[error("Try again later: {0}")]
    TryAgainLater(String),
    #[error("Subprotocol not acceptable")]
    SubprotocolNotAcceptable,
    #[error("Connection initialisation timeout")]
    InitialisationTimeout,
    #[error("Subscriber for {0} already exists")]
    SubscriberExists(String),
    #[error("Too many initialisation requests")]
    TooManyInitialisationRequests,
    #[error("Too many subscriptions: at most {0} at once on a connection")]
    TooManySubscriptions(u32),
    #[error("Too many connections for this identity: at most {0} at once")]
    TooManyConnections(u32),
    #[error("Message too big")]
    MessageTooBig,
    /// The server is stopping: the client reconnects (to another instance, or to this one later).
    #[error("Going away: the server is stopping")]
    GoingAway,
}

impl Close {
    pub fn code(&self) -> u16 {
        match self {
            Close::InvalidMessage(_) => 4400,
            Close::Unauthorized | Close::SessionEnded(_) => 4401,
            Close::Forbidden(_) => 4403,
            Close::TryAgainLater(_) => 1013,
            Close::SubprotocolNotAcceptable => 4406,
            Close::InitialisationTimeout => 4408,
            Close::SubscriberExists(_) => 4409,
            Close::TooManyInitialisationRequests => 4429,
            Close::TooManySubscriptions(_) => 4430,
            Close::TooManyConnections(_) => 4431,
            Close::MessageTooBig => 1009,
            Close::GoingAway => 1001,
        }
    }

    /// The close frame: the code, and the reason cut to what a frame holds.
    pub fn frame(&self) -> CloseFrame {
        let mut reason = self.to_string();
        if reason.len() > REASON_BYTES_MAX {
            let mut end = REASON_BYTES_MAX - '…'.len_utf8();
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        CloseFrame { code: self.code(), reason: reason.into() }
    }
}

/// How a failed authentication ends the connection: the one place that decides its close code.
/// A refusal is 4403; an outage or a limit is 1013 (Try Again Later), never a refusal.
pub fn authentication_failed(denied: Denied) -> Close {
    match denied {
        Denied::Unauthenticated(error) => Close::Forbidden(error),
        Denied::Limited(refused) => Close::TryAgainLater(format!(
            "too many refused credentials; retry in {} s",
            crate::error::retry_after_secs(refused.wait)
        )),
        Denied::Unavailable => Close::TryAgainLater("the service is unavailable".into()),
    }
}

/// How many acknowledged connections each identity holds open, for the per-identity cap.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<String, u32>>,
}

impl Connections {
    /// A place for one more connection of `identity`, unless it already holds `max` (0: no cap).
    /// The place is given back when the returned guard is dropped.
    pub fn admit(self: &Arc<Self>, identity: &str, max: u32) -> Option<Admitted> {
        let mut open = self.open.lock().expect("connections lock");
        let count = open.entry(identity.to_owned()).or_default();
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Admitted { connections: self.clone(), identity: identity.to_owned() })
    }

    /// How many connections `identity` holds open.
    pub fn open(&self, identity: &str) -> u32 {
        self.open.lock().expect("connections lock").get(identity).copied().unwrap_or(0)
    }
}

/// One identity's place among its open connections; given back on drop.
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    identity: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().expect("connections lock");
        if let Some(count) = open.get_mut(&self.identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

/// What the upgrade request told about the connection.
pub struct Handshake {
    /// The caller from the upgrade's `Authorization` header, or why there is none.
    pub caller: Result<Caller, Denied>,
    /// The upgrade's `Idempotency-Key` and `X-Correlation-Id`, for the operations run on it.
    pub meta: RequestMeta,
    /// The session the upgrade's cookie named, when the caller came from it.
    pub session: Option<Live>,
}

/// Answers the upgrade and runs the protocol on the socket. `verify` checks a token that comes in
/// `connection_init` instead of the upgrade's headers.
pub fn accept<V, F>(app: App, upgrade: WebSocketUpgrade, handshake: Handshake, verify: V) -> axum::response::Response
where
    V: FnOnce(String) -> F + Send + 'static,
    F: Future<Output = Result<Caller, Denied>> + Send + 'static,
{
    upgrade.protocols([PROTOCOL]).max_message_size(crate::http::BODY_BYTES_MAX).on_upgrade(move |socket| async move {
        let metrics = app.services.metrics.clone();
        metrics.websocket_connections.inc();
        let connection = Connection::new(socket, app, handshake);
        let closed = connection.run(verify).await;
        metrics.websocket_connections.dec();
        if let Some(code) = closed {
            metrics.websocket_closes.get_or_create(&CloseLabel { code: code.to_string() }).inc();
        }
    })
}

/// A message from the client, checked against the protocol.
#[derive(Debug)]
enum ClientMessage {
    ConnectionInit { payload: Map<String, Value> },
    Ping { payload: Option<Map<String, Value>> },
    Pong,
    Subscribe { id: String, request: Box<async_graphql::Request> },
    Complete { id: String },
}

fn invalid(message: impl Into<String>) -> Close {
    Close::InvalidMessage(message.into())
}

/// `payload`, which must be an object or absent (`null` counts as absent).
fn object_payload(message: &mut Map<String, Value>, kind: &str) -> Result<Option<Map<String, Value>>, Close> {
    match message.remove("payload") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(payload)) => Ok(Some(payload)),
        Some(_) => Err(invalid(format!("`{kind}` payload must be an object"))),
    }
}

fn message_id(message: &Map<String, Value>, kind: &str) -> Result<String, Close> {
    match message.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::String(_)) => Err(invalid(format!("`{kind}` id must not be empty"))),
        _ => Err(invalid(format!("`{kind}` needs a string id"))),
    }
}

/// The GraphQL request in a `subscribe` payload.
fn subscribe_request(payload: Option<Value>) -> Result<async_graphql::Request, Close> {
    let Some(Value::Object(payload)) = payload else {
        return Err(invalid("`subscribe` payload must be an object"));
    };
    let Some(Value::String(query)) = payload.get("query") else {
        return Err(invalid("`subscribe` payload needs a string query"));
    };
    let mut request = async_graphql::Request::new(query.clone());
    match payload.get("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name.clone()),
        Some(_) => return Err(invalid("`subscribe` operationName must be a string")),
    }
    match payload.get("variables") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => request = request.variables(async_graphql::Variables::from_json(v.clone())),
        Some(_) => return Err(invalid("`subscribe` variables must be an object")),
    }
    match payload.get("extensions") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err(invalid("`subscribe` extensions must be an object")),
    }
    Ok(request)
}

fn parse(text: &str) -> Result<ClientMessage, Close> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
        return Err(invalid("Invalid message received: not a JSON object"));
    };
    let kind = match message.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(invalid("Invalid message received: no string `type`")),
    };
    match kind.as_str() {
        "connection_init" => {
            Ok(ClientMessage::ConnectionInit { payload: object_payload(&mut message, &kind)?.unwrap_or_default() })
        }
        "ping" => Ok(ClientMessage::Ping { payload: object_payload(&mut message, &kind)? }),
        "pong" => object_payload(&mut message, &kind).map(|_| ClientMessage::Pong),
        "subscribe" => {
            let id = message_id(&message, &kind)?;
            let request = subscribe_request(message.remove("payload"))?;
            Ok(ClientMessage::Subscribe { id, request: Box::new(request) })
        }
        "complete" => Ok(ClientMessage::Complete { id: message_id(&message, &kind)? }),
        "connection_ack" | "next" | "error" => Err(invalid(format!("`{kind}` is sent by the server only"))),
        _ => Err(invalid("Invalid message received: unknown type")),
    }
}

/// Whether `request` would run a mutation (the operation it names, or its only one).
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let name = request.operation_name.as_deref();
    document.operations.iter().any(|(op_name, op)| {
        op.node.ty == OperationType::Mutation && (name.is_none() || op_name.map(|n| n.as_str()) == name)
    })
}

/// A request error: the document or its variables were refused before anything ran, so there is no
/// data and no error has a path.
fn is_request_error(response: &Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// The connection after `connection_ack`.
struct Acknowledged {
    data: Arc<Data>,
    caller: Caller,
    _admitted: Admitted,
}

/// An operation running on the connection.
struct Operation {
    /// Tells this run's results from those of an earlier operation that had the same id.
    run: u64,
    abort: AbortHandle,
}

/// What an operation's stream yields, tagged with the operation.
struct Output {
    id: Arc<str>,
    run: u64,
    event: Event,
}

enum Event {
    Result { response: Box<Response>, first: bool },
    End,
}

/// How the loop ended: by the server, with a close frame to send, or by the client.
enum Ended {
    Server(Close),
    Client,
}

impl From<Close> for Ended {
    fn from(close: Close) -> Self {
        Ended::Server(close)
    }
}

/// A person's connection, as the server follows it: how it is to be closed if their session ends
/// or their account changes, and when their session expires.
struct Followed {
    _registration: Registration,
    closed: Option<tokio::sync::oneshot::Receiver<Close>>,
    expires: Option<Instant>,
}

struct Connection {
    socket: WebSocket,
    app: App,
    handshake: Option<Handshake>,
    acknowledged: Option<Acknowledged>,
    init_received: bool,
    operations: HashMap<Arc<str>, Operation>,
    results: SelectAll<BoxStream<'static, Output>>,
    runs: u64,
    ping: Option<Interval>,
    followed: Option<Followed>,
}

impl Connection {
    fn new(socket: WebSocket, app: App, handshake: Handshake) -> Connection {
        let mut results = SelectAll::new();
        // Never empty, so waiting on it waits for a result rather than ending at once.
        results.push(stream::pending().boxed());
        // Followed from the upgrade on, so that a session ending before `connection_init` is heard.
        let followed = match &handshake.caller {
            Ok(caller) => follow(&app.services, caller, handshake.session.as_ref()),
            Err(_) => None,
        };
        Connection {
            socket,
            app,
            handshake: Some(handshake),
            acknowledged: None,
            init_received: false,
            operations: HashMap::new(),
            results,
            runs: 0,
            ping: None,
            followed,
        }
    }

    fn services(&self) -> &Services {
        &self.app.services
    }

    /// Runs the protocol until either side closes; the close code the server sent, if it did.
    async fn run<V, F>(mut self, verify: V) -> Option<u16>
    where
        V: FnOnce(String) -> F + Send,
        F: Future<Output = Result<Caller, Denied>> + Send,
    {
        let mut verify = Some(verify);
        let ended = if self.socket.protocol().is_none_or(|p| p != PROTOCOL) {
            Ended::Server(Close::SubprotocolNotAcceptable)
        } else {
            self.serve(&mut verify).await
        };
        match ended {
            Ended::Client => None,
            Ended::Server(close) => {
                tracing::debug!(code = close.code(), reason = %close, "websocket: closing");
                self.close(&close).await;
                Some(close.code())
            }
        }
    }

    async fn serve<V, F>(&mut self, verify: &mut Option<V>) -> Ended
    where
        V: FnOnce(String) -> F + Send,
        F: Future<Output = Result<Caller, Denied>> + Send,
    {
        let limits = &self.services().limits.websocket;
        let init_deadline = Instant::now() + Duration::from_secs(limits.init_timeout_secs.max(1));
        loop {
            let step = tokio::select! {
                message = self.socket.recv() => match message {
                    None | Some(Ok(Message::Close(_))) => Err(Ended::Client),
                    Some(Ok(Message::Text(text))) => self.on_message(text.as_str(), verify).await,
                    Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => self.on_message(text, verify).await,
                        Err(_) => Err(invalid("Invalid message received: not UTF-8").into()),
                    },
                    // The WebSocket layer answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Err(error)) => Err(broken(&error)),
                },
                () = tokio::time::sleep_until(init_deadline), if !self.init_received => {
                    Err(Close::InitialisationTimeout.into())
                }
                () = tick(&mut self.ping) => self.send(&json!({ "type": "ping" })).await,
                Some(output) = self.results.next() => self.on_output(output).await,
                close = ended(&mut self.followed) => Err(close.into()),
                () = self.app.stopping.cancelled() => Err(Close::GoingAway.into()),
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    async fn on_message<V, F>(&mut self, text: &str, verify: &mut Option<V>) -> Result<(), Ended>
    where
        V: FnOnce(String) -> F + Send,
        F: Future<Output = Result<Caller, Denied>> + Send,
    {
        match parse(text)? {
            ClientMessage::ConnectionInit { payload } => {
                let (Some(handshake), Some(verify)) = (self.handshake.take(), verify.take()) else {
                    return Err(Close::TooManyInitialisationRequests.into());
                };
                self.init_received = true;
                self.acknowledge(handshake, &payload, verify).await
            }
            ClientMessage::Ping { payload } => {
                let mut pong = json!({ "type": "pong" });
                if let Some(payload) = payload {
                    pong["payload"] = Value::Object(payload);
                }
                self.send(&pong).await
            }
            ClientMessage::Pong => Ok(()),
            ClientMessage::Subscribe { id, request } => self.subscribe(id, *request).await,
            ClientMessage::Complete { id } => {
                // Nothing more goes out for it, not even a `complete`: the client asked for the end.
                if let Some(operation) = self.operations.remove(id.as_str()) {
                    operation.abort.abort();
                }
                Ok(())
            }
        }
    }

    /// Authenticates the connection, takes its place among the identity's connections, and
    /// acknowledges it.
    async fn acknowledge<V, F>(
        &mut self,
        handshake: Handshake,
        payload: &Map<String, Value>,
        verify: V,
    ) -> Result<(), Ended>
    where
        V: FnOnce(String) -> F,
        F: Future<Output = Result<Caller, Denied>>,
    {
        let token =
            ["Authorization", "authorization", "token"].iter().find_map(|k| payload.get(*k).and_then(Value::as_str));
        // A token in the headers wins; one in the payload stands in for a missing or refused one.
        let caller = match (handshake.caller, token) {
            (Ok(caller), _) => Ok(caller),
            (Err(_), Some(value)) => verify(bearer(value).unwrap_or(value).to_owned()).await,
            (Err(error), None) => Err(error),
        };
        let caller = caller.map_err(authentication_failed)?;
        if self.followed.is_none() {
            self.followed = follow(self.services(), &caller, None);
        }
        let max = self.services().limits.websocket.connections_per_identity;
        let admitted = self.services().websockets.admit(&caller.subject, max).ok_or(Close::TooManyConnections(max))?;
        let mut data = Data::default();
        data.insert(caller.clone());
        data.insert(handshake.meta);
        self.acknowledged = Some(Acknowledged { data: Arc::new(data), caller, _admitted: admitted });
        let ping_secs = self.services().limits.websocket.ping_secs;
        if ping_secs > 0 {
            let period = Duration::from_secs(ping_secs);
            let mut ping = tokio::time::interval_at(Instant::now() + period, period);
            ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.ping = Some(ping);
        }
        self.send(&json!({ "type": "connection_ack" })).await
    }

    async fn subscribe(&mut self, id: String, request: async_graphql::Request) -> Result<(), Ended> {
        let Some(acknowledged) = &self.acknowledged else { return Err(Close::Unauthorized.into()) };
        if self.operations.contains_key(id.as_str()) {
            return Err(Close::SubscriberExists(id).into());
        }
        let max = self.services().limits.websocket.subscriptions_max;
        if max > 0 && self.operations.len() >= max as usize {
            return Err(Close::TooManySubscriptions(max).into());
        }
        if is_mutation(&request) {
            if let Err(refused) = self.services().guards.mutation(&acknowledged.caller.subject) {
                let seconds = crate::error::retry_after_secs(refused.wait);
                self.count_error(Code::RateLimited.as_str());
                let error = json!({
                    "message": format!("too many mutations from this identity; retry in {seconds} s"),
                    "extensions": { "code": Code::RateLimited.as_str(), "retryAfterSeconds": seconds },
                });
                return self.send(&json!({ "id": id, "type": "error", "payload": [error] })).await;
            }
        }
        self.services().metrics.graphql_requests.inc();
        self.runs += 1;
        let (run, id): (u64, Arc<str>) = (self.runs, id.into());
        let results = {
            let id = id.clone();
            self.app.schema.execute_stream_with_session_data(request, acknowledged.data.clone()).enumerate().map(
                move |(n, response)| Output {
                    id: id.clone(),
                    run,
                    event: Event::Result { response: Box::new(response), first: n == 0 },
                },
            )
        };
        let end = stream::once({
            let id = id.clone();
            async move { Output { id, run, event: Event::End } }
        });
        let (results, abort) = stream::abortable(results.chain(end));
        self.operations.insert(id, Operation { run, abort });
        self.results.push(results.boxed());
        Ok(())
    }

    async fn on_output(&mut self, output: Output) -> Result<(), Ended> {
        // A result of an operation the client completed, or of an earlier one under the same id.
        if self.operations.get(&output.id).is_none_or(|o| o.run != output.run) {
            return Ok(());
        }
        match output.event {
            Event::Result { response, first: true } if is_request_error(&response) => {
                // The protocol's `error` ends the operation: no `complete` follows.
                self.operations.remove(&output.id);
                let errors = self.coded_errors(&response, Code::BadUserInput);
                self.send(&json!({ "id": &*output.id, "type": "error", "payload": errors })).await
            }
            Event::Result { response, .. } => {
                let mut payload = serde_json::to_value(&response).unwrap_or_else(|_| json!({}));
                if let Some(object) = payload.as_object_mut() {
                    if response.errors.is_empty() {
                        object.remove("errors");
                    } else {
                        object.insert("errors".into(), self.coded_errors(&response, Code::Internal));
                    }
                }
                self.send(&json!({ "id": &*output.id, "type": "next", "payload": payload })).await
            }
            Event::End => {
                self.operations.remove(&output.id);
                self.send(&json!({ "id": &*output.id, "type": "complete" })).await
            }
        }
    }

    /// `response`'s errors for the client, counted by code.
    fn coded_errors(&self, response: &Response, default: Code) -> Value {
        let errors = coded_errors(&response.errors, default);
        for error in errors.as_array().into_iter().flatten() {
            self.count_error(error["extensions"]["code"].as_str().unwrap_or(default.as_str()));
        }
        errors
    }

    fn count_error(&self, code: &str) {
        self.services().metrics.graphql_errors.get_or_create(&crate::metrics::OutcomeLabel { code: code.into() }).inc();
    }

    async fn send(&mut self, message: &Value) -> Result<(), Ended> {
        match self.socket.send(Message::text(message.to_string())).await {
            Ok(()) => Ok(()),
            Err(error) => Err(broken(&error)),
        }
    }

    /// Sends the close frame, then waits a moment for the client's answer so the close handshake
    /// completes and the client reads the code.
    async fn close(&mut self, close: &Close) {
        // Operations stop now, not when the client answers.
        for (_, operation) in self.operations.drain() {
            operation.abort.abort();
        }
        if self.socket.send(Message::Close(Some(close.frame()))).await.is_err() {
            return;
        }
        let _ =
            tokio::time::timeout(CLOSE_HANDSHAKE, async { while let Some(Ok(_)) = self.socket.recv().await {} }).await;
    }
}

/// `errors`, each with an `extensions.code`: its own, or `default` when it has none. Request errors
/// (the document or variables refused) default to `BAD_USER_INPUT`; any other error without a code
/// is something the server did not foresee, hence `INTERNAL`.
fn coded_errors(errors: &[async_graphql::ServerError], default: Code) -> Value {
    // The same codes as over HTTP: `default` says whether these are the request's own errors.
    let mut errors = errors.to_vec();
    crate::error::fill_codes(&mut errors, default == Code::BadUserInput);
    serde_json::to_value(&errors).unwrap_or_else(|_| json!([{ "message": "internal error" }]))
}

/// Registers a person's connection to be closed when their session ends or their account changes;
/// `None` for an agent's, or for a token that names no user.
fn follow(services: &Services, caller: &Caller, session: Option<&Live>) -> Option<Followed> {
    let user = caller.user?;
    let watched = Watched { user, session: session.map(|live| live.ticket.session), role: caller.role };
    let (registration, closed) = services.sockets.register(watched);
    let expires = session.map(|live| {
        let left = (live.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
        Instant::now() + left
    });
    Some(Followed { _registration: registration, closed: Some(closed), expires })
}

/// How the server is to close a followed connection: as it is told, or when its session expires;
/// never for a connection not followed.
async fn ended(followed: &mut Option<Followed>) -> Close {
    let Some(followed) = followed else { return std::future::pending().await };
    let expires = followed.expires;
    let expired = async move {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let told = async {
        if let Some(closed) = followed.closed.as_mut() {
            if let Ok(close) = closed.await {
                return close;
            }
            // The registry let go of it without a word: nothing more will come.
            followed.closed = None;
        }
        std::future::pending().await
    };
    tokio::select! {
        () = expired => Close::SessionEnded("the session has expired"),
        close = told => close,
    }
}

/// The next keep-alive tick, or never when there is no keep-alive (yet).
async fn tick(ping: &mut Option<Interval>) {
    match ping {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A socket error: a message over the size limit is answered with 1009; otherwise the socket is
/// gone and there is nobody to tell.
fn broken(error: &axum::Error) -> Ended {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(tungstenite::Error::Capacity(_)) = cause.downcast_ref::<tungstenite::Error>() {
            return Ended::Server(Close::MessageTooBig);
        }
        source = cause.source();
    }
    tracing::debug!(%error, "websocket: connection lost");
    Ended::Client
}

#[cfg(test)]
mod tests;
