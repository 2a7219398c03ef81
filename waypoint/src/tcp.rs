//! Streams that are not HTTP (a port declared TCP, or one whose first bytes are not
//! HTTP): an endpoint of the target is chosen as for a request, the destination's
//! policies decide the stream as a connection, and the bytes are copied both ways
//! over HBONE (or plain TCP to an endpoint outside the mesh).

use std::time::Instant;

use dataplane::{copy::Counted, policy};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    Waypoint,
    downstream::Downstream,
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
    let mut labels = down.labels(&view);
    let destination = match &down.target {
        Target::Service { key, port } => {
            labels.destination_service = format!("{}/{}", key.1, key.2);
            let v4 = down.authority.is_ipv4();
            // A stream has no headers: only the caller's address can be hashed on.
            let hash = crate::maglev::service_hash(
                view.service(key),
                &http::HeaderMap::new(),
                down.peer.ip(),
            );
            (waypoint
                .balancer
                .destination(&view, key, (port.port, v4), hash))
            .ok()
            .map(|(d, _)| d)
        }
        Target::Workload { key, port } => view.workload_destination(key, *port),
        // A gateway listener carries HTTP only.
        Target::Gateway { .. } => None,
    };
    let metrics = &waypoint.metrics;
    // A stream that ends before any byte is carried, with why.
    let refuse = |mut labels: TcpLabels, flag, destination: Option<&Destination>| {
        labels.response_flags = flag;
        metrics.tcp_opened.get_or_create(&labels).inc();
        metrics.tcp_closed.get_or_create(&labels).inc();
        crate::access::stream(down, &labels, destination, (0, 0), start.elapsed());
    };
    let Some(destination) = destination else {
        return refuse(labels, "UH", None);
    };
    destination.label(&mut labels);
    let decision = crate::authorize::destination(
        &view,
        &destination,
        &down.source(),
        policy::Scope::Connection,
    );
    if let Some(d) = &decision {
        metrics.decided(d);
        if !d.allowed {
            return refuse(labels, "DENIED", Some(&destination));
        }
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
            return refuse(labels, "UF", Some(&destination));
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
