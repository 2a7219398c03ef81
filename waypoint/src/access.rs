//! Access logs on the `weft::access` target (JSON lines with `WEFT_LOG_FORMAT=json`):
//! one line per request, per stream passed through as TCP, and per refused tunnel.

use std::{net::SocketAddr, time::Duration};

use dataplane::policy::Decision;

use crate::{
    downstream::Downstream,
    metrics::{RequestLabels, TcpLabels},
    view::Destination,
};

/// What a request's line says beyond its labels.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub route: String,
    pub upstream: Option<SocketAddr>,
    pub policy: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration: Duration,
    /// Until the upstream's response headers.
    pub upstream_duration: Option<Duration>,
    pub trace_id: String,
    pub request_id: String,
}

pub fn request(down: &Downstream, labels: &RequestLabels, r: &Request) {
    tracing::info!(
        target: "weft::access",
        reporter = "waypoint",
        method = %r.method,
        authority = %r.authority,
        path = %r.path,
        protocol = r.protocol,
        status = labels.response_code,
        grpc_status = %labels.grpc_response_status,
        flags = labels.connection.response_flags,
        route = %r.route,
        src = %down.peer,
        src_identity = %down.client,
        src_workload = %format_args!("{}/{}", labels.connection.source_workload_namespace, labels.connection.source_workload),
        dst = %down.authority,
        dst_service = %labels.connection.destination_service,
        dst_workload = %format_args!("{}/{}", labels.connection.destination_workload_namespace, labels.connection.destination_workload),
        dst_identity = %labels.connection.destination_principal,
        upstream = %r.upstream.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        policy = %r.policy,
        request_bytes = r.request_bytes,
        response_bytes = r.response_bytes,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        upstream_ms = r.upstream_duration.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
        trace_id = %r.trace_id,
        request_id = %r.request_id,
        "request"
    );
}

pub fn stream(
    down: &Downstream,
    labels: &TcpLabels,
    destination: Option<&Destination>,
    (sent, received): (u64, u64),
    duration: Duration,
) {
    tracing::info!(
        target: "weft::access",
        reporter = "waypoint",
        src = %down.peer,
        src_identity = %down.client,
        dst = %down.authority,
        dst_service = %labels.destination_service,
        dst_workload = %format_args!("{}/{}", labels.destination_workload_namespace, labels.destination_workload),
        upstream = %destination.map_or_else(|| "-".to_owned(), |d| d.addr.to_string()),
        flags = labels.response_flags,
        sent,
        received,
        duration_ms = duration.as_millis() as u64,
        "connection"
    );
}

pub fn tunnel_denied(down: &Downstream, d: &Decision) {
    tracing::info!(
        target: "weft::access",
        reporter = "waypoint",
        src = %down.peer,
        src_identity = %down.client,
        dst = %down.authority,
        decision = "deny",
        policy = %d.reason,
        flags = "DENIED",
        "tunnel"
    );
}
