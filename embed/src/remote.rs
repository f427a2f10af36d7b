//! The remote provider: [`RemoteEmbeddings`], an OpenAI-compatible `POST {base}/v1/embeddings`.
//!
//! A caller's texts go out in requests of at most [`RemoteConfig::batch_texts`], at most
//! [`RemoteConfig::max_in_flight`] at once for all callers of one provider, each asking for
//! [`DIMENSIONS`] floats per text. A request that fails in passing (a connection error, a timeout,
//! 408, 409, 429 or 5xx) is retried up to [`RemoteConfig::max_retries`] times, after the wait the
//! API asked for (`retry-after`, in seconds or as an HTTP date; on 429 also OpenAI's
//! `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens`, durations like `6m0s`), else after an
//! exponential backoff drawn between half and all of it; every wait is capped at
//! [`RemoteConfig::retry_wait_max`]. Any other answer is final: 401 and 403 say the key was refused
//! (never the key nor the API's message, which may quote it), another 4xx what the API said.
//!
//! Each answer must hold one vector per text, placed by its `index`, each [`DIMENSIONS`] wide
//! ([`EmbedError::WrongWidth`] otherwise) and finite; it is L2-normalised here, whatever the API
//! promises. The key is sent as a bearer token marked sensitive, and prints as `…`.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::model::clip;
use crate::{EmbedError, Embedding, Embeddings, DIMENSIONS};

/// Texts per request by default.
pub const BATCH_TEXTS_DEFAULT: usize = 64;
/// The most texts one request may carry: OpenAI's own limit of inputs per request.
pub const BATCH_TEXTS_MAX: usize = 2048;
/// Retries of one request by default, after its first attempt.
pub const RETRIES_DEFAULT: u32 = 5;
/// The most retries a request may be given.
pub const RETRIES_MAX: u32 = 10;
/// How long one attempt may take by default, connecting included.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The longest an attempt may be allowed to take.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// Requests one provider has under way at once by default.
pub const IN_FLIGHT_DEFAULT: usize = 4;
/// The most requests one provider may have under way at once.
pub const IN_FLIGHT_MAX: usize = 64;
/// The first backoff by default, doubled at each retry.
pub const RETRY_WAIT_FIRST_DEFAULT: Duration = Duration::from_millis(250);
/// The longest wait between two attempts by default, whatever the API asks.
pub const RETRY_WAIT_MAX_DEFAULT: Duration = Duration::from_secs(60);
/// The longest wait between two attempts that may be configured.
pub const RETRY_WAIT_MAX_MAX: Duration = Duration::from_secs(600);

/// The most bytes of an error answer that are read (its message is cut much shorter).
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;
/// Characters of an API's error message kept in [`EmbedError::Remote`].
const MESSAGE_CHARS_MAX: usize = 300;

/// An API key: sent as a bearer token, never printed (`Debug` shows `…`).
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteKey(String);

impl RemoteKey {
    /// A key as the API issued it: printable ASCII without spaces, as a header carries it. The
    /// error never repeats the key.
    pub fn new(key: impl Into<String>) -> Result<RemoteKey, EmbedError> {
        let key = key.into();
        if key.is_empty() {
            return Err(EmbedError::Config("the embeddings API key is empty".into()));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EmbedError::Config(
                "the embeddings API key has characters other than printable ASCII (a space or a line end?)".into(),
            ));
        }
        Ok(RemoteKey(key))
    }
}

impl fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

/// Where and how to call the API. [`RemoteConfig::new`] gives the defaults; every field is
/// bounded, checked by [`RemoteEmbeddings::new`].
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The API's base URL (`http` or `https`, no credentials, query or fragment); requests go to
    /// `{base_url}/v1/embeddings`. A `/v1` at its end is the same base.
    pub base_url: String,
    /// The model asked for, as the API names it (`text-embedding-3-small`).
    pub model: String,
    /// Sent as `Authorization: Bearer …`; none for an API that wants no key (a local server).
    pub api_key: Option<RemoteKey>,
    /// Texts per request, 1..=[`BATCH_TEXTS_MAX`]: fewer, larger requests are cheaper, but one
    /// failure then repeats more work.
    pub batch_texts: usize,
    /// Retries of a request after a passing failure, 0..=[`RETRIES_MAX`].
    pub max_retries: u32,
    /// How long one attempt may take, connecting included, up to [`TIMEOUT_MAX`].
    pub timeout: Duration,
    /// Requests under way at once, 1..=[`IN_FLIGHT_MAX`], for all callers of the provider: its
    /// share of the API's rate limit, and of this host's sockets and memory.
    pub max_in_flight: usize,
    /// The first backoff after a failure that came with no wait asked for; doubled at each retry.
    pub retry_wait_first: Duration,
    /// The longest wait before a retry, whatever the API asked for, up to [`RETRY_WAIT_MAX_MAX`].
    pub retry_wait_max: Duration,
}

