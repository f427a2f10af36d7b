//! Live settings: typed, validated keys whose changes are events, in effect in every process
//! without a restart.
//!
//! All settings live in one stream, so their history is the audit trail's and a change is decided
//! against every other (none conflict today, but a rule such as "the lease outlasts the heartbeat"
//! would have one place to live).

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};

/// The settings' one stream id.
pub const SETTINGS_ID: Uuid = Uuid::from_u128(0x6465_7661_7274_2d73_6574_7469_6e67_7300);

/// Every setting devart knows, with its default.
/// On the wire, a key is its name (`queue.defaultLeaseSeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Key {
    /// Percentages of a service's budget whose crossing raises an alert.
    AlertThresholds,
    /// How long an authorization holds its reservation.
    ReservationTtlSeconds,
    /// The robust z-score of log cost above which a task's cost is an outlier.
    OutlierThreshold,
    /// How many comparable tasks a cost is judged against, at least.
    OutlierMinimumSamples,
    /// A claim's lease when the agent does not ask for one.
    DefaultLeaseSeconds,
    /// A task's attempts when its creator does not say.
    DefaultMaxAttempts,
    /// Failed attempts in a row after which an agent is quarantined; 0 never.
    QuarantineAfterFailures,
    /// Whether agents may add, change, tag and remove knowledge-base documents.
    AgentsMayWriteKnowledge,
}

parsed_from!(Key, String, DomainError, |v| Key::parse(&v));

impl From<Key> for &'static str {
    fn from(key: Key) -> &'static str {
        key.name()
    }
}

