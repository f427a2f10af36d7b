//! Money: exact decimal amounts, never floats.

use std::fmt;

use crate::aggregate::DomainError;

/// A non-negative amount with up to six decimal places (a millionth of the currency unit, enough
/// for per-token prices), kept as an integer count of millionths so that sums are exact.
///
/// Its serde form is the count of millionths (what snapshots and stored answers hold), checked
/// on the way in like [`Money::parse`] checks text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "i64")]
pub struct Money(i64);

parsed_from!(Money, i64, DomainError, |micros| {
    if (0..=Money::MAX.0).contains(&micros) {
        Ok(Money(micros))
    } else {
        Err(DomainError::invalid("amount", format!("{micros} millionths is not an amount from 0 to {}", Money::MAX)))
    }
});

impl Money {
    pub const ZERO: Money = Money(0);
    pub const SCALE: u32 = 6;
    const UNIT: i64 = 1_000_000;
    /// A trillion currency units: far above any budget, far below overflow when summed.
    pub const MAX: Money = Money(1_000_000_000_000 * Self::UNIT);

    /// Parses a plain decimal such as `12.50` or `0.000015`: digits, at most one point, at most six
    /// decimals, not negative, at most [`Money::MAX`].
    pub fn parse(field: &'static str, text: &str) -> Result<Money, DomainError> {
        let invalid = || {
            DomainError::invalid(
                field,
                format!("`{text}` is not an amount (like \"12.50\", up to 6 decimals, not negative)"),
            )
        };
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > Self::SCALE as usize {
            return Err(invalid());
        }
        if text.ends_with('.') {
            return Err(invalid());
        }
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let fraction: i64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<i64>().map_err(|_| invalid())? * 10i64.pow(Self::SCALE - fraction.len() as u32)
        };
        let micros = whole.checked_mul(Self::UNIT).and_then(|w| w.checked_add(fraction)).ok_or_else(invalid)?;
        if micros > Self::MAX.0 {
            return Err(DomainError::invalid(field, format!("must be at most {}", Self::MAX)));
        }
        Ok(Money(micros))
    }

    /// Millionths of the currency unit.
    pub fn from_micros(micros: i64) -> Money {
        Money(micros.max(0))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money((self.0 - other.0).max(0))
    }

    /// Whether `self` is at least `percent`% of `of`.
    pub fn reaches_percent(self, percent: u32, of: Money) -> bool {
        i128::from(self.0) * 100 >= i128::from(of.0) * i128::from(percent)
    }

    /// `self × count`, as for a unit price times units, if it fits.
    pub fn times(self, count: u64) -> Option<Money> {
        let product = i128::from(self.0) * i128::from(count);
        (product <= i128::from(Self::MAX.0)).then_some(Money(product as i64))
    }
}

impl fmt::Display for Money {
    /// At least two decimals, more only when needed: `12.50`, `0.000015`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::UNIT;
        let mut fraction = format!("{:06}", self.0 % Self::UNIT);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        write!(f, "{whole}.{fraction}")
    }
}

/// Serializes an optional amount as its decimal text (`"12.50"`), for states that people read
/// (history diffs), where the count of millionths would mislead.
pub fn optional_decimal<S: serde::Serializer>(amount: &Option<Money>, s: S) -> Result<S::Ok, S::Error> {
    match amount {
        Some(amount) => s.collect_str(amount),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        let cases = [("12.5", "12.50"), ("0.000015", "0.000015"), ("7", "7.00"), ("100.10", "100.10"), ("0", "0.00")];
        for (input, printed) in cases {
            assert_eq!(Money::parse("amount", input).unwrap().to_string(), printed);
        }
        assert_eq!(
            Money::parse("amount", "0.1").unwrap().saturating_add(Money::parse("a", "0.2").unwrap()).to_string(),
            "0.30"
        );
    }

    #[test]
    fn refuses_what_is_not_an_amount() {
        for bad in ["", "-1", "1.2345678", "1e3", "1,5", ".5", "5.", "NaN", "1.2.3", " ", "99999999999999999999"] {
            assert!(Money::parse("amount", bad).is_err(), "{bad:?} parsed");
        }
        assert!(Money::parse("amount", "1000000000001").is_err());
    }

    #[test]
    fn percentages_are_exact() {
        let budget = Money::parse("b", "100").unwrap();
        assert!(Money::parse("s", "80").unwrap().reaches_percent(80, budget));
        assert!(!Money::parse("s", "79.999999").unwrap().reaches_percent(80, budget));
    }
}