impl RemoteConfig {
    /// `model` at `base_url`, without a key, with the defaults.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> RemoteConfig {
        RemoteConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            batch_texts: BATCH_TEXTS_DEFAULT,
            max_retries: RETRIES_DEFAULT,
            timeout: TIMEOUT_DEFAULT,
            max_in_flight: IN_FLIGHT_DEFAULT,
            retry_wait_first: RETRY_WAIT_FIRST_DEFAULT,
            retry_wait_max: RETRY_WAIT_MAX_DEFAULT,
        }
    }

    /// The same, sending `key`.
    pub fn with_key(mut self, key: RemoteKey) -> RemoteConfig {
        self.api_key = Some(key);
        self
    }

    fn validate(&self) -> Result<(), EmbedError> {
        let bad = |what: String| Err(EmbedError::Config(what));
        if self.model.is_empty() || self.model.len() > 256 || self.model.chars().any(char::is_control) {
            return bad(format!("embeddings model {:?}: expected a name of 1 to 256 characters", self.model));
        }
        if !(1..=BATCH_TEXTS_MAX).contains(&self.batch_texts) {
            return bad(format!("{} texts per embeddings request, expected 1..={BATCH_TEXTS_MAX}", self.batch_texts));
        }
        if self.max_retries > RETRIES_MAX {
            return bad(format!("{} retries per embeddings request, expected 0..={RETRIES_MAX}", self.max_retries));
        }
        if self.timeout.is_zero() || self.timeout > TIMEOUT_MAX {
            return bad(format!("an embeddings request timeout of {:?}, expected up to {TIMEOUT_MAX:?}", self.timeout));
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.max_in_flight) {
            return bad(format!("{} embeddings requests at once, expected 1..={IN_FLIGHT_MAX}", self.max_in_flight));
        }
        if self.retry_wait_max > RETRY_WAIT_MAX_MAX || self.retry_wait_first > self.retry_wait_max {
            return bad(format!(
                "embeddings retry waits from {:?} to {:?}, expected first ≤ max ≤ {RETRY_WAIT_MAX_MAX:?}",
                self.retry_wait_first, self.retry_wait_max
            ));
        }
        Ok(())
    }
}

/// The API's base URL checked, and the endpoint named for messages and [`Embeddings::model`].
fn endpoint(base_url: &str) -> Result<(Url, String), EmbedError> {
    // Not the URL itself in the messages: it failed to parse, so it may be anything.
    let bad = |why: &str| Err(EmbedError::Config(format!("the embeddings API's base URL {why}")));
    let Ok(mut url) = Url::parse(base_url.trim()) else { return bad("does not parse as a URL") };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("is neither http nor https");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("carries credentials: give the key as the API key instead");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad("has a query or a fragment");
    }
    let Some(host) = url.host_str() else { return bad("has no host") };
    let mut name = host.to_owned();
    if let Some(port) = url.port() {
        name = format!("{name}:{port}");
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path).to_owned();
    name.push_str(&path);
    url.set_path(&format!("{path}/v1/embeddings"));
    Ok((url, name))
}

/// An OpenAI-compatible embeddings API as an [`Embeddings`] provider. Cheap to share behind an
/// `Arc`; its limit of requests under way holds for all who share it.
pub struct RemoteEmbeddings {
    http: reqwest::Client,
    /// `{base}/v1/embeddings`.
    url: Url,
    /// The base's host, port and path: names the API in errors and logs.
    endpoint: String,
    /// `<model>@<endpoint>`, stored beside each vector.
    version: String,
    config: RemoteConfig,
    in_flight: Semaphore,
}

impl fmt::Debug for RemoteEmbeddings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteEmbeddings").field("version", &self.version).field("config", &self.config).finish()
    }
}

