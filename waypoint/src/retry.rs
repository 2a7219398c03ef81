//! A rule's retries: which outcomes of an attempt are tried again, how long to wait
//! before the next (exponential, with jitter), and each attempt's limit. Whether a
//! retry may go at all is also the Service's to say (its circuit breaker's retry limit
//! and its retry budget, `breaker.rs`).

use std::time::Duration;

use api::proto::config as wire;
use http::{Method, StatusCode};

/// The first wait when the configuration gives none.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response (its gRPC status when its headers carry one: a trailers-only answer).
    Answered {
        status: StatusCode,
        grpc_status: Option<u32>,
    },
    /// The endpoint was never reached.
    ConnectFailed,
    /// The endpoint took the request, then the connection or stream failed.
    Reset,
    /// No answer within the attempt's limit.
    TimedOut,
}

impl Outcome {
    /// A gateway error: 502, 503, 504, or no answer at all.
    pub fn is_gateway_error(&self) -> bool {
        match self {
            Outcome::Answered { status, .. } => matches!(status.as_u16(), 502..=504),
            _ => true,
        }
    }

    /// A server error: any 5xx, or no answer at all.
    pub fn is_server_error(&self) -> bool {
        match self {
            Outcome::Answered { status, .. } => status.is_server_error(),
            _ => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    codes: Vec<u16>,
    on_5xx: bool,
    on_gateway_error: bool,
    on_connect_failure: bool,
    on_reset: bool,
    grpc_statuses: Vec<u32>,
    backoff: Duration,
    max_backoff: Duration,
    /// Requests with a body whose method is not idempotent are retried too.
    pub non_idempotent: bool,
    /// Each attempt's limit (else the rule's backend request timeout).
    pub per_try_timeout: Option<Duration>,
}

impl Retry {
    pub fn compile(r: &wire::HttpRetry) -> Self {
        let ms = |n: u64| (n > 0).then(|| Duration::from_millis(n));
        let backoff = ms(r.backoff_ms).unwrap_or(DEFAULT_BACKOFF);
        let mut codes: Vec<u16> = r
            .codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect();
        let nothing_named = codes.is_empty()
            && !r.on_5xx
            && !r.on_gateway_error
            && !r.on_reset
            && r.grpc_statuses.is_empty();
        if nothing_named {
            // Gateway API leaves the default to the implementation: the answers of an
            // endpoint that is down or overloaded.
            codes = vec![502, 503, 504];
        }
        Retry {
            attempts: r.attempts,
            codes,
            on_5xx: r.on_5xx,
            on_gateway_error: r.on_gateway_error,
            on_connect_failure: r.on_connect_failure,
            on_reset: r.on_reset,
            grpc_statuses: r.grpc_statuses.clone(),
            backoff,
            max_backoff: ms(r.max_backoff_ms).unwrap_or(backoff * 10).max(backoff),
            non_idempotent: r.non_idempotent,
            per_try_timeout: ms(r.per_try_timeout_ms),
        }
    }

    /// Whether an attempt that ended so is worth another.
    pub fn retries(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Answered {
                status,
                grpc_status,
            } => {
                self.codes.contains(&status.as_u16())
                    || (self.on_5xx && outcome.is_server_error())
                    || (self.on_gateway_error && outcome.is_gateway_error())
                    || grpc_status.is_some_and(|s| self.grpc_statuses.contains(&s))
            }
            Outcome::ConnectFailed => {
                self.on_connect_failure || self.on_5xx || self.on_gateway_error
            }
            Outcome::Reset => self.on_reset || self.on_5xx || self.on_gateway_error,
            Outcome::TimedOut => self.on_5xx || self.on_gateway_error || self.codes.contains(&504),
        }
    }

    /// The wait before retry `n` (1 for the first): the backoff doubled for each retry
    /// before it, at most the longest backoff, and of that between half and all, at
    /// random, so that callers who failed together do not come back together.
    pub fn backoff(&self, n: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let ceiling = doubled.min(self.max_backoff);
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// Whether sending a request again could repeat its effect: a body with a method that
/// is not idempotent (RFC 9110 §9.2.2).
pub fn may_repeat_effect(method: &Method, has_body: bool) -> bool {
    has_body
        && !matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> Outcome {
        Outcome::Answered {
            status: StatusCode::from_u16(code).unwrap(),
            grpc_status: None,
        }
    }

    #[test]
    fn what_is_retried() {
        // An HTTPRoute's retry: its codes, and connect failures.
        let route = Retry::compile(&wire::HttpRetry {
            codes: vec![503],
            attempts: 2,
            on_connect_failure: true,
            ..Default::default()
        });
        assert!(route.retries(&answered(503)));
        assert!(!route.retries(&answered(500)));
        assert!(route.retries(&Outcome::ConnectFailed));
        assert!(!route.retries(&Outcome::Reset));
        assert!(!route.retries(&Outcome::TimedOut));

        let filter = Retry::compile(&wire::HttpRetry {
            attempts: 3,
            on_5xx: true,
            grpc_statuses: vec![14],
            ..Default::default()
        });
        for outcome in [
            answered(500),
            answered(599),
            Outcome::Reset,
            Outcome::TimedOut,
        ] {
            assert!(filter.retries(&outcome), "{outcome:?}");
        }
        assert!(!filter.retries(&answered(429)));
        let unavailable = Outcome::Answered {
            status: StatusCode::OK,
            grpc_status: Some(14),
        };
        assert!(filter.retries(&unavailable));

        let gateway = Retry::compile(&wire::HttpRetry {
            on_gateway_error: true,
            ..Default::default()
        });
        assert!(gateway.retries(&answered(502)) && gateway.retries(&answered(504)));
        assert!(!gateway.retries(&answered(500)));

        // Nothing named: the gateway errors.
        let default = Retry::compile(&wire::HttpRetry::default());
        assert!(default.retries(&answered(503)));
        assert!(!default.retries(&answered(500)));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let r = Retry::compile(&wire::HttpRetry {
            codes: vec![503],
            backoff_ms: 100,
            max_backoff_ms: 300,
            ..Default::default()
        });
        for _ in 0..200 {
            let first = r.backoff(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let second = r.backoff(2);
            assert!((100..=200).contains(&second.as_millis()), "{second:?}");
            let tenth = r.backoff(10);
            assert!((150..=300).contains(&tenth.as_millis()), "{tenth:?}");
        }
        // Not all the same.
        let waits: std::collections::BTreeSet<_> = (0..50).map(|_| r.backoff(1)).collect();
        assert!(waits.len() > 10);
        // No cap given: ten times the backoff.
        let r = Retry::compile(&wire::HttpRetry {
            backoff_ms: 10,
            ..Default::default()
        });
        assert!(r.backoff(30) <= Duration::from_millis(100));
    }

    #[test]
    fn only_bodies_of_unsafe_methods_may_repeat_an_effect() {
        assert!(may_repeat_effect(&Method::POST, true));
        assert!(may_repeat_effect(&Method::PATCH, true));
        assert!(!may_repeat_effect(&Method::POST, false));
        assert!(!may_repeat_effect(&Method::PUT, true));
        assert!(!may_repeat_effect(&Method::GET, true));
    }
}
