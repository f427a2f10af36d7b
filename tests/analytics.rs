//! Analytics and cost outliers: the figures of a small known history, read through GraphQL; a
//! rebuilt read model equal to the live one; planted cost outliers found with high precision and
//! recall, acknowledged, and never flagged twice however often the history is processed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Utc};
use devart::Role;
use devart_commands::budgets::ChargeRequest;
use devart_commands::queue::ClaimRequest;
use devart_commands::{CommandContext, Commands};
use devart_domain::money::Money;
use devart_domain::service::{Currency, RegisterService, ServiceEvent, ServiceName};
use devart_domain::task::{
    Capabilities, CreateTask, Description, MaxAttempts, Message, Priority, Task, TaskCommand, TaskEvent, Title,
};
use devart_domain::workflow::{StageSpec, Stages, WorkflowName};
use devart_domain::{Actor, Event, Position};
use devart_projections::analytics::AnalyticsProjection;
use devart_projections::outliers::OutlierDetector;
use devart_projections::Projection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{eventually, register_agent, Running, TestEnv};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];

fn money(s: &str) -> Money {
    Money::parse("amount", s).unwrap()
}

fn admin() -> CommandContext {
    CommandContext::new(Actor::user("admin"))
}

fn as_agent(agent: Uuid) -> CommandContext {
    CommandContext::new(Actor::agent(agent.to_string()))
}

async fn register_service(commands: &Commands, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    let service = RegisterService {
        id,
        name: ServiceName::parse(name).unwrap(),
        currency: Currency::usd(),
        monthly_budget: money("1000000"),
        fallback_service_id: None,
        unit_prices: BTreeMap::new(),
    };
    commands.services().register(service, &admin()).await.unwrap();
    id
}

async fn create(commands: &Commands, title: &str, capabilities: &[&str]) -> Uuid {
    let command = CreateTask {
        required_capabilities: Capabilities::parse(capabilities).unwrap(),
        ..CreateTask::new(Uuid::now_v7(), Title::parse(title).unwrap())
    };
    commands.tasks().create(command, &admin()).await.unwrap().state.id
}

/// Claims for `agent` the one task waiting; returns its id. A claim passes over a queue row another
/// transaction holds (a workflow orchestrator creating the same stage task, say), so it asks again.
async fn claim(commands: &Commands, agent: Uuid, capabilities: &[&str]) -> Uuid {
    let request = ClaimRequest {
        agent_id: agent,
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        lease: TimeDelta::seconds(300),
    };
    eventually(Duration::from_secs(10), || async {
        commands.tasks().claim(&request, &as_agent(agent)).await.unwrap().map(|claimed| claimed.state.id)
    })
    .await
}

async fn complete(commands: &Commands, task: Uuid, agent: Uuid) {
    let command = TaskCommand::Complete { agent_id: agent, result: None };
    commands.execute::<Task>(task, command, &as_agent(agent), None).await.unwrap();
}

async fn charge(commands: &Commands, service: Uuid, amount: Money, task: Option<Uuid>, agent: Option<Uuid>) {
    let request = ChargeRequest {
        service_id: service,
        amount,
        reservation_id: None,
        units: None,
        task_id: task,
        agent_id: agent,
        idempotency_key: Uuid::now_v7().to_string(),
    };
    let context = agent.map_or_else(admin, as_agent);
    commands.services().record_charge(&request, &context).await.unwrap();
}

/// Waits until the read models and both process managers have applied everything, including what
/// the process managers appended themselves; returns the head.
async fn settle(env: &TestEnv) -> u64 {
    loop {
        env.sequence_all().await;
        let head = env.store.head().await.unwrap().0;
        for name in ["tasks", "agents", "analytics", "workflow-orchestrator", OutlierDetector::NAME] {
            env.wait_projected(name, head).await;
        }
        env.sequence_all().await;
        if env.store.head().await.unwrap().0 == head {
            return head;
        }
    }
}

async fn checksums(env: &TestEnv) -> Vec<String> {
    let mut sums = Vec::new();
    for table in AnalyticsProjection.tables() {
        sums.push(env.checksum(table).await);
    }
    sums
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a time")).parse().unwrap()
}

fn day(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::days(1)).unwrap()
}

/// `percentile_cont`: linear interpolation between the closest ranks.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let rank = fraction * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap() as f64 / 1e6
}

