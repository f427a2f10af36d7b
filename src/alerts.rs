//! Budget alerts, delivered: the channels (Telegram, a signed webhook) and the loop that sends what
//! the `alerts` consumer recorded in `alert_deliveries`.
//!
//! # How a delivery goes
//! A loop runs in every process with the projections role and at least one channel configured.
//! It claims one due row at a time (`FOR UPDATE SKIP LOCKED`, so loops in several processes never
//! take the same row) by marking it `sending` with a lease, and commits that before it sends
//! anything: no database lock or transaction is held across the network, and no command ever
//! waits for a channel. When the channel accepts the alert the row becomes `delivered`; when it
//! does not, the row goes back to `pending` with its attempts, the error, and a next attempt after
//! an exponential backoff with jitter (honouring the channel's `retry_after`), until it is given
//! up (`failed`) after [`ATTEMPTS_MAX`] attempts.
//!
//! # Exactly once, and where it ends
//! Recording is exactly once (the consumer's checkpoint and the rows commit together, and rows are
//! unique per event and channel), and a `delivered` row is never sent again. Stopping devart
//! (shutdown) does not interrupt a send: the loop only looks at the shutdown signal between
//! deliveries, and a send is bounded by the timeout, so a stopped process leaves no row behind in
//! `sending`, and every alert it sent is marked delivered. Across stops and restarts each alert is
//! sent exactly once.
//!
//! A crash is different. A process that dies between claiming a row and marking it delivered
//! leaves it `sending`; when its lease runs out another loop (or the restarted process) sends it
//! again. Whether the first request reached the channel cannot be known: the Telegram Bot API has
//! no idempotency key and no way to ask what was sent. So a crash during a send makes delivery
//! at-least-once at the network level: the alert may arrive twice, but it is never lost. (The
//! other choice, never resending a row whose send had started, would lose the alert whenever the
//! crash came before the request left, and a missed suspension is worse than a repeated one.) A
//! webhook receiver can restore exactly-once by deduplicating on the CloudEvent `id`, which is the
//! event's id and the same on every attempt.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use devart_projections::alerts::{Alert, AlertKind, Channel};
use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::types::Json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Secret;

/// How often an idle loop looks for due rows (new alerts, retries, expired leases).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Retries wait twice as long each time, up to this.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(3600);
/// Attempts after which a delivery is given up (`failed`): with the default first delay of five
/// seconds, five to ten hours of trying (the jitter decides).
pub const ATTEMPTS_MAX: i32 = 20;
/// How much of a channel's error answer is kept.
const ERROR_LEN_MAX: usize = 500;

/// The header carrying a webhook body's signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Devart-Signature";

/// The Telegram Bot API's address, unless configured otherwise.
pub const TELEGRAM_BASE_URL: &str = "https://api.telegram.org";

/// Where budget alerts go, as configured; every channel is off until configured.
#[derive(Clone, clap::Args)]
pub struct AlertConfig {
    /// The Telegram Bot API's base URL.
    #[arg(long, env = "DEVART_TELEGRAM_BASE_URL", default_value = TELEGRAM_BASE_URL, global = true)]
    pub telegram_base_url: String,
    /// The Telegram bot's token; with the chat id, turns on alerts to Telegram.
    #[arg(long, env = "DEVART_TELEGRAM_BOT_TOKEN", hide_env_values = true, value_parser = any_secret, global = true)]
    pub telegram_bot_token: Option<Secret>,
    /// The Telegram chat alerts go to: a numeric id, or `@channelname`.
    #[arg(long, env = "DEVART_TELEGRAM_CHAT_ID", global = true)]
    pub telegram_chat_id: Option<String>,
    /// An HTTP(S) endpoint that receives each alert as a CloudEvent (JSON); needs the secret.
    #[arg(long, env = "DEVART_WEBHOOK_URL", hide_env_values = true, global = true)]
    pub webhook_url: Option<String>,
    /// The key of the webhook's `X-Devart-Signature` (HMAC-SHA256 of the body).
    #[arg(long, env = "DEVART_WEBHOOK_SECRET", hide_env_values = true, value_parser = any_secret, global = true)]
    pub webhook_secret: Option<Secret>,
    /// How long one send may take; a claimed delivery is leased for twice as long.
    #[arg(long, env = "DEVART_ALERT_TIMEOUT", default_value = "10s", global = true)]
    pub alert_timeout: humantime::Duration,
    /// The first retry's delay after a failed send; each next one waits twice as long, up to an
    /// hour.
    #[arg(long, env = "DEVART_ALERT_RETRY", default_value = "5s", global = true)]
    pub alert_retry: humantime::Duration,
}

