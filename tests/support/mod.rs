//! Test environments: a database, a bus prefix, and optionally a running devart.
//!
//! The environments themselves come from `devart-testkit`, which the benchmark shares; here they
//! take the form the tests use: a failure to set one up is the test's panic, not a `Result`.

pub mod cluster;
pub mod guarantees;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use devart::{Config, Role};
use devart_commands::{Bus, CommandContext, Commands, Nudge};
use devart_domain::agent::AgentName;
use devart_domain::money::Money;
use devart_domain::service::{Currency, RegisterService, ServiceName};
use devart_domain::task::Capabilities;
use devart_domain::Actor;
use devart_testkit::{Server, Stack, StackOptions};
use serde_json::Value;
use uuid::Uuid;

/// A fresh database and bus prefix ([`Stack`]: `config`, `pool`, `store`, `bus`); dropped by
/// [`TestEnv::cleanup`].
pub struct TestEnv {
    stack: Stack,
}

impl Deref for TestEnv {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

/// A test may change the settings devart is started with (`env.config.jwt_secret = None`).
impl DerefMut for TestEnv {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv { stack: Stack::create(StackOptions::for_tests()).await.expect("a test database and bus prefix") }
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
        let server = Server::start(config, roles).await.expect("devart starts");
        Running { addr: server.addr(), token: server.token().unwrap_or_default().to_owned(), server }
    }

    pub fn token(&self, role: devart_gateway::Role) -> String {
        devart_testkit::token(&self.config, role).expect("a token")
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

    /// Sequences everything, then counts the events placed in the global order before an earlier
    /// version of their own stream: none, if the order the sequencer gives is every stream's.
    pub async fn out_of_stream_order(&self) -> i64 {
        self.sequence_all().await;
        sqlx::query_scalar(
            "select count(*) from (select position, lag(position) over (partition by stream_id order by stream_version) \
                                    as before from events) e where e.before > e.position",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    pub async fn cleanup(self) {
        // Best effort, as a test's clean-up should be: a leftover database fails no test.
        let _ = self.stack.remove().await;
    }
}

/// devart running inside the test process.
pub struct Running {
    pub addr: SocketAddr,
    /// An administrator's token (empty when the settings have no JWT secret).
    pub token: String,
    server: Server,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Posts a GraphQL request with the admin token; returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.server.client().post(query, variables).await.expect("a GraphQL response")
    }

    pub async fn graphql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        self.server.client().with_token(token).post(query, variables).await.expect("a GraphQL response")
    }

    /// Posts a GraphQL request with no token (only signing in is open so).
    pub async fn graphql_anonymous(&self, query: &str, variables: Value) -> Value {
        self.server.client().anonymous().post(query, variables).await.expect("a GraphQL response")
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("devart stops cleanly");
    }

    /// Kills devart as a crash would: its tasks are dropped wherever they are, nothing is finished.
    pub async fn abort(self) {
        self.server.abort().await.expect("devart was running until aborted");
    }
}

/// Registers a service named `name` with a monthly budget of `budget` (and a fallback) through the
/// command layer, as an admin; its id.
pub async fn register_service(commands: &Commands, name: &str, budget: &str, fallback: Option<Uuid>) -> Uuid {
    let id = Uuid::now_v7();
    let service = RegisterService {
        id,
        name: ServiceName::parse(name).unwrap(),
        currency: Currency::usd(),
        monthly_budget: Money::parse("budget", budget).unwrap(),
        fallback_service_id: fallback,
        unit_prices: Default::default(),
    };
    commands.services().register(service, &CommandContext::new(Actor::user("admin"))).await.unwrap();
    id
}

/// Registers an agent named `name` with `capabilities` through the command layer, as an admin;
/// its id (its key is not needed where the commands are called directly).
pub async fn register_agent(commands: &Commands, name: &str, capabilities: &[&str]) -> Uuid {
    let (folded, _key) = commands
        .agents()
        .register(
            AgentName::parse(name).unwrap(),
            Capabilities::parse(capabilities).unwrap(),
            &CommandContext::new(Actor::user("admin")),
        )
        .await
        .unwrap();
    folded.state.id
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
    subscriptions: devart_testkit::Subscriptions,
}

impl WsClient {
    pub async fn connect(running: &Running, token: &str) -> WsClient {
        let subscriptions =
            devart_testkit::Subscriptions::connect(running.addr, token).await.expect("an acknowledged WebSocket");
        WsClient { subscriptions }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.subscriptions.subscribe(id, query, variables).await.expect("subscribed");
    }

    /// The next `next` payload's data, skipping pings; panics after `timeout`.
    pub async fn next_data(&mut self, timeout: Duration) -> Value {
        self.subscriptions.next_data_within(timeout).await.expect("subscription data in time")
    }
}