fn assert_close(actual: &Value, expected: f64, what: &str) {
    let actual = actual.as_f64().unwrap_or_else(|| panic!("{what}: {actual} is not a number"));
    assert!((actual - expected).abs() < 1e-6, "{what}: {actual}, expected {expected}");
}

/// Creation to first claim and creation to completion, per task, from the event history.
fn lifetimes(history: &[devart_commands::Recorded]) -> (Vec<f64>, Vec<f64>) {
    let mut created: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let (mut to_claim, mut to_complete) = (Vec::new(), Vec::new());
    for r in history {
        let Some(task) = r.meta.stream_id.id_of("task") else { continue };
        match &r.event {
            Event::Task(TaskEvent::Created { .. }) => {
                created.insert(task, r.meta.occurred_at);
            }
            Event::Task(TaskEvent::Claimed { attempt: 1, .. }) => {
                to_claim.push(seconds(r.meta.occurred_at - created[&task]))
            }
            Event::Task(TaskEvent::Completed { .. }) => to_complete.push(seconds(r.meta.occurred_at - created[&task])),
            _ => {}
        }
    }
    to_claim.sort_by(f64::total_cmp);
    to_complete.sort_by(f64::total_cmp);
    (to_claim, to_complete)
}

const ANALYTICS: &str = "query($from: DateTime!, $to: DateTime!, $bucket: Bucket!) {
  analytics(from: $from, to: $to, bucket: $bucket) {
    from to bucket totalCost
    costOverTime { start cost services { serviceId name cost } }
    topTasks(first: 2) { taskId cost charges totalCost status agentId costGroup task { title } }
    agents { agentId name cost charges tasksCompleted tasksFailed successRate }
    services { serviceId name cost charges tasks }
    completion { created completed failed cancelled rate overTime { start created completed failed cancelled } }
    timeToClaim { count meanSeconds p50Seconds p95Seconds overTime { start count } }
    timeToComplete { count meanSeconds p50Seconds p95Seconds }
    queueDepth { start pending pendingMax inProgress inProgressMax }
  }
}";

