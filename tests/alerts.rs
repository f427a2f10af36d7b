//! Budget alerts: every threshold, suspension and reactivation reaches a (fake) Telegram chat and a
//! (fake) webhook once, through failures and retries, with two processes delivering, and across a
//! stop and a crash in the middle of a send.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use devart::alerts::AlertConfig;
use devart::{Role, Secret};
use devart_commands::budgets::{ChargeRequest, UsageRequest};
use devart_commands::{CommandContext, Commands};
use devart_domain::money::Money;
use devart_domain::service::{Currency, Period, RegisterService, ServiceName};
use devart_domain::Actor;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::support::{eventually, TestEnv};

const TOKEN: &str = "4242424242:AAH-test_token-for.the.fake-bot";
const CHAT_ID: &str = "-1001234567890";
const WEBHOOK_SECRET: &str = "the webhook's signing key";
/// A name that needs MarkdownV2 escaping: `_`, `/`, `-`, `(`, `)`, `#`, `!`.
const NAME: &str = "team_a/gpt-4o (prod) #1!";

/// What a fake server does with the next request before answering it normally.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Answer with this HTTP status (Telegram's error shape; 429 asks to retry after a second).
    Fail(u16),
    /// Hold the request this long, then answer; says so on `held` when it starts holding.
    Hold(Duration),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct Fake {
    steps: Mutex<VecDeque<Step>>,
    /// Every well-formed request, on arrival: what reached the server.
    received: Mutex<Vec<Value>>,
    /// What the server accepted and answered as a success: for Telegram, the messages in the chat
    /// (as the chat shows them, markup removed); for the webhook, the bodies.
    accepted: Mutex<Vec<Value>>,
    /// Requests refused for their form (bad token or chat, unescaped text, bad signature).
    refused: Mutex<Vec<String>>,
    held: Mutex<Option<mpsc::UnboundedSender<()>>>,
}

impl Fake {
    fn received(&self) -> usize {
        lock(&self.received).len()
    }

    fn accepted(&self) -> Vec<Value> {
        lock(&self.accepted).clone()
    }

    /// Runs the next scripted step; `Some` is the failure to answer with.
    async fn step(&self) -> Option<u16> {
        let step = lock(&self.steps).pop_front();
        match step {
            Some(Step::Fail(status)) => Some(status),
            Some(Step::Hold(duration)) => {
                if let Some(held) = lock(&self.held).as_ref() {
                    let _ = held.send(());
                }
                // If the client goes away meanwhile, the server drops this handler right here: the
                // request is never answered, and never counted as accepted.
                tokio::time::sleep(duration).await;
                None
            }
            None => None,
        }
    }
}

/// Serves `router` on a free local port until the test ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The text as a Telegram chat shows it, or the error the Bot API gives for MarkdownV2 that breaks
/// its rules: each of `_*[]()~`>#+-=|{}.!` must be escaped unless it is markup. Bold (`*…*`) is
/// the only markup alerts use, so it is the only one allowed here.
fn markdown_v2(text: &str) -> Result<String, String> {
    let mut plain = String::new();
    let mut bold = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => plain.push(chars.next().ok_or("Bad Request: can't parse entities: trailing '\\'")?),
            '*' => bold = !bold,
            c if "_[]()~`>#+-=|{}.!".contains(c) => {
                return Err(format!(
                    "Bad Request: can't parse entities: Character '{c}' is reserved and must be escaped with the \
                     preceding '\\'"
                ))
            }
            c => plain.push(c),
        }
    }
    if bold {
        return Err("Bad Request: can't parse entities: Can't find end of Bold entity".into());
    }
    Ok(plain)
}

fn telegram_error(status: u16, description: &str) -> (StatusCode, Json<Value>) {
    let mut answer = json!({ "ok": false, "error_code": status, "description": description });
    if status == 429 {
        answer["parameters"] = json!({ "retry_after": 1 });
    }
    (StatusCode::from_u16(status).unwrap(), Json(answer))
}

