//! Budgets on the write side: services, and the authorizations and charges against them.
//!
//! A service's stream can grow by thousands of events a month, so its state is not folded from the
//! stream on every command: `service_budgets` keeps it as a snapshot, written in the transaction of
//! every append to the stream (all of which go through [`Services::apply`]), so it is never
//! behind. A command locks the snapshot rows it decides on (`FOR UPDATE`, in id order, so that two
//! commands walking fallback chains in opposite directions cannot deadlock), decides, appends,
//! and rewrites the snapshot. That lock is what makes concurrent authorizations unable to
//! overspend: each one sees every reservation committed before it.
//!
//! Authorizations and charges carry an idempotency key. The command id is derived from it, and the
//! answer is kept in `usage_answers` in the same transaction: a repeated key gets the first
//! answer and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use devart_domain::money::Money;
use devart_domain::service::{RegisterService, Service, ServiceCommand, ServiceState, ServiceStatus, UpdateService};
use devart_domain::{Aggregate, DomainError, Event, StreamId};
use serde::{Deserialize, Serialize};
use sqlx::{Arguments, Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod snapshot;

use crate::entry::Commands;
use crate::handler::CommandError;
use crate::spending;
use crate::store::{self, Beside, CommandContext, StoreError, Stored};

/// Fallback chains longer than this are cut: a loop, or a configuration nobody means.
const CHAIN_MAX: usize = 16;
/// How often every process releases expired reservations and starts new periods.
pub const CLOCK_INTERVAL: Duration = Duration::from_secs(1);

/// The answer to `authorizeUsage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub approved: bool,
    /// The service whose budget holds the reservation: the one asked, or the fallback it delegated
    /// to; the one asked when refused.
    pub service_id: Uuid,
    pub reservation_id: Option<Uuid>,
    /// Why it was refused, or why it was delegated.
    pub reason: Option<String>,
    /// What that service's budget has left to reserve after this answer.
    pub remaining: Money,
}

/// The answer to `recordCharge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub charge_id: Uuid,
    pub service_id: Uuid,
    pub amount: Money,
    /// What the reservation held beyond the charge, released.
    pub released: Money,
    pub spent: Money,
    pub remaining: Money,
    pub suspended: bool,
}

#[derive(Debug, Clone)]
pub struct UsageRequest {
    pub service_id: Uuid,
    pub amount: Money,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub service_id: Uuid,
    pub amount: Money,
    pub reservation_id: Option<Uuid>,
    pub units: Option<(String, u64)>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub idempotency_key: String,
}

/// A service's state as its snapshot holds it, with the stream version it reflects.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: ServiceState,
    pub version: u64,
}

impl Stored for Service {
    fn wrap(event: devart_domain::service::ServiceEvent) -> Event {
        Event::Service(event)
    }
    fn unwrap(event: &Event) -> Option<&devart_domain::service::ServiceEvent> {
        match event {
            Event::Service(e) => Some(e),
            _ => None,
        }
    }
}

const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6465_7661_7274_2d75_7361_6765_2d6b_6579);

/// The command context of a keyed request: its id derived from who asks, what, and the key.
fn keyed(context: &CommandContext, what: &str, key: &str) -> CommandContext {
    let mut keyed = context.clone();
    let name = format!("{}\u{0}{what}\u{0}{key}", context.actor);
    keyed.command_id = Uuid::new_v5(&KEY_NAMESPACE, name.as_bytes());
    keyed
}

/// A snapshot row: `service_id, version, state`.
type Row = (Uuid, i64, sqlx::types::Json<serde_json::Value>);

/// A snapshot row as its service's state; an error naming the service if it does not read.
fn decoded((id, version, state): Row) -> Result<Snapshot, StoreError> {
    Ok(Snapshot { state: snapshot::decode(id, state.0)?, version: version as u64 })
}

/// Snapshot rows by service.
fn by_id(rows: Vec<Row>) -> Result<BTreeMap<Uuid, Snapshot>, CommandError> {
    Ok(rows.into_iter().map(|row| Ok((row.0, decoded(row)?))).collect::<Result<_, StoreError>>()?)
}