impl Default for AlertConfig {
    /// Every channel off; the same timings as the command line's defaults.
    fn default() -> Self {
        AlertConfig {
            telegram_base_url: TELEGRAM_BASE_URL.to_owned(),
            telegram_bot_token: None,
            telegram_chat_id: None,
            webhook_url: None,
            webhook_secret: None,
            alert_timeout: Duration::from_secs(10).into(),
            alert_retry: Duration::from_secs(5).into(),
        }
    }
}

/// Takes any text: a refused value would be echoed in clap's error message.
fn any_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(s.to_owned()))
}

impl AlertConfig {
    /// The channels configured, checked: each needs all of its settings, and URLs must parse.
    /// Errors name settings, never their values.
    pub fn channels(&self) -> anyhow::Result<AlertChannels> {
        let telegram = match (&self.telegram_bot_token, &self.telegram_chat_id) {
            (None, None) => None,
            (Some(token), Some(chat_id)) => {
                let base_url = Url::parse(&self.telegram_base_url).context("DEVART_TELEGRAM_BASE_URL is not a URL")?;
                anyhow::ensure!(!token.0.trim().is_empty(), "DEVART_TELEGRAM_BOT_TOKEN is empty");
                anyhow::ensure!(!chat_id.trim().is_empty(), "DEVART_TELEGRAM_CHAT_ID is empty");
                Some(Telegram { base_url, token: token.clone(), chat_id: chat_id.trim().to_owned() })
            }
            (Some(_), None) => anyhow::bail!("DEVART_TELEGRAM_BOT_TOKEN is set, but DEVART_TELEGRAM_CHAT_ID is not"),
            (None, Some(_)) => anyhow::bail!("DEVART_TELEGRAM_CHAT_ID is set, but DEVART_TELEGRAM_BOT_TOKEN is not"),
        };
        let webhook = match (&self.webhook_url, &self.webhook_secret) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                // The URL may carry credentials of its own: the error does not repeat it.
                let url = Url::parse(url).ok().context("DEVART_WEBHOOK_URL is not a URL")?;
                anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "DEVART_WEBHOOK_URL is not an HTTP(S) URL");
                anyhow::ensure!(!secret.0.is_empty(), "DEVART_WEBHOOK_SECRET is empty");
                Some(Webhook { url, secret: secret.clone() })
            }
            (Some(_), None) => anyhow::bail!("DEVART_WEBHOOK_URL is set, but DEVART_WEBHOOK_SECRET is not"),
            (None, Some(_)) => anyhow::bail!("DEVART_WEBHOOK_SECRET is set, but DEVART_WEBHOOK_URL is not"),
        };
        let timeout: Duration = self.alert_timeout.into();
        anyhow::ensure!(!timeout.is_zero(), "DEVART_ALERT_TIMEOUT must be more than zero");
        Ok(AlertChannels { telegram, webhook, timeout, retry: self.alert_retry.into() })
    }
}

/// The channels alerts go to, ready to send. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct AlertChannels {
    pub telegram: Option<Telegram>,
    pub webhook: Option<Webhook>,
    /// How long one send may take.
    pub timeout: Duration,
    /// The first retry's delay.
    pub retry: Duration,
}

/// A chat reached through the Telegram Bot API.
#[derive(Debug, Clone)]
pub struct Telegram {
    base_url: Url,
    token: Secret,
    chat_id: String,
}

/// An endpoint receiving signed CloudEvents.
#[derive(Clone)]
pub struct Webhook {
    url: Url,
    secret: Secret,
}

impl fmt::Debug for Webhook {
    /// Only the origin: a webhook URL's path or query is often a credential itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook").field("origin", &self.url.origin().ascii_serialization()).finish_non_exhaustive()
    }
}

impl AlertChannels {
    /// The channels configured, for the `alerts` consumer to record rows for.
    pub fn enabled(&self) -> Vec<Channel> {
        let mut channels = Vec::new();
        if self.telegram.is_some() {
            channels.push(Channel::Telegram);
        }
        if self.webhook.is_some() {
            channels.push(Channel::Webhook);
        }
        channels
    }

    /// How long a claimed delivery is held before another loop may take it: the send's timeout,
    /// and as long again for marking the outcome.
    fn lease(&self) -> Duration {
        self.timeout * 2
    }
}

/// A send the channel did not accept.
#[derive(Debug)]
struct Failure {
    message: String,
    /// How long the channel asked to wait (HTTP 429).
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), retry_after: None }
    }

    /// A transport failure, described without the URL (the Telegram URL holds the bot token).
    fn transport(error: reqwest::Error) -> Failure {
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        Failure::new(message)
    }
}

