//! The chaos suite: a steady load of task creations, claims and completions while the parts of
//! devart, NATS and Postgres fail one at a time; after each fault, every guarantee about events is
//! checked against what the clients were told ([`guarantees::check`]).
//!
//! It brings its own Postgres cluster and NATS server (`support::cluster`), so its
//! faults cannot disturb the tests sharing the usual ones; all of it is stopped and removed when
//! the test ends, passed or failed. The second test shows that the checks notice a broken
//! guarantee: an event broadcast around the store, and an acknowledged command that is missing.

use std::fmt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devart::{Config, Role, Secret};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::cluster::{append, free_port, kill_9, run, Nats, Postgres, Scratch};
use crate::support::guarantees::{self, Acknowledged};
use crate::support::TestEnv;

const JWT_SECRET: &str = "chaos-secret-chaos-secret-chaos-secret";
const NATS_PREFIX: &str = "chaos";

/// Clients creating tasks, and agents claiming and completing them, all at once.
const CREATORS: usize = 4;
const AGENTS: usize = 2;
/// Each client's pause between calls: a steady load that leaves the machine room for the faults.
const PACE: Duration = Duration::from_millis(20);
/// Load before a fault, and after things are back, in every phase.
const BEFORE_FAULT: Duration = Duration::from_secs(2);
const AFTER_FAULT: Duration = Duration::from_secs(3);
const NATS_OUTAGE: Duration = Duration::from_secs(30);
/// A call not acknowledged by then counts as failed (the longest outage of the gateway's is seconds).
const GIVE_UP: Duration = Duration::from_secs(60);
/// How long the instance may take to catch up after a phase. A projection that lost its
/// connection mid-batch gets that batch again only after the consumer's 30 s `ack_wait`.
const SETTLE: Duration = Duration::from_secs(60);
/// Agents hold their claims past the end of the test, so no lease expires while checking.
const LEASE_SECONDS: u32 = 3600;

const CREATE: &str = "mutation($title: String!) { createTask(input: { title: $title }) { id } }";
const CLAIM: &str = "mutation($lease: Int!) { claimTask(leaseSeconds: $lease) { id } }";
const COMPLETE: &str = "mutation($id: ID!) { completeTask(taskId: $id, result: { done: true }) { id } }";

/// What is done to the running instance in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Load only: the baseline the faults are measured against.
    Nothing,
    /// `kill -9` of one devart process, then a fresh one.
    Kill(Part),
    /// NATS killed, and started again on the same port and storage after [`NATS_OUTAGE`].
    StopNats,
    /// Postgres stopped as a crash would (immediate shutdown: no checkpoint, every connection
    /// cut) and started again, which runs crash recovery.
    CrashPostgres,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Nothing => f.write_str("steady load"),
            Fault::Kill(part) => write!(f, "kill -9 {}", part.role()),
            Fault::StopNats => write!(f, "NATS away {}s", NATS_OUTAGE.as_secs()),
            Fault::CrashPostgres => f.write_str("Postgres crash"),
        }
    }
}

/// The devart processes, one role each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Gateway,
    Relay,
    Projections,
}

impl Part {
    const ALL: [Part; 3] = [Part::Gateway, Part::Relay, Part::Projections];

