//! Relay: the relay's publisher against plain JetStream publishes.

use super::*;

/// Messages in flight before their acknowledgements are awaited, as the publisher pipelines.
pub(crate) const RAW_PUBLISH_BATCH: usize = 500;

/// Events per second the relay's publisher sends to an empty stream from a store already holding
/// `--relay-events` sequenced events; against plain pipelined JetStream publishes of the same
/// messages (payloads and headers) into a scratch stream.
pub(crate) async fn relay(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let events = seed(scratch, args.relay_events, args.events_per_task).await?.events;
    let baseline = raw_publish_rate(scratch, events).await?;
    let figure = publisher_rate(scratch, events).await?;
    Ok(vec![Row {
        name: format!("relay publish, {} events, {}/task", number(events as f64), args.events_per_task),
        figure,
        unit: "events/s",
        baseline: Some(baseline),
        target: Target::None,
    }])
}

pub(crate) async fn publisher_rate(scratch: &Stack, events: u64) -> anyhow::Result<f64> {
    let bus = &scratch.bus;
    let stream = bus.jetstream.get_stream(bus.names.stream()).await.map_err(|e| anyhow!("{e}"))?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 + events / 1_000);
    let publisher = tokio::spawn(devart_commands::relay::run_publisher(
        scratch.store.clone(),
        bus.clone(),
        Nudge::default(),
        shutdown.clone(),
    ));
    loop {
        let info = stream.get_info().await.map_err(|e| anyhow!("reading the stream's state: {e}"))?;
        if info.state.last_sequence >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("the publisher reached {} of {events} events in {:.0?}", info.state.last_sequence, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    publisher.await.context("the publisher panicked")?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

pub(crate) fn raw_stream(bus: &Bus) -> String {
    format!("{}_RAW", bus.names.prefix().to_ascii_uppercase())
}

pub(crate) async fn raw_publish_rate(scratch: &Stack, events: u64) -> anyhow::Result<f64> {
    let bus = &scratch.bus;
    let mut messages = raw_messages(scratch, events).await?;
    let mut config = bus.names.stream_config();
    config.name = raw_stream(bus);
    config.subjects = vec![format!("{}.raw.>", bus.names.prefix())];
    bus.jetstream.create_stream(config).await.map_err(|e| anyhow!("creating the raw stream: {e}"))?;
    let started = Instant::now();
    while !messages.is_empty() {
        let mut acks = Vec::with_capacity(RAW_PUBLISH_BATCH);
        for (subject, headers, payload) in messages.drain(..RAW_PUBLISH_BATCH.min(messages.len())) {
            acks.push(bus.jetstream.publish_with_headers(subject, headers, payload.into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The messages the publisher sends for the stored events, on subjects of the raw stream.
pub(crate) async fn raw_messages(scratch: &Stack, events: u64) -> anyhow::Result<Vec<(String, HeaderMap, Vec<u8>)>> {
    let recorded = scratch.store.read_all(devart_domain::Position::START, None, events as usize).await?;
    let prefix = scratch.bus.names.prefix();
    let mut messages = Vec::with_capacity(recorded.len());
    for r in &recorded {
        let subject = format!("{prefix}.raw.{}.{}", r.event.aggregate(), r.meta.event_type);
        let payload = serde_json::to_vec(&devart_commands::codec::to_json(&r.event))?;
        messages.push((subject, devart_commands::bus::headers(&r.meta), payload));
    }
    Ok(messages)
}