/// The request's body.
#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    dimensions: usize,
    encoding_format: &'static str,
}

/// What a 2xx answer must hold; the rest (`object`, `usage`) is not needed.
#[derive(Deserialize)]
struct Answer {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    index: usize,
    embedding: Vec<f32>,
}

/// OpenAI's error body, `{"error": {"message", "type", "code"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    r#type: Option<String>,
    code: Option<serde_json::Value>,
}

/// How one attempt ended, when it did not give the vectors.
enum Failure {
    /// Worth another attempt, after the wait the API asked for if it did.
    Passing {
        error: EmbedError,
        asked: Option<Duration>,
    },
    Final(EmbedError),
}

impl RemoteEmbeddings {
    /// Checks `config` and builds the HTTP client; connects to nothing yet.
    pub fn new(config: RemoteConfig) -> Result<RemoteEmbeddings, EmbedError> {
        config.validate()?;
        let (url, endpoint) = endpoint(&config.base_url)?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("devart/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the texts, and perhaps the key, somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| EmbedError::Config(format!("cannot build the HTTP client: {}", chain(&error))))?;
        let version = format!("{}@{endpoint}", config.model);
        let in_flight = Semaphore::new(config.max_in_flight);
        Ok(RemoteEmbeddings { http, url, endpoint, version, config, in_flight })
    }

    /// How it was configured (the key prints as `…`).
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// Embeds `texts`, in order: requests of at most `batch_texts`, as many at once as the limit
    /// of requests under way lets. Texts are cut at [`crate::MAX_TEXT_BYTES`], as the local model
    /// cuts them. The first batch that fails fails the whole; dropping the future abandons the rest.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        let mut batches = Vec::with_capacity(texts.len().div_ceil(self.config.batch_texts));
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let batch: Vec<String> = texts
                .by_ref()
                .take(self.config.batch_texts)
                .map(|mut text| {
                    text.truncate(clip(&text).len());
                    text
                })
                .collect();
            batches.push(batch);
        }
        let batches: Vec<Vec<Embedding>> = stream::iter(batches)
            .map(|batch| self.embed_batch(batch))
            .buffered(self.config.max_in_flight)
            .try_collect()
            .await?;
        Ok(batches.concat())
    }

    /// One request and its retries, holding one of the provider's slots throughout: a provider
    /// held back by the API's rate limit sends nothing more meanwhile.
    async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        let _slot = self.in_flight.acquire().await.map_err(|_| EmbedError::PoolClosed)?;
        let body = serde_json::to_vec(&Request {
            model: &self.config.model,
            input: &texts,
            dimensions: DIMENSIONS,
            encoding_format: "float",
        })
        .map_err(|error| EmbedError::Config(format!("encoding an embeddings request: {error}")))?;
        let mut retries = 0;
        loop {
            let (error, asked) = match self.attempt(body.clone(), texts.len()).await {
                Ok(vectors) => return Ok(vectors),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Passing { error, asked }) => (error, asked),
            };
            if retries == self.config.max_retries {
                return Err(after_attempts(error, retries + 1));
            }
            let wait = match asked {
                // At least what was asked, and a little more at random, so that the callers told
                // the same moment do not all come back at once.
                Some(asked) => {
                    let (asked, max) = (asked.min(self.config.retry_wait_max), self.config.retry_wait_max);
                    asked + (max - asked).min(asked / 10).mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
                }
                None => backoff(self.config.retry_wait_first, self.config.retry_wait_max, retries),
            };
            tracing::warn!(
                endpoint = %self.endpoint,
                retry = retries + 1,
                wait_ms = wait.as_millis() as u64,
                %error,
                "embeddings request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    async fn attempt(&self, body: Vec<u8>, texts: usize) -> Result<Vec<Embedding>, Failure> {
        let mut request = self.http.post(self.url.clone()).header(CONTENT_TYPE, "application/json").body(body);
        if let Some(key) = &self.config.api_key {
            // reqwest marks the header sensitive.
            request = request.bearer_auth(&key.0);
        }
        let response = request.send().await.map_err(|error| self.unreachable(&error))?;
        let status = response.status();
        let asked = asked_wait(status, response.headers(), SystemTime::now());
        if status.is_success() {
            // Each float in at most 32 bytes of JSON, and room for the rest.
            let limit = 64 * 1024 + texts * (DIMENSIONS * 32 + 256);
            let body = read_bounded(response, limit).await.map_err(|error| match error {
                Read::Transport(error) => self.unreachable(&error),
                Read::TooLarge => Failure::Final(self.bad_answer(format!("the answer is over {limit} bytes"))),
            })?;
            return self.vectors(&body, texts).map_err(Failure::Final);
        }
        let error = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Failure::Final(EmbedError::KeyRefused {
                    endpoint: self.endpoint.clone(),
                    status: status.as_u16(),
                    keyed: self.config.api_key.is_some(),
                }))
            }
            _ => {
                let body = read_bounded(response, ERROR_BODY_BYTES_MAX).await.unwrap_or_default();
                EmbedError::Remote {
                    endpoint: self.endpoint.clone(),
                    status: status.as_u16(),
                    message: self.message(status, &body),
                }
            }
        };
        let passing =
            matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS)
                || status.is_server_error();
        Err(if passing { Failure::Passing { error, asked } } else { Failure::Final(error) })
    }

    /// The vectors of a 2xx answer, in the order of the texts, normalised.
    fn vectors(&self, body: &[u8], texts: usize) -> Result<Vec<Embedding>, EmbedError> {
        let answer: Answer = serde_json::from_slice(body)
            .map_err(|error| self.bad_answer(format!("not an embeddings list: {error}")))?;
        if answer.data.len() != texts {
            return Err(self.bad_answer(format!("{} vectors for {texts} texts", answer.data.len())));
        }
        let mut placed: Vec<Option<Embedding>> = vec![None; texts];
        for datum in answer.data {
            let width = datum.embedding.len();
            let Ok(mut vector) = Embedding::try_from(datum.embedding) else {
                return Err(EmbedError::WrongWidth { model: self.version.clone(), width });
            };
            let slot = placed
                .get_mut(datum.index)
                .ok_or_else(|| self.bad_answer(format!("index {} for {texts} texts", datum.index)))?;
            if slot.is_some() {
                return Err(self.bad_answer(format!("index {} twice", datum.index)));
            }
            normalise(&mut vector).map_err(|why| self.bad_answer(format!("vector {}: {why}", datum.index)))?;
            *slot = Some(vector);
        }
        // Every index was in 0..texts, none twice, and there were `texts` of them.
        Ok(placed.into_iter().flatten().collect())
    }

    /// What the API said about a failure: its error's message, type and code, cut short, with
    /// the key blanked should the message quote it.
    fn message(&self, status: StatusCode, body: &[u8]) -> String {
        let mut message = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => {
                let mut message = error.message.unwrap_or_default();
                let kind = [error.r#type, error.code.and_then(|code| code.as_str().map(str::to_owned))];
                let kind: Vec<String> = kind.into_iter().flatten().filter(|kind| !kind.is_empty()).collect();
                if !kind.is_empty() {
                    message = format!("{message} ({})", kind.join(", "));
                }
                message
            }
            Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
        };
        if message.trim().is_empty() {
            message = status.canonical_reason().unwrap_or("no message").to_owned();
        }
        if let Some(key) = &self.config.api_key {
            message = message.replace(&key.0, "…");
        }
        if message.chars().count() > MESSAGE_CHARS_MAX {
            message = message.chars().take(MESSAGE_CHARS_MAX).collect::<String>() + "…";
        }
        message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        Failure::Passing {
            error: EmbedError::Unreachable { endpoint: self.endpoint.clone(), reason: chain(error) },
            asked: None,
        }
    }

    fn bad_answer(&self, reason: String) -> EmbedError {
        EmbedError::BadAnswer { endpoint: self.endpoint.clone(), reason }
    }
}

