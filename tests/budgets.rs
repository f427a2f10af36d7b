//! Budgets: no overspend under concurrency, suspension exactly at the limit, fallback chains (and
//! cycles), idempotent usage requests, thresholds once per period, expiring reservations, and the
//! month turning over (with an injected clock).

use chrono::{Datelike, TimeZone, Utc};
use devart_commands::budgets::{ChargeRequest, UsageRequest};
use devart_commands::CommandContext;
use devart_domain::money::Money;
use devart_domain::service::{Service, ServiceEvent, ServiceState, ServiceStatus, UpdateService};
use devart_domain::{Actor, Aggregate, Event};
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use crate::support::{register_service, TestEnv, WsClient};

fn money(s: &str) -> Money {
    Money::parse("amount", s).unwrap()
}

fn agent(n: usize) -> CommandContext {
    CommandContext::new(Actor::agent(Uuid::from_u128(n as u128).to_string()))
}

fn usage(service: Uuid, amount: Money, key: String) -> UsageRequest {
    UsageRequest { service_id: service, amount, task_id: None, agent_id: None, idempotency_key: key }
}

fn charge(service: Uuid, amount: Money, reservation: Option<Uuid>, key: String) -> ChargeRequest {
    ChargeRequest {
        service_id: service,
        amount,
        reservation_id: reservation,
        units: None,
        task_id: None,
        agent_id: None,
        idempotency_key: key,
    }
}

/// The service's events, in stream order.
async fn history(env: &TestEnv, service: Uuid) -> Vec<ServiceEvent> {
    let stream = devart_domain::StreamId::new(Service::KIND, service);
    env.store
        .read_stream(&stream, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r.event {
            Event::Service(e) => e,
            other => panic!("not a service event: {other:?}"),
        })
        .collect()
}