/// `POST /bot<token>/sendMessage`, as the Bot API answers it.
async fn send_message(
    State(fake): State<Arc<Fake>>,
    Path(bot): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if bot != format!("bot{TOKEN}") {
        lock(&fake.refused).push(format!("token {bot}"));
        return telegram_error(401, "Unauthorized");
    }
    if body["chat_id"] != json!(CHAT_ID.parse::<i64>().unwrap()) || body["parse_mode"] != "MarkdownV2" {
        lock(&fake.refused).push(format!("request {body}"));
        return telegram_error(400, "Bad Request: chat not found");
    }
    let text = match body["text"].as_str().map(markdown_v2) {
        Some(Ok(text)) => text,
        Some(Err(error)) => {
            lock(&fake.refused).push(error.clone());
            return telegram_error(400, &error);
        }
        None => return telegram_error(400, "Bad Request: message text is empty"),
    };
    lock(&fake.received).push(body);
    match fake.step().await {
        Some(429) => return telegram_error(429, "Too Many Requests: retry after 1"),
        Some(status) => return telegram_error(status, "Internal Server Error"),
        None => {}
    }
    let mut accepted = lock(&fake.accepted);
    accepted.push(json!(text));
    let message = json!({
        "message_id": accepted.len(),
        "date": Utc::now().timestamp(),
        "chat": { "id": CHAT_ID.parse::<i64>().unwrap(), "title": "Budgets", "type": "supergroup" },
        "text": text,
    });
    (StatusCode::OK, Json(json!({ "ok": true, "result": message })))
}

async fn fake_telegram(steps: &[Step]) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake { steps: Mutex::new(steps.iter().copied().collect()), ..Fake::default() });
    let router = Router::new().route("/{bot}/sendMessage", post(send_message)).with_state(fake.clone());
    (fake, serve(router).await)
}

/// A webhook receiver that checks the signature on the exact bytes received.
async fn receive_webhook(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let signature = headers.get("x-devart-signature").and_then(|v| v.to_str().ok());
    if signature != Some(format!("sha256={expected}").as_str()) {
        lock(&fake.refused).push(format!("signature {signature:?}"));
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        lock(&fake.refused).push("not JSON".into());
        return StatusCode::BAD_REQUEST;
    };
    lock(&fake.received).push(body.clone());
    if let Some(status) = fake.step().await {
        return StatusCode::from_u16(status).unwrap();
    }
    lock(&fake.accepted).push(body);
    StatusCode::NO_CONTENT
}

async fn fake_webhook(steps: &[Step]) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake { steps: Mutex::new(steps.iter().copied().collect()), ..Fake::default() });
    let router = Router::new().route("/hooks/devart", post(receive_webhook)).with_state(fake.clone());
    (fake, format!("http://{}/hooks/devart", serve(router).await))
}

fn telegram_config(addr: SocketAddr, timeout: Duration) -> AlertConfig {
    AlertConfig {
        telegram_base_url: format!("http://{addr}"),
        telegram_bot_token: Some(Secret(TOKEN.into())),
        telegram_chat_id: Some(CHAT_ID.into()),
        alert_timeout: timeout.into(),
        alert_retry: Duration::from_millis(100).into(),
        ..AlertConfig::default()
    }
}

fn money(s: &str) -> Money {
    Money::parse("amount", s).unwrap()
}

async fn register(commands: &Commands, budget: &str) -> Uuid {
    let id = Uuid::now_v7();
    let service = RegisterService {
        id,
        name: ServiceName::parse(NAME).unwrap(),
        currency: Currency::usd(),
        monthly_budget: money(budget),
        fallback_service_id: None,
        unit_prices: BTreeMap::new(),
    };
    commands.services().register(service, &CommandContext::new(Actor::user("admin"))).await.unwrap();
    id
}

/// Reserves and settles `amount`, as an agent does.
async fn spend(commands: &Commands, service: Uuid, amount: &str, key: &str) {
    let agent = CommandContext::new(Actor::agent(Uuid::from_u128(1).to_string()));
    let request = UsageRequest {
        service_id: service,
        amount: money(amount),
        task_id: None,
        agent_id: None,
        idempotency_key: key.into(),
    };
    let answer = commands.services().authorize_usage(&request, &agent).await.unwrap();
    assert!(answer.approved, "{answer:?}");
    let charge = ChargeRequest {
        service_id: service,
        amount: money(amount),
        reservation_id: answer.reservation_id,
        units: None,
        task_id: None,
        agent_id: None,
        idempotency_key: key.into(),
    };
    commands.services().record_charge(&charge, &agent).await.unwrap();
}

/// The messages a 10.00 budget's alerts make, as the chat shows them.
fn threshold_text(percent: u32, spent: &str) -> String {
    let period = Period::of(Utc::now());
    format!(
        "Budget alert: {NAME}\n{NAME} has reached {percent}% of its budget for {period}: {spent} of 10.00 USD spent."
    )
}

fn suspended_text() -> String {
    let period = Period::of(Utc::now());
    format!(
        "Service suspended: {NAME}\nIts budget for {period} is spent (10.00 of 10.00 USD). Requests go to its \
         fallback or are refused until the budget is increased or the month ends."
    )
}

