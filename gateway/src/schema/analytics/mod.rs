//! Analytics for charts over a window of time (`charts`): cost over time and by task, agent and
//! service, completion, time to claim and to complete, queue depth; and cost outliers, with their
//! acknowledgment (`outliers`). Read from the analytics read model.

use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Utc};
use devart_domain::money::Money;
use uuid::Uuid;

use super::budgets::Decimal;
use super::person;
use crate::error::bad_input;

mod charts;
mod outliers;

pub(crate) use outliers::outlier_of;
pub use outliers::{CostOutlier, OutliersMutation, OutliersQuery, OutliersSubscription};

/// More buckets than this in one window is a mistake (a year is 8,760 hours).
const BUCKETS_MAX: i64 = 10_000;

/// The width of a chart's buckets, in UTC; weeks start on Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Bucket {
    Hour,
    Day,
    Week,
}

impl Bucket {
    /// The unit Postgres' `date_trunc` knows it by.
    fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
        }
    }

    fn hours(self) -> i32 {
        match self {
            Bucket::Hour => 1,
            Bucket::Day => 24,
            Bucket::Week => 24 * 7,
        }
    }

    fn step(self) -> TimeDelta {
        TimeDelta::hours(i64::from(self.hours()))
    }

    /// The start of the bucket `at` falls in, as `date_trunc` has it.
    fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.duration_trunc(TimeDelta::days(1)).unwrap_or(at);
        match self {
            Bucket::Hour => at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at),
            Bucket::Day => day,
            Bucket::Week => day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday())),
        }
    }
}

/// The window an `analytics` query covers.
pub struct Analytics {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    bucket: Bucket,
}

fn money(micros: i64) -> Decimal {
    Decimal(Money::from_micros(micros))
}

fn id(uuid: Uuid) -> ID {
    ID(uuid.to_string())
}

fn rate(completed: i64, failed: i64) -> Option<f64> {
    (completed + failed > 0).then(|| completed as f64 / (completed + failed) as f64)
}

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// Analytics for charts over `from` to `to`, widened to whole buckets (UTC; weeks start on
    /// Monday): every series has every bucket of the window.
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> async_graphql::Result<Analytics> {
        person(ctx)?;
        if to <= from {
            return Err(bad_input("to", "must be after `from`"));
        }
        let start = bucket.floor(from);
        let floor = bucket.floor(to);
        let end = if floor == to { to } else { floor + bucket.step() };
        let buckets = (end - start).num_hours() / i64::from(bucket.hours());
        if buckets > BUCKETS_MAX {
            return Err(bad_input(
                "bucket",
                format!("the window holds {buckets} buckets, more than {BUCKETS_MAX}: widen the bucket"),
            ));
        }
        Ok(Analytics { start, end, bucket })
    }
}
