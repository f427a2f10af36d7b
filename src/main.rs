//! `devart`: one binary for every role and every operator task.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use devart::{Config, Role};
use devart_commands::{CommandContext, CommandError, Commands, EventStore, Nudge};
use devart_domain::user::{Email, Password};
use devart_domain::{Actor, DomainError, Position};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// devart: an event-sourced control plane for teams of autonomous coding agents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// On an error, print its whole chain of causes rather than one line.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway, the relay and the projection workers (or the roles named).
    Serve {
        /// Comma-separated subset of gateway, relay, projections.
        #[arg(long, value_delimiter = ',', default_value = "gateway,relay,projections")]
        roles: Vec<Role>,
        /// Where the gateway listens.
        #[arg(long, env = "DEVART_LISTEN", default_value = "127.0.0.1:8787")]
        listen: String,
        /// On SIGTERM or Ctrl-C, how long the parts may take to finish what they hold before the
        /// process ends anyway (a second signal ends it at once).
        #[arg(long, env = "DEVART_SHUTDOWN_GRACE", default_value = "10s")]
        shutdown_grace: humantime::Duration,
    },
    /// Creates the database if missing, migrates it, and sets up the JetStream stream and
    /// consumers. Safe to run again.
    Migrate,
    /// Checks what devart needs (Postgres, pgvector, migrations, NATS with JetStream, the stream
    /// and consumers, the JWT key, the optional channels, the dashboard), one line each with the
    /// fix for anything wrong; exits 1 when something required is missing. Changes nothing.
    Doctor,
    /// Prints a signed JWT.
    Token {
        #[arg(long)]
        subject: String,
        #[arg(long, value_parser = parse_role)]
        role: devart_gateway::Role,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
    /// The event stream.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Checks the hash chain over the event history: prints OK, or the first position where the
    /// history was modified, removed, inserted or reordered (and exits with 1).
    Verify {
        /// First position to check (default: the first).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position to check (default: the last chained).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Writes events as CloudEvents JSON, one per line, in global order (to stdout).
    Export {
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Reads an export (from stdin) into an instance that holds no events yet, then rebuilds the
    /// write side and every read model from it. Agents' API keys do not travel: rotate them.
    Import,
    /// Rebuilds every read model as of a position or a time into a separate schema, for
    /// investigation, without touching the live ones.
    Replay {
        /// A position, or an RFC 3339 time.
        #[arg(long)]
        until: String,
        /// The schema to fill (created, or emptied if it exists).
        #[arg(long)]
        schema: String,
    },
    /// Prints a checksum of every read model table (of `--schema`, default the live ones), to
    /// compare instances or a replay with the source.
    Checksum {
        #[arg(long)]
        schema: Option<String>,
    },
    /// The knowledge base.
    Knowledge {
        #[command(subcommand)]
        command: KnowledgeCommand,
    },
    /// Prints the GraphQL schema (SDL).
    Schema,
    /// Works tasks as an agent: claims them over the GraphQL API and runs a command for each.
    Agent(devart::agent::Args),
    /// People's accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates a user (the first admin of a new instance, say). The password is read from stdin,
    /// one line, or generated with --generate and printed once to stdout; never an argument, which
    /// other users of the machine could see. Exits with 3 if a user with that email exists.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: devart_gateway::Role,
        /// Generate the password (and print it) instead of reading it from stdin.
        #[arg(long)]
        generate: bool,
    },
}

/// `devart user add`'s exit status when a user with the email exists already.
const USER_EXISTS: i32 = 3;
/// The exit status of a usage error, as for a bad argument.
const USAGE: i32 = 2;

#[derive(Subcommand)]
enum KnowledgeCommand {
    /// Loads a folder of Markdown files (`.md`, `.markdown`, recursively; ADRs, runbooks) as
    /// documents, with a progress bar. Each file's source is `--source` joined with its path in
    /// the folder, its title its front matter's `title:`, else its first `# ` heading, else its
    /// name; its tags `--tag`s and its front matter's `tags:`. Importing again updates changed
    /// files and leaves the others alone.
    Import {
        folder: std::path::PathBuf,
        /// The sources' prefix (default: the folder's name).
        #[arg(long)]
        source: Option<String>,
        /// A tag for every document (repeat it for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Follows every event after a position: stored ones first, then live.
    Tail {
        /// Start after this position (0: from the beginning; default: from now on).
        #[arg(long)]
        from: Option<u64>,
        /// One CloudEvents JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Each projection's checkpoint and lag.
    Status,
    /// Rebuilds a read model from the event store, aside, then swaps it in.
    Rebuild {
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
}

fn parse_role(s: &str) -> Result<devart_gateway::Role, String> {
    devart_gateway::Role::parse(s).ok_or_else(|| format!("`{s}` is not a role (admin, supervisor, viewer)"))
}

// mimalloc: with the system allocator the embedding model spends a quarter to a half of its time in
// the kernel, and the gateway's many small allocations gain from it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before any thread starts: `X_FILE` variables become `X`.
    if let Err(error) = devart::secrets::load_files() {
        eprintln!("devart: {error}");
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEVART_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    devart::secrets::warn_flags(&matches);
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let verbose = cli.verbose;
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if verbose => {
            eprintln!("devart: {error:?}");
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            let more = if error.chain().count() > 1 { " (-v for the whole chain)" } else { "" };
            eprintln!("devart: {}{more}", one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error in one line: what was being done, and the cause underneath it all.
fn one_line(error: &anyhow::Error) -> String {
    let first = error.to_string();
    let root = error.root_cause().to_string();
    if first == root || first.contains(&root) {
        first
    } else {
        format!("{first}: {root}")
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Serve { roles, listen, shutdown_grace } => {
            let listener = if roles.contains(&Role::Gateway) {
                Some(tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listening on {listen}"))?)
            } else {
                None
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            devart::run(&config, &roles, listener, shutdown, shutdown_grace.into()).await
        }
        Command::Doctor => {
            let checks = devart::doctor::checks(&config).await;
            for check in &checks {
                println!("{check}");
            }
            let failed = checks.iter().filter(|c| matches!(c.finding, devart::doctor::Finding::Fail { .. })).count();
            if failed > 0 {
                anyhow::bail!("{failed} of {} checks failed", checks.len());
            }
            Ok(())
        }
        Command::Migrate => {
            devart::migrate(&config).await?;
            eprintln!("migrated");
            Ok(())
        }
        Command::Token { subject, role, ttl } => {
            let pool = config.pool().await?;
            let key = config.signing_key(&pool).await?;
            let ttl = chrono::Duration::from_std(ttl.into()).context("ttl is too long")?;
            println!("{}", key.issue(&subject, role, ttl));
            Ok(())
        }
        Command::Events { command: EventsCommand::Tail { from, json } } => tail(&config, from, json).await,
        Command::Projections { command: ProjectionsCommand::Status } => {
            let pool = config.pool().await?;
            let status = devart_projections::status::status(&pool).await?;
            println!("{:<16} {:>12} {:>12} {:>10}  updated", "projection", "checkpoint", "head", "lag");
            for s in status {
                println!(
                    "{:<16} {:>12} {:>12} {:>10}  {}",
                    s.name,
                    s.checkpoint,
                    s.head,
                    s.lag,
                    s.updated_at.to_rfc3339()
                );
            }
            Ok(())
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { name, all } } => {
            rebuild(&config, name, all).await
        }
        Command::Verify { from, to } => {
            let pool = config.pool().await?;
            match devart_commands::chain::verify(&pool, Position(from), to.map(Position)).await? {
                devart_commands::chain::Verdict::Intact { from, to, events } => {
                    println!("OK: {events} events from position {from} to {to} are as they were written");
                    Ok(())
                }
                devart_commands::chain::Verdict::Broken { position, kind, detail } => {
                    println!("{} at position {position}: {detail}", kind.as_str());
                    std::process::exit(1);
                }
            }
        }
        Command::Export { from, to } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = devart::portable::export(&config, from, to, &mut out).await?;
            eprintln!("exported {written} events");
            Ok(())
        }
        Command::Import => {
            let imported = devart::portable::import(&config, std::io::stdin().lock()).await?;
            eprintln!("imported {imported} events; write side and read models rebuilt");
            Ok(())
        }
        Command::Replay { until, schema } => {
            let until = devart_commands::history::At::parse(&until).map_err(anyhow::Error::msg)?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "replay [{bar:40}] {pos}/{len} positions ({per_sec}, eta {eta})",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let replayed = devart::portable::replay(&config, until, &schema, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish();
            eprintln!(
                "replayed {} events into schema {schema} in {:.2?} ({:.0} events/s)",
                replayed.events,
                replayed.elapsed,
                replayed.events as f64 / replayed.elapsed.as_secs_f64().max(1e-9)
            );
            Ok(())
        }
        Command::Checksum { schema } => {
            for (table, sum) in devart::portable::checksums(&config, schema.as_deref()).await? {
                println!("{table:<24} {sum}");
            }
            Ok(())
        }
        Command::Schema => {
            print!("{}", devart_gateway::schema::build(None).sdl());
            Ok(())
        }
        Command::Knowledge { command: KnowledgeCommand::Import { folder, source, tags } } => {
            import_knowledge(&config, &folder, source, &tags).await
        }
        Command::User { command: UserCommand::Add { email, role, generate } } => {
            add_user(&config, &email, role, generate).await
        }
        Command::Agent(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let code = devart::agent::run(args, shutdown).await?.exit_code();
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

/// `devart knowledge import`: the folder's Markdown files as documents, through the commands.
async fn import_knowledge(
    config: &Config,
    folder: &std::path::Path,
    source: Option<String>,
    tags: &[String],
) -> anyhow::Result<()> {
    anyhow::ensure!(folder.is_dir(), "{} is not a folder", folder.display());
    let prefix = source.unwrap_or_else(|| {
        let name = folder.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        name.unwrap_or_default()
    });
    let pool = config.pool().await?;
    // The relay sequences the events within its idle poll: nothing needs to be nudged over NATS.
    let commands = Commands::new(EventStore::new(pool), Nudge::default(), None);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("import [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta}) {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = devart::knowledge::import_folder(&commands, folder, &prefix, tags, |done, total, path| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    for (path, reason) in &report.skipped {
        eprintln!("skipped {}: {reason}", path.display());
    }
    eprintln!(
        "imported {}: {} added, {} updated, {} unchanged, {} skipped",
        folder.display(),
        report.added,
        report.updated,
        report.unchanged,
        report.skipped.len()
    );
    Ok(())
}

/// Creates a user through the commands, as an admin's `createUser` would.
async fn add_user(config: &Config, email: &str, role: devart_gateway::Role, generate: bool) -> anyhow::Result<()> {
    let email = Email::parse(email).unwrap_or_else(|e| usage(&e));
    let (password, generated) = if generate {
        let text = generated_password();
        (Password::parse(&text).unwrap_or_else(|e| usage(&e)), Some(text))
    } else {
        (Password::parse(&password_from_stdin()?).unwrap_or_else(|e| usage(&e)), None)
    };
    let pool = config.pool().await?;
    // The relay sequences the events within its idle poll: nothing needs to be nudged over NATS.
    let commands = Commands::new(EventStore::new(pool), Nudge::default(), None);
    let context = CommandContext::new(Actor::system("cli"));
    match commands.users().create(email.clone(), role.domain(), &password, &context).await {
        Ok(created) => {
            if let Some(password) = generated {
                println!("{password}");
            }
            eprintln!("created {} {} ({})", role.domain().as_str(), email.as_str(), created.state.id);
            Ok(())
        }
        Err(CommandError::Domain(DomainError::Conflict(message))) => {
            eprintln!("devart user add: {message}");
            std::process::exit(USER_EXISTS);
        }
        Err(other) => Err(other).context("creating the user"),
    }
}

/// Exits as for a usage error, saying what was wrong.
fn usage(error: &impl std::fmt::Display) -> ! {
    eprintln!("devart user add: {error}");
    std::process::exit(USAGE);
}

/// One line of stdin, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (shown as typed; or use --generate): ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("reading the password from stdin")?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.is_empty() {
        usage(&"no password on stdin (pass one line, or use --generate)");
    }
    Ok(password.to_owned())
}

/// A new random password: 24 letters and digits (about 143 bits).
fn generated_password() -> String {
    use rand::Rng;
    rand::rngs::OsRng.sample_iter(&rand::distributions::Alphanumeric).take(24).map(char::from).collect()
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        tracing::info!("shutting down: finishing what is in flight (a second signal stops at once)");
        shutdown.cancel();
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await.ok();
        tracing::info!("shutting down: finishing what is in flight (a second signal stops at once)");
        shutdown.cancel();
        tokio::signal::ctrl_c().await.ok();
    }
    tracing::warn!("stopping at once: a second signal");
    std::process::exit(130);
}

async fn tail(config: &Config, from: Option<u64>, json: bool) -> anyhow::Result<()> {
    let pool = config.pool().await?;
    let store = EventStore::new(pool);
    let bus = config.bus().await?;
    let after = match from {
        Some(p) => Position(p),
        None => store.head().await?,
    };
    let feed = devart_commands::feed::follow(store, bus, after);
    futures::pin_mut!(feed);
    let mut out = std::io::stdout().lock();
    while let Some(item) = feed.next().await {
        let recorded = item?;
        if json {
            writeln!(out, "{}", devart_commands::bus::cloudevent_json(&recorded))?;
        } else {
            let m = &recorded.meta;
            writeln!(
                out,
                "{:>10}  {}  {:<20} {}@{}  by {}",
                m.position.map(|p| p.to_string()).unwrap_or_default(),
                m.occurred_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                m.event_type,
                m.stream_id,
                m.stream_version,
                m.actor
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

async fn rebuild(config: &Config, name: Option<String>, all: bool) -> anyhow::Result<()> {
    // The knowledge base's vectors need the embedding provider: rebuilt with `--all` where one is
    // configured, by name only then.
    let wants_vectors = all || name.as_deref() == Some(devart_projections::embeddings::NAME);
    let embedded = match wants_vectors {
        true => match config.knowledge.semantic().await? {
            devart::knowledge::Semantic::On { ingest, .. } => devart_projections::embedded(ingest),
            devart::knowledge::Semantic::Off(reason) if all => {
                eprintln!("{}: skipped ({reason})", devart_projections::embeddings::NAME);
                Vec::new()
            }
            devart::knowledge::Semantic::Off(reason) => anyhow::bail!("cannot rebuild the vectors: {reason}"),
        },
        false => Vec::new(),
    };
    let projections = match (name, all) {
        (_, true) => devart_projections::all().into_iter().chain(embedded).collect(),
        (Some(name), false) if name == devart_projections::embeddings::NAME => embedded,
        (Some(name), false) => vec![devart_projections::by_name(&name)
            .with_context(|| format!("no projection named `{name}`; `devart projections status` lists them"))?],
        (None, false) => anyhow::bail!("name a projection, or pass --all"),
    };
    let pool = config.pool().await?;
    let store = EventStore::new(pool.clone());
    for projection in projections {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(projection.name());
        bar.enable_steady_tick(Duration::from_millis(200));
        let report = devart_projections::rebuild::rebuild(&pool, &store, projection.as_ref(), |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
        bar.finish();
        eprintln!(
            "{}: {} events to position {} in {:.2?} ({:.0} events/s)",
            projection.name(),
            report.events,
            report.position,
            report.elapsed,
            report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}
