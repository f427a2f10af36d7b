use super::*;
use chrono::TimeZone;

use crate::aggregate::given;

const ID: Uuid = Uuid::from_u128(1);

fn money(s: &str) -> Money {
    Money::parse("amount", s).unwrap()
}

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap()
}

fn registered() -> ServiceEvent {
    ServiceEvent::Registered {
        id: ID,
        name: "llm".into(),
        currency: "USD".into(),
        monthly_budget: money("100"),
        fallback_service_id: None,
        unit_prices: BTreeMap::new(),
        period: Period { year: 2026, month: 11 },
    }
}

fn authorized(n: u128, amount: &str) -> ServiceEvent {
    ServiceEvent::UsageAuthorized {
        reservation_id: Uuid::from_u128(n),
        amount: money(amount),
        task_id: None,
        agent_id: None,
        requested_service_id: None,
        expires_at: at(2),
    }
}

fn authorize(n: u128, amount: &str) -> ServiceCommand {
    ServiceCommand::Authorize {
        reservation_id: Uuid::from_u128(n),
        amount: money(amount),
        task_id: None,
        agent_id: None,
        requested_service_id: None,
        expires_at: at(2),
        now: at(1),
    }
}

fn charge(n: u128, amount: &str) -> ServiceCommand {
    ServiceCommand::Charge {
        charge_id: Uuid::from_u128(100 + n),
        reservation_id: Some(Uuid::from_u128(n)),
        amount: money(amount),
        units: None,
        task_id: None,
        agent_id: None,
        thresholds: Thresholds::default(),
        now: at(1),
    }
}

fn charged(n: u128, amount: &str, released: &str) -> ServiceEvent {
    ServiceEvent::UsageCharged {
        charge_id: Uuid::from_u128(100 + n),
        reservation_id: Some(Uuid::from_u128(n)),
        amount: money(amount),
        released: money(released),
        units: None,
        task_id: None,
        agent_id: None,
    }
}

#[test]
fn reservations_count_against_the_budget() {
    given::<Service>([registered(), authorized(1, "60")]).when(authorize(2, "40")).then([authorized(2, "40")]);
    given::<Service>([registered(), authorized(1, "60")])
        .when(authorize(2, "40.000001"))
        .then_error(DomainError::Conflict("the budget has no room for this amount".into()));
}

#[test]
fn a_charge_settles_its_reservation_and_crosses_thresholds_once() {
    given::<Service>([registered(), authorized(1, "60")]).when(charge(1, "55")).then([
        charged(1, "55", "5"),
        ServiceEvent::BudgetThresholdCrossed {
            threshold: 50,
            period: Period { year: 2026, month: 11 },
            spent: money("55"),
            budget: money("100"),
        },
    ]);
    let history = [
        registered(),
        authorized(1, "60"),
        charged(1, "55", "5"),
        ServiceEvent::BudgetThresholdCrossed {
            threshold: 50,
            period: Period { year: 2026, month: 11 },
            spent: money("55"),
            budget: money("100"),
        },
        authorized(2, "10"),
    ];
    given::<Service>(history).when(charge(2, "10")).then([charged(2, "10", "0")]);
}

#[test]
fn reaching_the_budget_suspends_and_an_increase_reactivates() {
    let history = [registered(), authorized(1, "100")];
    let events = Service::decide(&Service::fold(&history), &charge(1, "100")).unwrap();
    assert_eq!(
        events.last().unwrap(),
        &ServiceEvent::Suspended {
            period: Period { year: 2026, month: 11 },
            spent: money("100"),
            budget: money("100"),
        }
    );
    assert_eq!(events.iter().filter(|e| matches!(e, ServiceEvent::BudgetThresholdCrossed { .. })).count(), 3);
    let mut all = history.to_vec();
    all.extend(events);
    let suspended = Service::fold(&all);
    assert_eq!(suspended.admits(money("0.01")), Err(Refusal::Suspended));
    given::<Service>(all.clone())
        .when(ServiceCommand::ChangeBudget { budget: money("150"), reason: "more work".into(), now: at(3) })
        .then([
            ServiceEvent::BudgetChanged { from: money("100"), to: money("150"), reason: "more work".into() },
            ServiceEvent::Reactivated { reason: "the budget was increased".into() },
        ]);
    // A new month starts afresh.
    let december = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap();
    given::<Service>(all).when(ServiceCommand::Tick { now: december }).then([
        ServiceEvent::PeriodStarted { period: Period { year: 2026, month: 12 } },
        ServiceEvent::Reactivated { reason: "period 2026-12 began".into() },
    ]);
}

#[test]
fn a_charge_beyond_its_reservation_needs_room_and_unknown_reservations_are_refused() {
    given::<Service>([registered(), authorized(1, "60"), authorized(2, "30")]).when(charge(1, "70.000001")).then_error(
        DomainError::Conflict(
            "a charge of 70.000001 passes the budget: 60.00 reserved for it, 10.00 room besides".into(),
        ),
    );
    given::<Service>([registered()]).when(charge(9, "1")).then_error(DomainError::Conflict(format!(
        "reservation {} is not open: it was settled, or it expired",
        Uuid::from_u128(9)
    )));
}

#[test]
fn the_forecast_extrapolates_the_rate_so_far() {
    let mut state = Service::fold(&[registered()]);
    state.spent = money("40");
    // 40 spent in the first 6 days of a 30-day month: 200 by its end, out of 100 on day 16.
    let forecast = state.forecast(Utc.with_ymd_and_hms(2026, 11, 7, 0, 0, 0).unwrap()).unwrap();
    assert_eq!(forecast.projected_spend, money("200"));
    assert_eq!(forecast.runs_out_at, Some(Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap()));
    state.spent = money("10");
    assert_eq!(state.forecast(at(7)).unwrap().runs_out_at, None);
    assert_eq!(state.forecast(Utc.with_ymd_and_hms(2026, 11, 1, 0, 30, 0).unwrap()), None);
}

#[test]
fn expired_reservations_free_their_room() {
    let history = [registered(), authorized(1, "60")];
    given::<Service>(history.clone()).when(ServiceCommand::Tick { now: at(1) }).then([]);
    given::<Service>(history)
        .when(ServiceCommand::Tick { now: at(2) })
        .then([ServiceEvent::ReservationExpired { reservation_id: Uuid::from_u128(1), amount: money("60") }]);
}
