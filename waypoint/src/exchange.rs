//! The telemetry of one request, gathered as it goes through the waypoint and
//! recorded when its response body ends (or is dropped): the request metrics, the
//! access log line, and a span when the trace is sampled. The request context that
//! goes upstream is added here too: `x-forwarded-for`, `x-forwarded-proto`,
//! `x-request-id` (kept, or made) and `traceparent` (the waypoint's span as parent).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use dataplane::policy::Decision;
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::{
    Waypoint, access,
    body::{self, Body, Counted, Ended, Tallied, Tally},
    downstream::Downstream,
    metrics::{Metrics, RequestLabels, TcpLabels},
    normalize::Normalized,
    respond::Reply,
    trace::{self, Span, Value},
    view::{Destination, View},
};

pub struct Exchange {
    start: Instant,
    wall: SystemTime,
    pub grpc: bool,
    trace: trace::Context,
    labels: RequestLabels,
    log: access::Request,
    request_bytes: Option<Tally>,
    request_id: HeaderValue,
}

fn new_request_id() -> HeaderValue {
    let v: [u8; 16] = rand::random();
    HeaderValue::from_str(&trace::hex(&v)).expect("hex digits are a valid header value")
}

impl Exchange {
    pub fn start(
        view: &View,
        down: &Downstream,
        req: &Request<Incoming>,
        grpc: bool,
        sampling: f64,
    ) -> Self {
        let labels = RequestLabels {
            connection: TcpLabels {
                destination_service: down.target.name(),
                request_protocol: if grpc { "grpc" } else { "http" },
                ..down.labels(view)
            },
            ..RequestLabels::default()
        };
        let request_id = req
            .headers()
            .get("x-request-id")
            .cloned()
            .unwrap_or_else(new_request_id);
        Exchange {
            start: Instant::now(),
            wall: SystemTime::now(),
            grpc,
            trace: trace::Context::from_headers(req.headers(), sampling),
            log: access::Request {
                method: req.method().to_string(),
                authority: String::new(),
                path: req.uri().path().to_owned(),
                protocol: match req.version() {
                    http::Version::HTTP_2 => "HTTP/2",
                    http::Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                route: "-".to_owned(),
                policy: "-".to_owned(),
                request_id: request_id.to_str().unwrap_or("-").to_owned(),
                trace_id: String::new(),
                ..access::Request::default()
            },
            labels,
            request_bytes: None,
            request_id,
        }
    }

    pub fn normalized(&mut self, n: &Normalized) {
        self.log.authority = match n.port {
            Some(p) => format!("{}:{p}", n.host),
            None => n.host.clone(),
        };
        self.log.path = n.path_and_query();
    }

    /// The route whose rule the request took.
    pub fn routed(&mut self, route: &str) {
        route.clone_into(&mut self.log.route);
    }

    /// The time the endpoint took to answer with its response headers.
    pub fn upstream_answered(&mut self, took: Duration) {
        self.log.upstream_duration = Some(took);
    }

    pub fn destination(&mut self, d: &Destination, service: &str) {
        self.log.upstream = Some(d.addr);
        self.labels.connection.destination_service = service.to_owned();
        d.label(&mut self.labels.connection);
    }

    /// Counts a policy decision (when there is one to make); a denial is the answer.
    pub fn decided(&mut self, metrics: &Metrics, decision: Option<&Decision>) -> Result<(), Reply> {
        let Some(d) = decision else {
            return Ok(());
        };
        metrics.decided(d);
        self.log.policy = d.reason.clone();
        if d.allowed {
            Ok(())
        } else {
            Err(Reply::Denied {
                policy: d.reason.clone(),
            })
        }
    }

    /// Adds the request context for the endpoint.
    pub fn forwarding(&self, headers: &mut HeaderMap, down: &Downstream) {
        let client = down.peer.ip().to_string();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {client}"),
            None => client,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.insert("x-request-id", self.request_id.clone());
        headers.insert("traceparent", self.trace.traceparent());
    }

    /// The request body, counted.
    pub fn count_request(&mut self, body: Body) -> Body {
        let (tallied, tally) = Tallied::new(body);
        self.request_bytes = Some(tally);
        body::boxed(tallied)
    }

    pub fn local_reply(&mut self, metrics: &Metrics, reply: &Reply) {
        self.labels.connection.response_flags = reply.flag();
        metrics.local_reply(reply.reason());
    }

    /// The response with its body counted; everything is recorded when it ends.
    pub fn finish(
        mut self,
        waypoint: Arc<Waypoint>,
        down: Arc<Downstream>,
        response: Response<Body>,
    ) -> Response<Body> {
        self.labels.response_code = response.status().as_u16();
        // A trailers-only gRPC answer carries its status in the headers.
        let header_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (parts, inner) = response.into_parts();
        let counted = Counted::new(inner, move |ended: Ended| {
            self.record(&waypoint, &down, ended, header_status);
        });
        Response::from_parts(parts, body::boxed(counted))
    }

    fn record(
        mut self,
        waypoint: &Waypoint,
        down: &Downstream,
        ended: Ended,
        header_status: Option<String>,
    ) {
        down.activity.ended();
        if self.grpc {
            self.labels.grpc_response_status = ended
                .grpc_status
                .or(header_status)
                .unwrap_or_else(|| "2".to_owned());
        }
        if !ended.clean && self.labels.connection.response_flags == "-" {
            // The response did not reach its end: cut by one side or the other.
            self.labels.connection.response_flags = "DC";
        }
        let duration = self.start.elapsed();
        let request_bytes = self.request_bytes.as_ref().map_or(0, Tally::get);
        let m = &waypoint.metrics;
        m.requests.get_or_create(&self.labels).inc();
        m.duration
            .get_or_create(&self.labels)
            .observe(duration.as_secs_f64() * 1000.0);
        m.request_bytes
            .get_or_create(&self.labels)
            .observe(request_bytes as f64);
        m.response_bytes
            .get_or_create(&self.labels)
            .observe(ended.bytes as f64);
        self.log.request_bytes = request_bytes;
        self.log.response_bytes = ended.bytes;
        self.log.duration = duration;
        self.log.trace_id = self.trace.trace_id_hex();
        access::request(down, &self.labels, &self.log);
        if self.trace.sampled
            && let Some(exporter) = &waypoint.exporter
        {
            exporter.export(self.span());
        }
    }

    fn span(&self) -> Span {
        let text = |s: &str| Value::Text(s.to_owned());
        let mut attributes = vec![
            ("http.request.method", text(&self.log.method)),
            ("url.path", text(&self.log.path)),
            ("server.address", text(&self.log.authority)),
            (
                "http.response.status_code",
                Value::Int(i64::from(self.labels.response_code)),
            ),
            ("weft.route", text(&self.log.route)),
            (
                "weft.response_flags",
                text(self.labels.connection.response_flags),
            ),
            (
                "weft.source.principal",
                text(&self.labels.connection.source_principal),
            ),
            (
                "weft.destination.service",
                text(&self.labels.connection.destination_service),
            ),
            (
                "weft.destination.principal",
                text(&self.labels.connection.destination_principal),
            ),
            ("weft.request_id", text(&self.log.request_id)),
        ];
        if let Some(u) = self.log.upstream {
            attributes.push(("weft.upstream", Value::Text(u.to_string())));
        }
        if self.grpc
            && let Ok(code) = self.labels.grpc_response_status.parse::<i64>()
        {
            attributes.push(("rpc.grpc.status_code", Value::Int(code)));
        }
        Span {
            context: self.trace,
            name: format!(
                "{} {}",
                self.log.method, self.labels.connection.destination_service
            ),
            start: self.wall,
            end: self.wall + self.start.elapsed(),
            attributes,
            error: self.labels.response_code >= 500,
        }
    }
}
