//! How waypoints treat a backend Service, from the BackendPolicy that targets it: the
//! circuit breaker's limits, outlier detection, the retry budget, and what consistent
//! hashing hashes on. The wire's zeros (none given) become `None`.

use std::time::Duration;

use api::proto::config as wire;

/// A share in parts per million, as the wire carries percentages.
pub const MILLION: u32 = 1_000_000;

/// Limits of each waypoint towards a Service; `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Upstream HTTP connections open to the Service's endpoints.
    pub connections: Option<u32>,
    /// Requests waiting for one of `requests` to end.
    pub pending: Option<u32>,
    /// Requests in flight, retries included.
    pub requests: Option<u32>,
    /// Retries in flight.
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive 5xx answers (local failures included) that eject an endpoint.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502, 503 and 504 answers and connection failures that eject one.
    pub consecutive_gateway: Option<u32>,
    /// The first ejection's length; the n-th lasts n times as long, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// The share of a Service's endpoints that may be ejected at once, in ppm.
    pub max_ejected_ppm: u32,
}

/// Retries may be at most `ppm` of the requests, plus `min_retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    pub ppm: u32,
    pub min_retries: u32,
}

/// What consistent hashing hashes a request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value (the name in lower case).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The caller's address.
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    pub limits: Limits,
    pub outlier: Option<Outlier>,
    pub retry_budget: Option<RetryBudget>,
    pub hash_on: Option<HashOn>,
}

fn some(n: u32) -> Option<u32> {
    (n > 0).then_some(n)
}

impl Backend {
    pub fn from_wire(b: Option<wire::BackendSettings>) -> Self {
        let Some(b) = b else {
            return Self::default();
        };
        Self {
            limits: b
                .circuit_breaker
                .map(|c| Limits {
                    connections: some(c.max_connections),
                    pending: some(c.max_pending_requests),
                    requests: some(c.max_requests),
                    retries: some(c.max_retries),
                })
                .unwrap_or_default(),
            outlier: b.outlier_detection.map(|o| Outlier {
                consecutive_5xx: some(o.consecutive_5xx),
                consecutive_gateway: some(o.consecutive_gateway_errors),
                base_ejection: Duration::from_millis(o.base_ejection_ms),
                max_ejection: Duration::from_millis(o.max_ejection_ms.max(o.base_ejection_ms)),
                max_ejected_ppm: o.max_ejection_ppm.min(MILLION),
            }),
            retry_budget: b.retry_budget.map(|r| RetryBudget {
                ppm: r.ppm.min(MILLION),
                min_retries: r.min_retries,
            }),
            hash_on: b.consistent_hash.and_then(|h| {
                use wire::consistent_hash::Key;
                Some(match h.key? {
                    Key::Header(name) => HashOn::Header(name.to_ascii_lowercase()),
                    Key::Cookie(name) => HashOn::Cookie(name),
                    Key::SourceIp(_) => HashOn::SourceIp,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_no_limit_and_absent_is_default() {
        assert_eq!(Backend::from_wire(None), Backend::default());
        let b = Backend::from_wire(Some(wire::BackendSettings {
            circuit_breaker: Some(wire::CircuitBreaker {
                max_requests: 10,
                ..Default::default()
            }),
            outlier_detection: Some(wire::OutlierDetection {
                consecutive_5xx: 3,
                base_ejection_ms: 2000,
                max_ejection_ms: 1000,
                max_ejection_ppm: 2_000_000,
                ..Default::default()
            }),
            retry_budget: None,
            consistent_hash: Some(wire::ConsistentHash {
                key: Some(wire::consistent_hash::Key::Header("X-User".into())),
            }),
        }));
        assert_eq!(
            b.limits,
            Limits {
                requests: Some(10),
                ..Limits::default()
            }
        );
        let o = b.outlier.unwrap();
        assert_eq!(o.consecutive_gateway, None);
        // The longest ejection is never shorter than the first; shares stop at 100 %.
        assert_eq!(o.max_ejection, Duration::from_secs(2));
        assert_eq!(o.max_ejected_ppm, MILLION);
        assert_eq!(b.hash_on, Some(HashOn::Header("x-user".into())));
    }
}
