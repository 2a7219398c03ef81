//! The figures measured, and the statistics and formatting of them.

use serde::Serialize;

use super::plan::{Mode, Topology};

/// Is a bigger figure in `unit` a better one?
pub fn higher_is_better(unit: &str) -> bool {
    matches!(unit, "Gbit/s" | "conn/s")
}

/// The samples of one figure: a metric of a scenario, in one topology and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub scenario: String,
    pub topology: Topology,
    pub mode: Mode,
    pub metric: String,
    pub unit: String,
    pub samples: Vec<f64>,
}

/// Every series, in the order they were first measured.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub series: Vec<Series>,
}

impl Store {
    pub fn push(
        &mut self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
        unit: &str,
        value: f64,
    ) {
        match self.series.iter_mut().find(|s| {
            s.scenario == scenario && s.topology == topology && s.mode == mode && s.metric == metric
        }) {
            Some(s) => s.samples.push(value),
            None => self.series.push(Series {
                scenario: scenario.to_owned(),
                topology,
                mode,
                metric: metric.to_owned(),
                unit: unit.to_owned(),
                samples: vec![value],
            }),
        }
    }

    pub fn get(
        &self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
    ) -> Option<&Series> {
        self.series.iter().find(|s| {
            s.scenario == scenario && s.topology == topology && s.mode == mode && s.metric == metric
        })
    }

    pub fn median(
        &self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
    ) -> Option<f64> {
        median(&self.get(scenario, topology, mode, metric)?.samples)
    }
}

/// The median: the middle sample, or the mean of the two middle ones.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `(min, median, max)`.
pub fn summarize(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let min = samples.iter().copied().min_by(f64::total_cmp)?;
    let max = samples.iter().copied().max_by(f64::total_cmp)?;
    Some((min, median(samples)?, max))
}

/// `a / b`, when both are measured and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// A figure with the digits that matter: 1234, 123, 12.3, 1.23.
pub fn format_number(x: f64) -> String {
    if !x.is_finite() {
        "–".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn format_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "–".to_owned()
    }
}

/// `median (min–max)`, or the value alone when there is one sample.
pub fn format_cell(samples: &[f64]) -> String {
    match summarize(samples) {
        None => "–".to_owned(),
        Some((min, med, max)) if samples.len() == 1 || min == max => format_number(med),
        Some((min, med, max)) => format!(
            "{} ({}–{})",
            format_number(med),
            format_number(min),
            format_number(max)
        ),
    }
}

/// A date and time in UTC, RFC 3339, from seconds since the Unix epoch.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One of the targets, and whether it is met (`None`: not measured).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    /// `<=` or `>=`.
    pub comparison: &'static str,
    pub limit: f64,
    pub met: Option<bool>,
}

impl Target {
    pub(super) fn at_most(name: String, value: Option<f64>, limit: f64) -> Target {
        Target {
            name,
            value,
            comparison: "<=",
            limit,
            met: value.map(|v| v <= limit),
        }
    }

    pub(super) fn at_least(name: String, value: Option<f64>, limit: f64) -> Target {
        Target {
            name,
            value,
            comparison: ">=",
            limit,
            met: value.map(|v| v >= limit),
        }
    }
}
