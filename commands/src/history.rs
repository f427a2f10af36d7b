//! Time travel: any aggregate as it stood at a position or a moment, and each event of a stream
//! with the change it made.

use chrono::{DateTime, Utc};
use devart_domain::agent::Agent;
use devart_domain::document::Document;
use devart_domain::service::Service;
use devart_domain::settings::Settings;
use devart_domain::task::Task;
use devart_domain::user::User;
use devart_domain::workflow::{Workflow, WorkflowRun};
use devart_domain::{Aggregate, Position, StreamId};
use serde::Serialize;
use uuid::Uuid;

use crate::entry::Commands;
use crate::store::{fold, Folded, Recorded, StoreError, Stored};

/// A point in the history: a global position, or a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Every event up to and including this position.
    Position(Position),
    /// Every event that occurred at or before this moment.
    Time(DateTime<Utc>),
}

impl At {
    /// `1234` (a position) or an RFC 3339 time such as `2026-11-24T16:00:00Z`.
    pub fn parse(s: &str) -> Result<At, String> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(At::Position);
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| At::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("`{s}` is neither a position nor an RFC 3339 time"))
    }

    fn includes(&self, recorded: &Recorded) -> bool {
        match self {
            // An event not sequenced yet is not at any position so far.
            At::Position(p) => recorded.meta.position.is_some_and(|q| q <= *p),
            At::Time(t) => recorded.meta.occurred_at <= *t,
        }
    }
}

impl Commands {
    /// Aggregate `id` folded from its stream up to `at`; version 0 when it did not exist yet.
    pub async fn load_at<A: Stored>(&self, id: Uuid, at: At) -> Result<Folded<A::State>, StoreError> {
        let events = self.store().read_stream(&StreamId::new(A::KIND, id), None).await?;
        let upto: Vec<Recorded> = events.into_iter().take_while(|r| at.includes(r)).collect();
        Ok(fold::<A>(&upto))
    }

    /// Each event of a stream with what it changed: `{field: {from, to}}` over the aggregate's
    /// state (fields in camelCase), oldest first.
    pub async fn history(&self, stream_id: &StreamId) -> Result<Vec<(Recorded, serde_json::Value)>, StoreError> {
        let events = self.store().read_stream(stream_id, None).await?;
        let changes = match stream_id.kind() {
            k if k == Task::KIND => changes::<Task>(&events),
            k if k == Agent::KIND => changes::<Agent>(&events),
            k if k == Service::KIND => changes::<Service>(&events),
            k if k == Workflow::KIND => changes::<Workflow>(&events),
            k if k == WorkflowRun::KIND => changes::<WorkflowRun>(&events),
            k if k == Settings::KIND => changes::<Settings>(&events),
            k if k == User::KIND => changes::<User>(&events),
            k if k == Document::KIND => changes::<Document>(&events),
            _ => vec![serde_json::Value::Null; events.len()],
        };
        Ok(events.into_iter().zip(changes).collect())
    }
}

fn changes<A: Stored>(events: &[Recorded]) -> Vec<serde_json::Value>
where
    A::State: Serialize,
{
    let mut state = A::State::default();
    let mut before = to_json(&state);
    events
        .iter()
        .map(|recorded| {
            if let Some(event) = A::unwrap(&recorded.event) {
                state = A::evolve(std::mem::take(&mut state), event);
            }
            let after = to_json(&state);
            let diff = diff(&before, &after);
            before = after;
            diff
        })
        .collect()
}

fn to_json<S: Serialize>(state: &S) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(k, v)| (camel_case(&k), v)).collect(),
        _ => serde_json::Map::new(),
    }
}

fn diff(
    before: &serde_json::Map<String, serde_json::Value>,
    after: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let null = serde_json::Value::Null;
    after
        .iter()
        .filter(|(k, v)| before.get(*k).unwrap_or(&null) != *v)
        .map(|(k, v)| (k.clone(), serde_json::json!({ "from": before.get(k).unwrap_or(&null), "to": v })))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_a_position_or_a_time() {
        assert_eq!(At::parse("42"), Ok(At::Position(Position(42))));
        assert!(matches!(At::parse("2026-11-24T16:00:00Z"), Ok(At::Time(_))));
        assert!(At::parse("yesterday").is_err());
        assert!(At::parse("-1").is_err());
    }

    #[test]
    fn a_diff_names_the_fields_that_changed() {
        let before = to_json(&serde_json::json!({ "status": "PENDING", "max_attempts": 3 }));
        let after = to_json(&serde_json::json!({ "status": "IN_PROGRESS", "max_attempts": 3 }));
        assert_eq!(diff(&before, &after), serde_json::json!({ "status": { "from": "PENDING", "to": "IN_PROGRESS" } }));
        assert!(before.contains_key("maxAttempts"));
    }
}
