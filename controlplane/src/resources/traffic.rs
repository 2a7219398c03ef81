//! Weft's traffic kinds as the wire carries them: a `TrafficFilter` named by a rule's
//! `ExtensionRef` is copied into the rule (its fault and rate limit as filters, its
//! retry as the rule's), and a `BackendPolicy` into each Service it targets. Waypoints
//! so never wait for one document to make sense of another.

use std::collections::BTreeMap;

use api::proto::config as wire;

use super::units::{millis, number, ppm};
use crate::model::{
    BackendPolicySpec, Document, HttpRouteRetry, LoadBalancerType, Object, RetryOn, RouteFilter,
    RouteFilterType, TrafficFilterSpec,
};

/// The TrafficFilters and BackendPolicies of a set of documents.
#[derive(Debug, Default)]
pub struct Traffic<'a> {
    /// By (namespace, name).
    filters: BTreeMap<(&'a str, &'a str), &'a TrafficFilterSpec>,
    /// By the (namespace, name) of the Service they target; the first by name wins
    /// (validation refuses a second).
    backends: BTreeMap<(&'a str, &'a str), &'a BackendPolicySpec>,
}

impl<'a> Traffic<'a> {
    pub fn new(docs: &'a [Document]) -> Self {
        let mut t = Traffic::default();
        let mut policies: Vec<(&str, &str, &BackendPolicySpec)> = Vec::new();
        for d in docs {
            let ns = d.object.metadata().namespace.as_deref().unwrap_or_default();
            match &d.object {
                Object::TrafficFilter(f) => {
                    t.filters.insert((ns, &f.metadata.name), &f.spec);
                }
                Object::BackendPolicy(p) => policies.push((ns, &p.metadata.name, &p.spec)),
                _ => {}
            }
        }
        policies.sort_by_key(|(ns, name, _)| (*ns, *name));
        for (ns, _, spec) in policies {
            for target in spec.target_refs.iter().filter(|r| r.kind == "Service") {
                t.backends.entry((ns, &target.name)).or_insert(spec);
            }
        }
        t
    }

