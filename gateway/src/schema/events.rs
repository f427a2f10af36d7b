//! The event feed: the audit trail page by page, the same live, and how far each read model has
//! come along it.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, Json, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use devart_commands::store::EventFilter;
use devart_commands::Recorded;
use devart_domain::{ActorKind as DomainActorKind, Position, StreamId};
use futures::{Stream, StreamExt};

use super::{page_size, parse_id, parse_position, person, services};
use crate::error::{bad_input, gql, internal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ActorKind {
    User,
    Agent,
    System,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

/// One stored event, as the audit trail shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct Event {
    /// The event id (UUIDv7).
    pub id: ID,
    /// The place in the global order, as a decimal string.
    pub position: String,
    pub stream_id: String,
    /// The place in its stream: 1, 2, 3, …
    pub version: i64,
    #[graphql(name = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: ID,
    pub causation_id: Option<ID>,
    /// The payload in its newest schema version.
    pub data: Json<serde_json::Value>,
}

impl From<Recorded> for Event {
    fn from(r: Recorded) -> Self {
        let m = r.meta;
        Event {
            id: ID(m.event_id.to_string()),
            position: m.position.map(|p| p.to_string()).unwrap_or_default(),
            stream_id: m.stream_id.to_string(),
            version: m.stream_version as i64,
            event_type: m.event_type,
            schema_version: i32::from(m.schema_version),
            occurred_at: m.occurred_at,
            actor: Actor {
                kind: match m.actor.kind {
                    DomainActorKind::User => ActorKind::User,
                    DomainActorKind::Agent => ActorKind::Agent,
                    DomainActorKind::System => ActorKind::System,
                },
                id: m.actor.id,
            },
            correlation_id: ID(m.correlation_id.to_string()),
            causation_id: m.causation_id.map(|c| ID(c.to_string())),
            data: Json(devart_commands::codec::to_json(&r.event)),
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: String,
    pub head: String,
    pub lag: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// The audit trail: every event in global order, optionally of one stream, of some types, or
    /// of one correlation.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "a position: events after it")] after: Option<String>,
        first: Option<i32>,
        stream_id: Option<String>,
        types: Option<Vec<String>>,
        correlation_id: Option<ID>,
    ) -> async_graphql::Result<Connection<String, Event, EmptyFields, EmptyFields>> {
        person(ctx)?;
        let limit = page_size(first)?;
        let after_position = after.as_deref().map(|a| parse_position("after", a)).transpose()?;
        let filter = EventFilter {
            stream_id: stream_id.map(|s| StreamId::parse(&s).map_err(|m| bad_input("streamId", m))).transpose()?,
            types,
            correlation_id: correlation_id.map(|c| parse_id("correlationId", &c)).transpose()?,
        };
        let mut page = services(ctx)
            .store
            .page(after_position.unwrap_or(Position::START), limit + 1, &filter)
            .await
            .map_err(gql)?;
        let has_next = page.len() > limit;
        page.truncate(limit);
        let mut connection = Connection::new(after_position.is_some_and(|p| p > Position::START), has_next);
        connection.edges.extend(page.into_iter().map(|r| {
            let cursor = r.meta.position.map(|p| p.to_string()).unwrap_or_default();
            Edge::new(cursor, Event::from(r))
        }));
        Ok(connection)
    }
}

/// The read models' progress: apart from the feed only so that the schema keeps its order of
/// fields (after `agents`).
#[derive(Default)]
pub struct ProjectionsQuery;

#[Object]
impl ProjectionsQuery {
    /// Each projection's checkpoint and lag behind the event store.
    async fn projections(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProjectionStatus>> {
        person(ctx)?;
        let status = devart_projections::status::status(&services(ctx).pool).await.map_err(gql)?;
        Ok(status
            .into_iter()
            .map(|s| ProjectionStatus {
                name: s.name,
                checkpoint: s.checkpoint.to_string(),
                head: s.head.to_string(),
                lag: s.lag as i64,
                updated_at: s.updated_at,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct EventsSubscription;

#[Subscription]
impl EventsSubscription {
    /// Every event after `after` (a position; by default, from now on): first those already
    /// stored, then live, with no gap and no repeat between the two.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        types: Option<Vec<String>>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        person(ctx)?;
        let s = services(ctx).clone();
        let after = match after {
            Some(a) => parse_position("after", &a)?,
            None => s.store.head().await.map_err(gql)?,
        };
        let feed = devart_commands::feed::follow(s.store.clone(), s.bus.clone(), after);
        Ok(feed.filter_map(move |item| {
            let keep = match &item {
                Ok(r) => types.as_ref().is_none_or(|t| t.contains(&r.meta.event_type)),
                Err(_) => true,
            };
            futures::future::ready(keep.then(|| item.map(Event::from).map_err(internal)))
        }))
    }
}