impl Embeddings for RemoteEmbeddings {
    /// `<model>@<host>[:<port>][<path>]`: the model and the API that serves it, never the key.
    fn model(&self) -> &str {
        &self.version
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Embedding>, EmbedError>> {
        Box::pin(RemoteEmbeddings::embed(self, texts))
    }
}

/// The last error of a request that failed every attempt, saying how many there were.
fn after_attempts(error: EmbedError, attempts: u32) -> EmbedError {
    if attempts == 1 {
        return error;
    }
    match error {
        EmbedError::Remote { endpoint, status, message } => {
            EmbedError::Remote { endpoint, status, message: format!("{message} (after {attempts} attempts)") }
        }
        EmbedError::Unreachable { endpoint, reason } => {
            EmbedError::Unreachable { endpoint, reason: format!("{reason} (after {attempts} attempts)") }
        }
        other => other,
    }
}

/// A transport error and its causes, without the URL (it names nothing secret, but the endpoint is
/// already in the message).
fn chain(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// The `retry`-th backoff (0 first): `first` doubled that many times, capped at `max`, drawn
/// between half and all of it.
fn backoff(first: Duration, max: Duration, retry: u32) -> Duration {
    let full = first.saturating_mul(2u32.saturating_pow(retry.min(31))).min(max);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// How long the answer asks to wait before the next attempt: `retry-after` (seconds or an HTTP
/// date) on any answer, else on a 429 OpenAI's reset of the limit that ran out (of requests or of
/// tokens; the later of both when the answer does not say which).
pub fn asked_wait(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    if let Some(wait) = header(RETRY_AFTER.as_str()).and_then(|value| parse_retry_after(value, now)) {
        return Some(wait);
    }
    if status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let requests = header("x-ratelimit-reset-requests").and_then(parse_reset);
    let tokens = header("x-ratelimit-reset-tokens").and_then(parse_reset);
    let spent = |name: &str| header(name) == Some("0");
    match (spent("x-ratelimit-remaining-requests"), spent("x-ratelimit-remaining-tokens")) {
        (true, false) if requests.is_some() => requests,
        (false, true) if tokens.is_some() => tokens,
        _ => requests.max(tokens),
    }
}

/// `retry-after`: whole (or fractional) seconds, or an HTTP date (a past one is no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// OpenAI's `x-ratelimit-reset-*`: a Go duration such as `1s`, `6m0s`, `1h2m3.5s`, `20ms`, `350µs`;
/// a bare number is seconds.
pub fn parse_reset(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    if value.is_empty() {
        return None;
    }
    let mut rest = value;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        let number: f64 = number.parse().ok()?;
        seconds += number * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// Scales `vector` to unit length, refusing one that has none.
fn normalise(vector: &mut Embedding) -> Result<(), &'static str> {
    if !vector.iter().all(|x| x.is_finite()) {
        return Err("a value that is not a finite number");
    }
    let norm = vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return Err("zero length");
    }
    for x in vector.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(())
}

enum Read {
    Transport(reqwest::Error),
    TooLarge,
}

/// The body, refused past `limit` bytes before reading it all.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Read> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(Read::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Read::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Read::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_reset_durations_parse() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(parse_reset("350µs"), Some(Duration::from_micros(350)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_reset("0s"), Some(Duration::ZERO));
        for bad in ["", "s", "1x", "1.2.3s", "-1s", "soon"] {
            assert_eq!(parse_reset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5", now), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO), "past");
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("later", now), None);
    }

    #[test]
    fn a_429_waits_for_the_limit_that_ran_out() {
        let now = SystemTime::now();
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let resets = [("x-ratelimit-reset-requests", "2s"), ("x-ratelimit-reset-tokens", "6m0s")];
        let both = headers(&resets);
        assert_eq!(asked_wait(StatusCode::TOO_MANY_REQUESTS, &both, now), Some(Duration::from_secs(360)));
        let requests_spent = headers(&[resets[0], resets[1], ("x-ratelimit-remaining-requests", "0")]);
        assert_eq!(asked_wait(StatusCode::TOO_MANY_REQUESTS, &requests_spent, now), Some(Duration::from_secs(2)));
        let tokens_spent = headers(&[resets[0], resets[1], ("x-ratelimit-remaining-tokens", "0")]);
        assert_eq!(asked_wait(StatusCode::TOO_MANY_REQUESTS, &tokens_spent, now), Some(Duration::from_secs(360)));
        let retry_after = headers(&[resets[0], ("retry-after", "7")]);
        assert_eq!(asked_wait(StatusCode::TOO_MANY_REQUESTS, &retry_after, now), Some(Duration::from_secs(7)));
        assert_eq!(asked_wait(StatusCode::SERVICE_UNAVAILABLE, &retry_after, now), Some(Duration::from_secs(7)));
        assert_eq!(asked_wait(StatusCode::SERVICE_UNAVAILABLE, &both, now), None, "resets count on 429 only");
        assert_eq!(asked_wait(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for retry in 0..40 {
            let full = (first * 2u32.pow(retry.min(10))).min(max);
            let wait = backoff(first, max, retry);
            assert!(wait >= full / 2 && wait <= full, "retry {retry}: {wait:?} of {full:?}");
        }
    }

    #[test]
    fn endpoints_are_named_without_credentials() {
        let (url, name) = endpoint("https://api.example.com").unwrap();
        assert_eq!((url.as_str(), name.as_str()), ("https://api.example.com/v1/embeddings", "api.example.com"));
        let (url, name) = endpoint("http://127.0.0.1:8080/openai/v1/").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/openai/v1/embeddings");
        assert_eq!(name, "127.0.0.1:8080/openai");
        for bad in ["api.example.com", "ftp://example.com", "https://user:pw@example.com", "https://e.com/?k=1", ""] {
            let error = endpoint(bad).unwrap_err().to_string();
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn configs_are_bounded_and_keys_never_print() {
        let config = RemoteConfig::new("http://127.0.0.1:1", "m").with_key(RemoteKey::new("sk-secret").unwrap());
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("sk-secret"));
        for bad in [
            RemoteConfig { batch_texts: 0, ..config.clone() },
            RemoteConfig { batch_texts: BATCH_TEXTS_MAX + 1, ..config.clone() },
            RemoteConfig { max_retries: RETRIES_MAX + 1, ..config.clone() },
            RemoteConfig { timeout: Duration::ZERO, ..config.clone() },
            RemoteConfig { max_in_flight: 0, ..config.clone() },
            RemoteConfig {
                retry_wait_first: Duration::from_secs(2),
                retry_wait_max: Duration::from_secs(1),
                ..config.clone()
            },
            RemoteConfig { model: String::new(), ..config.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(RemoteKey::new("").is_err());
        let error = RemoteKey::new("sk-has space").unwrap_err().to_string();
        assert!(!error.contains("sk-has"), "{error}");
    }

    #[test]
    fn answers_are_placed_by_index_and_checked() {
        let remote = RemoteEmbeddings::new(RemoteConfig::new("http://127.0.0.1:1", "m")).unwrap();
        let unit = |place: usize| {
            let mut vector = vec![0.0; DIMENSIONS];
            vector[place] = 2.0;
            vector
        };
        let answer = |data: Vec<(usize, Vec<f32>)>| {
            let data: Vec<_> = data
                .into_iter()
                .map(|(index, embedding)| serde_json::json!({ "index": index, "embedding": embedding }))
                .collect();
            serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data })).unwrap()
        };
        let vectors = remote.vectors(&answer(vec![(1, unit(1)), (0, unit(0))]), 2).unwrap();
        assert_eq!((vectors[0][0], vectors[1][1]), (1.0, 1.0), "placed by index, normalised");
        for (bad, texts) in [
            (answer(vec![(0, unit(0))]), 2),
            (answer(vec![(0, unit(0)), (0, unit(1))]), 2),
            (answer(vec![(0, unit(0)), (2, unit(1))]), 2),
            (b"{\"data\": \"nope\"}".to_vec(), 1),
            (b"<html>".to_vec(), 1),
        ] {
            let error = remote.vectors(&bad, texts).unwrap_err();
            assert!(matches!(error, EmbedError::BadAnswer { .. }), "{error:?}");
        }
        let error = remote.vectors(&answer(vec![(0, vec![0.5; 1536])]), 1).unwrap_err();
        assert!(matches!(error, EmbedError::WrongWidth { width: 1536, .. }), "{error:?}");
        assert_eq!(remote.model(), "m@127.0.0.1:1");
    }

    #[test]
    fn vectors_are_normalised_or_refused() {
        let mut vector = [0.0; DIMENSIONS];
        vector[0] = 3.0;
        vector[1] = 4.0;
        normalise(&mut vector).unwrap();
        assert!((vector[0] - 0.6).abs() < 1e-6 && (vector[1] - 0.8).abs() < 1e-6);
        assert!(normalise(&mut [0.0; DIMENSIONS]).is_err());
        let mut nan = [1.0; DIMENSIONS];
        nan[7] = f32::NAN;
        assert!(normalise(&mut nan).is_err());
    }
}
