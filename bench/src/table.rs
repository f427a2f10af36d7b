//! The table the benchmark prints: each devart figure beside its same-run baseline, the ratio,
//! the target and whether it was met; and, above it, where it was measured.

use std::fmt;

use devart_testkit::Stack;

/// One line of the table: a devart figure beside its same-run baseline.
pub(crate) struct Row {
    pub name: String,
    pub figure: f64,
    pub unit: &'static str,
    pub baseline: Option<f64>,
    pub target: Target,
}

/// What a row must reach to pass.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// Context only.
    None,
    /// `figure / baseline` at least this.
    RatioAtLeast(f64),
    /// `figure / baseline` at most this.
    RatioAtMost(f64),
    AtLeast(f64),
    AtMost(f64),
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.figure / b)
    }

    fn passed(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(min) => Some(self.ratio().is_some_and(|r| r >= min)),
            Target::RatioAtMost(max) => Some(self.ratio().is_some_and(|r| r <= max)),
            Target::AtLeast(min) => Some(self.figure >= min),
            Target::AtMost(max) => Some(self.figure <= max),
        }
    }

    fn cells(&self) -> [String; 7] {
        let optional = |v: Option<String>| v.unwrap_or_else(|| "—".into());
        [
            self.name.clone(),
            number(self.figure),
            self.unit.to_owned(),
            optional(self.baseline.map(number)),
            optional(self.ratio().map(|r| format!("{r:.2}"))),
            self.target.to_string(),
            optional(self.passed().map(|p| if p { "pass" } else { "FAIL" }.to_owned())),
        ]
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::None => f.write_str("—"),
            Target::RatioAtLeast(min) => write!(f, "ratio ≥ {min:.2}"),
            Target::RatioAtMost(max) => write!(f, "ratio ≤ {max:.2}"),
            Target::AtLeast(min) => write!(f, "≥ {}", number(*min)),
            Target::AtMost(max) => write!(f, "≤ {}", number(*max)),
        }
    }
}

/// Rates with thousands separators; small figures (milliseconds) with two significant digits or so.
pub(crate) fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        let digits = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The rows as a Markdown table, aligned for the terminal too.
pub(crate) struct Table<'a>(pub &'a [Row]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEADER: [&str; 7] = ["benchmark", "figure", "unit", "baseline", "ratio", "target", "result"];
        let rows: Vec<[String; 7]> = self.0.iter().map(Row::cells).collect();
        let mut widths = HEADER.map(|h| h.chars().count());
        for cells in &rows {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if left_aligned(i) {
                    write!(f, "| {cell}{} ", " ".repeat(pad))?;
                } else {
                    write!(f, "| {}{cell} ", " ".repeat(pad))?;
                }
            }
            writeln!(f, "|")
        };
        line(f, &HEADER.map(str::to_owned))?;
        let rules: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| if left_aligned(i) { "-".repeat(*w) } else { format!("{}:", "-".repeat(w - 1)) })
            .collect();
        line(f, &rules)?;
        for cells in &rows {
            line(f, cells)?;
        }
        Ok(())
    }
}

/// Names and words read left-aligned, numbers right-aligned.
fn left_aligned(column: usize) -> bool {
    matches!(column, 0 | 2 | 5 | 6)
}

/// Where the figures were measured, printed above the table.
pub(crate) struct Environment {
    cores: usize,
    memory_gib: Option<f64>,
    postgres: String,
    synchronous_commit: String,
    nats: String,
}

impl Environment {
    pub(crate) async fn read(scratch: &Stack) -> anyhow::Result<Environment> {
        let postgres: String = sqlx::query_scalar("show server_version").fetch_one(&scratch.pool).await?;
        let synchronous_commit: String = sqlx::query_scalar("show synchronous_commit").fetch_one(&scratch.pool).await?;
        let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
            let kib: f64 = info
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024.0 / 1024.0)
        });
        Ok(Environment {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            postgres,
            synchronous_commit,
            nats: scratch.bus.client.server_info().version,
        })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cores", self.cores)?;
        if let Some(memory) = self.memory_gib {
            write!(f, ", {memory:.1} GiB")?;
        }
        write!(f, "; Postgres {} (synchronous_commit = {}); NATS {}", self.postgres, self.synchronous_commit, self.nats)
    }
}
