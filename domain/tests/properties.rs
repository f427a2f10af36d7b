//! Every input type's validation, on arbitrary input: a value or a typed refusal, never a panic;
//! and what is accepted behaves.

use devart_domain::agent::AgentName;
use devart_domain::money::Money;
use devart_domain::service::{Currency, Period, ServiceName, Thresholds};
use devart_domain::settings::Key;
use devart_domain::task::{
    Capabilities, Capability, Description, Document, MaxAttempts, Message, Percent, Priority, Title,
};
use devart_domain::user::{Email, Password, UserRole};
use devart_domain::workflow::{StageSpec, Stages, WorkflowName};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn text_inputs_never_panic(s in any::<String>()) {
        let _ = Title::parse(&s);
        let _ = Description::parse(&s);
        let _ = Capability::parse(&s);
        let _ = Capabilities::parse(&[s.as_str(), "rust"]);
        let _ = AgentName::parse(&s);
        let _ = ServiceName::parse(&s);
        let _ = WorkflowName::parse(&s);
        let _ = Currency::parse(&s);
        let _ = Message::parse("error", &s);
        let _ = Document::parse("input", s.clone());
        let _ = Money::parse("amount", &s);
        let _ = Period::parse(&s);
        let _ = Key::parse(&s);
        let _ = UserRole::parse(&s);
        let _ = Password::parse(&s);
        if let Ok(email) = Email::parse(&s) {
            // Normalised addresses parse to themselves.
            prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email);
        }
    }

    #[test]
    fn numbers_are_in_range_or_refused(n in any::<i64>()) {
        prop_assert_eq!(Priority::parse(n).is_ok(), (1..=5).contains(&n));
        prop_assert_eq!(MaxAttempts::parse(n).is_ok(), (1..=100).contains(&n));
        prop_assert_eq!(Percent::parse(n).is_ok(), (0..=100).contains(&n));
        let _ = Thresholds::parse(&[n, 50]);
    }

    #[test]
    fn amounts_print_back_to_themselves(micros in 0i64..=Money::MAX.micros()) {
        let money = Money::from_micros(micros);
        prop_assert_eq!(Money::parse("amount", &money.to_string()).unwrap(), money);
    }

    #[test]
    fn amounts_parse_exactly(whole in 0u64..1_000_000_000, fraction in 0u32..1_000_000, digits in 1usize..=6) {
        let fraction = format!("{fraction:06}")[..digits].to_owned();
        let text = format!("{whole}.{fraction}");
        let money = Money::parse("amount", &text).unwrap();
        let expected = whole as i64 * 1_000_000 + fraction.parse::<i64>().unwrap() * 10i64.pow(6 - digits as u32);
        prop_assert_eq!(money.micros(), expected);
    }

    #[test]
    fn setting_values_are_validated_not_trusted(value in arbitrary_json()) {
        for key in Key::ALL {
            if let Ok(normal) = key.validate(&value) {
                // What is accepted is accepted again, unchanged.
                prop_assert_eq!(key.validate(&normal).unwrap(), normal);
            }
        }
    }

    /// Random dependency graphs: accepted exactly when they are DAGs of known keys.
    #[test]
    fn stages_are_accepted_exactly_when_they_form_a_dag(edges in proptest::collection::vec((0usize..8, 0usize..10), 0..20)) {
        let keys: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
        let specs: Vec<StageSpec> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let depends_on: Vec<String> = edges
                    .iter()
                    .filter(|(from, _)| *from == i)
                    .map(|(_, to)| format!("s{to}"))
                    .collect();
                StageSpec::new(key, Title::parse(key).unwrap(), Description::default(), Priority::DEFAULT,
                    Capabilities::default(), depends_on, MaxAttempts::DEFAULT).unwrap()
            })
            .collect();
        let unknown = edges.iter().any(|(_, to)| *to >= 8);
        let self_loop = edges.iter().any(|(from, to)| from == to);
        let cyclic = has_cycle(&edges);
        prop_assert_eq!(Stages::parse(specs).is_ok(), !unknown && !self_loop && !cyclic);
    }
}

fn has_cycle(edges: &[(usize, usize)]) -> bool {
    // Kahn's algorithm over the known nodes.
    let mut indegree = [0usize; 8];
    for (from, _) in edges.iter().filter(|(_, to)| *to < 8) {
        indegree[*from] += 1;
    }
    let mut done = [false; 8];
    while let Some(node) = (0..8).find(|n| !done[*n] && indegree[*n] == 0) {
        done[node] = true;
        for (from, to) in edges {
            if *to == node {
                indegree[*from] -= 1;
            }
        }
    }
    done.iter().any(|d| !d)
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".{0,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
