//! Cost outliers: telling a task whose cost is unusual from the ordinary spread of its peers.
//!
//! A cost is judged against the costs of comparable completed tasks on a log scale: costs are
//! positive and skewed, and ten times dearer than usual is as unusual as ten times cheaper. The
//! centre is the median of the log costs and the spread their median absolute deviation (MAD),
//! scaled by 1.4826 so that it estimates the standard deviation of normally distributed data. Both
//! ignore a minority of extreme values, which is what lets an outlier stand out instead of widening
//! the spread that would hide it. The robust z-score is `(ln cost − median) / (1.4826 × MAD)`.
//!
//! Comparable tasks are those of the same [group](group): the same workflow stage, or else the
//! same required capabilities.

use std::fmt;

use crate::money::Money;

/// Scales a MAD to estimate a normal distribution's standard deviation (1 / Φ⁻¹(3/4)).
pub const MAD_SCALE: f64 = 1.4826;
/// Scales a mean absolute deviation likewise (√(π/2)). It stands in for the MAD when more than half
/// of the comparable costs are equal, which makes the MAD zero while the others still spread.
pub const MEAN_AD_SCALE: f64 = 1.253_314;

/// A dimensionless statistic (a z-score, a spread of log costs, a threshold) with six decimals,
/// kept as an integer count of millionths so that events carrying it compare exactly and replay
/// to the same value on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Score(i64);

impl Score {
    const UNIT: f64 = 1_000_000.0;

    /// The nearest score; saturates beyond ±9.2 × 10¹², and NaN is zero.
    pub fn from_f64(value: f64) -> Score {
        Score((value * Self::UNIT).round() as i64)
    }