/// 64 agents authorize and charge against one service at once until it refuses them; then one
/// more fills the room to the cent. At no point of the history do settled plus reserved spend
/// pass the budget, every approval had room when it was made, the suspension comes exactly at the
/// limit, and the state folded from the events equals the snapshot commands decide on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_never_overspend_one_service() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let service = register_service(&commands, "llm", "250.00", None).await;
    let workers: Vec<_> = (0..64)
        .map(|n| {
            let commands = commands.clone();
            tokio::spawn(async move {
                let (mut approved, mut refused_in_a_row) = (0u32, 0u32);
                let mut i = 0;
                while refused_in_a_row < 3 {
                    i += 1;
                    let (estimate, used) = {
                        let mut rng = rand::thread_rng();
                        let estimate = rng.gen_range(10..=300i64) * 10_000; // 0.10 to 3.00
                        let used = if rng.gen_bool(0.2) { rng.gen_range(0..=estimate) } else { estimate };
                        (Money::from_micros(estimate), Money::from_micros(used))
                    };
                    let answer = commands
                        .services()
                        .authorize_usage(&usage(service, estimate, format!("a{n}-{i}")), &agent(n))
                        .await
                        .unwrap();
                    if !answer.approved {
                        refused_in_a_row += 1;
                        continue;
                    }
                    refused_in_a_row = 0;
                    approved += 1;
                    commands
                        .services()
                        .record_charge(&charge(service, used, answer.reservation_id, format!("c{n}-{i}")), &agent(n))
                        .await
                        .unwrap();
                }
                approved
            })
        })
        .collect();
    let mut approvals = 0;
    for worker in workers {
        approvals += worker.await.unwrap();
    }
    assert!(approvals > 100, "only {approvals} approvals");

    // Fill what is left exactly.
    let snapshot = commands.services().get(service).await.unwrap().unwrap();
    assert_eq!(snapshot.state.reserved, Money::ZERO);
    let room = snapshot.state.room();
    assert_eq!(snapshot.state.status, ServiceStatus::Active, "not suspended before the limit");
    if !room.is_zero() {
        let last = commands.services().authorize_usage(&usage(service, room, "last".into()), &agent(99)).await.unwrap();
        assert!(last.approved, "{last:?}");
        let receipt = commands
            .services()
            .record_charge(&charge(service, room, last.reservation_id, "last".into()), &agent(99))
            .await
            .unwrap();
        assert!(receipt.suspended);
        assert_eq!(receipt.remaining, Money::ZERO);
    }
    let over =
        commands.services().authorize_usage(&usage(service, money("0.01"), "over".into()), &agent(99)).await.unwrap();
    assert!(!over.approved);

    // The history, event by event.
    let events = history(&env, service).await;
    let budget = money("250.00");
    let mut state = ServiceState::default();
    let mut suspended_at = None;
    for (i, event) in events.iter().enumerate() {
        if let ServiceEvent::UsageAuthorized { amount, .. } = event {
            assert!(state.status == ServiceStatus::Active, "approved while {:?}", state.status);
            assert!(*amount <= state.room(), "event {i}: approved {amount} with {} room", state.room());
        }
        if let ServiceEvent::Suspended { spent, .. } = event {
            assert!(suspended_at.is_none(), "suspended twice");
            assert_eq!(*spent, budget, "suspended at {spent}, not at the limit");
            suspended_at = Some(i);
        }
        state = Service::evolve(state, event);
        assert!(state.spent.saturating_add(state.reserved) <= budget, "event {i}: over budget");
    }
    assert_eq!(state.spent, budget);
    assert!(suspended_at.is_some(), "never suspended");
    let crossed: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            ServiceEvent::BudgetThresholdCrossed { threshold, .. } => Some(*threshold),
            _ => None,
        })
        .collect();
    assert_eq!(crossed, [50, 80, 100], "each threshold once, in order");
    let settled: i64 = events
        .iter()
        .filter_map(|e| match e {
            ServiceEvent::UsageCharged { amount, .. } => Some(amount.micros()),
            _ => None,
        })
        .sum();
    assert_eq!(Money::from_micros(settled), budget);
    assert_eq!(commands.services().get(service).await.unwrap().unwrap().state, state, "snapshot equals the fold");
    // Followers of the global order (projections, the bus) meet the service's events in its order.
    assert_eq!(env.out_of_stream_order().await, 0, "events placed before an earlier version of their own stream");
    eprintln!(
        "64 agents on a 250.00 budget: {approvals} approvals, {} events, settled {}",
        events.len(),
        Money::from_micros(settled)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_full_service_delegates_along_its_fallback_chain_and_a_cycle_ends() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let cheap = register_service(&commands, "cheap", "10.00", None).await;
    let middle = register_service(&commands, "middle", "1.00", Some(cheap)).await;
    let premium = register_service(&commands, "premium", "1.00", Some(middle)).await;

    let answer =
        commands.services().authorize_usage(&usage(premium, money("5"), "k1".into()), &agent(1)).await.unwrap();
    assert!(answer.approved);
    assert_eq!(answer.service_id, cheap, "premium and middle have no room for 5.00");
    assert!(answer.reason.as_deref().unwrap().starts_with(&format!("delegated to service {cheap}")));
    assert_eq!(answer.remaining, money("5"));
    let delegated = history(&env, cheap).await;
    assert!(matches!(
        delegated.last(),
        Some(ServiceEvent::UsageAuthorized { requested_service_id: Some(p), .. }) if *p == premium
    ));

    // A cycle: cheap falls back on premium. Nothing has room for 50: refused after one round.
    let admin = CommandContext::new(Actor::user("admin"));
    let update = UpdateService { fallback_service_id: Some(Some(premium)), ..UpdateService::default() };
    commands.services().update(cheap, update, &admin).await.unwrap();
    let refused =
        commands.services().authorize_usage(&usage(premium, money("50"), "k2".into()), &agent(1)).await.unwrap();
    assert!(!refused.approved);
    assert_eq!(refused.service_id, premium);
    assert_eq!(
        refused.reason.as_deref(),
        Some("the budget has no room for this amount, and none of its 2 fallback(s) has room")
    );
    assert!(matches!(history(&env, premium).await.last(), Some(ServiceEvent::UsageRefused { .. })));
    // A service cannot fall back on itself.
    let own = UpdateService { fallback_service_id: Some(Some(cheap)), ..UpdateService::default() };
    assert!(commands.services().update(cheap, own, &admin).await.is_err());
    env.cleanup().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_gets_the_first_answer_and_changes_nothing() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let service = register_service(&commands, "llm", "10.00", None).await;
    let first =
        commands.services().authorize_usage(&usage(service, money("4"), "same".into()), &agent(1)).await.unwrap();
    let again =
        commands.services().authorize_usage(&usage(service, money("4"), "same".into()), &agent(1)).await.unwrap();
    assert_eq!(first, again);
    // Another agent's key of the same spelling is its own request.
    let other =
        commands.services().authorize_usage(&usage(service, money("4"), "same".into()), &agent(2)).await.unwrap();
    assert_ne!(other.reservation_id, first.reservation_id);
    let receipt = commands
        .services()
        .record_charge(&charge(service, money("3"), first.reservation_id, "c".into()), &agent(1))
        .await
        .unwrap();
    let repeated = commands
        .services()
        .record_charge(&charge(service, money("3"), first.reservation_id, "c".into()), &agent(1))
        .await
        .unwrap();
    assert_eq!(receipt, repeated);
    assert_eq!(receipt.released, money("1"));
    let events = history(&env, service).await;
    let count = |ty: &str| events.iter().filter(|e| e.event_type() == ty).count();
    assert_eq!((count("UsageAuthorized"), count("UsageCharged")), (2, 1));
    let state = commands.services().get(service).await.unwrap().unwrap().state;
    assert_eq!((state.spent, state.reserved, state.room()), (money("3"), money("4"), money("3")));
    // A charge on a settled reservation is refused.
    let twice = commands
        .services()
        .record_charge(&charge(service, money("1"), first.reservation_id, "c2".into()), &agent(1))
        .await;
    assert!(twice.is_err());
    env.cleanup().await;
}

