//! The task board: one row per task that exists, as its events leave it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::task::{Task, TaskState, TaskStatus};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{rows_by_id, HasId, Projection, Target};

/// A row of `tasks`, and the payload of a `taskUpdates` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TaskRow {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    /// `PENDING`, …, or `DELETED` in a notification about a deleted task (never stored).
    pub status: String,
    pub priority: i16,
    pub required_capabilities: Vec<String>,
    pub parent_task_id: Option<Uuid>,
    pub version: i64,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: String,
}

impl TaskRow {
    fn state(&self) -> TaskState {
        TaskState {
            id: self.id,
            status: TaskStatus::parse(&self.status).unwrap_or(TaskStatus::Pending),
            title: self.title.clone(),
            description: self.description.clone(),
            priority: self.priority as u8,
            required_capabilities: self.required_capabilities.clone(),
            parent_task_id: self.parent_task_id,
        }
    }

    fn set_state(&mut self, state: TaskState) {
        self.status = state.status.as_str().to_owned();
        self.title = state.title;
        self.description = state.description;
        self.priority = i16::from(state.priority);
        self.required_capabilities = state.required_capabilities;
        self.parent_task_id = state.parent_task_id;
    }
}

impl HasId for TaskRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, title, description, status, priority, required_capabilities, parent_task_id, \
                           version, position, created_at, updated_at, created_by";

pub struct TasksProjection;

impl Projection for TasksProjection {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, sqlx::Error>> {
        apply(conn, target.table("tasks"), events).boxed()
    }
}

/// Folds a batch in memory over the rows it touches, then writes each changed row once.
async fn apply(
    conn: &mut PgConnection,
    table: String,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let ids: Vec<Uuid> = events.iter().filter_map(task_id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: HashMap<Uuid, TaskRow> = rows_by_id(conn, &table, COLUMNS, &ids).await?;
    // In first-change order, for notifications; `seen` keeps the check O(1) per event.
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for recorded in events {
        let (Some(id), Event::Task(event)) = (task_id(recorded), &recorded.event) else {
            continue;
        };
        let meta = &recorded.meta;
        let row = rows.entry(id).or_insert_with(|| TaskRow {
            id,
            title: String::new(),
            description: String::new(),
            status: TaskStatus::Absent.as_str().to_owned(),
            priority: 0,
            required_capabilities: Vec::new(),
            parent_task_id: None,
            version: 0,
            position: 0,
            created_at: meta.occurred_at,
            updated_at: meta.occurred_at,
            created_by: meta.actor.to_string(),
        });
        let state = Task::evolve(row.state(), event);
        row.set_state(state);
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        if seen.insert(id) {
            changed.push(id);
        }
    }
    let (deleted, live): (Vec<&TaskRow>, Vec<&TaskRow>) =
        changed.iter().map(|id| &rows[id]).partition(|r| r.status == TaskStatus::Deleted.as_str());
    if !deleted.is_empty() {
        let ids: Vec<Uuid> = deleted.iter().map(|r| r.id).collect();
        sqlx::query(&format!("delete from {table} where id = any($1)")).bind(&ids).execute(&mut *conn).await?;
    }
    if !live.is_empty() {
        upsert(conn, &table, &live).await?;
    }
    Ok(changed.iter().map(|id| serde_json::to_value(&rows[id]).expect("rows serialize")).collect())
}

async fn upsert(conn: &mut PgConnection, table: &str, rows: &[&TaskRow]) -> Result<(), sqlx::Error> {
    // Capabilities travel as one text per row (unnest cannot take a ragged text[][]).
    let caps: Vec<String> =
        rows.iter().map(|r| serde_json::to_string(&r.required_capabilities).expect("json")).collect();
    sqlx::query(&format!(
        "insert into {table} ({COLUMNS}) \
         select id, title, description, status, priority, \
                array(select jsonb_array_elements_text(caps::jsonb)), parent, version, position, created_at, \
                updated_at, created_by \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::uuid[], \
                     $8::bigint[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::text[]) \
              as r(id, title, description, status, priority, caps, parent, version, position, created_at, \
                   updated_at, created_by) \
         on conflict (id) do update set title = excluded.title, description = excluded.description, \
             status = excluded.status, priority = excluded.priority, \
             required_capabilities = excluded.required_capabilities, parent_task_id = excluded.parent_task_id, \
             version = excluded.version, position = excluded.position, updated_at = excluded.updated_at"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.title.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.description.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.priority).collect::<Vec<_>>())
    .bind(&caps)
    .bind(rows.iter().map(|r| r.parent_task_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_by.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

fn task_id(recorded: &Recorded) -> Option<Uuid> {
    recorded.meta.stream_id.id_of(Task::KIND)
}
