//! Spending caps on work: 32 spenders on one capped task across two services never take settled
//! plus reserved spend past the cap, at any point of the history; charges and expiries free what
//! they release; the write side's figures equal the history's; the API shows and changes a cap.
//! The same for an agent's daily cap.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use devart::Role;
use devart_commands::budgets::{ChargeRequest, UsageRequest};
use devart_commands::{CommandContext, Commands};
use devart_domain::money::Money;
use devart_domain::service::ServiceEvent;
use devart_domain::task::{CreateTask, Title};
use devart_domain::{Actor, Event, Position};
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use crate::support::{eventually, register_service, TestEnv};

const SPENDERS: usize = 32;

fn money(s: &str) -> Money {
    Money::parse("amount", s).unwrap()
}

async fn capped_task(commands: &Commands, cap: &str) -> Uuid {
    let command =
        CreateTask { max_cost: Some(money(cap)), ..CreateTask::new(Uuid::now_v7(), Title::parse("capped").unwrap()) };
    commands.tasks().create(command, &CommandContext::new(Actor::user("supervisor"))).await.unwrap().state.id
}

fn spender(n: usize) -> CommandContext {
    CommandContext::new(Actor::agent(Uuid::from_u128(n as u128 + 1).to_string()))
}

/// Settled and reserved spend for each task, event by event of the global order, from every
/// service's events: what the cap is held to.
/// (Tasks and agents have ids of their own, so one map holds both.)
struct Ledger {
    reservations: BTreeMap<Uuid, (Money, Option<Uuid>, Option<Uuid>)>,
    settled: BTreeMap<Uuid, Money>,
    reserved: BTreeMap<Uuid, Money>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger { reservations: BTreeMap::new(), settled: BTreeMap::new(), reserved: BTreeMap::new() }
    }

    fn apply(&mut self, event: &ServiceEvent) {
        let add = |map: &mut BTreeMap<Uuid, Money>, task: Option<Uuid>, amount: Money, plus: bool| {
            if let Some(task) = task {
                let entry = map.entry(task).or_default();
                *entry = if plus { entry.saturating_add(amount) } else { entry.saturating_sub(amount) };
            }
        };
        match event {
            ServiceEvent::UsageAuthorized { reservation_id, amount, task_id, agent_id, .. } => {
                self.reservations.insert(*reservation_id, (*amount, *task_id, *agent_id));
                for subject in [*task_id, *agent_id] {
                    add(&mut self.reserved, subject, *amount, true);
                }
            }
            ServiceEvent::UsageCharged { reservation_id, amount, task_id, agent_id, .. } => {
                let held = reservation_id.and_then(|r| self.reservations.remove(&r));
                if let Some((held, task, agent)) = held {
                    for subject in [task, agent] {
                        add(&mut self.reserved, subject, held, false);
                    }
                }
                for subject in [task_id.or(held.and_then(|h| h.1)), agent_id.or(held.and_then(|h| h.2))] {
                    add(&mut self.settled, subject, *amount, true);
                }
            }
            ServiceEvent::ReservationExpired { reservation_id, .. } => {
                if let Some((held, task, agent)) = self.reservations.remove(reservation_id) {
                    for subject in [task, agent] {
                        add(&mut self.reserved, subject, held, false);
                    }
                }
            }
            _ => {}
        }
    }

    fn used(&self, subject: Uuid) -> Money {
        let of = |map: &BTreeMap<Uuid, Money>| map.get(&subject).copied().unwrap_or_default();
        of(&self.settled).saturating_add(of(&self.reserved))
    }
}

/// Every service event of the history in its global order, each seen by `each` after the ledger
/// took it in; the ledger at the end.
async fn walk(env: &TestEnv, mut each: impl FnMut(&Ledger, u64, &ServiceEvent)) -> Ledger {
    env.sequence_all().await;
    let mut ledger = Ledger::new();
    let mut at = Position(0);
    loop {
        let page = env.store.read_all(at, None, 1_000).await.unwrap();
        let Some(last) = page.last() else { break };
        at = last.meta.position.expect("sequenced");
        for recorded in &page {
            let Event::Service(event) = &recorded.event else { continue };
            ledger.apply(event);
            each(&ledger, recorded.meta.position.map_or(0, |p| p.0), event);
        }
    }
    ledger
}

