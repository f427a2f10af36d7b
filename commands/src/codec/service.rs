//! Services' budget events on the wire.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use devart_domain::money::Money;
use devart_domain::service::{Period, ServiceEvent};
use devart_domain::DomainError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::Wire;

/// Amounts travel as decimal strings (`"12.50"`), exact in every language.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Amount(pub Money);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Money::parse("amount", &text).map(Amount).map_err(serde::de::Error::custom)
    }
}

/// A budget period travels as `"2026-11"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Month(pub Period);

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Period::parse(&text).map(Month).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a month")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRegistered {
    pub service_id: Uuid,
    pub name: String,
    pub currency: String,
    pub monthly_budget: Amount,
    pub fallback_service_id: Option<Uuid>,
    pub unit_prices: BTreeMap<String, Amount>,
    pub period: Month,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUpdated {
    pub name: Option<String>,
    /// Present when the fallback changed; `fallbackServiceId` is then the new one, or none.
    pub fallback_changed: bool,
    pub fallback_service_id: Option<Uuid>,
    pub unit_prices: Option<BTreeMap<String, Amount>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBudgetChanged {
    pub from: Amount,
    pub to: Amount,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceActivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDeactivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageAuthorized {
    pub reservation_id: Uuid,
    pub amount: Amount,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub requested_service_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRefused {
    pub amount: Amount,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Units {
    pub unit: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageCharged {
    pub charge_id: Uuid,
    pub reservation_id: Option<Uuid>,
    pub amount: Amount,
    pub released: Amount,
    pub units: Option<Units>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationExpired {
    pub reservation_id: Uuid,
    pub amount: Amount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetThresholdCrossed {
    pub threshold: u32,
    pub period: Month,
    pub spent: Amount,
    pub budget: Amount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSuspended {
    pub period: Month,
    pub spent: Amount,
    pub budget: Amount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReactivated {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePeriodStarted {
    pub period: Month,
}

fn prices_to_wire(prices: BTreeMap<String, Money>) -> BTreeMap<String, Amount> {
    prices.into_iter().map(|(unit, price)| (unit, Amount(price))).collect()
}

fn prices_from_wire(prices: BTreeMap<String, Amount>) -> BTreeMap<String, Money> {
    prices.into_iter().map(|(unit, price)| (unit, price.0)).collect()
}

impl From<ServiceEvent> for Wire {
    fn from(event: ServiceEvent) -> Wire {
        use {Amount as A, Month as M};
        match event {
            ServiceEvent::Registered {
                id,
                name,
                currency,
                monthly_budget,
                fallback_service_id,
                unit_prices,
                period,
            } => ServiceRegistered {
                service_id: id,
                name,
                currency,
                monthly_budget: A(monthly_budget),
                fallback_service_id,
                unit_prices: prices_to_wire(unit_prices),
                period: M(period),
            }
            .into(),
            ServiceEvent::Updated { name, fallback_service_id, unit_prices } => ServiceUpdated {
                name,
                fallback_changed: fallback_service_id.is_some(),
                fallback_service_id: fallback_service_id.flatten(),
                unit_prices: unit_prices.map(prices_to_wire),
            }
            .into(),
            ServiceEvent::BudgetChanged { from, to, reason } => {
                ServiceBudgetChanged { from: A(from), to: A(to), reason }.into()
            }
            ServiceEvent::Activated => ServiceActivated {}.into(),
            ServiceEvent::Deactivated => ServiceDeactivated {}.into(),
            ServiceEvent::UsageAuthorized {
                reservation_id,
                amount,
                task_id,
                agent_id,
                requested_service_id,
                expires_at,
            } => UsageAuthorized {
                reservation_id,
                amount: A(amount),
                task_id,
                agent_id,
                requested_service_id,
                expires_at,
            }
            .into(),
            ServiceEvent::UsageRefused { amount, task_id, agent_id, reason } => {
                UsageRefused { amount: A(amount), task_id, agent_id, reason }.into()
            }
            ServiceEvent::UsageCharged { charge_id, reservation_id, amount, released, units, task_id, agent_id } => {
                UsageCharged {
                    charge_id,
                    reservation_id,
                    amount: A(amount),
                    released: A(released),
                    units: units.map(|(unit, count)| Units { unit, count }),
                    task_id,
                    agent_id,
                }
                .into()
            }
            ServiceEvent::ReservationExpired { reservation_id, amount } => {
                ReservationExpired { reservation_id, amount: A(amount) }.into()
            }
            ServiceEvent::BudgetThresholdCrossed { threshold, period, spent, budget } => {
                BudgetThresholdCrossed { threshold, period: M(period), spent: A(spent), budget: A(budget) }.into()
            }
            ServiceEvent::Suspended { period, spent, budget } => {
                ServiceSuspended { period: M(period), spent: A(spent), budget: A(budget) }.into()
            }
            ServiceEvent::Reactivated { reason } => ServiceReactivated { reason }.into(),
            ServiceEvent::PeriodStarted { period } => ServicePeriodStarted { period: M(period) }.into(),
        }
    }
}

impl From<ServiceRegistered> for ServiceEvent {
    fn from(w: ServiceRegistered) -> Self {
        ServiceEvent::Registered {
            id: w.service_id,
            name: w.name,
            currency: w.currency,
            monthly_budget: w.monthly_budget.0,
            fallback_service_id: w.fallback_service_id,
            unit_prices: prices_from_wire(w.unit_prices),
            period: w.period.0,
        }
    }
}

impl TryFrom<ServiceUpdated> for ServiceEvent {
    type Error = DomainError;
    /// A fallback id without `fallbackChanged` is never written: reading it as "unchanged" would
    /// drop what the payload says.
    fn try_from(w: ServiceUpdated) -> Result<Self, DomainError> {
        if !w.fallback_changed && w.fallback_service_id.is_some() {
            return Err(DomainError::invalid("fallbackServiceId", "given, but `fallbackChanged` is false"));
        }
        Ok(ServiceEvent::Updated {
            name: w.name,
            fallback_service_id: w.fallback_changed.then_some(w.fallback_service_id),
            unit_prices: w.unit_prices.map(prices_from_wire),
        })
    }
}

impl From<ServiceBudgetChanged> for ServiceEvent {
    fn from(w: ServiceBudgetChanged) -> Self {
        ServiceEvent::BudgetChanged { from: w.from.0, to: w.to.0, reason: w.reason }
    }
}

impl From<ServiceActivated> for ServiceEvent {
    fn from(_: ServiceActivated) -> Self {
        ServiceEvent::Activated
    }
}

impl From<ServiceDeactivated> for ServiceEvent {
    fn from(_: ServiceDeactivated) -> Self {
        ServiceEvent::Deactivated
    }
}

impl From<UsageAuthorized> for ServiceEvent {
    fn from(w: UsageAuthorized) -> Self {
        ServiceEvent::UsageAuthorized {
            reservation_id: w.reservation_id,
            amount: w.amount.0,
            task_id: w.task_id,
            agent_id: w.agent_id,
            requested_service_id: w.requested_service_id,
            expires_at: w.expires_at,
        }
    }
}

impl From<UsageRefused> for ServiceEvent {
    fn from(w: UsageRefused) -> Self {
        ServiceEvent::UsageRefused { amount: w.amount.0, task_id: w.task_id, agent_id: w.agent_id, reason: w.reason }
    }
}

impl From<UsageCharged> for ServiceEvent {
    fn from(w: UsageCharged) -> Self {
        ServiceEvent::UsageCharged {
            charge_id: w.charge_id,
            reservation_id: w.reservation_id,
            amount: w.amount.0,
            released: w.released.0,
            units: w.units.map(|u| (u.unit, u.count)),
            task_id: w.task_id,
            agent_id: w.agent_id,
        }
    }
}

impl From<ReservationExpired> for ServiceEvent {
    fn from(w: ReservationExpired) -> Self {
        ServiceEvent::ReservationExpired { reservation_id: w.reservation_id, amount: w.amount.0 }
    }
}

impl From<BudgetThresholdCrossed> for ServiceEvent {
    fn from(w: BudgetThresholdCrossed) -> Self {
        ServiceEvent::BudgetThresholdCrossed {
            threshold: w.threshold,
            period: w.period.0,
            spent: w.spent.0,
            budget: w.budget.0,
        }
    }
}

impl From<ServiceSuspended> for ServiceEvent {
    fn from(w: ServiceSuspended) -> Self {
        ServiceEvent::Suspended { period: w.period.0, spent: w.spent.0, budget: w.budget.0 }
    }
}

impl From<ServiceReactivated> for ServiceEvent {
    fn from(w: ServiceReactivated) -> Self {
        ServiceEvent::Reactivated { reason: w.reason }
    }
}

impl From<ServicePeriodStarted> for ServiceEvent {
    fn from(w: ServicePeriodStarted) -> Self {
        ServiceEvent::PeriodStarted { period: w.period.0 }
    }
}
