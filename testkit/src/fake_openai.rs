//! A local stand-in for OpenAI's embeddings API, `POST /v1/embeddings`, for tests of the remote
//! provider and of semantic search over it.
//!
//! It speaks the real API's shapes: the request (`model`, `input` as a string or an array of
//! strings, `dimensions`, `encoding_format`), the answer (`{"object": "list", "data": [{"object":
//! "embedding", "index", "embedding"}], "model", "usage"}`) and its errors (`{"error": {"message",
//! "type", "param", "code"}}`: 401 without a key or with a wrong one, 400 for a request the API
//! refuses, 429 with `retry-after` or `x-ratelimit-*`, 500). Its vectors are deterministic: a
//! hashed bag of the text's lower-cased words, so texts sharing words are close ([`fake_vector`]),
//! of `dimensions` floats (1536, text-embedding-3-small's width, when the request does not say).
//!
//! It records every request (the `Authorization` header it saw, the texts, the status answered,
//! when) and can be told to fail the next requests ([`FakeEmbeddingsApi::fail_next`]), to answer
//! the data in reverse order, or to take its time. Unlike the real API, its 401 quotes the wrong
//! key in full, so that a test shows the client never repeats what the API said about a key.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The key a fake started with [`FakeEmbeddingsApi::start`] wants.
pub const FAKE_KEY: &str = "sk-fake-embeddings-0123456789abcdef";
/// The width of a vector when the request does not ask for one, as text-embedding-3-small.
pub const FAKE_WIDTH_DEFAULT: usize = 1536;
/// The most inputs one request may carry, as the real API.
pub const FAKE_INPUTS_MAX: usize = 2048;

/// What the fake does with a request instead of answering it well, once it is valid.
#[derive(Debug, Clone)]
pub enum FakeFailure {
    /// 429, `retry-after` in whole seconds.
    RateLimited { retry_after_secs: u64 },
    /// 429, `retry-after` as an HTTP date.
    RateLimitedUntil(SystemTime),
    /// 429 without `retry-after`: the requests' limit spent (`x-ratelimit-remaining-requests: 0`),
    /// back after `reset`, a duration as OpenAI writes it (`1s`, `6m0s`, `20ms`); the tokens' limit
    /// (`x-ratelimit-reset-tokens: 6m0s`) is not the one spent.
    RequestsSpent { reset: String },
    /// 500, the API's `server_error`.
    ServerError,
    /// This status, with the API's error body.
    Status(u16),
    /// 200, with vectors of this many dimensions whatever was asked.
    WrongWidth(usize),
    /// The answer, correct, only after this long (past a client's timeout, say).
    Delay(Duration),
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    pub model: Option<String>,
    /// The texts of `input`.
    pub inputs: Vec<String>,
    pub dimensions: Option<u64>,
    /// What the fake answered; 0 while it has not (or never will: the client left first).
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Fake {
    /// The key it wants; none: any request is let in, with a key or without.
    key: Option<String>,
    failures: Mutex<VecDeque<FakeFailure>>,
    seen: Mutex<Vec<SeenRequest>>,
    reversed: AtomicBool,
    /// Each vector is multiplied by this before it is sent: 1 but when told otherwise.
    scale: Mutex<Option<f32>>,
    latency: Mutex<Duration>,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

/// The fake, serving on a free port of the loopback interface until it is dropped.
pub struct FakeEmbeddingsApi {
    /// `http://127.0.0.1:<port>`: the API's base URL, without `/v1`.
    pub base_url: String,
    fake: Arc<Fake>,
    shutdown: CancellationToken,
}

impl FakeEmbeddingsApi {
    /// A fake that wants [`FAKE_KEY`].
    pub async fn start() -> Result<FakeEmbeddingsApi, Error> {
        Self::start_with_key(Some(FAKE_KEY)).await
    }

    /// A fake that wants `key`, or no key at all.
    pub async fn start_with_key(key: Option<&str>) -> Result<FakeEmbeddingsApi, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let fake = Arc::new(Fake { key: key.map(str::to_owned), ..Fake::default() });
        let router = Router::new().route("/v1/embeddings", post(embeddings)).with_state(fake.clone());
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router).with_graceful_shutdown(stopped.cancelled_owned()).await;
            if let Err(error) = served {
                eprintln!("the fake embeddings API stopped: {error}");
            }
        });
        Ok(FakeEmbeddingsApi { base_url: format!("http://{addr}"), fake, shutdown })
    }

    /// The key it wants.
    pub fn key(&self) -> Option<&str> {
        self.fake.key.as_deref()
    }

    /// The next `count` valid requests fail with `failure`, after those already queued.
    pub fn fail_next(&self, count: usize, failure: FakeFailure) {
        lock(&self.fake.failures).extend(std::iter::repeat_n(failure, count));
    }

    /// Answers each request's data last index first (the API promises only that each item says
    /// its `index`).
    pub fn answer_reversed(&self, reversed: bool) {
        self.fake.reversed.store(reversed, Ordering::SeqCst);
    }

    /// Answers vectors of this length instead of unit vectors (the real API sends unit vectors;
    /// a compatible server need not).
    pub fn scale_vectors(&self, length: f32) {
        *lock(&self.fake.scale) = Some(length);
    }

    /// Every request waits this long before it is answered, so that requests overlap.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.fake.latency) = latency;
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.fake.seen).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.fake.seen).len()
    }

    /// The number of texts of each request so far.
    pub fn batch_sizes(&self) -> Vec<usize> {
        lock(&self.fake.seen).iter().map(|seen| seen.inputs.len()).collect()
    }

    /// The most requests it was answering at once.
    pub fn in_flight_max(&self) -> usize {
        self.fake.in_flight_max.load(Ordering::SeqCst)
    }
}

