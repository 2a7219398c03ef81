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

#[derive(Debug, Default)]
pub struct Metrics {
    pub outbound: Outbound,
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
            "weft_agent_capture_decisions",
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
