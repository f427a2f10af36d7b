//! Live data for subscriptions, shared by every subscriber in this process.
//!
//! Two kinds, and nothing is read once per subscriber:
//! - **Announced rows** ([`Fanout`]): what a read model announces after a batch committed
//!   (`devart_projections::announce`), forwarded from the bus by one task per read model and fanned
//!   out to every subscriber: tasks, agents, users, services, workflow runs, cost-outlier flags,
//!   the kill switch's pauses, the knowledge base's documents and their vectors.
//! - **Derived values** ([`Latest`]): a value computed once per change for all subscribers and
//!   kept as the latest: the queue's statistics (read again after the task board announced a
//!   change, at most every [`QUEUE_INTERVAL`], and handed on only when they differ), and the
//!   settings (this process's own copy, which `devart_commands::settings::watch` keeps current).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use devart_commands::settings::WATCH_INTERVAL;
use devart_projections::agents::AgentRow;
use devart_projections::analytics::TaskFacts;
use devart_projections::announce::Announced;
use devart_projections::claims::ClaimPausesRow;
use devart_projections::embeddings::EmbeddedChange;
use devart_projections::knowledge::DocumentChange;
use devart_projections::services::ServiceRow;
use devart_projections::tasks::TaskRow;
use devart_projections::users::UserRow;
use devart_projections::workflows::WorkflowRunRow;
use devart_projections::{agents, analytics, claims, embeddings, knowledge, services, tasks, users, workflows};
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::settings::{listed, Setting};
use super::work::QueueSnapshot;
use crate::auth::{Caller, Role};
use crate::db::Reader;
use crate::error::gql;
use crate::Services;

/// How many announced rows a slow subscriber may fall behind before it skips some.
const FANOUT_BUFFER: usize = 4_096;
/// The queue's statistics are read at most this often, however often the queue changes.
pub const QUEUE_INTERVAL: Duration = Duration::from_millis(250);
/// How soon a failed read of the queue's statistics is tried again.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

/// Everything live, for this process's subscribers.
pub struct Live {
    pub tasks: Fanout<TaskRow>,
    pub agents: Fanout<AgentRow>,
    pub users: Fanout<UserRow>,
    pub services: Fanout<ServiceRow>,
    pub runs: Fanout<WorkflowRunRow>,
    /// The facts of tasks whose cost-outlier flag was raised or acknowledged.
    pub outliers: Fanout<TaskFacts>,
    /// The pauses in effect, whenever one begins or ends.
    pub claims: Fanout<ClaimPausesRow>,
    /// Documents changed in the knowledge base, and documents whose vectors caught up.
    pub documents: Fanout<DocumentChange>,
    pub embedded: Fanout<EmbeddedChange>,
    pub queue: Latest<QueueSnapshot>,
    pub settings: Latest<Vec<Setting>>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            tasks: Fanout::new(tasks::ANNOUNCED),
            agents: Fanout::new(agents::ANNOUNCED),
            users: Fanout::new(users::ANNOUNCED),
            services: Fanout::new(services::ANNOUNCED),
            runs: Fanout::new(workflows::ANNOUNCED),
            outliers: Fanout::new(analytics::ANNOUNCED),
            claims: Fanout::new(claims::ANNOUNCED),
            documents: Fanout::new(knowledge::ANNOUNCED),
            embedded: Fanout::new(embeddings::ANNOUNCED),
            queue: Latest::default(),
            settings: Latest::default(),
        }
    }
}

/// Feeds `services.live` until `shutdown`: a forwarder per read model, the queue's statistics and
/// the settings. A part that panics is reported, not dropped: its subscribers would silently stop.
pub async fn run(services: Services, shutdown: CancellationToken) {
    let live = services.live.clone();
    let mut parts = tokio::task::JoinSet::new();
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.tasks, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.agents, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.users, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.services, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.runs, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.outliers, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.claims, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.documents, shutdown.clone()));
    parts.spawn(forward(services.clone(), live.clone(), |l| &l.embedded, shutdown.clone()));
    parts.spawn(follow_queue(services.clone(), shutdown.clone()));
    parts.spawn(follow_settings(services, shutdown));
    while let Some(ended) = parts.join_next().await {
        match ended {
            Err(error) if error.is_panic() => tracing::error!(%error, "live updates: a part panicked"),
            _ => {}
        }
    }
}

