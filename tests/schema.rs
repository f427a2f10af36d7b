//! `schema.graphql` is generated from the code; this fails when it drifts (and rewrites it when
//! `DEVART_BLESS=1`).

#[test]
fn schema_graphql_matches_the_code() {
    let sdl = devart_gateway::schema::build(None).sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    if std::env::var("DEVART_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(path, &sdl).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == sdl,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql` (or DEVART_BLESS=1 cargo test)"
    );
}
