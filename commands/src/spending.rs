//! Spending caps on work: what has been settled and is reserved for each task and by each agent,
//! across all services, beside the task's cap (`maxCost`) and the agent's daily cap.
//!
//! `task_spending` and `agent_spending` are write-side tables like the budget snapshots: a cap is
//! written in the statement that appends the event setting it (`TaskMaxCostSet` by `queue::sync`,
//! `AgentDailySpendingCapSet` by the agent's `Stored::beside`), and the spend moves in the
//! statement that appends a service's authorizations, charges and expiries (see
//! `budgets::Services::apply`), so it is never behind the events. A command that decides on spend
//! first takes the spend locks of the task and the agent it names (advisory locks, see
//! [`store::hold_keys`]), before any service's: authorizations, charges and the budget clock all
//! take the locks in that order, so none waits on another in a cycle, and each sees every
//! reservation committed before it. That lock is what keeps settled plus reserved spend within a
//! cap under any concurrency, as the snapshot's lock does for a budget.
//!
//! An agent's day is the UTC calendar day: what it settled counts on the day of the charge, what it
//! holds reserved counts until the reservation is settled or expires. Amounts add up whatever the
//! services' currencies: a cap is meant for services priced alike.

use std::collections::BTreeMap;

use chrono::NaiveDate;
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

/// Whether `amount` more would pass `cap`, with `settled` and `reserved` used and `held` of that
/// reserved for this very spend.
fn passes(cap: Option<Money>, settled: Money, reserved: Money, amount: Money, held: Money) -> bool {
    cap.is_some_and(|cap| settled.saturating_add(reserved).saturating_sub(held).saturating_add(amount) > cap)
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
        passes(Some(cap), self.settled, self.reserved, amount, held).then(|| {
            format!(
                "the task's spending cap of {cap} has no room for {amount}: {} settled and {} reserved",
                self.settled, self.reserved
            )
        })
    }
}

/// An agent's spend on one day, as the write side keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSpend {
    pub agent_id: Uuid,
    /// None: no cap of its own.
    pub daily_cap: Option<Money>,
    /// Settled on the day it was read for (UTC).
    pub settled_today: Money,
    /// Held by its open reservations, whenever they were made.
    pub reserved: Money,
}

impl AgentSpend {
    /// What may still be settled or reserved today under the cap; `None` without a cap.
    pub fn room(&self) -> Option<Money> {
        self.daily_cap.map(|cap| cap.saturating_sub(self.settled_today.saturating_add(self.reserved)))
    }

    /// Why `amount` more may not be spent by the agent today, of which `held` is reserved by it
    /// already; `None` when it may.
    pub fn refusal(&self, amount: Money, held: Money) -> Option<String> {
        let cap = self.daily_cap?;
        passes(Some(cap), self.settled_today, self.reserved, amount, held).then(|| {
            format!(
                "the agent's daily spending cap of {cap} has no room for {amount}: {} settled today and {} reserved",
                self.settled_today, self.reserved
            )
        })
    }
}

type TaskRow = (Uuid, Option<i64>, i64, i64);

fn task_spend((task_id, max_cost, settled, reserved): TaskRow) -> TaskSpend {
    TaskSpend {
        task_id,
        max_cost: max_cost.map(Money::from_micros),
        settled: Money::from_micros(settled),
        reserved: Money::from_micros(reserved),
    }
}

type AgentRow = (Uuid, Option<i64>, NaiveDate, i64, i64);

fn agent_spend((agent_id, daily_cap, day, settled, reserved): AgentRow, today: NaiveDate) -> AgentSpend {
    AgentSpend {
        agent_id,
        daily_cap: daily_cap.map(Money::from_micros),
        settled_today: if day == today { Money::from_micros(settled) } else { Money::ZERO },
        reserved: Money::from_micros(reserved),
    }
}

/// The classes of the advisory locks on tasks' and agents' spend ("spen", "agsp" in ASCII).
const TASK_LOCK_CLASS: i32 = 0x7370_656e;
const AGENT_LOCK_CLASS: i32 = 0x6167_7370;

/// The spend a command decides on: of the tasks and the agents it names.
#[derive(Debug, Default)]
pub(crate) struct Spends {
    pub tasks: BTreeMap<Uuid, TaskSpend>,
    pub agents: BTreeMap<Uuid, AgentSpend>,
}

