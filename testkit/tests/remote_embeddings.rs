//! The remote embeddings provider against the fake OpenAI API: batches and their order, the limit
//! of requests under way, retries after what the API asked (timed), final refusals that are not
//! retried and never repeat the key, vectors checked and normalised.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use devart_embed::{cosine, EmbedError, Embedding, Embeddings, RemoteConfig, RemoteEmbeddings, RemoteKey, DIMENSIONS};
use devart_testkit::fake_openai::{FAKE_KEY, FAKE_WIDTH_DEFAULT};
use devart_testkit::{fake_vector, FakeEmbeddingsApi, FakeFailure};

const MODEL: &str = "text-embedding-3-small";

/// A provider for `fake`, with its key, quick to retry.
fn config(fake: &FakeEmbeddingsApi) -> RemoteConfig {
    RemoteConfig {
        retry_wait_first: Duration::from_millis(10),
        retry_wait_max: Duration::from_secs(10),
        ..RemoteConfig::new(&fake.base_url, MODEL).with_key(RemoteKey::new(FAKE_KEY).unwrap())
    }
}

fn provider(config: RemoteConfig) -> RemoteEmbeddings {
    RemoteEmbeddings::new(config).unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i} about topic {}", i % 3)).collect()
}

fn expected(text: &str) -> Embedding {
    fake_vector(text, DIMENSIONS).try_into().unwrap()
}

fn assert_close(a: &Embedding, b: &Embedding) {
    assert!(cosine(a, b) > 0.9999, "cosine {}", cosine(a, b));
}

fn statuses(fake: &FakeEmbeddingsApi) -> Vec<u16> {
    fake.requests().iter().map(|seen| seen.status).collect()
}

#[tokio::test]
async fn texts_go_in_batches_and_come_back_in_order_by_index() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.answer_reversed(true);
    let remote = provider(RemoteConfig { batch_texts: 3, ..config(&fake) });
    let texts = texts(10);
    let vectors = remote.embed(texts.clone()).await.unwrap();
    assert_eq!(vectors.len(), 10);
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_close(vector, &expected(text));
    }
    let mut sizes = fake.batch_sizes();
    sizes.sort();
    assert_eq!(sizes, [1, 3, 3, 3]);
    let mut sent: Vec<String> = fake.requests().into_iter().flat_map(|seen| seen.inputs).collect();
    sent.sort();
    let mut all = texts.clone();
    all.sort();
    assert_eq!(sent, all, "each text sent once");
    for seen in fake.requests() {
        assert_eq!(seen.authorization.as_deref(), Some(format!("Bearer {FAKE_KEY}").as_str()));
        assert_eq!(seen.model.as_deref(), Some(MODEL));
        assert_eq!(seen.dimensions, Some(DIMENSIONS as u64));
    }

    assert!(remote.embed(Vec::new()).await.unwrap().is_empty());
    assert_eq!(fake.request_count(), 4, "nothing to embed, nothing sent");
}

#[tokio::test]
async fn requests_under_way_never_pass_the_limit_for_all_callers() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.set_latency(Duration::from_millis(100));
    let remote = Arc::new(provider(RemoteConfig { batch_texts: 2, max_in_flight: 2, ..config(&fake) }));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.embed(texts(8)).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap().len(), 8);
    }
    assert_eq!(fake.request_count(), 12);
    assert_eq!(fake.in_flight_max(), 2, "two at once, never more");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_seconds() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(2, FakeFailure::RateLimited { retry_after_secs: 1 });
    let remote = provider(config(&fake));
    let started = Instant::now();
    let vectors = remote.embed(vec!["rate limited".into()]).await.unwrap();
    assert_close(&vectors[0], &expected("rate limited"));
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(statuses(&fake), [429, 429, 200]);
    let seen = fake.requests();
    for pair in seen.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_secs(1), "{:?}", pair[1].at - pair[0].at);
    }
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_date() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    // An HTTP date has whole seconds: two from now is at least one away.
    fake.fail_next(1, FakeFailure::RateLimitedUntil(SystemTime::now() + Duration::from_secs(2)));
    let remote = provider(config(&fake));
    remote.embed(vec!["until a date".into()]).await.unwrap();
    assert_eq!(statuses(&fake), [429, 200]);
    let seen = fake.requests();
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn a_429_waits_for_the_spent_limit_to_reset_not_the_others() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(1, FakeFailure::RequestsSpent { reset: "1s".into() });
    let remote = provider(config(&fake));
    remote.embed(vec!["reset".into()]).await.unwrap();
    assert_eq!(statuses(&fake), [429, 200]);
    let seen = fake.requests();
    let waited = seen[1].at - seen[0].at;
    // The tokens' reset (6m0s, capped at the 10 s configured) is not the limit that ran out.
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_wait_asked_for_is_capped() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(1, FakeFailure::RateLimited { retry_after_secs: 3600 });
    let remote = provider(RemoteConfig { retry_wait_max: Duration::from_millis(200), ..config(&fake) });
    let started = Instant::now();
    remote.embed(vec!["capped".into()]).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(statuses(&fake), [429, 200]);
}