    fn role(self) -> &'static str {
        match self {
            Part::Gateway => "gateway",
            Part::Relay => "relay",
            Part::Projections => "projections",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_guarantee_holds_through_crashes_and_outages_under_load() {
    let started = Instant::now();
    let mut lab = Lab::start().await;
    let setup = started.elapsed();
    let faults = [
        Fault::Nothing,
        Fault::Kill(Part::Gateway),
        Fault::Kill(Part::Relay),
        Fault::Kill(Part::Projections),
        Fault::StopNats,
        Fault::CrashPostgres,
    ];
    let mut phases = Vec::new();
    for fault in faults {
        let phase = lab.phase(fault).await;
        assert!(phase.failures.is_empty(), "calls never acknowledged during `{fault}`: {:?}", phase.failures);
        assert!(phase.report.held(), "after `{fault}`: {}", phase.report);
        if fault == Fault::StopNats {
            assert!(phase.during_fault > 0, "commands went on while NATS was away");
        }
        phases.push(phase);
    }
    let tally = lab.tally.lock().unwrap();
    println!(
        "chaos: {} tasks created and {} completed, every call acknowledged ({} calls, {} retries); \
         {} events; set-up {:.1}s, total {:.1}s",
        tally.acknowledged.created.len(),
        tally.acknowledged.completed.len(),
        tally.calls,
        tally.retries,
        phases.last().map_or(0, |p| p.report.head),
        setup.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<20} {:>7} {:>7} {:>12} {:>8} {:>7} {:>7}",
        "phase", "fault", "calls", "during fault", "retries", "check", "total"
    );
    for p in &phases {
        let fault_time =
            if p.fault == Fault::Nothing { "-".to_owned() } else { format!("{:.1}s", p.fault_time.as_secs_f64()) };
        println!(
            "{:<20} {:>7} {:>7} {:>12} {:>8} {:>6.1}s {:>6.1}s",
            p.fault.to_string(),
            fault_time,
            p.acknowledged,
            p.during_fault,
            p.retries,
            p.check_time.as_secs_f64(),
            p.total.as_secs_f64()
        );
    }
}

/// The checks are not vacuous: they pass on a healthy instance, and report an event that reached
/// the broadcast without going through the store, and an acknowledged command that is not stored.
#[tokio::test]
async fn the_checks_catch_an_event_published_around_the_store_and_a_lost_command() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let mut acknowledged = Acknowledged::default();
    for i in 0..10 {
        let title = format!("task {i}");
        let answer = running.graphql(CREATE, json!({ "title": title })).await;
        let id = answer["data"]["createTask"]["id"].as_str().expect("created").parse().unwrap();
        acknowledged.created.insert(title, id);
    }
    let report = guarantees::check(&env.config, &acknowledged, Duration::from_secs(20)).await;
    assert!(report.held(), "{report}");
    let head = report.head;
    assert_eq!(head, 10, "one event per task");

    // A well-formed event at the next sequence, published straight to the stream: the relay did
    // not send it, the store does not have it.
    let stored = env.store.read_all(devart_domain::Position::START, None, 100).await.unwrap();
    let mut bypass = stored.last().unwrap().clone();
    let id = Uuid::now_v7();
    let devart_domain::Event::Task(devart_domain::task::TaskEvent::Created { id: task, title, .. }) = &mut bypass.event
    else {
        panic!("the last event is the last task's creation")
    };
    (*task, *title) = (id, "around the store".to_owned());
    bypass.meta.event_id = Uuid::now_v7();
    bypass.meta.stream_id = devart_domain::StreamId::new("task", id);
    bypass.meta.position = Some(devart_domain::Position(head + 1));
    let payload = serde_json::to_vec(&devart_commands::codec::to_json(&bypass.event)).unwrap();
    env.bus
        .jetstream
        .publish_with_headers(
            env.bus.names.event_subject(bypass.event.aggregate(), &bypass.meta.event_type),
            devart_commands::bus::headers(&bypass.meta),
            payload.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let report = guarantees::check(&env.config, &acknowledged, Duration::from_secs(20)).await;
    assert!(report.mentions("the stream holds 11 messages up to sequence 11, the store 10 events"), "{report}");
    assert!(report.mentions("checkpoints not at the head"), "the projections applied it: {report}");
    assert!(report.mentions("task rows without a stored task"), "{report}");
    let differs =
        report.violations.iter().find(|v| v.starts_with("read models that differ from a rebuild from scratch"));
    assert!(
        differs.is_some_and(|v| v.split([':', ',', ' ']).any(|name| name == "tasks")),
        "the task board differs from a rebuild: {report}"
    );

    // A command a client was told succeeded, but that is not in the store.
    acknowledged.created.insert("never stored".into(), Uuid::now_v7());
    let report = guarantees::check(&env.config, &acknowledged, Duration::from_secs(20)).await;
    assert!(report.mentions("acknowledged tasks that are not stored (1): `never stored`"), "{report}");
    running.stop().await;
    env.cleanup().await;
}

/// One phase's figures.
struct Phase {
    fault: Fault,
    /// From the fault's start until the part is back.
    fault_time: Duration,
    /// Calls acknowledged in this phase, and while the fault lasted.
    acknowledged: u64,
    during_fault: u64,
    /// Calls sent again in this phase (same key) because no answer came, or an error did.
    retries: u64,
    failures: Vec<String>,
    check_time: Duration,
    total: Duration,
    report: guarantees::Report,
}

/// What the clients were told, over the whole run.
#[derive(Default)]
struct Tally {
    acknowledged: Acknowledged,
    /// Calls acknowledged so far.
    calls: u64,
    retries: u64,
    failures: Vec<String>,
}

/// A private Postgres cluster and NATS server with devart on them, one process per role.
///
/// Dropping it kills the devart processes, then (the fields' own guards, in this order) NATS and
/// Postgres, and removes the scratch directory.
struct Lab {
    devart: [Option<Child>; 3],
    config: Config,
    listen: String,
    admin: String,
    agents: Vec<String>,
    tally: Arc<Mutex<Tally>>,
    /// Numbers every created task across phases, for unique titles and idempotency keys.
    next_task: Arc<AtomicUsize>,
    nats: Nats,
    postgres: Postgres,
    scratch: Scratch,
}

impl Lab {
    async fn start() -> Lab {
        let scratch = Scratch::create();
        let postgres = Postgres::create(&scratch.0);
        let mut nats =
            Nats { port: free_port(), store: scratch.0.join("nats"), log: scratch.0.join("nats.log"), child: None };
        nats.start().await;
        let config = Config {
            database_url: format!("postgres://postgres@127.0.0.1:{}/devart", postgres.port),
            nats_url: format!("nats://127.0.0.1:{}", nats.port),
            nats_prefix: NATS_PREFIX.into(),
            jwt_secret: Some(Secret(JWT_SECRET.into())),
            db_connections: 4,
            limits: devart_gateway::Limits::default(),
            alerts: devart::alerts::AlertConfig::default(),
            knowledge: devart::knowledge::KnowledgeConfig::off(),
        };
        let admin = devart_gateway::SigningKey::new(JWT_SECRET.as_bytes().to_vec()).issue(
            "chaos",
            devart_gateway::Role::Admin,
            chrono::Duration::hours(1),
        );
        let mut lab = Lab {
            devart: [None, None, None],
            config,
            listen: format!("127.0.0.1:{}", free_port()),
            admin,
            agents: Vec::new(),
            tally: Arc::default(),
            next_task: Arc::default(),
            nats,
            postgres,
            scratch,
        };
        run(lab.devart_command().arg("migrate"));
        for part in Part::ALL {
            lab.spawn(part);
        }
        lab.wait_for_gateway().await;
        let admin = lab.client(&lab.admin);
        for i in 0..AGENTS {
            let registered = admin
                .call(
                    &format!("register-agent-{i}"),
                    "mutation($name: String!) { registerAgent(input: { name: $name, capabilities: [] }) { apiKey } }",
                    json!({ "name": format!("agent {i}") }),
                )
                .await
                .expect("an agent registered");
            lab.agents.push(registered["registerAgent"]["apiKey"].as_str().unwrap().to_owned());
        }
        lab
    }

