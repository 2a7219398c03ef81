//! Values as the wire carries them: counts, milliseconds, parts per million.

use crate::validate::gateway_duration;

/// A count; none (or, unreachable after validation, a negative one): 0.
pub fn number(n: Option<i64>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// A duration in milliseconds; none (or, unreachable after validation, a bad one): 0.
pub fn millis(d: Option<&String>) -> u64 {
    d.and_then(|d| gateway_duration(d).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parts per million of a percentage.
pub fn ppm(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32
}