    /// The TrafficFilter an `ExtensionRef` filter of a route in `ns` names.
    fn filter(&self, ns: &str, f: &RouteFilter) -> Option<&'a TrafficFilterSpec> {
        let r = f.extension_ref.as_ref()?;
        if f.type_ != RouteFilterType::ExtensionRef
            || r.group != "weft.dev"
            || r.kind != "TrafficFilter"
        {
            return None;
        }
        self.filters.get(&(ns, r.name.as_str())).copied()
    }

    /// The wire filters the TrafficFilters of `filters` add to a rule.
    pub fn rule_filters(&self, ns: &str, filters: &[RouteFilter]) -> Vec<wire::RouteFilter> {
        use wire::route_filter::Filter;
        let mut out = Vec::new();
        for spec in filters.iter().filter_map(|f| self.filter(ns, f)) {
            if let Some(fault) = &spec.fault {
                let delay = fault.delay.as_ref();
                let abort = fault.abort.as_ref();
                out.push(Filter::Fault(wire::Fault {
                    delay_ms: millis(delay.map(|d| &d.fixed_delay)),
                    delay_ppm: delay.map_or(0, |d| ppm(d.percentage)),
                    abort_http_status: number(abort.and_then(|a| a.http_status)),
                    abort_grpc_status: number(abort.and_then(|a| a.grpc_status)),
                    abort_ppm: abort.map_or(0, |a| ppm(a.percentage)),
                }));
            }
            if let Some(r) = &spec.rate_limit {
                let requests = number(Some(r.requests));
                out.push(Filter::RateLimit(wire::RateLimit {
                    requests,
                    interval_ms: match millis(r.interval.as_ref()) {
                        0 => 1000,
                        ms => ms,
                    },
                    burst: r.burst.map_or(requests, |b| number(Some(b))),
                }));
            }
        }
        out.into_iter()
            .map(|f| wire::RouteFilter { filter: Some(f) })
            .collect()
    }

    /// A rule's retries: its own `retry` (HTTPRoute), else a TrafficFilter's.
    pub fn retry(
        &self,
        ns: &str,
        own: Option<&HttpRouteRetry>,
        filters: &[RouteFilter],
    ) -> Option<wire::HttpRetry> {
        if let Some(r) = own {
            return Some(wire::HttpRetry {
                codes: r.codes.iter().map(|c| number(Some(*c))).collect(),
                attempts: number(Some(r.attempts.unwrap_or(2))),
                backoff_ms: millis(r.backoff.as_ref()),
                // A request the endpoint never got is always safe to send again.
                on_connect_failure: true,
                ..wire::HttpRetry::default()
            });
        }
        let r = filters
            .iter()
            .filter_map(|f| self.filter(ns, f))
            .find_map(|s| s.retry.as_ref())?;
        Some(wire::HttpRetry {
            codes: r.codes.iter().map(|c| number(Some(*c))).collect(),
            attempts: number(Some(r.attempts.unwrap_or(2))),
            backoff_ms: millis(r.backoff.as_ref()),
            on_5xx: r.on.contains(&RetryOn::ServerError),
            on_gateway_error: r.on.contains(&RetryOn::GatewayError),
            on_connect_failure: r.on.contains(&RetryOn::ConnectFailure),
            on_reset: r.on.contains(&RetryOn::Reset),
            grpc_statuses: r.grpc_statuses.iter().map(|c| number(Some(*c))).collect(),
            max_backoff_ms: millis(r.max_backoff.as_ref()),
            non_idempotent: r.non_idempotent,
            per_try_timeout_ms: millis(r.per_try_timeout.as_ref()),
        })
    }

    /// The load balancer and settings a BackendPolicy gives Service `ns/name`.
    pub fn backend(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<(Option<&'static str>, wire::BackendSettings)> {
        let spec = self.backends.get(&(ns, name))?;
        let settings = wire::BackendSettings {
            circuit_breaker: spec.circuit_breaker.as_ref().map(|c| wire::CircuitBreaker {
                max_connections: number(c.max_connections),
                max_pending_requests: number(c.max_pending_requests),
                max_requests: number(c.max_requests),
                max_retries: number(c.max_retries),
            }),
            outlier_detection: spec
                .outlier_detection
                .as_ref()
                .map(|o| wire::OutlierDetection {
                    consecutive_5xx: number(Some(o.consecutive_5xx.unwrap_or(5))),
                    consecutive_gateway_errors: number(o.consecutive_gateway_errors),
                    base_ejection_ms: match millis(o.base_ejection_time.as_ref()) {
                        0 => 30_000,
                        ms => ms,
                    },
                    max_ejection_ms: match millis(o.max_ejection_time.as_ref()) {
                        0 => 300_000,
                        ms => ms,
                    },
                    max_ejection_ppm: ppm(o.max_ejection_percent.unwrap_or(10.0)),
                }),
            retry_budget: spec.retry_budget.as_ref().map(|b| wire::RetryBudget {
                ppm: ppm(b.percent),
                min_retries: number(b.min_retries),
            }),
            consistent_hash: spec
                .load_balancer
                .as_ref()
                .and_then(|lb| lb.consistent_hash.as_ref())
                .map(|h| {
                    use wire::consistent_hash::Key;
                    let key = match (&h.header, &h.cookie) {
                        (Some(header), _) => Key::Header(header.to_ascii_lowercase()),
                        (None, Some(cookie)) => Key::Cookie(cookie.clone()),
                        (None, None) => Key::SourceIp(true),
                    };
                    wire::ConsistentHash { key: Some(key) }
                }),
        };
        let lb = spec.load_balancer.as_ref().map(|lb| match lb.type_ {
            LoadBalancerType::RoundRobin => "ROUND_ROBIN",
            LoadBalancerType::LeastRequest => "LEAST_REQUEST",
            LoadBalancerType::ConsistentHash => "CONSISTENT_HASH",
        });
        Some((lb, settings))
    }
}