impl Drop for FakeEmbeddingsApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fake's vector of `text`, `width` wide, unit length: each lower-cased word (a run of letters
/// and digits) adds ±1 at two places its FNV-1a hash picks, so texts sharing words have a positive
/// cosine and texts sharing none about zero. A text without words gets one place of its own.
pub fn fake_vector(text: &str, width: usize) -> Vec<f32> {
    let mut vector = vec![0.0f32; width.max(1)];
    let mut add = |hash: u64| {
        for k in 0..2 {
            let bits = hash.rotate_right(k * 32);
            let place = (bits % vector.len() as u64) as usize;
            vector[place] += if bits & (1 << 63) == 0 { 1.0 } else { -1.0 };
        }
    };
    let mut words = 0;
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()) {
        add(fnv1a(word.to_lowercase().as_bytes()));
        words += 1;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if words == 0 || norm == 0.0 {
        vector.iter_mut().for_each(|x| *x = 0.0);
        let place = (fnv1a(text.as_bytes()) % vector.len() as u64) as usize;
        vector[place] = 1.0;
        return vector;
    }
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The API's error answer.
fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Response {
    let body = json!({ "error": { "message": message, "type": kind, "param": param, "code": code } });
    (status, Json(body)).into_response()
}

fn invalid(message: &str, param: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, None)
}

/// Counts a request as under way while it lives.
struct InFlight<'a>(&'a Fake);

