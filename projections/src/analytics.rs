//! Analytics: the facts behind cost, throughput and queue charts, and the costs the cost-outlier
//! detector ([`crate::outliers`]) compares.
//!
//! - `analytics_tasks`: one row per task: when it was created, first claimed and ended, the agent
//!   of its last attempt, its comparison group, its cost (every `UsageCharged` naming it) and its
//!   last cost-outlier flag.
//! - `analytics_charges`: one row per settled charge; `analytics_costs_hourly`: cost per hour and
//!   service.
//! - `analytics_queue_hourly`: how many tasks were pending and in progress, per hour in which that
//!   changed.
//! - `analytics_services`, `analytics_workflow_runs`: names for legends and stage groups.
//!
//! Everything is derived from the events alone (their times, never the clock), so a rebuild equals
//! the live tables row for row.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use devart_commands::Recorded;
use devart_domain::outliers::group;
use devart_domain::service::{Service, ServiceEvent};
use devart_domain::task::{Task, TaskEvent, TaskState, TaskStatus};
use devart_domain::workflow::{RunEvent, WorkflowRun};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::announce::Announced;
use crate::rows::rows_by_id;
use crate::{ApplyError, ColumnError, Projection, RowError, Target};

pub const TASKS: &str = "analytics_tasks";
pub const CHARGES: &str = "analytics_charges";
pub const COSTS_HOURLY: &str = "analytics_costs_hourly";
pub const QUEUE_HOURLY: &str = "analytics_queue_hourly";
pub const SERVICES: &str = "analytics_services";
pub const WORKFLOW_RUNS: &str = "analytics_workflow_runs";

/// A row of `analytics_tasks`; field names are its column names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TaskFacts {
    pub task_id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub first_claimed_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub agent_id: Option<Uuid>,
    pub attempts: i32,
    pub required_capabilities: Vec<String>,
    pub workflow_run_id: Option<Uuid>,
    pub stage_key: Option<String>,
    pub cost_group: String,
    /// Millionths.
    pub cost: i64,
    pub charges: i32,
    pub completed_position: Option<i64>,
    pub outlier_flagged_at: Option<DateTime<Utc>>,
    pub outlier_cost: Option<i64>,
    pub outlier_median: Option<i64>,
    pub outlier_mad: Option<f64>,
    pub outlier_z_score: Option<f64>,
    pub outlier_threshold: Option<f64>,
    pub outlier_comparable: Option<i32>,
    pub outlier_group: Option<String>,
    pub outlier_acknowledged_at: Option<DateTime<Utc>>,
    pub outlier_acknowledged_by: Option<String>,
    pub outlier_note: Option<String>,
    /// The task's cost when the flag was acknowledged.
    pub outlier_acknowledged_cost: Option<i64>,
}

/// The columns of `analytics_tasks`, in table order.
pub const TASK_COLUMNS: &[&str] = &[
    "task_id",
    "status",
    "created_at",
    "first_claimed_at",
    "completed_at",
    "failed_at",
    "cancelled_at",
    "agent_id",
    "attempts",
    "required_capabilities",
    "workflow_run_id",
    "stage_key",
    "cost_group",
    "cost",
    "charges",
    "completed_position",
    "outlier_flagged_at",
    "outlier_cost",
    "outlier_median",
    "outlier_mad",
    "outlier_z_score",
    "outlier_threshold",
    "outlier_comparable",
    "outlier_group",
    "outlier_acknowledged_at",
    "outlier_acknowledged_by",
    "outlier_note",
    "outlier_acknowledged_cost",
];

impl TaskFacts {
    fn status(&self) -> Result<TaskStatus, ColumnError> {
        TaskStatus::parse(&self.status)
            .ok_or_else(|| ColumnError::new("status", format!("`{}` is not a task status", self.status)))
    }
}

#[derive(Debug, Serialize)]
struct ChargeRow {
    charge_id: Uuid,
    occurred_at: DateTime<Utc>,
    service_id: Uuid,
    task_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    amount: i64,
    position: i64,
}

#[derive(Debug, Default, Serialize)]
struct HourlyCost {
    hour: DateTime<Utc>,
    service_id: Uuid,
    cost: i64,
    charges: i64,
}

#[derive(Debug, Serialize)]
struct QueueHour {
    hour: DateTime<Utc>,
    pending: i64,
    pending_max: i64,
    in_progress: i64,
    in_progress_max: i64,
    position: i64,
}

/// The read model's name.
const NAME: &str = "analytics";

