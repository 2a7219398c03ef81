//! The waypoint's metrics, on 15020 (`GET /metrics`), with the label schema mesh
//! dashboards know: per request `weft_requests_total`,
//! `weft_request_duration_milliseconds`, `weft_request_bytes` and
//! `weft_response_bytes` (`reporter="waypoint"`, source and destination workload,
//! namespace and principal, destination service, response code, gRPC status, request
//! protocol, connection security policy, response flags); per stream passed through as
//! TCP the `weft_tcp_*` counters the agents also export; and the waypoint's own
//! counters (`weft_waypoint_*`).

use dataplane::{policy::Decision, telemetry::Reporter};
use prometheus_client::{
    encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels of one request: those of the connection schema (`request_protocol` is
/// `http` or `grpc`), with its answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RequestLabels {
    /// `response_flags`: `-`, or what went wrong (see `respond.rs`).
    pub connection: TcpLabels,
    pub response_code: u16,
    /// The gRPC status of a gRPC response (`0` OK …), else empty.
    pub grpc_response_status: String,
}

impl Default for RequestLabels {
    fn default() -> Self {
        RequestLabels {
            connection: TcpLabels {
                reporter: Reporter::Waypoint,
                request_protocol: "http",
                connection_security_policy: "mutual_tls",
                ..TcpLabels::default()
            },
            response_code: 0,
            grpc_response_status: String::new(),
        }
    }
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, mut encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.connection.encode_into(&mut encoder)?;
        ("response_code", self.response_code).encode(encoder.encode_label())?;
        ("grpc_response_status", self.grpc_response_status.as_str()).encode(encoder.encode_label())
    }
}

/// Labels of one stream passed through as TCP: the agents' connection schema.
pub use dataplane::telemetry::ConnectionLabels as TcpLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A backend Service (`namespace/name`) and which of its limits, or why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `namespace/name` of the deciding policy, or why none decided.
    pub policy: String,
    /// `allow` or `deny`.
    pub decision: &'static str,
}

fn histogram_ms() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.5, 2.0, 17))
}