#[tokio::test]
async fn server_errors_and_passing_statuses_are_retried_then_succeed() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(2, FakeFailure::ServerError);
    let remote = provider(config(&fake));
    let vectors = remote.embed(vec!["after two 500s".into()]).await.unwrap();
    assert_close(&vectors[0], &expected("after two 500s"));
    assert_eq!(statuses(&fake), [500, 500, 200]);

    for status in [408, 409, 502, 503] {
        fake.fail_next(1, FakeFailure::Status(status));
    }
    remote.embed(vec!["after four".into()]).await.unwrap();
    assert_eq!(statuses(&fake)[3..], [408, 409, 502, 503, 200]);
}

#[tokio::test]
async fn retries_end_with_the_last_error_and_the_attempts() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(10, FakeFailure::ServerError);
    let remote = provider(RemoteConfig { max_retries: 2, ..config(&fake) });
    let error = remote.embed(vec!["never".into()]).await.unwrap_err();
    let EmbedError::Remote { status, message, .. } = &error else { panic!("{error:?}") };
    assert_eq!(*status, 500);
    assert!(message.contains("The server had an error") && message.contains("server_error"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(1, FakeFailure::Delay(Duration::from_secs(3)));
    let remote = provider(RemoteConfig { timeout: Duration::from_millis(300), ..config(&fake) });
    let started = Instant::now();
    remote.embed(vec!["slow".into()]).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the slow answer was not waited for");
    assert_eq!(statuses(&fake), [0, 200], "the first left unanswered");
}

#[tokio::test]
async fn an_api_that_is_not_there_is_unreachable_after_the_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let remote = provider(RemoteConfig {
        max_retries: 1,
        retry_wait_first: Duration::from_millis(10),
        ..RemoteConfig::new(base_url, MODEL)
    });
    let error = remote.embed(vec!["nobody".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains("after 2 attempts"), "{error}");
}

#[tokio::test]
async fn a_refused_key_is_not_retried_and_never_repeated() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    let wrong = "sk-wrong-key-that-must-stay-secret-42";
    let remote = provider(RemoteConfig { api_key: Some(RemoteKey::new(wrong).unwrap()), ..config(&fake) });
    let error = remote.embed(vec!["hello".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::KeyRefused { status: 401, keyed: true, .. }), "{error:?}");
    assert_eq!(fake.request_count(), 1, "not retried");
    let said = format!("{error} {error:?} {remote:?} {:?}", remote.config());
    assert!(!said.contains(wrong) && !said.contains("must-stay-secret"), "{said}");
    assert!(error.to_string().contains("refused the API key"), "{error}");
    // The fake did quote it: what the client left out was there to leak.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", fake.base_url))
        .bearer_auth(wrong)
        .json(&serde_json::json!({ "model": MODEL, "input": ["hello"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(wrong), "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let keyless = provider(RemoteConfig { api_key: None, ..config(&fake) });
    let error = keyless.embed(vec!["hello".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::KeyRefused { status: 401, keyed: false, .. }), "{error:?}");
    assert!(error.to_string().contains("without an API key"), "{error}");
    assert_eq!(fake.requests()[2].authorization, None);

    fake.fail_next(1, FakeFailure::Status(403));
    let error = remote.embed(vec!["hello".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::KeyRefused { .. }), "{error:?}");
}

#[tokio::test]
async fn a_bad_request_is_not_retried_and_says_what_the_api_said() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    let remote = provider(config(&fake));
    let error = remote.embed(vec!["fine".into(), String::new()]).await.unwrap_err();
    let EmbedError::Remote { status: 400, message, .. } = &error else { panic!("{error:?}") };
    assert!(message.contains("'$.input' is invalid") && message.contains("invalid_request_error"), "{message}");
    assert_eq!(fake.request_count(), 1);

    fake.fail_next(1, FakeFailure::Status(404));
    let error = remote.embed(vec!["fine".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::Remote { status: 404, .. }), "{error:?}");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn vectors_of_another_width_are_refused_naming_model_and_width() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(1, FakeFailure::WrongWidth(FAKE_WIDTH_DEFAULT));
    let remote = provider(config(&fake));
    let error = remote.embed(vec!["wide".into()]).await.unwrap_err();
    let EmbedError::WrongWidth { model, width } = &error else { panic!("{error:?}") };
    assert_eq!(*width, FAKE_WIDTH_DEFAULT);
    assert!(model.starts_with(MODEL), "{model}");
    assert!(error.to_string().contains("1536") && error.to_string().contains("384"), "{error}");
    assert_eq!(fake.request_count(), 1, "a wrong model is not a passing failure");
}

#[tokio::test]
async fn vectors_are_normalised_whatever_their_length() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.scale_vectors(7.5);
    let remote = provider(config(&fake));
    let texts = texts(5);
    let vectors = remote.embed(texts.clone()).await.unwrap();
    for (text, vector) in texts.iter().zip(&vectors) {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_close(vector, &expected(text));
    }

    fake.scale_vectors(0.0);
    let error = remote.embed(vec!["zero".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::BadAnswer { .. }), "{error:?}");
}

#[tokio::test]
async fn the_model_names_model_and_endpoint_and_debug_hides_the_key() {
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    let remote = provider(config(&fake));
    let host = fake.base_url.trim_start_matches("http://");
    assert_eq!(remote.model(), format!("{MODEL}@{host}"));
    let printed = format!("{remote:?} {:?}", config(&fake));
    assert!(!printed.contains(FAKE_KEY), "{printed}");
    assert!(printed.contains("api_key: Some(…)"), "{printed}");
    let shared: Arc<dyn Embeddings> = Arc::new(remote);
    assert_eq!(shared.embed(vec!["through the trait".into()]).await.unwrap().len(), 1);
}

#[test]
fn the_fakes_vectors_are_close_for_texts_sharing_words() {
    let v = |text: &str| -> Embedding { expected(text) };
    let rotate = v("How to rotate the JWT signing key");
    let related = v("Rotating keys: the signing key of JWT tokens");
    let unrelated = v("Budgets suspend services at their monthly limit");
    assert!(cosine(&rotate, &related) > 0.4, "{}", cosine(&rotate, &related));
    assert!(cosine(&rotate, &unrelated).abs() < 0.3, "{}", cosine(&rotate, &unrelated));
    assert_close(&v("Same Words"), &v("same words!"));
    assert!((cosine(&v("..."), &v("...")) - 1.0).abs() < 1e-6, "a text without words is a unit vector too");
}

/// Where the logs of a test go.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_say_what_was_retried_never_the_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeEmbeddingsApi::start().await.unwrap();
    fake.fail_next(1, FakeFailure::ServerError);
    fake.fail_next(1, FakeFailure::RateLimited { retry_after_secs: 0 });
    provider(config(&fake)).embed(vec!["logged".into()]).await.unwrap();
    let wrong = "sk-another-wrong-key-0000";
    let refused = provider(RemoteConfig { api_key: Some(RemoteKey::new(wrong).unwrap()), ..config(&fake) });
    refused.embed(vec!["logged".into()]).await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("embeddings request failed; retrying").count(), 2, "{logs}");
    assert!(logs.contains("500"), "{logs}");
    assert!(!logs.contains(FAKE_KEY) && !logs.contains(wrong), "{logs}");
}