/// What it announces: the facts of each task whose cost-outlier flag a batch raised or acknowledged.
pub const ANNOUNCED: Announced<TaskFacts> = Announced::new(NAME);

pub struct AnalyticsProjection;

impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TASKS, CHARGES, COSTS_HOURLY, QUEUE_HOURLY, SERVICES, WORKFLOW_RUNS]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        async move {
            let mut batch = Batch::load(conn, target, events).await?;
            for recorded in events {
                batch.apply(recorded)?;
            }
            // Charts ask for what they show; only a raised or acknowledged flag is announced.
            let flags = batch.flag_changes()?;
            batch.write(conn, target).await?;
            Ok(flags)
        }
        .boxed()
    }
}

/// A batch folded in memory over the rows it touches, then written once.
struct Batch {
    /// The physical name of `analytics_tasks`, for errors.
    tasks_table: String,
    tasks: HashMap<Uuid, TaskFacts>,
    changed: HashSet<Uuid>,
    /// Tasks whose cost-outlier flag was raised or acknowledged, in the order of their first such
    /// event.
    flagged: Vec<Uuid>,
    /// Workflow names of the runs the batch's stage tasks belong to.
    runs: HashMap<Uuid, String>,
    new_runs: Vec<(Uuid, String)>,
    services: BTreeMap<Uuid, String>,
    charges: Vec<ChargeRow>,
    costs: BTreeMap<(DateTime<Utc>, Uuid), HourlyCost>,
    /// Tasks pending and in progress after the last event applied.
    depth: (i64, i64),
    queue: BTreeMap<DateTime<Utc>, QueueHour>,
}

impl Batch {
    async fn load(conn: &mut PgConnection, target: Target, events: &[Recorded]) -> Result<Batch, ApplyError> {
        let mut ids: Vec<Uuid> = Vec::new();
        let mut run_ids: Vec<Uuid> = Vec::new();
        for recorded in events {
            match &recorded.event {
                Event::Task(event) => {
                    ids.extend(recorded.meta.stream_id.id_of(Task::KIND));
                    if let TaskEvent::Created { stage: Some(stage), .. } = event {
                        run_ids.push(stage.run_id);
                    }
                }
                Event::Service(ServiceEvent::UsageCharged { task_id: Some(task_id), .. }) => ids.push(*task_id),
                _ => {}
            }
        }
        ids.sort();
        ids.dedup();
        let tasks_table = target.table(TASKS);
        let tasks = rows_by_id::<TaskFacts>(conn, &tasks_table, "task_id", &TASK_COLUMNS.join(", "), &ids).await?;
        let runs: Vec<(Uuid, String)> = sqlx::query_as(&format!(
            "select run_id, workflow_name from {} where run_id = any($1)",
            target.table(WORKFLOW_RUNS)
        ))
        .bind(&run_ids)
        .fetch_all(&mut *conn)
        .await?;
        let depth: Option<(i64, i64)> = sqlx::query_as(&format!(
            "select pending, in_progress from {} order by position desc limit 1",
            target.table(QUEUE_HOURLY)
        ))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(Batch {
            tasks_table,
            tasks,
            changed: HashSet::new(),
            flagged: Vec::new(),
            runs: runs.into_iter().collect(),
            new_runs: Vec::new(),
            services: BTreeMap::new(),
            charges: Vec::new(),
            costs: BTreeMap::new(),
            depth: depth.unwrap_or_default(),
            queue: BTreeMap::new(),
        })
    }