#[tokio::test]
async fn reservations_expire_and_a_new_month_reactivates_and_restarts_thresholds() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let service = register_service(&commands, "llm", "10.00", None).await;
    let held = commands.services().authorize_usage(&usage(service, money("6"), "h".into()), &agent(1)).await.unwrap();
    assert!(held.approved);
    assert_eq!(commands.services().tick(Utc::now()).await.unwrap(), 0, "nothing due yet");
    let later = Utc::now() + commands.settings().current().reservation_ttl() + chrono::TimeDelta::seconds(1);
    commands.services().tick(later).await.unwrap();
    let state = commands.services().get(service).await.unwrap().unwrap().state;
    assert_eq!((state.reserved, state.room()), (Money::ZERO, money("10")));

    // Spend it all: suspended.
    let all = commands.services().authorize_usage(&usage(service, money("10"), "all".into()), &agent(1)).await.unwrap();
    let receipt = commands
        .services()
        .record_charge(&charge(service, money("10"), all.reservation_id, "all".into()), &agent(1))
        .await
        .unwrap();
    assert!(receipt.suspended);
    let refused =
        commands.services().authorize_usage(&usage(service, money("1"), "no".into()), &agent(1)).await.unwrap();
    assert_eq!(refused.reason.as_deref(), Some("the service is suspended: its budget for the period is spent"));

    // The first second of next month (the clock injected): reactivated, nothing spent.
    let now = Utc::now();
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let next_month = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).unwrap();
    commands.services().tick(next_month).await.unwrap();
    let state = commands.services().get(service).await.unwrap().unwrap().state;
    assert_eq!((state.status, state.spent), (ServiceStatus::Active, Money::ZERO));
    assert!(state.crossed.is_empty(), "thresholds restart");
    let tail: Vec<&str> = history(&env, service).await.iter().rev().take(2).map(|e| e.event_type()).collect();
    assert_eq!(tail, ["ServiceReactivated", "ServicePeriodStarted"]);
    assert_eq!(commands.services().tick(next_month).await.unwrap(), 0, "a period starts once");

    let again =
        commands.services().authorize_usage(&usage(service, money("10"), "again".into()), &agent(1)).await.unwrap();
    let receipt = commands
        .services()
        .record_charge(&charge(service, money("10"), again.reservation_id, "again".into()), &agent(1))
        .await
        .unwrap();
    assert!(receipt.suspended);

    // An increase that makes room reactivates at once.
    let admin = CommandContext::new(Actor::user("admin"));
    let state =
        commands.services().increase_budget(service, money("5"), "one more release".into(), &admin).await.unwrap();
    assert_eq!((state.status, state.room()), (ServiceStatus::Active, money("5")));
    env.cleanup().await;
}