    /// Runs the load, injects `fault` in the middle of it, stops the load, and checks.
    async fn phase(&mut self, fault: Fault) -> Phase {
        let started = Instant::now();
        let (acknowledged_before, retries_before) = {
            let tally = self.tally.lock().unwrap();
            (tally.calls, tally.retries)
        };
        let load = self.load();
        tokio::time::sleep(BEFORE_FAULT).await;
        let at_fault = self.tally.lock().unwrap().calls;
        let fault_started = Instant::now();
        match fault {
            Fault::Nothing => {}
            Fault::Kill(part) => {
                kill_9(self.devart[part as usize].take().expect("the process runs"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.spawn(part);
                if part == Part::Gateway {
                    self.wait_for_gateway().await;
                }
            }
            Fault::StopNats => {
                self.nats.kill();
                tokio::time::sleep(NATS_OUTAGE).await;
                self.nats.start().await;
            }
            Fault::CrashPostgres => self.postgres.crash_and_restart(),
        }
        let fault_time = fault_started.elapsed();
        let during_fault = self.tally.lock().unwrap().calls - at_fault;
        tokio::time::sleep(AFTER_FAULT).await;
        load.stop().await;

        let (acknowledged, retries, failures, ledger) = {
            let mut tally = self.tally.lock().unwrap();
            let failures = std::mem::take(&mut tally.failures);
            (tally.calls - acknowledged_before, tally.retries - retries_before, failures, tally.acknowledged.clone())
        };
        let checking = Instant::now();
        let report = guarantees::check(&self.config, &ledger, SETTLE).await;
        Phase {
            fault,
            fault_time,
            acknowledged,
            during_fault,
            retries,
            failures,
            check_time: checking.elapsed(),
            total: started.elapsed(),
            report,
        }
    }

    /// Starts every client; they run until [`Load::stop`].
    fn load(&self) -> Load {
        let stop = CancellationToken::new();
        let mut clients = Vec::new();
        for _ in 0..CREATORS {
            let (client, next, stop) = (self.client(&self.admin), self.next_task.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let title = format!("chaos task {n}");
                    let answer = client.call(&format!("create-{n}"), CREATE, json!({ "title": title })).await;
                    match answer.and_then(|data| task_id(&data["createTask"])) {
                        Ok(id) => {
                            client.tally.lock().unwrap().acknowledged.created.insert(title, id);
                        }
                        Err(failure) => client.fail(failure),
                    }
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        for key in &self.agents {
            let (client, stop) = (self.client(key), stop.clone());
            clients.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    // A retried claim answers with what the first one claimed, or with nothing if
                    // the queue is empty by then; a task claimed that way stays held, unreported.
                    let claim = format!("claim-{}", Uuid::new_v4());
                    let claimed = match client.call(&claim, CLAIM, json!({ "lease": LEASE_SECONDS })).await {
                        Ok(data) if data["claimTask"].is_null() => None,
                        Ok(data) => Some(task_id(&data["claimTask"])),
                        Err(failure) => Some(Err(failure)),
                    };
                    match claimed {
                        Some(Ok(id)) => {
                            let complete = format!("complete-{id}");
                            match client.call(&complete, COMPLETE, json!({ "id": id })).await {
                                Ok(_) => {
                                    client.tally.lock().unwrap().acknowledged.completed.insert(id);
                                }
                                Err(failure) => client.fail(failure),
                            }
                        }
                        Some(Err(failure)) => client.fail(failure),
                        None => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        Load { stop, clients }
    }

    fn client(&self, bearer: &str) -> Client {
        Client {
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            url: format!("http://{}/graphql", self.listen),
            bearer: bearer.to_owned(),
            tally: self.tally.clone(),
        }
    }

    fn devart_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_devart"));
        command
            .env("DATABASE_URL", &self.config.database_url)
            .env("NATS_URL", &self.config.nats_url)
            .env("DEVART_NATS_PREFIX", NATS_PREFIX)
            .env("DEVART_JWT_SECRET", JWT_SECRET)
            .env("DEVART_LISTEN", &self.listen)
            .env("DEVART_DB_CONNECTIONS", "8")
            // The load is steady, not hostile: keep the per-identity limit out of its way.
            .env("DEVART_MUTATIONS_PER_SECOND", "0")
            .env("DEVART_REQUESTS_PER_SECOND", "0")
            .env("DEVART_REQUESTS_PER_ADDRESS", "0")
            .env("DEVART_LOG", "warn");
        command
    }

    /// Starts `devart serve` with `part`'s role; its log goes to the scratch directory.
    fn spawn(&mut self, part: Part) {
        let log = append(&self.scratch.0.join(format!("{}.log", part.role())));
        let child = self
            .devart_command()
            .args(["serve", "--roles", part.role()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("devart serve starts");
        self.devart[part as usize] = Some(child);
    }

    async fn wait_for_gateway(&self) {
        let health = format!("http://{}/healthz", self.listen);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the gateway did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.devart.iter_mut().filter_map(Option::take) {
            kill_9(child);
        }
    }
}

/// Clients calling devart until stopped.
struct Load {
    stop: CancellationToken,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// No new calls; waits for the ones under way to be acknowledged (or given up on).
    async fn stop(self) {
        self.stop.cancel();
        for client in self.clients {
            client.await.unwrap();
        }
    }
}

/// A GraphQL client that retries each call, with its `Idempotency-Key`, until acknowledged.
struct Client {
    http: reqwest::Client,
    url: String,
    bearer: String,
    tally: Arc<Mutex<Tally>>,
}

impl Client {
    /// The answer's `data` once a response carries no errors. Connection errors, 5xx and
    /// GraphQL errors (a database away shows as `INTERNAL`) are all retried with the same key.
    async fn call(&self, key: &str, query: &str, variables: Value) -> Result<Value, String> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let sent = self
                .http
                .post(&self.url)
                .bearer_auth(&self.bearer)
                .header("Idempotency-Key", key)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await;
            let why = match sent {
                Ok(response) if response.status().is_success() => match response.json::<Value>().await {
                    Ok(body) if body["errors"].is_null() && !body["data"].is_null() => {
                        self.tally.lock().unwrap().calls += 1;
                        return Ok(body["data"].clone());
                    }
                    Ok(body) => body["errors"].to_string(),
                    Err(error) => error.to_string(),
                },
                Ok(response) => format!("HTTP {}", response.status()),
                Err(error) => error.to_string(),
            };
            if started.elapsed() > GIVE_UP {
                return Err(format!("{key}: not acknowledged within {GIVE_UP:?}, last: {why}"));
            }
            self.tally.lock().unwrap().retries += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    fn fail(&self, failure: String) {
        self.tally.lock().unwrap().failures.push(failure);
    }
}

fn task_id(task: &Value) -> Result<Uuid, String> {
    task["id"].as_str().and_then(|id| id.parse().ok()).ok_or_else(|| format!("no task id in {task}"))
}
