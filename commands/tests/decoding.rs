//! Event decoding on arbitrary bytes, for every event type and schema version: an event or a typed
//! error, never a panic.

use devart_commands::codec::{decode, from_json, schema_version, EVENT_TYPES};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn stored_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), version in 0u16..4) {
        for event_type in EVENT_TYPES.iter().copied().chain(["", "Nope"]) {
            let _ = decode(event_type, version, &bytes);
            if let Some(newest) = schema_version(event_type) {
                let _ = decode(event_type, newest, &bytes);
            }
        }
    }

    #[test]
    fn json_payloads_never_panic(text in ".{0,200}") {
        for event_type in EVENT_TYPES {
            let _ = from_json(event_type, schema_version(event_type).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn exported_lines_never_panic(text in ".{0,300}") {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = devart_commands::bus::from_cloudevent_json(&value);
        }
        let value = serde_json::json!({ "type": text, "data": text, "id": text, "subject": text, "time": text });
        let _ = devart_commands::bus::from_cloudevent_json(&value);
    }
}