    fn apply(&mut self, recorded: &Recorded) -> Result<(), RowError> {
        let meta = &recorded.meta;
        match &recorded.event {
            Event::Task(event) => {
                if let Some(id) = meta.stream_id.id_of(Task::KIND) {
                    self.task(id, event, recorded)?;
                }
            }
            Event::Service(event) => {
                if let Some(service_id) = meta.stream_id.id_of(Service::KIND) {
                    self.service(service_id, event, recorded);
                }
            }
            Event::WorkflowRun(RunEvent::Started { workflow_name, .. }) => {
                if let Some(run_id) = meta.stream_id.id_of(WorkflowRun::KIND) {
                    self.runs.insert(run_id, workflow_name.clone());
                    self.new_runs.push((run_id, workflow_name.clone()));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn task(&mut self, id: Uuid, event: &TaskEvent, recorded: &Recorded) -> Result<(), RowError> {
        let meta = &recorded.meta;
        let at = meta.occurred_at;
        if let TaskEvent::Created { required_capabilities, stage, .. } = event {
            let workflow = stage.as_ref().and_then(|s| self.runs.get(&s.run_id).map(|name| (name, &s.stage_key)));
            let cost_group = group(required_capabilities, workflow.map(|(name, key)| (name.as_str(), key.as_str())));
            self.tasks.insert(
                id,
                TaskFacts {
                    task_id: id,
                    status: TaskStatus::Absent.as_str().to_owned(),
                    created_at: at,
                    first_claimed_at: None,
                    completed_at: None,
                    failed_at: None,
                    cancelled_at: None,
                    agent_id: None,
                    attempts: 0,
                    required_capabilities: required_capabilities.clone(),
                    workflow_run_id: stage.as_ref().map(|s| s.run_id),
                    stage_key: stage.as_ref().map(|s| s.stage_key.clone()),
                    cost_group,
                    cost: 0,
                    charges: 0,
                    completed_position: None,
                    outlier_flagged_at: None,
                    outlier_cost: None,
                    outlier_median: None,
                    outlier_mad: None,
                    outlier_z_score: None,
                    outlier_threshold: None,
                    outlier_comparable: None,
                    outlier_group: None,
                    outlier_acknowledged_at: None,
                    outlier_acknowledged_by: None,
                    outlier_note: None,
                    outlier_acknowledged_cost: None,
                },
            );
        }
        // A task's later events without its creation cannot be placed; there are none in a store
        // whose streams start with their creation.
        let Some(facts) = self.tasks.get_mut(&id) else { return Ok(()) };
        let before = facts.status().map_err(|e| e.in_row(&self.tasks_table, id))?;
        match event {
            TaskEvent::Updated { required_capabilities: Some(capabilities), .. } => {
                facts.required_capabilities = capabilities.clone();
                // A stage's tasks stay in their stage's group whatever they require.
                if facts.cost_group.starts_with("capabilities:") {
                    facts.cost_group = group(capabilities, None);
                }
            }
            TaskEvent::Claimed { agent_id, .. } => {
                facts.first_claimed_at.get_or_insert(at);
                facts.agent_id = Some(*agent_id);
                facts.attempts += 1;
            }
            TaskEvent::Completed { agent_id, .. } => {
                facts.completed_at = Some(at);
                facts.completed_position = meta.position.map(|p| p.0 as i64);
                facts.agent_id = Some(*agent_id);
            }
            TaskEvent::Failed { .. } => facts.failed_at = Some(at),
            TaskEvent::Retried => facts.failed_at = None,
            TaskEvent::Cancelled { .. } => facts.cancelled_at = Some(at),
            TaskEvent::FlaggedAsCostOutlier(outlier) => {
                facts.outlier_flagged_at = Some(at);
                facts.outlier_cost = Some(outlier.cost.micros());
                facts.outlier_median = Some(outlier.median.micros());
                facts.outlier_mad = Some(outlier.mad.get());
                facts.outlier_z_score = Some(outlier.z_score.get());
                facts.outlier_threshold = Some(outlier.threshold.get());
                facts.outlier_comparable = Some(i32::try_from(outlier.comparable).unwrap_or(i32::MAX));
                facts.outlier_group = Some(outlier.group.clone());
                facts.outlier_acknowledged_at = None;
                facts.outlier_acknowledged_by = None;
                facts.outlier_note = None;
                facts.outlier_acknowledged_cost = None;
            }
            TaskEvent::OutlierAcknowledged { note } => {
                facts.outlier_acknowledged_at = Some(at);
                facts.outlier_acknowledged_by = Some(meta.actor.to_string());
                facts.outlier_note = Some(note.clone());
                facts.outlier_acknowledged_cost = Some(facts.cost);
            }
            _ => {}
        }
        if matches!(event, TaskEvent::FlaggedAsCostOutlier(_) | TaskEvent::OutlierAcknowledged { .. })
            && !self.flagged.contains(&id)
        {
            self.flagged.push(id);
        }
        // The domain's own fold says where the task stands, so the queue depth agrees with it.
        let after = Task::evolve(TaskState { status: before, ..TaskState::default() }, event).status;
        facts.status = after.as_str().to_owned();
        self.changed.insert(id);
        let delta = |status: TaskStatus| i64::from(after == status) - i64::from(before == status);
        let (pending, in_progress) = (delta(TaskStatus::Pending), delta(TaskStatus::InProgress));
        if pending != 0 || in_progress != 0 {
            self.depth = (self.depth.0 + pending, self.depth.1 + in_progress);
            let hour = hour_of(at);
            let (pending, in_progress) = self.depth;
            let entry = self.queue.entry(hour).or_insert(QueueHour {
                hour,
                pending,
                pending_max: pending,
                in_progress,
                in_progress_max: in_progress,
                position: 0,
            });
            entry.pending = pending;
            entry.pending_max = entry.pending_max.max(pending);
            entry.in_progress = in_progress;
            entry.in_progress_max = entry.in_progress_max.max(in_progress);
            entry.position = meta.position.map_or(entry.position, |p| p.0 as i64);
        }
        Ok(())
    }

    fn service(&mut self, service_id: Uuid, event: &ServiceEvent, recorded: &Recorded) {
        let at = recorded.meta.occurred_at;
        match event {
            ServiceEvent::Registered { name, .. } | ServiceEvent::Updated { name: Some(name), .. } => {
                self.services.insert(service_id, name.clone());
            }
            ServiceEvent::UsageCharged { charge_id, amount, task_id, agent_id, .. } => {
                let amount = amount.micros();
                self.charges.push(ChargeRow {
                    charge_id: *charge_id,
                    occurred_at: at,
                    service_id,
                    task_id: *task_id,
                    agent_id: *agent_id,
                    amount,
                    position: recorded.meta.position.map_or(0, |p| p.0 as i64),
                });
                let hour = hour_of(at);
                let cost = self.costs.entry((hour, service_id)).or_insert_with(|| HourlyCost {
                    hour,
                    service_id,
                    ..HourlyCost::default()
                });
                cost.cost += amount;
                cost.charges += 1;
                // A charge naming a task that does not exist counts for its service and agent only.
                if let Some(facts) = task_id.and_then(|id| self.tasks.get_mut(&id)) {
                    facts.cost += amount;
                    facts.charges += 1;
                    self.changed.insert(facts.task_id);
                }
            }
            _ => {}
        }
    }

    /// The facts of the tasks whose flag the batch raised or acknowledged, as the batch leaves them.
    fn flag_changes(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        self.flagged.iter().map(|id| serde_json::to_value(&self.tasks[id])).collect()
    }

    async fn write(self, conn: &mut PgConnection, target: Target) -> Result<(), sqlx::Error> {
        let tasks: Vec<&TaskFacts> = self.changed.iter().map(|id| &self.tasks[id]).collect();
        let updates: Vec<String> = TASK_COLUMNS.iter().skip(1).map(|c| format!("{c} = excluded.{c}")).collect();
        upsert(conn, &target.table(TASKS), &tasks, &format!("(task_id) do update set {}", updates.join(", "))).await?;
        let table = target.table(COSTS_HOURLY);
        let costs: Vec<&HourlyCost> = self.costs.values().collect();
        let merge = format!(
            "(hour, service_id) do update set cost = {table}.cost + excluded.cost, \
             charges = {table}.charges + excluded.charges"
        );
        upsert(conn, &table, &costs, &merge).await?;
        upsert(conn, &target.table(CHARGES), &self.charges, "do nothing").await?;
        let table = target.table(QUEUE_HOURLY);
        let queue: Vec<&QueueHour> = self.queue.values().collect();
        // The batch's events come after everything applied before: its depths are the newer ones.
        let merge = format!(
            "(hour) do update set pending = excluded.pending, \
             pending_max = greatest({table}.pending_max, excluded.pending_max), \
             in_progress = excluded.in_progress, \
             in_progress_max = greatest({table}.in_progress_max, excluded.in_progress_max), \
             position = excluded.position"
        );
        upsert(conn, &table, &queue, &merge).await?;
        let services: Vec<serde_json::Value> =
            self.services.iter().map(|(id, name)| serde_json::json!({ "service_id": id, "name": name })).collect();
        upsert(conn, &target.table(SERVICES), &services, "(service_id) do update set name = excluded.name").await?;
        let runs: Vec<serde_json::Value> =
            self.new_runs.iter().map(|(id, name)| serde_json::json!({ "run_id": id, "workflow_name": name })).collect();
        upsert(conn, &target.table(WORKFLOW_RUNS), &runs, "do nothing").await?;
        Ok(())
    }
}

/// Inserts `rows` (objects whose fields are `table`'s columns) in one statement, resolving
/// conflicts with `on_conflict` (what follows `on conflict`).
async fn upsert<T: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    rows: &[T],
    on_conflict: &str,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = serde_json::to_value(rows).expect("rows serialize");
    sqlx::query(&format!(
        "insert into {table} select * from jsonb_populate_recordset(null::{table}, $1) on conflict {on_conflict}"
    ))
    .bind(rows)
    .execute(conn)
    .await?;
    Ok(())
}

/// The hour (UTC) an instant falls in.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}