    pub fn from_micros(micros: i64) -> Score {
        Score(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn get(self) -> f64 {
        self.0 as f64 / Self::UNIT
    }
}

impl fmt::Display for Score {
    /// At most six decimals, none that are trailing zeros: `3.5`, `4.213457`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Why a task's cost was flagged: the figures it was judged on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CostOutlier {
    /// The task's cost when it was judged.
    pub cost: Money,
    /// The comparable tasks' median cost (on the log scale: for an even count, the geometric mean
    /// of the two middle costs).
    pub median: Money,
    /// The spread of the comparable log costs: the scaled MAD (or, when that is zero, the scaled
    /// mean absolute deviation).
    pub mad: Score,
    /// How many spreads the task's log cost lies above the median.
    pub z_score: Score,
    /// The `outliers.threshold` setting the z-score passed.
    pub threshold: Score,
    /// How many comparable tasks the cost was judged against.
    pub comparable: u32,
    /// The comparison group's key (see [`group`]).
    pub group: String,
}

impl CostOutlier {
    /// The flag in a sentence, for people.
    pub fn why(&self) -> String {
        format!(
            "cost {} against a median of {} over {} completed {}: {:.2} spreads (robust z) above it on the log scale, \
             past the threshold of {}",
            self.cost,
            self.median,
            self.comparable,
            describe_group(&self.group),
            self.z_score.get(),
            self.threshold,
        )
    }
}

/// The comparison group of a task: `stage:<workflow name, lower case>/<stage key>` for a workflow
/// stage's task (the stage's work is the same run after run, whatever it requires), else
/// `capabilities:<its required capabilities, sorted, comma-separated>`.
pub fn group(required_capabilities: &[String], stage: Option<(&str, &str)>) -> String {
    match stage {
        Some((workflow, stage_key)) => format!("stage:{}/{stage_key}", workflow.to_lowercase()),
        None => {
            let mut capabilities = required_capabilities.to_vec();
            capabilities.sort();
            format!("capabilities:{}", capabilities.join(","))
        }
    }
}

/// A group key in words: "tasks of stage `build` of workflow `release`", "tasks requiring rust".
pub fn describe_group(group: &str) -> String {
    if let Some(stage) = group.strip_prefix("stage:") {
        // Stage keys cannot contain `/`; workflow names can.
        let (workflow, key) = stage.rsplit_once('/').unwrap_or((stage, ""));
        return format!("tasks of stage `{key}` of workflow `{workflow}`");
    }
    match group.strip_prefix("capabilities:") {
        Some("") => "tasks requiring no capabilities".to_owned(),
        Some(capabilities) => format!("tasks requiring {}", capabilities.replace(',', ", ")),
        None => format!("tasks of group `{group}`"),
    }
}

/// Where a cost stands among comparable costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub median: Money,
    pub mad: Score,
    pub z_score: Score,
    /// How many comparable (non-zero) costs it was judged against.
    pub comparable: u32,
}

impl Verdict {
    /// The flag for `cost` if its z-score passes `threshold`.
    pub fn flag(&self, cost: Money, threshold: Score, group: String) -> Option<CostOutlier> {
        (self.z_score > threshold).then_some(CostOutlier {
            cost,
            median: self.median,
            mad: self.mad,
            z_score: self.z_score,
            threshold,
            comparable: self.comparable,
            group,
        })
    }
}

/// Judges `cost` against `comparables` (the costs of comparable tasks, not including the task's
/// own). `None` when it cannot be judged: a zero cost, fewer than `minimum` non-zero comparables
/// (zero costs have no logarithm and say nothing about what work costs), or comparables that do
/// not spread at all.
pub fn judge(cost: Money, comparables: &[Money], minimum: usize) -> Option<Verdict> {
    if cost.is_zero() {
        return None;
    }
    let mut logs: Vec<f64> = comparables.iter().filter(|c| !c.is_zero()).map(|c| ln(*c)).collect();
    if logs.is_empty() || logs.len() < minimum {
        return None;
    }
    let centre = median(&mut logs);
    let mut deviations: Vec<f64> = logs.iter().map(|l| (l - centre).abs()).collect();
    let mean_deviation = deviations.iter().sum::<f64>() / deviations.len() as f64;
    let mad = median(&mut deviations) * MAD_SCALE;
    let spread = if mad > 0.0 { mad } else { mean_deviation * MEAN_AD_SCALE };
    if spread <= 0.0 {
        return None;
    }
    Some(Verdict {
        median: Money::from_micros(centre.exp().round() as i64),
        mad: Score::from_f64(spread),
        z_score: Score::from_f64((ln(cost) - centre) / spread),
        comparable: u32::try_from(logs.len()).unwrap_or(u32::MAX),
    })
}

/// The natural logarithm of an amount in millionths: z-scores do not depend on the unit.
fn ln(amount: Money) -> f64 {
    (amount.micros() as f64).ln()
}

/// The median of a non-empty sample; sorts it.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(s: &str) -> Money {
        Money::parse("amount", s).unwrap()
    }

    fn costs(values: &[&str]) -> Vec<Money> {
        values.iter().map(|v| money(v)).collect()
    }

    #[test]
    fn the_z_score_is_the_log_distance_from_the_median_in_scaled_mads() {
        // Log costs ln 1, ln 2, ln 4, ln 8, ln 16: median ln 4, deviations {2, 1, 0, 1, 2} × ln 2.
        let peers = costs(&["1", "2", "4", "8", "16"]);
        let verdict = judge(money("64"), &peers, 5).unwrap();
        assert_eq!(verdict.median, money("4"));
        assert_eq!(verdict.comparable, 5);
        assert_eq!(verdict.mad, Score::from_f64(2f64.ln() * MAD_SCALE));
        // ln 64 − ln 4 = 4 ln 2: 4 / 1.4826 spreads.
        assert_eq!(verdict.z_score, Score::from_f64(4.0 / MAD_SCALE));
        assert_eq!(verdict.z_score.micros(), 2_697_963);
        // Below the median, the z-score is negative: only dear tasks are flagged.
        assert!(judge(money("0.5"), &peers, 5).unwrap().z_score < Score::default());
    }

    #[test]
    fn an_even_count_takes_the_geometric_mean_of_the_middle_costs() {
        let verdict = judge(money("1"), &costs(&["1", "2", "8", "9"]), 3).unwrap();
        assert_eq!(verdict.median, money("4"));
    }

    #[test]
    fn flags_only_past_the_threshold() {
        let peers = costs(&["1", "1.1", "0.9", "1.05", "0.95", "1.2", "0.8", "1"]);
        let verdict = judge(money("30"), &peers, 8).unwrap();
        let threshold = Score::from_f64(3.5);
        let flag = verdict.flag(money("30"), threshold, "capabilities:rust".into()).unwrap();
        assert_eq!((flag.cost, flag.comparable, flag.threshold), (money("30"), 8, threshold));
        assert!(flag.why().contains("over 8 completed tasks requiring rust"), "{}", flag.why());
        let ordinary = judge(money("1.15"), &peers, 8).unwrap();
        assert!(ordinary.flag(money("1.15"), threshold, "capabilities:rust".into()).is_none());
        // Exactly at the threshold is not past it.
        assert!(verdict.flag(money("30"), verdict.z_score, String::new()).is_none());
    }

    #[test]
    fn too_few_comparables_zero_costs_and_no_spread_are_not_judged() {
        let peers = costs(&["1", "2", "3"]);
        assert!(judge(money("100"), &peers, 4).is_none());
        assert!(judge(money("0"), &peers, 3).is_none());
        // Zero costs are not comparables.
        assert!(judge(money("100"), &costs(&["0", "0", "1", "2"]), 3).is_none());
        assert!(judge(money("100"), &[], 0).is_none());
        assert!(judge(money("100"), &costs(&["2", "2", "2"]), 3).is_none());
    }

    #[test]
    fn a_zero_mad_falls_back_to_the_mean_absolute_deviation() {
        // Most costs equal: the MAD is zero, the mean absolute deviation is not.
        let peers = costs(&["1", "1", "1", "1", "1", "1", "4"]);
        let verdict = judge(money("16"), &peers, 7).unwrap();
        let mean_deviation = 4f64.ln() / 7.0;
        assert_eq!(verdict.mad, Score::from_f64(mean_deviation * MEAN_AD_SCALE));
        assert_eq!(verdict.z_score, Score::from_f64(16f64.ln() / (mean_deviation * MEAN_AD_SCALE)));
    }

    #[test]
    fn groups_are_stages_or_capability_sets() {
        let rust_docs = vec!["rust".to_owned(), "docs".to_owned()];
        assert_eq!(group(&rust_docs, None), "capabilities:docs,rust");
        assert_eq!(group(&[], None), "capabilities:");
        assert_eq!(group(&rust_docs, Some(("Release", "build"))), "stage:release/build");
        assert_eq!(describe_group("stage:a/b/build"), "tasks of stage `build` of workflow `a/b`");
        assert_eq!(describe_group("capabilities:docs,rust"), "tasks requiring docs, rust");
        assert_eq!(describe_group("capabilities:"), "tasks requiring no capabilities");
    }

    #[test]
    fn scores_keep_six_decimals() {
        assert_eq!(Score::from_f64(4.213_457_4).micros(), 4_213_457);
        assert_eq!(Score::from_f64(f64::NAN), Score::default());
        assert_eq!(Score::from_f64(3.5).to_string(), "3.5");
        assert_eq!(Score::from_micros(-1_250_000).get(), -1.25);
    }
}
