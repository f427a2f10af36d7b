//! Test environments: a database, a bus prefix, and optionally a running devart.

pub mod guarantees;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use devart::{Config, Role};
use devart_commands::{Bus, CommandContext, Commands, EventStore, Nudge};
use devart_domain::Actor;
use serde_json::{json, Value};
use sqlx::{Connection, PgPool};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const NATS_URL: &str = "nats://127.0.0.1:4222";

fn server_url() -> String {
    std::env::var("DEVART_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn nats_url() -> String {
    std::env::var("DEVART_TEST_NATS").unwrap_or_else(|_| NATS_URL.into())
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A migrated template database, made once per migration set and reused by every test.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let digest = devart_commands::db::MIGRATOR
                .iter()
                .fold(0u64, |h, m| m.checksum.iter().fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)));
            let name = format!("devart_template_{digest:016x}");
            let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url())).await.unwrap();
            // Test binaries may race to make it: one builds, the others wait.
            sqlx::query("select pg_advisory_lock(4242)").execute(&mut admin).await.unwrap();
            let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            if !exists {
                let building = format!("{name}_building");
                sqlx::query(&format!("drop database if exists {building} with (force)"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::query(&format!("create database {building}")).execute(&mut admin).await.unwrap();
                let pool = devart_commands::db::connect(&format!("{}/{building}", server_url()), 2).await.unwrap();
                devart_commands::db::migrate(&pool).await.unwrap();
                pool.close().await;
                sqlx::query(&format!("alter database {building} rename to {name}")).execute(&mut admin).await.unwrap();
            }
            sqlx::query("select pg_advisory_unlock(4242)").execute(&mut admin).await.unwrap();
            name
        })
        .await
}