/// Tasks and agents whose spend the transaction holds.
pub(crate) struct Held {
    tasks: Vec<Uuid>,
    agents: Vec<Uuid>,
}

/// Holds the spend of these tasks and agents for the transaction (tasks' locks first, then
/// agents'): every command that moves spend takes these locks before any service's, and decides on
/// what [`Held::read`] then returns.
pub(crate) async fn hold(conn: &mut PgConnection, tasks: &[Uuid], agents: &[Uuid]) -> Result<Held, sqlx::Error> {
    store::hold_keys(conn, TASK_LOCK_CLASS, tasks).await?;
    store::hold_keys(conn, AGENT_LOCK_CLASS, agents).await?;
    Ok(Held { tasks: tasks.to_vec(), agents: agents.to_vec() })
}

/// Holds the spend a charge moves: of the task and the agent it names, and of those its
/// reservation (on service `service_id`, as its snapshot says) was made for.
pub(crate) async fn hold_for_charge(
    conn: &mut PgConnection,
    task_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    service_id: Uuid,
    reservation_id: Option<Uuid>,
) -> Result<Held, sqlx::Error> {
    let reserved_for: Option<(Option<Uuid>, Option<Uuid>)> = match reservation_id {
        Some(r) => {
            sqlx::query_as(
                "select (state -> 'reservations' -> $2::text ->> 'task_id')::uuid, \
                        (state -> 'reservations' -> $2::text ->> 'agent_id')::uuid \
                 from service_budgets where service_id = $1",
            )
            .bind(service_id)
            .bind(r.to_string())
            .fetch_optional(&mut *conn)
            .await?
        }
        None => None,
    };
    let (reserved_task, reserved_agent) = reserved_for.unwrap_or_default();
    let tasks: Vec<Uuid> = task_id.into_iter().chain(reserved_task).collect();
    let agents: Vec<Uuid> = agent_id.into_iter().chain(reserved_agent).collect();
    hold(conn, &tasks, &agents).await
}

/// Holds the spend of the tasks and agents whose reservations on service `service_id` run out by
/// `now`, as its snapshot says, before the budget clock expires them.
pub(crate) async fn hold_expiring(
    conn: &mut PgConnection,
    service_id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Held, sqlx::Error> {
    let rows: Vec<(Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
        "select (r.value ->> 'task_id')::uuid, (r.value ->> 'agent_id')::uuid \
         from service_budgets b, jsonb_each(b.state -> 'reservations') r \
         where b.service_id = $1 and (r.value ->> 'expires_at')::timestamptz <= $2",
    )
    .bind(service_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let tasks: Vec<Uuid> = rows.iter().filter_map(|r| r.0).collect();
    let agents: Vec<Uuid> = rows.iter().filter_map(|r| r.1).collect();
    hold(conn, &tasks, &agents).await
}

impl Held {
    /// Their spend as committed (the agents' as of `today`): no other command moves it until the
    /// transaction ends.
    pub(crate) async fn read(&self, conn: &mut PgConnection, today: NaiveDate) -> Result<Spends, sqlx::Error> {
        let mut spends = Spends::default();
        if !self.tasks.is_empty() {
            let rows: Vec<TaskRow> = sqlx::query_as(
                "select task_id, max_cost, settled, reserved from task_spending where task_id = any($1)",
            )
            .bind(&self.tasks)
            .fetch_all(&mut *conn)
            .await?;
            spends.tasks = rows.into_iter().map(|row| (row.0, task_spend(row))).collect();
        }
        if !self.agents.is_empty() {
            let rows: Vec<AgentRow> = sqlx::query_as(
                "select agent_id, daily_cap, day, settled, reserved from agent_spending where agent_id = any($1)",
            )
            .bind(&self.agents)
            .fetch_all(&mut *conn)
            .await?;
            spends.agents = rows.into_iter().map(|row| (row.0, agent_spend(row, today))).collect();
        }
        Ok(spends)
    }
}

/// A task's spend, without locking; `None` before it spent anything or had a cap.
pub async fn of<'c>(executor: impl sqlx::PgExecutor<'c>, task_id: Uuid) -> Result<Option<TaskSpend>, sqlx::Error> {
    let row: Option<TaskRow> =
        sqlx::query_as("select task_id, max_cost, settled, reserved from task_spending where task_id = $1")
            .bind(task_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(task_spend))
}

/// An agent's spend on `today`, without locking; `None` before it spent anything or had a cap.
pub async fn of_agent<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    agent_id: Uuid,
    today: NaiveDate,
) -> Result<Option<AgentSpend>, sqlx::Error> {
    let row: Option<AgentRow> =
        sqlx::query_as("select agent_id, daily_cap, day, settled, reserved from agent_spending where agent_id = $1")
            .bind(agent_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|row| agent_spend(row, today)))
}

