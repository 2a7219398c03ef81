//! Outlier detection: an endpoint that answers with errors in a row is left out of its
//! Service's balancing for a while — the base ejection time times the number of times it
//! was ejected, up to the maximum — and comes back by itself when that time is over.
//! Never more than the BackendPolicy's share of a Service's endpoints is out at once
//! (at least one may be). Each waypoint decides on what it sees itself.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use dataplane::discovery::{Key, MILLION, Outlier};
use serde::Serialize;

use crate::retry::Outcome;

#[derive(Debug, Default)]
struct State {
    server_errors: u32,
    gateway_errors: u32,
    /// Times ejected (forgotten after a healthy stretch as long as the maximum).
    ejections: u32,
    until: Option<Instant>,
}

/// An endpoint out of balancing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ejection {
    /// `namespace/name` of the Service.
    pub service: String,
    pub address: IpAddr,
    /// Times ejected, this one included.
    pub times: u32,
    /// Until it comes back.
    pub remaining_ms: u64,
}

#[derive(Debug, Default)]
pub struct Outliers {
    by_service: Mutex<HashMap<Key, HashMap<IpAddr, State>>>,
}

fn ejected(s: &State, now: Instant) -> bool {
    s.until.is_some_and(|u| u > now)
}

impl Outliers {
    /// Takes the outcome of an attempt to `address`, one of `endpoints` of Service
    /// `key`; returns how long the endpoint is ejected for when this ejects it.
    pub fn record(
        &self,
        (key, endpoints): (&Key, usize),
        rule: &Outlier,
        address: IpAddr,
        outcome: &Outcome,
        now: Instant,
    ) -> Option<Duration> {
        let mut map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        if !outcome.is_server_error() && !map.get(key).is_some_and(|m| m.contains_key(&address)) {
            // A success of an endpoint with nothing to remember: nothing to do.
            return None;
        }
        let service = match map.get_mut(key) {
            Some(m) => m,
            None => map.entry(key.clone()).or_default(),
        };
        let ejected_now = service.values().filter(|s| ejected(s, now)).count();
        let state = service.entry(address).or_default();
        if let Some(until) = state.until
            && until + rule.max_ejection <= now
        {
            // Healthy for as long as the longest ejection: a fresh start.
            state.ejections = 0;
            state.until = None;
        }
        if !outcome.is_server_error() {
            state.server_errors = 0;
            state.gateway_errors = 0;
            return None;
        }
        state.server_errors += 1;
        if outcome.is_gateway_error() {
            state.gateway_errors += 1;
        } else {
            state.gateway_errors = 0;
        }
        let tripped = rule
            .consecutive_5xx
            .is_some_and(|n| state.server_errors >= n)
            || rule
                .consecutive_gateway
                .is_some_and(|n| state.gateway_errors >= n);
        if !tripped || ejected(state, now) {
            return None;
        }
        let share = endpoints as u64 * u64::from(rule.max_ejected_ppm) / u64::from(MILLION);
        if ejected_now as u64 >= share.max(1) {
            return None;
        }
        state.ejections += 1;
        state.server_errors = 0;
        state.gateway_errors = 0;
        let length = rule
            .base_ejection
            .saturating_mul(state.ejections)
            .min(rule.max_ejection);
        state.until = Some(now + length);
        Some(length)
    }

    /// Whether `address` of Service `key` is ejected now.
    pub fn ejected(&self, key: &Key, address: IpAddr, now: Instant) -> bool {
        self.ejected_of(key, now).contains(&address)
    }

    /// The endpoints of Service `key` ejected now (most often none).
    pub fn ejected_of(&self, key: &Key, now: Instant) -> Vec<IpAddr> {
        let map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map_or_else(Vec::new, |m| {
            m.iter()
                .filter(|(_, s)| ejected(s, now))
                .map(|(a, _)| *a)
                .collect()
        })
    }