/// Three tasks worked by two agents (two completed, one failed for good), one left waiting, one
/// cancelled; five charges on two services, one of them naming no task or agent. Every figure is
/// checked: sums and counts against the known amounts, times against the events' own clocks.
#[tokio::test]
async fn analytics_figures_of_a_known_history_and_a_rebuild_equals_the_live_read_model() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let commands = env.commands();
    let llm = register_service(&commands, "llm").await;
    let search = register_service(&commands, "search").await;
    let ada = register_agent(&commands, "ada", &["rust"]).await;
    let bob = register_agent(&commands, "bob", &["rust"]).await;

    let one = create(&commands, "one", &["rust"]).await;
    assert_eq!(claim(&commands, ada, &["rust"]).await, one);
    charge(&commands, llm, money("1.50"), Some(one), Some(ada)).await;
    charge(&commands, search, money("0.25"), Some(one), Some(ada)).await;
    complete(&commands, one, ada).await;

    let two = create(&commands, "two", &["rust"]).await;
    assert_eq!(claim(&commands, bob, &["rust"]).await, two);
    charge(&commands, llm, money("3.00"), Some(two), Some(bob)).await;
    let fail = TaskCommand::Fail {
        agent_id: bob,
        error: Message::parse("error", "the build broke").unwrap(),
        retryable: false,
        now: Utc::now(),
        jitter: 0.0,
    };
    commands.execute::<Task>(two, fail, &as_agent(bob), None).await.unwrap();

    let three = create(&commands, "three", &["rust"]).await;
    assert_eq!(claim(&commands, ada, &["rust"]).await, three);
    charge(&commands, llm, money("0.75"), Some(three), Some(ada)).await;
    complete(&commands, three, ada).await;

    create(&commands, "four, never claimed", &["rust"]).await;
    let five = create(&commands, "five, cancelled", &["rust"]).await;
    commands.execute::<Task>(five, TaskCommand::Cancel { reason: None }, &admin(), None).await.unwrap();
    charge(&commands, search, money("0.10"), None, None).await;
    settle(&env).await;

    // Viewers read analytics. The window is widened to whole days.
    let viewer = env.token(devart_gateway::Role::Viewer);
    let now = Utc::now();
    let (from, to) = (now - TimeDelta::days(1), now + TimeDelta::days(1));
    let vars = json!({ "from": from, "to": to, "bucket": "DAY" });
    let body = running.graphql_as(&viewer, ANALYTICS, vars).await;
    assert!(body["errors"].is_null(), "{body}");
    let a = &body["data"]["analytics"];
    assert_eq!(time(&a["from"]), day(from));
    assert_eq!(time(&a["to"]), day(to) + TimeDelta::days(1));
    assert_eq!(a["totalCost"], "5.60");

    // Cost per day and service, as the charges' own times place them.
    let history = env.store.read_all(Position::START, None, usize::MAX).await.unwrap();
    let mut expected: BTreeMap<DateTime<Utc>, BTreeMap<String, i64>> = BTreeMap::new();
    let mut start = day(from);
    while start < day(to) + TimeDelta::days(1) {
        expected.insert(start, BTreeMap::new());
        start += TimeDelta::days(1);
    }
    for r in &history {
        if let Event::Service(ServiceEvent::UsageCharged { amount, .. }) = &r.event {
            let service = r.meta.stream_id.id_of("service").unwrap().to_string();
            *expected.get_mut(&day(r.meta.occurred_at)).unwrap().entry(service).or_default() += amount.micros();
        }
    }
    let series = a["costOverTime"].as_array().unwrap();
    assert_eq!(series.len(), expected.len(), "every bucket, empty ones too: {series:?}");
    for (bucket, (start, services)) in series.iter().zip(&expected) {
        assert_eq!(time(&bucket["start"]), *start);
        let total: i64 = services.values().sum();
        assert_eq!(bucket["cost"], Money::from_micros(total).to_string());
        let listed: BTreeMap<String, String> = bucket["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["serviceId"].as_str().unwrap().to_owned(), s["cost"].as_str().unwrap().to_owned()))
            .collect();
        let services: BTreeMap<String, String> =
            services.iter().map(|(s, micros)| (s.clone(), Money::from_micros(*micros).to_string())).collect();
        assert_eq!(listed, services);
    }

    assert_eq!(
        a["topTasks"],
        json!([
            { "taskId": two, "cost": "3.00", "charges": 1, "totalCost": "3.00", "status": "FAILED",
              "agentId": bob, "costGroup": "capabilities:rust", "task": { "title": "two" } },
            { "taskId": one, "cost": "1.75", "charges": 2, "totalCost": "1.75", "status": "COMPLETED",
              "agentId": ada, "costGroup": "capabilities:rust", "task": { "title": "one" } },
        ])
    );
    assert_eq!(
        a["agents"],
        json!([
            { "agentId": bob, "name": "bob", "cost": "3.00", "charges": 1, "tasksCompleted": 0, "tasksFailed": 1,
              "successRate": 0.0 },
            { "agentId": ada, "name": "ada", "cost": "2.50", "charges": 3, "tasksCompleted": 2, "tasksFailed": 0,
              "successRate": 1.0 },
        ])
    );
    assert_eq!(
        a["services"],
        json!([
            { "serviceId": llm, "name": "llm", "cost": "5.25", "charges": 3, "tasks": 3 },
            { "serviceId": search, "name": "search", "cost": "0.35", "charges": 2, "tasks": 1 },
        ])
    );
    let completion = &a["completion"];
    assert_eq!(
        (&completion["created"], &completion["completed"], &completion["failed"], &completion["cancelled"]),
        (&json!(5), &json!(2), &json!(1), &json!(1))
    );
    assert_close(&completion["rate"], 2.0 / 3.0, "completion rate");
    let per_bucket: i64 =
        completion["overTime"].as_array().unwrap().iter().map(|b| b["created"].as_i64().unwrap()).sum();
    assert_eq!(per_bucket, 5);

    // Times, against the events' clocks: percentile_cont in SQL, linear interpolation here.
    let (to_claim, to_complete) = lifetimes(&history);
    assert_eq!((to_claim.len(), to_complete.len()), (3, 2));
    for (stats, measured, what) in
        [(&a["timeToClaim"], &to_claim, "to claim"), (&a["timeToComplete"], &to_complete, "to complete")]
    {
        assert_eq!(stats["count"], measured.len(), "{what}");
        assert_close(&stats["meanSeconds"], measured.iter().sum::<f64>() / measured.len() as f64, what);
        assert_close(&stats["p50Seconds"], percentile(measured, 0.5), what);
        assert_close(&stats["p95Seconds"], percentile(measured, 0.95), what);
    }
    let claimed: i64 =
        a["timeToClaim"]["overTime"].as_array().unwrap().iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert_eq!(claimed, 3);

    // Two tasks waited at once at most (four and five); one still waits; nothing is in progress.
    let depth = a["queueDepth"].as_array().unwrap();
    assert_eq!(depth.len(), expected.len());
    let last = depth.last().unwrap();
    assert_eq!((&last["pending"], &last["inProgress"]), (&json!(1), &json!(0)), "{depth:?}");
    let most = |field: &str| depth.iter().map(|b| b[field].as_i64().unwrap()).max().unwrap();
    assert_eq!((most("pendingMax"), most("inProgressMax")), (2, 1));

    // Hourly buckets of the same window hold the same cost.
    let hourly = running.graphql_as(&viewer, ANALYTICS, json!({ "from": from, "to": to, "bucket": "HOUR" })).await;
    let hours = hourly["data"]["analytics"]["costOverTime"].as_array().unwrap_or_else(|| panic!("{hourly}"));
    // From the hour a day ago to the end of the hour a day ahead.
    assert_eq!(hours.len(), 49);
    let summed = hours.iter().map(|b| money(b["cost"].as_str().unwrap()).micros()).sum::<i64>();
    assert_eq!(Money::from_micros(summed), money("5.60"));

    // Weeks start on Monday.
    let weekly = running.graphql_as(&viewer, ANALYTICS, json!({ "from": from, "to": to, "bucket": "WEEK" })).await;
    let weeks = &weekly["data"]["analytics"];
    assert_eq!(time(&weeks["from"]).weekday(), chrono::Weekday::Mon, "{weekly}");
    assert_eq!(time(&weeks["from"]), day(from) - TimeDelta::days(i64::from(from.weekday().num_days_from_monday())));
    assert_eq!(weeks["totalCost"], "5.60");
    assert_eq!(weeks["queueDepth"].as_array().unwrap().len(), weeks["costOverTime"].as_array().unwrap().len());

    // A window must be one, and not hold absurdly many buckets.
    let backwards = json!({ "from": to, "to": from, "bucket": "DAY" });
    assert_eq!(code(&running.graphql_as(&viewer, ANALYTICS, backwards).await), "BAD_USER_INPUT");
    let decades = json!({ "from": now - TimeDelta::days(3650), "to": now, "bucket": "HOUR" });
    assert_eq!(code(&running.graphql_as(&viewer, ANALYTICS, decades).await), "BAD_USER_INPUT");

    // A rebuild from the store equals the live read model, row for row.
    let live = checksums(&env).await;
    devart_projections::rebuild::rebuild(&env.pool, &env.store, &AnalyticsProjection, |_, _| {}).await.unwrap();
    assert_eq!(checksums(&env).await, live);
    running.stop().await;
    env.cleanup().await;
}