/// 32 spenders authorize against two services for one task capped at 10.00, settle most of what
/// they reserve (some of it more than reserved, some less, some never), until the cap refuses
/// them. Walking the whole history in its global order, settled plus reserved for the task never
/// passes 10.00; the refusals say it was the cap; an expired reservation frees its room; and the
/// write side's figures equal the history's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_spenders_never_take_a_task_past_its_cap() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let cap = money("10.00");
    let services = [
        register_service(&commands, "llm", "1000.00", None).await,
        register_service(&commands, "ci", "1000.00", None).await,
    ];
    let task = capped_task(&commands, "10.00").await;
    let other = capped_task(&commands, "10.00").await;
    let workers: Vec<_> = (0..SPENDERS)
        .map(|n| {
            let commands = commands.clone();
            tokio::spawn(async move {
                let (mut approved, mut refused) = (0u32, 0u32);
                for i in 0.. {
                    if refused >= 3 {
                        break;
                    }
                    let (service, estimate, used, settle) = {
                        let mut rng = rand::thread_rng();
                        let estimate = rng.gen_range(1..=20i64) * 10_000; // 0.01 to 0.20
                        let used = match rng.gen_range(0..10) {
                            0 => estimate + 5_000, // more than reserved: the cap may refuse it
                            1..=3 => rng.gen_range(0..=estimate),
                            _ => estimate,
                        };
                        let service = services[rng.gen_range(0..2)];
                        (service, Money::from_micros(estimate), Money::from_micros(used), rng.gen_bool(0.9))
                    };
                    // Every fifth request names the other task: its spend is its own.
                    let for_task = if i % 5 == 4 { other } else { task };
                    let request = UsageRequest {
                        service_id: service,
                        amount: estimate,
                        task_id: Some(for_task),
                        agent_id: None,
                        idempotency_key: format!("a{n}-{i}"),
                    };
                    let answer = commands.services().authorize_usage(&request, &spender(n)).await.unwrap();
                    if !answer.approved {
                        let reason = answer.reason.unwrap_or_default();
                        assert!(reason.starts_with("the task's spending cap of 10.00 has no room"), "{reason}");
                        refused += 1;
                        continue;
                    }
                    refused = 0;
                    approved += 1;
                    if !settle {
                        continue;
                    }
                    let charge = ChargeRequest {
                        service_id: answer.service_id,
                        amount: used,
                        reservation_id: answer.reservation_id,
                        units: None,
                        task_id: Some(for_task),
                        agent_id: None,
                        idempotency_key: format!("c{n}-{i}"),
                    };
                    if let Err(error) = commands.services().record_charge(&charge, &spender(n)).await {
                        assert!(error.to_string().contains("the task's spending cap"), "{error}");
                    }
                }
                approved
            })
        })
        .collect();
    let mut approvals = 0;
    for worker in workers {
        approvals += worker.await.unwrap();
    }
    assert!(approvals > 60, "only {approvals} approvals");

    let spend = devart_commands::spending::of(&env.pool, task).await.unwrap().unwrap();
    assert!(spend.settled.saturating_add(spend.reserved) <= cap, "{spend:?}");
    assert!(spend.reserved > Money::ZERO, "some reservations were left open: {spend:?}");
    let refused = commands
        .services()
        .authorize_usage(
            &UsageRequest {
                service_id: services[0],
                amount: spend.room().unwrap().saturating_add(money("0.01")),
                task_id: Some(task),
                agent_id: None,
                idempotency_key: "over".into(),
            },
            &spender(99),
        )
        .await
        .unwrap();
    assert!(!refused.approved, "{refused:?}");

    // The reservations nobody settled run out: their room comes back.
    let later = Utc::now() + commands.settings().current().reservation_ttl() + chrono::TimeDelta::seconds(1);
    commands.services().tick(later).await.unwrap();
    let after = devart_commands::spending::of(&env.pool, task).await.unwrap().unwrap();
    assert_eq!((after.settled, after.reserved), (spend.settled, Money::ZERO));

    // The history, event by event, in its global order.
    let (mut authorizations, mut refusals) = (0, 0);
    let ledger = walk(&env, |ledger, position, event| {
        match event {
            ServiceEvent::UsageAuthorized { task_id, .. } if *task_id == Some(task) => authorizations += 1,
            ServiceEvent::UsageRefused { task_id, .. } if *task_id == Some(task) => refusals += 1,
            _ => {}
        }
        for t in [task, other] {
            assert!(ledger.used(t) <= cap, "position {position}: {} for task {t}", ledger.used(t));
        }
    })
    .await;
    assert!(authorizations > 20 && refusals >= 3, "{authorizations} authorizations, {refusals} refusals");
    // Each service's events are in the global order as in their stream: a command waiting for a
    // task's or a service's lock holds no transaction id that would place its events before those
    // of the command it waited for.
    assert_eq!(env.out_of_stream_order().await, 0, "events placed before an earlier version of their own stream");
    for t in [task, other] {
        let spend = devart_commands::spending::of(&env.pool, t).await.unwrap().unwrap();
        let settled = ledger.settled.get(&t).copied().unwrap_or_default();
        assert_eq!((spend.settled, spend.reserved), (settled, Money::ZERO), "task {t}: the table equals the history");
    }
    eprintln!(
        "{SPENDERS} spenders on a 10.00 cap: {authorizations} authorizations, {refusals} refusals, settled {}",
        after.settled
    );
    env.cleanup().await;
}

