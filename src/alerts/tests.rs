use super::*;
use devart_projections::alerts::AlertData;

#[test]
fn markdown_v2_escapes_every_reserved_character_and_the_backslash() {
    assert_eq!(
        escape_markdown_v2(r"a_b*c[d]e(f)g~h`i>j#k+l-m=n|o{p}q.r!s\t"),
        r"a\_b\*c\[d\]e\(f\)g\~h\`i\>j\#k\+l\-m\=n\|o\{p\}q\.r\!s\\t"
    );
    assert_eq!(escape_markdown_v2("plain text, 50% spent: ok?"), "plain text, 50% spent: ok?");
    assert_eq!(escape_markdown_v2("ünïcödé ✓"), "ünïcödé ✓");
}

fn alert(kind: AlertKind) -> Alert {
    Alert {
        specversion: "1.0".into(),
        id: Uuid::from_u128(1),
        source: "/devart".into(),
        event_type: "devart.BudgetThresholdCrossed.v1".into(),
        subject: format!("service-{}", Uuid::from_u128(2)),
        time: chrono::DateTime::UNIX_EPOCH,
        position: "9".into(),
        datacontenttype: "application/json".into(),
        data: AlertData {
            service_id: Uuid::from_u128(2),
            service_name: "gpt-4o (prod)".into(),
            currency: "USD".into(),
            kind,
        },
    }
}

#[test]
fn the_telegram_text_is_escaped_around_its_bold_title() {
    let crossed = alert(AlertKind::ThresholdCrossed {
        threshold: 80,
        period: "2026-11".into(),
        spent: "80.50".into(),
        budget: "100.00".into(),
    });
    assert_eq!(
        telegram_text(&crossed),
        "*Budget alert: gpt\\-4o \\(prod\\)*\ngpt\\-4o \\(prod\\) has reached 80% of its budget for 2026\\-11: \
         80\\.50 of 100\\.00 USD spent\\."
    );
    let reactivated = alert(AlertKind::Reactivated { reason: "the budget was increased".into() });
    assert_eq!(
        telegram_text(&reactivated),
        "*Service reactivated: gpt\\-4o \\(prod\\)*\nRequests are authorized again: the budget was increased\\."
    );
}

#[test]
fn the_signature_is_hex_hmac_sha256() {
    // RFC 4231, test case 2.
    assert_eq!(
        signature(&Secret("Jefe".into()), b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn retries_back_off_exponentially_with_jitter_and_honour_retry_after() {
    let first = Duration::from_secs(5);
    for attempts in 1..=30 {
        let full = first.saturating_mul(1 << (attempts - 1).min(30)).min(RETRY_DELAY_MAX);
        let delay = retry_delay(first, attempts, None);
        assert!(delay >= full / 2 && delay <= full, "attempt {attempts}: {delay:?} outside {full:?}");
    }
    assert!(retry_delay(first, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
}

#[test]
fn settings_come_in_pairs_and_secrets_stay_out_of_debug_and_errors() {
    let token = "123456:very-secret-bot-token";
    let config = AlertConfig {
        telegram_bot_token: Some(Secret(token.into())),
        telegram_chat_id: Some("-100200300".into()),
        webhook_url: Some("https://hooks.example/services/T0/B0/credential-in-path".into()),
        webhook_secret: Some(Secret("webhook-key".into())),
        ..AlertConfig::default()
    };
    let channels = config.channels().unwrap();
    assert_eq!(channels.enabled(), [Channel::Telegram, Channel::Webhook]);
    let debug = format!("{channels:?}");
    for secret in [token, "webhook-key", "credential-in-path"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    let half = AlertConfig { telegram_chat_id: None, ..config.clone() };
    let error = half.channels().unwrap_err().to_string();
    assert_eq!(error, "DEVART_TELEGRAM_BOT_TOKEN is set, but DEVART_TELEGRAM_CHAT_ID is not");
    let bad = AlertConfig { webhook_url: Some("not a url credential-in-path".into()), ..config };
    assert!(!bad.channels().unwrap_err().to_string().contains("credential"));
    assert!(AlertConfig::default().channels().unwrap().enabled().is_empty());
}

#[tokio::test]
async fn a_transport_error_does_not_carry_the_token() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let token = "654321:another-secret-token";
    let http = reqwest::Client::new();
    // Over HTTPS too: the connection is tried (TLS is built in), not refused for its scheme.
    for scheme in ["http", "https"] {
        let telegram = Telegram {
            base_url: Url::parse(&format!("{scheme}://127.0.0.1:{port}")).unwrap(),
            token: Secret(token.into()),
            chat_id: "1".into(),
        };
        let failure =
            telegram.send(&http, &alert(AlertKind::Reactivated { reason: "a test".into() })).await.unwrap_err();
        assert!(!failure.message.contains(token), "{}", failure.message);
        assert!(failure.message.starts_with("error sending request"), "{}", failure.message);
    }
}
