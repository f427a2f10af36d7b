//! The service aggregate: an external service agents spend money on, with a monthly budget.
//!
//! Spending is two steps. An authorization reserves an estimate (`UsageAuthorized`), so concurrent
//! requests cannot together pass the budget: the room left is the budget minus what is settled and
//! what is reserved. A charge settles a reservation (`UsageCharged`) and releases what it did not
//! use; a reservation nobody settles expires. Settled spend crossing an alert threshold raises
//! `BudgetThresholdCrossed` once per threshold and period; reaching the budget suspends the service.
//! Periods are calendar months in UTC; a new one resets the spend and reactivates a suspended
//! service.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::money::Money;

mod values;

pub use values::{Currency, Period, ServiceName, Thresholds};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    #[default]
    Absent,
    Active,
    /// Its budget for the period is spent; a new period or a budget increase reactivates it.
    Suspended,
    /// Switched off by a supervisor.
    Inactive,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Absent => "ABSENT",
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Suspended => "SUSPENDED",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }
}

/// Money set aside for one authorized request until it is charged or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub amount: Money,
    pub expires_at: DateTime<Utc>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
}

/// Serializable, so that the write side can keep it as a snapshot beside the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceState {
    pub id: Uuid,
    pub status: ServiceStatus,
    pub name: String,
    pub currency: String,
    pub monthly_budget: Money,
    pub fallback_service_id: Option<Uuid>,
    /// Price per unit, by unit name (`input_token`, `minute`, …).
    pub unit_prices: BTreeMap<String, Money>,
    pub period: Period,
    /// Settled this period.
    pub spent: Money,
    /// Held by open reservations.
    pub reserved: Money,
    pub reservations: BTreeMap<Uuid, Reservation>,
    /// Thresholds already raised this period.
    pub crossed: BTreeSet<u32>,
}

/// Why a request for money was not granted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Inactive,
    Suspended,
    /// Settled plus reserved plus the request would pass the budget.
    NoRoom,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Inactive => "the service is inactive",
            Refusal::Suspended => "the service is suspended: its budget for the period is spent",
            Refusal::NoRoom => "the budget has no room for this amount",
        })
    }
}

impl ServiceState {
    /// What is left to reserve: the budget minus settled and reserved spend.
    pub fn room(&self) -> Money {
        self.monthly_budget.saturating_sub(self.spent.saturating_add(self.reserved))
    }

    /// Whether `amount` could be reserved now (after any period change up to `now`).
    pub fn admits(&self, amount: Money) -> Result<(), Refusal> {
        match self.status {
            ServiceStatus::Active if amount <= self.room() => Ok(()),
            ServiceStatus::Active => Err(Refusal::NoRoom),
            ServiceStatus::Suspended => Err(Refusal::Suspended),
            ServiceStatus::Inactive | ServiceStatus::Absent => Err(Refusal::Inactive),
        }
    }

    /// Where spend is heading at its rate so far this period: the projected spend at the period's
    /// end, and when the budget would run out if before then. `None` in the first hour of a period
    /// (too little to go on) or for a period not current at `now`.
    pub fn forecast(&self, now: DateTime<Utc>) -> Option<Forecast> {
        let (start, end) = (self.period.start(), self.period.end());
        let elapsed = (now - start).num_seconds();
        if now >= end || elapsed < 3_600 {
            return None;
        }
        let length = (end - start).num_seconds();
        let projected = i128::from(self.spent.micros()) * i128::from(length) / i128::from(elapsed);
        let projected = Money::from_micros(projected.min(i128::from(Money::MAX.micros())) as i64);
        let runs_out_at = (!self.spent.is_zero() && projected > self.monthly_budget).then(|| {
            let seconds =
                i128::from(self.monthly_budget.micros()) * i128::from(elapsed) / i128::from(self.spent.micros());
            start + chrono::TimeDelta::seconds(seconds as i64)
        });
        Some(Forecast { projected_spend: projected, runs_out_at })
    }

    /// The state as of `now`: a later period starts with nothing spent and the service active.
    pub fn at(&self, now: DateTime<Utc>) -> ServiceState {
        Service::rollover(self, now).iter().fold(self.clone(), Service::evolve)
    }
}

/// Spend projected from its rate so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    pub projected_spend: Money,
    /// When the budget runs out at this rate, if before the period ends.
    pub runs_out_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterService {
    pub id: Uuid,
    pub name: ServiceName,
    pub currency: Currency,
    pub monthly_budget: Money,
    pub fallback_service_id: Option<Uuid>,
    pub unit_prices: BTreeMap<String, Money>,
}