impl Key {
    pub const ALL: [Key; 8] = [
        Key::AlertThresholds,
        Key::ReservationTtlSeconds,
        Key::OutlierThreshold,
        Key::OutlierMinimumSamples,
        Key::DefaultLeaseSeconds,
        Key::DefaultMaxAttempts,
        Key::QuarantineAfterFailures,
        Key::AgentsMayWriteKnowledge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Key::AlertThresholds => "budget.alertThresholds",
            Key::ReservationTtlSeconds => "budget.reservationTtlSeconds",
            Key::OutlierThreshold => "outliers.threshold",
            Key::OutlierMinimumSamples => "outliers.minimumSamples",
            Key::DefaultLeaseSeconds => "queue.defaultLeaseSeconds",
            Key::DefaultMaxAttempts => "queue.defaultMaxAttempts",
            Key::QuarantineAfterFailures => "agents.quarantineAfterFailures",
            Key::AgentsMayWriteKnowledge => "knowledge.agentsMayWrite",
        }
    }

    pub fn parse(name: &str) -> Result<Key, DomainError> {
        Key::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Key::ALL.iter().map(|k| k.name()).collect();
            DomainError::invalid("key", format!("`{name}` is not a setting; the settings are {}", known.join(", ")))
        })
    }

    pub fn description(self) -> &'static str {
        match self {
            Key::AlertThresholds => {
                "Percentages of a service's monthly budget whose crossing raises an alert (1 to 1000)."
            }
            Key::ReservationTtlSeconds => {
                "How long an authorization holds its reservation when nobody charges it (10 to 86400)."
            }
            Key::OutlierThreshold => "The robust z-score of log cost above which a task's cost is flagged (1 to 20).",
            Key::OutlierMinimumSamples => "How many comparable tasks a cost needs before it is judged (3 to 10000).",
            Key::DefaultLeaseSeconds => "A claim's lease when the agent does not ask for one (1 to 3600).",
            Key::DefaultMaxAttempts => "A task's attempts when its creator does not say (1 to 100).",
            Key::QuarantineAfterFailures => {
                "Failed attempts in a row (errors or expired leases) after which an agent is deactivated as \
                 quarantined and its tasks released; a completed task resets the count (0 to 1000, 0: never)."
            }
            Key::AgentsMayWriteKnowledge => {
                "Whether agents may add, update, tag and remove knowledge-base documents (true or false)."
            }
        }
    }

    pub fn default_value(self) -> serde_json::Value {
        match self {
            Key::AlertThresholds => serde_json::json!([50, 80, 100]),
            Key::ReservationTtlSeconds => serde_json::json!(600),
            Key::OutlierThreshold => serde_json::json!(3.5),
            Key::OutlierMinimumSamples => serde_json::json!(8),
            Key::DefaultLeaseSeconds => serde_json::json!(30),
            Key::DefaultMaxAttempts => serde_json::json!(3),
            Key::QuarantineAfterFailures => serde_json::json!(5),
            Key::AgentsMayWriteKnowledge => serde_json::json!(false),
        }
    }

    /// Checks `value` for this key; returns it in its normal form (thresholds sorted, deduplicated).
    pub fn validate(self, value: &serde_json::Value) -> Result<serde_json::Value, DomainError> {
        let integer = |min: i64, max: i64| -> Result<serde_json::Value, DomainError> {
            match value.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(serde_json::json!(n)),
                _ => Err(DomainError::invalid(
                    "value",
                    format!("{} must be an integer from {min} to {max}", self.name()),
                )),
            }
        };
        match self {
            Key::AlertThresholds => {
                let values: Option<Vec<i64>> =
                    value.as_array().map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect());
                match values {
                    Some(v) if value.as_array().is_some_and(|a| a.len() == v.len() && a.len() <= 20) => {
                        let thresholds = crate::service::Thresholds::parse(&v)?;
                        Ok(serde_json::json!(thresholds.as_slice()))
                    }
                    _ => Err(DomainError::invalid(
                        "value",
                        "budget.alertThresholds must be a list of at most 20 integers",
                    )),
                }
            }
            Key::ReservationTtlSeconds => integer(10, 86_400),
            Key::OutlierThreshold => match value.as_f64() {
                Some(x) if (1.0..=20.0).contains(&x) => Ok(serde_json::json!(x)),
                _ => Err(DomainError::invalid("value", "outliers.threshold must be a number from 1 to 20")),
            },
            Key::OutlierMinimumSamples => integer(3, 10_000),
            Key::DefaultLeaseSeconds => integer(1, 3_600),
            Key::DefaultMaxAttempts => integer(1, 100),
            Key::QuarantineAfterFailures => integer(0, 1_000),
            Key::AgentsMayWriteKnowledge => match value.as_bool() {
                Some(b) => Ok(serde_json::json!(b)),
                None => Err(DomainError::invalid("value", "knowledge.agentsMayWrite must be true or false")),
            },
        }
    }
}

/// The values set so far, by key name; a key not here has its default.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct SettingsState {
    pub values: BTreeMap<String, serde_json::Value>,
}

impl SettingsState {
    pub fn get(&self, key: Key) -> serde_json::Value {
        self.values.get(key.name()).cloned().unwrap_or_else(|| key.default_value())
    }

    pub fn alert_thresholds(&self) -> crate::service::Thresholds {
        let values: Vec<i64> = self
            .get(Key::AlertThresholds)
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
            .unwrap_or_default();
        crate::service::Thresholds::parse(&values).unwrap_or_default()
    }

    fn integer(&self, key: Key) -> i64 {
        self.get(key).as_i64().or_else(|| key.default_value().as_i64()).unwrap_or(1)
    }

    pub fn reservation_ttl(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(self.integer(Key::ReservationTtlSeconds))
    }

    pub fn outlier_threshold(&self) -> f64 {
        self.get(Key::OutlierThreshold).as_f64().unwrap_or(3.5)
    }

    pub fn outlier_minimum_samples(&self) -> usize {
        self.integer(Key::OutlierMinimumSamples) as usize
    }

    pub fn default_lease(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(self.integer(Key::DefaultLeaseSeconds))
    }