/// A group of comparable tasks: how they are made, and what they usually cost.
struct Group {
    capabilities: &'static [&'static str],
    /// Tasks of a workflow stage, grouped by the stage whatever they require.
    stage: bool,
    median: f64,
}

const GROUPS: [Group; 4] = [
    Group { capabilities: &["rust"], stage: false, median: 0.40 },
    Group { capabilities: &["docs"], stage: false, median: 2.00 },
    Group { capabilities: &["python", "rust"], stage: false, median: 9.00 },
    // The same capabilities as the first group, but eight times cheaper: only grouping by stage
    // keeps the two apart.
    Group { capabilities: &["rust"], stage: true, median: 0.05 },
];
const TASKS_PER_GROUP: usize = 400;
/// The standard deviation of a group's log costs: one task in six costs over 1.65 times the median.
const LOG_SPREAD: f64 = 0.5;
/// 2% of each group costs 20 to 50 times what it would have.
const PLANTED_PER_GROUP: usize = 8;

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

const OUTLIERS: &str = "query($acknowledged: Boolean) { outliers(acknowledged: $acknowledged, first: 500) {
  taskId cost median mad zScore threshold comparable group why flaggedAt acknowledged acknowledgedBy note } }";

/// Four groups of 400 tasks whose costs are log-normal around different medians, eight of each (2%)
/// costing 20–50 times more, worked one after another while devart runs, half of them charged
/// partly after they completed. The detector, at the default settings, finds the planted ones and
/// (almost) nothing else. The seed is fixed, and every judgment is made on the history as of its
/// event, so the verdicts are the same on every run.
///
/// Precision here is bounded by the data as much as by the detector: a group's first judgments rest
/// on few comparables and a noisy spread, and among 1,600 honest log-normal costs one may well lie
/// beyond 3.5 deviations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_cost_outliers_are_found_acknowledged_and_never_flagged_twice() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let commands = env.commands();
    let llm = register_service(&commands, "llm").await;
    let every = ["docs", "python", "rust"];
    let worker = register_agent(&commands, "worker", &every).await;
    let stage = StageSpec::new(
        "price",
        Title::parse("Price it").unwrap(),
        Description::default(),
        Priority::DEFAULT,
        Capabilities::parse(&["rust"]).unwrap(),
        vec![],
        MaxAttempts::DEFAULT,
    )
    .unwrap();
    let workflow = commands
        .workflows()
        .define(
            WorkflowName::parse("Estimate").unwrap(),
            Description::default(),
            Stages::parse(vec![stage]).unwrap(),
            &admin(),
        )
        .await
        .unwrap()
        .state
        .id;

    let mut rng = StdRng::seed_from_u64(0x0de7a47);
    let mut work: Vec<(usize, bool)> = Vec::new();
    for g in 0..GROUPS.len() {
        let mut planted = BTreeSet::new();
        while planted.len() < PLANTED_PER_GROUP {
            planted.insert(rng.gen_range(0..TASKS_PER_GROUP));
        }
        work.extend((0..TASKS_PER_GROUP).map(|i| (g, planted.contains(&i))));
    }
    // Interleaved, as work arrives.
    for i in (1..work.len()).rev() {
        work.swap(i, rng.gen_range(0..=i));
    }
    let mut planted: BTreeSet<Uuid> = BTreeSet::new();
    let mut stage_tasks: BTreeSet<Uuid> = BTreeSet::new();
    for (n, (g, outlier)) in work.iter().enumerate() {
        let group = &GROUPS[*g];
        let task = if group.stage {
            let run = commands.workflows().start(workflow, Uuid::now_v7(), None, &admin()).await.unwrap();
            let task = run.state.stages[0].task_id.unwrap();
            stage_tasks.insert(task);
            task
        } else {
            create(&commands, &format!("task {n}"), group.capabilities).await
        };
        assert_eq!(claim(&commands, worker, &every).await, task);
        let factor = if *outlier { rng.gen_range(20.0..50.0) } else { 1.0 };
        let cost = group.median * (LOG_SPREAD * normal(&mut rng)).exp() * factor;
        let cost = Money::from_micros(((cost * 1e6).round() as i64).max(2));
        if *outlier {
            planted.insert(task);
        }
        // Half of the tasks are charged in two parts, the second after they completed.
        let later = if n % 2 == 0 { Money::from_micros(cost.micros() / 3) } else { Money::ZERO };
        charge(&commands, llm, cost.saturating_sub(later), Some(task), Some(worker)).await;
        complete(&commands, task, worker).await;
        if !later.is_zero() {
            charge(&commands, llm, later, Some(task), Some(worker)).await;
        }
    }
    settle(&env).await;

    let body = running.graphql(OUTLIERS, json!({})).await;
    let flags = body["data"]["outliers"].as_array().unwrap_or_else(|| panic!("{body}")).clone();
    let flagged: BTreeSet<Uuid> = flags.iter().map(|f| f["taskId"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(flagged.len(), flags.len(), "each task flagged once");
    let found = flagged.intersection(&planted).count() as f64;
    let precision = found / flagged.len().max(1) as f64;
    let recall = found / planted.len() as f64;
    println!(
        "cost outliers: {} planted, {} flagged, {found} of them planted: precision {precision:.3}, recall {recall:.3}",
        planted.len(),
        flagged.len()
    );
    for flag in flags.iter().filter(|f| !planted.contains(&f["taskId"].as_str().unwrap().parse().unwrap())) {
        println!("flagged, not planted: {}", flag["why"]);
    }
    assert!(precision >= 0.9, "precision {precision}");
    assert!(recall >= 0.9, "recall {recall}");
    for flag in &flags {
        assert!(flag["zScore"].as_f64().unwrap() > 3.5, "{flag}");
        assert_eq!(flag["threshold"], 3.5);
        assert!(flag["comparable"].as_i64().unwrap() >= 8, "{flag}");
        assert_eq!(flag["acknowledged"], false);
        let task: Uuid = flag["taskId"].as_str().unwrap().parse().unwrap();
        let group = if stage_tasks.contains(&task) { "stage:estimate/price" } else { "capabilities:" };
        assert!(flag["group"].as_str().unwrap().starts_with(group), "{flag}");
        assert!(flag["why"].as_str().unwrap().contains("past the threshold of 3.5"), "{flag}");
    }
    assert!(
        flags.iter().any(|f| f["group"] == "stage:estimate/price"),
        "the stage's planted outliers are flagged in the stage's group"
    );

    // The task shows its flag too.
    let flagged_task = flags[0]["taskId"].as_str().unwrap().to_owned();
    let task = running
        .graphql("query($id: ID!) { task(id: $id) { costOutlier { zScore group } } }", json!({ "id": flagged_task }))
        .await;
    assert_eq!(task["data"]["task"]["costOutlier"]["group"], flags[0]["group"], "{task}");

    // A supervisor acknowledges one; a viewer may not; twice is a conflict.
    const ACKNOWLEDGE: &str =
        "mutation($id: ID!, $note: String!) { acknowledgeOutlier(taskId: $id, note: $note) { id status } }";
    let vars = json!({ "id": flagged_task, "note": "a one-off migration" });
    let viewer = env.token(devart_gateway::Role::Viewer);
    assert_eq!(code(&running.graphql_as(&viewer, ACKNOWLEDGE, vars.clone()).await), "FORBIDDEN");
    let supervisor = env.token(devart_gateway::Role::Supervisor);
    let acknowledged = running.graphql_as(&supervisor, ACKNOWLEDGE, vars.clone()).await;
    assert_eq!(acknowledged["data"]["acknowledgeOutlier"]["status"], "COMPLETED", "{acknowledged}");
    assert_eq!(code(&running.graphql_as(&supervisor, ACKNOWLEDGE, vars).await), "CONFLICT");
    let listed = |acknowledged: bool| outliers(&running, &viewer, acknowledged);
    let cleared = eventually(Duration::from_secs(10), || async {
        let done = listed(true).await;
        (done.len() == 1).then_some(done)
    })
    .await;
    assert_eq!(cleared[0]["taskId"], flagged_task.as_str());
    assert_eq!(cleared[0]["note"], "a one-off migration");
    assert_eq!(cleared[0]["acknowledgedBy"], "user:supervisor");
    let open = listed(false).await;
    assert_eq!(open.len(), flags.len() - 1);
    assert!(open.iter().all(|f| f["taskId"] != flagged_task.as_str()));

    // Processing the whole history again, as after a crash, flags nothing twice, and the
    // acknowledged task stays acknowledged.
    let head = settle(&env).await;
    let count_flags = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from events where event_type = 'TaskFlaggedAsCostOutlier'")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let before = count_flags().await;
    assert_eq!(before as usize, flags.len());
    let history = env.store.read_all(Position::START, Some(Position(head)), usize::MAX).await.unwrap();
    let mut conn = env.pool.acquire().await.unwrap();
    OutlierDetector::new(env.commands()).detect(&mut conn, &history).await.unwrap();
    for batch in history.chunks(97) {
        OutlierDetector::new(env.commands()).detect(&mut conn, batch).await.unwrap();
    }
    drop(conn);
    assert_eq!(count_flags().await, before, "reprocessing flagged a task again");

    // A rebuild of the analytics read model, flags included, equals the live one.
    settle(&env).await;
    let live = checksums(&env).await;
    devart_projections::rebuild::rebuild(&env.pool, &env.store, &AnalyticsProjection, |_, _| {}).await.unwrap();
    assert_eq!(checksums(&env).await, live);
    running.stop().await;
    env.cleanup().await;
}

/// The flags `outliers(acknowledged: …)` lists, as a viewer sees them.
async fn outliers(running: &Running, viewer: &str, acknowledged: bool) -> Vec<Value> {
    let body = running.graphql_as(viewer, OUTLIERS, json!({ "acknowledged": acknowledged })).await;
    body["data"]["outliers"].as_array().unwrap_or_else(|| panic!("{body}")).clone()
}
