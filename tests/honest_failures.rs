//! Failures told honestly, and limits that bite before the work they protect.
//!
//! - Eight `devart agent` processes work a steady queue while Postgres is stopped for 90 seconds
//!   (longer than any key cache) and started again: no agent exits, clients are told 503 with
//!   `Retry-After` (never 401), an agent started during the outage begins once it is over, and
//!   every task is completed exactly once, without restarting devart.
//! - Floods (5,000 requests from one identity; 5,000 invalid tokens; 5,000 invalid keys) barely
//!   reach Postgres while another identity keeps being served: the test counts the database's
//!   transactions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devart::Role;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::support::cluster::{append, free_port, kill_9, run, Nats, Postgres, Scratch};
use crate::support::TestEnv;

const JWT_SECRET: &str = "outage-secret-outage-secret-outage-secret";
const REGISTER: &str =
    "mutation($name: String!) { registerAgent(input: { name: $name, capabilities: [] }) { apiKey agent { id } } }";
const CREATE: &str = "mutation($title: String!) { createTask(input: { title: $title }) { id } }";

/// How long Postgres is away: longer than a verified key is remembered (60 s).
fn outage() -> Duration {
    Duration::from_secs(std::env::var("DEVART_TEST_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(90))
}

/// One answer from the gateway, as a client saw it.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    retry_after: Option<String>,
    code: Option<String>,
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    query: &str,
    variables: Value,
    key: Option<&str>,
) -> Result<(Seen, Value), String> {
    let mut request = http.post(url).bearer_auth(bearer).json(&json!({ "query": query, "variables": variables }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["errors"][0]["extensions"]["code"].as_str().map(str::to_owned);
    Ok((Seen { status, retry_after, code }, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_agents_ride_out_a_postgres_outage_and_every_task_is_completed_once() {
    let scratch = Scratch::create();
    let postgres = Postgres::create(&scratch.0);
    let mut nats =
        Nats { port: free_port(), store: scratch.0.join("nats"), log: scratch.0.join("nats.log"), child: None };
    nats.start().await;
    let database_url = format!("postgres://postgres@127.0.0.1:{}/devart", postgres.port);
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}/graphql");
    let devart = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_devart"));
        command
            .env("DATABASE_URL", &database_url)
            .env("NATS_URL", format!("nats://127.0.0.1:{}", nats.port))
            .env("DEVART_NATS_PREFIX", "outage")
            .env("DEVART_JWT_SECRET", JWT_SECRET)
            .env("DEVART_LISTEN", &listen)
            .env("DEVART_LOG", "info,sqlx=warn,async_nats=warn");
        command
    };
    run(devart().arg("migrate"));
    let mut serve =
        devart().arg("serve").stdout(Stdio::null()).stderr(append(&scratch.0.join("gateway.log"))).spawn().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("http://{listen}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = devart_gateway::SigningKey::new(JWT_SECRET.as_bytes().to_vec()).issue(
        "operator",
        devart_gateway::Role::Admin,
        chrono::Duration::hours(1),
    );
    let mut keys = Vec::new();
    for i in 0..9 {
        let (_, body) =
            post(&http, &url, &admin, REGISTER, json!({ "name": format!("agent {i}") }), None).await.unwrap();
        let registered = &body["data"]["registerAgent"];
        let key = registered["apiKey"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
        keys.push((key, registered["agent"]["id"].as_str().unwrap().to_owned()));
    }
    let agent = |i: usize| {
        let log = append(&scratch.0.join(format!("agent-{i}.log")));
        tokio::process::Command::new(env!("CARGO_BIN_EXE_devart"))
            .args(["agent", "--url", &url, "--lease-secs", "20", "--poll-ms", "200", "--", "sh", "-c"])
            .arg("sleep 0.2; echo '{\"done\": true}'")
            .env("DEVART_AGENT_KEY", &keys[i].0)
            .env("DEVART_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut agents: Vec<_> = (0..8).map(agent).collect();

    // A steady queue: a task every 100 ms, each retried under its own idempotency key until
    // acknowledged.
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let feeder = tokio::spawn({
        let (http, url, admin, stop, created) =
            (http.clone(), url.clone(), admin.clone(), stop_feeding.clone(), created.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("outage-task-{n}");
                loop {
                    let answer = post(&http, &url, &admin, CREATE, json!({ "title": key }), Some(&key)).await;
                    if let Ok((_, body)) = &answer {
                        if let Some(id) = body["data"]["createTask"]["id"].as_str() {
                            created.lock().unwrap().push(id.to_owned());
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Probes: an agent's key and a person's token, once a second, for what clients are told.
    let seen: Arc<Mutex<Vec<(&'static str, Seen)>>> = Arc::default();
    let stop_probing = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn({
        let (http, url, admin, key, seen, stop) =
            (http.clone(), url.clone(), admin.clone(), keys[0].0.clone(), seen.clone(), stop_probing.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok((s, _)) = post(&http, &url, &key, "{ __typename }", json!({}), None).await {
                    seen.lock().unwrap().push(("agent", s));
                }
                if let Ok((s, _)) =
                    post(&http, &url, &admin, "{ tasks(first: 1) { edges { cursor } } }", json!({}), None).await
                {
                    seen.lock().unwrap().push(("person", s));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(10)).await;
    let before_outage = created.lock().unwrap().len();
    eprintln!("outage: {before_outage} tasks created before Postgres stops");
    run(postgres.ctl().args(["stop", "--mode=fast", "--wait"]));
    let down_at = Instant::now();
    let seen_before = seen.lock().unwrap().len();
    // An agent that starts while Postgres is down waits for it.
    tokio::time::sleep(outage() / 4).await;
    agents.push(agent(8));
    tokio::time::sleep(outage().saturating_sub(down_at.elapsed())).await;
    let during: Vec<(&str, Seen)> = seen.lock().unwrap()[seen_before..].to_vec();
    run(postgres.ctl().args(["start", "--wait", "--log"]).arg(&postgres.log));
    eprintln!("outage: Postgres back after {:?}", down_at.elapsed());
    // The queue stays fed until the agent started during the outage has done some of it (its
    // backoff may have it waiting up to 15 s more), for at least 10 s.
    let mut db = sqlx::PgConnection::connect(&database_url).await.unwrap();
    let late_completions = "select count(*) from events where event_type = 'TaskCompleted' \
                            and actor_kind = 'agent' and actor_id = $1";
    let back_at = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done: i64 = sqlx::query_scalar(late_completions).bind(&keys[8].1).fetch_one(&mut db).await.unwrap();
        if (done > 0 && back_at.elapsed() > Duration::from_secs(10)) || back_at.elapsed() > Duration::from_secs(90) {
            break;
        }
    }
    stop_feeding.store(true, Ordering::SeqCst);
    feeder.await.unwrap();
    let created = created.lock().unwrap().clone();

    // Every acknowledged task ends completed, exactly once.
    let settle = Instant::now() + Duration::from_secs(120);
    let completions: HashMap<String, i64> = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select stream_id, count(*) from events where event_type = 'TaskCompleted' group by stream_id",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        let completions: HashMap<String, i64> = rows.into_iter().collect();
        if created.iter().all(|id| completions.contains_key(&format!("task-{id}"))) || Instant::now() > settle {
            break completions;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop_probing.store(true, Ordering::SeqCst);
    prober.await.unwrap();
    let missing: Vec<&String> = created.iter().filter(|id| !completions.contains_key(&format!("task-{id}"))).collect();
    assert!(missing.is_empty(), "{} of {} tasks never completed: {missing:?}", missing.len(), created.len());
    let twice: Vec<_> = completions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let late_agent: i64 = sqlx::query_scalar(late_completions).bind(&keys[8].1).fetch_one(&mut db).await.unwrap();
    assert!(late_agent > 0, "the agent started during the outage completed nothing");

    // No agent exited; devart was never restarted.
    for (i, agent) in agents.iter_mut().enumerate() {
        assert!(agent.try_wait().unwrap().is_none(), "agent {i} exited");
    }
    assert!(serve.try_wait().unwrap().is_none(), "devart serve exited");

    // What clients were told: 503 with Retry-After while Postgres was away, never 401.
    let all = seen.lock().unwrap().clone();
    assert!(all.iter().all(|(_, s)| s.status != 401), "{all:?}");
    for who in ["agent", "person"] {
        let unavailable: Vec<&Seen> =
            during.iter().filter(|(w, s)| *w == who && s.status == 503).map(|(_, s)| s).collect();
        assert!(!unavailable.is_empty(), "{who}: no 503 during the outage: {during:?}");
        assert!(
            unavailable.iter().all(|s| s.retry_after.is_some() && s.code.as_deref() == Some("UNAVAILABLE")),
            "{unavailable:?}"
        );
        let other: Vec<&Seen> =
            during.iter().filter(|(w, s)| *w == who && s.status != 503 && s.status != 200).map(|(_, s)| s).collect();
        assert!(other.is_empty(), "{who}: answers other than 503 during the outage: {other:?}");
    }
    let statuses = |who: &str| {
        let mut counts: HashMap<u16, usize> = HashMap::new();
        for (_, s) in during.iter().filter(|(w, _)| *w == who) {
            *counts.entry(s.status).or_default() += 1;
        }
        counts
    };
    eprintln!(
        "outage: {} tasks created, all completed once; probes during the outage: agent {:?}, person {:?}; \
         the late agent completed {late_agent}",
        created.len(),
        statuses("agent"),
        statuses("person"),
    );
    for agent in agents {
        drop(agent);
    }
    kill_9(serve);
    drop(nats);
    drop(postgres);
}

/// The database's transactions so far (committed and rolled back), as its statistics say.
async fn transactions(database: &str) -> i64 {
    let url = format!(
        "{}/postgres",
        std::env::var("DEVART_TEST_DATABASE_SERVER").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    );
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar("select xact_commit + xact_rollback from pg_stat_database where datname = $1")
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

/// A client whose connections come from `address` (any of 127.0.0.0/8 reaches the gateway).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Sends `count` requests, 64 at a time, each with `bearer(i)`; the statuses and how long it took.
async fn flood(
    client: &reqwest::Client,
    url: &str,
    count: usize,
    bearer: impl Fn(usize) -> String,
) -> (HashMap<u16, usize>, Duration) {
    use futures::StreamExt;
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..count)
        .map(|i| {
            let request = client.post(url).bearer_auth(bearer(i)).json(&json!({ "query": "{ __typename }" }));
            async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    (counts, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_from_one_identity_and_of_invalid_credentials_barely_reach_postgres() {
    let env = TestEnv::new().await;
    let database: String = sqlx::query_scalar("select current_database()").fetch_one(&env.pool).await.unwrap();
    let setup = env.start(&[Role::Gateway]).await;
    let registered = setup.graphql(REGISTER, json!({ "name": "flooder" })).await;
    let key =
        registered["data"]["registerAgent"]["apiKey"].as_str().unwrap_or_else(|| panic!("{registered}")).to_owned();
    setup.stop().await;
    env.pool.close().await;
    // Closed connections flush their statistics; a little later they are counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = transactions(&database).await;

    let running = env.start(&[Role::Gateway]).await;
    let url = running.url("/graphql");
    // Another identity, from another address, is served all along.
    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = tokio::spawn({
        let (client, url, token, served, refused, stop) = (
            client_from("127.0.0.3"),
            url.clone(),
            running.token.clone(),
            served.clone(),
            refused.clone(),
            stop.clone(),
        );
        async move {
            while !stop.load(Ordering::SeqCst) {
                let response =
                    client.post(&url).bearer_auth(&token).json(&json!({ "query": "{ me { subject } }" })).send().await;
                match response {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::SeqCst),
                    _ => refused.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let (one_identity, took) = flood(&client_from("127.0.0.2"), &url, 5_000, |_| key.clone()).await;
    let (bad_tokens, took_tokens) = flood(&client_from("127.0.0.4"), &url, 5_000, |i| format!("not.a.token{i}")).await;
    let (bad_keys, took_keys) =
        flood(&client_from("127.0.0.5"), &url, 5_000, |i| format!("dva_{:016x}_wrong-secret", i as u64 * 7919)).await;
    stop.store(true, Ordering::SeqCst);
    bystander.await.unwrap();
    let metrics = reqwest::get(running.url("/metrics")).await.unwrap().text().await.unwrap();
    running.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = transactions(&database).await;
    let spent = after - before;

    let passed = one_identity.get(&200).copied().unwrap_or(0);
    let requests = 15_000;
    eprintln!(
        "floods: one identity {one_identity:?} in {took:?}; invalid tokens {bad_tokens:?} in {took_tokens:?}; \
         invalid keys {bad_keys:?} in {took_keys:?}; bystander served {} refused {}; Postgres transactions \
         for {requests} requests: {spent}",
        served.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    assert_eq!(one_identity.values().sum::<usize>(), 5_000);
    assert!(one_identity.get(&429).copied().unwrap_or(0) > 3_000, "{one_identity:?}");
    assert!(one_identity.keys().all(|s| *s == 200 || *s == 429), "{one_identity:?}");
    for flood in [&bad_tokens, &bad_keys] {
        assert!(flood.keys().all(|s| *s == 401 || *s == 429), "{flood:?}");
        assert!(flood.get(&429).copied().unwrap_or(0) >= 4_900, "{flood:?}");
    }
    // Each request that got through read the key's row, each bystander's request may read, and
    // the refusals within the allowance (30 per address) were logged (and the keys looked up);
    // the rest cost nothing there. The lower bound shows the count is real.
    let through = passed + served.load(Ordering::SeqCst) + 3 * 30;
    assert!(spent >= passed as i64, "{spent} transactions, but {passed} requests read a key row");
    assert!(spent <= through as i64 + 100, "{spent} transactions for {through} requests let through");
    assert!(served.load(Ordering::SeqCst) > 0 && refused.load(Ordering::SeqCst) == 0, "the bystander was not served");
    assert!(metrics.contains("devart_rate_limited_total{limit=\"identity\"}"), "{metrics}");
    assert!(metrics.contains("devart_rate_limited_total{limit=\"auth_failures\"}"), "{metrics}");
    env.cleanup().await;
}