/// Through GraphQL: a cap given at creation shows on the task with its spending; an authorization
/// past it is refused with the cap's reason; a supervisor raises it (a viewer may not); a cap is
/// an amount, never a number.
#[tokio::test]
async fn the_api_shows_a_task_s_cap_and_spending_and_a_supervisor_changes_it() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let commands = env.commands();
    let service = register_service(&commands, "llm", "100.00", None).await;
    let created = running
        .graphql(
            "mutation { createTask(input: {title: \"capped\", maxCost: \"2.50\"}) { id maxCost spending { settled reserved room } } }",
            json!({}),
        )
        .await;
    let task = &created["data"]["createTask"];
    assert_eq!(task["maxCost"], "2.50", "{created}");
    assert_eq!(task["spending"], json!({ "settled": "0.00", "reserved": "0.00", "room": "2.50" }), "{created}");
    let id = task["id"].as_str().unwrap().to_owned();
    let authorize = "mutation($service: ID!, $task: ID!, $cost: Decimal!, $key: String!) { \
        authorizeUsage(serviceId: $service, estimatedCost: $cost, taskId: $task, idempotencyKey: $key) { approved reason } }";
    let fits = running.graphql(authorize, json!({ "service": service, "task": id, "cost": "2.00", "key": "k1" })).await;
    assert_eq!(fits["data"]["authorizeUsage"]["approved"], true, "{fits}");
    let over = running.graphql(authorize, json!({ "service": service, "task": id, "cost": "0.60", "key": "k2" })).await;
    assert_eq!(over["data"]["authorizeUsage"]["approved"], false, "{over}");
    assert_eq!(
        over["data"]["authorizeUsage"]["reason"],
        "the task's spending cap of 2.50 has no room for 0.60: 0.00 settled and 2.00 reserved"
    );

    let set =
        "mutation($id: ID!, $cap: Decimal!) { setTaskMaxCost(id: $id, maxCost: $cap) { maxCost spending { room } } }";
    let viewer = env.token(devart_gateway::Role::Viewer);
    let refused = running.graphql_as(&viewer, set, json!({ "id": id, "cap": "5.00" })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    let number = running.graphql(set, json!({ "id": id, "cap": 5 })).await;
    assert_eq!(number["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{number}");
    let raised = running.graphql(set, json!({ "id": id, "cap": "5.00" })).await;
    assert_eq!(raised["data"]["setTaskMaxCost"], json!({ "maxCost": "5.00", "spending": { "room": "3.00" } }));
    let again =
        running.graphql(authorize, json!({ "service": service, "task": id, "cost": "0.60", "key": "k3" })).await;
    assert_eq!(again["data"]["authorizeUsage"]["approved"], true, "{again}");

    // The read model catches up with the cap, and the change is in the task's history.
    let read = eventually(Duration::from_secs(10), || async {
        let body = running
            .graphql("query($id: ID!) { task(id: $id) { maxCost spending { reserved } } }", json!({ "id": id }))
            .await;
        (body["data"]["task"]["maxCost"] == "5.00").then_some(body)
    })
    .await;
    assert_eq!(read["data"]["task"]["spending"]["reserved"], "2.60");
    let events: Vec<String> =
        sqlx::query_scalar("select event_type from events where stream_id = 'task-' || $1 order by stream_version")
            .bind(&id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(events, ["TaskCreated", "TaskMaxCostSet", "TaskMaxCostSet"]);
    running.stop().await;
    env.cleanup().await;
}

/// 32 spenders authorize as one agent with a daily cap of 5.00, for tasks of no cap, over two
/// services: walking the history, what the agent settled plus what it holds reserved never passes
/// 5.00; the refusals name the agent's cap; its figures equal the history's; and the API sets,
/// shows and lifts the cap (supervisors only).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_spenders_never_take_an_agent_past_its_daily_cap() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let commands = env.commands();
    let cap = money("5.00");
    let services = [
        register_service(&commands, "llm", "1000.00", None).await,
        register_service(&commands, "ci", "1000.00", None).await,
    ];
    let agent = crate::support::register_agent(&commands, "spender", &[]).await;
    let set = "mutation($id: ID!, $cap: Decimal) { setAgentDailySpendingCap(id: $id, dailyCap: $cap) { id spending { dailyCap room } } }";
    let viewer = env.token(devart_gateway::Role::Viewer);
    let refused = running.graphql_as(&viewer, set, json!({ "id": agent, "cap": "5.00" })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    let capped = running.graphql(set, json!({ "id": agent, "cap": "5.00" })).await;
    assert_eq!(
        capped["data"]["setAgentDailySpendingCap"]["spending"],
        json!({ "dailyCap": "5.00", "room": "5.00" }),
        "{capped}"
    );
    let workers: Vec<_> = (0..SPENDERS)
        .map(|n| {
            let commands = commands.clone();
            tokio::spawn(async move {
                let (mut approved, mut refused) = (0u32, 0u32);
                for i in 0.. {
                    if refused >= 3 {
                        break;
                    }
                    let (service, estimate, used) = {
                        let mut rng = rand::thread_rng();
                        let estimate = rng.gen_range(1..=10i64) * 10_000; // 0.01 to 0.10
                        let used = if rng.gen_bool(0.3) { rng.gen_range(0..=estimate) } else { estimate };
                        (services[rng.gen_range(0..2)], Money::from_micros(estimate), Money::from_micros(used))
                    };
                    let request = UsageRequest {
                        service_id: service,
                        amount: estimate,
                        task_id: Some(Uuid::from_u128(1_000 + n as u128)),
                        agent_id: Some(agent),
                        idempotency_key: format!("a{n}-{i}"),
                    };
                    let answer = commands.services().authorize_usage(&request, &spender(n)).await.unwrap();
                    if !answer.approved {
                        let reason = answer.reason.unwrap_or_default();
                        assert!(reason.starts_with("the agent's daily spending cap of 5.00 has no room"), "{reason}");
                        refused += 1;
                        continue;
                    }
                    refused = 0;
                    approved += 1;
                    let charge = ChargeRequest {
                        service_id: answer.service_id,
                        amount: used,
                        reservation_id: answer.reservation_id,
                        units: None,
                        task_id: request.task_id,
                        agent_id: Some(agent),
                        idempotency_key: format!("c{n}-{i}"),
                    };
                    commands.services().record_charge(&charge, &spender(n)).await.unwrap();
                }
                approved
            })
        })
        .collect();
    let mut approvals = 0;
    for worker in workers {
        approvals += worker.await.unwrap();
    }
    assert!(approvals > 50, "only {approvals} approvals");

    let ledger = walk(&env, |ledger, position, _| {
        assert!(ledger.used(agent) <= cap, "position {position}: {}", ledger.used(agent));
    })
    .await;
    let today = Utc::now().date_naive();
    let spend = devart_commands::spending::of_agent(&env.pool, agent, today).await.unwrap().unwrap();
    let settled = ledger.settled.get(&agent).copied().unwrap_or_default();
    assert_eq!((spend.settled_today, spend.reserved), (settled, Money::ZERO), "the table equals the history");
    assert_eq!(env.out_of_stream_order().await, 0, "events placed before an earlier version of their own stream");

    let shown = eventually(Duration::from_secs(10), || async {
        let body =
            running.graphql("{ agents { id spending { dailyCap settledToday reserved room } } }", json!({})).await;
        let agents = body["data"]["agents"].as_array().cloned().unwrap_or_default();
        agents.into_iter().find(|a| a["id"] == agent.to_string().as_str())
    })
    .await;
    let shown = &shown["spending"];
    assert_eq!((shown["dailyCap"].as_str(), shown["reserved"].as_str()), (Some("5.00"), Some("0.00")), "{shown}");
    assert_eq!(shown["settledToday"], settled.to_string());
    let lifted = running.graphql(set, json!({ "id": agent, "cap": null })).await;
    assert_eq!(lifted["data"]["setAgentDailySpendingCap"]["spending"], json!({ "dailyCap": null, "room": null }));
    let request = UsageRequest {
        service_id: services[0],
        amount: money("1.00"),
        task_id: None,
        agent_id: Some(agent),
        idempotency_key: "after the lift".into(),
    };
    assert!(commands.services().authorize_usage(&request, &spender(0)).await.unwrap().approved);
    eprintln!("{SPENDERS} spenders as one agent on a 5.00 daily cap: {approvals} approvals, settled {settled}");
    running.stop().await;
    env.cleanup().await;
}