/// The class of the advisory locks on services ("serv" in ASCII).
const SERVICE_LOCK_CLASS: i32 = 0x7365_7276;

/// Locks the snapshots of services `ids` for the transaction: their advisory locks first (see
/// [`store::hold_keys`]), then their rows.
async fn lock(conn: &mut PgConnection, ids: &[Uuid]) -> Result<BTreeMap<Uuid, Snapshot>, CommandError> {
    let mut sorted: Vec<Uuid> = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    store::hold_keys(conn, SERVICE_LOCK_CLASS, &sorted).await?;
    let rows: Vec<Row> = sqlx::query_as(
        "select service_id, version, state from service_budgets where service_id = any($1) order by service_id \
         for update",
    )
    .bind(&sorted)
    .fetch_all(&mut *conn)
    .await?;
    by_id(rows)
}

/// The change that writes service `id`'s snapshot at stream version `version`.
fn snapshot_change(id: Uuid, version: u64, state: &ServiceState) -> Beside {
    let next_expiry = state.reservations.values().map(|r| r.expires_at).min();
    Beside::new(
        "insert into service_budgets (service_id, version, state, period, next_expiry, updated_at) \
         values ($1, $2, $3, $4, $5, now()) \
         on conflict (service_id) do update set version = excluded.version, state = excluded.state, \
             period = excluded.period, next_expiry = excluded.next_expiry, updated_at = now()",
        |a| {
            a.add(id)?;
            a.add(version as i64)?;
            a.add(snapshot::encode(state))?;
            a.add(state.period.to_string())?;
            a.add(next_expiry)
        },
    )
}

/// Locks service `first` and the services along its fallback chain as their snapshots say (each
/// once, at most [`CHAIN_MAX`]), in id order (so two authorizations never wait on each other in a
/// cycle). A chain that changed meanwhile shows in the locked rows.
async fn lock_chain(conn: &mut PgConnection, first: Uuid) -> Result<BTreeMap<Uuid, Snapshot>, CommandError> {
    let chain: Vec<Uuid> = sqlx::query_scalar(
        "with recursive chain (service_id, depth) as ( \
             select $1::uuid, 1 \
             union \
             select (b.state ->> 'fallback_service_id')::uuid, c.depth + 1 \
             from chain c join service_budgets b on b.service_id = c.service_id \
             where c.depth < $2 and b.state ->> 'fallback_service_id' is not null) \
         select distinct service_id from chain",
    )
    .bind(first)
    .bind(CHAIN_MAX as i32)
    .fetch_all(&mut *conn)
    .await?;
    lock(conn, &chain).await
}

/// Writes service `id`'s snapshot at stream version `version`.
pub(crate) async fn write_snapshot<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    id: Uuid,
    version: u64,
    state: &ServiceState,
) -> Result<(), sqlx::Error> {
    snapshot_change(id, version, state).execute(executor).await
}

const KEEP_ANSWER: &str = "insert into usage_answers (command_id, answer) values ($1, $2)";

/// The answer kept for a keyed request, if it ran.
async fn answer<'c, T: for<'de> Deserialize<'de>>(
    executor: impl sqlx::PgExecutor<'c>,
    command_id: Uuid,
) -> Result<Option<T>, CommandError> {
    let row: Option<sqlx::types::Json<serde_json::Value>> =
        sqlx::query_scalar("select answer from usage_answers where command_id = $1")
            .bind(command_id)
            .fetch_optional(executor)
            .await?;
    match row {
        // An answer of another kind under the same key: the key was reused for something else.
        Some(json) => serde_json::from_value(json.0).map(Some).map_err(|_| CommandError::CommandIdReused(command_id)),
        None => Ok(None),
    }
}

/// A service's current state, from its snapshot; `None` if it does not exist.
async fn service_with<'c>(executor: impl sqlx::PgExecutor<'c>, id: Uuid) -> Result<Option<Snapshot>, CommandError> {
    let row: Option<Row> =
        sqlx::query_as("select service_id, version, state from service_budgets where service_id = $1")
            .bind(id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(decoded).transpose()?)
}

