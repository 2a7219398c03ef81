//! Reading configuration: every binary has one typed `Config`, read once from a
//! [`Source`] — the process environment in production, a map in tests — and checked up
//! front with errors that name the variable and the value.

use std::{collections::HashMap, time::Duration};

/// Where configuration values come from.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).map(|v| (*v).to_owned())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key}={value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("{key} is not set and {reason}")]
    Missing {
        key: &'static str,
        reason: &'static str,
    },
}

/// A duration written with a unit: `500ms`, `10s`, `2m`, `24h`; `default` when unset.
pub fn duration(
    source: &impl Source,
    key: &'static str,
    default: Duration,
) -> Result<Duration, Error> {
    let Some(value) = source.get(key) else {
        return Ok(default);
    };
    let invalid = |reason: &str| Error::Invalid {
        key,
        value: value.clone(),
        reason: reason.to_owned(),
    };
    let (number, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| value.split_at(i))
        .ok_or_else(|| invalid("missing unit (ms, s, m or h)"))?;
    let n: u64 = number
        .parse()
        .map_err(|_| invalid("expected a whole number followed by ms, s, m or h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(invalid("unknown unit; expected ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(invalid("must be greater than zero"));
    }
    Ok(d)
}

/// A value parsed with `FromStr`; `default` when unset.
pub fn parsed<T: std::str::FromStr>(
    source: &impl Source,
    key: &'static str,
    default: T,
) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    match source.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| Error::Invalid {
            key,
            value: v.clone(),
            reason: e.to_string(),
        }),
    }
}

/// A whole number within `range`, or `default` when unset.
pub fn bounded(
    source: &impl Source,
    key: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, Error> {
    let Some(v) = source.get(key) else {
        return Ok(default);
    };
    match v.trim().parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(Error::Invalid {
            key,
            value: v,
            reason: format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// An `on` / `off` switch; `default` when unset.
pub fn switch(source: &impl Source, key: &'static str, default: bool) -> Result<bool, Error> {
    match source.get(key).as_deref() {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(v) => Err(Error::Invalid {
            key,
            value: v.to_owned(),
            reason: "expected \"on\" or \"off\"".to_owned(),
        }),
    }
}

/// A listening address: `default` when unset, `None` for `off`.
pub fn listen_addr(
    source: &impl Source,
    key: &'static str,
    default: std::net::SocketAddr,
) -> Result<Option<std::net::SocketAddr>, Error> {
    match source.get(key).as_deref() {
        None => Ok(Some(default)),
        Some("off") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| Error::Invalid {
            key,
            value: v.to_owned(),
            reason: format!("not an address and port, nor \"off\": {e}"),
        }),
    }
}

/// This machine's host name (a pod's is its name), in lower case; `None` when it cannot
/// be read or is empty.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        let src = HashMap::from([("A", "250ms"), ("B", "2m"), ("C", "24h")]);
        assert_eq!(
            duration(&src, "A", Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            duration(&src, "B", Duration::ZERO).unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            duration(&src, "C", Duration::ZERO).unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(
            duration(&src, "D", Duration::from_secs(3)).unwrap(),
            Duration::from_secs(3)
        );
        for bad in ["10", "10d", "s", "0s"] {
            let src = HashMap::from([("X", bad)]);
            let e = duration(&src, "X", Duration::ZERO).unwrap_err();
            assert!(e.to_string().starts_with("X="), "{bad}: {e}");
        }
    }

    #[test]
    fn parsed_values_name_the_key() {
        let src = HashMap::from([("N", "twelve")]);
        let e = parsed::<u32>(&src, "N", 1).unwrap_err();
        assert_eq!(e.to_string(), "N=\"twelve\": invalid digit found in string");
        assert_eq!(parsed::<u32>(&src, "M", 7).unwrap(), 7);
    }
}