    /// Every endpoint ejected now.
    pub fn snapshot(&self, now: Instant) -> Vec<Ejection> {
        let map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Ejection> = map
            .iter()
            .flat_map(|(key, m)| m.iter().map(move |(a, s)| (key, a, s)))
            .filter_map(|(key, address, s)| {
                let left = s.until?.checked_duration_since(now)?;
                (!left.is_zero()).then(|| Ejection {
                    service: format!("{}/{}", key.1, key.2),
                    address: *address,
                    times: s.ejections,
                    remaining_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        list.sort_by(|a, b| (&a.service, a.address).cmp(&(&b.service, b.address)));
        list
    }

    /// Forgets endpoints with nothing to remember.
    pub fn sweep(&self, now: Instant) {
        let mut map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        for m in map.values_mut() {
            m.retain(|_, s| s.server_errors > 0 || s.gateway_errors > 0 || ejected(s, now));
        }
        map.retain(|_, m| !m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn key() -> Key {
        ("Service".into(), "shop".into(), "cart".into())
    }

    fn rule() -> Outlier {
        Outlier {
            consecutive_5xx: Some(3),
            consecutive_gateway: None,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(3),
            max_ejected_ppm: 100_000,
        }
    }

    const FAIL: Outcome = Outcome::Answered {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        grpc_status: None,
    };
    const OK: Outcome = Outcome::Answered {
        status: StatusCode::OK,
        grpc_status: None,
    };

    #[test]
    fn errors_in_a_row_eject_for_longer_each_time_up_to_the_maximum() {
        let o = Outliers::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let k = key();
        let record = |out: &Outcome, at: Instant| o.record((&k, 3), &rule(), a, out, at);
        assert_eq!(record(&FAIL, t0), None);
        assert_eq!(record(&FAIL, t0), None);
        assert_eq!(record(&OK, t0), None, "a success breaks the run");
        assert_eq!(record(&FAIL, t0), None);
        assert_eq!(record(&FAIL, t0), None);
        assert_eq!(record(&FAIL, t0), Some(Duration::from_secs(1)));
        assert!(o.ejected(&key(), a, t0));
        assert_eq!(o.snapshot(t0)[0].times, 1);
        let t1 = t0 + Duration::from_millis(1001);
        assert!(!o.ejected(&key(), a, t1), "back by itself");
        for _ in 0..2 {
            assert_eq!(record(&FAIL, t1), None);
        }
        assert_eq!(record(&FAIL, t1), Some(Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(3);
        for _ in 0..2 {
            record(&FAIL, t2);
        }
        assert_eq!(record(&FAIL, t2), Some(Duration::from_secs(3)), "capped");
        // Healthy for the longest ejection after its end: counted from one again.
        let t3 = t2 + Duration::from_secs(7);
        for _ in 0..2 {
            record(&FAIL, t3);
        }
        assert_eq!(record(&FAIL, t3), Some(Duration::from_secs(1)));
        o.sweep(t3 + Duration::from_secs(2));
        assert!(o.snapshot(t3 + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn at_most_the_share_of_endpoints_but_at_least_one() {
        let o = Outliers::default();
        let now = Instant::now();
        let k = key();
        let eject = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            (0..3)
                .filter_map(|_| o.record((&k, 3), &rule(), ip, &FAIL, now))
                .count()
        };
        assert_eq!(
            eject("10.0.0.1"),
            1,
            "10 % of 3 rounds down, yet one may go"
        );
        assert_eq!(eject("10.0.0.2"), 0, "a second would pass the share");
        assert_eq!(o.snapshot(now).len(), 1);
        let gateway = Outlier {
            consecutive_5xx: None,
            consecutive_gateway: Some(2),
            ..rule()
        };
        let b: IpAddr = "10.0.0.9".parse().unwrap();
        let other: Key = ("Service".into(), "shop".into(), "other".into());
        assert_eq!(o.record((&other, 3), &gateway, b, &FAIL, now), None);
        assert_eq!(
            o.record((&other, 3), &gateway, b, &Outcome::ConnectFailed, now),
            None
        );
        assert!(
            o.record((&other, 3), &gateway, b, &Outcome::TimedOut, now)
                .is_some()
        );
    }
}
