//! The knowledge base through the API: documents added, changed, tagged and removed, split into
//! chunks, found by keyword search within a second of each change; who may write; time travel.

use std::time::Duration;

use devart::Role;
use devart_projections::knowledge::KnowledgeProjection;
use serde_json::{json, Value};

use crate::support::{eventually, Running, TestEnv};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];
const ADD: &str =
    "mutation($input: AddDocumentInput!) { addDocument(input: $input) { id version tags source chunkCount } }";
const SEARCH: &str = "query($q: String!, $tags: [String!], $source: String, $mode: SearchMode = KEYWORD) { \
    searchKnowledge(query: $q, tags: $tags, source: $source, mode: $mode) { \
      document { id title tags source } chunk { ordinal heading text charStart charEnd } score excerpt } }";

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

async fn add(running: &Running, token: Option<&str>, input: Value) -> Value {
    match token {
        Some(token) => running.graphql_as(token, ADD, json!({ "input": input })).await,
        None => running.graphql(ADD, json!({ "input": input })).await,
    }
}

fn id_of(added: &Value) -> String {
    added["data"]["addDocument"]["id"].as_str().unwrap_or_else(|| panic!("{added}")).to_owned()
}

/// The hits for `variables`, best first.
async fn hits(running: &Running, variables: Value) -> Vec<Value> {
    let body = running.graphql(SEARCH, variables).await;
    body["data"]["searchKnowledge"].as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

/// The documents of `hits`, each once, in the order of their best hit.
fn ids(hits: &[Value]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for id in hits.iter().map(|h| h["document"]["id"].as_str().unwrap()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

const DEPLOYS: &str = "# Deploys\n\nShips go out from the main branch.\n\n## Rollback\n\n\
    If ERR_DEVART_4217 appears after a deploy, run `devart rollback --to previous` and page the on-call.\n";
const ONBOARDING: &str = "# Onboarding\n\nNew people get an account, a laptop and a buddy. An error in the \
    devart account setup (not 4217) goes to the helpdesk; no rollback is ever needed.\n";
const BILLING: &str = "# Billing\n\nInvoices are sent on the first of the month. A failed deploy of the \
    billing job is rolled back by finance.\n";

#[tokio::test]
async fn documents_are_searched_by_keyword_and_changes_show_within_a_second() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;

    let deploys = id_of(
        &add(
            &running,
            None,
            json!({ "title": "Deploys", "content": DEPLOYS, "tags": ["Ops", "runbook", "ops"], "source": "wiki/deploys",
                    "metadata": { "owner": "ops" } }),
        )
        .await,
    );
    let added = add(
        &running,
        None,
        json!({ "title": "Onboarding", "content": ONBOARDING, "tags": ["people"], "source": "wiki/onboarding" }),
    )
    .await;
    assert_eq!(added["data"]["addDocument"]["tags"], json!(["people"]), "{added}");
    let onboarding = id_of(&added);
    let billing = id_of(
        &add(
            &running,
            None,
            json!({ "title": "Billing", "content": BILLING, "tags": ["finance", "ops"], "source": "drive/billing" }),
        )
        .await,
    );

    // A word in all three finds each, once the read model has them.
    eventually(Duration::from_secs(5), || async {
        let all = hits(&running, json!({ "q": "deploy OR rollback OR account" })).await;
        let documents: std::collections::BTreeSet<&str> = ids(&all).into_iter().collect();
        (documents.len() == 3).then_some(())
    })
    .await;

    // The exact identifier finds its runbook first, marked, and the chunk points back into the content.
    let found = hits(&running, json!({ "q": "ERR_DEVART_4217" })).await;
    assert_eq!(ids(&found), [deploys.as_str()], "only the runbook holds the identifier as a phrase");
    let hit = &found[0];
    assert_eq!(hit["document"]["tags"], json!(["ops", "runbook"]));
    assert_eq!(hit["chunk"]["heading"], "Deploys › Rollback");
    let excerpt = hit["excerpt"].as_str().unwrap();
    assert!(excerpt.contains("<mark>4217</mark>"), "{excerpt}");
    assert!(hit["score"].as_f64().unwrap() > 0.0);
    let (start, end) =
        (hit["chunk"]["charStart"].as_u64().unwrap() as usize, hit["chunk"]["charEnd"].as_u64().unwrap() as usize);
    let slice: String = DEPLOYS.chars().skip(start).take(end - start).collect();
    assert_eq!(slice, hit["chunk"]["text"].as_str().unwrap());

    // Filtered by tags (all of them) and by source.
    let ops = hits(&running, json!({ "q": "deploy", "tags": ["ops"] })).await;
    let mut ops_ids = ids(&ops);
    ops_ids.sort();
    let mut expected = vec![deploys.as_str(), billing.as_str()];
    expected.sort();
    assert_eq!(ops_ids, expected);
    assert_eq!(ids(&hits(&running, json!({ "q": "deploy", "tags": ["ops", "runbook"] })).await), [deploys.as_str()]);
    assert_eq!(ids(&hits(&running, json!({ "q": "deploy", "source": "drive/billing" })).await), [billing.as_str()]);
    assert!(hits(&running, json!({ "q": "deploy", "tags": ["nothing"] })).await.is_empty());

    // Changed content is what search finds within a second.
    let updated = running
        .graphql(
            "mutation($id: ID!) { updateDocument(id: $id, expectedVersion: 1, input: { content: \"# Deploys\\n\\nUse the blue-green switchover.\" }) { version content } }",
            json!({ "id": deploys }),
        )
        .await;
    assert_eq!(updated["data"]["updateDocument"]["version"], 2, "{updated}");
    eventually(Duration::from_secs(1), || async {
        let old = hits(&running, json!({ "q": "ERR_DEVART_4217" })).await;
        let new = hits(&running, json!({ "q": "switchover" })).await;
        (old.is_empty() && ids(&new) == [deploys.as_str()]).then_some(())
    })
    .await;

    // Tags replaced as a set.
    let tagged = running
        .graphql(
            "mutation($id: ID!) { tagDocument(id: $id, tags: [\"K8s\"]) { tags version } }",
            json!({ "id": onboarding }),
        )
        .await;
    assert_eq!(tagged["data"]["tagDocument"]["tags"], json!(["k8s"]), "{tagged}");

    // Removed, it is out of search within a second; its history stays.
    let removed = running.graphql("mutation($id: ID!) { removeDocument(id: $id) }", json!({ "id": billing })).await;
    assert_eq!(removed["data"]["removeDocument"], true, "{removed}");
    eventually(Duration::from_secs(1), || async {
        hits(&running, json!({ "q": "invoices" })).await.is_empty().then_some(())
    })
    .await;
    let gone = running.graphql("query($id: ID!) { document(id: $id) { id } }", json!({ "id": billing })).await;
    assert_eq!(gone["data"]["document"], Value::Null, "{gone}");
    let again = running.graphql("mutation($id: ID!) { removeDocument(id: $id) }", json!({ "id": billing })).await;
    assert_eq!(code(&again), "NOT_FOUND");

    // Time travel: the document as it stood at version 1, and its history.
    let history = running
        .graphql(
            "query($s: String!) { history(streamId: $s) { event { type position } changes } }",
            json!({ "s": format!("document-{deploys}") }),
        )
        .await;
    let entries = history["data"]["history"].as_array().unwrap_or_else(|| panic!("{history}"));
    let types: Vec<&str> = entries.iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DocumentAdded", "DocumentUpdated"]);
    let first = entries[0]["event"]["position"].as_str().unwrap().to_owned();
    let then = running
        .graphql(
            "query($id: ID!, $at: String!) { documentAt(id: $id, at: $at) { version content tags } }",
            json!({ "id": deploys, "at": first }),
        )
        .await;
    assert_eq!(then["data"]["documentAt"]["version"], 1, "{then}");
    assert_eq!(then["data"]["documentAt"]["content"], DEPLOYS);
    let removed_then =
        running.graphql("query($id: ID!) { documentAt(id: $id, at: \"1\") { title } }", json!({ "id": billing })).await;
    assert_eq!(removed_then["data"]["documentAt"], Value::Null, "{removed_then}");

    // This devart runs without an embedding provider: semantic and hybrid search say so.
    for mode in ["SEMANTIC", "HYBRID"] {
        let body = running.graphql(SEARCH, json!({ "q": "deploy", "mode": mode })).await;
        assert_eq!(code(&body), "UNAVAILABLE", "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("DEVART_EMBEDDINGS=off"), "{body}");
    }
    // An explicit null where the argument has a default is bad input, not an internal error.
    let null = "query($mode: SearchMode) { searchKnowledge(query: \"deploy\", mode: $mode) { score } }";
    let body = running.graphql(null, json!({ "mode": null })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let metrics = reqwest::get(running.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("devart_knowledge_searches_total{mode=\"keyword\"}"), "{metrics}");
    assert!(metrics.contains("devart_knowledge_searches_total{mode=\"semantic\"} 1"), "{metrics}");

    // The read model, documents and chunks, equals a rebuild from the store.
    env.sequence_all().await;
    let head = env.store.head().await.unwrap();
    env.wait_projected("knowledge", head.0).await;
    let live = (env.checksum("documents").await, env.checksum("knowledge_chunks").await);
    devart_projections::rebuild::rebuild(&env.pool, &env.store, &KnowledgeProjection, |_, _| {}).await.unwrap();
    assert_eq!((env.checksum("documents").await, env.checksum("knowledge_chunks").await), live);
    assert_eq!(
        ids(&hits(&running, json!({ "q": "switchover" })).await),
        [deploys.as_str()],
        "searchable after the swap"
    );

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn who_may_write_and_what_is_refused() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let viewer = env.token(devart_gateway::Role::Viewer);
    let supervisor = env.token(devart_gateway::Role::Supervisor);
    let registered = running
        .graphql("mutation { registerAgent(input: { name: \"scribe\", capabilities: [] }) { apiKey } }", json!({}))
        .await;
    let agent =
        registered["data"]["registerAgent"]["apiKey"].as_str().unwrap_or_else(|| panic!("{registered}")).to_owned();

    let doc = json!({ "title": "Notes", "content": "Some notes about caching." });
    assert_eq!(code(&add(&running, Some(&viewer), doc.clone()).await), "FORBIDDEN");
    assert_eq!(code(&add(&running, Some(&agent), doc.clone()).await), "FORBIDDEN");
    let id = id_of(&add(&running, Some(&supervisor), doc.clone()).await);

    // A viewer and an agent search.
    for token in [&viewer, &agent] {
        let found = eventually(Duration::from_secs(5), || async {
            let body = running.graphql_as(token, SEARCH, json!({ "q": "caching" })).await;
            let hits = body["data"]["searchKnowledge"].as_array().unwrap_or_else(|| panic!("{body}")).clone();
            (!hits.is_empty()).then_some(hits)
        })
        .await;
        assert_eq!(found[0]["document"]["id"], id.as_str());
    }

    // Agents write once the setting says so.
    let set = running
        .graphql("mutation { updateSetting(key: \"knowledge.agentsMayWrite\", value: true) { key value } }", json!({}))
        .await;
    assert!(set["errors"].is_null(), "{set}");
    let by_agent =
        add(&running, Some(&agent), json!({ "title": "Agent notes", "content": "Learned: retry the flaky step." }))
            .await;
    assert!(by_agent["errors"].is_null(), "{by_agent}");
    assert_eq!(code(&add(&running, Some(&viewer), doc.clone()).await), "FORBIDDEN");

    // A stale expected version is a conflict; bad input names its field.
    let update = "mutation($id: ID!, $v: Int, $input: UpdateDocumentInput!) { updateDocument(id: $id, expectedVersion: $v, input: $input) { version } }";
    let stale = running.graphql(update, json!({ "id": id, "v": 7, "input": { "title": "New" } })).await;
    assert_eq!(code(&stale), "CONFLICT", "{stale}");
    for (input, field) in [
        (json!({ "title": " ", "content": "x" }), "title"),
        (json!({ "title": "t", "content": "" }), "content"),
        (json!({ "title": "t", "content": "x", "tags": ["no spaces"] }), "tags"),
        (json!({ "title": "t", "content": "x", "metadata": [1] }), "metadata"),
    ] {
        let body = add(&running, None, input).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let body = running.graphql(update, json!({ "id": id, "input": { "title": "" } })).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "title", "{body}");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_long_document_is_split_into_chunks_that_point_back_into_it() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let paragraph = |topic: &str| (0..60).map(|i| format!("{topic}{i}")).collect::<Vec<_>>().join(" ");
    let content = format!(
        "# Guide\n\n{}\n\n## Setup\n\n{}\n\n{}\n\n{}\n\n## Teardown\n\n{}\n",
        paragraph("intro"),
        paragraph("alpha"),
        paragraph("beta"),
        paragraph("gamma"),
        paragraph("omega"),
    );
    let added = add(&running, None, json!({ "title": "Guide", "content": content })).await;
    let id = id_of(&added);
    let count = added["data"]["addDocument"]["chunkCount"].as_i64().unwrap();
    assert!(count >= 4, "{added}");
    let chunks = eventually(Duration::from_secs(5), || async {
        let body = running
            .graphql(
                "query($id: ID!) { document(id: $id) { chunkCount chunks { ordinal heading text charStart charEnd } } }",
                json!({ "id": id }),
            )
            .await;
        body["data"]["document"]["chunks"].as_array().cloned()
    })
    .await;
    assert_eq!(chunks.len() as i64, count);
    let characters: Vec<char> = content.chars().collect();
    for (n, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["ordinal"], n);
        let (start, end) = (chunk["charStart"].as_u64().unwrap() as usize, chunk["charEnd"].as_u64().unwrap() as usize);
        let slice: String = characters[start..end].iter().collect();
        assert_eq!(slice, chunk["text"].as_str().unwrap(), "chunk {n}");
        assert!(end - start <= 1_000, "chunk {n} has {} characters", end - start);
    }
    let headings: Vec<&str> = chunks.iter().map(|c| c["heading"].as_str().unwrap()).collect();
    assert_eq!(headings.first(), Some(&"Guide"));
    assert!(headings.iter().filter(|h| **h == "Guide › Setup").count() >= 2, "{headings:?}");
    assert_eq!(headings.last(), Some(&"Guide › Teardown"));
    // Consecutive chunks of Setup overlap.
    let setup: Vec<&Value> = chunks.iter().filter(|c| c["heading"] == "Guide › Setup").collect();
    assert!(setup[1]["charStart"].as_u64() < setup[0]["charEnd"].as_u64());
    // And a word of the last paragraph finds the last chunk.
    let found = hits(&running, json!({ "q": "omega59" })).await;
    assert_eq!(found[0]["chunk"]["heading"], "Guide › Teardown");

    running.stop().await;
    env.cleanup().await;
}

/// The configuration of a devart with the local model (`scripts/models` installed it).
fn with_model(env: &TestEnv) -> devart::Config {
    let mut config = env.config.clone();
    config.knowledge = devart::knowledge::KnowledgeConfig::default();
    config
}

const STATUS: &str = "query($id: ID!) { document(id: $id) { version searchStatus } }";

/// Waits until semantic search reflects document `id` as it is now.
async fn searchable(running: &Running, id: &str) {
    eventually(Duration::from_secs(60), || async {
        let body = running.graphql(STATUS, json!({ "id": id })).await;
        (body["data"]["document"]["searchStatus"] == "SEARCHABLE").then_some(())
    })
    .await;
}

const CREDENTIALS: &str = "# Rotating database credentials\n\nEvery ninety days the Postgres passwords that \
    services use are replaced. The vault issues new secrets, and the old ones are revoked after a grace period \
    of one week.\n";
const CACHE: &str = "# Cache node full\n\nWhen the cache cluster answers ERR_DEVART_4217, a node's disk is \
    full. Free space on it and restart the node.\n";
const ERROR_CODES: &str = "# Error codes\n\nThe ERR_DEVART family of error codes names the subsystem that \
    failed: ERR_DEVART_1001 the gateway, ERR_DEVART_2002 the relay, ERR_DEVART_4216 and ERR_DEVART_4218 the \
    cache. Each ERR_DEVART code is listed with its meaning in the error code table.\n";

/// The documents semantic search ranks for `q`, best first.
async fn by_mode(running: &Running, q: &str, mode: &str) -> Vec<String> {
    ids(&hits(running, json!({ "q": q, "mode": mode })).await).into_iter().map(str::to_owned).collect()
}

#[tokio::test]
async fn semantic_search_finds_a_paraphrase_keyword_an_identifier_and_hybrid_both() {
    let env = TestEnv::new().await;
    let running = env.start_with(&with_model(&env), ALL).await;
    let mut docs = Vec::new();
    for (title, content) in [
        ("Credentials", CREDENTIALS),
        ("Cache", CACHE),
        ("Error codes", ERROR_CODES),
        ("Onboarding", ONBOARDING),
        ("Billing", BILLING),
    ] {
        docs.push(id_of(&add(&running, None, json!({ "title": title, "content": content, "tags": ["ops"] })).await));
    }
    let [credentials, cache, codes, ..] = &docs[..] else { unreachable!() };
    for id in &docs {
        searchable(&running, id).await;
    }

    // A paraphrase that shares no word with the document: keyword search finds nothing, semantic
    // search finds it first.
    let paraphrase = "how often are the SQL login keys renewed";
    assert!(hits(&running, json!({ "q": paraphrase })).await.is_empty());
    assert_eq!(by_mode(&running, paraphrase, "SEMANTIC").await.first(), Some(credentials));

    // An exact identifier: keyword search finds the one document that has it; semantic search
    // ranks the document about error codes in general higher.
    assert_eq!(by_mode(&running, "ERR_DEVART_4217", "KEYWORD").await, std::slice::from_ref(cache));
    let semantic = by_mode(&running, "ERR_DEVART_4217", "SEMANTIC").await;
    assert_eq!(semantic.first(), Some(codes), "{semantic:?}");

    // Hybrid search finds both: the paraphrased document first, the identifier's among the first two.
    assert_eq!(by_mode(&running, paraphrase, "HYBRID").await.first(), Some(credentials));
    let hybrid = by_mode(&running, "ERR_DEVART_4217", "HYBRID").await;
    assert!(hybrid[..2].contains(cache), "{hybrid:?}");

    // Hits carry scores and excerpts; tag and source filters hold in every mode.
    let found = hits(&running, json!({ "q": paraphrase, "mode": "SEMANTIC" })).await;
    assert!(found[0]["score"].as_f64().unwrap() > found[1]["score"].as_f64().unwrap());
    assert!(found[0]["excerpt"].as_str().unwrap().contains("Postgres passwords"), "{found:?}");
    for mode in ["SEMANTIC", "HYBRID", "KEYWORD"] {
        let none = hits(&running, json!({ "q": "cache", "mode": mode, "tags": ["people"] })).await;
        assert!(none.is_empty(), "{mode}: {none:?}");
    }

    let status = running
        .graphql(
            "{ knowledgeStatus { semantic model reason documents chunks embeddedChunks pendingDocuments } }",
            json!({}),
        )
        .await;
    let status = &status["data"]["knowledgeStatus"];
    assert_eq!(status["semantic"], true, "{status}");
    assert!(status["model"].as_str().unwrap().starts_with("all-MiniLM-L6-v2@"), "{status}");
    assert_eq!((status["documents"].as_i64(), status["pendingDocuments"].as_i64()), (Some(5), Some(0)), "{status}");
    assert_eq!(status["chunks"], status["embeddedChunks"], "{status}");
    let metrics = reqwest::get(running.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("devart_projection_lag{projection=\"embeddings\"}"), "{metrics}");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn changes_reach_semantic_search_and_a_rebuild_of_the_vectors_gives_the_same_results() {
    let env = TestEnv::new().await;
    let running = env.start_with(&with_model(&env), ALL).await;
    let credentials = id_of(&add(&running, None, json!({ "title": "Credentials", "content": CREDENTIALS })).await);
    let cache = id_of(&add(&running, None, json!({ "title": "Cache", "content": CACHE, "tags": ["ops"] })).await);
    searchable(&running, &credentials).await;
    searchable(&running, &cache).await;
    let paraphrase = "how often are the SQL login keys renewed";
    assert_eq!(by_mode(&running, paraphrase, "SEMANTIC").await.first(), Some(&credentials));

    // The content changes: semantic search follows within a second of the change.
    let update =
        "mutation($id: ID!, $content: String!) { updateDocument(id: $id, input: { content: $content }) { version } }";
    let content = "# Lunch\n\nThe canteen serves soup and bread from noon until two.";
    let body = running.graphql(update, json!({ "id": credentials, "content": content })).await;
    assert_eq!(body["data"]["updateDocument"]["version"], 2, "{body}");
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(1), || async {
        let hits = hits(&running, json!({ "q": "when is food served at midday", "mode": "SEMANTIC" })).await;
        (hits
            .first()
            .map(|h| h["document"]["id"] == credentials.as_str() && h["excerpt"].as_str().unwrap().contains("soup"))
            == Some(true))
        .then_some(())
    })
    .await;
    eprintln!("an update reached semantic search in {:?}", started.elapsed());
    // Retagged: the tag filter of semantic search follows.
    let tag = "mutation($id: ID!) { tagDocument(id: $id, tags: [\"food\"]) { version } }";
    running.graphql(tag, json!({ "id": credentials })).await;
    eventually(Duration::from_secs(1), || async {
        let hits = hits(&running, json!({ "q": "lunch", "mode": "SEMANTIC", "tags": ["food"] })).await;
        (ids(&hits) == [credentials.as_str()]).then_some(())
    })
    .await;

    // A rebuild of the vectors from the store ranks the same hits with the same scores.
    let queries = ["when is food served at midday", "a full disk in the cache", "ERR_DEVART_4217"];
    let mut before = Vec::new();
    for q in queries {
        before.push(hits(&running, json!({ "q": q, "mode": "SEMANTIC" })).await);
    }
    env.sequence_all().await;
    env.wait_projected("embeddings", env.store.head().await.unwrap().0).await;
    let pool = devart_embed::EmbedPool::start(
        devart_embed::Embedder::load_default().unwrap(),
        devart_embed::PoolConfig::default(),
    )
    .unwrap();
    let projection = devart_projections::embeddings::EmbeddingsProjection::new(std::sync::Arc::new(pool));
    devart_projections::rebuild::rebuild(&env.pool, &env.store, &projection, |_, _| {}).await.unwrap();
    for (q, before) in queries.iter().zip(&before) {
        let after = hits(&running, json!({ "q": q, "mode": "SEMANTIC" })).await;
        let key = |hits: &[Value]| -> Vec<(String, i64, i64)> {
            hits.iter()
                .map(|h| {
                    let score = (h["score"].as_f64().unwrap() * 1e5).round() as i64;
                    (h["document"]["id"].as_str().unwrap().to_owned(), h["chunk"]["ordinal"].as_i64().unwrap(), score)
                })
                .collect()
        };
        assert_eq!(key(&after), key(before), "{q}");
    }

    // A vector whose chunk text is not the one the chunks' read model holds (the two read models
    // at different versions of a document) is left out rather than shown with that other text.
    let near_cache = json!({ "q": "a full disk in the cache", "mode": "SEMANTIC" });
    assert_eq!(ids(&hits(&running, near_cache.clone()).await).first(), Some(&cache.as_str()));
    sqlx::query("update knowledge_chunks set text = text || ' (rewritten)' where document_id = $1::uuid")
        .bind(&cache)
        .execute(&env.pool)
        .await
        .unwrap();
    assert!(!ids(&hits(&running, near_cache).await).contains(&cache.as_str()));

    // Removed: gone from semantic search within a second.
    let remove = "mutation($id: ID!) { removeDocument(id: $id) }";
    running.graphql(remove, json!({ "id": cache })).await;
    eventually(Duration::from_secs(1), || async {
        let hits = hits(&running, json!({ "q": "a full disk in the cache", "mode": "SEMANTIC" })).await;
        (!ids(&hits).contains(&cache.as_str())).then_some(())
    })
    .await;
    let left: i64 = sqlx::query_scalar("select count(*) from knowledge_vectors where document_id = $1::uuid")
        .bind(&cache)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_the_model_keyword_search_works_and_semantic_search_says_how_to_install_it() {
    let env = TestEnv::new().await;
    let mut config = with_model(&env);
    config.knowledge.model_dir = std::env::temp_dir().join(format!("devart-no-model-{}", uuid::Uuid::new_v4()));
    let running = env.start_with(&config, ALL).await;
    let id = id_of(&add(&running, None, json!({ "title": "Deploys", "content": DEPLOYS })).await);
    eventually(Duration::from_secs(5), || async {
        (!hits(&running, json!({ "q": "rollback" })).await.is_empty()).then_some(())
    })
    .await;
    let body = running.graphql(STATUS, json!({ "id": id })).await;
    assert_eq!(body["data"]["document"]["searchStatus"], "KEYWORD_ONLY", "{body}");
    for mode in ["SEMANTIC", "HYBRID"] {
        let body = running.graphql(SEARCH, json!({ "q": "rollback", "mode": mode })).await;
        assert_eq!(code(&body), "UNAVAILABLE", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("scripts/models") && message.contains("devart-no-model-"), "{message}");
    }
    let status = running.graphql("{ knowledgeStatus { semantic reason } }", json!({})).await;
    assert_eq!(status["data"]["knowledgeStatus"]["semantic"], false, "{status}");
    assert!(status["data"]["knowledgeStatus"]["reason"].as_str().unwrap().contains("scripts/models"), "{status}");
    // The rest of devart works: a task is created and claimed as ever.
    let created = running.graphql("mutation { createTask(input: { title: \"t\" }) { id } }", json!({})).await;
    assert!(created["data"]["createTask"]["id"].is_string(), "{created}");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_folder_of_markdown_is_imported_once_and_documents_travel_in_export_and_import() {
    let env = TestEnv::new().await;
    let folder = std::env::temp_dir().join(format!("devart-kb-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(folder.join("adr")).unwrap();
    std::fs::create_dir_all(folder.join("runbooks")).unwrap();
    let adr = folder.join("adr/0001-use-postgres.md");
    std::fs::write(&adr, "---\ntitle: Use Postgres for the event store\ntags: [adr, storage]\n---\n# ADR 1\n\nWe keep every event in Postgres.\n").unwrap();
    std::fs::write(folder.join("runbooks/deploys.md"), DEPLOYS).unwrap();
    std::fs::write(folder.join("runbooks/notes.txt"), "not markdown").unwrap();
    std::fs::write(folder.join(".draft.md"), "# hidden").unwrap();
    std::fs::write(folder.join("broken.md"), [0xff, 0xfe, 0x00, 0x41]).unwrap();

    let commands = env.commands();
    let import = |tags: &'static [&'static str]| {
        let (commands, folder) = (commands.clone(), folder.clone());
        async move {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let mut calls = 0;
            let report = devart::knowledge::import_folder(&commands, &folder, "docs", &tags, |done, total, _| {
                calls += 1;
                assert!(done <= total && total == 3);
            })
            .await
            .unwrap();
            assert_eq!(calls, 3);
            report
        }
    };
    let first = import(&["imported"]).await;
    assert_eq!((first.added, first.updated, first.unchanged), (2, 0, 0), "{first:?}");
    assert_eq!(first.skipped.len(), 1);
    assert!(first.skipped[0].0.ends_with("broken.md") && first.skipped[0].1.contains("UTF-8"), "{first:?}");
    // Again: nothing changes. Then one file changes: only it is updated.
    let again = import(&["imported"]).await;
    assert_eq!((again.added, again.updated, again.unchanged), (0, 0, 2), "{again:?}");
    std::fs::write(&adr, "---\ntitle: Use Postgres for the event store\ntags: [adr]\n---\n# ADR 1\n\nWe keep every event in Postgres 15.\n").unwrap();
    let changed = import(&["imported"]).await;
    assert_eq!((changed.added, changed.updated, changed.unchanged), (0, 1, 1), "{changed:?}");

    let running = env.start_with(&with_model(&env), ALL).await;
    let id = devart::knowledge::imported_id("docs/adr/0001-use-postgres.md").to_string();
    searchable(&running, &id).await;
    let body = running
        .graphql("query($id: ID!) { document(id: $id) { title tags source version content } }", json!({ "id": id }))
        .await;
    let document = &body["data"]["document"];
    assert_eq!(document["title"], "Use Postgres for the event store", "{body}");
    assert_eq!(document["tags"], json!(["adr", "imported"]), "{body}");
    assert_eq!(document["source"], "docs/adr/0001-use-postgres.md", "{body}");
    assert!(document["content"].as_str().unwrap().starts_with("# ADR 1"), "{body}");
    let found = by_mode(&running, "which database holds our history of changes", "SEMANTIC").await;
    assert_eq!(found.first(), Some(&id), "{found:?}");
    running.stop().await;

    // Exported and imported elsewhere: the same documents, and vectors made again there.
    env.sequence_all().await;
    let mut exported = Vec::new();
    devart::portable::export(&env.config, 1, None, &mut exported).await.unwrap();
    let target = TestEnv::new().await;
    devart::portable::import(&target.config, &exported[..]).await.unwrap();
    assert_eq!(target.checksum("documents").await, env.checksum("documents").await);
    assert_eq!(target.checksum("knowledge_chunks").await, env.checksum("knowledge_chunks").await);
    let vectors: i64 =
        sqlx::query_scalar("select count(*) from knowledge_vectors").fetch_one(&target.pool).await.unwrap();
    assert_eq!(vectors, 0, "vectors are not exported");
    let elsewhere = target.start_with(&with_model(&target), ALL).await;
    searchable(&elsewhere, &id).await;
    let found = by_mode(&elsewhere, "which database holds our history of changes", "SEMANTIC").await;
    assert_eq!(found.first(), Some(&id), "{found:?}");

    elsewhere.stop().await;
    target.cleanup().await;
    env.cleanup().await;
    std::fs::remove_dir_all(&folder).unwrap();
}

/// The local model, counting the texts it is given.
#[derive(Debug)]
struct Counting {
    pool: devart_embed::EmbedPool,
    texts: std::sync::atomic::AtomicUsize,
}

impl devart_embed::Embeddings for Counting {
    fn model(&self) -> &str {
        self.pool.version()
    }

    fn embed(
        &self,
        texts: Vec<String>,
    ) -> futures::future::BoxFuture<'_, Result<Vec<devart_embed::Embedding>, devart_embed::EmbedError>> {
        self.texts.fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
        devart_embed::Embeddings::embed(&self.pool, texts)
    }
}

#[tokio::test]
async fn an_edit_embeds_again_only_the_chunks_it_changed() {
    let env = TestEnv::new().await;
    let counting = std::sync::Arc::new(Counting {
        pool: devart_embed::EmbedPool::start(
            devart_embed::Embedder::load_default().unwrap(),
            devart_embed::PoolConfig::default(),
        )
        .unwrap(),
        texts: Default::default(),
    });
    let projection = devart_projections::embeddings::EmbeddingsProjection::new(counting.clone());
    let sections: Vec<String> =
        (0..6).map(|i| format!("## Part {i}\n\nThe {i}th part says something of its own.\n")).collect();
    let content = format!("# Guide\n\n{}", sections.concat());
    let id = uuid::Uuid::now_v7();
    let commands = env.commands();
    let document = devart_commands::documents::NewDocument {
        title: devart_domain::document::Title::parse("Guide").unwrap(),
        content: devart_domain::document::Content::parse(&content).unwrap(),
        tags: devart_domain::document::Tags::parse::<&str>(&[]).unwrap(),
        source: devart_domain::document::Source::parse("").unwrap(),
        metadata: Default::default(),
    };
    commands.documents().add(id, document, &env.context()).await.unwrap();
    let apply_new = || async {
        env.sequence_all().await;
        let at = devart_projections::worker::checkpoint(&env.pool, "embeddings").await.unwrap();
        let events = env.store.read_all(at, None, 100).await.unwrap();
        devart_projections::worker::apply_in_order(&env.pool, &env.store, &projection, &events).await.unwrap();
    };
    apply_new().await;
    let chunks = devart_domain::document::chunks::split(&content).len();
    assert_eq!(counting.texts.load(std::sync::atomic::Ordering::SeqCst), chunks);

    // One part changes: only its chunk is embedded again; the others keep their vectors.
    let edited = content.replace("The 3th part says something of its own.", "The third part was rewritten.");
    let update = devart_domain::document::UpdateDocument {
        title: None,
        content: Some(devart_domain::document::Content::parse(&edited).unwrap()),
        source: None,
        metadata: None,
    };
    commands.documents().update(id, update, None, &env.context()).await.unwrap();
    apply_new().await;
    assert_eq!(counting.texts.load(std::sync::atomic::Ordering::SeqCst), chunks + 1);
    let (vectors, version): (i64, i64) = sqlx::query_as(
        "select (select count(*) from knowledge_vectors where document_id = $1), \
                (select version from knowledge_embedded where document_id = $1)",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((vectors, version), (chunks as i64, 2));
    env.cleanup().await;
}

#[tokio::test]
async fn document_updates_say_when_keyword_and_then_semantic_search_have_a_change() {
    let env = TestEnv::new().await;
    let running = env.start_with(&with_model(&env), ALL).await;
    let mut socket = crate::support::WsClient::connect(&running, &env.token(devart_gateway::Role::Viewer)).await;
    socket.subscribe("docs", "subscription { documentUpdates { id version removed embedded } }", json!({})).await;
    let id = id_of(&add(&running, None, json!({ "title": "Cache", "content": CACHE })).await);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let data = socket.next_data(Duration::from_secs(20)).await;
        let change = &data["documentUpdates"];
        assert_eq!(change["id"], id.as_str(), "{data}");
        seen.push((change["version"].as_i64(), change["removed"].as_bool(), change["embedded"].as_bool()));
    }
    seen.sort();
    assert_eq!(seen, [(Some(1), Some(false), Some(false)), (Some(1), Some(false), Some(true))]);

    // As it stood before an edit: its content then, its chunks then, who changed it, no status.
    let update = "mutation($id: ID!) { updateDocument(id: $id, input: { content: \"# Other\\n\\nNew text.\" }) { version updatedBy } }";
    let body = running.graphql(update, json!({ "id": id })).await;
    assert_eq!(body["data"]["updateDocument"]["version"], 2, "{body}");
    let at = "query($id: ID!) { documentAt(id: $id, at: \"1\") { version updatedBy searchStatus chunks { text } } }";
    let position: i64 = sqlx::query_scalar("select min(position) from events where stream_id = $1")
        .bind(format!("document-{id}"))
        .fetch_one(&env.pool)
        .await
        .unwrap_or(1);
    let body = running.graphql(&at.replace("\"1\"", &format!("\"{position}\"")), json!({ "id": id })).await;
    let past = &body["data"]["documentAt"];
    assert_eq!(past["version"], 1, "{body}");
    assert_eq!(past["searchStatus"], Value::Null, "{body}");
    assert!(past["chunks"][0]["text"].as_str().unwrap().contains("ERR_DEVART_4217"), "{body}");
    assert!(!past["updatedBy"].as_str().unwrap().is_empty(), "{body}");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn semantic_search_through_an_openai_compatible_api_finds_documents_by_meaning() {
    use devart_testkit::fake_openai::FAKE_KEY;
    use devart_testkit::{FakeEmbeddingsApi, FakeFailure};

    let fake = FakeEmbeddingsApi::start().await.unwrap();
    // The first request is held back by the API's rate limit: the chunks are embedded after it.
    fake.fail_next(1, FakeFailure::RateLimited { retry_after_secs: 1 });
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.knowledge =
        devart::knowledge::KnowledgeConfig::openai(&fake.base_url, "text-embedding-3-small", Some(FAKE_KEY));
    let running = env.start_with(&config, ALL).await;
    let mut docs = Vec::new();
    for (title, content) in
        [("Credentials", CREDENTIALS), ("Cache", CACHE), ("Onboarding", ONBOARDING), ("Billing", BILLING)]
    {
        docs.push(id_of(&add(&running, None, json!({ "title": title, "content": content, "tags": ["ops"] })).await));
    }
    for id in &docs {
        searchable(&running, id).await;
    }

    // Words of the document and one it lacks: keyword search (every word) finds nothing, semantic
    // search finds it first, and hybrid too.
    let query = "vault revoked passwords quarterly";
    assert!(hits(&running, json!({ "q": query })).await.is_empty());
    assert_eq!(by_mode(&running, query, "SEMANTIC").await.first(), Some(&docs[0]));
    assert_eq!(by_mode(&running, query, "HYBRID").await.first(), Some(&docs[0]));

    let status = running.graphql("{ knowledgeStatus { semantic model embeddedChunks chunks } }", json!({})).await;
    let status = &status["data"]["knowledgeStatus"];
    assert_eq!(status["semantic"], true, "{status}");
    let host = fake.base_url.trim_start_matches("http://");
    assert_eq!(status["model"], format!("text-embedding-3-small@{host}"), "{status}");
    assert_eq!(status["chunks"], status["embeddedChunks"], "{status}");

    // Everything went through the API, with the key, asking for 384 dimensions; the 429 was waited out.
    let seen = fake.requests();
    assert_eq!(seen[0].status, 429);
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1), "{:?}", seen[1].at - seen[0].at);
    for request in &seen {
        assert_eq!(request.authorization.as_deref(), Some(format!("Bearer {FAKE_KEY}").as_str()));
        assert_eq!(request.dimensions, Some(devart_embed::DIMENSIONS as u64));
    }
    assert!(seen.iter().any(|request| request.inputs == [query]), "the query was embedded by the API");

    // The API failing: a search is retried a little, then answers UNAVAILABLE without the key.
    let before = fake.request_count();
    fake.fail_next(10, FakeFailure::ServerError);
    let body = running.graphql(SEARCH, json!({ "q": query, "mode": "SEMANTIC" })).await;
    assert_eq!(code(&body), "UNAVAILABLE", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("answered 500") && !message.contains(FAKE_KEY), "{message}");
    assert_eq!(fake.request_count() - before, 3, "two retries");

    running.stop().await;
    env.cleanup().await;
}
