//! `/metrics`: Prometheus text. Counters live here; positions and lags are read at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    pub projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

/// A knowledge-base search's mode (`keyword`, `semantic`, `hybrid`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SearchModeLabel {
    pub mode: String,
}

/// A WebSocket close frame's code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabel {
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    /// Requests answered 429, by the limit that held them back.
    pub rate_limited: Family<LimitLabel, Counter>,
    /// Requests answered 503 because a dependency (Postgres, hashing) failed.
    pub unavailable: Counter,
    pub graphql_requests: Counter,
    pub graphql_errors: Family<OutcomeLabel, Counter>,
    /// WebSocket connections open now.
    pub websocket_connections: Gauge,
    /// WebSocket connections the server closed, by close code.
    pub websocket_closes: Family<CloseLabel, Counter>,
    /// `searchKnowledge` requests, by mode, answered or not.
    pub knowledge_searches: Family<SearchModeLabel, Counter>,
    projection_lag: Family<ProjectionLabel, Gauge>,
    projection_checkpoint: Family<ProjectionLabel, Gauge>,
    store_head: Gauge,
    relay_published: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("devart");
        let m = Metrics {
            graphql_requests: Counter::default(),
            rate_limited: Family::default(),
            unavailable: Counter::default(),
            graphql_errors: Family::default(),
            websocket_connections: Gauge::default(),
            websocket_closes: Family::default(),
            knowledge_searches: Family::default(),
            projection_lag: Family::default(),
            projection_checkpoint: Family::default(),
            store_head: Gauge::default(),
            relay_published: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("graphql_requests", "GraphQL operations executed", m.graphql_requests.clone());
        registry.register("graphql_errors", "GraphQL errors returned, by code", m.graphql_errors.clone());
        registry.register("websocket_connections", "WebSocket connections open", m.websocket_connections.clone());
        registry.register(
            "websocket_closes",
            "WebSocket connections closed by the server, by close code",
            m.websocket_closes.clone(),
        );
        registry.register(
            "knowledge_searches",
            "Knowledge-base searches asked for, by mode",
            m.knowledge_searches.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests held back before any work, by limit (address, identity, mutations, auth_failures, account_failures)",
            m.rate_limited.clone(),
        );
        registry.register("unavailable", "Requests answered 503 because a dependency failed", m.unavailable.clone());
        registry.register(
            "projection_lag",
            "Events stored but not yet applied, by projection",
            m.projection_lag.clone(),
        );
        registry.register(
            "projection_checkpoint",
            "Last position applied, by projection",
            m.projection_checkpoint.clone(),
        );
        registry.register("event_store_head", "Last position assigned in the event store", m.store_head.clone());
        registry.register(
            "relay_published_position",
            "Last position published to JetStream",
            m.relay_published.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Reads the positions, then renders everything.
    pub async fn render(&self, pool: &PgPool) -> Result<String, sqlx::Error> {
        for s in devart_projections::status::status(pool).await? {
            let label = ProjectionLabel { projection: s.name };
            self.projection_lag.get_or_create(&label).set(s.lag as i64);
            self.projection_checkpoint.get_or_create(&label).set(s.checkpoint.0 as i64);
            self.store_head.set(s.head.0 as i64);
        }
        let published: Option<i64> =
            sqlx::query_scalar("select position from relay_checkpoints where name = 'publisher'")
                .fetch_optional(pool)
                .await?;
        self.relay_published.set(published.unwrap_or(0));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        Ok(out)
    }
}
