use super::*;

fn refusal(text: &str) -> Close {
    parse(text).expect_err(text)
}

#[test]
fn messages_outside_the_protocol_are_invalid() {
    for text in [
        "not json",
        "[1, 2]",
        r#"{"payload": {}}"#,
        r#"{"type": 7}"#,
        r#"{"type": "start", "id": "1"}"#,
        r#"{"type": "connection_init", "payload": "token"}"#,
        r#"{"type": "ping", "payload": [1]}"#,
        r#"{"type": "subscribe", "payload": {"query": "{ me { subject } }"}}"#,
        r#"{"type": "subscribe", "id": "", "payload": {"query": "{ me { subject } }"}}"#,
        r#"{"type": "subscribe", "id": 1, "payload": {"query": "{ me { subject } }"}}"#,
        r#"{"type": "subscribe", "id": "1"}"#,
        r#"{"type": "subscribe", "id": "1", "payload": {"query": 3}}"#,
        r#"{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "variables": [1]}}"#,
        r#"{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "operationName": 1}}"#,
        r#"{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "extensions": "x"}}"#,
        r#"{"type": "complete"}"#,
        r#"{"type": "next", "id": "1", "payload": {}}"#,
        r#"{"type": "connection_ack"}"#,
    ] {
        assert_eq!(refusal(text).code(), 4400, "{text}");
    }
    assert_eq!(
        refusal(r#"{"type": "error", "id": "1", "payload": []}"#).to_string(),
        "`error` is sent by the server only"
    );
}

#[test]
fn messages_of_the_protocol_are_read() {
    let init = parse(r#"{"type": "connection_init", "payload": {"token": "t"}}"#).unwrap();
    assert!(matches!(init, ClientMessage::ConnectionInit { payload } if payload["token"] == "t"));
    assert!(matches!(parse(r#"{"type": "connection_init"}"#).unwrap(), ClientMessage::ConnectionInit { .. }));
    let ping = parse(r#"{"type": "ping", "payload": {"n": 1}}"#).unwrap();
    assert!(matches!(ping, ClientMessage::Ping { payload: Some(p) } if p["n"] == 1));
    assert!(matches!(parse(r#"{"type": "ping", "payload": null}"#).unwrap(), ClientMessage::Ping { payload: None }));
    assert!(matches!(parse(r#"{"type": "pong"}"#).unwrap(), ClientMessage::Pong));
    let subscribe = parse(
        r#"{"type": "subscribe", "id": "a", "payload": {"query": "subscription S { taskUpdates { id } }", "operationName": "S", "variables": {"x": 1}, "extensions": null}}"#,
    )
    .unwrap();
    let ClientMessage::Subscribe { id, request } = subscribe else { panic!("not a subscribe") };
    assert_eq!(id, "a");
    assert_eq!(request.operation_name.as_deref(), Some("S"));
    assert!(
        matches!(parse(r#"{"type": "complete", "id": "a"}"#).unwrap(), ClientMessage::Complete { id } if id == "a")
    );
}

#[test]
fn close_frames_carry_the_protocol_codes_and_fit_a_frame() {
    assert_eq!(Close::SubscriberExists("7".into()).frame().reason.as_str(), "Subscriber for 7 already exists");
    assert_eq!(Close::TooManyInitialisationRequests.frame().code, 4429);
    assert_eq!(authentication_failed(Denied::Unauthenticated(AuthError::Invalid)).frame().code, 4403);
    assert_eq!(authentication_failed(Denied::Unavailable).frame().code, 1013);
    let long = Close::SubscriberExists("é".repeat(200)).frame();
    assert_eq!(long.code, 4409);
    assert!(long.reason.as_str().len() <= REASON_BYTES_MAX, "{}", long.reason.as_str().len());
    assert!(long.reason.as_str().ends_with('…'));
}

#[test]
fn an_identity_holds_at_most_its_cap_of_connections_and_gets_them_back() {
    let connections = Arc::new(Connections::default());
    let first = connections.admit("ada", 2).unwrap();
    let second = connections.admit("ada", 2).unwrap();
    assert!(connections.admit("ada", 2).is_none());
    assert!(connections.admit("bob", 2).is_some(), "others are not affected");
    drop(first);
    assert_eq!(connections.open("ada"), 1);
    let third = connections.admit("ada", 2).unwrap();
    drop((second, third));
    assert_eq!(connections.open("ada"), 0);
    let many: Vec<_> = (0..100).map(|_| connections.admit("ada", 0).unwrap()).collect();
    assert_eq!(connections.open("ada"), 100, "0 is no cap");
    drop(many);
    assert!(connections.open.lock().unwrap().is_empty(), "nothing left behind");
}

#[test]
fn errors_without_a_code_get_the_default_and_coded_ones_keep_theirs() {
    let plain = async_graphql::ServerError::new("boom", None);
    let coded = crate::error::error(Code::Forbidden, "no").into_server_error(async_graphql::Pos::default());
    let errors = coded_errors(&[plain, coded], Code::Internal);
    assert_eq!(errors[0]["extensions"]["code"], "INTERNAL");
    assert_eq!(errors[0]["message"], "boom");
    assert_eq!(errors[1]["extensions"]["code"], "FORBIDDEN");
}
