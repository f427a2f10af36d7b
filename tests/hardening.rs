//! Hostile or careless input: a query nested 50 deep, a 10 MB request and 1,000 mutations a second
//! from one identity are each refused with a clear error, and others keep being served.

use std::time::Duration;

use devart::Role;
use serde_json::{json, Value};

use crate::support::TestEnv;

#[tokio::test]
async fn deep_queries_huge_requests_and_floods_are_refused_and_others_are_served() {
    let env = TestEnv::new().await;
    // A lower limit than the default (300 a second), so that even a slow build floods it.
    let mut config = env.config.clone();
    config.limits.mutations_per_second = 100;
    config.limits.requests_per_second = 0;
    let running = env.start_with(&config, &[Role::Gateway, Role::Relay]).await;
    let http = reqwest::Client::new();

    // 50 levels of nesting (task → parent → parent …).
    let mut query = String::from("id");
    for _ in 0..50 {
        query = format!("parent {{ {query} }}");
    }
    let deep = running.graphql(&format!("{{ tasks {{ edges {{ node {{ {query} }} }} }} }}"), json!({})).await;
    let message = deep["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("{deep}"));
    assert!(message.contains("nested too deep") || message.contains("depth"), "{deep}");
    assert_eq!(deep["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // 10 MB.
    let huge = json!({ "query": "{ me { subject } }", "variables": { "pad": "x".repeat(10 << 20) } });
    let response = http.post(running.url("/graphql")).bearer_auth(&running.token).json(&huge).send().await.unwrap();
    assert_eq!(response.status(), 413);

    // 1,000 mutations in about a second from one identity: most are refused with 429 and a
    // Retry-After; another identity is served meanwhile.
    let flood = env.token(devart_gateway::Role::Supervisor);
    let create = json!({ "query": "mutation { createTask(input: { title: \"flood\" }) { id } }" });
    let sends = (0..1_000).map(|_| {
        let (http, url, flood, create) = (http.clone(), running.url("/graphql"), flood.clone(), create.clone());
        async move {
            let response = http.post(url).bearer_auth(flood).json(&create).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    });
    let started = std::time::Instant::now();
    let answers = futures::future::join_all(sends).await;
    let elapsed = started.elapsed();
    let accepted = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(accepted + refused.len(), 1_000);
    // A burst of 200 plus 100 a second for the time it took.
    let allowed = 200.0 + 100.0 * elapsed.as_secs_f64();
    assert!((accepted as f64) <= allowed + 1.0, "{accepted} accepted in {elapsed:?}");
    assert!(!refused.is_empty(), "none refused in {elapsed:?}");
    let (_, retry_after, body) = refused[0];
    assert!(retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    let other = running.graphql("mutation { createTask(input: { title: \"meanwhile\" }) { id } }", json!({})).await;
    assert!(other["data"]["createTask"]["id"].is_string(), "{other}");
    // Reads are not limited.
    assert!(running.graphql_as(&flood, "{ me { subject } }", json!({})).await["data"]["me"].is_object());
    tokio::time::sleep(Duration::from_millis(10)).await;
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn introspection_can_be_switched_off_and_cors_allows_only_the_listed_origins() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.limits.introspection = false;
    config.limits.cors_origins = vec!["https://ops.example.com".into()];
    let running = env.start_with(&config, &[Role::Gateway]).await;
    let schema = running.graphql("{ __schema { queryType { name } } }", json!({})).await;
    assert!(schema["data"]["__schema"].is_null(), "{schema}");
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, running.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let allowed = preflight("https://ops.example.com").await.unwrap();
    assert_eq!(allowed.headers().get("access-control-allow-origin").unwrap(), "https://ops.example.com");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    running.stop().await;
    env.cleanup().await;
}