/// Runs deliveries until `shutdown`: due rows of the configured channels, one at a time.
pub async fn run_delivery(pool: PgPool, channels: AlertChannels, shutdown: CancellationToken) {
    let http = match reqwest::Client::builder()
        .timeout(channels.timeout)
        .user_agent(concat!("devart/", env!("CARGO_PKG_VERSION")))
        // A redirect would take the signed body (or the token's path) elsewhere: it counts as a
        // failure instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %Failure::transport(error).message, "alerts: cannot build the HTTP client");
            return;
        }
    };
    let names: Vec<&'static str> = channels.enabled().into_iter().map(Channel::as_str).collect();
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        // No `select!` on the shutdown here: a send that started is finished and its outcome
        // recorded, so a stop leaves nothing half-sent.
        let idle = match deliver_next(&pool, &http, &channels, &names).await {
            Ok(found) => {
                delay = Duration::from_millis(100);
                (!found).then_some(POLL_INTERVAL)
            }
            Err(error) => {
                tracing::warn!(%error, "alerts: database error, retrying");
                delay = (delay * 2).min(Duration::from_secs(5));
                Some(delay)
            }
        };
        if let Some(idle) = idle {
            tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(idle) => {} }
        }
    }
}

/// Claims, sends and settles one due delivery; `false` when none was due.
async fn deliver_next(
    pool: &PgPool,
    http: &reqwest::Client,
    channels: &AlertChannels,
    names: &[&str],
) -> Result<bool, sqlx::Error> {
    let token = Uuid::new_v4();
    let lease = channels.lease();
    let leased_until = Instant::now() + lease;
    // One statement, committed before sending: due rows are pending ones whose time came, and
    // sending ones whose sender's lease ran out (it died mid-send; see the module's comment).
    let claimed: Option<(i64, String, Json<Alert>, i32)> = sqlx::query_as(
        "update alert_deliveries set status = 'sending', attempts = attempts + 1, lease_token = $2, \
                next_attempt_at = now() + make_interval(secs => $3) \
         where id = (select id from alert_deliveries \
                     where status in ('pending', 'sending') and next_attempt_at <= now() and channel = any($1) \
                     order by next_attempt_at, id limit 1 for update skip locked) \
         returning id, channel, alert, attempts",
    )
    .bind(names)
    .bind(token)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let Some((id, channel, Json(alert), attempts)) = claimed else {
        return Ok(false);
    };
    let outcome = match Channel::parse(&channel) {
        Some(Channel::Telegram) => match &channels.telegram {
            Some(telegram) => telegram.send(http, &alert).await,
            None => Err(Failure::new("Telegram is not configured")),
        },
        Some(Channel::Webhook) => match &channels.webhook {
            Some(webhook) => webhook.send(http, &alert).await,
            None => Err(Failure::new("the webhook is not configured")),
        },
        None => Err(Failure::new(format!("unknown channel {channel}"))),
    };
    match outcome {
        Ok(()) => {
            mark_delivered(pool, id, leased_until).await?;
            tracing::info!(alert = %alert.id, channel, attempts, "alert delivered");
        }
        Err(failure) => {
            let mut message = failure.message;
            if let Some(telegram) = &channels.telegram {
                // Belt and braces: whatever produced the message, the token stays out of it.
                message = message.replace(&telegram.token.0, "…");
            }
            truncate(&mut message, ERROR_LEN_MAX);
            let given_up = attempts >= ATTEMPTS_MAX;
            let wait = retry_delay(channels.retry, attempts, failure.retry_after);
            sqlx::query(
                "update alert_deliveries set status = $3, last_error = $4, lease_token = null, \
                        next_attempt_at = now() + make_interval(secs => $5) \
                 where id = $1 and lease_token = $2 and status = 'sending'",
            )
            .bind(id)
            .bind(token)
            .bind(if given_up { "failed" } else { "pending" })
            .bind(&message)
            .bind(wait.as_secs_f64())
            .execute(pool)
            .await?;
            if given_up {
                tracing::error!(alert = %alert.id, channel, attempts, error = %message, "alert given up");
            } else {
                let retry_in = humantime::format_duration(Duration::from_millis(wait.as_millis() as u64));
                tracing::warn!(alert = %alert.id, channel, attempts, error = %message, %retry_in, "alert not sent");
            }
        }
    }
    Ok(true)
}