/// A read model's announced rows, fanned out to this process's subscribers.
pub struct Fanout<R> {
    announced: Announced<R>,
    sender: broadcast::Sender<Arc<R>>,
}

impl<R: Send + Sync + 'static> Fanout<R> {
    fn new(announced: Announced<R>) -> Fanout<R> {
        Fanout { announced, sender: broadcast::channel(FANOUT_BUFFER).0 }
    }

    /// Every row announced from now on; a subscriber that falls behind skips what it missed.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<R>> {
        broadcast_stream(self.sender.subscribe())
    }

    /// Hands `row` to every subscriber, as the bus would.
    pub fn send(&self, row: R) {
        let _ = self.sender.send(Arc::new(row));
    }
}

/// Feeds the fanout `which` picks from its read model's announcements on the bus.
async fn forward<R, F>(services: Services, live: Arc<Live>, which: F, shutdown: CancellationToken)
where
    R: serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Live) -> &Fanout<R>,
{
    let fanout = which(&live);
    let (name, subject) = (fanout.announced.name(), fanout.announced.subject(&services.bus.names));
    loop {
        let mut subscription = match services.bus.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(read_model = name, %error, "live updates: cannot subscribe; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = subscription.next() => m,
            };
            let Some(message) = message else { break };
            match fanout.announced.decode(&message.payload) {
                Ok(row) => fanout.send(row),
                Err(error) => tracing::warn!(read_model = name, %error, "live updates: unreadable announcement"),
            }
        }
    }
}

/// What a derived value's subscribers share: the value, or why it could not be read.
pub type Shared<T> = Result<Arc<T>, async_graphql::Error>;

/// The latest of a value derived once per change for all subscribers.
pub struct Latest<T> {
    /// `None` until first read, and again after a change nobody was listening for.
    value: watch::Sender<Option<Shared<T>>>,
    /// A subscriber came and found no value.
    wanted: Notify,
}

impl<T> Default for Latest<T> {
    fn default() -> Latest<T> {
        Latest { value: watch::channel(None).0, wanted: Notify::new() }
    }
}

impl<T: Send + Sync + 'static> Latest<T> {
    /// The value as it is now (read at once if there is none, or only a failure), then each time
    /// it changes.
    pub fn now_and_after(&self) -> impl Stream<Item = Shared<T>> {
        let receiver = self.value.subscribe();
        if !self.is_current() {
            self.wanted.notify_one();
        }
        values(receiver, true)
    }

    /// Whether a value is held that was read since the last change (not a failure to read).
    fn is_current(&self) -> bool {
        matches!(*self.value.borrow(), Some(Ok(_)))
    }

    /// Each value after the present one.
    pub fn after(&self) -> impl Stream<Item = Shared<T>> {
        values(self.value.subscribe(), false)
    }

    fn listened(&self) -> bool {
        self.value.receiver_count() > 0
    }

    /// Hands on `value` unless it equals the present one.
    fn offer(&self, value: Shared<T>)
    where
        T: PartialEq,
    {
        self.value.send_if_modified(|held| {
            let same = match (&*held, &value) {
                (Some(Ok(a)), Ok(b)) => a == b,
                (Some(Err(a)), Err(b)) => a.message == b.message,
                _ => false,
            };
            if !same {
                *held = Some(value);
            }
            !same
        });
    }

    /// Forgets the value: it changed while nobody listened, so the next subscriber has it read.
    fn forget(&self) {
        self.value.send_if_modified(|held| held.take().is_some());
    }
}

