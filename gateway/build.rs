//! Rebuilds the gateway when the dashboard's build output changes, so that a release binary embeds
//! `web/dist` as it is when devart is built: the embedding macro cannot tell cargo about files
//! that appear after the last build (the first `web/dist` of all, or a new hashed asset).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Debug builds read the dashboard from disk when they run: nothing to rebuild for.
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let dist = web.join("dist");
    // A directory is watched with everything in it; `web/` stands in until `dist` is built.
    for watched in [&dist, &web] {
        if watched.exists() {
            println!("cargo:rerun-if-changed={}", watched.display());
            return;
        }
    }
}
