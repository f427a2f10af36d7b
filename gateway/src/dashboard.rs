//! The supervisors' dashboard: the single-page app built into `web/dist`, served at every path the
//! API does not use.
//!
//! `index.html` answers `/` and every deep link (the app routes in the browser), revalidated on
//! each load (`no-cache` and an `ETag`; 304 when it did not change). The files under `/assets/` are
//! named by a hash of their content, so they never change under their name and are cached for a
//! year; an unknown one is a 404, never `index.html` (a stale page asking for an old script must
//! not be handed HTML). A file at the top of `web/dist` (a favicon) answers as itself, revalidated
//! like `index.html`. Every response carries the dashboard's Content-Security-Policy: the app runs
//! nothing inline and loads nothing from another origin.
//!
//! Release builds embed `web/dist` as it was when they were built (`build.rs` has them rebuilt
//! when it changes); debug builds read it from disk as they run. `DEVART_WEB_DIR` serves another
//! directory instead. Without an `index.html`, `/` answers a page that says how to build one.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{self, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::App;

/// Where the dashboard comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DashboardSettings {
    /// A directory to serve the dashboard from (the output of `npm run build` in `web/`) instead
    /// of the one built into devart.
    #[arg(long = "web-dir", env = "DEVART_WEB_DIR", value_name = "DIR", global = true)]
    pub web_dir: Option<PathBuf>,
}

/// The policy of every dashboard response: the app's own scripts, styles, images and fonts, its
/// own API, and nothing else; no inline script or style, no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Hashed files: their name changes whenever their content does.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Files that keep their name: asked again each time, answered with 304 while unchanged.
const REVALIDATE: &str = "no-cache";

/// The paths the API answers; below them the dashboard answers nothing (404), not `index.html`.
const API_PATHS: [&str; 6] = ["/graphql", "/session", "/healthz", "/readyz", "/metrics", "/assets"];

/// `web/dist` as built into this binary (embedded in release builds, read from disk in debug
/// ones); empty when it was not built.
#[derive(rust_embed::RustEmbed)]
#[folder = "../web/dist/"]
#[allow_missing = true]
struct Built;

/// The dashboard's files: built in, or from a directory named at start.
#[derive(Debug, Clone)]
pub enum Dashboard {
    Built,
    Directory(Arc<Path>),
}

/// One file and its entity tag.
struct File {
    body: Cow<'static, [u8]>,
    etag: String,
}

impl Dashboard {
    pub fn new(settings: &DashboardSettings) -> Dashboard {
        match &settings.web_dir {
            Some(dir) => Dashboard::Directory(dir.as_path().into()),
            None => Dashboard::Built,
        }
    }

    /// The file at `path` (relative, `/`-separated), if there is one; never one outside the
    /// dashboard's directory.
    async fn file(&self, path: &str) -> Option<File> {
        if !path.split('/').all(is_plain_name) {
            return None;
        }
        match self {
            Dashboard::Built => {
                Built::get(path).map(|file| File { etag: entity_tag(&file.metadata.sha256_hash()), body: file.data })
            }
            Dashboard::Directory(dir) => {
                let body = tokio::fs::read(dir.join(path)).await.ok()?;
                Some(File { etag: entity_tag(&Sha256::digest(&body)), body: body.into() })
            }
        }
    }
}

/// A path segment that names a file or directory inside the dashboard: not empty, not `.` or
/// `..`, not hidden, without a separator of another system.
fn is_plain_name(segment: &str) -> bool {
    !segment.is_empty() && !segment.starts_with('.') && !segment.contains(['\\', '\0', ':'])
}

/// A strong entity tag from a content digest.
fn entity_tag(digest: &[u8]) -> String {
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for this header).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        },
    )
}

