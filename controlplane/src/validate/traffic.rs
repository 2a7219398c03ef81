//! TrafficFilter and BackendPolicy, and the `ExtensionRef` filters of routes that name
//! a TrafficFilter: ranges (percentages 0–100, HTTP and gRPC statuses, counts under
//! their caps), durations, and references that must resolve.

use std::collections::BTreeSet;

use crate::model::{
    BackendPolicy, CircuitBreaker, Fault, LoadBalancerType, OutlierDetection, RateLimit, Retry,
    RouteFilter, RouteFilterType, TrafficFilter,
};

use super::{Check, Index, gateway_duration, header_name};

/// Retries after the first attempt, at most.
pub(super) const MAX_RETRIES: i64 = 10;

/// Limits and counts of these kinds, at most.
const MAX_COUNT: i64 = 1_000_000;

fn percentage(c: &mut Check<'_>, path: &str, p: f64) {
    if !(0.0..=100.0).contains(&p) {
        c.bad(path, format!("{p} is not a percentage (0 to 100)"));
    }
}

fn duration(c: &mut Check<'_>, path: &str, d: Option<&String>, positive: bool) {
    match d.map(|d| gateway_duration(d)) {
        Some(Err(e)) => c.bad(path, e),
        Some(Ok(d)) if positive && d.is_zero() => c.bad(path, "must be longer than 0s"),
        _ => {}
    }
}

fn count(c: &mut Check<'_>, path: &str, n: Option<i64>, min: i64, max: i64) {
    if let Some(n) = n
        && !(min..=max).contains(&n)
    {
        c.bad(path, format!("{n} is not between {min} and {max}"));
    }
}

fn grpc_status(c: &mut Check<'_>, path: &str, code: i64) {
    if !(1..=16).contains(&code) {
        c.bad(
            path,
            format!("{code} is not a gRPC error status (1 CANCELLED to 16 UNAUTHENTICATED)"),
        );
    }
}

pub(super) fn traffic_filter(c: &mut Check<'_>, f: &TrafficFilter) {
    let s = &f.spec;
    if s.fault.is_none() && s.rate_limit.is_none() && s.retry.is_none() {
        c.bad("spec", "give at least one of fault, rateLimit and retry");
    }
    if let Some(fault) = &s.fault {
        self::fault(c, fault);
    }
    if let Some(r) = &s.rate_limit {
        rate_limit(c, r);
    }
    if let Some(r) = &s.retry {
        retry(c, r);
    }
}

fn fault(c: &mut Check<'_>, f: &Fault) {
    if f.delay.is_none() && f.abort.is_none() {
        c.bad("spec.fault", "give a delay, an abort, or both");
    }
    if let Some(d) = &f.delay {
        duration(c, "spec.fault.delay.fixedDelay", Some(&d.fixed_delay), true);
        percentage(c, "spec.fault.delay.percentage", d.percentage);
    }
    if let Some(a) = &f.abort {
        percentage(c, "spec.fault.abort.percentage", a.percentage);
        match (a.http_status, a.grpc_status) {
            (Some(_), Some(_)) | (None, None) => {
                c.bad("spec.fault.abort", "give one of httpStatus and grpcStatus")
            }
            (Some(code), None) => {
                if !(200..=599).contains(&code) {
                    c.bad(
                        "spec.fault.abort.httpStatus",
                        format!("{code} is not an HTTP status (200-599)"),
                    );
                }
            }
            (None, Some(code)) => grpc_status(c, "spec.fault.abort.grpcStatus", code),
        }
    }
}

fn rate_limit(c: &mut Check<'_>, r: &RateLimit) {
    count(c, "spec.rateLimit.requests", Some(r.requests), 1, MAX_COUNT);
    count(c, "spec.rateLimit.burst", r.burst, 1, MAX_COUNT);
    duration(c, "spec.rateLimit.interval", r.interval.as_ref(), true);
}

fn retry(c: &mut Check<'_>, r: &Retry) {
    count(c, "spec.retry.attempts", r.attempts, 0, MAX_RETRIES);
    for (i, code) in r.codes.iter().enumerate() {
        if !(400..=599).contains(code) {
            c.bad(
                format!("spec.retry.codes[{i}]"),
                format!("{code} is not an HTTP error status (400-599)"),
            );
        }
    }
    for (i, code) in r.grpc_statuses.iter().enumerate() {
        grpc_status(c, &format!("spec.retry.grpcStatuses[{i}]"), *code);
    }
    if r.on.is_empty() && r.codes.is_empty() && r.grpc_statuses.is_empty() {
        c.bad(
            "spec.retry",
            "give what is retried: on, codes or grpcStatuses",
        );
    }
    duration(
        c,
        "spec.retry.perTryTimeout",
        r.per_try_timeout.as_ref(),
        true,
    );
    duration(c, "spec.retry.backoff", r.backoff.as_ref(), false);
    duration(c, "spec.retry.maxBackoff", r.max_backoff.as_ref(), false);
    if let (Some(Ok(base)), Some(Ok(max))) = (
        r.backoff.as_deref().map(gateway_duration),
        r.max_backoff.as_deref().map(gateway_duration),
    ) && max < base
    {
        c.bad("spec.retry.maxBackoff", "must not be shorter than backoff");
    }
}

