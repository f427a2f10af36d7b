//! Spending caps on work: what has been settled and is reserved for each task, across all
//! services, beside the task's cap (`maxCost`).
//!
//! `task_spending` is a write-side table like the budget snapshots: a task's cap is written in the
//! statement that appends its `TaskMaxCostSet` (see `queue::sync`), and the spend moves in the
//! statement that appends a service's authorizations, charges and expiries (see
//! `budgets::Services::apply`), so it is never behind the events. A command that decides on a
//! task's spend first takes the task's spend lock, before any service's snapshot: authorizations,
//! charges and the budget clock all take the locks in that order, so none waits on another in a
//! cycle, and each sees every reservation committed before it. That lock is what keeps settled
//! plus reserved spend within the cap under any concurrency, as the snapshot's lock does for a
//! budget.
//!
//! Amounts add up whatever the services' currencies: a cap is meant for services priced alike.

use std::collections::BTreeMap;

use devart_domain::money::Money;
use devart_domain::service::{Reservation, ServiceEvent, ServiceState};
use sqlx::{Arguments, PgConnection};
use uuid::Uuid;

use crate::store::{self, Beside};

/// A task's spend, as the write side keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpend {
    pub task_id: Uuid,
    /// None: no cap but the services' budgets.
    pub max_cost: Option<Money>,
    pub settled: Money,
    pub reserved: Money,
}

impl TaskSpend {
    /// What may still be settled or reserved under the cap; `None` without a cap.
    pub fn room(&self) -> Option<Money> {
        self.max_cost.map(|cap| cap.saturating_sub(self.settled.saturating_add(self.reserved)))
    }

    /// Why `amount` more may not be spent for the task, of which `held` is reserved for it
    /// already; `None` when it may.
    pub fn refusal(&self, amount: Money, held: Money) -> Option<String> {
        let cap = self.max_cost?;
        let used = self.settled.saturating_add(self.reserved);
        (used.saturating_sub(held).saturating_add(amount) > cap).then(|| {
            format!(
                "the task's spending cap of {cap} has no room for {amount}: {} settled and {} reserved",
                self.settled, self.reserved
            )
        })
    }
}

type Row = (Uuid, Option<i64>, i64, i64);

fn spend((task_id, max_cost, settled, reserved): Row) -> TaskSpend {
    TaskSpend {
        task_id,
        max_cost: max_cost.map(Money::from_micros),
        settled: Money::from_micros(settled),
        reserved: Money::from_micros(reserved),
    }
}

/// The class of the advisory locks on tasks' spend ("spen" in ASCII).
const SPEND_LOCK_CLASS: i32 = 0x7370_656e;

/// The spend of these tasks (those that have a row), as committed.
async fn read(conn: &mut PgConnection, tasks: &[Uuid]) -> Result<BTreeMap<Uuid, TaskSpend>, sqlx::Error> {
    let rows: Vec<Row> =
        sqlx::query_as("select task_id, max_cost, settled, reserved from task_spending where task_id = any($1)")
            .bind(tasks)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|row| (row.0, spend(row))).collect())
}

/// Holds these tasks' spend for the transaction (advisory locks, see [`store::hold_keys`]): every
/// command that moves a task's spend takes its lock before any service's, and decides on what
/// [`Held::read`] then returns.
pub(crate) async fn hold(conn: &mut PgConnection, tasks: &[Uuid]) -> Result<Held, sqlx::Error> {
    store::hold_keys(conn, SPEND_LOCK_CLASS, tasks).await?;
    Ok(Held { tasks: tasks.to_vec() })
}