/// How far settled and reserved spend move, in millionths, per task and per agent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Moves {
    pub tasks: BTreeMap<Uuid, (i64, i64)>,
    pub agents: BTreeMap<Uuid, (i64, i64)>,
}

impl Moves {
    fn add(&mut self, task: Option<Uuid>, agent: Option<Uuid>, settled: i64, reserved: i64) {
        for (map, id) in [(&mut self.tasks, task), (&mut self.agents, agent)] {
            if let Some(id) = id {
                let entry = map.entry(id).or_insert((0, 0));
                entry.0 += settled;
                entry.1 += reserved;
            }
        }
    }
}

/// What `events`, applied in order to a service in state `before`, move for each task and agent: a
/// charge settles for the task and agent it names (else its reservation's) and frees its
/// reservation; an expiry frees one.
pub(crate) fn moved(before: &ServiceState, events: &[ServiceEvent]) -> Moves {
    let mut moves = Moves::default();
    // Reservations made by earlier events of the same batch, so that the state is not cloned.
    let mut made: BTreeMap<Uuid, Reservation> = BTreeMap::new();
    let freed = |id: &Uuid, made: &mut BTreeMap<Uuid, Reservation>| {
        made.remove(id).or_else(|| before.reservations.get(id).cloned())
    };
    for event in events {
        match event {
            ServiceEvent::UsageAuthorized { reservation_id, amount, task_id, agent_id, expires_at, .. } => {
                moves.add(*task_id, *agent_id, 0, amount.micros());
                let reservation =
                    Reservation { amount: *amount, expires_at: *expires_at, task_id: *task_id, agent_id: *agent_id };
                made.insert(*reservation_id, reservation);
            }
            ServiceEvent::UsageCharged { reservation_id, amount, task_id, agent_id, .. } => {
                let held = reservation_id.as_ref().and_then(|r| freed(r, &mut made));
                if let Some(held) = &held {
                    moves.add(held.task_id, held.agent_id, 0, -held.amount.micros());
                }
                let task = task_id.or(held.as_ref().and_then(|h| h.task_id));
                let agent = agent_id.or(held.as_ref().and_then(|h| h.agent_id));
                moves.add(task, agent, amount.micros(), 0);
            }
            ServiceEvent::ReservationExpired { reservation_id, .. } => {
                if let Some(held) = freed(reservation_id, &mut made) {
                    moves.add(held.task_id, held.agent_id, 0, -held.amount.micros());
                }
            }
            _ => {}
        }
    }
    moves.tasks.retain(|_, m| *m != (0, 0));
    moves.agents.retain(|_, m| *m != (0, 0));
    moves
}

/// A task or an agent without a row yet has spent nothing: what it moves is positive (a
/// reservation it freed was counted when made, or by the migration that made the table).
const MOVE_TASKS: &str = "insert into task_spending (task_id, settled, reserved) \
     select task_id, settled, reserved from unnest($1::uuid[], $2::bigint[], $3::bigint[]) as m (task_id, settled, reserved) \
     on conflict (task_id) do update set settled = greatest(task_spending.settled + excluded.settled, 0), \
         reserved = greatest(task_spending.reserved + excluded.reserved, 0)";