/// Marks a delivery the channel accepted. Retried while its lease lasts: until it is marked, a
/// loop that finds the lease expired would send it again.
async fn mark_delivered(pool: &PgPool, id: i64, leased_until: Instant) -> Result<(), sqlx::Error> {
    let mut wait = Duration::from_millis(50);
    loop {
        // Whoever holds the row now: the channel accepted the alert, so it is delivered.
        let marked = sqlx::query(
            "update alert_deliveries set status = 'delivered', delivered_at = now(), lease_token = null \
             where id = $1",
        )
        .bind(id)
        .execute(pool)
        .await;
        match marked {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() + wait < leased_until => {
                tracing::warn!(%error, "alerts: marking a delivery, retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The wait before the next attempt after `attempts` failed ones: `first`, doubling each time up
/// to an hour, jittered over its upper half so that loops failing together do not retry together;
/// never shorter than what the channel asked for.
fn retry_delay(first: Duration, attempts: i32, asked: Option<Duration>) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let full = first.saturating_mul(1 << doublings).min(RETRY_DELAY_MAX);
    let jittered = full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    jittered.max(asked.unwrap_or_default())
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

impl Telegram {
    /// `sendMessage` to the chat; accepted when the API answers `ok: true`.
    async fn send(&self, http: &reqwest::Client, alert: &Alert) -> Result<(), Failure> {
        let url = format!("{}/bot{}/sendMessage", self.base_url.as_str().trim_end_matches('/'), self.token.0);
        // Numeric ids go as numbers, `@channel` names as strings: the API's own types.
        let chat_id = self.chat_id.parse::<i64>().map_or_else(|_| json!(self.chat_id), |id| json!(id));
        let body = json!({ "chat_id": chat_id, "text": telegram_text(alert), "parse_mode": "MarkdownV2" });
        let response = http.post(url).json(&body).send().await.map_err(Failure::transport)?;
        let status = response.status();
        let answer: Option<Value> = response.json().await.ok();
        let answer = answer.unwrap_or(Value::Null);
        if status.is_success() && answer["ok"] == json!(true) {
            return Ok(());
        }
        let description = answer["description"].as_str().unwrap_or("no description");
        Err(Failure {
            message: format!("Telegram answered {status}: {description}"),
            retry_after: answer["parameters"]["retry_after"].as_u64().map(Duration::from_secs),
        })
    }
}

impl Webhook {
    /// POSTs the alert as a CloudEvent with its signature; accepted on any 2xx.
    async fn send(&self, http: &reqwest::Client, alert: &Alert) -> Result<(), Failure> {
        let body = serde_json::to_vec(alert).map_err(|e| Failure::new(format!("encoding the alert: {e}")))?;
        let response = http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/cloudevents+json; charset=utf-8")
            .header(SIGNATURE_HEADER, signature(&self.secret, &body))
            .body(body)
            .send()
            .await
            .map_err(Failure::transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok())
            .flatten()
            .map(Duration::from_secs);
        Err(Failure { message: format!("the webhook answered {status}"), retry_after })
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let mut out = String::from("sha256=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The Telegram message for `alert`: a bold title and a sentence, MarkdownV2.
pub fn telegram_text(alert: &Alert) -> String {
    let data = &alert.data;
    let name = &data.service_name;
    let currency = &data.currency;
    let (title, body) = match &data.kind {
        AlertKind::ThresholdCrossed { threshold, period, spent, budget } => (
            format!("Budget alert: {name}"),
            format!(
                "{name} has reached {threshold}% of its budget for {period}: {spent} of {budget} {currency} spent."
            ),
        ),
        AlertKind::Suspended { period, spent, budget } => (
            format!("Service suspended: {name}"),
            format!(
                "Its budget for {period} is spent ({spent} of {budget} {currency}). Requests go to its fallback or \
                 are refused until the budget is increased or the month ends."
            ),
        ),
        AlertKind::Reactivated { reason } => {
            (format!("Service reactivated: {name}"), format!("Requests are authorized again: {reason}."))
        }
    };
    format!("*{}*\n{}", escape_markdown_v2(&title), escape_markdown_v2(&body))
}

/// Escapes `text` for Telegram's MarkdownV2, where each of `_*[]()~`>#+-=|{}.!` and the backslash
/// must be preceded by a backslash to stand for itself.
pub fn escape_markdown_v2(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if matches!(
            c,
            '_' | '*'
                | '['
                | ']'
                | '('
                | ')'
                | '~'
                | '`'
                | '>'
                | '#'
                | '+'
                | '-'
                | '='
                | '|'
                | '{'
                | '}'
                | '.'
                | '!'
                | '\\'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
