//! The task's value types: each checks its preconditions when built, and deserializes through
//! that check, so no stored or wire value makes one it would refuse.

use serde::{Deserialize, Serialize};

use crate::aggregate::DomainError;

/// A task's priority: 1 (lowest) to 5 (highest). Always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8")]
pub struct Priority(u8);

parsed_from!(Priority, u8, DomainError, |v| Priority::parse(i64::from(v)));

impl Priority {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 5;
    pub const DEFAULT: Priority = Priority(3);

    pub fn parse(value: i64) -> Result<Priority, DomainError> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&value) {
            Ok(Priority(value as u8))
        } else {
            Err(DomainError::invalid("priority", format!("must be between 1 and 5, got {value}")))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A task title: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Title(String);

parsed_from!(Title, String, DomainError, |v| Title::parse(&v));

impl Title {
    pub const LEN_MAX: usize = 200;

    pub fn parse(value: &str) -> Result<Title, DomainError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(DomainError::invalid("title", "must not be empty"));
        }
        if value.chars().count() > Self::LEN_MAX {
            return Err(DomainError::invalid("title", format!("must be at most {} characters", Self::LEN_MAX)));
        }
        if value.chars().any(char::is_control) {
            return Err(DomainError::invalid("title", "must not contain control characters"));
        }
        Ok(Title(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task description: free text up to 20,000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Description(String);

parsed_from!(Description, String, DomainError, |v| Description::parse(&v));

impl Description {
    pub const LEN_MAX: usize = 20_000;

    pub fn parse(value: &str) -> Result<Description, DomainError> {
        if value.chars().count() > Self::LEN_MAX {
            return Err(DomainError::invalid("description", format!("must be at most {} characters", Self::LEN_MAX)));
        }
        if value.contains('\0') {
            return Err(DomainError::invalid("description", "must not contain NUL characters"));
        }
        Ok(Description(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A capability an agent has and a task requires: 1 to 64 of `a-z 0-9 - _ . : /`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Capability(String);

parsed_from!(Capability, String, DomainError, |v| Capability::parse(&v));

impl Capability {
    pub const LEN_MAX: usize = 64;

    pub fn parse(value: &str) -> Result<Capability, DomainError> {
        let ok = !value.is_empty()
            && value.len() <= Self::LEN_MAX
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
        if ok {
            Ok(Capability(value.to_owned()))
        } else {
            Err(DomainError::invalid(
                "requiredCapabilities",
                format!("`{value}` is not a capability (1 to 64 of a-z, 0-9, - _ . : /)"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sorted set of at most 32 capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Capabilities(Vec<Capability>);

parsed_from!(Capabilities, Vec<String>, DomainError, |v| Capabilities::parse(&v));

impl Capabilities {
    pub const COUNT_MAX: usize = 32;

    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Capabilities, DomainError> {
        if values.len() > Self::COUNT_MAX {
            return Err(DomainError::invalid(
                "requiredCapabilities",
                format!("at most {} capabilities", Self::COUNT_MAX),
            ));
        }
        let mut caps = values.iter().map(|v| Capability::parse(v.as_ref())).collect::<Result<Vec<_>, _>>()?;
        caps.sort();
        caps.dedup();
        Ok(Capabilities(caps))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Capability> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|c| c.0.clone()).collect()
    }
}

/// How many attempts a task gets: 1 to 100, 3 unless the task says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32")]
pub struct MaxAttempts(u32);

parsed_from!(MaxAttempts, u32, DomainError, |v| MaxAttempts::parse(i64::from(v)));

impl MaxAttempts {
    pub const DEFAULT: MaxAttempts = MaxAttempts(3);
    pub const MAX: u32 = 100;

    pub fn parse(value: i64) -> Result<MaxAttempts, DomainError> {
        if (1..=i64::from(Self::MAX)).contains(&value) {
            Ok(MaxAttempts(value as u32))
        } else {
            Err(DomainError::invalid("maxAttempts", format!("must be between 1 and {}, got {value}", Self::MAX)))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A JSON document given with a task or returned by it, kept as its text: at most 256 KiB.
///
/// The write side checks that it parses; the domain only carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Document(String);

parsed_from!(Document, String, DomainError, |v| Document::parse("document", v));

impl Document {
    pub const LEN_MAX: usize = 256 * 1024;

    pub fn parse(field: &'static str, json: String) -> Result<Document, DomainError> {
        if json.len() > Self::LEN_MAX {
            return Err(DomainError::invalid(field, format!("must be at most {} bytes of JSON", Self::LEN_MAX)));
        }
        Ok(Document(json))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A short text an agent reports: an error or a progress message, 1 to 4,000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Message(String);

parsed_from!(Message, String, DomainError, |v| Message::parse("message", &v));

impl Message {
    pub const LEN_MAX: usize = 4_000;

    pub fn parse(field: &'static str, value: &str) -> Result<Message, DomainError> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > Self::LEN_MAX || value.contains('\0') {
            return Err(DomainError::invalid(field, format!("must be 1 to {} characters", Self::LEN_MAX)));
        }
        Ok(Message(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How far along a task is: 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8")]
pub struct Percent(u8);

parsed_from!(Percent, u8, DomainError, |v| Percent::parse(i64::from(v)));

impl Percent {
    pub fn parse(value: i64) -> Result<Percent, DomainError> {
        if (0..=100).contains(&value) {
            Ok(Percent(value as u8))
        } else {
            Err(DomainError::invalid("percent", format!("must be between 0 and 100, got {value}")))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}
