//! The dashboard as a browser meets it: the single-page app served at every path the API does not
//! use, with its caching and security headers, and the page that says how to build it when it was
//! not built.

use std::path::PathBuf;

use devart::Role;
use reqwest::header;
use reqwest::StatusCode;

use crate::support::{Running, TestEnv};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str =
    "<!doctype html><html><head><script type=\"module\" src=\"/assets/index-3f9a1c.js\"></script></head></html>";
const SCRIPT: &str = "console.log('devart');";

/// A directory to serve the dashboard from, removed when dropped.
struct WebDir(PathBuf);

impl WebDir {
    /// A directory that does not exist: no dashboard was built.
    fn missing() -> WebDir {
        WebDir(std::env::temp_dir().join(format!("devart-web-{}", uuid::Uuid::new_v4())))
    }

    /// A built dashboard: `index.html`, a hashed script and a favicon.
    fn built() -> WebDir {
        let dir = WebDir::missing();
        std::fs::create_dir_all(dir.0.join("assets")).unwrap();
        std::fs::write(dir.0.join("index.html"), INDEX).unwrap();
        std::fs::write(dir.0.join("assets/index-3f9a1c.js"), SCRIPT).unwrap();
        std::fs::write(dir.0.join("favicon.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        dir
    }
}

impl Drop for WebDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn serving(env: &TestEnv, dir: &WebDir) -> Running {
    let mut config = env.config.clone();
    config.limits.dashboard.web_dir = Some(dir.0.clone());
    env.start_with(&config, &[Role::Gateway]).await
}

fn header<'a>(response: &'a reqwest::Response, name: header::HeaderName) -> &'a str {
    response.headers().get(&name).map_or("", |v| v.to_str().unwrap())
}

/// The headers every dashboard response carries.
fn assert_secured(response: &reqwest::Response) {
    assert_eq!(header(response, header::CONTENT_SECURITY_POLICY), CSP, "{}", response.url());
    assert_eq!(header(response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header(response, header::REFERRER_POLICY), "no-referrer");
}

#[tokio::test]
async fn a_dashboard_never_built_answers_how_to_build_it() {
    let env = TestEnv::new().await;
    let dir = WebDir::missing();
    let running = serving(&env, &dir).await;
    let http = reqwest::Client::new();

    for path in ["/", "/tasks/42"] {
        let response = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_secured(&response);
        assert!(header(&response, header::CONTENT_TYPE).starts_with("text/html"));
        let page = response.text().await.unwrap();
        assert!(page.contains("scripts/web") && page.contains("npm ci"), "{page}");
        assert!(!page.contains("<script") && !page.contains("style="), "nothing inline: {page}");
    }
    let missing = http.get(running.url("/assets/index-3f9a1c.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The API is where it was.
    let health = http.get(running.url("/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_dashboard_answers_every_page_and_caches_what_it_may() {
    let env = TestEnv::new().await;
    let dir = WebDir::built();
    let running = serving(&env, &dir).await;
    let http = reqwest::Client::new();

    // `/` and deep links answer index.html, revalidated each time.
    let index = http.get(running.url("/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_secured(&index);
    assert_eq!(header(&index, header::CACHE_CONTROL), "no-cache");
    assert_eq!(header(&index, header::CONTENT_TYPE), "text/html; charset=utf-8");
    let etag = header(&index, header::ETAG).to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "a strong entity tag: {etag:?}");
    assert_eq!(index.text().await.unwrap(), INDEX);
    for path in ["/tasks/0192f0a4-0000-7000-8000-000000000000", "/agents?status=active", "/audit/events/"] {
        let deep = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(deep.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&deep, header::ETAG), etag, "{path}");
        assert_eq!(deep.text().await.unwrap(), INDEX, "{path}");
    }

    // Unchanged: 304, with nothing in the body; changed: the new page and another tag.
    let unchanged = http.get(running.url("/tasks")).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&unchanged, header::ETAG), etag);
    assert_secured(&unchanged);
    assert!(unchanged.bytes().await.unwrap().is_empty());
    std::fs::write(dir.0.join("index.html"), format!("{INDEX}\n")).unwrap();
    let changed = http.get(running.url("/")).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, header::ETAG), etag);

    // Hashed assets are cached for good; an unknown one is a 404, not the page.
    let script = http.get(running.url("/assets/index-3f9a1c.js")).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_secured(&script);
    assert_eq!(header(&script, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    assert_eq!(header(&script, header::CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(script.text().await.unwrap(), SCRIPT);
    for path in ["/assets/index-000000.js", "/assets/", "/assets/..%2Findex.html", "/assets/.env"] {
        let missing = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // A file at the top answers as itself; HEAD answers as GET does, without the body.
    let icon = http.get(running.url("/favicon.svg")).send().await.unwrap();
    assert_eq!(header(&icon, header::CONTENT_TYPE), "image/svg+xml");
    let head = http.head(running.url("/assets/index-3f9a1c.js")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    assert!(head.bytes().await.unwrap().is_empty());
    let head = http.head(running.url("/tasks")).send().await.unwrap();
    assert_eq!((head.status(), header(&head, header::ETAG).is_empty()), (StatusCode::OK, false));

    // The dashboard only reads.
    let post = http.post(running.url("/tasks")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The API keeps its paths: GraphQL, GraphiQL for a browser, health; none of them is the page.
    let graphql = running.graphql("{ me { role } }", serde_json::json!({})).await;
    assert_eq!(graphql["data"]["me"]["role"], "ADMIN", "{graphql}");
    let graphiql = http.get(running.url("/graphql")).header(header::ACCEPT, "text/html").send().await.unwrap();
    let graphiql = graphiql.text().await.unwrap();
    assert!(graphiql.to_lowercase().contains("graphiql") && graphiql != INDEX);
    for path in ["/graphql/x", "/session/x", "/metrics/x"] {
        let below = http.get(running.url(path)).send().await.unwrap();
        assert_eq!(below.status(), StatusCode::NOT_FOUND, "{path}");
    }
    running.stop().await;
    env.cleanup().await;
}