/// The `ExtensionRef` filters of a rule (at `rule`) of a route in `ns`: each names a
/// TrafficFilter of the namespace, no two give the same thing, and retries come from
/// one place (`own_retry`: the rule has its own).
pub(super) fn extensions(
    c: &mut Check<'_>,
    index: &Index<'_>,
    (ns, rule): (&str, &str),
    filters: &[RouteFilter],
    own_retry: bool,
) {
    let mut given = BTreeSet::new();
    if own_retry {
        given.insert("retry");
    }
    for (i, f) in filters.iter().enumerate() {
        let (RouteFilterType::ExtensionRef, Some(r)) = (f.type_, &f.extension_ref) else {
            continue;
        };
        let base = format!("{rule}.filters[{i}].extensionRef");
        if r.group != "weft.dev" || r.kind != "TrafficFilter" {
            c.bad(
                format!("{base}.kind"),
                format!(
                    "{}/{}: Weft's extension filters are of group \"weft.dev\", kind \"TrafficFilter\"",
                    r.group, r.kind
                ),
            );
            continue;
        }
        let Some(spec) = index.traffic_filters.get(&(ns, r.name.as_str())) else {
            c.bad(
                format!("{base}.name"),
                format!("no TrafficFilter {ns}/{} is declared", r.name),
            );
            continue;
        };
        for (what, present) in [
            ("fault", spec.fault.is_some()),
            ("rateLimit", spec.rate_limit.is_some()),
            ("retry", spec.retry.is_some()),
        ] {
            if present && !given.insert(what) {
                c.bad(
                    format!("{base}.name"),
                    format!(
                        "TrafficFilter {ns}/{} gives {what}, which the rule has already",
                        r.name
                    ),
                );
            }
        }
    }
}

pub(super) fn backend_policy(c: &mut Check<'_>, index: &Index<'_>, p: &BackendPolicy) {
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    let s = &p.spec;
    if s.target_refs.is_empty() {
        c.bad("spec.targetRefs", "name at least one Service");
    }
    for (i, t) in s.target_refs.iter().enumerate() {
        let base = format!("spec.targetRefs[{i}]");
        if t.kind != "Service" || t.group.as_deref().is_some_and(|g| !g.is_empty()) {
            c.bad(
                format!("{base}.kind"),
                format!(
                    "{:?}: a BackendPolicy targets Services (core group)",
                    t.kind
                ),
            );
            continue;
        }
        // The first policy by name holds a Service; the others are refused.
        if let Some(first) = index.backend_targets.get(&(ns, t.name.as_str()))
            && *first != p.metadata.name
        {
            c.bad(
                format!("{base}.name"),
                format!(
                    "Service {ns}/{} is targeted by BackendPolicy {ns}/{first} already",
                    t.name
                ),
            );
        }
    }
    if let Some(cb) = &s.circuit_breaker {
        circuit_breaker(c, cb);
    }
    if let Some(o) = &s.outlier_detection {
        outlier(c, o);
    }
    if let Some(b) = &s.retry_budget {
        percentage(c, "spec.retryBudget.percent", b.percent);
        count(
            c,
            "spec.retryBudget.minRetries",
            b.min_retries,
            0,
            MAX_COUNT,
        );
    }
    if let Some(lb) = &s.load_balancer {
        match (lb.type_, &lb.consistent_hash) {
            (LoadBalancerType::ConsistentHash, None) => c.bad(
                "spec.loadBalancer.consistentHash",
                "required by type ConsistentHash",
            ),
            (LoadBalancerType::ConsistentHash, Some(h)) => {
                let keys = usize::from(h.header.is_some())
                    + usize::from(h.cookie.is_some())
                    + usize::from(h.source_ip);
                if keys != 1 {
                    c.bad(
                        "spec.loadBalancer.consistentHash",
                        "give one of header, cookie and sourceIP",
                    );
                }
                if let Some(Err(e)) = h.header.as_deref().map(header_name) {
                    c.bad("spec.loadBalancer.consistentHash.header", e);
                }
                if h.cookie.as_deref().is_some_and(str::is_empty) {
                    c.bad("spec.loadBalancer.consistentHash.cookie", "empty");
                }
            }
            (_, Some(_)) => c.bad(
                "spec.loadBalancer.consistentHash",
                "only goes with type ConsistentHash",
            ),
            (_, None) => {}
        }
    }
}

fn circuit_breaker(c: &mut Check<'_>, cb: &CircuitBreaker) {
    for (field, n) in [
        ("maxConnections", cb.max_connections),
        ("maxPendingRequests", cb.max_pending_requests),
        ("maxRequests", cb.max_requests),
        ("maxRetries", cb.max_retries),
    ] {
        count(c, &format!("spec.circuitBreaker.{field}"), n, 1, MAX_COUNT);
    }
}

fn outlier(c: &mut Check<'_>, o: &OutlierDetection) {
    let base = "spec.outlierDetection";
    count(
        c,
        &format!("{base}.consecutive5xx"),
        o.consecutive_5xx,
        1,
        1000,
    );
    count(
        c,
        &format!("{base}.consecutiveGatewayErrors"),
        o.consecutive_gateway_errors,
        1,
        1000,
    );
    let base_time = format!("{base}.baseEjectionTime");
    duration(c, &base_time, o.base_ejection_time.as_ref(), true);
    duration(
        c,
        &format!("{base}.maxEjectionTime"),
        o.max_ejection_time.as_ref(),
        true,
    );
    if let Some(p) = o.max_ejection_percent {
        percentage(c, &format!("{base}.maxEjectionPercent"), p);
    }
}