/// The values `receiver` sees: the present one first if `present` (a new receiver counts it as
/// seen), then each new one; `None`, a value forgotten, is skipped.
fn values<T: Send + Sync + 'static>(
    receiver: watch::Receiver<Option<Shared<T>>>,
    present: bool,
) -> impl Stream<Item = Shared<T>> {
    futures::stream::unfold((receiver, present), |(mut receiver, mut present)| async move {
        loop {
            if !present {
                receiver.changed().await.ok()?;
            }
            present = false;
            let value = receiver.borrow_and_update().clone();
            if let Some(value) = value {
                return Some((value, (receiver, false)));
            }
        }
    })
}

/// Keeps `services.live.queue` current while anyone listens (see the module's doc). A delayed
/// task falling due changes the statistics without an event, so the next such moment, which each
/// read returns, is waited for too.
async fn follow_queue(services: Services, shutdown: CancellationToken) {
    let latest = &services.live.queue;
    let mut changes = services.live.tasks.sender.subscribe();
    let mut pauses = services.live.claims.sender.subscribe();
    // Every person sees the whole queue; read as the least of them.
    let reader = Caller {
        subject: "queueStatsUpdates".into(),
        role: Role::Viewer,
        agent: None,
        capabilities: Vec::new(),
        user: None,
    };
    // Whether the statistics may have changed since the last read, and when to look again anyway.
    let (mut stale, mut wake_at): (bool, Option<Instant>) = (true, None);
    let mut last_read = Instant::now() - QUEUE_INTERVAL;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => stale = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            change = pauses.recv() => match change {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => stale = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = latest.wanted.notified() => {}
            _ = sleep_until(wake_at) => {
                stale = true;
                wake_at = None;
            }
        }
        if !latest.listened() {
            if stale {
                latest.forget();
            }
            continue;
        }
        if !stale && latest.is_current() {
            continue;
        }
        // Coalesced: changes during the wait are covered by the read after it.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(last_read + QUEUE_INTERVAL) => {}
        }
        while changes.try_recv().is_ok() {}
        while pauses.try_recv().is_ok() {}
        last_read = Instant::now();
        stale = false;
        match read_queue(&services, &reader).await {
            Ok((snapshot, next_due)) => {
                wake_at = next_due.map(instant_at);
                latest.offer(Ok(Arc::new(snapshot)));
            }
            Err(error) => {
                wake_at = Some(Instant::now() + QUEUE_RETRY);
                latest.offer(Err(error));
            }
        }
    }
}

/// One read of the queue's statistics, as a person sees them, and when a delayed task next falls
/// due.
async fn read_queue(
    services: &Services,
    reader: &Caller,
) -> async_graphql::Result<(QueueSnapshot, Option<DateTime<Utc>>)> {
    let mut db = Reader::begin(&services.pool, reader).await.map_err(gql)?;
    let read = QueueSnapshot::read(db.conn()).await?;
    db.end().await.map_err(gql)?;
    Ok(read)
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant of a wall-clock time (now, if it has passed).
fn instant_at(at: DateTime<Utc>) -> Instant {
    let ahead = (at - Utc::now()).to_std().unwrap_or_default();
    Instant::now() + ahead
}

/// Keeps `services.live.settings` current: the process's copy of the settings changes (a new
/// copy) when the settings stream moved, here or anywhere; looking at it reads no database.
async fn follow_settings(services: Services, shutdown: CancellationToken) {
    let settings = services.commands.settings();
    let mut held = settings.current();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let current = settings.current();
        if !Arc::ptr_eq(&held, &current) {
            services.live.settings.offer(Ok(Arc::new(listed(&current))));
            held = current;
        }
    }
}

/// A broadcast receiver as a stream; a subscriber that falls behind skips what it missed.
fn broadcast_stream<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> impl Stream<Item = T> {
    use broadcast::error::RecvError;
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(row) => return Some((row, rx)),
                Err(RecvError::Lagged(skipped)) => tracing::warn!(skipped, "a subscriber fell behind"),
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
