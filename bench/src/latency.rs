//! Command-to-subscription latency: a `createTask` mutation until its `taskUpdates`
//! notification, at a steady rate.

use super::*;

pub(crate) const TITLE_PREFIX: &str = "bench-";
pub(crate) const WARM_UP_COMMANDS: usize = 50;
/// How long to wait for the last notifications once every command was answered.
pub(crate) const STRAGGLER_GRACE: Duration = Duration::from_secs(5);

/// Milliseconds from just before a `createTask` is sent to its `taskUpdates` notification, at a
/// steady rate, with every role of devart in this process; against the HTTP round trip of a
/// trivial query at the same rate.
pub(crate) async fn latency(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let devart = Server::start(&scratch.config, &[Role::Gateway, Role::Relay, Role::Projections]).await?;
    let api = Api(devart.client().clone());
    let mut socket = subscribe_task_updates(&devart).await?;
    for i in 0..WARM_UP_COMMANDS {
        let title = format!("warm-up-{i}");
        api.create_task(&title).await?;
        // The first also proves the subscription is live before anything is measured.
        await_title(&mut socket, &title).await?;
        api.me().await?;
    }
    let rate = args.latency_rate.max(1);
    let duration = Duration::from_secs(args.latency_secs.max(1));

    let queries = paced(rate, duration, |_| {
        let api = api.clone();
        async move {
            let sent = Instant::now();
            api.me().await?;
            Ok(sent.elapsed())
        }
    })
    .await?;

    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let expected = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let stop = CancellationToken::new();
    // A task of its own, so receiving never waits behind sending; in a set, so that it is
    // aborted rather than leaked if sending fails.
    let mut reader = JoinSet::new();
    reader.spawn(collect_latencies(socket, sent_at.clone(), expected, stop.clone()));
    let responses = paced(rate, duration, |i| {
        let api = api.clone();
        let sent_at = sent_at.clone();
        async move {
            let title = format!("{TITLE_PREFIX}{i}");
            let sent = Instant::now();
            lock(&sent_at).insert(i, sent);
            api.create_task(&title).await?;
            Ok(sent.elapsed())
        }
    })
    .await?;
    let collected = tokio::select! {
        collected = reader.join_next() => collected,
        _ = tokio::time::sleep(STRAGGLER_GRACE) => {
            stop.cancel();
            reader.join_next().await
        }
    };
    let latencies =
        collected.context("the subscription reader is gone")?.context("the subscription reader panicked")??;
    devart.stop().await?;

    let (updates, queries, responses) = (Stats::of(latencies), Stats::of(queries), Stats::of(responses));
    tracing::info!(received = updates.count, sent = expected, "latency measured");
    let ms = |name: &str, figure: Duration, baseline: Duration, target| Row {
        name: name.to_owned(),
        figure: millis(figure),
        unit: "ms",
        baseline: Some(millis(baseline)),
        target,
    };
    Ok(vec![
        ms("createTask → taskUpdates p50", updates.p50, queries.p50, Target::None),
        ms("createTask → taskUpdates p99", updates.p99, queries.p99, Target::AtMost(50.0)),
        ms("createTask → taskUpdates max", updates.max, queries.max, Target::None),
        ms("createTask response p50", responses.p50, queries.p50, Target::None),
        ms("createTask response p99", responses.p99, queries.p99, Target::None),
        Row {
            name: "taskUpdates received (baseline: sent)".into(),
            figure: updates.count as f64,
            unit: "updates",
            baseline: Some(expected as f64),
            target: Target::RatioAtLeast(1.0),
        },
    ])
}

/// Starts `request(i)` for `i` in `0..rate × duration` on a fixed schedule, each in a task of its
/// own, so a slow response never delays the next send (an open-loop load: what a fleet of
/// independent clients does). Returns the durations the successful requests report.
pub(crate) async fn paced<F, Fut>(rate: u32, duration: Duration, request: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    // A late tick is caught up at once: the average rate holds even if the sender stalls.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        requests.spawn(request(i));
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let mut durations = Vec::with_capacity(total as usize);
    let mut failures = Vec::new();
    while let Some(done) = requests.join_next().await {
        match done.context("a request panicked")? {
            Ok(duration) => durations.push(duration),
            Err(error) => failures.push(error),
        }
    }
    tracing::info!(requests = total, rate = achieved, failures = failures.len(), "paced load sent");
    match failures.into_iter().next() {
        // A few failures under load are a result; mostly failures means the benchmark is broken.
        Some(error) if durations.len() < total as usize / 2 => Err(error.context("most requests failed")),
        Some(error) => {
            tracing::warn!(error = %format!("{error:#}"), "some requests failed");
            Ok(durations)
        }
        None => Ok(durations),
    }
}

/// Receives `taskUpdates` until `expected` measured commands arrived or `stop`; returns the
/// latency of each, matched by the title its command carried (the notification may come before
/// the mutation's response, so the task id cannot be the key).
pub(crate) async fn collect_latencies(
    mut socket: Subscriptions,
    sent_at: Arc<Mutex<HashMap<u64, Instant>>>,
    expected: usize,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let title = tokio::select! {
            _ = stop.cancelled() => break,
            title = next_title(&mut socket) => title?,
        };
        let received = Instant::now();
        let Some(i) = title.strip_prefix(TITLE_PREFIX).and_then(|i| i.parse::<u64>().ok()) else {
            continue;
        };
        if let Some(sent) = lock(&sent_at).remove(&i) {
            latencies.push(received - sent);
        }
    }
    Ok(latencies)
}

/// Waits (at most 10 s) for the notification about the task titled `title`, skipping others.
pub(crate) async fn await_title(socket: &mut Subscriptions, title: &str) -> anyhow::Result<()> {
    let wait = async {
        while next_title(socket).await? != title {}
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .with_context(|| format!("no notification about `{title}` within 10 s"))?
}

/// A `graphql-transport-ws` connection to `devart`'s gateway, as its administrator, subscribed
/// to `taskUpdates`.
pub(crate) async fn subscribe_task_updates(devart: &Server) -> anyhow::Result<Subscriptions> {
    let token = devart.token().context("the scratch stack has a JWT secret")?;
    let mut socket = devart.subscriptions(token).await?;
    socket.subscribe("1", "subscription { taskUpdates { id title } }", json!({})).await?;
    Ok(socket)
}

/// The title in the next `taskUpdates` notification.
pub(crate) async fn next_title(socket: &mut Subscriptions) -> anyhow::Result<String> {
    let data = socket.next_data().await?;
    data["taskUpdates"]["title"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("a notification without a title: {data}"))
}
