//! The control plane's Prometheus metrics (served by `endpoints.rs`).
//!
//! Every name starts with `weft_controlplane_`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `config_subscribers` | `kind` (`agent`, `waypoint`) | open subscription streams |
//! | `config_pushes_total` | `kind` | updates sent (snapshots included) |
//! | `config_acks_total` | `kind` | ACKs received |
//! | `config_nacks_total` | `kind`, `reason` | NACKs, by the kind of resource refused (`workload`, `service`, `authorization_policy`, `peer_authentication`, `http_route`, `grpc_route`; `other` when the reason names none) |
//! | `config_push_ack_seconds` | `kind` | from sending an update to the ACK that covers it |
//! | `config_subscriptions_refused_total` | `reason` | subscriptions refused (`unknown_token`, `waypoint_not_on_node` …) |
//! | `config_version` | | the configuration version in force |
//! | `config_problems` | `source` (a file, or `kubernetes Kind ns/name`) | validation problems of what is not in force |
//! | `certificates_issued_total` | | |
//! | `certificates_refused_total` | `reason` (`identity_not_on_node` …) | |

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{model::Problem, subscriber::SubscriberKind};

impl EncodeLabelValue for SubscriberKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}

/// What a NACK was about: the kind of resource the subscriber could not apply.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum NackReason {
    Workload,
    Service,
    AuthorizationPolicy,
    PeerAuthentication,
    HttpRoute,
    GrpcRoute,
    Other,
}

impl NackReason {
    /// Reads a NACK's reason, which starts with the kind of the resource when one could
    /// not be applied (`Workload shop/cart-1: …`).
    pub fn of(reason: &str) -> Self {
        match reason.split_once(' ').map_or(reason, |(kind, _)| kind) {
            "Workload" => NackReason::Workload,
            "Service" => NackReason::Service,
            "AuthorizationPolicy" => NackReason::AuthorizationPolicy,
            "PeerAuthentication" => NackReason::PeerAuthentication,
            "HTTPRoute" => NackReason::HttpRoute,
            "GRPCRoute" => NackReason::GrpcRoute,
            _ => NackReason::Other,
        }
    }
}

impl EncodeLabelValue for NackReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            NackReason::Workload => "workload",
            NackReason::Service => "service",
            NackReason::AuthorizationPolicy => "authorization_policy",
            NackReason::PeerAuthentication => "peer_authentication",
            NackReason::HttpRoute => "http_route",
            NackReason::GrpcRoute => "grpc_route",
            NackReason::Other => "other",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: SubscriberKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NackLabels {
    pub kind: SubscriberKind,
    pub reason: NackReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

type Latency = Family<KindLabels, Histogram, fn() -> Histogram>;

/// Configuration distribution.
#[derive(Debug)]
pub struct Distribution {
    pub subscribers: Family<KindLabels, Gauge>,
    pub pushes: Family<KindLabels, Counter>,
    pub acks: Family<KindLabels, Counter>,
    pub nacks: Family<NackLabels, Counter>,
    pub push_to_ack: Latency,
    pub refused: Family<ReasonLabels, Counter>,
    pub version: Gauge,
    pub problems: Family<SourceLabels, Gauge>,
}

impl Default for Distribution {
    fn default() -> Self {
        fn latency() -> Histogram {
            // 1 ms to about 16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        }
        Distribution {
            subscribers: Family::default(),
            pushes: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            push_to_ack: Family::new_with_constructor(latency),
            refused: Family::default(),
            version: Gauge::default(),
            problems: Family::default(),
        }
    }
}

impl Distribution {
    /// Sets the problems in force: one gauge per source that has any.
    pub fn set_problems(&self, problems: &[Problem]) {
        self.problems.clear();
        for p in problems {
            self.problems
                .get_or_create(&SourceLabels {
                    source: p.origin.source.clone(),
                })
                .inc();
        }
    }
}

/// Certificate issuance.
#[derive(Debug, Default)]
pub struct Certificates {
    pub issued: Counter,
    pub refused: Family<ReasonLabels, Counter>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub distribution: Distribution,
    pub certificates: Certificates,
}

impl Metrics {
    /// A registry with every metric of `metrics`.
    pub fn registry(metrics: &Arc<Metrics>) -> Registry {
        let mut registry = Registry::with_prefix("weft_controlplane");
        let d = &metrics.distribution;
        registry.register(
            "config_subscribers",
            "Open configuration subscription streams",
            d.subscribers.clone(),
        );
        registry.register(
            "config_pushes",
            "Configuration updates sent, snapshots included",
            d.pushes.clone(),
        );
        registry.register(
            "config_acks",
            "Configuration updates acknowledged",
            d.acks.clone(),
        );
        registry.register(
            "config_nacks",
            "Configuration updates refused by subscribers, by the kind of resource refused",
            d.nacks.clone(),
        );
        registry.register(
            "config_push_ack_seconds",
            "Time from sending a configuration update to the ACK that covers it",
            d.push_to_ack.clone(),
        );
        registry.register(
            "config_subscriptions_refused",
            "Configuration subscriptions refused, by reason",
            d.refused.clone(),
        );
        registry.register(
            "config_version",
            "The configuration version in force",
            d.version.clone(),
        );
        registry.register(
            "config_problems",
            "Validation problems of configuration not in force, by source",
            d.problems.clone(),
        );
        let c = &metrics.certificates;
        registry.register(
            "certificates_issued",
            "Workload certificates issued",
            c.issued.clone(),
        );
        registry.register(
            "certificates_refused",
            "Certificate requests refused, by reason",
            c.refused.clone(),
        );
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_reasons_name_the_kind_refused() {
        assert_eq!(
            NackReason::of("Workload shop/b: \"x\" is not an IP address"),
            NackReason::Workload
        );
        assert_eq!(
            NackReason::of("HTTPRoute shop/r: no rules"),
            NackReason::HttpRoute
        );
        assert_eq!(NackReason::of("out of memory"), NackReason::Other);
        assert_eq!(NackReason::of(""), NackReason::Other);
    }
}