/// An agent's row keeps what it settled on its `day`: a move of a later day starts the day anew.
const MOVE_AGENTS: &str = "insert into agent_spending (agent_id, day, settled, reserved) \
     select agent_id, $4::date, settled, reserved \
     from unnest($1::uuid[], $2::bigint[], $3::bigint[]) as m (agent_id, settled, reserved) \
     on conflict (agent_id) do update set \
         settled = case when agent_spending.day < excluded.day then excluded.settled \
                        else agent_spending.settled + excluded.settled end, \
         day = greatest(agent_spending.day, excluded.day), \
         reserved = greatest(agent_spending.reserved + excluded.reserved, 0)";

/// `beside`, or a new change, that also moves the spend by `moves`, an agent's settled spend on
/// `day`; `beside` as it is when nothing moves.
pub(crate) fn and_moved(beside: Option<Beside>, moves: &Moves, day: NaiveDate) -> Option<Beside> {
    let mut beside = beside;
    let columns = |map: &BTreeMap<Uuid, (i64, i64)>| {
        (
            map.keys().copied().collect::<Vec<_>>(),
            map.values().map(|m| m.0).collect::<Vec<_>>(),
            map.values().map(|m| m.1).collect::<Vec<_>>(),
        )
    };
    if !moves.tasks.is_empty() {
        let (ids, settled, reserved) = columns(&moves.tasks);
        let bind = |a: &mut sqlx::postgres::PgArguments| {
            a.add(ids)?;
            a.add(settled)?;
            a.add(reserved)
        };
        beside = Some(match beside {
            Some(beside) => beside.and(MOVE_TASKS, bind),
            None => Beside::new(MOVE_TASKS, bind),
        });
    }
    if !moves.agents.is_empty() {
        let (ids, settled, reserved) = columns(&moves.agents);
        let bind = |a: &mut sqlx::postgres::PgArguments| {
            a.add(ids)?;
            a.add(settled)?;
            a.add(reserved)?;
            a.add(day)
        };
        beside = Some(match beside {
            Some(beside) => beside.and(MOVE_AGENTS, bind),
            None => Beside::new(MOVE_AGENTS, bind),
        });
    }
    beside
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

/// The change that writes agent `agent_id`'s daily cap, or lifts it.
pub(crate) fn agent_cap(agent_id: Uuid, daily_cap: Option<Money>) -> Beside {
    Beside::new(
        "insert into agent_spending (agent_id, daily_cap) values ($1, $2) \
         on conflict (agent_id) do update set daily_cap = excluded.daily_cap",
        |a| {
            a.add(agent_id)?;
            a.add(daily_cap.map(Money::micros))
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
    const AGENT: Uuid = Uuid::from_u128(3);

    #[test]
    fn authorizations_reserve_charges_settle_and_free_and_expiries_free() {
        let (r1, r2) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let mut before = ServiceState::default();
        let reservation =
            Reservation { amount: m("2"), expires_at: Utc::now(), task_id: Some(TASK), agent_id: Some(AGENT) };
        before.reservations.insert(r1, reservation);
        let events = [
            ServiceEvent::UsageAuthorized {
                reservation_id: r2,
                amount: m("3"),
                task_id: Some(OTHER),
                agent_id: None,
                requested_service_id: None,
                expires_at: Utc::now(),
            },
            // A charge naming no task nor agent settles for its reservation's.
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
        let expected = Moves {
            tasks: BTreeMap::from([(TASK, (1_500_000, -2_000_000))]),
            agents: BTreeMap::from([(AGENT, (1_500_000, -2_000_000))]),
        };
        assert_eq!(moves, expected, "OTHER's reservation came and went");
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

    #[test]
    fn an_agent_s_settled_spend_counts_on_its_day_only() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let row = (AGENT, Some(5_000_000), today.pred_opt().unwrap(), 4_000_000, 1_000_000);
        let spend = agent_spend(row, today);
        assert_eq!(
            (spend.settled_today, spend.room()),
            (Money::ZERO, Some(m("4"))),
            "yesterday's settled spend is over"
        );
        let spend = agent_spend((AGENT, Some(5_000_000), today, 4_000_000, 1_000_000), today);
        assert_eq!(spend.room(), Some(Money::ZERO));
        let refusal = spend.refusal(m("0.01"), Money::ZERO).unwrap();
        assert_eq!(
            refusal,
            "the agent's daily spending cap of 5.00 has no room for 0.01: 4.00 settled today and 1.00 reserved"
        );
    }
}
