//! Counts the database round trips and times one claim and one completion through the command
//! layer, as `devart-bench --only queue` drives them, one agent at a time.
//!
//! Postgres is reached through a small proxy that counts what sqlx waits on: every `Sync` of the
//! extended protocol and every simple `Query` is one round trip. That includes the pool's own: it
//! pings a connection before handing it out and again (in the background) once it is returned.
//!
//! ```sh
//! cargo run --release --example queue_round_trips            # DATABASE_URL's server, 2,000 tasks
//! cargo run --release --example queue_round_trips -- 500
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devart_commands::queue::{ClaimRequest, LEASE_DEFAULT};
use devart_commands::{CommandContext, Commands, EventStore, Nudge};
use devart_domain::agent::AgentName;
use devart_domain::task::{Capabilities, CreateTask, Task, TaskCommand, Title};
use devart_domain::Actor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tasks: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(2_000);
    let server = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/devart".into());
    let mut url = reqwest::Url::parse(&server)?;
    let upstream = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432));
    let name = format!("devart_round_trips_{}", &Uuid::new_v4().simple().to_string()[..12]);
    url.set_path(&format!("/{name}"));
    devart_commands::db::create_database_if_missing(url.as_str()).await?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxied = {
        let mut proxied = url.clone();
        proxied.set_host(Some("127.0.0.1"))?;
        proxied.set_port(Some(listener.local_addr()?.port())).map_err(|()| anyhow::anyhow!("no port"))?;
        proxied.query_pairs_mut().append_pair("sslmode", "disable");
        proxied
    };
    let round_trips = Arc::new(AtomicU64::new(0));
    tokio::spawn(proxy(listener, upstream, round_trips.clone()));

    let result = measure(proxied.as_str(), tasks, &round_trips).await;
    url.set_path("/postgres");
    let admin = sqlx::PgPool::connect(url.as_str()).await?;
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)")).execute(&admin).await?;
    admin.close().await;
    result
}

async fn measure(url: &str, tasks: usize, round_trips: &AtomicU64) -> anyhow::Result<()> {
    // One connection: every round trip counted is the command's own.
    let pool = devart_commands::db::connect(url, 1).await?;
    devart_commands::db::migrate(&pool).await?;
    let commands = Commands::new(EventStore::new(pool.clone()), Nudge::default(), None);
    let admin = CommandContext::new(Actor::user("round-trips"));
    let (agent, _key) =
        commands.agents().register(AgentName::parse("counted")?, Capabilities::parse(&["rust"])?, &admin).await?;
    let agent_id = agent.state.id;
    for _ in 0..tasks {
        let command = CreateTask::new(Uuid::now_v7(), Title::parse("Counted")?);
        commands.tasks().create(command, &CommandContext::new(Actor::user("round-trips"))).await?;
    }
    sqlx::query("vacuum (analyze) task_queue").execute(&pool).await?;

    let request = ClaimRequest { agent_id, capabilities: vec!["rust".into()], lease: LEASE_DEFAULT };
    let context = || CommandContext::new(Actor::agent(agent_id.to_string()));
    let (mut claim, mut complete) = (Step::default(), Step::default());
    for _ in 0..tasks {
        let claimed = claim
            .count(round_trips, commands.tasks().claim(&request, &context()))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the queue ran dry"))?;
        let command = TaskCommand::Complete { agent_id, result: None };
        complete.count(round_trips, commands.execute::<Task>(claimed.state.id, command, &context(), None)).await?;
    }
    println!("{tasks} tasks, one agent, one connection");
    println!("claim:    {}", claim.summary(tasks));
    println!("complete: {}", complete.summary(tasks));
    pool.close().await;
    Ok(())
}

#[derive(Default)]
struct Step {
    round_trips: u64,
    took: Duration,
}

impl Step {
    async fn count<T>(&mut self, counter: &AtomicU64, step: impl std::future::Future<Output = T>) -> T {
        let before = counter.load(Ordering::SeqCst);
        let started = Instant::now();
        let out = step.await;
        self.took += started.elapsed();
        self.round_trips += counter.load(Ordering::SeqCst) - before;
        out
    }

    fn summary(&self, n: usize) -> String {
        format!(
            "{:.2} round trips, {:.0} µs on average",
            self.round_trips as f64 / n as f64,
            self.took.as_secs_f64() * 1e6 / n as f64
        )
    }
}

/// Forwards connections to `upstream`, counting the client's `Sync` and `Query` messages.
async fn proxy(listener: TcpListener, upstream: String, round_trips: Arc<AtomicU64>) {
    while let Ok((client, _)) = listener.accept().await {
        let (upstream, round_trips) = (upstream.clone(), round_trips.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let down = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
            let _ = count_messages(&mut client_read, &mut server_write, &round_trips).await;
            down.abort();
        });
    }
}

/// Copies the client's messages to the server: first the untyped start-up message, then typed ones.
async fn count_messages(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    round_trips: &AtomicU64,
) -> std::io::Result<()> {
    let length = from.read_u32().await?;
    let mut startup = vec![0; length as usize - 4];
    from.read_exact(&mut startup).await?;
    to.write_u32(length).await?;
    to.write_all(&startup).await?;
    loop {
        let kind = from.read_u8().await?;
        let length = from.read_u32().await?;
        let mut body = vec![0; length as usize - 4];
        from.read_exact(&mut body).await?;
        if kind == b'S' || kind == b'Q' {
            round_trips.fetch_add(1, Ordering::SeqCst);
        }
        let mut message = Vec::with_capacity(length as usize + 1);
        message.push(kind);
        message.extend_from_slice(&length.to_be_bytes());
        message.extend_from_slice(&body);
        to.write_all(&message).await?;
    }
}