fn sorted_texts(values: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = values.iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    texts.sort();
    texts
}

fn sorted(mut texts: Vec<String>) -> Vec<String> {
    texts.sort();
    texts
}

/// Waits until `fake` accepted `count` requests, then long enough for a duplicate to show.
async fn settle(fake: &Fake, count: usize) {
    eventually(Duration::from_secs(30), || async { (fake.accepted().len() >= count).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// (channel, status, attempts, last error) of every delivery, in position order.
async fn deliveries(env: &TestEnv) -> Vec<(String, String, i32, Option<String>)> {
    sqlx::query_as("select channel, status, attempts, last_error from alert_deliveries order by position, channel")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_alert_reaches_telegram_and_the_webhook_once_through_failures_with_two_processes() {
    let mut env = TestEnv::new().await;
    // Telegram fails twice (a server error, then a rate limit that asks for a second); the webhook
    // fails once.
    let (telegram, addr) = fake_telegram(&[Step::Fail(500), Step::Fail(429)]).await;
    let (webhook, url) = fake_webhook(&[Step::Fail(503)]).await;
    env.config.alerts = AlertConfig {
        webhook_url: Some(url),
        webhook_secret: Some(Secret(WEBHOOK_SECRET.into())),
        ..telegram_config(addr, Duration::from_secs(5))
    };
    // Two processes record and deliver alerts side by side.
    let first = env.start(&[Role::Relay, Role::Projections]).await;
    let second = env.start(&[Role::Projections]).await;

    let commands = env.commands();
    let service = register(&commands, "10.00").await;
    spend(&commands, service, "5", "a").await;
    spend(&commands, service, "3", "b").await;
    spend(&commands, service, "2", "c").await;
    let admin = CommandContext::new(Actor::user("admin"));
    commands.services().increase_budget(service, money("5"), "launch week".into(), &admin).await.unwrap();

    settle(&telegram, 5).await;
    settle(&webhook, 5).await;
    first.stop().await;
    second.stop().await;

    let reactivated = format!("Service reactivated: {NAME}\nRequests are authorized again: the budget was increased.");
    assert_eq!(
        sorted_texts(&telegram.accepted()),
        sorted(vec![
            threshold_text(50, "5.00"),
            threshold_text(80, "8.00"),
            threshold_text(100, "10.00"),
            suspended_text(),
            reactivated,
        ]),
        "each alert in the chat once"
    );
    assert_eq!(telegram.received(), 7, "five alerts and two failed attempts");
    assert!(lock(&telegram.refused).is_empty(), "{:?}", lock(&telegram.refused));

    let bodies = webhook.accepted();
    let mut ids: Vec<&str> = bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((bodies.len(), ids.len()), (5, 5), "each alert to the webhook once");
    assert_eq!(webhook.received(), 6, "five alerts and one failed attempt");
    assert!(lock(&webhook.refused).is_empty(), "every body signed: {:?}", lock(&webhook.refused));
    let crossed = bodies.iter().find(|b| b["data"]["threshold"] == 80).expect("the 80% alert");
    let period = Period::of(Utc::now()).to_string();
    assert_eq!(crossed["type"], "devart.BudgetThresholdCrossed.v1");
    assert_eq!(crossed["subject"], format!("service-{service}"));
    assert_eq!(
        crossed["data"],
        json!({ "serviceId": service, "serviceName": NAME, "currency": "USD", "alert": "thresholdCrossed",
                "threshold": 80, "period": period, "spent": "8.00", "budget": "10.00" })
    );
    assert!(crossed["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{crossed}");
    let suspended = bodies.iter().find(|b| b["type"] == "devart.ServiceSuspended.v1").expect("the suspension");
    assert_eq!(
        (suspended["data"]["spent"].as_str(), suspended["data"]["budget"].as_str()),
        (Some("10.00"), Some("10.00"))
    );

    // The outbox: everything delivered, attempts and errors recorded, and no secret in them.
    let rows = deliveries(&env).await;
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|(_, status, _, _)| status == "delivered"), "{rows:?}");
    let attempts = |channel: &str| rows.iter().filter(|r| r.0 == channel).map(|r| r.2).sum::<i32>();
    assert_eq!((attempts("telegram"), attempts("webhook")), (7, 6));
    // A row keeps its last error: the rate limit (Telegram's last failure) and the webhook's 503 are
    // there whichever rows they hit.
    assert!(rows.iter().all(|r| (r.2 > 1) == r.3.is_some()), "{rows:?}");
    let errors: Vec<&str> = rows.iter().filter_map(|r| r.3.as_deref()).collect();
    assert!(errors.iter().any(|e| e.contains("429 Too Many Requests")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("503")), "{errors:?}");
    assert!(errors.iter().all(|e| !e.contains(TOKEN) && !e.contains(WEBHOOK_SECRET)), "{errors:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_stop_during_a_send_finishes_it_and_a_restart_sends_nothing_again() {
    let mut env = TestEnv::new().await;
    let (telegram, addr) = fake_telegram(&[Step::Hold(Duration::from_secs(1))]).await;
    let (held_tx, mut held) = mpsc::unbounded_channel();
    *lock(&telegram.held) = Some(held_tx);
    env.config.alerts = telegram_config(addr, Duration::from_secs(5));
    let running = env.start(&[Role::Relay, Role::Projections]).await;
    let commands = env.commands();
    let service = register(&commands, "10.00").await;
    spend(&commands, service, "5", "a").await;

    // The 50% alert reached the chat, and its answer is a second away: stop now.
    tokio::time::timeout(Duration::from_secs(30), held.recv()).await.expect("no send in time");
    running.stop().await;
    let rows = deliveries(&env).await;
    assert_eq!(rows, [("telegram".to_owned(), "delivered".to_owned(), 1, None)], "finished before stopping");

    // Started again, devart sends the next alert and nothing it sent before, even when it reads the
    // whole order again: with its checkpoint set back, the consumer fills the gap from the store.
    sqlx::query("update projection_checkpoints set position = 0 where name = 'alerts'")
        .execute(&env.pool)
        .await
        .unwrap();
    let running = env.start(&[Role::Relay, Role::Projections]).await;
    spend(&commands, service, "3", "b").await;
    settle(&telegram, 2).await;
    running.stop().await;
    assert_eq!(
        sorted_texts(&telegram.accepted()),
        sorted(vec![threshold_text(50, "5.00"), threshold_text(80, "8.00")])
    );
    // Counted on arrival, before the answer: exactly once at the network level too.
    assert_eq!(telegram.received(), 2);
    let channels: Vec<String> = deliveries(&env).await.into_iter().map(|r| r.0).collect();
    assert_eq!(channels, ["telegram", "telegram"], "no row for a channel not configured");
    env.cleanup().await;
}

#[tokio::test]
async fn a_crash_during_a_send_is_retried_after_the_lease_and_each_alert_is_accepted_once() {
    let mut env = TestEnv::new().await;
    // The first request is held far longer than the test: only a crash ends it.
    let (telegram, addr) = fake_telegram(&[Step::Hold(Duration::from_secs(600))]).await;
    let (held_tx, mut held) = mpsc::unbounded_channel();
    *lock(&telegram.held) = Some(held_tx);
    // A send may take 2 s, so a claimed row is leased for 4 s.
    env.config.alerts = telegram_config(addr, Duration::from_secs(2));
    let running = env.start(&[Role::Relay, Role::Projections]).await;
    let commands = env.commands();
    let service = register(&commands, "10.00").await;
    // One charge to the limit: 50%, 80%, 100% and the suspension at once, each with 10.00 spent.
    spend(&commands, service, "10", "all").await;

    tokio::time::timeout(Duration::from_secs(30), held.recv()).await.expect("no send in time");
    running.abort().await;
    let rows = deliveries(&env).await;
    let sending: Vec<_> = rows.iter().filter(|r| r.1 == "sending").collect();
    assert_eq!(sending.len(), 1, "the crash left the send in flight: {rows:?}");

    // The restarted process sends the others at once, and the interrupted one when its lease ends.
    let running = env.start(&[Role::Relay, Role::Projections]).await;
    settle(&telegram, 4).await;
    running.stop().await;
    assert_eq!(
        sorted_texts(&telegram.accepted()),
        sorted(vec![
            threshold_text(50, "10.00"),
            threshold_text(80, "10.00"),
            threshold_text(100, "10.00"),
            suspended_text()
        ]),
        "each alert accepted once"
    );
    // The request cut off by the crash had reached the server, which dropped it unanswered when the
    // connection went; it was then sent again. This is the at-least-once edge of a crash: a server
    // that had acted on the cut-off request would show that alert twice.
    assert_eq!(telegram.received(), 5);
    let rows = deliveries(&env).await;
    assert!(rows.iter().all(|r| r.1 == "delivered"), "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.2).sum::<i32>(), 5, "one attempt each, two for the interrupted one");
    env.cleanup().await;
}
