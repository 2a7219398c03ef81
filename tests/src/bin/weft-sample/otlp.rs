//! The OTLP/gRPC trace collector of `serve --otlp ADDR --otlp-out FILE`: every span it
//! receives is appended to FILE as one JSON line, for tests to read back.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write as _,
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::Span,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

use crate::hex;

/// The file spans go to, shared by every collector listener.
#[derive(Clone)]
pub struct SpanFile(Arc<Mutex<File>>);

impl SpanFile {
    /// Opens `path` to append to, creating it if need be.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }

    /// Appends one JSON line per span, in one write, so that lines from concurrent
    /// exports never interleave.
    fn append(&self, spans: &[SpanRecord]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for span in spans {
            serde_json::to_writer(&mut lines, span)?;
            lines.push(b'\n');
        }
        let mut file = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(&lines)?;
        file.flush()
    }
}

/// Serves the trace collector on `listener` until the server fails.
pub async fn serve(listener: TcpListener, spans: SpanFile) -> anyhow::Result<()> {
    Server::builder()
        .add_service(TraceServiceServer::new(Collector { spans }))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
        .context("serving OTLP")
}

struct Collector {
    spans: SpanFile,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = records(request.into_inner());
        let file = self.spans.clone();
        // A local file and a short write, but still off the runtime's threads.
        tokio::task::spawn_blocking(move || file.append(&spans))
            .await
            .map_err(|e| Status::internal(format!("writing spans: {e}")))?
            .map_err(|e| Status::internal(format!("writing spans: {e}")))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// One received span, as written to the file.
#[derive(Debug, PartialEq, Serialize)]
struct SpanRecord {
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    name: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    kind: i32,
    start_unix_nano: u64,
    end_unix_nano: u64,
    attributes: BTreeMap<String, serde_json::Value>,
    resource: BTreeMap<String, serde_json::Value>,
}

/// The spans of an export, each with its resource's attributes.
fn records(request: ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            out.push(record(span, resource.clone()));
        }
    }
    out
}

fn record(span: Span, resource: BTreeMap<String, serde_json::Value>) -> SpanRecord {
    SpanRecord {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name,
        kind: span.kind,
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        attributes: attributes(span.attributes),
        resource,
    }
}

fn attributes(attributes: Vec<KeyValue>) -> BTreeMap<String, serde_json::Value> {
    attributes
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value.map(value).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

/// An attribute's value as JSON: strings, integers, booleans and doubles as
/// themselves, arrays and maps recursively, bytes as hex; anything else as null.
fn value(any: AnyValue) -> serde_json::Value {
    match any.value {
        None => serde_json::Value::Null,
        Some(Value::StringValue(s)) => s.into(),
        Some(Value::IntValue(i)) => i.into(),
        Some(Value::BoolValue(b)) => b.into(),
        Some(Value::DoubleValue(d)) => d.into(),
        Some(Value::BytesValue(b)) => hex(&b).into(),
        Some(Value::ArrayValue(a)) => a.values.into_iter().map(value).collect(),
        Some(Value::KvlistValue(kv)) => {
            serde_json::Value::Object(attributes(kv.values).into_iter().collect())
        }
        // An index into a profile's string table, which trace exports do not have.
        Some(Value::StringValueStrindex(_)) => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans},
    };

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn sample_request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue("cart".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
                        name: "GET /".into(),
                        kind: 2,
                        start_time_unix_nano: 10,
                        end_time_unix_nano: 20,
                        attributes: vec![
                            kv("http.response.status_code", Value::IntValue(200)),
                            kv("http.route", Value::StringValue("/".into())),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn spans_become_records_with_their_resource() {
        let records = records(sample_request());
        assert_eq!(records.len(), 1);
        let line = serde_json::to_value(&records[0]).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "trace_id": "ab".repeat(16),
                "span_id": "0102030405060708",
                "parent_span_id": "",
                "name": "GET /",
                "kind": 2,
                "start_unix_nano": 10,
                "end_unix_nano": 20,
                "attributes": {"http.response.status_code": 200, "http.route": "/"},
                "resource": {"service.name": "cart"},
            })
        );
    }

    #[test]
    fn values_of_every_kind() {
        assert_eq!(value(AnyValue { value: None }), serde_json::Value::Null);
        assert_eq!(
            value(AnyValue {
                value: Some(Value::BytesValue(vec![0, 255]))
            }),
            "00ff"
        );
        assert_eq!(
            value(AnyValue {
                value: Some(Value::BoolValue(true))
            }),
            true
        );
    }

    #[tokio::test]
    async fn the_collector_appends_what_it_receives() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

        let path =
            std::env::temp_dir().join(format!("weft-sample-otlp-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, SpanFile::open(&path).unwrap()));
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        client.export(sample_request()).await.unwrap();
        client.export(sample_request()).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1]["name"], "GET /");
        assert_eq!(lines[1]["resource"]["service.name"], "cart");
    }
}
