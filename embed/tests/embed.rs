//! The engine against an independent implementation and against itself. These tests need the model
//! installed (`scripts/models`, or `DEVART_MODEL_DIR`): without it they fail with the install hint,
//! they do not skip.

use std::sync::{Arc, OnceLock};

use devart_embed::{cosine, EmbedPool, Embedder, Embedding, PoolConfig, DIMENSIONS, MAX_TOKENS};

fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER.get_or_init(|| Arc::new(Embedder::load_default().unwrap_or_else(|error| panic!("{error}")))).clone()
}

struct Case {
    text: String,
    tokens: usize,
    vector: Vec<f32>,
}

fn reference() -> (serde_json::Value, Vec<Case>) {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/reference.json")).expect("reference.json is JSON");
    let cases = json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| Case {
            text: case["text"].as_str().expect("text").to_string(),
            tokens: case["tokens"].as_u64().expect("tokens") as usize,
            vector: case["vector"].as_array().expect("vector").iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        })
        .collect();
    (json, cases)
}

fn one(text: &str) -> Embedding {
    embedder().embed(&[text]).unwrap().remove(0)
}

#[test]
fn vectors_match_the_independent_reference() {
    let (json, cases) = reference();
    let embedder = embedder();
    assert_eq!(json["max_tokens"].as_u64(), Some(MAX_TOKENS as u64), "the fixture was made with another truncation");
    let sha = json["model_sha256"].as_str().unwrap();
    assert!(
        embedder.version().ends_with(&sha[..12]),
        "the fixture was made from other weights ({sha}) than {}",
        embedder.version()
    );
    assert!(cases.len() >= 8);
    assert!(cases.iter().any(|c| c.tokens > 128), "a text longer than the shipped truncation");
    assert!(cases.iter().any(|c| c.tokens == MAX_TOKENS), "a text cut at MAX_TOKENS");

    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let vectors = embedder.embed(&texts).unwrap();
    for (case, vector) in cases.iter().zip(&vectors) {
        assert_eq!(embedder.tokenize(&case.text).unwrap().len(), case.tokens, "tokens of {:?}", case.text);
        assert_eq!(case.vector.len(), DIMENSIONS);
        let reference: Embedding = case.vector.clone().try_into().unwrap();
        let similarity = cosine(vector, &reference);
        let max_diff = vector.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{} tokens: cosine {similarity:.7}, largest difference {max_diff:.1e}", case.tokens);
        assert!(similarity >= 0.999, "{:?}: cosine {similarity}", case.text);
        assert!(max_diff < 1e-4, "{:?}: largest difference {max_diff}", case.text);
    }
}

#[test]
fn the_quick_brown_fox_begins_as_measured() {
    let expected = [0.0027727f32, 0.0332686, -0.0006847, 0.0429968, 0.0361458];
    let vector = one("The quick brown fox");
    for (got, want) in vector.iter().zip(expected) {
        assert!((got - want).abs() < 1e-5, "{:?} vs {expected:?}", &vector[..5]);
    }
}

#[test]
fn a_batch_gives_what_single_texts_give() {
    let (_, cases) = reference();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    // Reversed, so the batch's order differs from the sorted order it runs in.
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let batch = embedder().embed(&reversed).unwrap();
    for (text, vector) in reversed.iter().zip(&batch) {
        let single = one(text);
        let max_diff = single.iter().zip(vector).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-5, "{text:?}: batched and single differ by {max_diff}");
    }
}

#[test]
fn vectors_have_unit_length() {
    for text in ["", "x", "Quarterly revenue grew by twelve percent.", &"word ".repeat(1000)] {
        let vector = one(text);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?}: norm {norm}");
        assert!(vector.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn a_paraphrase_is_closer_than_an_unrelated_text() {
    let anchor = one("The build failed because the database migration timed out.");
    let paraphrase = one("Compilation broke since the schema migration took too long.");
    let unrelated = one("My grandmother grows tomatoes in her garden every summer.");
    let (near, far) = (cosine(&anchor, &paraphrase), cosine(&anchor, &unrelated));
    assert!(near > far + 0.2, "paraphrase {near}, unrelated {far}");
}

#[test]
fn a_long_text_is_cut_at_max_tokens() {
    let long = "lease ".repeat(2 * MAX_TOKENS);
    assert_eq!(embedder().tokenize(&long).unwrap().len(), MAX_TOKENS);
    // What lies beyond the cut does not change the vector.
    let other = format!("{}{}", "lease ".repeat(MAX_TOKENS), "unrelated tail ".repeat(MAX_TOKENS));
    assert_eq!(one(&long), one(&other));
    // Huge inputs are bounded too.
    let huge = "x".repeat(10 * 1024 * 1024);
    assert!(embedder().tokenize(&huge).unwrap().len() <= MAX_TOKENS);
}

#[test]
fn the_version_names_the_model_and_its_weights() {
    let embedder = embedder();
    assert_eq!(embedder.model_name(), "all-MiniLM-L6-v2");
    let (name, hash) = embedder.version().split_once('@').expect("name@hash");
    assert_eq!(name, "all-MiniLM-L6-v2");
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    let files = devart_embed::ModelFiles::locate_default().unwrap();
    assert_eq!(devart_embed::model_version(&files).unwrap().version, embedder.version());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_get_their_own_answers_and_the_pool_stays_bounded() {
    let threads = 2;
    let pool = Arc::new(
        EmbedPool::start(embedder(), PoolConfig { threads, queue_requests: 4, ..PoolConfig::default() }).unwrap(),
    );
    let (_, cases) = reference();
    let cases = Arc::new(cases);
    // A queue of 4 and 48 callers: most of them wait to enqueue, none fails.
    let callers: Vec<_> = (0..48)
        .map(|i| {
            let (pool, cases) = (pool.clone(), cases.clone());
            tokio::spawn(async move {
                let case = &cases[i % cases.len()];
                let texts = if i % 3 == 0 { vec![case.text.clone(); 20] } else { vec![case.text.clone()] };
                let vectors = pool.embed(texts.clone()).await.unwrap();
                assert_eq!(vectors.len(), texts.len());
                let reference: Embedding = case.vector.clone().try_into().unwrap();
                for vector in &vectors {
                    assert!(cosine(vector, &reference) >= 0.999, "caller {i} got another text's vector");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.running, 0);
    assert!(stats.running_max <= threads, "{} forward passes at once on {threads} threads", stats.running_max);
    assert_eq!(stats.running_max, threads, "both threads should have been busy at once: {stats:?}");
    assert_eq!(stats.texts_total, 16 * 20 + 32);
    assert!(stats.merged_requests_total > 0, "queued requests should share batches: {stats:?}");
}

#[tokio::test]
async fn the_pool_answers_one_query_and_an_empty_request() {
    let pool = EmbedPool::start(embedder(), PoolConfig::default()).unwrap();
    assert_eq!(pool.version(), embedder().version());
    assert!(pool.embed(Vec::new()).await.unwrap().is_empty());
    let vector = pool.embed_one("The quick brown fox").await.unwrap();
    assert!((vector[0] - 0.0027727).abs() < 1e-5);
    assert_eq!(pool.stats().running_max, 1);
}