/// Holds the spend of the tasks a charge moves: the one it names and the one its reservation (on
/// service `service_id`, as its snapshot says) was made for.
pub(crate) async fn hold_for_charge(
    conn: &mut PgConnection,
    task_id: Option<Uuid>,
    service_id: Uuid,
    reservation_id: Option<Uuid>,
) -> Result<Held, sqlx::Error> {
    let reserved_for: Option<Uuid> = match reservation_id {
        Some(r) => sqlx::query_scalar(
            "select (state -> 'reservations' -> $2::text ->> 'task_id')::uuid from service_budgets where service_id = $1",
        )
        .bind(service_id)
        .bind(r.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .flatten(),
        None => None,
    };
    let tasks: Vec<Uuid> = task_id.into_iter().chain(reserved_for).collect();
    hold(conn, &tasks).await
}

/// Holds the spend of the tasks whose reservations on service `service_id` run out by `now`, as
/// its snapshot says, before the budget clock expires them.
pub(crate) async fn hold_expiring(
    conn: &mut PgConnection,
    service_id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Held, sqlx::Error> {
    let tasks: Vec<Uuid> = sqlx::query_scalar(
        "select distinct (r.value ->> 'task_id')::uuid from service_budgets b, jsonb_each(b.state -> 'reservations') r \
         where b.service_id = $1 and r.value ->> 'task_id' is not null and (r.value ->> 'expires_at')::timestamptz <= $2",
    )
    .bind(service_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    hold(conn, &tasks).await
}

/// Tasks whose spend the transaction holds.
pub(crate) struct Held {
    tasks: Vec<Uuid>,
}

impl Held {
    /// Their spend as committed: no other command moves it until the transaction ends.
    pub(crate) async fn read(&self, conn: &mut PgConnection) -> Result<BTreeMap<Uuid, TaskSpend>, sqlx::Error> {
        if self.tasks.is_empty() {
            return Ok(BTreeMap::new());
        }
        read(conn, &self.tasks).await
    }
}

/// A task's spend, without locking; `None` before it spent anything or had a cap.
pub async fn of<'c>(executor: impl sqlx::PgExecutor<'c>, task_id: Uuid) -> Result<Option<TaskSpend>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as("select task_id, max_cost, settled, reserved from task_spending where task_id = $1")
            .bind(task_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(spend))
}

/// How far settled and reserved spend move, in millionths, per task.
pub(crate) type Moves = BTreeMap<Uuid, (i64, i64)>;

/// What `events`, applied in order to a service in state `before`, move for each task: a charge
/// settles for the task it names (else its reservation's) and frees its reservation; an expiry
/// frees one.
pub(crate) fn moved(before: &ServiceState, events: &[ServiceEvent]) -> Moves {
    let mut moves = Moves::new();
    // Reservations made by earlier events of the same batch, so that the state is not cloned.
    let mut made: BTreeMap<Uuid, Reservation> = BTreeMap::new();
    let mut add = |task: Option<Uuid>, settled: i64, reserved: i64| {
        if let Some(task) = task {
            let entry = moves.entry(task).or_insert((0, 0));
            entry.0 += settled;
            entry.1 += reserved;
        }
    };
    for event in events {
        match event {
            ServiceEvent::UsageAuthorized { reservation_id, amount, task_id, agent_id, expires_at, .. } => {
                add(*task_id, 0, amount.micros());
                let reservation =
                    Reservation { amount: *amount, expires_at: *expires_at, task_id: *task_id, agent_id: *agent_id };
                made.insert(*reservation_id, reservation);
            }
            ServiceEvent::UsageCharged { reservation_id, amount, task_id, .. } => {
                let held =
                    reservation_id.and_then(|r| made.remove(&r).or_else(|| before.reservations.get(&r).cloned()));
                if let Some(held) = &held {
                    add(held.task_id, 0, -held.amount.micros());
                }
                add(task_id.or(held.and_then(|h| h.task_id)), amount.micros(), 0);
            }
            ServiceEvent::ReservationExpired { reservation_id, .. } => {
                if let Some(held) =
                    made.remove(reservation_id).or_else(|| before.reservations.get(reservation_id).cloned())
                {
                    add(held.task_id, 0, -held.amount.micros());
                }
            }
            _ => {}
        }
    }
    moves.retain(|_, m| *m != (0, 0));
    moves
}

/// A task without a row yet has spent nothing: what it moves is positive (a reservation it freed
/// was counted when made, or by the migration that made the table).
const MOVE: &str = "insert into task_spending (task_id, settled, reserved) \
     select task_id, settled, reserved from unnest($1::uuid[], $2::bigint[], $3::bigint[]) as m (task_id, settled, reserved) \
     on conflict (task_id) do update set settled = greatest(task_spending.settled + excluded.settled, 0), \
         reserved = greatest(task_spending.reserved + excluded.reserved, 0)";

/// `beside`, or a new change, that also moves the tasks' spend by `moves`; `beside` as it is when
/// nothing moves.
pub(crate) fn and_moved(beside: Option<Beside>, moves: &Moves) -> Option<Beside> {
    if moves.is_empty() {
        return beside;
    }
    let ids: Vec<Uuid> = moves.keys().copied().collect();
    let settled: Vec<i64> = moves.values().map(|m| m.0).collect();
    let reserved: Vec<i64> = moves.values().map(|m| m.1).collect();
    let bind = |a: &mut sqlx::postgres::PgArguments| {
        a.add(ids)?;
        a.add(settled)?;
        a.add(reserved)
    };
    Some(match beside {
        Some(beside) => beside.and(MOVE, bind),
        None => Beside::new(MOVE, bind),
    })
}

/// The change that writes task `task_id`'s cap.
pub(crate) fn cap(beside: Beside, task_id: Uuid, max_cost: Money) -> Beside {
    beside.and(
        "insert into task_spending (task_id, max_cost) values ($1, $2) \
         on conflict (task_id) do update set max_cost = excluded.max_cost",
        |a| {
            a.add(task_id)?;
            a.add(max_cost.micros())
        },
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn m(text: &str) -> Money {
        Money::parse("amount", text).unwrap()
    }

    const TASK: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    #[test]
    fn authorizations_reserve_charges_settle_and_free_and_expiries_free() {
        let (r1, r2) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let mut before = ServiceState::default();
        before
            .reservations
            .insert(r1, Reservation { amount: m("2"), expires_at: Utc::now(), task_id: Some(TASK), agent_id: None });
        let events = [
            ServiceEvent::UsageAuthorized {
                reservation_id: r2,
                amount: m("3"),
                task_id: Some(OTHER),
                agent_id: None,
                requested_service_id: None,
                expires_at: Utc::now(),
            },
            // A charge naming no task settles for its reservation's.
            ServiceEvent::UsageCharged {
                charge_id: Uuid::from_u128(20),
                reservation_id: Some(r1),
                amount: m("1.5"),
                released: m("0.5"),
                units: None,
                task_id: None,
                agent_id: None,
            },
            ServiceEvent::ReservationExpired { reservation_id: r2, amount: m("3") },
        ];
        let moves = moved(&before, &events);
        assert_eq!(moves, Moves::from([(TASK, (1_500_000, -2_000_000))]), "OTHER's reservation came and went");
    }

    #[test]
    fn a_cap_refuses_what_would_pass_it_counting_what_is_held_once() {
        let spend = TaskSpend { task_id: TASK, max_cost: Some(m("10")), settled: m("6"), reserved: m("3") };
        assert_eq!(spend.room(), Some(m("1")));
        assert_eq!(spend.refusal(m("1"), Money::ZERO), None);
        assert!(spend.refusal(m("1.01"), Money::ZERO).unwrap().contains("cap of 10.00 has no room for 1.01"));
        // Settling 4 against a reservation of 3: one more than held, which fits.
        assert_eq!(spend.refusal(m("4"), m("3")), None);
        assert!(spend.refusal(m("4.5"), m("3")).is_some());
        let uncapped = TaskSpend { max_cost: None, ..spend };
        assert_eq!((uncapped.room(), uncapped.refusal(Money::MAX, Money::ZERO)), (None, None));
    }
}