impl<'a> InFlight<'a> {
    fn enter(fake: &'a Fake) -> InFlight<'a> {
        let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        fake.in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight(fake)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn embeddings(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    let _in_flight = InFlight::enter(&fake);
    let at = Instant::now();
    let latency = *lock(&fake.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| request.as_ref().and_then(|request| request.get(name)).cloned();
    let inputs: Option<Vec<String>> = match field("input") {
        Some(Value::String(text)) => Some(vec![text]),
        Some(Value::Array(items)) => items.iter().map(|item| item.as_str().map(str::to_owned)).collect(),
        _ => None,
    };
    let seen = SeenRequest {
        authorization: authorization.clone(),
        model: field("model").and_then(|model| model.as_str().map(str::to_owned)),
        inputs: inputs.clone().unwrap_or_default(),
        dimensions: field("dimensions").and_then(|dimensions| dimensions.as_u64()),
        status: 0,
        at,
    };
    // Recorded as it arrives: a client that gives up drops this future before it answers.
    let number = {
        let mut all = lock(&fake.seen);
        all.push(seen.clone());
        all.len() - 1
    };
    let response = answer(&fake, authorization.as_deref(), request.as_ref(), inputs, &seen).await;
    lock(&fake.seen)[number].status = response.status().as_u16();
    response
}

async fn answer(
    fake: &Fake,
    authorization: Option<&str>,
    request: Option<&Value>,
    inputs: Option<Vec<String>>,
    seen: &SeenRequest,
) -> Response {
    if let Some(key) = &fake.key {
        let Some(given) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an Authorization header \
                 using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            );
        };
        if given != key {
            return error(
                StatusCode::UNAUTHORIZED,
                &format!("Incorrect API key provided: {given}. You can find your API key in your account's settings."),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            );
        }
    }
    let Some(request) = request else {
        return invalid("We could not parse the JSON body of your request. The body should be a JSON object.", None);
    };
    let Some(model) = seen.model.clone() else {
        return invalid("you must provide a model parameter", None);
    };
    let Some(inputs) = inputs.filter(|inputs| !inputs.is_empty() && inputs.iter().all(|text| !text.is_empty())) else {
        return invalid("'$.input' is invalid. Please check the API reference.", Some("input"));
    };
    if inputs.len() > FAKE_INPUTS_MAX {
        return invalid(
            &format!("'$.input' is too long: {} inputs, at most {FAKE_INPUTS_MAX}", inputs.len()),
            Some("input"),
        );
    }
    let width = match request.get("dimensions") {
        None => FAKE_WIDTH_DEFAULT,
        Some(dimensions) => match dimensions.as_u64() {
            Some(width @ 1..=1536) => width as usize,
            _ => return invalid("'$.dimensions' must be an integer from 1 to 1536", Some("dimensions")),
        },
    };
    match request.get("encoding_format").map(Value::as_str) {
        None | Some(Some("float")) => {}
        _ => return invalid("this fake answers encoding_format \"float\" only", Some("encoding_format")),
    }

    let failure = lock(&fake.failures).pop_front();
    let mut width = width;
    match failure {
        None => {}
        Some(FakeFailure::RateLimited { retry_after_secs }) => {
            let mut response = rate_limited(&model);
            response.headers_mut().insert("retry-after", HeaderValue::from(retry_after_secs));
            return response;
        }
        Some(FakeFailure::RateLimitedUntil(at)) => {
            let mut response = rate_limited(&model);
            if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
                response.headers_mut().insert("retry-after", date);
            }
            return response;
        }
        Some(FakeFailure::RequestsSpent { reset }) => {
            let mut response = rate_limited(&model);
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("3000"));
            headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
            if let Ok(reset) = HeaderValue::from_str(&reset) {
                headers.insert("x-ratelimit-reset-requests", reset);
            }
            headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("999000"));
            headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
            return response;
        }
        Some(FakeFailure::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            );
        }
        Some(FakeFailure::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
            return error(status, status.canonical_reason().unwrap_or("error"), kind, None, None);
        }
        Some(FakeFailure::WrongWidth(wrong)) => width = wrong,
        Some(FakeFailure::Delay(delay)) => tokio::time::sleep(delay).await,
    }

    let scale = lock(&fake.scale).unwrap_or(1.0);
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector: Vec<f32> = fake_vector(text, width).into_iter().map(|x| x * scale).collect();
            json!({ "object": "embedding", "index": index, "embedding": vector })
        })
        .collect();
    if fake.reversed.load(Ordering::SeqCst) {
        data.reverse();
    }
    let tokens: usize = inputs.iter().map(|text| text.split_whitespace().count().max(1)).sum();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    });
    (StatusCode::OK, Json(body)).into_response()
}

fn rate_limited(model: &str) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 3000, \
             Used 3000, Requested 1. Please try again later."
        ),
        "requests",
        None,
        Some("rate_limit_exceeded"),
    )
}
