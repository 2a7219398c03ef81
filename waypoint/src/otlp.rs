//! Spans to an OTLP/gRPC collector (`WEFT_OTLP_ENDPOINT`): finished spans queue up to
//! a bound (beyond it they are dropped and counted, never waited for), and one task
//! sends them in batches of up to 512, at least every 200 ms while there are some.

use std::{sync::Arc, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, Status, span::SpanKind, status},
};
use tokio::sync::mpsc;

use crate::{
    metrics::{Metrics, ReasonLabels},
    trace::{Span, Value},
};

const QUEUE: usize = 8192;
const BATCH: usize = 512;
const FLUSH: Duration = Duration::from_millis(200);

/// Where finished spans go.
#[derive(Debug, Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Span>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Starts the sending task for `endpoint`; `resource` describes this waypoint.
    pub fn start(
        endpoint: &str,
        resource: Vec<(&'static str, String)>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let (queue, rx) = mpsc::channel(QUEUE);
        let resource = Resource {
            attributes: resource
                .into_iter()
                .map(|(k, v)| attribute(k, &Value::Text(v)))
                .collect(),
            ..Default::default()
        };
        tokio::spawn(send(
            TraceServiceClient::new(channel),
            rx,
            resource,
            Arc::clone(&metrics),
        ));
        Ok(Exporter { queue, metrics })
    }

    pub fn export(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.metrics
                .spans_dropped
                .get_or_create(&ReasonLabels {
                    reason: "queue_full",
                })
                .inc();
        }
    }
}

fn attribute(key: &str, value: &Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(match value {
                Value::Text(s) => any_value::Value::StringValue(s.clone()),
                Value::Int(n) => any_value::Value::IntValue(*n),
            }),
        }),
        ..Default::default()
    }
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn to_otlp(span: Span) -> OtlpSpan {
    OtlpSpan {
        trace_id: span.context.trace_id.to_vec(),
        span_id: span.context.span_id.to_vec(),
        parent_span_id: span.context.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: nanos(span.start),
        end_time_unix_nano: nanos(span.end),
        attributes: span
            .attributes
            .iter()
            .map(|(k, v)| attribute(k, v))
            .collect(),
        status: Some(Status {
            code: if span.error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn send(
    mut client: TraceServiceClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Span>,
    resource: Resource,
    metrics: Arc<Metrics>,
) {
    let scope = InstrumentationScope {
        name: "weft-waypoint".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: batch.into_iter().map(to_otlp).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match client.export(request).await {
            Ok(_) => {
                metrics.spans_exported.inc_by(n);
            }
            Err(status) => {
                tracing::debug!(%status, spans = n, "exporting spans failed");
                metrics
                    .spans_dropped
                    .get_or_create(&ReasonLabels {
                        reason: "export_failed",
                    })
                    .inc_by(n);
            }
        }
    }
}