#[tokio::test]
async fn budgets_through_graphql_with_decimal_strings_delegation_and_roles() {
    let env = TestEnv::new().await;
    let running = env.start(&[devart::Role::Gateway, devart::Role::Relay, devart::Role::Projections]).await;
    let mut ws = WsClient::connect(&running, &running.token).await;
    ws.subscribe("s", "subscription { serviceUpdates { name status spent reserved remaining } }", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let register = "mutation($input: RegisterServiceInput!) { registerService(input: $input) { id name status monthlyBudget remaining period } }";
    let gpt = running.graphql(register, json!({ "input": { "name": "gpt", "monthlyBudget": "10.00" } })).await;
    let gpt = &gpt["data"]["registerService"];
    assert_eq!(
        (gpt["monthlyBudget"].as_str(), gpt["remaining"].as_str(), gpt["status"].as_str()),
        (Some("10.00"), Some("10.00"), Some("ACTIVE")),
        "{gpt}"
    );
    let gpt_id = gpt["id"].as_str().unwrap().to_owned();
    let cheap = running.graphql(register, json!({ "input": { "name": "cheap", "monthlyBudget": "100", "unitPrices": [{ "unit": "token", "price": "0.000002" }] } })).await;
    let cheap_id = cheap["data"]["registerService"]["id"].as_str().unwrap_or_else(|| panic!("{cheap}")).to_owned();
    // Money is never a float, and never negative.
    for bad in [json!(12.5), json!("-1"), json!("1.0000001")] {
        let refused = running.graphql(register, json!({ "input": { "name": "x", "monthlyBudget": bad } })).await;
        assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    }
    let update =
        "mutation($id: ID!, $f: ID) { updateService(id: $id, input: { fallbackServiceId: $f }) { fallbackServiceId } }";
    let updated = running.graphql(update, json!({ "id": gpt_id, "f": cheap_id })).await;
    assert_eq!(updated["data"]["updateService"]["fallbackServiceId"], cheap_id.as_str(), "{updated}");

    let agent = running
        .graphql("mutation { registerAgent(input: { name: \"spender\", capabilities: [] }) { apiKey } }", json!({}))
        .await;
    let key = agent["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned();
    let authorize = "mutation($s: ID!, $c: Decimal!, $k: String!) { authorizeUsage(serviceId: $s, estimatedCost: $c, idempotencyKey: $k) { approved serviceId reservationId reason remaining } }";
    let first = running.graphql_as(&key, authorize, json!({ "s": gpt_id, "c": "6.00", "k": "k1" })).await;
    let first = first["data"]["authorizeUsage"].clone();
    assert_eq!(
        (first["approved"].as_bool(), first["serviceId"].as_str(), first["remaining"].as_str()),
        (Some(true), Some(gpt_id.as_str()), Some("4.00")),
        "{first}"
    );
    let again = running.graphql_as(&key, authorize, json!({ "s": gpt_id, "c": "6.00", "k": "k1" })).await;
    assert_eq!(again["data"]["authorizeUsage"], first, "the same key, the same answer");

    let charge = "mutation($input: RecordChargeInput!) { recordCharge(input: $input) { amount released spent remaining suspended } }";
    let receipt = running
        .graphql_as(&key, charge, json!({ "input": { "serviceId": gpt_id, "amount": "5.5", "reservationId": first["reservationId"], "units": { "unit": "token", "count": 1200 }, "idempotencyKey": "c1" } }))
        .await;
    assert_eq!(
        receipt["data"]["recordCharge"],
        json!({ "amount": "5.50", "released": "0.50", "spent": "5.50", "remaining": "4.50", "suspended": false }),
        "{receipt}"
    );
    // Supervisors watching see the spend live.
    loop {
        let update = ws.next_data(std::time::Duration::from_secs(10)).await["serviceUpdates"].clone();
        if update["name"] == "gpt" && update["spent"] == "5.50" {
            assert_eq!((update["reserved"].as_str(), update["remaining"].as_str()), (Some("0.00"), Some("4.50")));
            break;
        }
    }
    let delegated = running.graphql_as(&key, authorize, json!({ "s": gpt_id, "c": "6.00", "k": "k2" })).await;
    let delegated = &delegated["data"]["authorizeUsage"];
    assert_eq!(
        (delegated["approved"].as_bool(), delegated["serviceId"].as_str()),
        (Some(true), Some(cheap_id.as_str())),
        "{delegated}"
    );
    assert!(delegated["reason"].as_str().unwrap().contains("delegated"));

    // Viewers read, but neither steer nor spend.
    let viewer = env.token(devart_gateway::Role::Viewer);
    let refused =
        running.graphql_as(&viewer, register, json!({ "input": { "name": "v", "monthlyBudget": "1" } })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let refused = running.graphql_as(&viewer, authorize, json!({ "s": gpt_id, "c": "1", "k": "v" })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let listed = running
        .graphql_as(
            &viewer,
            "{ services { name spent reserved remaining thresholdsCrossed fallbackServiceId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["data"]["services"],
        json!([
            { "name": "cheap", "spent": "0.00", "reserved": "6.00", "remaining": "94.00", "thresholdsCrossed": [], "fallbackServiceId": null },
            { "name": "gpt", "spent": "5.50", "reserved": "0.00", "remaining": "4.50", "thresholdsCrossed": [50], "fallbackServiceId": cheap_id },
        ]),
        "{listed}"
    );
    let increase = "mutation($s: ID!, $a: Decimal!) { increaseBudget(serviceId: $s, amount: $a, reason: \"launch week\") { monthlyBudget remaining } }";
    let zero = running.graphql(increase, json!({ "s": gpt_id, "a": "0" })).await;
    assert_eq!(zero["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let raised = running.graphql(increase, json!({ "s": gpt_id, "a": "5" })).await;
    assert_eq!(raised["data"]["increaseBudget"], json!({ "monthlyBudget": "15.00", "remaining": "9.50" }));

    // The services read model equals a rebuild from the store.
    env.sequence_all().await;
    env.wait_projected("services", env.store.head().await.unwrap().0).await;
    let live = env.checksum("services").await;
    devart_projections::rebuild::rebuild(
        &env.pool,
        &env.store,
        &devart_projections::services::ServicesProjection,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(env.checksum("services").await, live);
    running.stop().await;
    env.cleanup().await;
}