/// The headers every dashboard response carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The media type of `path`, with the charset for text.
fn content_type(path: &str) -> HeaderValue {
    let media = mime_guess::from_path(path).first_or_octet_stream();
    let textual = media.type_() == mime_guess::mime::TEXT || media.subtype() == mime_guess::mime::JAVASCRIPT;
    let value = if textual { format!("{media}; charset=utf-8") } else { media.to_string() };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `file` as the answer to a request with `headers`: 304 when the client holds it already.
fn serve(file: File, path: &str, cache: &'static str, headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&file.etag).expect("an entity tag is a header value");
    let mut response = if not_modified(headers, &file.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(file.body));
        response.headers_mut().insert(header::CONTENT_TYPE, content_type(path));
        response
    };
    response.headers_mut().insert(header::ETAG, etag);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secured(response)
}

fn not_found() -> Response {
    secured((StatusCode::NOT_FOUND, "not found").into_response())
}

/// `GET /assets/<file>`: a hashed file of the build, or 404.
pub async fn asset(State(app): State<App>, extract::Path(path): extract::Path<String>, headers: HeaderMap) -> Response {
    let path = format!("assets/{path}");
    match app.dashboard.file(&path).await {
        Some(file) => serve(file, &path, IMMUTABLE, &headers),
        None => not_found(),
    }
}

/// Every other path: a file at the top of the build, or `index.html` (the app finds its page in
/// the path), or, when the dashboard was not built, the page that says how to build it.
pub async fn page(State(app): State<App>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = secured(StatusCode::METHOD_NOT_ALLOWED.into_response());
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = uri.path();
    if API_PATHS.iter().any(|api| path.strip_prefix(api).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))) {
        return not_found();
    }
    let name = path.trim_start_matches('/');
    if !name.is_empty() && !name.contains('/') {
        if let Some(file) = app.dashboard.file(name).await {
            return serve(file, name, REVALIDATE, &headers);
        }
    }
    match app.dashboard.file("index.html").await {
        Some(file) => serve(file, "index.html", REVALIDATE, &headers),
        None => not_built(),
    }
}

/// What `/` answers when there is no dashboard to serve.
fn not_built() -> Response {
    let mut response = (StatusCode::OK, axum::response::Html(NOT_BUILT)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secured(response)
}

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>devart: the dashboard is not built</title>
</head>
<body>
<main>
<h1>The dashboard is not built</h1>
<p>This devart was built without its dashboard: <code>web/dist</code> did not exist. Build the
dashboard, then devart again:</p>
<pre><code>scripts/web
cargo build --release</code></pre>
<p><code>scripts/web</code> runs <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>.
Or serve a built dashboard from a directory with <code>DEVART_WEB_DIR</code>.</p>
<p>The API answers meanwhile: <a href="/graphql">/graphql</a> (GraphiQL in a browser).</p>
</main>
</body>
</html>
"#;

/// Whether this binary was built with the dashboard in it (`web/dist` existed at build time; in a
/// debug build, whether it exists now).
pub fn built_in() -> bool {
    Built::get("index.html").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_reach_the_files() {
        for path in ["index.html", "assets/index-4f2a.js", "favicon.svg"] {
            assert!(path.split('/').all(is_plain_name), "{path}");
        }
        for path in ["../secret", "assets/../../etc/passwd", "assets//x.js", ".env", "assets/.hidden", "a\\b", "c:x"] {
            assert!(!path.split('/').all(is_plain_name), "{path}");
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_any() {
        let etag = entity_tag(&[0xab; 32]);
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            not_modified(&headers, &etag)
        };
        assert!(with(&etag));
        assert!(with(&format!("\"other\", W/{etag}")));
        assert!(with("*"));
        assert!(!with("\"other\""));
        assert!(!not_modified(&HeaderMap::new(), &etag));
    }

    #[test]
    fn text_is_served_as_utf8_and_the_rest_by_its_type() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/app-1a2b.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("assets/app-1a2b.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("assets/font.woff2"), "font/woff2");
    }

    #[test]
    fn the_page_for_a_missing_dashboard_runs_nothing_inline() {
        assert!(!NOT_BUILT.contains("<script") && !NOT_BUILT.contains("<style") && !NOT_BUILT.contains("style="));
        assert!(NOT_BUILT.contains("scripts/web") && NOT_BUILT.contains("npm ci &amp;&amp; npm run build"));
    }
}
