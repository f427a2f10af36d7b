use super::*;

#[test]
fn waits_double_with_jitter_up_to_a_cap_and_honour_retry_after() {
    let mut backoff = Backoff::default();
    let transport = ApiError::Status(502);
    let waits: Vec<Duration> = (0..10).map(|_| backoff.next(&transport)).collect();
    assert!(waits[0] >= RETRY_FIRST / 2 && waits[0] <= RETRY_FIRST, "{waits:?}");
    assert!(waits.iter().all(|w| *w <= RETRY_MAX), "{waits:?}");
    assert!(waits[9] >= RETRY_MAX / 2, "it reaches the cap: {waits:?}");
    let later = ApiError::Later { status: 503, retry_after: Some(Duration::from_secs(4)), message: String::new() };
    assert!(Backoff::default().next(&later) >= Duration::from_secs(4));
    assert!(later.is_transient() && !later.is_fatal() && !later.key_refused());
    assert!(ApiError::Unauthenticated("no".into()).is_fatal());
}

#[test]
fn a_tail_keeps_the_last_bytes_and_knows_it_dropped_some() {
    let mut tail = Tail::new(4);
    tail.push(b"abc");
    tail.push(b"defghij");
    let captured = captured(&Mutex::new(tail));
    assert_eq!(captured.bytes, b"ghij");
    assert!(captured.truncated);
}

#[test]
fn stdout_is_the_result_when_it_is_json_and_its_end_as_text_otherwise() {
    let json = Captured { bytes: b" {\"ok\": true}\n".to_vec(), truncated: false };
    assert_eq!(result_of(&json), json!({ "ok": true }));
    let text = Captured { bytes: b"done\n".to_vec(), truncated: false };
    assert_eq!(result_of(&text), json!({ "stdout": "done\n" }));
    let cut = Captured { bytes: b"{}".to_vec(), truncated: true };
    assert_eq!(result_of(&cut), json!({ "stdout": "{}" }));
}

#[test]
fn a_text_result_fits_a_document_even_when_escaping_grows_it() {
    let bytes = vec![1u8; STDOUT_TAIL_BYTES * 2];
    let result = result_of(&Captured { bytes, truncated: true });
    assert!(result.to_string().len() <= Document::LEN_MAX);
    assert!(!result["stdout"].as_str().unwrap_or_default().is_empty());
}

#[test]
fn the_tail_of_text_starts_on_a_character_and_a_line() {
    assert_eq!(utf8_tail("aé".as_bytes(), 1), "");
    assert_eq!(utf8_tail("aé".as_bytes(), 2), "é");
    assert_eq!(last_lines("one\ntwo\nthree", 9), "three");
    assert_eq!(last_lines("one\ntwo", 20), "one\ntwo");
    assert_eq!(last_lines("abcdef", 3), "def");
}

#[cfg(unix)]
#[test]
fn an_error_message_is_bounded_and_ends_with_the_last_lines_of_stderr() {
    use std::os::unix::process::ExitStatusExt;
    let stderr = (0..2_000).map(|i| format!("line {i}\n")).collect::<String>();
    let error = error_of(ExitStatus::from_raw(1 << 8), stderr.as_bytes());
    assert!(error.chars().count() <= Message::LEN_MAX, "{}", error.len());
    assert!(error.starts_with("the command ended with exit status: 1:\n"), "{error}");
    assert!(error.ends_with("line 1999"), "{error}");
    assert!(error_of(ExitStatus::from_raw(1 << 8), b"").contains("stderr was empty"));
}

#[test]
fn the_key_is_never_printed() {
    let args = Args {
        url: "http://127.0.0.1:8787/graphql".into(),
        key: Some(Secret("dva_0123456789abcdef_very-secret".into())),
        key_file: None,
        capabilities: None,
        lease_secs: 30,
        poll_ms: 1000,
        once: false,
        command: vec!["true".into()],
    };
    assert!(!format!("{args:?}").contains("very-secret"));
}