/// The services' commands, and their current state from the snapshots: `commands.services()`.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// The services' commands: registering and changing services, their budgets, authorizations
    /// and charges, the budget clock's tick; and their current state.
    pub fn services(&self) -> Services<'_> {
        Services { commands: self }
    }
}

impl Services<'_> {
    /// A service's current state, from its snapshot; `None` if it does not exist.
    pub async fn get(self, id: Uuid) -> Result<Option<Snapshot>, CommandError> {
        service_with(self.commands.store().pool(), id).await
    }

    /// Every service's current state, from the snapshots, by name.
    pub async fn all(self) -> Result<Vec<Snapshot>, CommandError> {
        let rows: Vec<Row> = sqlx::query_as(
            "select service_id, version, state from service_budgets order by state->>'name', service_id",
        )
        .fetch_all(self.commands.store().pool())
        .await?;
        Ok(rows.into_iter().map(decoded).collect::<Result<_, _>>()?)
    }

    /// Decides `command` against a locked snapshot and appends the outcome, in `conn`'s
    /// transaction; the statement that appends also rewrites the snapshot and keeps the answer
    /// `answer` gives for the state after it, if any. Returns that state and that answer.
    async fn apply<T: Serialize>(
        self,
        conn: &mut PgConnection,
        id: Uuid,
        snapshot: &Snapshot,
        command: &ServiceCommand,
        context: &CommandContext,
        answer: impl FnOnce(&ServiceState) -> Option<T>,
    ) -> Result<(ServiceState, Option<T>), CommandError> {
        let events = Service::decide(&snapshot.state, command)?;
        if events.is_empty() {
            let answer = answer(&snapshot.state);
            if let Some(answer) = &answer {
                sqlx::query(KEEP_ANSWER)
                    .bind(context.command_id)
                    .bind(sqlx::types::Json(answer))
                    .execute(&mut *conn)
                    .await?;
            }
            return Ok((snapshot.state.clone(), answer));
        }
        let after = events.iter().fold(snapshot.state.clone(), Service::evolve);
        let version = snapshot.version + events.len() as u64;
        let answer = answer(&after);
        let mut beside = snapshot_change(id, version, &after);
        if let Some(answer) = &answer {
            beside = beside.and(KEEP_ANSWER, |a| {
                a.add(context.command_id)?;
                a.add(sqlx::types::Json(answer))
            });
        }
        let moves = spending::moved(&snapshot.state, &events);
        let beside = spending::and_moved(Some(beside), &moves, command.now().date_naive());
        let wrapped: Vec<Event> = events.into_iter().map(Event::Service).collect();
        let stream = StreamId::new(Service::KIND, id);
        store::append_beside_with(&mut *conn, &stream, snapshot.version, &wrapped, context, beside).await?;
        Ok((after, answer))
    }

    /// Runs one command on service `id` in its own transaction.
    async fn execute(
        self,
        id: Uuid,
        command: ServiceCommand,
        context: &CommandContext,
    ) -> Result<ServiceState, CommandError> {
        let mut tx = self.commands.store().pool().begin().await?;
        let locked = lock(&mut tx, &[id]).await?;
        let Some(snapshot) = locked.get(&id) else {
            return Err(DomainError::NotFound(format!("service {id}")).into());
        };
        let (after, _) = self.apply(&mut tx, id, snapshot, &command, context, |_| None::<()>).await?;
        tx.commit().await?;
        self.commands.engine().appended().await;
        Ok(after)
    }

    pub async fn register(
        self,
        service: RegisterService,
        context: &CommandContext,
    ) -> Result<ServiceState, CommandError> {
        if let Some(fallback) = service.fallback_service_id {
            self.require("fallbackServiceId", fallback).await?;
        }
        let id = service.id;
        let mut tx = self.commands.store().pool().begin().await?;
        let command = ServiceCommand::Register { service, now: Utc::now() };
        let empty = Snapshot { state: ServiceState::default(), version: 0 };
        let after = match self.apply(&mut tx, id, &empty, &command, context, |_| None::<()>).await {
            Ok((after, _)) => after,
            Err(CommandError::Store(StoreError::Conflict { .. } | StoreError::DuplicateCommand(_))) => {
                drop(tx);
                // A retried registration (same command id) answers with the service it registered.
                let outcome = self.commands.store().command_outcome(context.command_id).await?;
                let stream = StreamId::new(Service::KIND, id);
                return match (outcome, self.get(id).await?) {
                    (Some(o), Some(snapshot)) if o.stream_id == stream.as_str() => Ok(snapshot.state),
                    _ => Err(DomainError::Conflict(format!("service {id} already exists")).into()),
                };
            }
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        self.commands.engine().appended().await;
        Ok(after)
    }

    async fn require(self, field: &'static str, id: Uuid) -> Result<(), CommandError> {
        match self.get(id).await? {
            Some(_) => Ok(()),
            None => Err(DomainError::invalid(field, format!("service {id} does not exist")).into()),
        }
    }

    /// Changes a service's name, fallback or prices. A fallback may lead back to the service (a
    /// cycle): authorizations walk each service at most once.
    pub async fn update(
        self,
        id: Uuid,
        update: UpdateService,
        context: &CommandContext,
    ) -> Result<ServiceState, CommandError> {
        if let Some(Some(fallback)) = update.fallback_service_id {
            self.require("fallbackServiceId", fallback).await?;
        }
        self.execute(id, ServiceCommand::Update { update, now: Utc::now() }, context).await
    }

    /// Adds `amount` to the monthly budget; a suspended service with room again is reactivated.
    pub async fn increase_budget(
        self,
        id: Uuid,
        amount: Money,
        reason: String,
        context: &CommandContext,
    ) -> Result<ServiceState, CommandError> {
        let mut tx = self.commands.store().pool().begin().await?;
        let locked = lock(&mut tx, &[id]).await?;
        let Some(snapshot) = locked.get(&id) else {
            return Err(DomainError::NotFound(format!("service {id}")).into());
        };
        let budget = snapshot.state.monthly_budget.saturating_add(amount);
        if budget > Money::MAX {
            return Err(DomainError::invalid("amount", format!("the budget would pass {}", Money::MAX)).into());
        }
        let command = ServiceCommand::ChangeBudget { budget, reason, now: Utc::now() };
        let (after, _) = self.apply(&mut tx, id, snapshot, &command, context, |_| None::<()>).await?;
        tx.commit().await?;
        self.commands.engine().appended().await;
        Ok(after)
    }

    pub async fn set_active(
        self,
        id: Uuid,
        active: bool,
        context: &CommandContext,
    ) -> Result<ServiceState, CommandError> {
        self.execute(id, ServiceCommand::SetActive { active, now: Utc::now() }, context).await
    }

    /// The services an authorization may try, in order: the one asked, then its fallbacks, each
    /// once, read without locks.
    /// Reserves `request.amount` on the service asked or, when it has no room (or is suspended or
    /// inactive), on the first fallback along its chain that has; else refuses. Either way the
    /// answer is an event, and a repeated idempotency key gets the first answer.
    pub async fn authorize_usage(
        self,
        request: &UsageRequest,
        context: &CommandContext,
    ) -> Result<Authorization, CommandError> {
        let context = keyed(context, "authorize", &request.idempotency_key);
        // One connection throughout: each taken from the pool costs a round trip or two.
        let mut conn = self.commands.store().pool().acquire().await?;
        if let Some(answer) = answer(&mut *conn, context.command_id).await? {
            return Ok(answer);
        }
        let now = Utc::now();
        let reservation_id = Uuid::new_v5(&context.command_id, b"reservation");
        for _ in 0..3 {
            let mut tx = conn.begin().await?;
            // The task's spend before any service: the order every command locks them in.
            let held = spending::hold(&mut tx, request.task_id.as_slice(), request.agent_id.as_slice()).await?;
            let locked = lock_chain(&mut tx, request.service_id).await?;
            let spends = held.read(&mut tx, now.date_naive()).await?;
            if !locked.contains_key(&request.service_id) {
                return Err(DomainError::NotFound(format!("service {}", request.service_id)).into());
            }
            // The chain again, from the locked rows: if a fallback changed meanwhile, start over.
            let mut walk = vec![request.service_id];
            while let Some(next) = locked.get(walk.last().expect("not empty")).and_then(|s| s.state.fallback_service_id)
            {
                if walk.contains(&next) || walk.len() >= CHAIN_MAX {
                    break;
                }
                walk.push(next);
            }
            if walk.iter().any(|id| !locked.contains_key(id)) {
                continue;
            }
            let original = locked[&request.service_id].state.at(now);
            let refusal = original.admits(request.amount).err();
            // A capped task's or agent's spend has no room on any service.
            let capped = request
                .task_id
                .and_then(|t| spends.tasks.get(&t))
                .and_then(|t| t.refusal(request.amount, Money::ZERO))
                .or_else(|| {
                    let agent = request.agent_id.and_then(|a| spends.agents.get(&a));
                    agent.and_then(|a| a.refusal(request.amount, Money::ZERO))
                });
            let chosen = match capped {
                Some(_) => None,
                None => walk.iter().copied().find(|id| locked[id].state.at(now).admits(request.amount).is_ok()),
            };
            let (target, command, answer) = match chosen {
                Some(id) => {
                    let command = ServiceCommand::Authorize {
                        reservation_id,
                        amount: request.amount,
                        task_id: request.task_id,
                        agent_id: request.agent_id,
                        requested_service_id: (id != request.service_id).then_some(request.service_id),
                        expires_at: now + self.commands.settings().current().reservation_ttl(),
                        now,
                    };
                    let answer = Authorization {
                        approved: true,
                        service_id: id,
                        reservation_id: Some(reservation_id),
                        reason: refusal.map(|r| format!("delegated to service {id}: {r}")),
                        remaining: Money::ZERO,
                    };
                    (id, command, answer)
                }
                None => {
                    let reason = match (capped, refusal, walk.len()) {
                        (Some(capped), _, _) => capped,
                        (None, Some(r), 1) => r.to_string(),
                        (None, Some(r), n) => format!("{r}, and none of its {} fallback(s) has room", n - 1),
                        (None, None, _) => unreachable!("a service that admits the amount is chosen"),
                    };
                    let command = ServiceCommand::Refuse {
                        amount: request.amount,
                        task_id: request.task_id,
                        agent_id: request.agent_id,
                        reason: reason.clone(),
                        now,
                    };
                    let answer = Authorization {
                        approved: false,
                        service_id: request.service_id,
                        reservation_id: None,
                        reason: Some(reason),
                        remaining: Money::ZERO,
                    };
                    (request.service_id, command, answer)
                }
            };
            let answered = |after: &ServiceState| Some(Authorization { remaining: after.room(), ..answer });
            let applied = self.apply(&mut tx, target, &locked[&target], &command, &context, answered).await;
            let answer = match applied {
                Ok((_, answer)) => answer.expect("an authorization is always answered"),
                Err(CommandError::Store(StoreError::DuplicateCommand(_))) => {
                    tx.rollback().await?;
                    return self::answer(&mut *conn, context.command_id)
                        .await?
                        .ok_or(CommandError::CommandIdReused(context.command_id));
                }
                Err(e) => return Err(e),
            };
            tx.commit().await?;
            drop(conn);
            self.commands.engine().appended().await;
            return Ok(answer);
        }
        Err(DomainError::Conflict("the fallback chain keeps changing; try again".into()).into())
    }

    /// Settles a charge against its reservation (or directly), releasing what the reservation held
    /// beyond it. Refused when it would pass the budget.
    pub async fn record_charge(
        self,
        request: &ChargeRequest,
        context: &CommandContext,
    ) -> Result<Receipt, CommandError> {
        let context = keyed(context, "charge", &request.idempotency_key);
        let mut conn = self.commands.store().pool().acquire().await?;
        if let Some(receipt) = answer(&mut *conn, context.command_id).await? {
            return Ok(receipt);
        }
        let charge_id = Uuid::new_v5(&context.command_id, b"charge");
        let mut tx = conn.begin().await?;
        let now = Utc::now();
        let held = spending::hold_for_charge(
            &mut tx,
            request.task_id,
            request.agent_id,
            request.service_id,
            request.reservation_id,
        )
        .await?;
        let locked = lock(&mut tx, &[request.service_id]).await?;
        let spends = held.read(&mut tx, now.date_naive()).await?;
        let Some(snapshot) = locked.get(&request.service_id) else {
            return Err(DomainError::NotFound(format!("service {}", request.service_id)).into());
        };
        let reservation = request.reservation_id.and_then(|r| snapshot.state.reservations.get(&r));
        // What the charge settles for its task and agent beyond what its reservation holds for them.
        let task = request.task_id.or(reservation.and_then(|r| r.task_id)).and_then(|t| spends.tasks.get(&t));
        let agent = request.agent_id.or(reservation.and_then(|r| r.agent_id)).and_then(|a| spends.agents.get(&a));
        // The reservation's amount, where it was made for `owner`: what the charge settles first.
        let held_by =
            |owner: Option<Uuid>, id: Uuid| reservation.filter(|_| owner == Some(id)).map_or(Money::ZERO, |r| r.amount);
        let refusal = task
            .and_then(|t| t.refusal(request.amount, held_by(reservation.and_then(|r| r.task_id), t.task_id)))
            .or_else(|| {
                agent.and_then(|a| a.refusal(request.amount, held_by(reservation.and_then(|r| r.agent_id), a.agent_id)))
            });
        if let Some(refusal) = refusal {
            return Err(DomainError::Conflict(format!("a charge of {}: {refusal}", request.amount)).into());
        }
        let command = ServiceCommand::Charge {
            charge_id,
            reservation_id: request.reservation_id,
            amount: request.amount,
            units: request.units.clone(),
            task_id: request.task_id,
            agent_id: request.agent_id,
            thresholds: self.commands.settings().current().alert_thresholds(),
            now,
        };
        let held = reservation.map_or(Money::ZERO, |r| r.amount);
        let receipt = |after: &ServiceState| {
            Some(Receipt {
                charge_id,
                service_id: request.service_id,
                amount: request.amount,
                released: held.saturating_sub(request.amount),
                spent: after.spent,
                remaining: after.room(),
                suspended: after.status == ServiceStatus::Suspended,
            })
        };
        let receipt = match self.apply(&mut tx, request.service_id, snapshot, &command, &context, receipt).await {
            Ok((_, receipt)) => receipt.expect("a charge is always answered"),
            Err(CommandError::Store(StoreError::DuplicateCommand(_))) => {
                tx.rollback().await?;
                return answer(&mut *conn, context.command_id)
                    .await?
                    .ok_or(CommandError::CommandIdReused(context.command_id));
            }
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        drop(conn);
        self.commands.engine().appended().await;
        Ok(receipt)
    }

    /// Releases reservations that ran out by `now` and starts new periods, for every service that
    /// needs it; returns how many services changed.
    pub async fn tick(self, now: DateTime<Utc>) -> Result<usize, CommandError> {
        let period = devart_domain::service::Period::of(now).to_string();
        let due: Vec<Uuid> = sqlx::query_scalar(
            "select service_id from service_budgets where next_expiry <= $1 or period < $2 order by service_id limit 1000",
        )
        .bind(now)
        .bind(&period)
        .fetch_all(self.commands.store().pool())
        .await?;
        let mut changed = 0;
        for id in due {
            let context = CommandContext::new(devart_domain::Actor::system("budget-clock"));
            let mut tx = self.commands.store().pool().begin().await?;
            spending::hold_expiring(&mut tx, id, now).await?;
            let locked = lock(&mut tx, &[id]).await?;
            let Some(snapshot) = locked.get(&id) else { continue };
            let (after, _) =
                self.apply(&mut tx, id, snapshot, &ServiceCommand::Tick { now }, &context, |_| None::<()>).await?;
            tx.commit().await?;
            if after != snapshot.state {
                changed += 1;
            }
        }
        if changed > 0 {
            self.commands.engine().appended().await;
        }
        Ok(changed)
    }
}

/// Releases expired reservations and starts new periods every [`CLOCK_INTERVAL`] until `shutdown`;
/// every process runs it, and they cannot double-apply: each tick is a command on a locked row.
pub async fn run_budget_clock(commands: Commands, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CLOCK_INTERVAL) => {}
        }
        if let Err(error) = commands.services().tick(Utc::now()).await {
            tracing::warn!(%error, "budget clock: retrying");
        }
    }
}
