//! The agent's Prometheus metrics.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder,
    },
    metrics::{MetricType, counter::ConstCounter, counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::ebpf::Capture;

/// Direction of bytes through the outbound proxy, seen from the application.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From the application to its destination.
    Sent,
    /// From the destination back to the application.
    Received,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Metrics of the outbound capture path.
#[derive(Debug, Default)]
pub struct Outbound {
    pub accepted: Counter,
    pub active: Gauge,
    pub closed: Counter,
    pub bytes: Family<DirectionLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
}

pub use dataplane::telemetry::{ConnectionLabels, Reporter};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthorizationLabels {
    /// `allow` or `deny`.
    pub decision: &'static str,
    #[prometheus(flatten)]
    pub connection: ConnectionLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reporter: Reporter,
    pub reason: &'static str,
}

/// Connection metrics of the mesh data path, both directions.
#[derive(Debug, Default)]
pub struct Traffic {
    pub opened: Family<ConnectionLabels, Counter>,
    pub closed: Family<ConnectionLabels, Counter>,
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    pub received_bytes: Family<ConnectionLabels, Counter>,
    pub authorization: Family<AuthorizationLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    /// Inbound connections being served now.
    pub inbound_active: Gauge,
    /// HBONE connections the client pool opened.
    pub hbone_connections_opened: Counter,
}

impl Traffic {
    pub fn failure(&self, reporter: Reporter, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { reporter, reason })
            .inc();
    }

    pub fn authorization(&self, connection: &ConnectionLabels, allowed: bool) {
        self.authorization
            .get_or_create(&AuthorizationLabels {
                connection: connection.clone(),
                decision: if allowed { "allow" } else { "deny" },
            })
            .inc();
    }

    /// Counts a connection that ended: `sent` is what went from the client to the
    /// server, `received` the reverse, as the reporter saw them.
    pub fn closed(&self, labels: &ConnectionLabels, sent: u64, received: u64) {
        self.closed.get_or_create(labels).inc();
        self.sent_bytes.get_or_create(labels).inc_by(sent);
        self.received_bytes.get_or_create(labels).inc_by(received);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub outbound: Outbound,
    pub traffic: Traffic,
    pub enrolled_namespaces: Gauge,
}

impl Metrics {
    /// Registers everything, including the kernel-side counters read from `capture` at
    /// each scrape.
    pub fn register(self: &Arc<Self>, registry: &mut Registry, capture: Arc<Capture>) {
        let registry = registry.sub_registry_with_prefix("weft_agent");
        let o = &self.outbound;
        registry.register(
            "outbound_connections_accepted",
            "Connections accepted by the outbound capture listeners",
            o.accepted.clone(),
        );
        registry.register(
            "outbound_connections_active",
            "Outbound connections being proxied now",
            o.active.clone(),
        );
        registry.register(
            "outbound_connections_closed",
            "Outbound connections that ended, successfully or not",
            o.closed.clone(),
        );
        registry.register(
            "outbound_bytes",
            "Bytes proxied for captured connections",
            o.bytes.clone(),
        );
        registry.register(
            "outbound_failures",
            "Captured connections that could not be proxied, by reason",
            o.failures.clone(),
        );
        registry.register(
            "enrolled_namespaces",
            "Network namespaces enrolled with this agent",
            self.enrolled_namespaces.clone(),
        );
        registry.register_collector(Box::new(DecisionCollector { capture }));
        let t = &self.traffic;
        registry.register(
            "inbound_connections_active",
            "Inbound connections (HBONE and plaintext) being served now",
            t.inbound_active.clone(),
        );
        registry.register(
            "hbone_connections_opened",
            "HTTP/2 connections the HBONE client pool opened",
            t.hbone_connections_opened.clone(),
        );
        registry.register(
            "connection_failures",
            "Connections that failed, by reporter and reason",
            t.failures.clone(),
        );
    }

    /// Registers the connection metrics under `weft_tcp_*`, with the labels of
    /// [`ConnectionLabels`].
    pub fn register_traffic(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("weft_tcp");
        let t = &self.traffic;
        registry.register(
            "connections_opened",
            "TCP connections opened through the mesh",
            t.opened.clone(),
        );
        registry.register(
            "connections_closed",
            "TCP connections through the mesh that ended",
            t.closed.clone(),
        );
        registry.register(
            "sent_bytes",
            "Bytes sent from the client to the server",
            t.sent_bytes.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes sent from the server back to the client",
            t.received_bytes.clone(),
        );
        registry.register(
            "authorization_decisions",
            "L4 authorization decisions on inbound connections",
            t.authorization.clone(),
        );
    }
}

/// Exposes the per-CPU decision counters of the capture programs.
#[derive(Debug)]
struct DecisionCollector {
    capture: Arc<Capture>,
}

impl Collector for DecisionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "capture_decisions",
            "Decisions of the kernel capture programs, by reason",
            None,
            MetricType::Counter,
        )?;
        for (decision, value) in self.capture.decisions() {
            let labels = ReasonLabels {
                reason: decision.reason(),
            };
            let family = metric.encode_family(&labels)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}
