//! Streams that are not HTTP (a port declared TCP, or one whose first bytes are not
//! HTTP): an endpoint of the target is chosen as for a request, the destination's
//! policies decide the stream as a connection, and the bytes are copied both ways
//! over HBONE (or plain TCP to an endpoint outside the mesh).

use std::time::Instant;

use dataplane::{copy::Counted, policy};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    Waypoint,
    inbound::Downstream,
    metrics::TcpLabels,
    upstream::Caller,
    view::{Destination, Target},
};

/// Carries `io` to an endpoint of the tunnel's target until both directions end.
pub async fn pass<S>(waypoint: &Waypoint, down: &Downstream, mut io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let view = waypoint.view();
    let mut labels = TcpLabels {
        reporter: dataplane::telemetry::Reporter::Waypoint,
        source_workload_namespace: down.client.namespace().to_owned(),
        source_principal: down.client.to_string(),
        connection_security_policy: "mutual_tls",
        ..TcpLabels::default()
    };
    if let Some((_, name)) = down
        .client_workload()
        .or_else(|| view.workload_at(down.peer.ip()))
    {
        labels.source_workload = name.to_owned();
    }
    let destination = match &down.target {
        Target::Service { key, port } => {
            labels.destination_service = format!("{}/{}", key.1, key.2);
            view.service(key).and_then(|s| {
                waypoint
                    .balancer
                    .pick(key, s, port.target_port, down.authority.is_ipv4())
                    .map(|(e, ip)| Destination::of(e, ip, port.target_port))
            })
        }
        Target::Workload { key, port } => view.workload_destination(key, *port),
    };
    let metrics = &waypoint.metrics;
    let Some(destination) = destination else {
        labels.response_flags = "UH";
        metrics.tcp_opened.get_or_create(&labels).inc();
        metrics.tcp_closed.get_or_create(&labels).inc();
        crate::access::stream(down, &labels, None, (0, 0), start.elapsed());
        return;
    };
    if let Some((ns, name)) = destination.workload.split_once('/') {
        labels.destination_workload = name.to_owned();
        labels.destination_workload_namespace = ns.to_owned();
    }
    labels.destination_principal = destination.identity.to_string();
    let source = policy::Source {
        identity: Some(&down.client),
        ip: down.peer.ip(),
    };
    let decision =
        crate::authorize::destination(&view, &destination, &source, policy::Scope::Connection);
    if let Some(d) = &decision {
        metrics
            .authorization
            .get_or_create(&crate::metrics::PolicyLabels {
                policy: d.reason.clone(),
                decision: if d.allowed { "allow" } else { "deny" },
            })
            .inc();
    }
    if decision.as_ref().is_some_and(|d| !d.allowed) {
        labels.response_flags = "DENIED";
        metrics.tcp_opened.get_or_create(&labels).inc();
        metrics.tcp_closed.get_or_create(&labels).inc();
        crate::access::stream(down, &labels, Some(&destination), (0, 0), start.elapsed());
        return;
    }
    drop(view);
    let caller = Caller {
        principal: down.client.clone(),
        address: Some(down.peer.ip()),
    };
    let _in_flight = waypoint.balancer.start(destination.addr);
    let mut upstream = match waypoint.upstreams.connect(&destination, &caller).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, dst = %destination.addr, "TCP stream: connecting failed");
            labels.response_flags = "UF";
            metrics.tcp_opened.get_or_create(&labels).inc();
            metrics.tcp_closed.get_or_create(&labels).inc();
            crate::access::stream(down, &labels, Some(&destination), (0, 0), start.elapsed());
            return;
        }
    };
    metrics.tcp_opened.get_or_create(&labels).inc();
    let counted = Counted::default();
    let result = dataplane::copy::bidirectional(&mut io, &mut upstream, &counted).await;
    if result.is_err() {
        labels.response_flags = "UC";
    }
    let (sent, received) = counted.get();
    metrics.tcp_sent.get_or_create(&labels).inc_by(sent);
    metrics.tcp_received.get_or_create(&labels).inc_by(received);
    metrics.tcp_closed.get_or_create(&labels).inc();
    crate::access::stream(
        down,
        &labels,
        Some(&destination),
        (sent, received),
        start.elapsed(),
    );
}
