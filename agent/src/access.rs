//! The access log of connections, on the `weft::access` target (JSON with
//! `WEFT_LOG_FORMAT=json`): one line per connection, by each reporter, with both
//! identities, bytes, duration, decision and policy, and the caller a waypoint forwards
//! for.

use std::{net::SocketAddr, time::Duration};

use crate::{metrics::ConnectionLabels, policy};

/// The caller a waypoint forwards for: the `baggage` entry `weft.source.principal` of
/// its CONNECT request, with the address of `forwarded: for=`. Only informative (the
/// tunnel's peer is the waypoint); logged, never used to decide.
pub fn original_caller(headers: &http::HeaderMap) -> Option<String> {
    let principal = dataplane::hbone::baggage::get(headers, "weft.source.principal");
    let address = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split([';', ','])
                .find_map(|p| p.trim().strip_prefix("for="))
                .map(|a| a.trim_matches('"'))
        });
    match (principal, address) {
        (None, None) => None,
        (p, a) => Some(format!("{} {}", p.unwrap_or("-"), a.unwrap_or("-"))),
    }
}

/// One line per connection on the `weft::access` target. `via` is the caller a
/// waypoint forwards for (principal and address), if any.
pub fn access_log(
    labels: &ConnectionLabels,
    (src, dst, via): (SocketAddr, SocketAddr, Option<&str>),
    decision: &policy::Decision,
    sent: u64,
    received: u64,
    duration: Duration,
) {
    tracing::info!(
        target: "weft::access",
        reporter = labels.reporter.name(),
        src = %src,
        dst = %dst,
        via = via.unwrap_or("-"),
        src_workload = %format_args!("{}/{}", labels.source_workload_namespace, labels.source_workload),
        src_identity = %labels.source_principal,
        dst_workload = %format_args!("{}/{}", labels.destination_workload_namespace, labels.destination_workload),
        dst_identity = %labels.destination_principal,
        dst_service = %labels.destination_service,
        security = labels.connection_security_policy,
        decision = if decision.allowed { "allow" } else { "deny" },
        policy = %decision.reason,
        version = decision.version,
        flags = labels.response_flags,
        sent,
        received,
        duration_ms = duration.as_millis() as u64,
        "connection"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_caller_comes_from_baggage_and_forwarded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(original_caller(&h), None);
        h.insert(
            "baggage",
            "k=v, weft.source.principal=spiffe://cluster.local/ns/shop/sa/frontend;p=1"
                .parse()
                .unwrap(),
        );
        h.insert(
            "forwarded",
            "for=\"10.244.1.2\";proto=http".parse().unwrap(),
        );
        assert_eq!(
            original_caller(&h).as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/frontend 10.244.1.2")
        );
    }
}