/// A change to a service's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateService {
    pub name: Option<ServiceName>,
    /// `Some(None)` removes the fallback.
    pub fallback_service_id: Option<Option<Uuid>>,
    pub unit_prices: Option<BTreeMap<String, Money>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCommand {
    Register {
        service: RegisterService,
        now: DateTime<Utc>,
    },
    Update {
        update: UpdateService,
        now: DateTime<Utc>,
    },
    /// Sets the monthly budget (an increase or a cut), saying why.
    ChangeBudget {
        budget: Money,
        reason: String,
        now: DateTime<Utc>,
    },
    SetActive {
        active: bool,
        now: DateTime<Utc>,
    },
    /// Reserves `amount` until `expires_at`. `requested_service_id` is the service first asked, when
    /// the request was delegated here.
    Authorize {
        reservation_id: Uuid,
        amount: Money,
        task_id: Option<Uuid>,
        agent_id: Option<Uuid>,
        requested_service_id: Option<Uuid>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// Records a refused request, here and in the audit trail.
    Refuse {
        amount: Money,
        task_id: Option<Uuid>,
        agent_id: Option<Uuid>,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Settles `amount`, against a reservation (releasing the rest of it) or directly.
    Charge {
        charge_id: Uuid,
        reservation_id: Option<Uuid>,
        amount: Money,
        units: Option<(String, u64)>,
        task_id: Option<Uuid>,
        agent_id: Option<Uuid>,
        thresholds: Thresholds,
        now: DateTime<Utc>,
    },
    /// Releases the reservations that ran out by `now`, and starts a new period if one began.
    Tick {
        now: DateTime<Utc>,
    },
}

impl ServiceCommand {
    /// When the write side decided on it.
    pub fn now(&self) -> DateTime<Utc> {
        use ServiceCommand as C;
        match self {
            C::Register { now, .. }
            | C::Update { now, .. }
            | C::ChangeBudget { now, .. }
            | C::SetActive { now, .. }
            | C::Authorize { now, .. }
            | C::Refuse { now, .. }
            | C::Charge { now, .. }
            | C::Tick { now } => *now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    Registered {
        id: Uuid,
        name: String,
        currency: String,
        monthly_budget: Money,
        fallback_service_id: Option<Uuid>,
        unit_prices: BTreeMap<String, Money>,
        period: Period,
    },
    Updated {
        name: Option<String>,
        fallback_service_id: Option<Option<Uuid>>,
        unit_prices: Option<BTreeMap<String, Money>>,
    },
    BudgetChanged {
        from: Money,
        to: Money,
        reason: String,
    },
    Activated,
    Deactivated,
    UsageAuthorized {
        reservation_id: Uuid,
        amount: Money,
        task_id: Option<Uuid>,
        agent_id: Option<Uuid>,
        requested_service_id: Option<Uuid>,
        expires_at: DateTime<Utc>,
    },
    UsageRefused {
        amount: Money,
        task_id: Option<Uuid>,
        agent_id: Option<Uuid>,
        reason: String,
    },
    UsageCharged {
        charge_id: Uuid,
        reservation_id: Option<Uuid>,
        amount: Money,
        /// What the reservation held beyond the charge, now free again.
        released: Money,
        units: Option<(String, u64)>,
        task_id: Option<Uuid>,
        agent_id: Option<Uuid>,
    },
    ReservationExpired {
        reservation_id: Uuid,
        amount: Money,
    },
    BudgetThresholdCrossed {
        threshold: u32,
        period: Period,
        spent: Money,
        budget: Money,
    },
    Suspended {
        period: Period,
        spent: Money,
        budget: Money,
    },
    Reactivated {
        reason: String,
    },
    PeriodStarted {
        period: Period,
    },
}

impl ServiceEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            ServiceEvent::Registered { .. } => "ServiceRegistered",
            ServiceEvent::Updated { .. } => "ServiceUpdated",
            ServiceEvent::BudgetChanged { .. } => "ServiceBudgetChanged",
            ServiceEvent::Activated => "ServiceActivated",
            ServiceEvent::Deactivated => "ServiceDeactivated",
            ServiceEvent::UsageAuthorized { .. } => "UsageAuthorized",
            ServiceEvent::UsageRefused { .. } => "UsageRefused",
            ServiceEvent::UsageCharged { .. } => "UsageCharged",
            ServiceEvent::ReservationExpired { .. } => "ReservationExpired",
            ServiceEvent::BudgetThresholdCrossed { .. } => "BudgetThresholdCrossed",
            ServiceEvent::Suspended { .. } => "ServiceSuspended",
            ServiceEvent::Reactivated { .. } => "ServiceReactivated",
            ServiceEvent::PeriodStarted { .. } => "ServicePeriodStarted",
        }
    }
}

pub struct Service;

impl Service {
    /// The events that bring `state` to the period of `now`, if a new one began.
    fn rollover(state: &ServiceState, now: DateTime<Utc>) -> Vec<ServiceEvent> {
        let period = Period::of(now);
        if state.status == ServiceStatus::Absent || period <= state.period {
            return vec![];
        }
        let mut events = vec![ServiceEvent::PeriodStarted { period }];
        if state.status == ServiceStatus::Suspended {
            events.push(ServiceEvent::Reactivated { reason: format!("period {period} began") });
        }
        events
    }

    /// The thresholds newly crossed and the suspension that settled spend in `after` calls for.
    fn consequences(after: &ServiceState, thresholds: &Thresholds) -> Vec<ServiceEvent> {
        let (spent, budget) = (after.spent, after.monthly_budget);
        let mut events: Vec<ServiceEvent> = thresholds
            .as_slice()
            .iter()
            .filter(|t| !after.crossed.contains(t) && spent.reaches_percent(**t, budget))
            .map(|t| ServiceEvent::BudgetThresholdCrossed { threshold: *t, period: after.period, spent, budget })
            .collect();
        if after.status == ServiceStatus::Active && spent >= budget {
            events.push(ServiceEvent::Suspended { period: after.period, spent, budget });
        }
        events
    }
}

impl Aggregate for Service {
    const KIND: &'static str = "service";
    type State = ServiceState;
    type Command = ServiceCommand;
    type Event = ServiceEvent;

    fn decide(state: &ServiceState, command: &ServiceCommand) -> Result<Vec<ServiceEvent>, DomainError> {
        use ServiceCommand as C;
        if let C::Register { service: s, now } = command {
            if state.status != ServiceStatus::Absent {
                return Err(DomainError::Conflict(format!("service {} already exists", s.id)));
            }
            if s.fallback_service_id == Some(s.id) {
                return Err(DomainError::invalid("fallbackServiceId", "a service cannot fall back on itself"));
            }
            return Ok(vec![ServiceEvent::Registered {
                id: s.id,
                name: s.name.as_str().to_owned(),
                currency: s.currency.as_str().to_owned(),
                monthly_budget: s.monthly_budget,
                fallback_service_id: s.fallback_service_id,
                unit_prices: s.unit_prices.clone(),
                period: Period::of(*now),
            }]);
        }
        if state.status == ServiceStatus::Absent {
            return Err(DomainError::NotFound(format!("service {}", state.id)));
        }
        let now = command.now();
        let mut events = Service::rollover(state, now);
        let current = events.iter().fold(state.clone(), Service::evolve);
        let more = match command {
            C::Register { .. } => unreachable!("handled above"),
            C::Update { update, .. } => {
                if update.fallback_service_id == Some(Some(state.id)) {
                    return Err(DomainError::invalid("fallbackServiceId", "a service cannot fall back on itself"));
                }
                let nothing =
                    update.name.is_none() && update.fallback_service_id.is_none() && update.unit_prices.is_none();
                if nothing {
                    vec![]
                } else {
                    vec![ServiceEvent::Updated {
                        name: update.name.as_ref().map(|n| n.as_str().to_owned()),
                        fallback_service_id: update.fallback_service_id,
                        unit_prices: update.unit_prices.clone(),
                    }]
                }
            }
            C::ChangeBudget { budget, reason, .. } => {
                if *budget == current.monthly_budget {
                    vec![]
                } else {
                    let mut more = vec![ServiceEvent::BudgetChanged {
                        from: current.monthly_budget,
                        to: *budget,
                        reason: reason.clone(),
                    }];
                    let after = Service::evolve(current.clone(), &more[0]);
                    if current.status == ServiceStatus::Suspended && after.spent < after.monthly_budget {
                        more.push(ServiceEvent::Reactivated { reason: "the budget was increased".into() });
                    } else {
                        more.extend(Service::consequences(&after, &Thresholds(vec![])));
                    }
                    more
                }
            }
            C::SetActive { active: true, .. } if current.status == ServiceStatus::Inactive => {
                let mut more = vec![ServiceEvent::Activated];
                let after = Service::evolve(current.clone(), &more[0]);
                more.extend(Service::consequences(&after, &Thresholds(vec![])));
                more
            }
            C::SetActive { active: false, .. } if current.status != ServiceStatus::Inactive => {
                vec![ServiceEvent::Deactivated]
            }
            C::SetActive { .. } => vec![],
            C::Authorize { reservation_id, amount, task_id, agent_id, requested_service_id, expires_at, .. } => {
                if current.reservations.contains_key(reservation_id) {
                    return Err(DomainError::Conflict(format!("reservation {reservation_id} exists")));
                }
                if let Err(refusal) = current.admits(*amount) {
                    return Err(DomainError::Conflict(refusal.to_string()));
                }
                vec![ServiceEvent::UsageAuthorized {
                    reservation_id: *reservation_id,
                    amount: *amount,
                    task_id: *task_id,
                    agent_id: *agent_id,
                    requested_service_id: *requested_service_id,
                    expires_at: *expires_at,
                }]
            }
            C::Refuse { amount, task_id, agent_id, reason, .. } => vec![ServiceEvent::UsageRefused {
                amount: *amount,
                task_id: *task_id,
                agent_id: *agent_id,
                reason: reason.clone(),
            }],
            C::Charge { charge_id, reservation_id, amount, units, task_id, agent_id, thresholds, .. } => {
                let held = match reservation_id {
                    Some(id) => match current.reservations.get(id) {
                        Some(r) => r.amount,
                        None => {
                            return Err(DomainError::Conflict(format!(
                                "reservation {id} is not open: it was settled, or it expired"
                            )))
                        }
                    },
                    None => Money::ZERO,
                };
                // A charge may use its reservation and whatever room the budget has besides.
                if amount.saturating_sub(held) > current.room() {
                    return Err(DomainError::Conflict(format!(
                        "a charge of {amount} passes the budget: {} reserved for it, {} room besides",
                        held,
                        current.room()
                    )));
                }
                let charged = ServiceEvent::UsageCharged {
                    charge_id: *charge_id,
                    reservation_id: *reservation_id,
                    amount: *amount,
                    released: held.saturating_sub(*amount),
                    units: units.clone(),
                    task_id: *task_id,
                    agent_id: *agent_id,
                };
                let after = Service::evolve(current.clone(), &charged);
                let mut more = vec![charged];
                more.extend(Service::consequences(&after, thresholds));
                more
            }
            C::Tick { now } => current
                .reservations
                .iter()
                .filter(|(_, r)| r.expires_at <= *now)
                .map(|(id, r)| ServiceEvent::ReservationExpired { reservation_id: *id, amount: r.amount })
                .collect(),
        };
        events.extend(more);
        Ok(events)
    }

    fn evolve(mut state: ServiceState, event: &ServiceEvent) -> ServiceState {
        match event {
            ServiceEvent::Registered {
                id,
                name,
                currency,
                monthly_budget,
                fallback_service_id,
                unit_prices,
                period,
            } => {
                state = ServiceState {
                    id: *id,
                    status: ServiceStatus::Active,
                    name: name.clone(),
                    currency: currency.clone(),
                    monthly_budget: *monthly_budget,
                    fallback_service_id: *fallback_service_id,
                    unit_prices: unit_prices.clone(),
                    period: *period,
                    ..ServiceState::default()
                };
            }
            ServiceEvent::Updated { name, fallback_service_id, unit_prices } => {
                if let Some(name) = name {
                    state.name = name.clone();
                }
                if let Some(fallback) = fallback_service_id {
                    state.fallback_service_id = *fallback;
                }
                if let Some(prices) = unit_prices {
                    state.unit_prices = prices.clone();
                }
            }
            ServiceEvent::BudgetChanged { to, .. } => state.monthly_budget = *to,
            ServiceEvent::Activated | ServiceEvent::Reactivated { .. } => state.status = ServiceStatus::Active,
            ServiceEvent::Deactivated => state.status = ServiceStatus::Inactive,
            ServiceEvent::Suspended { .. } => state.status = ServiceStatus::Suspended,
            ServiceEvent::UsageAuthorized { reservation_id, amount, task_id, agent_id, expires_at, .. } => {
                state.reserved = state.reserved.saturating_add(*amount);
                state.reservations.insert(
                    *reservation_id,
                    Reservation { amount: *amount, expires_at: *expires_at, task_id: *task_id, agent_id: *agent_id },
                );
            }
            ServiceEvent::UsageRefused { .. } => {}
            ServiceEvent::UsageCharged { reservation_id, amount, .. } => {
                if let Some(r) = reservation_id.and_then(|id| state.reservations.remove(&id)) {
                    state.reserved = state.reserved.saturating_sub(r.amount);
                }
                state.spent = state.spent.saturating_add(*amount);
            }
            ServiceEvent::ReservationExpired { reservation_id, .. } => {
                if let Some(r) = state.reservations.remove(reservation_id) {
                    state.reserved = state.reserved.saturating_sub(r.amount);
                }
            }
            ServiceEvent::BudgetThresholdCrossed { threshold, .. } => {
                state.crossed.insert(*threshold);
            }
            ServiceEvent::PeriodStarted { period } => {
                state.period = *period;
                state.spent = Money::ZERO;
                state.crossed.clear();
            }
        }
        state
    }
}

#[cfg(test)]
mod tests;
