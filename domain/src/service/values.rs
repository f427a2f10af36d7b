//! The service's value types: a budget period, a name, a currency, alert thresholds; each checks
//! its preconditions when built, and deserializes through that check.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::DomainError;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "PeriodFields")]
pub struct Period {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Period {
    pub fn of(at: DateTime<Utc>) -> Period {
        Period { year: at.year(), month: at.month() }
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period { year: self.year + 1, month: 1 }
        } else {
            Period { year: self.year, month: self.month + 1 }
        }
    }

    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0).single().unwrap_or_default()
    }

    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    /// Parses `2026-11`.
    pub fn parse(s: &str) -> Option<Period> {
        let (year, month) = s.split_once('-')?;
        let period = Period { year: year.parse().ok()?, month: month.parse().ok()? };
        (1..=12).contains(&period.month).then_some(period)
    }
}

/// A [`Period`]'s serde form, checked before it becomes one.
#[derive(Deserialize)]
struct PeriodFields {
    year: i32,
    month: u32,
}

parsed_from!(Period, PeriodFields, String, |p| {
    if (1..=12).contains(&p.month) {
        Ok(Period { year: p.year, month: p.month })
    } else {
        Err(format!("month {} of {} is not 1 to 12", p.month, p.year))
    }
});

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A service's display name: trimmed, 1 to 100 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct ServiceName(String);

parsed_from!(ServiceName, String, DomainError, |v| ServiceName::parse(&v));

impl ServiceName {
    pub fn parse(value: &str) -> Result<ServiceName, DomainError> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > 100 || value.chars().any(char::is_control) {
            return Err(DomainError::invalid("name", "must be 1 to 100 printable characters"));
        }
        Ok(ServiceName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 currency code: three capital letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);

parsed_from!(Currency, String, DomainError, |v| Currency::parse(&v));

impl Currency {
    pub fn parse(value: &str) -> Result<Currency, DomainError> {
        let value = value.trim();
        if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(value.to_owned()))
        } else {
            Err(DomainError::invalid("currency", format!("`{value}` is not a currency code like USD")))
        }
    }

    pub fn usd() -> Currency {
        Currency("USD".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Alert thresholds in percent of the budget: 1 to 1,000, ascending, no repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u32>")]
pub struct Thresholds(pub(super) Vec<u32>);

parsed_from!(Thresholds, Vec<u32>, DomainError, |v| Thresholds::parse(
    &v.into_iter().map(i64::from).collect::<Vec<_>>()
));

impl Thresholds {
    pub fn parse(values: &[i64]) -> Result<Thresholds, DomainError> {
        let mut set = BTreeSet::new();
        for v in values {
            if !(1..=1_000).contains(v) {
                return Err(DomainError::invalid("thresholds", format!("{v} is not a percentage from 1 to 1000")));
            }
            set.insert(*v as u32);
        }
        Ok(Thresholds(set.into_iter().collect()))
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }
}

impl Default for Thresholds {
    /// 50%, 80% and 100%.
    fn default() -> Self {
        Thresholds(vec![50, 80, 100])
    }
}