    /// Failed attempts in a row that quarantine an agent; `None` when quarantine is off.
    pub fn quarantine_after_failures(&self) -> Option<u32> {
        u32::try_from(self.integer(Key::QuarantineAfterFailures)).ok().filter(|n| *n > 0)
    }

    /// Whether agents may write knowledge-base documents.
    pub fn agents_may_write_knowledge(&self) -> bool {
        self.get(Key::AgentsMayWriteKnowledge).as_bool().unwrap_or(false)
    }

    pub fn default_max_attempts(&self) -> crate::task::MaxAttempts {
        crate::task::MaxAttempts::parse(self.integer(Key::DefaultMaxAttempts))
            .unwrap_or(crate::task::MaxAttempts::DEFAULT)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SettingsCommand {
    /// Sets `key` to `value`, which the write side validated with [`Key::validate`].
    Set { key: Key, value: serde_json::Value },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsEvent {
    /// `value` and `previous` are JSON documents, as text; `previous` is what was in effect (the
    /// default when never set).
    Changed { key: String, value: String, previous: String },
}

impl SettingsEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            SettingsEvent::Changed { .. } => "SettingChanged",
        }
    }
}

pub struct Settings;

impl Aggregate for Settings {
    const KIND: &'static str = "settings";
    type State = SettingsState;
    type Command = SettingsCommand;
    type Event = SettingsEvent;

    fn decide(state: &SettingsState, command: &SettingsCommand) -> Result<Vec<SettingsEvent>, DomainError> {
        let SettingsCommand::Set { key, value } = command;
        let value = key.validate(value)?;
        let previous = state.get(*key);
        if previous == value {
            return Ok(vec![]);
        }
        Ok(vec![SettingsEvent::Changed {
            key: key.name().to_owned(),
            value: value.to_string(),
            previous: previous.to_string(),
        }])
    }

    fn evolve(mut state: SettingsState, event: &SettingsEvent) -> SettingsState {
        let SettingsEvent::Changed { key, value, .. } = event;
        if let Ok(value) = serde_json::from_str(value) {
            state.values.insert(key.clone(), value);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use serde_json::json;

    #[test]
    fn values_are_validated_and_normalized() {
        assert_eq!(Key::AlertThresholds.validate(&json!([100, 50, 50, 75])).unwrap(), json!([50, 75, 100]));
        assert!(Key::AlertThresholds.validate(&json!([0])).is_err());
        assert!(Key::AlertThresholds.validate(&json!([50, "80"])).is_err());
        assert!(Key::AlertThresholds.validate(&json!(50)).is_err());
        assert!(Key::DefaultLeaseSeconds.validate(&json!(0)).is_err());
        assert!(Key::DefaultLeaseSeconds.validate(&json!(2.5)).is_err());
        assert_eq!(Key::OutlierThreshold.validate(&json!(4)).unwrap(), json!(4.0));
        assert!(Key::parse("queue.nope").is_err());
        for key in Key::ALL {
            assert_eq!(Key::parse(key.name()).unwrap(), key);
            assert_eq!(key.validate(&key.default_value()).unwrap(), key.default_value(), "{}", key.name());
        }
    }

    #[test]
    fn a_change_records_what_it_replaced_and_the_same_value_changes_nothing() {
        let set = |v: serde_json::Value| SettingsCommand::Set { key: Key::DefaultLeaseSeconds, value: v };
        let changed = SettingsEvent::Changed {
            key: "queue.defaultLeaseSeconds".into(),
            value: "60".into(),
            previous: "30".into(),
        };
        given::<Settings>([]).when(set(json!(60))).then([changed.clone()]);
        given::<Settings>([changed.clone()]).when(set(json!(60))).then([]);
        given::<Settings>([]).when(set(json!(30))).then([]);
        let state = Settings::fold(&[changed]);
        assert_eq!(state.default_lease(), chrono::TimeDelta::seconds(60));
        assert_eq!(state.alert_thresholds(), crate::service::Thresholds::default());
    }
}