fn histogram_bytes() -> Histogram {
    // 1 B to 16 MiB.
    Histogram::new(exponential_buckets(1.0, 4.0, 13))
}

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Histograms,
    pub request_bytes: Histograms,
    pub response_bytes: Histograms,
    pub authorization: Family<PolicyLabels, Counter>,
    /// Requests answered by the waypoint itself, by why (`no_route`, `unknown_backend` …).
    pub local_replies: Family<ReasonLabels, Counter>,
    pub tunnels_accepted: Counter,
    pub tunnels_active: Gauge,
    pub tunnels_refused: Family<ReasonLabels, Counter>,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    pub tcp_sent: Family<TcpLabels, Counter>,
    pub tcp_received: Family<TcpLabels, Counter>,
    pub spans_exported: Counter,
    pub spans_dropped: Family<ReasonLabels, Counter>,
    /// The configuration version in force.
    pub config_version: Gauge,
    /// Retries sent, by Service and the outcome retried.
    pub retries: Family<ServiceLabels, Counter>,
    /// Requests and retries a circuit breaker or retry budget turned away, by limit.
    pub overflows: Family<ServiceLabels, Counter>,
    /// Endpoints ejected by outlier detection, by Service and reason.
    pub ejections: Family<ServiceLabels, Counter>,
    /// Attempts to endpoints whose response has not ended yet.
    pub upstream_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram_ms),
            request_bytes: Family::new_with_constructor(histogram_bytes),
            response_bytes: Family::new_with_constructor(histogram_bytes),
            authorization: Family::default(),
            local_replies: Family::default(),
            tunnels_accepted: Counter::default(),
            tunnels_active: Gauge::default(),
            tunnels_refused: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            spans_exported: Counter::default(),
            spans_dropped: Family::default(),
            config_version: Gauge::default(),
            retries: Family::default(),
            overflows: Family::default(),
            ejections: Family::default(),
            upstream_active: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn register(
        &self,
        registry: &mut Registry,
        upstream_connections: &Family<ProtocolLabels, Counter>,
    ) {
        let weft = registry.sub_registry_with_prefix("weft");
        weft.register(
            "requests",
            "Requests through the waypoint",
            self.requests.clone(),
        );
        weft.register(
            "request_duration_milliseconds",
            "Time from a request's start to its response's end",
            self.duration.clone(),
        );
        weft.register(
            "request_bytes",
            "Request body sizes",
            self.request_bytes.clone(),
        );
        weft.register(
            "response_bytes",
            "Response body sizes",
            self.response_bytes.clone(),
        );
        weft.register(
            "tcp_connections_opened",
            "Streams passed through as TCP, opened",
            self.tcp_opened.clone(),
        );
        weft.register(
            "tcp_connections_closed",
            "Streams passed through as TCP, closed",
            self.tcp_closed.clone(),
        );
        weft.register(
            "tcp_sent_bytes",
            "Bytes from clients to endpoints on TCP streams",
            self.tcp_sent.clone(),
        );
        weft.register(
            "tcp_received_bytes",
            "Bytes from endpoints to clients on TCP streams",
            self.tcp_received.clone(),
        );
        let w = weft.sub_registry_with_prefix("waypoint");
        w.register(
            "authorization_decisions",
            "Request authorizations, by deciding policy",
            self.authorization.clone(),
        );
        w.register(
            "local_replies",
            "Requests the waypoint answered itself, by reason",
            self.local_replies.clone(),
        );
        w.register(
            "tunnels_accepted",
            "HBONE streams accepted",
            self.tunnels_accepted.clone(),
        );
        w.register(
            "tunnels_active",
            "HBONE streams open",
            self.tunnels_active.clone(),
        );
        w.register(
            "tunnels_refused",
            "HBONE connections and streams refused, by reason",
            self.tunnels_refused.clone(),
        );
        w.register(
            "upstream_connections_opened",
            "HTTP connections opened to endpoints",
            upstream_connections.clone(),
        );
        w.register(
            "config_version",
            "The configuration version in force",
            self.config_version.clone(),
        );
        w.register(
            "retries",
            "Retries sent to endpoints, by Service and the outcome retried",
            self.retries.clone(),
        );
        w.register(
            "overflows",
            "Requests and retries turned away by a circuit breaker or retry budget",
            self.overflows.clone(),
        );
        w.register(
            "ejections",
            "Endpoints ejected by outlier detection",
            self.ejections.clone(),
        );
        w.register(
            "upstream_requests_active",
            "Attempts to endpoints whose response has not ended",
            self.upstream_active.clone(),
        );
        w.register(
            "spans_exported",
            "Spans sent to the collector",
            self.spans_exported.clone(),
        );
        w.register(
            "spans_dropped",
            "Spans not sent, by reason",
            self.spans_dropped.clone(),
        );
    }

    /// Counts a policy decision by its deciding policy.
    pub fn decided(&self, d: &Decision) {
        self.authorization
            .get_or_create(&PolicyLabels {
                policy: d.reason.clone(),
                decision: if d.allowed { "allow" } else { "deny" },
            })
            .inc();
    }

    /// Counts a request the waypoint answered itself (or a mirror it did not send).
    pub fn local_reply(&self, reason: &'static str) {
        self.local_replies
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one of `family` for Service `service` with `reason`.
    pub fn count(family: &Family<ServiceLabels, Counter>, service: &str, reason: &'static str) {
        family
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.tunnels_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_as_dashboards_expect() {
        let m = Metrics::default();
        let upstream = Family::default();
        let mut registry = Registry::default();
        m.register(&mut registry, &upstream);
        let mut labels = RequestLabels {
            response_code: 403,
            ..RequestLabels::default()
        };
        labels.connection.response_flags = "DENIED";
        m.requests.get_or_create(&labels).inc();
        m.duration.get_or_create(&labels).observe(3.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("weft_requests_total{reporter=\"waypoint\""),
            "{text}"
        );
        assert!(text.contains("response_code=\"403\""), "{text}");
        assert!(
            text.contains("weft_request_duration_milliseconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("weft_waypoint_config_version 0"), "{text}");
        assert!(
            text.contains("# TYPE weft_waypoint_tunnels_accepted counter"),
            "{text}"
        );
    }
}
