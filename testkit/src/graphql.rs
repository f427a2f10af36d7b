//! GraphQL as devart's clients speak it: requests over HTTP with a bearer token, and subscriptions
//! over a WebSocket in the `graphql-transport-ws` protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Error;

/// A request not answered by then has failed: long enough for a loaded machine, short enough
/// that a hung gateway fails a test instead of stalling it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the gateway may take to acknowledge a WebSocket's `connection_init`.
const ACK_WITHIN: Duration = Duration::from_secs(10);
const PROTOCOL: &str = "graphql-transport-ws";

/// GraphQL over HTTP to one endpoint, as one caller (a bearer token, or none). Cheap to clone into
/// each request's task; clones, and clients made with [`Client::with_token`], share their
/// keep-alive connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Arc<str>,
    token: Option<Arc<str>>,
}

impl Client {
    /// An anonymous client of the GraphQL endpoint at `url`.
    pub fn new(url: &str, timeout: Duration) -> Result<Client, Error> {
        Ok(Client { http: reqwest::Client::builder().timeout(timeout).build()?, url: url.into(), token: None })
    }

    /// The same endpoint, called with `token` (a JWT, or an agent's API key) as the bearer.
    pub fn with_token(&self, token: &str) -> Client {
        Client { token: Some(token.into()), ..self.clone() }
    }

    /// The same endpoint, called with no token (only signing in is open so).
    pub fn anonymous(&self) -> Client {
        Client { token: None, ..self.clone() }
    }

    /// The HTTP client underneath, for requests other than GraphQL (health, metrics).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Posts a request; returns the whole response body, `errors` included, whatever the status
    /// (a refusal, such as 429, is a GraphQL response too).
    pub async fn post(&self, query: &str, variables: Value) -> Result<Value, Error> {
        let mut request = self.http.post(&*self.url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let body = request.json(&json!({ "query": query, "variables": variables })).send().await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|_| Error::NotJson(String::from_utf8_lossy(&body).into_owned()))
    }

    /// Posts a request; returns its `data`, or its `errors` as [`Error::Graphql`].
    pub async fn data(&self, query: &str, variables: Value) -> Result<Value, Error> {
        let mut response = self.post(query, variables).await?;
        match response.get_mut("errors") {
            Some(errors) => Err(Error::Graphql(errors.take())),
            None => Ok(response["data"].take()),
        }
    }
}

/// One `graphql-transport-ws` connection, initialized with a bearer token; any number of
/// subscriptions over it.
pub struct Subscriptions {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Subscriptions {
    /// Connects to the gateway at `addr`, and waits for it to acknowledge `token`.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Subscriptions, Error> {
        let mut request = format!("ws://{addr}/graphql").into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await?;
        let agreed = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
        if agreed != Some(PROTOCOL) {
            return Err(Error::Protocol(format!("the gateway agreed to {agreed:?}, not {PROTOCOL}")));
        }
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        socket.send(Message::text(init.to_string())).await?;
        let ack = tokio::time::timeout(ACK_WITHIN, socket.next())
            .await
            .map_err(|_| Error::Timeout { what: "no connection_ack", after: ACK_WITHIN })?
            .ok_or_else(|| Error::Protocol("the gateway closed the WebSocket before acknowledging it".into()))??;
        let ack: Value = serde_json::from_str(ack.to_text()?)
            .map_err(|_| Error::Protocol(format!("an acknowledgment that is not JSON: {ack}")))?;
        if ack["type"] != "connection_ack" {
            return Err(Error::Protocol(format!("the gateway refused the connection: {ack}")));
        }
        Ok(Subscriptions { socket })
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) -> Result<(), Error> {
        let message = json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } });
        self.socket.send(Message::text(message.to_string())).await?;
        Ok(())
    }

    /// The data of the next `next` message (of any subscription), answering pings on the way;
    /// anything else the gateway sends (an `error`, a `complete`) is an [`Error::Protocol`].
    /// Dropped while it waits, it loses no message (at worst, a ping goes unanswered).
    pub async fn next_data(&mut self) -> Result<Value, Error> {
        loop {
            let message = self
                .socket
                .next()
                .await
                .ok_or_else(|| Error::Protocol("the gateway closed the WebSocket".into()))??;
            let Message::Text(text) = message else { continue };
            let mut value: Value = serde_json::from_str(&text)
                .map_err(|_| Error::Protocol(format!("a message that is not JSON: {text}")))?;
            match value["type"].as_str() {
                Some("next") => return Ok(value["payload"]["data"].take()),
                Some("ping") => self.socket.send(Message::text(json!({ "type": "pong" }).to_string())).await?,
                Some("pong") => {}
                _ => return Err(Error::Protocol(format!("unexpected message {value}"))),
            }
        }
    }

    /// [`Subscriptions::next_data`], for at most `timeout`.
    pub async fn next_data_within(&mut self, timeout: Duration) -> Result<Value, Error> {
        tokio::time::timeout(timeout, self.next_data())
            .await
            .map_err(|_| Error::Timeout { what: "no subscription data", after: timeout })?
    }
}