/// A fresh database and bus prefix; dropped by [`TestEnv::cleanup`].
pub struct TestEnv {
    pub config: Config,
    pub pool: PgPool,
    pub store: EventStore,
    pub bus: Bus,
    db_name: String,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let template = template().await;
        let id = Uuid::new_v4().simple().to_string();
        let db_name = format!("devart_t_{}", &id[..16]);
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url())).await.unwrap();
        let mut attempt = 0;
        loop {
            match sqlx::query(&format!("create database {db_name} template {template}")).execute(&mut admin).await {
                Ok(_) => break,
                // "source database is being accessed by other users": another clone is in progress.
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        let database_url = format!("{}/{db_name}", server_url());
        let prefix = format!("t{}", &id[..12]);
        let config = Config {
            database_url: database_url.clone(),
            nats_url: nats_url(),
            nats_prefix: prefix,
            jwt_secret: Some(devart::Secret("test-secret-test-secret-test-secret!".into())),
            db_connections: 16,
            limits: devart_gateway::Limits::default(),
            alerts: devart::alerts::AlertConfig::default(),
        };
        let pool = config.pool().await.unwrap();
        let bus = config.bus().await.unwrap();
        bus.ensure_stream().await.unwrap();
        TestEnv { store: EventStore::new(pool.clone()), config, pool, bus, db_name }
    }

    pub fn commands(&self) -> Commands {
        Commands::new(self.store.clone(), Nudge::default(), None)
    }

    pub fn context(&self) -> CommandContext {
        CommandContext::new(Actor::user("tester"))
    }

    /// Starts devart with `roles` in this process; the gateway on a free port.
    pub async fn start(&self, roles: &[Role]) -> Running {
        self.start_with(&self.config, roles).await
    }

    /// [`TestEnv::start`] with settings of the test's choosing (same database and bus).
    pub async fn start_with(&self, config: &Config, roles: &[Role]) -> Running {
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = config.clone();
        let roles_have_gateway = roles.contains(&Role::Gateway);
        let roles = roles.to_vec();
        let stop = shutdown.clone();
        let handle = tokio::spawn(async move { devart::run(&config, &roles, Some(listener), stop).await.unwrap() });
        let token =
            if self.config.jwt_secret.is_some() { self.token(devart_gateway::Role::Admin) } else { String::new() };
        let running = Running { addr, shutdown, handle: Some(handle), token };
        if roles_have_gateway {
            running.wait_healthy().await;
        }
        running
    }

    pub fn token(&self, role: devart_gateway::Role) -> String {
        let key = devart_gateway::SigningKey::new(self.config.jwt_secret.clone().unwrap().0.into_bytes());
        key.issue(&format!("{role:?}").to_lowercase(), role, chrono::Duration::hours(1))
    }

    /// A checksum of a table's rows in a stable order.
    pub async fn checksum(&self, table: &str) -> String {
        sqlx::query_scalar(&format!(
            "select coalesce(md5(string_agg(t::text, '|' order by t::text)), 'empty') from {table} t"
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until projection `name` has applied everything sequenced.
    pub async fn wait_projected(&self, name: &str, head: u64) {
        eventually(Duration::from_secs(20), || async {
            let checkpoint: i64 = sqlx::query_scalar("select position from projection_checkpoints where name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .ok()?;
            (checkpoint as u64 >= head).then_some(())
        })
        .await;
    }

    /// Runs the sequencer until everything committed so far has a position.
    pub async fn sequence_all(&self) {
        while self.store.sequence(10_000).await.unwrap().is_some() {}
    }

    pub async fn cleanup(self) {
        self.pool.close().await;
        let _ = self.bus.jetstream.delete_stream(self.bus.names.stream()).await;
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url())).await.unwrap();
        let _ =
            sqlx::query(&format!("drop database if exists {} with (force)", self.db_name)).execute(&mut admin).await;
    }
}

/// devart running inside the test process.
pub struct Running {
    pub addr: SocketAddr,
    pub token: String,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if reqwest::get(self.url("/healthz")).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("devart did not become healthy");
    }

    /// Posts a GraphQL request with the admin token; returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_as(&self.token, query, variables).await
    }

    pub async fn graphql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        self.post_graphql(Some(token), query, variables).await
    }

    /// Posts a GraphQL request with no token (only signing in is open so).
    pub async fn graphql_anonymous(&self, query: &str, variables: Value) -> Value {
        self.post_graphql(None, query, variables).await
    }

    async fn post_graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = reqwest::Client::new().post(self.url("/graphql"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.json(&json!({ "query": query, "variables": variables })).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap();
        }
    }

    /// Kills devart as a crash would: its tasks are dropped wherever they are, nothing is finished.
    pub async fn abort(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            assert!(handle.await.unwrap_err().is_cancelled());
        }
    }
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message in the test's stream, as (stream sequence, headers, payload).
pub async fn stream_messages(bus: &Bus) -> Vec<(u64, async_nats::HeaderMap, bytes::Bytes)> {
    let stream = bus.jetstream.get_stream(bus.names.stream()).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.sequence, m.headers, m.payload));
        }
    }
    out
}

/// A `graphql-transport-ws` client over a real WebSocket.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl WsClient {
    pub async fn connect(running: &Running, token: &str) -> WsClient {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let mut request = format!("ws://{}/graphql", running.addr).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        socket.send(Message::text(init.to_string())).await.unwrap();
        let ack = socket.next().await.unwrap().unwrap();
        let ack: Value = serde_json::from_str(ack.to_text().unwrap()).unwrap();
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        WsClient { socket }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        use futures::SinkExt;
        let message = json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } });
        self.socket.send(tokio_tungstenite::tungstenite::Message::text(message.to_string())).await.unwrap();
    }

    /// The next `next` payload's data, skipping pings; panics after `timeout`.
    pub async fn next_data(&mut self, timeout: Duration) -> Value {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.socket.next()).await.expect("no subscription data in time");
            let message = message.unwrap().unwrap();
            let Message::Text(text) = message else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            match value["type"].as_str() {
                Some("next") => return value["payload"]["data"].clone(),
                Some("ping") => self.socket.send(Message::text(json!({"type": "pong"}).to_string())).await.unwrap(),
                _ => panic!("unexpected message {value}"),
            }
        }
    }
}
